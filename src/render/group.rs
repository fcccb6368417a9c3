//! Findings gathered into groups (same kind and server, optionally the same status), ranked so
//! the group a reader should look at first comes first. Shared by the Markdown and JUnit
//! renderers so both tell the same story.

use crate::report::{Finding, Kind, Severity, Unlisted};
use std::collections::BTreeMap;

pub struct Group<'a> {
    pub kind: Kind,
    pub server: &'a str,
    /// The status the group's first cause explains; `None` when grouping ignores it or the
    /// findings explain no status.
    pub status: Option<u16>,
    pub severity: Severity,
    /// Each finding with its index in the report's `findings`, in report order.
    pub findings: Vec<(usize, &'a Finding)>,
    /// Findings of this group counted but not listed (`--max-findings`).
    pub unlisted: u64,
}

impl Group<'_> {
    /// Findings listed and not.
    pub fn count(&self) -> u64 {
        self.findings.len() as u64 + self.unlisted
    }

    /// RFC 3339 strings of one clock compare as times.
    pub fn first_time(&self) -> &str {
        self.findings
            .iter()
            .map(|(_, f)| f.time.as_str())
            .min()
            .unwrap_or("")
    }
    pub fn last_time(&self) -> &str {
        self.findings
            .iter()
            .map(|(_, f)| f.time.as_str())
            .max()
            .unwrap_or("")
    }
}

/// Groups the findings of one capture. With `by_status` the status of the first cause splits
/// groups too (the Markdown table is read by status; a JUnit test case is a kind on a server).
/// Ranked by severity, then size, then first appearance, so the order never depends on a map.
pub fn groups<'a>(capture: &str, all: &'a [Finding], by_status: bool) -> Vec<Group<'a>> {
    let mut keyed: BTreeMap<(Kind, &'a str, Option<u16>), usize> = BTreeMap::new();
    let mut out: Vec<Group<'a>> = Vec::new();
    for (i, f) in all.iter().enumerate().filter(|(_, f)| f.capture == capture) {
        let status = if by_status {
            f.causes.first().map(|c| c.status)
        } else {
            None
        };
        let key = (f.kind, f.flow.server.as_str(), status);
        let at = *keyed.entry(key).or_insert_with(|| {
            out.push(Group {
                kind: f.kind,
                server: f.flow.server.as_str(),
                status,
                severity: f.severity,
                findings: Vec::new(),
                unlisted: 0,
            });
            out.len() - 1
        });
        let g = &mut out[at];
        g.severity = g.severity.max(f.severity);
        g.findings.push((i, f));
    }
    // A stable sort keeps first appearance as the last tie-breaker.
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.findings.len().cmp(&a.findings.len()))
    });
    out
}

/// Adds the findings counted but not listed to their groups (each count to the first, largest,
/// group of its kind and server, of its status for error_status) and ranks again by what
/// happened, listed or not: severity, then count (a stable sort, so first appearance still
/// breaks ties).
pub fn with_unlisted<'a>(mut groups: Vec<Group<'a>>, unlisted: &[Unlisted]) -> Vec<Group<'a>> {
    for u in unlisted {
        if let Some(g) = groups.iter_mut().find(|g| {
            g.kind == u.kind && g.server == u.server && (u.status.is_none() || g.status == u.status)
        }) {
            g.unlisted += u.count;
        }
    }
    groups.sort_by_key(|g| (std::cmp::Reverse(g.severity), std::cmp::Reverse(g.count())));
    groups
}
