//! One self-contained HTML file to attach to a ticket: per capture the verdict, a timeline of
//! the findings, the findings grouped by the status they explain, and a ladder diagram of each
//! flagged connection (client | balancer | backend on a proxy capture).
//!
//! Nothing is fetched and nothing runs: styles are inline, diagrams are inline SVG, folding is
//! `<details>`, and a Content-Security-Policy forbids scripts and network access outright, so
//! even a string that slipped past [`escape`] could not execute. Every string that comes from a
//! packet or a file name goes through [`escape`], in text and in attributes alike.

use super::text::status_name;
use crate::capture::{Seen, Timestamp};
use crate::report::{Actor, CaptureSummary, Finding, Leg, Report, Severity, TcpMoments, Timeline};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, Write};

/// Beyond this many ladders a capture's report stops drawing them: a capture with thousands of
/// failing connections would make a file no browser opens comfortably, and the first ones tell
/// the story.
const MAX_LADDERS: usize = 50;
/// Arrows per ladder; the rest are counted in a note.
const MAX_EVENTS: usize = 40;
/// Frames listed inline for a finding before "+N more".
const SHOWN_FRAMES: usize = 12;
/// Longest label drawn on an arrow; the full text is in the arrow's tooltip and the finding.
const LABEL_CHARS: usize = 48;

/// Escapes a string for HTML text and for quoted attribute values alike. Control characters
/// (and the bidirectional overrides that can make a URI read as something else) become visible
/// `\u{..}` escapes: they are invalid in HTML text and a reader should see that they were there.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    matches!(c, '&' | '<' | '>' | '"' | '\'')
        || (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Parses the RFC 3339 form lbdiag writes (`2024-05-01T12:00:00.123456Z`) back to a timestamp,
/// for the capture's span, which the summary keeps only as text.
fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = s.get(19..s.len() - 1).unwrap_or("");
    let nanos = match frac.strip_prefix('.') {
        Some(digits) if !digits.is_empty() && digits.len() <= 9 => {
            digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32)
        }
        _ if frac.is_empty() => 0,
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm): no calendar crate needed for UTC.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(Timestamp(
        secs.checked_mul(Timestamp::NANOS_PER_SEC)?
            .checked_add(nanos)?,
    ))
}

/// When a finding happened: its first evidence frame, or its RFC 3339 time when a detector left
/// the typed fact empty.
fn finding_ts(f: &Finding) -> Option<Timestamp> {
    if f.facts.at.frame != 0 {
        Some(f.facts.at.ts)
    } else {
        parse_rfc3339(&f.time)
    }
}

/// Seconds since the capture's first packet, as Wireshark's Time column shows them.
fn rel(ts: Timestamp, start: Timestamp) -> String {
    format!("{:.6} s", ts.saturating_sub(start).as_secs_f64())
}

fn frames(packets: &[u64]) -> String {
    let mut s = packets
        .iter()
        .take(SHOWN_FRAMES)
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if packets.len() > SHOWN_FRAMES {
        let _ = write!(s, " (+{} more)", packets.len() - SHOWN_FRAMES);
    }
    s
}

fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

fn sev_class(s: Severity) -> &'static str {
    s.as_str()
}

/// The status a finding is grouped under: its first cause's, else none (0).
fn group_status(f: &Finding) -> u16 {
    f.causes.first().map(|c| c.status).unwrap_or(0)
}

const STYLE: &str = r#"
:root { --fg:#1b1b1b; --bg:#fff; --muted:#5f6368; --line:#c8c8c8; --card:#f6f7f9;
  --error:#c62828; --warning:#a45d00; --info:#1e63b5; --code:#eef0f3; --lane:#777;
  --ok:#4a8c5c; --none:#8a8f96; }
@media (prefers-color-scheme: dark) {
  :root { --fg:#e6e6e6; --bg:#15171a; --muted:#a0a4aa; --line:#444; --card:#1f2226;
    --error:#ff6b6b; --warning:#f0b44c; --info:#7ab4ff; --code:#2a2e33; --lane:#999;
    --ok:#6fbf85; --none:#80858c; }
}
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
  background: var(--bg); margin: 0 auto; max-width: 1100px; padding: 1rem 1.5rem; }
h1 { font-size: 1.5rem; margin: .2rem 0; } h2 { font-size: 1.25rem; margin-top: 2rem;
  border-bottom: 2px solid var(--line); padding-bottom: .2rem; overflow-wrap: anywhere; }
h3 { font-size: 1.1rem; margin-top: 1.5rem; } h4 { margin: 1rem 0 .4rem; }
.muted, .meta { color: var(--muted); }
a { color: var(--info); }
.verdict { font-size: 1.08rem; background: var(--card); border-left: 4px solid var(--error);
  padding: .6rem .8rem; margin: .6rem 0; }
.verdict.ok { border-left-color: var(--info); }
code, .filter { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
  font-size: .88em; background: var(--code); padding: .05rem .25rem; border-radius: 3px;
  overflow-wrap: anywhere; }
.filter { display: block; padding: .35rem .5rem; white-space: pre-wrap; }
details.finding { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  margin: .5rem 0; padding: .3rem .7rem; }
details.finding > summary { cursor: pointer; font-weight: 600; }
details.finding:target { outline: 2px solid var(--info); }
.sev { display: inline-block; min-width: 4.6rem; font-weight: 700; text-transform: uppercase;
  font-size: .8rem; }
.sev.error { color: var(--error); } .sev.warning { color: var(--warning); }
.sev.info { color: var(--info); }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: .15rem .8rem; margin: .4rem 0; }
dl.kv dt { color: var(--muted); } dl.kv dd { margin: 0; overflow-wrap: anywhere; }
table.evidence { border-collapse: collapse; font-size: .88rem; }
table.evidence td { border-top: 1px solid var(--line); padding: .15rem .5rem; vertical-align: top;
  overflow-wrap: anywhere; }
svg { display: block; max-width: 100%; height: auto; }
svg text { fill: var(--fg); font: 12px system-ui, sans-serif; }
svg .axis, svg .grid { stroke: var(--line); } svg .lane { stroke: var(--lane); stroke-width: 2; }
svg .m.error, svg .a.error { fill: var(--error); stroke: var(--error); }
svg .m.warning, svg .a.warning { fill: var(--warning); stroke: var(--warning); }
svg .m.info, svg .a.info { fill: var(--info); stroke: var(--info); }
svg .a.plain, svg .a.gap { fill: var(--fg); stroke: var(--fg); }
svg .a.gap line { stroke-dasharray: 2 3; } svg text.fold { font-style: italic; }
svg .a line { stroke-width: 1.6; } svg .a polygon { stroke: none; }
svg .dash { stroke-dasharray: 5 4; }
svg .b.ok, .key.ok { fill: var(--ok); background: var(--ok); }
svg .b.c4, .key.c4 { fill: var(--warning); background: var(--warning); }
svg .b.c5, .key.c5 { fill: var(--error); background: var(--error); }
svg .b.none, .key.none { fill: var(--none); background: var(--none); }
svg .fm { stroke-width: 1; stroke-dasharray: 2 3; opacity: .7; }
svg .fm.error { stroke: var(--error); } svg .fm.warning { stroke: var(--warning); }
.key { display: inline-block; width: .8em; height: .8em; border-radius: 2px; vertical-align: -.05em;
  print-color-adjust: exact; -webkit-print-color-adjust: exact; }
.legend { font-size: .9rem; }
svg text.t { fill: var(--muted); font-size: 11px; } svg text.h { font-weight: 700; }
.ladder { border: 1px solid var(--line); border-radius: 6px; padding: .5rem .7rem; margin: 1rem 0;
  break-inside: avoid; }
