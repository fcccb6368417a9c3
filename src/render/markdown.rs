//! `--format markdown`: GitHub-flavoured Markdown to paste into a ticket. Per capture the
//! verdict, a ranked table of finding groups (same kind, server and status), then each group in
//! a collapsible `<details>` block with a few example findings, their frames, the Wireshark
//! filter and the next steps in code blocks.
//!
//! Everything that can come from a packet or a file name goes through [`escape`] (running text
//! and table cells), [`escape_html`] (inside HTML blocks) or [`code_block`] (fenced blocks), so
//! a hostile request cannot open a link, an HTML tag, a table column or close a code block.

use super::group::{Group, groups};
use super::terminal_safe;
use super::text::status_name;
use crate::report::{CaptureSummary, Finding, Leg, Report};
use std::io::{self, Write};

/// Example findings shown per group; the rest are counted.
const EXAMPLES: usize = 3;
/// Frame numbers shown per finding.
const FRAMES: usize = 8;

pub fn render(report: &Report, w: &mut dyn Write) -> io::Result<()> {
    writeln!(w, "# lbdiag report")?;
    for capture in &report.captures {
        writeln!(w)?;
        render_capture(capture, &report.findings, w)?;
    }
    if !report.logs.is_empty() {
        render_logs(report, w)?;
    }
    render_alignments(report, w)?;
    if report.captures.len() > 1 || report.summary.suppressed > 0 {
        writeln!(w)?;
        writeln!(w, "---")?;
        writeln!(w)?;
        write!(
            w,
            "{} captures, {} findings",
            report.summary.captures, report.summary.findings
        )?;
        if report.summary.unreadable_captures > 0 {
            write!(w, ", {} unreadable", report.summary.unreadable_captures)?;
        }
        writeln!(w, ".")?;
        if report.summary.suppressed > 0 {
            writeln!(w)?;
            writeln!(
                w,
                "{} more findings of the same kinds were counted but not listed (`--max-findings`).",
                report.summary.suppressed
            )?;
        }
    }
    Ok(())
}

/// `--same-traffic`: a table of each pair of captures, then what each pair's numbers mean.
fn render_alignments(report: &Report, w: &mut dyn Write) -> io::Result<()> {
    if report.alignments.is_empty() {
        return Ok(());
    }
    writeln!(w)?;
    writeln!(w, "## Captures of the same traffic")?;
    writeln!(w)?;
    writeln!(
        w,
        "| capture | other | other's clock | matches | front | back | links |"
    )?;
    writeln!(w, "|---|---|---|---|---|---|---|")?;
    for a in &report.alignments {
        writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} |",
            escape(&a.capture),
            escape(&a.other),
            a.offset_ms.map_or("not found".to_string(), |ms| format!(
                "{:+.3} s",
                ms / 1000.0
            )),
            a.matches,
            a.front.as_deref().map_or("-".to_string(), escape),
            a.back.as_deref().map_or("-".to_string(), escape),
            a.links
        )?;
    }
    writeln!(w)?;
    for a in &report.alignments {
        writeln!(w, "- {}", escape(&a.note))?;
    }
    Ok(())
}

