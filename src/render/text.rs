//! The default report: per capture a verdict, then findings grouped by the status code they
//! explain, each with its frames, its Wireshark filter and what to run next.

use super::terminal_safe;
use crate::report::{CaptureSummary, Finding, Leg, Report, Severity};
use std::collections::BTreeMap;
use std::io::{self, Write};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
    /// List every finding even on a large capture (`--all`).
    pub all: bool,
}

/// More problems than this in one capture and the report opens with a ranked table and lists a
/// few examples per group instead of every finding (unless `--all`).
const LARGE: usize = 20;
/// Examples shown per group on a large capture.
const EXAMPLES: usize = 3;

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    fn severity(&self, sev: Severity) -> String {
        let label = match sev {
            Severity::Error => "ERROR  ",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO   ",
        };
        let code = match sev {
            Severity::Error => "1;31",
            Severity::Warning => "1;33",
            Severity::Info => "36",
        };
        self.paint(code, label)
    }
}

pub fn status_name(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        463 => "Loop Detected",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

fn frames(packets: &[u64]) -> String {
    const SHOWN: usize = 8;
    let mut s = packets
        .iter()
        .take(SHOWN)
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if packets.len() > SHOWN {
        s.push_str(&format!(" (+{} more)", packets.len() - SHOWN));
    }
    s
}

pub fn render(report: &Report, style: Style, w: &mut dyn Write) -> io::Result<()> {
    for (i, capture) in report.captures.iter().enumerate() {
        if i > 0 {
            writeln!(w)?;
        }
        let findings: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|f| f.capture == capture.file)
            .collect();
        render_capture(capture, &findings, &report.findings, style, w)?;
    }
    if !report.logs.is_empty() {
        render_logs(report, style, w)?;
    }
    render_alignments(report, style, w)?;
    if report.captures.len() > 1 {
        writeln!(w)?;
        writeln!(
            w,
            "{} captures, {} findings{}",
            report.summary.captures,
            report.summary.findings,
            if report.summary.unreadable_captures > 0 {
                format!(", {} unreadable", report.summary.unreadable_captures)
            } else {
                String::new()
            }
        )?;
    }
    if report.summary.suppressed > 0 {
        writeln!(
            w,
            "{} more findings of the same kinds were counted but not listed (--max-findings).",
            report.summary.suppressed
        )?;
    }
    Ok(())
}

/// `--same-traffic`: how each pair of captures' clocks sit and which leg each shows.
fn render_alignments(report: &Report, style: Style, w: &mut dyn Write) -> io::Result<()> {
    if report.alignments.is_empty() {
        return Ok(());
    }
    writeln!(w)?;
    writeln!(
        w,
        "{}",
        style.bold("== captures of the same traffic (--same-traffic)")
    )?;
    for a in &report.alignments {
        let offset = a.offset_ms.map_or("no offset found".to_string(), |ms| {
            format!("clock {:+.3} s, {} matches", ms / 1000.0, a.matches)
        });
        writeln!(
            w,
            "  {} against {}: {offset}, {} link(s)",
            terminal_safe(&a.other),
            terminal_safe(&a.capture),
            a.links
        )?;
        writeln!(w, "    {}", terminal_safe(&a.note))?;
    }
    Ok(())
}