@media print {
  body { max-width: none; font-size: 11pt; }
  details.finding, .ladder { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"#;

pub fn render(r: &Report, w: &mut dyn Write) -> io::Result<()> {
    let title = match r.captures.as_slice() {
        [one] => format!("lbdiag report: {}", one.file),
        _ => format!("lbdiag report: {} captures", r.captures.len()),
    };
    write!(
        w,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">\n\
         <meta name=\"generator\" content=\"{} {}\">\n<title>{}</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n",
        r.tool.name,
        r.tool.version,
        escape(&title)
    )?;
    writeln!(w, "<header><h1>lbdiag report</h1>")?;
    let mut line = format!(
        "{} capture{}, {} finding{}",
        r.summary.captures,
        plural(r.summary.captures),
        r.summary.findings,
        plural(r.summary.findings)
    );
    for (sev, n) in &r.summary.by_severity {
        let _ = write!(
            line,
            ", {n} {sev}{}",
            if sev == "info" { "" } else { plural(*n) }
        );
    }
    if r.summary.unreadable_captures > 0 {
        let _ = write!(line, ", {} unreadable", r.summary.unreadable_captures);
    }
    writeln!(
        w,
        "<p class=\"meta\">{} · {} {}</p></header>",
        escape(&line),
        r.tool.name,
        escape(r.tool.version)
    )?;
    for (ci, c) in r.captures.iter().enumerate() {
        let mine: Vec<usize> = (0..r.findings.len())
            .filter(|&i| r.findings[i].capture == c.file)
            .collect();
        render_capture(ci, c, &mine, &r.findings, w)?;
    }
    if !r.logs.is_empty() {
        render_logs(r, w)?;
    }
    render_alignments(r, w)?;
    if r.summary.suppressed > 0 {
        writeln!(
            w,
            "<p class=\"muted\">{} more findings of the same kinds were counted but not listed \
             (--max-findings).</p>",
            r.summary.suppressed
        )?;
    }
    writeln!(w, "</body>\n</html>")
}

/// `--same-traffic`: a table of each pair of captures, with the sentence that tells it.
fn render_alignments(r: &Report, w: &mut dyn Write) -> io::Result<()> {
    if r.alignments.is_empty() {
        return Ok(());
    }
    writeln!(w, "<section class=\"log\" id=\"alignments\">")?;
    writeln!(w, "<h2>Captures of the same traffic</h2>")?;
    writeln!(
        w,
        "<table><thead><tr><th>capture</th><th>other</th><th>other's clock</th><th>matches</th>\
         <th>front</th><th>back</th><th>links</th><th>what it means</th></tr></thead><tbody>"
    )?;
    for a in &r.alignments {
        let offset = a.offset_ms.map_or("not found".to_string(), |ms| {
            format!("{:+.3} s", ms / 1000.0)
        });
        writeln!(
            w,
            "<tr><td>{}</td><td>{}</td><td>{offset}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&a.capture),
            escape(&a.other),
            a.matches,
            escape(a.front.as_deref().unwrap_or("-")),
            escape(a.back.as_deref().unwrap_or("-")),
            a.links,
            escape(&a.note)
        )?;
    }
    writeln!(w, "</tbody></table>\n</section>")
}

/// The access logs (`--access-log`): per log what was read and each clock offset found, then a
/// table of its reported lines with their class, matched frames and the findings (linked) on
/// their connections, the sentence that tells it, and the error findings no line mentions.
fn render_logs(r: &Report, w: &mut dyn Write) -> io::Result<()> {
    for (li, log) in r.logs.iter().enumerate() {
        writeln!(w, "<section class=\"log\" id=\"log{li}\">")?;
        writeln!(w, "<h2>Access log {}</h2>", escape(&log.path))?;
        let mut meta = format!(
            "{}: {} lines read, {} skipped, {} reported, {} matched a captured transaction.",
            log.format, log.lines_read, log.lines_skipped, log.lines_reported, log.lines_matched
        );
        for o in &log.clock_offsets {
            let _ = write!(
                meta,
                " Log clock {:+.3} s from {} ({} matches).",
                o.offset_ms / 1000.0,
                o.capture,
                o.samples
            );
        }
        writeln!(w, "<p class=\"meta\">{}</p>", escape(&meta))?;
        for n in &log.notes {
            writeln!(w, "<p class=\"verdict\">{}</p>", escape(n))?;
        }
        if !log.skipped.is_empty() {
            writeln!(w, "<details><summary>Skipped lines</summary><ul>")?;
            for sk in &log.skipped {
                writeln!(w, "<li>line {}: {}</li>", sk.line, escape(&sk.reason))?;
            }
            writeln!(w, "</ul></details>")?;
        }
        let rows: Vec<_> = r.log_matches.iter().filter(|m| m.log == log.path).collect();
        if rows.is_empty() {
            writeln!(w, "</section>")?;
            continue;
        }
        writeln!(
            w,
            "<table class=\"evidence\">\n<tr><th>line</th><th>status</th><th>upstream</th>\
             <th>class</th><th>connection</th><th>frames</th><th>findings</th></tr>"
        )?;
        for m in rows {
            let connection = match &m.flow {
                Some(f) => {
                    let mut c = format!("{} → {}", f.client, f.server);
                    if let Some(cap) = &m.capture {
                        let _ = write!(c, " in {cap}");
                    }
                    if let Some(b) = &m.back_flow {
                        let _ = write!(c, "; back {} → {}", b.client, b.server);
                        if let Some(cap) = m
                            .back_capture
                            .as_ref()
                            .filter(|b| Some(*b) != m.capture.as_ref())
                        {
                            let _ = write!(c, " in {cap}");
                        }
                    }
                    c
                }
                None => "no match".to_string(),
            };
            let list = |p: &[u64]| {
                p.iter()
                    .take(SHOWN_FRAMES)
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut frames = list(&m.packets);
            // Another capture's frame numbers, apart.
            if let Some(b) = &m.back_packets {
                let _ = write!(frames, "; back: {}", list(b));
            }
            let mut found = String::new();
            for &i in &m.findings {
                if let Some(f) = r.findings.get(i) {
                    let _ = write!(
                        found,
                        "<a href=\"#f{i}\"><code>{}</code></a> ",
                        escape(f.kind.as_str())
                    );
                }
            }
            writeln!(
                w,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td>\
                 <td>{}</td><td>{found}<br><span class=\"muted\">{}</span></td></tr>",
                m.line,
                m.status,
                escape(m.upstream_status.as_deref().unwrap_or("")),
                crate::accesslog::join::class_name(m.class),
                escape(&connection),
                frames,
                escape(&m.summary)
            )?;
        }
        writeln!(w, "</table>\n</section>")?;
    }
    if let Some(unlogged) = r.unlogged_findings.as_ref().filter(|u| !u.is_empty()) {
        writeln!(
            w,
            "<section class=\"log\">\n<h3>Error findings no log line mentions</h3>\n<ul>"
        )?;
        for &i in unlogged {
            if let Some(f) = r.findings.get(i) {
                writeln!(
                    w,
                    "<li><a href=\"#f{i}\"><code>{}</code></a> in {}: {}</li>",
                    escape(f.kind.as_str()),
                    escape(&f.capture),
                    escape(&f.summary)
                )?;
            }
        }
        writeln!(w, "</ul>\n</section>")?;
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn render_capture(
    ci: usize,
    c: &CaptureSummary,
    mine: &[usize],
    all: &[Finding],
    w: &mut dyn Write,
) -> io::Result<()> {
    writeln!(w, "<section class=\"capture\" id=\"c{ci}\">")?;
    writeln!(w, "<h2>{}</h2>", escape(&c.file))?;
    if let Some(err) = &c.error {
        writeln!(
            w,
            "<p class=\"verdict\">Could not read this capture: {}</p>\n</section>",
            escape(err)
        )?;
        return Ok(());
    }
    let link = if c.link_types.is_empty() {
        "no link type".to_string()
    } else {
        c.link_types.join("+")
    };
    let span = match (&c.first_timestamp, &c.last_timestamp) {
        (Some(a), Some(b)) => format!(", {a} to {b}"),
        _ => String::new(),
    };
    writeln!(
        w,
        "<p class=\"meta\">{}{}, {}, {} packets, {} TCP connection{}{}{}</p>",
        escape(&c.format),
        if c.compressed { ", gzip" } else { "" },
        escape(&link),
        c.packets,
        c.connections,
        plural(c.connections as usize),
        escape(&span),
        if c.truncated {
            ", <strong>truncated</strong>"
        } else {
            ""
        }
    )?;
    let problems = mine.iter().any(|&i| all[i].severity != Severity::Info);
    writeln!(
        w,
        "<p class=\"verdict{}\">{}</p>",
        if problems { "" } else { " ok" },
        escape(&c.verdict)
    )?;
    for b in &c.balancers {
        writeln!(
            w,
            "<p>Balancer <code>{}</code> serves clients on {} and forwards to {} \
             (from {}; {} request{} seen on both legs).</p>",
            escape(&b.address),
            code_list(&b.front),
            code_list(&b.back),
            code_list(&b.back_addresses),
            b.forwarded_requests,
            plural(b.forwarded_requests as usize)
        )?;
    }

    let (start, end) = capture_span(c, mine, all);
    if !mine.is_empty() || c.timeline.as_ref().is_some_and(|t| !t.buckets.is_empty()) {
        writeln!(w, "<h3>Timeline</h3>")?;
        timeline(c, mine, all, start, end, w)?;
    }

    let mut by_status: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    let mut notes = Vec::new();
    for &i in mine {
        if all[i].severity == Severity::Info {
            notes.push(i);
        } else {
            by_status.entry(group_status(&all[i])).or_default().push(i);
        }
    }
    if !by_status.is_empty() {
        writeln!(w, "<h3>Findings by status</h3>")?;
    }
    for (status, group) in &by_status {
        let heading = if *status == 0 {
            "No status".to_string()
        } else {
            format!("{status} {}", status_name(*status))
        };
        writeln!(
            w,
            "<h4>{} ({} finding{})</h4>",
            escape(heading.trim_end()),
            group.len(),
            plural(group.len())
        )?;
        for &i in group {
            render_finding(i, all, start, w)?;
        }
    }
    if !notes.is_empty() {
        writeln!(w, "<h3>Informational (not errors)</h3>\n<ul>")?;
        for &i in &notes {
            let f = &all[i];
            writeln!(
                w,
                "<li id=\"f{i}\"><span class=\"sev info\">info</span> <strong>{}</strong> \
                 frames {}: {}</li>",
                f.kind,
                frames(&f.packets),
                escape(&f.summary)
            )?;
        }
        writeln!(w, "</ul>")?;
    }

    ladders(c, mine, all, start, w)?;

    if !c.warnings.is_empty() {
        writeln!(w, "<h3>Capture warnings</h3>\n<ul>")?;
        for warning in &c.warnings {
            match warning.frame {
                Some(n) => writeln!(w, "<li>frame {n}: {}</li>", escape(&warning.message))?,
                None => writeln!(w, "<li>{}</li>", escape(&warning.message))?,
            }
        }
        writeln!(w, "</ul>")?;
    }
    writeln!(w, "</section>")
}

fn code_list(items: &[String]) -> String {
    if items.is_empty() {
        return "nothing seen".to_string();
    }
    items
        .iter()
        .map(|s| format!("<code>{}</code>", escape(s)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The capture's first and last timestamps, widened to cover every finding's times (a detector
/// may name a time the summary's text does not parse back to).
fn capture_span(c: &CaptureSummary, mine: &[usize], all: &[Finding]) -> (Timestamp, Timestamp) {
    let mut times: Vec<Timestamp> = [&c.first_timestamp, &c.last_timestamp]
        .into_iter()
        .flatten()
        .filter_map(|s| parse_rfc3339(s))
        .collect();
    times.extend(mine.iter().filter_map(|&i| finding_ts(&all[i])));
    let start = times.iter().min().copied().unwrap_or_default();
    let end = times.iter().max().copied().unwrap_or_default();
    (start, end)
}

fn render_finding(
    i: usize,
    all: &[Finding],
    start: Timestamp,
    w: &mut dyn Write,
) -> io::Result<()> {
    let f = &all[i];
    let sev = sev_class(f.severity);
    let when = finding_ts(f)
        .map(|t| format!(" at {}", rel(t, start)))
        .unwrap_or_default();
    writeln!(
        w,
        "<details class=\"finding\" id=\"f{i}\" open>\n<summary><span class=\"sev {sev}\">{sev}</span> \
         {} <span class=\"muted\">frames {}{}</span></summary>",
        f.kind,
        frames(&f.packets),
        escape(&when)
    )?;
    writeln!(w, "<p>{}</p>\n<dl class=\"kv\">", escape(&f.summary))?;
    writeln!(w, "<dt>Time</dt><dd>{}</dd>", escape(&f.time))?;
    writeln!(
        w,
        "<dt>Connection</dt><dd><code>{}</code> → <code>{}</code></dd>",
        escape(&f.flow.client),
        escape(&f.flow.server)
    )?;
    if let Some(leg) = f.leg {
        let leg = match leg {
            Leg::Front => "front (client to balancer)",
            Leg::Back => "back (balancer to backend)",
        };
        writeln!(w, "<dt>Leg</dt><dd>{leg}</dd>")?;
    }
    for (label, links) in [("Explained by", &f.explained_by), ("Explains", &f.explains)] {
        let told: Vec<String> = links
            .iter()
            .filter(|&&j| j < all.len())
            .map(|&j| {
                // Frame numbers are per file: a finding of another capture says which.
                let elsewhere = if all[j].capture == f.capture {
                    String::new()
                } else {
                    format!(" in {}", escape(&all[j].capture))
                };
                format!(
                    "<a href=\"#f{j}\">{} (frames {}{elsewhere})</a>",
                    all[j].kind,
                    frames(&all[j].packets)
                )
            })
            .collect();
        if !told.is_empty() {
            writeln!(w, "<dt>{label}</dt><dd>{}</dd>", told.join("; "))?;
        }
    }
    if let Some(request) = &f.facts.request {
        let status = f
            .facts
            .status
            .map_or("no response".to_string(), |s| s.to_string());
        writeln!(
            w,
            "<dt>Request</dt><dd><code>{}</code> → {status}</dd>",
            escape(request)
        )?;
    }
    writeln!(w, "</dl>")?;
    for (k, cause) in f.causes.iter().enumerate() {
        let upstream = cause
            .upstream_status
            .as_deref()
            .map(|u| format!(", upstream_status {u}"))
            .unwrap_or_default();
        writeln!(
            w,
            "<p><strong>{} ({}{}):</strong> {}</p>",
            if k == 0 { "Why" } else { "Or" },
            cause.status,
            escape(&upstream),
            escape(&cause.explanation)
        )?;
        // Alternative causes often share their next steps: each step is said once.
        let fresh: Vec<&String> = cause
            .next_steps
            .iter()
            .filter(|s| !f.causes[..k].iter().any(|c| c.next_steps.contains(s)))
            .collect();
        if !fresh.is_empty() {
            writeln!(w, "<p>Next steps:</p>\n<ul>")?;
            for step in fresh {
                writeln!(w, "<li>{}</li>", escape(step))?;
            }
            writeln!(w, "</ul>")?;
        }
    }
    writeln!(
        w,
        "<p>Wireshark filter:</p>\n<code class=\"filter\">{}</code>",
        escape(&f.flow.filter)
    )?;
    if !f.evidence.is_empty() {
        writeln!(
            w,
            "<details><summary>Evidence</summary>\n<table class=\"evidence\">"
        )?;
        for (k, v) in &f.evidence {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            writeln!(
                w,
                "<tr><td>{}</td><td><code>{}</code></td></tr>",
                escape(k),
                escape(&v)
            )?;
        }
        writeln!(w, "</table></details>")?;
    }
    writeln!(w, "</details>")
}

/// Findings that land on one pixel of a timeline row: how many, the worst severity, and the
/// first few, named in the mark's tooltip.
type Mark = (usize, Severity, Vec<usize>);

/// Requests of one or more timeline buckets drawn as one bar: the counts by answer, in the
/// order the bar stacks them from the bottom, and the time they cover.
struct Bar {
    x: f64,
    width: f64,
    counts: [u64; 4],
    from: Timestamp,
    to: Timestamp,
}

/// How the requests' bars stack, bottom first: class, legend label.
const BAR_CLASSES: [(&str, &str); 4] = [
    ("ok", "answered below 400"),
    ("c4", "4xx"),
    ("c5", "5xx"),
    ("none", "no response"),
];

/// The end of the timeline's last bucket, so the plot reaches the last bar.
fn timeline_end(t: &Timeline) -> Option<Timestamp> {
    let last = t.buckets.last()?;
    let width = (t.bucket_us as i64).saturating_mul(1000);
    Some(Timestamp(
        t.origin
            .0
            .saturating_add(width.saturating_mul(last.index as i64 + 1)),
    ))
}

/// Bars at most about this many across a capture: enough to show its shape, few enough that
/// each bar's rate is not one request in a millisecond.
const MAX_BARS: i64 = 120;

/// The timeline's buckets as bars on a plot `plot` pixels wide spanning `start..end`. A bar
/// is a whole number of buckets, at least a second and at least 1/120 of the span, so its
/// height is a rate of requests per second that means something.
fn bars(t: &Timeline, start: Timestamp, end: Timestamp, plot: f64) -> Vec<Bar> {
    let span = end.saturating_sub(start).0.max(1);
    let stored = (t.bucket_us as i64).saturating_mul(1000).max(1);
    let want = (span / MAX_BARS).max(Timestamp::NANOS_PER_SEC);
    let per_bar = (want.saturating_add(stored - 1) / stored).max(1);
    let bar_ns = stored.saturating_mul(per_bar);
    let x =
        |ts: Timestamp| (ts.saturating_sub(start).0 as f64 / span as f64).clamp(0.0, 1.0) * plot;
    let mut out: Vec<(i64, Bar)> = Vec::new();
    for b in &t.buckets {
        let group = b.index as i64 / per_bar;
        let counts = [b.ok, b.client_error, b.server_error, b.no_response];
        match out.last_mut() {
            Some((g, bar)) if *g == group => {
                for (s, n) in bar.counts.iter_mut().zip(counts) {
                    *s += n;
                }
            }
            _ => {
                let from = Timestamp(t.origin.0.saturating_add(bar_ns.saturating_mul(group)));
                let to = Timestamp(from.0.saturating_add(bar_ns));
                let (x0, x1) = (x(from), x(to));
                out.push((
                    group,
                    Bar {
                        x: x0,
                        width: (x1 - x0).max(1.0),
                        counts,
                        from,
                        to,
                    },
                ))
            }
        }
    }
    out.into_iter().map(|(_, b)| b).collect()
}

/// A rate for people: `3`, `12.5`, `0.25` requests per second.
fn rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 1.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

/// Requests per second as stacked bars by what answered them (when the capture holds HTTP),
/// then one row per status (and one for informational findings) with a mark per finding at its
/// time, on one time axis; a finding's moment is also marked across the bars. Marks that land
/// on the same pixel are merged, so the SVG stays small on any capture.
fn timeline(
    c: &CaptureSummary,
    mine: &[usize],
    all: &[Finding],
    start: Timestamp,
    end: Timestamp,
    w: &mut dyn Write,
) -> io::Result<()> {
    const LEFT: f64 = 110.0;
    const WIDTH: f64 = 1000.0;
    const ROW: f64 = 26.0;
    const CHART: f64 = 120.0;
    let plot = WIDTH - LEFT - 20.0;
    let requests = c.timeline.as_ref().filter(|t| !t.buckets.is_empty());
    let end = requests.and_then(timeline_end).map_or(end, |e| e.max(end));
    let bars = requests.map(|t| bars(t, start, end, WIDTH - LEFT - 20.0));
    let bar_width = bars
        .as_ref()
        .and_then(|b| b.first())
        .map(|b| b.to.saturating_sub(b.from))
        .unwrap_or_default();
    let span = end.saturating_sub(start).0.max(0) as f64;
    // Rows in the order the findings section lists them: statuses ascending, notes last.
    let mut rows: BTreeMap<(bool, u16), BTreeMap<i64, Mark>> = BTreeMap::new();
    for &i in mine {
        let f = &all[i];
        let info = f.severity == Severity::Info;
        let x = match finding_ts(f) {
            Some(t) if span > 0.0 => {
                (t.saturating_sub(start).0.max(0) as f64 / span).min(1.0) * plot
            }
            _ => 0.0,
        };
        let cell = rows
            .entry((info, if info { 0 } else { group_status(f) }))
            .or_default()
            .entry(x.round() as i64)
            .or_insert((0, f.severity, Vec::new()));
        cell.0 += 1;
        cell.1 = cell.1.max(f.severity);
        if cell.2.len() < 5 {
            cell.2.push(i);
        }
    }
    let top = if requests.is_some() {
        CHART + 24.0
    } else {
        0.0
    };
    let height = top + rows.len() as f64 * ROW + 40.0;
    writeln!(
        w,
        "<svg viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" role=\"img\" \
         aria-label=\"Requests per second and findings over the capture's time\">"
    )?;
    if let Some(bars) = &bars {
        let per_sec = |b: &Bar| {
            let secs = b.to.saturating_sub(b.from).as_secs_f64().max(1e-9);
            b.counts.iter().sum::<u64>() as f64 / secs
        };
        let peak = bars.iter().map(per_sec).fold(0.0, f64::max).max(1e-9);
        let base = 8.0 + CHART;
        writeln!(
            w,
            "<text x=\"4\" y=\"20\" class=\"h\">requests/s</text>\
             <text x=\"{:.1}\" y=\"16\" class=\"t\" text-anchor=\"end\">{}</text>\
             <line class=\"grid\" x1=\"{LEFT}\" y1=\"8\" x2=\"{:.1}\" y2=\"8\"/>\
             <text x=\"{:.1}\" y=\"{base:.1}\" class=\"t\" text-anchor=\"end\">0</text>\
             <line class=\"axis\" x1=\"{LEFT}\" y1=\"{base:.1}\" x2=\"{:.1}\" y2=\"{base:.1}\"/>",
            LEFT - 6.0,
            rate(peak),
            LEFT + plot,
            LEFT - 6.0,
            LEFT + plot
        )?;
        for b in bars {
            let total = b.counts.iter().sum::<u64>();
            let r = per_sec(b);
            let mut tip = format!(
                "{} to {}: {total} request{}, {} per second",
                rel(b.from, start),
                rel(b.to, start),
                plural(total as usize),
                rate(r)
            );
            for ((_, label), n) in BAR_CLASSES.iter().zip(b.counts) {
                if n > 0 {
                    let _ = write!(tip, "; {n} {label}");
                }
            }
            write!(w, "<g><title>{}</title>", escape(&tip))?;
            let mut y = base;
            for ((class, _), n) in BAR_CLASSES.iter().zip(b.counts) {
                if n == 0 {
                    continue;
                }
                let h = CHART * (r / peak) * n as f64 / total.max(1) as f64;
                y -= h;
                write!(
                    w,
                    "<rect class=\"b {class}\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\"/>",
                    LEFT + b.x,
                    b.width
                )?;
            }
            writeln!(w, "</g>")?;
        }
        // Where the findings are, across the bars: the same x as their marks below.
        let mut marked: BTreeMap<i64, Severity> = BTreeMap::new();
        for marks in rows.values() {
            for (x, (_, sev, _)) in marks {
                let m = marked.entry(*x).or_insert(*sev);
                *m = (*m).max(*sev);
            }
        }
        for (x, sev) in marked.iter().filter(|(_, s)| **s != Severity::Info) {
            writeln!(
                w,
                "<line class=\"fm {}\" x1=\"{:.1}\" y1=\"8\" x2=\"{:.1}\" y2=\"{:.1}\"/>",
                sev_class(*sev),
                LEFT + *x as f64,
                LEFT + *x as f64,
                top + rows.len() as f64 * ROW
            )?;
        }
    }
    for (r, ((info, status), marks)) in rows.iter().enumerate() {
        let y = top + 14.0 + r as f64 * ROW;
        let label = if *info {
            "info".to_string()
        } else if *status == 0 {
            "no status".to_string()
        } else {
            status.to_string()
        };
        writeln!(
            w,
            "<text x=\"4\" y=\"{:.1}\" class=\"h\">{label}</text>\
             <line class=\"grid\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>",
            y + 4.0,
            LEFT + plot
        )?;
        for (x, (n, sev, examples)) in marks {
            let first = examples.first().copied().unwrap_or(0);
            let mut tip = examples
                .iter()
                .map(|&j| {
                    let f = &all[j];
                    format!("{} frames {} at {}", f.kind, frames(&f.packets), f.time)
                })
                .collect::<Vec<_>>()
                .join("\n");
            if *n > examples.len() {
                let _ = write!(tip, "\n… {} findings here", n);
            }
            writeln!(
                w,
                "<a href=\"#f{first}\"><circle class=\"m {}\" cx=\"{:.1}\" cy=\"{y:.1}\" r=\"{}\">\
                 <title>{}</title></circle></a>",
                sev_class(*sev),
                LEFT + *x as f64,
                if *n > 1 { 7 } else { 5 },
                escape(&tip)
            )?;
        }
    }
    let axis = top + 14.0 + rows.len() as f64 * ROW - 6.0;
    writeln!(
        w,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{axis:.1}\" x2=\"{:.1}\" y2=\"{axis:.1}\"/>",
        LEFT + plot
    )?;
    for k in 0..=4 {
        let x = LEFT + plot * k as f64 / 4.0;
        let t = Timestamp(start.0.saturating_add((span * k as f64 / 4.0) as i64));
        let anchor = match k {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        writeln!(
            w,
            "<line class=\"axis\" x1=\"{x:.1}\" y1=\"{axis:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
             <text class=\"t\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            axis + 5.0,
            axis + 20.0,
            rel(t, start)
        )?;
    }
    writeln!(w, "</svg>")?;
    if let Some(t) = requests {
        let mut totals = [0u64; 4];
        for b in &t.buckets {
            for (s, n) in
                totals
                    .iter_mut()
                    .zip([b.ok, b.client_error, b.server_error, b.no_response])
            {
                *s += n;
            }
        }
        let keys: Vec<String> = BAR_CLASSES
            .iter()
            .zip(totals)
            .map(|((class, label), n)| format!("<span class=\"key {class}\"></span> {label}: {n}"))
            .collect();
        let outside = if t.outside > 0 {
            format!(
                " ({} request{} with a time far from the rest not drawn)",
                t.outside,
                plural(t.outside as usize)
            )
        } else {
            String::new()
        };
        writeln!(
            w,
            "<p class=\"legend\">Requests per second, by what answered them, in bars of {}{outside}: {}</p>",
            escape(&bar_width.to_string()),
            keys.join(" · ")
        )?;
    }
    writeln!(
        w,
        "<p class=\"muted\">Time since the capture's first packet ({}); larger marks stand for \
         several findings.</p>",
        escape(&start.rfc3339())
    )
}

/// A connection, as findings name it.
type ConnKey<'a> = (&'a str, &'a str);

/// One ladder: the connections of a chain of findings (a balancer's front connection and the
/// back connections that explain it) and the findings on them.
struct Ladder<'a> {
    front: Vec<ConnKey<'a>>,
    back: Vec<ConnKey<'a>>,
    plain: Vec<ConnKey<'a>>,
    findings: Vec<usize>,
}

fn key(f: &Finding) -> ConnKey<'_> {
    (f.flow.client.as_str(), f.flow.server.as_str())
}

/// Groups the flagged connections into ladders: connections joined by explained_by/explains
/// share one, so a balancer's 504 and the backend's slowness behind it are drawn together.
fn group_ladders<'a>(mine: &[usize], all: &'a [Finding]) -> Vec<Ladder<'a>> {
    let mut conns: Vec<ConnKey<'a>> = Vec::new();
    let mut index: BTreeMap<ConnKey<'a>, usize> = BTreeMap::new();
    for &i in mine {
        let k = key(&all[i]);
        if let std::collections::btree_map::Entry::Vacant(e) = index.entry(k) {
            e.insert(conns.len());
            conns.push(k);
        }
    }
    let mut parent: Vec<usize> = (0..conns.len()).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for &i in mine {
        let a = index[&key(&all[i])];
        for &j in all[i].explained_by.iter().chain(&all[i].explains) {
            let Some(b) = all.get(j).and_then(|g| index.get(&key(g))) else {
                continue;
            };
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, *b));
            if ra != rb {
                parent[ra.max(rb)] = ra.min(rb);
            }
        }
    }
    // A ladder for each group holding a problem, in the order its first problem is reported.
    let mut order: Vec<usize> = Vec::new();
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in mine {
        let r = root(&mut parent, index[&key(&all[i])]);
        members.entry(r).or_default().push(i);
        if all[i].severity != Severity::Info && !order.contains(&r) {
            order.push(r);
        }
    }
    order
        .into_iter()
        .map(|r| {
            let findings = members.remove(&r).unwrap_or_default();
            let mut ladder = Ladder {
                front: Vec::new(),
                back: Vec::new(),
                plain: Vec::new(),
                findings,
            };
            for &i in &ladder.findings {
                let k = key(&all[i]);
                let list = match all[i].leg {
                    Some(Leg::Front) => &mut ladder.front,
                    Some(Leg::Back) => &mut ladder.back,
                    None => &mut ladder.plain,
                };
                if !list.contains(&k) {
                    list.push(k);
                }
            }
            ladder
        })
        .collect()
}

fn ladders(
    c: &CaptureSummary,
    mine: &[usize],
    all: &[Finding],
    start: Timestamp,
    w: &mut dyn Write,
) -> io::Result<()> {
    let groups = group_ladders(mine, all);
    if groups.is_empty() {
        return Ok(());
    }
    writeln!(w, "<h3>Flagged connections</h3>")?;
    writeln!(
        w,
        "<p class=\"muted\">Each arrow is a frame of the connection, with its number and its \
         time since the capture's first packet: the handshake, the request and response, FINs, \
         RSTs, the first and last retransmission, capture gaps (dotted), and the frames findings \
         name. Rows are in time order, not to scale; frames in between are folded into a \
         &#8942; note; a dashed line is a frame whose sender the finding does not name.</p>"
    )?;
    for (n, ladder) in groups.iter().take(MAX_LADDERS).enumerate() {
        ladder_svg(c, n, ladder, all, start, w)?;
    }
    if groups.len() > MAX_LADDERS {
        writeln!(
            w,
            "<p class=\"muted\">{} more flagged connection groups are not drawn; their findings \
             are listed above.</p>",
            groups.len() - MAX_LADDERS
        )?;
    }
    Ok(())
}

struct Event {
    from: usize,
    to: usize,
    seen: Seen,
    label: String,
    class: &'static str,
    dashed: bool,
    /// False when the finding gives the event's time but not its frame.
    framed: bool,
    /// False when the frame is known but not its time (a capture gap): it is placed after the
    /// frames before it.
    timed: bool,
}

/// Draws an event on a ladder unless its frame is drawn already; true when it is new.
type Push<'p> = dyn FnMut(Event) -> bool + 'p;

/// An arrow from lane to lane at a frame whose number and time are known.
fn arrow(
    from: usize,
    to: usize,
    seen: Seen,
    label: String,
    class: &'static str,
    dashed: bool,
) -> Event {
    Event {
        from,
        to,
        seen,
        label,
        class,
        dashed,
        framed: true,
        timed: true,
    }
}

/// A connection's TCP moments as arrows: the handshake, closes, resets, retransmissions (the
/// first and the last, with a count: a long transfer is folded to those) and capture gaps.
fn tcp_moments(
    tcp: &TcpMoments,
    f: &Finding,
    cl: usize,
    sv: usize,
    sev: &'static str,
    push: &mut Push<'_>,
) {
    if let Some(at) = tcp.syn {
        push(arrow(cl, sv, at, "SYN".into(), "plain", false));
    }
    if let Some(r) = tcp.syns {
        push(arrow(
            cl,
            sv,
            r.last,
            format!("SYN again ({} in all)", r.count),
            "warning",
            false,
        ));
    }
    if let Some(at) = tcp.syn_ack {
        push(arrow(sv, cl, at, "SYN-ACK".into(), "plain", false));
    }
    if let Some(at) = tcp.handshake_rst {
        push(arrow(sv, cl, at, "RST (refused)".into(), sev, false));
    }
    if let Some(at) = tcp.client_fin {
        push(arrow(cl, sv, at, "FIN".into(), "plain", false));
    }
    if let Some(at) = tcp.server_fin {
        push(arrow(sv, cl, at, "FIN".into(), "plain", false));
    }
    if let Some((by, at)) = tcp.reset {
        let (from, to) = match by {
            Actor::Client => (cl, sv),
            Actor::Server => (sv, cl),
        };
        push(arrow(from, to, at, "RST".into(), sev, false));
    }
    for (r, from, to) in [
        (tcp.client_retransmissions, cl, sv),
        (tcp.server_retransmissions, sv, cl),
    ] {
        let Some(r) = r else { continue };
        let label = if r.count > 1 {
            format!("retransmission (first of {})", r.count)
        } else {
            "retransmission".to_string()
        };
        push(arrow(from, to, r.first, label, "warning", false));
        if r.count > 1 && r.last.frame != r.first.frame {
            push(arrow(
                from,
                to,
                r.last,
                "last retransmission".into(),
                "warning",
                false,
            ));
        }
    }
    // A gap's frame is known, its time is not: it is drawn at the latest time known before it.
    let known: Vec<Seen> = [
        tcp.syn,
        tcp.syn_ack,
        tcp.client_fin,
        tcp.server_fin,
        tcp.reset.map(|r| r.1),
        f.facts.request_at,
        f.facts.response_at,
        f.facts.response_done_at,
    ]
    .into_iter()
    .flatten()
    .chain(
        [tcp.client_retransmissions, tcp.server_retransmissions]
            .into_iter()
            .flatten()
            .flat_map(|r| [r.first, r.last]),
    )
    .collect();
    for (gap, from, to) in [(tcp.client_gap, cl, sv), (tcp.server_gap, sv, cl)] {
        let Some((frame, bytes)) = gap else { continue };
        let ts = known
            .iter()
            .filter(|s| s.frame < frame)
            .map(|s| s.ts)
            .max()
            .unwrap_or(f.facts.at.ts);
        let label = format!("capture gap: {bytes} byte(s) not captured");
        push(Event {
            timed: false,
            ..arrow(from, to, Seen { frame, ts }, label, "gap", false)
        });
    }
}

/// The distinct addresses a lane stands for: two are shown, the rest counted.
fn lane_label<'a>(keys: &[ConnKey<'a>], pick: fn(&ConnKey<'a>) -> &'a str) -> Vec<String> {
    let mut seen: Vec<&str> = Vec::new();
    for k in keys {
        let s = pick(k);
        if !seen.contains(&s) {
            seen.push(s);
        }
    }
    let mut lines: Vec<String> = seen.iter().take(2).map(|s| s.to_string()).collect();
    if seen.len() > 2 {
        lines[1] = format!("{} +{} more", lines[1], seen.len() - 2);
    }
    lines
}

fn ladder_svg(
    c: &CaptureSummary,
    n: usize,
    ladder: &Ladder<'_>,
    all: &[Finding],
    start: Timestamp,
    w: &mut dyn Write,
) -> io::Result<()> {
    let proxied = !ladder.front.is_empty() || !ladder.back.is_empty();
    // Lanes: client, server — or client, balancer, backend when a finding is on a leg.
    let lanes: Vec<(&str, Vec<String>)> = if proxied {
        let mut balancer: Vec<ConnKey<'_>> = ladder.front.iter().map(|&(_, s)| (s, s)).collect();
        balancer.extend(ladder.back.iter().map(|&(cl, _)| (cl, cl)));
        let mut middle = lane_label(&balancer, |k| k.0);
        if middle.is_empty() {
            middle = c
                .balancers
                .iter()
                .take(1)
                .map(|b| b.address.clone())
                .collect();
        }
        vec![
            ("client", lane_label(&ladder.front, |k| k.0)),
            ("balancer", middle),
            ("backend", lane_label(&ladder.back, |k| k.1)),
        ]
    } else {
        vec![
            ("client", lane_label(&ladder.plain, |k| k.0)),
            ("server", lane_label(&ladder.plain, |k| k.1)),
        ]
    };
    let mut events: Vec<Event> = Vec::new();
    // Each frame is drawn once; what several findings say of it is joined on its label.
    let mut drawn: BTreeMap<(u64, Timestamp, usize, usize), usize> = BTreeMap::new();
    let mut undrawn: BTreeSet<u64> = BTreeSet::new();
    for &i in &ladder.findings {
        let f = &all[i];
        let (cl, sv) = match (proxied, f.leg) {
            (true, Some(Leg::Back)) => (1, 2),
            (true, _) => (0, 1),
            (false, _) => (0, 1),
        };
        let known: BTreeSet<u64> = [
            f.facts.request_at,
            f.facts.response_at,
            f.facts.response_done_at,
            Some(f.facts.at),
        ]
        .into_iter()
        .flatten()
        .map(|s| s.frame)
        .collect();
        let others = [
            f.facts.request_at,
            f.facts.response_at,
            f.facts.response_done_at,
        ];
        // An event already drawn at the same moment is the one `at` names.
        let told = others.iter().flatten().any(|s| s.ts == f.facts.at.ts);
        // Some detectors keep the request's frame in `at` with the time of what they saw
        // later: that time is drawn, without a frame number it does not have.
        let framed = !others
            .iter()
            .flatten()
            .any(|s| s.frame == f.facts.at.frame && s.ts != f.facts.at.ts);
        let mut push = |e: Event| {
            if e.seen.frame == 0 {
                return false;
            }
            let Event {
                from,
                to,
                seen,
                label,
                class,
                ..
            } = &e;
            // A frame whose sender the finding does not name joins the arrow drawn for it.
            let key = if e.dashed {
                drawn
                    .range(
                        (seen.frame, seen.ts, 0, 0)..=(seen.frame, seen.ts, usize::MAX, usize::MAX),
                    )
                    .next()
                    .map(|(k, _)| *k)
                    .unwrap_or((seen.frame, seen.ts, *from, *to))
            } else {
                (seen.frame, seen.ts, *from, *to)
            };
            match drawn.entry(key) {
                std::collections::btree_map::Entry::Occupied(e) => {
                    let old = &mut events[*e.get()];
                    if !old.label.split(" · ").any(|l| l == label) {
                        old.label = format!("{} · {label}", old.label);
                    }
                    if old.class == "plain" {
                        old.class = class;
                    }
                    false
                }
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(events.len());
                    events.push(e);
                    true
                }
            }
        };
        let sev = sev_class(f.severity);
        if let Some(tcp) = &f.facts.tcp {
            tcp_moments(tcp, f, cl, sv, sev, &mut push);
        }
        if let Some(at) = f.facts.request_at {
            let what = f.facts.request.as_deref().unwrap_or("request");
            push(arrow(cl, sv, at, what.to_string(), "plain", false));
        }
        if let Some(at) = f.facts.response_at {
            let what = f.facts.status.map_or("response".to_string(), |s| {
                format!("{s} {}", status_name(s))
            });
            let class = if f.facts.status.is_some_and(|s| s >= 400) {
                sev
            } else {
                "plain"
            };
            push(arrow(sv, cl, at, what.trim_end().to_string(), class, false));
        }
        if let Some(at) = f.facts.response_done_at {
            push(arrow(
                sv,
                cl,
                at,
                "response ends".to_string(),
                "plain",
                false,
            ));
        }
        let at = f.facts.at;
        if at.frame != 0 && !told {
            let what = f.kind.as_str().to_string();
            let new = match f.facts.by {
                Some(Actor::Client) => push(arrow(cl, sv, at, what, sev, false)),
                Some(Actor::Server) => push(arrow(sv, cl, at, what, sev, false)),
                // Direction unknown: drawn across the connection without saying who sent it.
                None => push(arrow(cl, sv, at, what, sev, true)),
            };
            if new
                && !framed
                && let Some(e) = events.last_mut()
            {
                e.framed = false;
            }
        }
        for p in &f.packets {
            if !known.contains(p) {
                undrawn.insert(*p);
            }
        }
    }
    // An event whose frame the finding does not know, at the moment of a frame drawn from the
    // connection (the RST behind a reset finding), is that frame: its label joins that arrow.
    let mut k = 0;
    while k < events.len() {
        let same = (!events[k].framed)
            .then(|| {
                events
                    .iter()
                    .position(|e| e.framed && e.seen.ts == events[k].seen.ts)
            })
            .flatten();
        match same {
            Some(j) => {
                let e = events.remove(k);
                let j = if j > k { j - 1 } else { j };
                let old = &mut events[j];
                if !old.label.split(" · ").any(|l| l == e.label) {
                    old.label = format!("{} · {}", old.label, e.label);
                }
                if old.class == "plain" || e.class == "error" {
                    old.class = e.class;
                }
            }
            None => k += 1,
        }
    }
    for e in events.iter().filter(|e| e.framed) {
        undrawn.remove(&e.seen.frame);
    }
    events.sort_by_key(|e| (e.seen.ts, e.seen.frame));
    let hidden = events.len().saturating_sub(MAX_EVENTS);
    events.truncate(MAX_EVENTS);

    const WIDTH: f64 = 860.0;
    const LEFT: f64 = 110.0;
    const TOP: f64 = 74.0;
    const ROW: f64 = 38.0;
    let gap = (WIDTH - LEFT - 90.0) / (lanes.len() - 1) as f64;
    let lane_x = |l: usize| LEFT + 40.0 + gap * l as f64;
    let height = TOP + ROW * events.len().max(1) as f64 + 16.0;

    writeln!(w, "<div class=\"ladder\" id=\"l{n}\">")?;
    let titles: Vec<String> = ladder
        .front
        .iter()
        .map(|k| (k, " (front)"))
        .chain(ladder.back.iter().map(|k| (k, " (back)")))
        .chain(ladder.plain.iter().map(|k| (k, "")))
        .map(|((cl, sv), leg)| {
            format!(
                "<code>{}</code> → <code>{}</code>{leg}",
                escape(cl),
                escape(sv)
            )
        })
        .collect();
    writeln!(w, "<h4>{}</h4>", titles.join(", "))?;
    writeln!(
        w,
        "<svg viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" role=\"img\" \
         aria-label=\"Ladder diagram\">"
    )?;
    for (l, (role, addr)) in lanes.iter().enumerate() {
        let x = lane_x(l);
        write!(
            w,
            "<text x=\"{x:.1}\" y=\"16\" text-anchor=\"middle\" class=\"h\">{role}</text>"
        )?;
        for (k, line) in addr.iter().enumerate() {
            write!(
                w,
                "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                32 + 15 * k,
                escape(&truncate(line, 30))
            )?;
        }
        writeln!(
            w,
            "<line class=\"lane\" x1=\"{x:.1}\" y1=\"56\" x2=\"{x:.1}\" y2=\"{:.1}\"/>",
            height - 6.0
        )?;
    }
    if events.is_empty() {
        writeln!(
            w,
            "<text x=\"{LEFT}\" y=\"{:.1}\" class=\"t\">no frame of this connection has a \
             known direction and time</text>",
            TOP + 10.0
        )?;
    }
    let mut last_framed: Option<u64> = None;
    for (row, e) in events.iter().enumerate() {
        let y = TOP + ROW * row as f64 + 14.0;
        // Frames between two rows are folded into a note: a long transfer is a line, not rows.
        if let Some(prev) = last_framed
            && e.framed
            && e.seen.frame > prev + 2
        {
            let (a, b) = (prev + 1, e.seen.frame - 1);
            let what = format!("⋮ frames {a}–{b}");
            writeln!(
                w,
                "<text class=\"t fold\" x=\"4\" y=\"{:.1}\">{what}</text>",
                y - ROW / 2.0 + 4.0
            )?;
        }
        if e.framed {
            last_framed = Some(e.seen.frame);
        }
        let (x1, x2) = (lane_x(e.from), lane_x(e.to));
        let dir = if x2 > x1 { 1.0 } else { -1.0 };
        // A dashed line has no known sender, so no arrowhead claims one.
        let head = if e.dashed {
            String::new()
        } else {
            format!(
                "<polygon points=\"{x2:.1},{y:.1} {:.1},{:.1} {:.1},{:.1}\"/>",
                x2 - dir * 10.0,
                y - 5.0,
                x2 - dir * 10.0,
                y + 5.0
            )
        };
        let x2 = if e.dashed { x2 } else { x2 - dir * 9.0 };
        let frame = if e.framed {
            format!("frame {}", e.seen.frame)
        } else {
            "frame not known".to_string()
        };
        let tip = format!("{frame}: {}", e.label);
        writeln!(
            w,
            "<g class=\"a {}\"><title>{}</title>\
             <line x1=\"{x1:.1}\" y1=\"{y:.1}\" x2=\"{x2:.1}\" y2=\"{y:.1}\"{}/>{head}</g>",
            e.class,
            escape(&tip),
            if e.dashed { " class=\"dash\"" } else { "" },
        )?;
        writeln!(
            w,
            "<text class=\"t\" x=\"4\" y=\"{:.1}\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{frame} · {}</text>",
            y + 4.0,
            if e.timed {
                rel(e.seen.ts, start)
            } else {
                "time not known".to_string()
            },
            (x1 + x2) / 2.0,
            y - 6.0,
            escape(&truncate(&e.label, LABEL_CHARS))
        )?;
    }
    writeln!(w, "</svg>")?;
    let mut notes = Vec::new();
    if hidden > 0 {
        notes.push(format!("{hidden} more arrows not drawn"));
    }
    if !undrawn.is_empty() {
        let list: Vec<u64> = undrawn.into_iter().collect();
        notes.push(format!("other evidence frames: {}", frames(&list)));
    }
    let links: Vec<String> = ladder
        .findings
        .iter()
        .map(|&i| format!("<a href=\"#f{i}\">{}</a>", all[i].kind))
        .collect();
    writeln!(
        w,
        "<p class=\"muted\">Findings: {}{}{}</p>\n</div>",
        links.join(", "),
        if notes.is_empty() { "" } else { "; " },
        escape(&notes.join("; "))
    )
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::report::{Cause, Facts, Flow, Kind};

    #[test]
    fn test_escape_hostile_strings() {
        assert_eq!(escape("plain text"), "plain text");
        assert_eq!(
            escape("<script>alert(1)</script>"),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(
            escape("\" onmouseover='x' a=\"&amp;"),
            "&quot; onmouseover=&#39;x&#39; a=&quot;&amp;amp;"
        );
        assert_eq!(
            escape("a\x1b[31mb\r\0\x7f"),
            "a\\u{1b}[31mb\\u{d}\\u{0}\\u{7f}"
        );
        assert_eq!(escape("\u{202e}gnp.exe"), "\\u{202e}gnp.exe");
        assert_eq!(escape("line\nnext\ttab"), "line\nnext\ttab");
        assert_eq!(escape("\u{85}"), "\\u{85}");
    }

    #[test]
    fn test_parse_rfc3339_round_trips_lbdiag_times() {
        let ts = Timestamp::from_parts(1_700_000_000, 123_456, 1_000_000);
        assert_eq!(parse_rfc3339(&ts.rfc3339()), Some(ts));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(Timestamp(0)));
        assert_eq!(
            parse_rfc3339("2024-02-29T23:59:59.5Z"),
            Some(Timestamp(1_709_251_199_500_000_000))
        );
        for bad in [
            "",
            "garbage",
            "2024-02-29T23:59:59.Z",
            "2024-02-29 23:59:59Z",
            "é",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    fn hostile_finding(leg: Option<Leg>) -> Finding {
        let evil = "<script>alert('x')</script>\"&\x1b";
        let seen = |frame, s| Seen {
            frame,
            ts: Timestamp::from_parts(s, 0, 1),
        };
        let mut evidence = serde_json::Map::new();
        evidence.insert(evil.into(), serde_json::Value::String(evil.into()));
        Finding {
            kind: Kind::ConnectionReset,
            severity: Severity::Error,
            capture: evil.into(),
            flow: Flow {
                client: evil.into(),
                server: evil.into(),
                filter: evil.into(),
            },
            packets: vec![3, 4, 9],
            time: "not a time <b>".into(),
            summary: evil.into(),
            evidence,
            causes: vec![Cause {
                status: 502,
                upstream_status: Some(evil.into()),
                explanation: evil.into(),
                next_steps: vec![evil.into()],
            }],
            leg,
            explained_by: vec![1, 99],
            explains: vec![],
            facts: Facts {
                at: seen(4, 2),
                request: Some(evil.into()),
                request_at: Some(seen(3, 1)),
                response_at: Some(seen(5, 3)),
                status: Some(502),
                ..Facts::default()
            },
        }
    }

    fn hostile_report() -> Report {
        let evil = "<script>alert('x')</script>\"&\x1b";
        let capture = CaptureSummary {
            file: evil.into(),
            verdict: evil.into(),
            format: evil.into(),
            link_types: vec![evil.into()],
            first_timestamp: Some(evil.into()),
            warnings: vec![crate::report::Warning {
                frame: Some(1),
                message: evil.into(),
            }],
            balancers: vec![crate::report::BalancerReport {
                address: evil.into(),
                back_addresses: vec![evil.into()],
                front: vec![evil.into()],
                back: vec![],
                forwarded_requests: 1,
            }],
            ..Default::default()
        };
        let unreadable = CaptureSummary {
            file: evil.into(),
            error: Some(evil.into()),
            ..Default::default()
        };
        let mut back = hostile_finding(Some(Leg::Back));
        back.explained_by = vec![];
        back.explains = vec![0];
        back.severity = Severity::Warning;
        let mut info = hostile_finding(None);
        info.severity = Severity::Info;
        Report::new(
            vec![capture, unreadable],
            vec![hostile_finding(Some(Leg::Front)), back, info],
            0,
        )
    }

    #[test]
    fn test_render_escapes_hostile_report() {
        let mut out = Vec::new();
        render(&hostile_report(), &mut out).unwrap();
        let html = String::from_utf8(out).unwrap();
        assert!(!html.to_ascii_lowercase().contains("<script"), "{html}");
        assert!(!html.contains('\x1b'));
        assert!(!html.contains("'x'"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("<svg"));
        assert!(html.contains(">balancer</text>"));
    }

    #[test]
    fn test_render_empty_report() {
        let mut out = Vec::new();
        render(&Report::new(vec![], vec![], 0), &mut out).unwrap();
        let html = String::from_utf8(out).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
    }

    #[test]
    fn test_ladders_are_capped() {
        let mut findings = Vec::new();
        for n in 0..(MAX_LADDERS + 7) {
            let mut f = hostile_finding(None);
            f.flow.client = format!("10.0.0.1:{}", 1000 + n);
            f.explained_by = vec![];
            findings.push(f);
        }
        let capture = CaptureSummary {
            file: findings[0].capture.clone(),
            ..Default::default()
        };
        let mut out = Vec::new();
        render(&Report::new(vec![capture], findings, 0), &mut out).unwrap();
        let html = String::from_utf8(out).unwrap();
        assert_eq!(html.matches("<div class=\"ladder\"").count(), MAX_LADDERS);
        assert!(html.contains("7 more flagged connection groups are not drawn"));
    }

    fn timeline_of(buckets: &[(u32, [u64; 4])], bucket_us: u64, origin: Timestamp) -> Timeline {
        Timeline {
            start: origin.rfc3339(),
            origin,
            bucket_us,
            buckets: buckets
                .iter()
                .map(|&(index, c)| crate::report::TimelineBucket {
                    index,
                    ok: c[0],
                    client_error: c[1],
                    server_error: c[2],
                    no_response: c[3],
                })
                .collect(),
            outside: 0,
        }
    }

    #[test]
    fn test_timeline_bars_are_whole_seconds_at_least() {
        let start = Timestamp::from_parts(1_700_000_000, 0, 1);
        let end = Timestamp::from_parts(1_700_000_010, 0, 1);
        // 1 ms buckets at 0.0005 s... 2.5 s: the first two fall in one 1 s bar.
        let t = timeline_of(
            &[(0, [1, 0, 0, 0]), (500, [0, 0, 2, 0]), (2500, [0, 1, 0, 1])],
            1000,
            start,
        );
        let b = bars(&t, start, end, 1000.0);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].counts, [1, 0, 2, 0]);
        assert_eq!(b[0].to.saturating_sub(b[0].from).as_secs_f64(), 1.0);
        assert_eq!(b[1].counts, [0, 1, 0, 1]);
        assert!((b[1].x - 200.0).abs() < 1e-6, "{}", b[1].x);
        // A day and a half of 512 wide buckets: bars of about 1/120 of it.
        let many: Vec<(u32, [u64; 4])> = (0..512).map(|i| (i, [1, 0, 0, 0])).collect();
        let t = timeline_of(&many, 1000 << 18, start);
        let end = timeline_end(&t).unwrap();
        let b = bars(&t, start, end, 1000.0);
        assert!(b.len() <= 130, "{}", b.len());
        assert_eq!(b.iter().map(|b| b.counts[0]).sum::<u64>(), 512);
    }

    #[test]
    fn test_timeline_with_absurd_times_renders() {
        let mut out = Vec::new();
        for origin in [Timestamp(i64::MIN), Timestamp(i64::MAX), Timestamp(0)] {
            let capture = CaptureSummary {
                file: "x".into(),
                first_timestamp: Some("2024-01-01T00:00:00.000000Z".into()),
                timeline: Some(timeline_of(
                    &[(0, [1, 1, 1, 1]), (511, [3, 0, 0, 0])],
                    u64::MAX,
                    origin,
                )),
                ..Default::default()
            };
            render(&Report::new(vec![capture], vec![], 0), &mut out).unwrap();
        }
        let html = String::from_utf8(out).unwrap();
        assert!(html.contains("class=\"b ok\""));
        for bad in ["NaN", "\"inf", "\"-inf"] {
            assert!(
                !html.contains(bad),
                "{}",
                &html[html.find(bad).unwrap().saturating_sub(200)..]
            );
        }
    }

    #[test]
    fn test_ladder_draws_tcp_moments_and_folds_between() {
        use crate::report::{Repeats, TcpMoments};
        let seen = |frame, ms| Seen {
            frame,
            ts: Timestamp::from_parts(1_700_000_000, ms, 1000),
        };
        let mut f = hostile_finding(None);
        f.explained_by = vec![];
        f.facts = Facts {
            at: seen(90, 900),
            by: Some(Actor::Server),
            tcp: Some(Box::new(TcpMoments {
                syn: Some(seen(1, 0)),
                syn_ack: Some(seen(2, 1)),
                client_fin: Some(seen(91, 910)),
                reset: Some((Actor::Server, seen(90, 900))),
                server_retransmissions: Some(Repeats {
                    count: 7,
                    first: seen(40, 400),
                    last: seen(80, 800),
                }),
                server_gap: Some((50, 1448)),
                ..TcpMoments::default()
            })),
            ..Facts::default()
        };
        let capture = CaptureSummary {
            file: f.capture.clone(),
            ..Default::default()
        };
        let mut out = Vec::new();
        render(&Report::new(vec![capture], vec![f], 0), &mut out).unwrap();
        let html = String::from_utf8(out).unwrap();
        for want in [
            "frame 1 · SYN<",
            "frame 2 · SYN-ACK<",
            "frame 40 · retransmission (first of 7)",
            "frame 80 · last retransmission",
            "frame 50 · capture gap: 1448 byte(s) not captured",
            "frame 90 · RST · connection_reset",
            "frame 91 · FIN",
            "⋮ frames 3–39",
            "time not known",
        ] {
            assert!(html.contains(want), "{want} missing");
        }
        // The reset's own arrow is drawn once, joined with what the finding says of it.
        assert_eq!(html.matches("frame 90 ·").count(), 1);
    }
}