/// The access logs (`--access-log`): a summary per log and a table of its reported lines.
fn render_logs(report: &Report, w: &mut dyn Write) -> io::Result<()> {
    for log in &report.logs {
        writeln!(w)?;
        writeln!(w, "## Access log {}", escape(&log.path))?;
        writeln!(w)?;
        write!(
            w,
            "Format `{}`: {} lines read, {} skipped, {} reported, {} matched a captured transaction.",
            log.format, log.lines_read, log.lines_skipped, log.lines_reported, log.lines_matched
        )?;
        for o in &log.clock_offsets {
            write!(
                w,
                " Log clock {:+.3} s from {} ({} matches).",
                o.offset_ms / 1000.0,
                escape(&o.capture),
                o.samples
            )?;
        }
        writeln!(w)?;
        for s in &log.skipped {
            writeln!(w)?;
            writeln!(w, "- skipped line {}: {}", s.line, escape(&s.reason))?;
        }
        for n in &log.notes {
            writeln!(w)?;
            writeln!(w, "> {}", escape(n))?;
        }
        let rows: Vec<_> = report
            .log_matches
            .iter()
            .filter(|m| m.log == log.path)
            .collect();
        if rows.is_empty() {
            continue;
        }
        writeln!(w)?;
        writeln!(
            w,
            "| line | status | upstream | class | connection | frames | what the packets say |"
        )?;
        writeln!(w, "|---|---|---|---|---|---|---|")?;
        for m in rows {
            let connection = m.flow.as_ref().map_or("no match".to_string(), |f| {
                format!("{} → {}", escape(&f.client), escape(&f.server))
            });
            writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} |",
                m.line,
                m.status,
                escape(m.upstream_status.as_deref().unwrap_or("")),
                crate::accesslog::join::class_name(m.class),
                connection,
                frames(&m.packets),
                escape(&m.summary)
            )?;
        }
    }
    if let Some(unlogged) = report.unlogged_findings.as_ref().filter(|u| !u.is_empty()) {
        writeln!(w)?;
        writeln!(w, "**Error findings no log line mentions:**")?;
        writeln!(w)?;
        for f in unlogged.iter().filter_map(|&i| report.findings.get(i)) {
            writeln!(
                w,
                "- `{}` frames {} in {}: {}",
                f.kind,
                frames(&f.packets),
                escape(&f.capture),
                escape(&f.summary)
            )?;
        }
    }
    Ok(())
}

fn render_capture(c: &CaptureSummary, all: &[Finding], w: &mut dyn Write) -> io::Result<()> {
    writeln!(w, "## {}", escape(&c.file))?;
    writeln!(w)?;
    if let Some(err) = &c.error {
        writeln!(w, "**Could not read this capture:** {}", escape(err))?;
        return Ok(());
    }
    writeln!(w, "**Verdict:** {}", escape(&c.verdict))?;
    writeln!(w)?;
    let mut about = format!(
        "{}{}, {}, {} packets, {} TCP connection{}",
        c.format,
        if c.compressed { " (gzip)" } else { "" },
        if c.link_types.is_empty() {
            "no link type".to_string()
        } else {
            c.link_types.join("+")
        },
        c.packets,
        c.connections,
        if c.connections == 1 { "" } else { "s" },
    );
    if let (Some(a), Some(b)) = (&c.first_timestamp, &c.last_timestamp) {
        about.push_str(&format!(", {a} to {b}"));
    }
    if c.truncated {
        about.push_str(", truncated");
    }
    writeln!(w, "{}", escape(&about))?;
    for b in &c.balancers {
        writeln!(w)?;
        writeln!(
            w,
            "Balancer {}: clients connect to {}; it forwards to {}.",
            escape(&b.address),
            escape(&b.front.join(", ")),
            escape(&b.back.join(", "))
        )?;
    }

    let groups = groups(&c.file, all, true);
    if groups.is_empty() {
        writeln!(w)?;
        writeln!(w, "No findings.")?;
    } else {
        writeln!(w)?;
        writeln!(
            w,
            "| # | Status | Cause | Server | Findings | First | Last |"
        )?;
        writeln!(w, "|---|---|---|---|---:|---|---|")?;
        for (rank, g) in groups.iter().enumerate() {
            writeln!(
                w,
                "| {} | {} | `{}` ({}) | {} | {} | {} | {} |",
                rank + 1,
                status_label(g),
                g.kind,
                g.severity,
                escape(g.server),
                g.findings.len(),
                escape(g.first_time()),
                escape(g.last_time()),
            )?;
        }
        for (rank, g) in groups.iter().enumerate() {
            writeln!(w)?;
            render_group(rank + 1, g, all, w)?;
        }
    }
    if !c.warnings.is_empty() {
        writeln!(w)?;
        writeln!(w, "**Capture warnings**")?;
        writeln!(w)?;
        for warning in &c.warnings {
            match warning.frame {
                Some(n) => writeln!(w, "- frame {n}: {}", escape(&warning.message))?,
                None => writeln!(w, "- {}", escape(&warning.message))?,
            }
        }
    }
    Ok(())
}

fn status_label(g: &Group<'_>) -> String {
    match g.status {
        Some(s) => format!("{s} {}", status_name(s)).trim_end().to_string(),
        None => "-".to_string(),
    }
}