/// The access logs (`--access-log`): each log, then each reported line with what the packets
/// say of it, then the error findings no line mentions.
fn render_logs(report: &Report, style: Style, w: &mut dyn Write) -> io::Result<()> {
    for log in &report.logs {
        writeln!(w)?;
        let offset = match (log.clock_offset_ms, log.clock_offsets.first()) {
            (Some(ms), Some(o)) => format!(
                ", log clock {:+.3} s from {}",
                ms / 1000.0,
                terminal_safe(&o.capture)
            ),
            _ => String::new(),
        };
        writeln!(
            w,
            "{}",
            style.bold(&format!(
                "== access log {}  ({}, {} lines read, {} skipped, {} reported, {} matched{offset})",
                terminal_safe(&log.path),
                log.format,
                log.lines_read,
                log.lines_skipped,
                log.lines_reported,
                log.lines_matched,
            ))
        )?;
        for o in log.clock_offsets.iter().skip(1) {
            writeln!(
                w,
                "  log clock {:+.3} s from {} ({} matches)",
                o.offset_ms / 1000.0,
                terminal_safe(&o.capture),
                o.samples
            )?;
        }
        for s in &log.skipped {
            writeln!(w, "  skipped line {}: {}", s.line, terminal_safe(&s.reason))?;
        }
        if log.lines_skipped > log.skipped.len() as u64 {
            writeln!(
                w,
                "  ({} more skipped lines not listed)",
                log.lines_skipped - log.skipped.len() as u64
            )?;
        }
        for n in &log.notes {
            writeln!(w, "  note: {}", terminal_safe(n))?;
        }
        for m in report.log_matches.iter().filter(|m| m.log == log.path) {
            writeln!(w, "  {}", terminal_safe(&m.summary))?;
            let class = crate::accesslog::join::class_name(m.class);
            let Some(flow) = &m.flow else {
                writeln!(w, "    class: {class}")?;
                continue;
            };
            let mut about = format!(
                "    class: {class}; {} -> {}",
                terminal_safe(&flow.client),
                terminal_safe(&flow.server)
            );
            // With the legs captured on different hosts, frame numbers are per file: say which.
            let other = m
                .back_capture
                .as_ref()
                .filter(|b| m.capture.as_ref() != Some(*b));
            if let Some(b) = &m.back_flow {
                about.push_str(&format!(
                    ", back {} -> {}",
                    terminal_safe(&b.client),
                    terminal_safe(&b.server)
                ));
                if let Some(c) = other {
                    about.push_str(&format!(" in {}", terminal_safe(c)));
                }
            }
            about.push_str(&format!("; frames {}", frames(&m.packets)));
            if let (Some(c), Some(back)) = (other, &m.back_packets) {
                about.push_str(&format!(
                    " in {}, back frames {} in {}",
                    terminal_safe(m.capture.as_deref().unwrap_or("?")),
                    frames(back),
                    terminal_safe(c)
                ));
            }
            writeln!(w, "{about}")?;
            let linked: Vec<String> = m
                .findings
                .iter()
                .filter_map(|&i| report.findings.get(i))
                .map(|f| {
                    let elsewhere = match &m.capture {
                        Some(c) if *c != f.capture => format!(" in {}", terminal_safe(&f.capture)),
                        _ => String::new(),
                    };
                    format!("{} (frames {}{elsewhere})", f.kind, frames(&f.packets))
                })
                .collect();
            if !linked.is_empty() {
                writeln!(w, "    findings: {}", linked.join(", "))?;
            }
        }
    }
    if let Some(unlogged) = report.unlogged_findings.as_ref().filter(|u| !u.is_empty()) {
        writeln!(w)?;
        writeln!(
            w,
            "{}",
            style.bold("Error findings no log line mentions (the log may be from another balancer, or lines below 400 were left out):")
        )?;
        for f in unlogged.iter().filter_map(|&i| report.findings.get(i)) {
            writeln!(
                w,
                "  {} frames {} in {}: {}",
                f.kind,
                frames(&f.packets),
                terminal_safe(&f.capture),
                terminal_safe(&f.summary)
            )?;
        }
    }
    Ok(())
}

