//! The one or two sentences at the top of each capture's report, for a reader who has never
//! read a TCP trace: what went wrong, where, and what a load balancer would answer.

use crate::report::{CaptureSummary, Finding, Kind, Severity};
use std::collections::BTreeMap;

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn sentence(kind: Kind, by: Option<&str>, server: &str, n: usize) -> String {
    match (kind, by) {
        (Kind::HandshakeRefused, _) => format!(
            "{} to {server} {} refused: nothing accepted connections on that port (or a firewall rejected them), which a load balancer reports as 502.",
            plural(n, "connection", "connections"),
            if n == 1 { "was" } else { "were" }
        ),
        (Kind::SynUnanswered, _) => format!(
            "{} to {server} got no answer at all, as if a firewall silently dropped {} or the host was down; a load balancer reports this as 504 or 502.",
            plural(n, "connection attempt", "connection attempts"),
            if n == 1 { "it" } else { "them" }
        ),
        (Kind::ConnectionReset, Some("server")) => format!(
            "The server {server} abruptly reset {} while a request was waiting for its answer; a load balancer reports this as 502.",
            plural(n, "connection", "connections")
        ),
        (Kind::ConnectionReset, _) => format!(
            "The client gave up on {} to {server} before the answer came (a load balancer logs this as 499).",
            plural(n, "connection", "connections")
        ),
        (other, _) => format!("{} {} finding(s) for {server}.", n, other),
    }
}

pub fn verdict(capture: &CaptureSummary, findings: &[Finding]) -> String {
    let mut groups: BTreeMap<(std::cmp::Reverse<Severity>, Kind, String, String), usize> =
        BTreeMap::new();
    for f in findings.iter().filter(|f| f.severity >= Severity::Warning) {
        let by = f
            .evidence
            .get("by")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        *groups
            .entry((
                std::cmp::Reverse(f.severity),
                f.kind,
                by,
                f.flow.server.clone(),
            ))
            .or_default() += 1;
    }
    let mut text = if groups.is_empty() {
        let infos = findings.len();
        format!(
            "No failed handshakes or broken connections among {}{}.",
            plural(
                capture.connections as usize,
                "TCP connection",
                "TCP connections"
            ),
            if infos > 0 {
                format!(
                    " ({} only)",
                    plural(infos, "informational note", "informational notes")
                )
            } else {
                String::new()
            }
        )
    } else {
        // The worst problem first; a second sentence only when there is a second problem.
        let mut ranked: Vec<_> = groups.into_iter().collect();
        ranked.sort_by_key(|(key, n)| (key.0, std::cmp::Reverse(*n)));
        let parts: Vec<String> = ranked
            .iter()
            .take(2)
            .map(|((_, kind, by, server), n)| sentence(*kind, Some(by.as_str()), server, *n))
            .collect();
        let mut t = parts.join(" ");
        if ranked.len() > 2 {
            t.push_str(&format!(
                " {} more problem group(s) are listed below.",
                ranked.len() - 2
            ));
        }
        t
    };
    if capture.truncated {
        text.push_str(" The file is cut short or damaged; it was analyzed up to that point.");
    }
    text
}