fn render_group(rank: usize, g: &Group<'_>, all: &[Finding], w: &mut dyn Write) -> io::Result<()> {
    // An HTML block holds raw HTML: only HTML escaping applies inside it, and it ends at the
    // blank line, after which Markdown is read again.
    writeln!(w, "<details>")?;
    writeln!(
        w,
        "<summary>{rank}. {} {} at {}: {} finding{}</summary>",
        escape_html(&status_label(g)),
        g.kind,
        escape_html(g.server),
        g.findings.len(),
        if g.findings.len() == 1 { "" } else { "s" }
    )?;
    for (n, (_, f)) in g.findings.iter().take(EXAMPLES).enumerate() {
        writeln!(w)?;
        render_finding(n + 1, f, all, w)?;
    }
    if g.findings.len() > EXAMPLES {
        writeln!(w)?;
        writeln!(
            w,
            "{} more like these; `--format json` lists them all.",
            g.findings.len() - EXAMPLES
        )?;
    }
    writeln!(w)?;
    writeln!(w, "</details>")
}

fn render_finding(n: usize, f: &Finding, all: &[Finding], w: &mut dyn Write) -> io::Result<()> {
    writeln!(
        w,
        "**Example {n}** ({}, frames {}, {})",
        f.severity,
        frames(&f.packets),
        escape(&f.time)
    )?;
    writeln!(w)?;
    writeln!(w, "{}", escape(&f.summary))?;
    writeln!(w)?;
    if let Some(leg) = f.leg {
        let leg = match leg {
            Leg::Front => "front (client to balancer)",
            Leg::Back => "back (balancer to backend)",
        };
        writeln!(w, "- Leg: {leg}")?;
    }
    writeln!(
        w,
        "- Connection: {} to {}",
        escape(&f.flow.client),
        escape(&f.flow.server)
    )?;
    if let Some(request) = &f.facts.request {
        let status = f
            .facts
            .status
            .map_or("no response".to_string(), |s| s.to_string());
        writeln!(w, "- Request: `{}` → {status}", code_span(request))?;
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
                    format!(" in {}", escape(&x.capture))
                };
                format!("`{}` (frames {}{elsewhere})", x.kind, frames(&x.packets))
            })
            .collect();
        if !told.is_empty() {
            writeln!(w, "- {label}: {}", told.join("; "))?;
        }
    }
    for (i, cause) in f.causes.iter().enumerate() {
        let upstream = cause
            .upstream_status
            .as_deref()
            .map(|u| format!(", upstream_status {}", escape(u)))
            .unwrap_or_default();
        let label = if i == 0 { "Why" } else { "Or" };
        writeln!(
            w,
            "- {label} ({}{upstream}): {}",
            cause.status,
            escape(&cause.explanation)
        )?;
    }
    // The bytes a malformed-message finding quotes, already redacted by the detector.
    if let Some(excerpt) = f.facts.excerpt.as_deref() {
        writeln!(w)?;
        writeln!(w, "Excerpt:")?;
        writeln!(w)?;
        code_block(excerpt, w)?;
    }
    writeln!(w)?;
    writeln!(w, "Wireshark filter:")?;
    writeln!(w)?;
    code_block(&f.flow.filter, w)?;
    if let Some(cause) = f.causes.first().filter(|c| !c.next_steps.is_empty()) {
        writeln!(w)?;
        writeln!(w, "Next steps:")?;
        writeln!(w)?;
        code_block(&cause.next_steps.join("\n"), w)?;
    }
    Ok(())
}

fn frames(packets: &[u64]) -> String {
    let mut s = packets
        .iter()
        .take(FRAMES)
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if packets.len() > FRAMES {
        s.push_str(&format!(" (+{} more)", packets.len() - FRAMES));
    }
    s
}