fn render_capture(
    c: &CaptureSummary,
    findings: &[&Finding],
    all: &[Finding],
    style: Style,
    w: &mut dyn Write,
) -> io::Result<()> {
    let file = terminal_safe(&c.file);
    if let Some(err) = &c.error {
        writeln!(w, "{}", style.bold(&format!("== {file}")))?;
        writeln!(w, "{}", terminal_safe(err))?;
        return Ok(());
    }
    writeln!(
        w,
        "{}",
        style.bold(&format!(
            "== {file}  ({}{}, {}, {} packets, {} TCP connection{}{})",
            c.format,
            if c.compressed { ", gzip" } else { "" },
            if c.link_types.is_empty() {
                "no link type".to_string()
            } else {
                c.link_types.join("+")
            },
            c.packets,
            c.connections,
            if c.connections == 1 { "" } else { "s" },
            match (&c.first_timestamp, &c.last_timestamp) {
                (Some(a), Some(b)) => format!(", {a} to {b}"),
                _ => String::new(),
            }
        ))
    )?;
    if !c.parts.is_empty() {
        // Frame numbers run on across the files; this maps them back to each file's own.
        let parts: Vec<String> = c
            .parts
            .iter()
            .map(|p| {
                format!(
                    "{} (frames {}-{})",
                    terminal_safe(&p.file),
                    p.first_frame,
                    (p.first_frame + p.frames).saturating_sub(1)
                )
            })
            .collect();
        writeln!(
            w,
            "Joined from {} files, frames numbered on across them: {}",
            c.parts.len(),
            parts.join(", ")
        )?;
    }
    for b in &c.balancers {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                terminal_safe(&v.join(", ")).into_owned()
            }
        };
        let from: Vec<String> = b
            .back_addresses
            .iter()
            .filter(|a| **a != b.address)
            .cloned()
            .collect();
        writeln!(
            w,
            "Balancer {}: clients reach {}; it forwards to {}{}{}",
            terminal_safe(&b.address),
            list(&b.front),
            list(&b.back),
            if from.is_empty() {
                String::new()
            } else {
                format!(" (sending from {})", list(&from))
            },
            match b.forwarded_requests {
                0 => String::new(),
                n => format!("; {n} request(s) seen on both legs"),
            }
        )?;
    }
    writeln!(w, "{}", terminal_safe(&c.verdict))?;

    // Problems grouped by the status they explain; informational notes last and brief.
    let mut by_status: BTreeMap<u16, Vec<&Finding>> = BTreeMap::new();
    let mut notes = Vec::new();
    for f in findings {
        if f.severity == Severity::Info {
            notes.push(*f);
        } else {
            let status = f.causes.first().map(|c| c.status).unwrap_or(0);
            by_status.entry(status).or_default().push(f);
        }
    }
    let problems: usize = by_status.values().map(Vec::len).sum();
    if problems > LARGE && !style.all {
        ranked(c, all, style, w)?;
    } else {
        by_status_in_full(&by_status, all, style, w)?;
    }
    render_notes_and_warnings(c, &notes, style, w)
}

/// A large capture: a ranked table of the problem groups, then a few examples of each.
fn ranked(c: &CaptureSummary, all: &[Finding], style: Style, w: &mut dyn Write) -> io::Result<()> {
    let groups: Vec<_> = super::group::groups(&c.file, all, true)
        .into_iter()
        .filter(|g| g.severity > Severity::Info)
        .collect();
    let groups = super::group::with_unlisted(groups, &c.unlisted);
    writeln!(w)?;
    writeln!(w, "{}", style.bold("Ranked problems"))?;
    writeln!(
        w,
        "  {:>4}  {:<6} {:<24} {:<24} {:>8} {:>6} {:>7}  first .. last",
        "#", "status", "cause", "server", "findings", "conns", "share"
    )?;
    for (rank, g) in groups.iter().enumerate() {
        let count = g.count();
        let connections: std::collections::BTreeSet<u64> = g
            .findings
            .iter()
            .filter_map(|(_, f)| f.facts.connection)
            .collect();
        let share = match c.http_transactions {
            0 => "-".into(),
            all => {
                let share = count as f64 * 100.0 / all as f64;
                if share < 0.01 {
                    "<0.01%".into()
                } else {
                    format!("{share:.2}%")
                }
            }
        };
        writeln!(
            w,
            "  {:>4}  {:<6} {:<24} {:<24} {:>8} {:>6} {:>7}  {} .. {}",
            rank + 1,
            g.status.map_or("-".to_string(), |s| s.to_string()),
            g.kind.as_str(),
            terminal_safe(g.server),
            count,
            connections.len(),
            share,
            g.first_time(),
            g.last_time()
        )?;
    }
    for g in &groups {
        writeln!(w)?;
        let count = g.count();
        writeln!(
            w,
            "{}",
            style.bold(&format!(
                "{} {} on {}: {} finding{}{}, {} .. {}",
                g.status.map_or("-".to_string(), |s| s.to_string()),
                g.kind,
                terminal_safe(g.server),
                count,
                if count == 1 { "" } else { "s" },
                if g.unlisted > 0 {
                    format!(" ({} listed, --max-findings)", g.findings.len())
                } else {
                    String::new()
                },
                g.first_time(),
                g.last_time()
            ))
        )?;
        for (_, f) in g.findings.iter().take(EXAMPLES) {
            render_finding(f, all, style, w)?;
        }
        if g.findings.len() > EXAMPLES {
            writeln!(
                w,
                "  ... {} more like these (--all lists every finding)",
                g.findings.len() - EXAMPLES
            )?;
        }
    }
    Ok(())
}

fn by_status_in_full(
    by_status: &BTreeMap<u16, Vec<&Finding>>,
    all: &[Finding],
    style: Style,
    w: &mut dyn Write,
) -> io::Result<()> {
    for (status, group) in by_status {
        writeln!(w)?;
        writeln!(
            w,
            "{}",
            style.bold(&format!(
                "{status} {} ({} finding{})",
                status_name(*status),
                group.len(),
                if group.len() == 1 { "" } else { "s" }
            ))
        )?;
        for f in group {
            render_finding(f, all, style, w)?;
        }
    }
    Ok(())
}

fn render_notes_and_warnings(
    c: &CaptureSummary,
    notes: &[&Finding],
    style: Style,
    w: &mut dyn Write,
) -> io::Result<()> {
    if !notes.is_empty() {
        writeln!(w)?;
        writeln!(w, "{}", style.bold("Informational (not errors)"))?;
        for f in notes.iter().take(if style.all { usize::MAX } else { 50 }) {
            writeln!(
                w,
                "  {} {}  frames {}: {}",
                style.severity(f.severity),
                f.kind,
                frames(&f.packets),
                terminal_safe(&f.summary)
            )?;
        }
    }
    if !c.warnings.is_empty() {
        writeln!(w)?;
        writeln!(w, "{}", style.bold("Capture warnings"))?;
        for warning in &c.warnings {
            match warning.frame {
                Some(n) => writeln!(w, "  frame {n}: {}", terminal_safe(&warning.message))?,
                None => writeln!(w, "  {}", terminal_safe(&warning.message))?,
            }
        }
    }
    Ok(())
}

fn render_finding(f: &Finding, all: &[Finding], style: Style, w: &mut dyn Write) -> io::Result<()> {
    writeln!(
        w,
        "  {} {}  frames {}  {}",
        style.severity(f.severity),
        style.bold(f.kind.as_str()),
        frames(&f.packets),
        f.time
    )?;
    writeln!(w, "    {}", terminal_safe(&f.summary))?;
    if let Some(leg) = f.leg {
        let leg = match leg {
            Leg::Front => "front (client to balancer)",
            Leg::Back => "back (balancer to backend)",
        };
        writeln!(w, "    Leg: {leg}")?;
    }
    for (label, links) in [("Explained by", &f.explained_by), ("Explains", &f.explains)] {
        let told: Vec<String> = links
            .iter()
            .filter_map(|&i| all.get(i))
            .map(|x| {
                // Frame numbers are per file: a finding of another capture says which.
                let elsewhere = if x.capture == f.capture {
                    String::new()
                } else {
                    format!(" in {}", terminal_safe(&x.capture))
                };
                format!("{} (frames {}{elsewhere})", x.kind, frames(&x.packets))
            })
            .collect();
        if !told.is_empty() {
            writeln!(w, "    {label}: {}", told.join("; "))?;
        }
    }
    if let Some(request) = &f.facts.request {
        let status = f
            .facts
            .status
            .map_or("no response".to_string(), |s| s.to_string());
        writeln!(w, "    Request: {} -> {status}", terminal_safe(request))?;
    }
    for (i, cause) in f.causes.iter().enumerate() {
        let upstream = cause
            .upstream_status
            .as_deref()
            .map(|u| format!(", upstream_status {u}"))
            .unwrap_or_default();
        let label = if i == 0 { "Why" } else { "Or" };
        writeln!(
            w,
            "    {label} ({}{upstream}): {}",
            cause.status,
            terminal_safe(&cause.explanation)
        )?;
        if i == 0 {
            for step in &cause.next_steps {
                writeln!(w, "    Next: {}", terminal_safe(step))?;
            }
        }
    }
    writeln!(w, "    Wireshark: {}", terminal_safe(&f.flow.filter))?;
    Ok(())
}