/// Escapes text for running Markdown and table cells: every character GitHub's Markdown or an
/// HTML parser could act on is backslash-escaped or written as an entity, line breaks become
/// spaces (a table row is one line) and control characters are shown, not sent.
pub fn escape(s: &str) -> String {
    let s = terminal_safe(s);
    let mut out = String::with_capacity(s.len() + 8);
    // A list marker, setext underline or ordered-list number only acts at a line start, and
    // escaped text is one line, so only its first characters need these.
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    let numbered = digits > 0
        && matches!(s[digits..].chars().next(), Some('.' | ')'))
        && matches!(s[digits + 1..].chars().next(), None | Some(' ' | '\t'));
    for (i, c) in s.chars().enumerate() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push(' '),
            // Emphasis, code spans, links and images, tables, strikethrough, headings,
            // @mentions and the backslash itself.
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '~' | '#' | '@' => {
                out.push('\\');
                out.push(c);
            }
            '-' | '+' | '=' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            '.' | ')' if i == digits && numbered => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Escapes text placed inside an HTML block, where Markdown escapes are not read.
pub fn escape_html(s: &str) -> String {
    super::html::escape(&terminal_safe(s)).replace('\n', " ")
}

/// Text for an inline code span between single backticks: nothing inside is interpreted except
/// a backtick, which would end the span, and a line break, which a table or list item cannot
/// hold. Backticks become a look-alike (U+02CB) rather than lengthening the fence, so the span
/// reads the same everywhere.
fn code_span(s: &str) -> String {
    terminal_safe(s)
        .chars()
        .map(|c| match c {
            '`' => '\u{2cb}',
            '\n' => ' ',
            c => c,
        })
        .collect()
}

/// A fenced code block whose fence is longer than any run of backticks in the text, so no
/// line of the text can close it.
pub fn code_block(s: &str, w: &mut dyn Write) -> io::Result<()> {
    let s = terminal_safe(s);
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat((longest + 1).max(3));
    writeln!(w, "{fence}")?;
    writeln!(w, "{}", s.trim_end_matches('\n'))?;
    writeln!(w, "{fence}")
}

#[cfg(test)]
mod test {
    use super::*;

    fn block(s: &str) -> String {
        let mut out = Vec::new();
        code_block(s, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn test_escape_plain_text_kept() {
        assert_eq!(
            escape("10.0.0.1:80 answered 502"),
            "10.0.0.1:80 answered 502"
        );
    }

    #[test]
    fn test_escape_table_cell_pipe_and_newline() {
        assert_eq!(escape("a|b\nc"), "a\\|b c");
    }

    #[test]
    fn test_escape_hostile_html() {
        let e = escape("<script>alert('x')</script><img src=x onerror=\"y\">");
        assert!(!e.contains('<') && !e.contains('>') && !e.contains('"'));
        assert!(e.starts_with("&lt;script&gt;"));
    }

    #[test]
    fn test_escape_hostile_markdown() {
        assert_eq!(
            escape("[click](http://evil) ![i](x) `code` **b** _i_ ~~s~~ @here"),
            "\\[click\\](http://evil) !\\[i\\](x) \\`code\\` \\*\\*b\\*\\* \\_i\\_ \\~\\~s\\~\\~ \\@here"
        );
        // An escape in the input cannot undo the escape of what follows it.
        assert_eq!(escape("\\|"), "\\\\\\|");
        assert_eq!(escape("&lt;"), "&amp;lt;");
    }

    #[test]
    fn test_escape_control_characters_shown() {
        assert_eq!(escape("a\x1b[31m\rb"), "a\\\\u{1b}\\[31m\\\\rb");
    }

    #[test]
    fn test_escape_line_start_markers() {
        assert_eq!(escape("- x"), "\\- x");
        assert_eq!(escape("12. x"), "12\\. x");
        assert_eq!(escape("a - b 1. c"), "a - b 1. c");
        assert_eq!(escape("# h"), "\\# h");
    }

    #[test]
    fn test_escape_html_hostile() {
        assert_eq!(
            escape_html("</summary></details><b a='1'>&"),
            "&lt;/summary&gt;&lt;/details&gt;&lt;b a=&#39;1&#39;&gt;&amp;"
        );
    }

    #[test]
    fn test_code_span_backtick_cannot_close() {
        assert_eq!(code_span("GET /`x`\n"), "GET /\u{2cb}x\u{2cb} ");
    }

    #[test]
    fn test_code_block_fence_outlasts_backticks() {
        assert_eq!(block("a"), "```\na\n```\n");
        let b = block("x ``` y\n````\n");
        assert!(b.starts_with("`````\n") && b.ends_with("\n`````\n"), "{b}");
    }

    #[test]
    fn test_code_block_control_characters_shown() {
        assert_eq!(block("a\x1bb"), "```\na\\u{1b}b\n```\n");
    }
}
