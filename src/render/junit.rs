//! `--format junit`: JUnit XML in the shape Jenkins, GitLab and Surefire read, so CI shows
//! results natively. One `<testsuite>` per capture; in it a `lbdiag.capture` test case that
//! fails with `<error>` when the file could not be read, then one test case per finding group
//! (same kind and server), failed when a finding of the group reaches the `--fail-on`
//! threshold. With `--access-log`, a `<testsuite>` per log follows: one `lbdiag.access_log` test
//! case per reported line, failed when a finding on its connections reaches the threshold,
//! skipped when no captured transaction matches it. The mapping is documented in
//! docs/report-formats.md; tests/render_formats.rs validates the output against
//! tests/schemas/junit.xsd.

use super::group::{Group, groups};
use super::terminal_safe;
use crate::report::{Alignment, FailOn, Finding, LogMatch, LogReport, Report, Severity};
use std::io::{self, Write};

/// Findings written into one failure's text; a group of thousands stays readable.
const LISTED: usize = 20;

struct Suite<'a> {
    file: &'a str,
    error: Option<&'a str>,
    verdict: &'a str,
    groups: Vec<Group<'a>>,
    failures: usize,
}

pub fn render(report: &Report, fail_on: FailOn, w: &mut dyn Write) -> io::Result<()> {
    let suites: Vec<Suite<'_>> = report
        .captures
        .iter()
        .map(|c| {
            let groups = if c.error.is_some() {
                Vec::new()
            } else {
                groups(&c.file, &report.findings, false)
            };
            let failures = groups.iter().filter(|g| fails(g, fail_on)).count();
            Suite {
                file: &c.file,
                error: c.error.as_deref(),
                verdict: &c.verdict,
                groups,
                failures,
            }
        })
        .collect();
    let logs: Vec<LogSuite<'_>> = report
        .logs
        .iter()
        .map(|log| {
            let lines: Vec<(&LogMatch, Vec<&Finding>)> = report
                .log_matches
                .iter()
                .filter(|m| m.log == log.path)
                .map(|m| {
                    let failing = m
                        .findings
                        .iter()
                        .filter_map(|&i| report.findings.get(i))
                        .filter(|f| reaches(f.severity, fail_on))
                        .collect();
                    (m, failing)
                })
                .collect();
            LogSuite { log, lines }
        })
        .collect();
    let tests: usize = suites.iter().map(|s| s.groups.len() + 1).sum::<usize>()
        + logs.iter().map(|l| l.lines.len()).sum::<usize>()
        + report.alignments.len();
    let failures: usize = suites.iter().map(|s| s.failures).sum::<usize>()
        + logs.iter().map(LogSuite::failures).sum::<usize>();
    let errors = suites.iter().filter(|s| s.error.is_some()).count();
    writeln!(w, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        w,
        r#"<testsuites name="lbdiag" tests="{tests}" failures="{failures}" errors="{errors}">"#
    )?;
    for (id, s) in suites.iter().enumerate() {
        render_suite(id, s, fail_on, w)?;
    }
    for (id, l) in logs.iter().enumerate() {
        render_log(suites.len() + id, l, w)?;
    }
    render_alignments(suites.len() + logs.len(), &report.alignments, w)?;
    writeln!(w, "</testsuites>")
}

/// `--same-traffic`: a test case per pair of captures, skipped when no offset was found (their
/// findings are judged in the captures' own suites, the links included).
fn render_alignments(id: usize, alignments: &[Alignment], w: &mut dyn Write) -> io::Result<()> {
    if alignments.is_empty() {
        return Ok(());
    }
    let skipped = alignments.iter().filter(|a| a.offset_ms.is_none()).count();
    writeln!(
        w,
        r#"  <testsuite name="same traffic" id="{id}" tests="{}" failures="0" errors="0" skipped="{skipped}" time="0">"#,
        alignments.len(),
    )?;
    for a in alignments {
        writeln!(
            w,
            r#"    <testcase classname="lbdiag.same_traffic" name="{} against {}" time="0">"#,
            escape(&a.other),
            escape(&a.capture)
        )?;
        if a.offset_ms.is_none() {
            writeln!(w, r#"      <skipped message="{}"/>"#, escape(&a.note))?;
        }
        writeln!(w, "      <system-out>{}</system-out>", text(&a.note))?;
        writeln!(w, "    </testcase>")?;
    }
    writeln!(w, "  </testsuite>")
}

/// An access log's reported lines, each with the findings on its connections that reach the
/// threshold.
struct LogSuite<'a> {
    log: &'a LogReport,
    lines: Vec<(&'a LogMatch, Vec<&'a Finding>)>,
}

impl LogSuite<'_> {
    fn failures(&self) -> usize {
        self.lines.iter().filter(|(_, f)| !f.is_empty()).count()
    }
}

/// A CI user reads "line 812 failed" as "the packets show why the balancer answered 502 there":
/// a line fails when a finding on its connections reaches `--fail-on`, passes when its
/// connections show nothing that bad, and is skipped when no captured transaction matches it
/// (nothing could be checked: the capture is from another host or time).
fn render_log(id: usize, l: &LogSuite<'_>, w: &mut dyn Write) -> io::Result<()> {
    let skipped = l.lines.iter().filter(|(m, _)| m.flow.is_none()).count();
    writeln!(
        w,
        r#"  <testsuite name="{}" id="{id}" tests="{}" failures="{}" errors="0" skipped="{skipped}" time="0">"#,
        escape(&l.log.path),
        l.lines.len(),
        l.failures(),
    )?;
    for (m, failing) in &l.lines {
        let request = m.request.as_deref().unwrap_or("(request not logged)");
        writeln!(
            w,
            r#"    <testcase classname="lbdiag.access_log" name="line {}: {} {}" time="0">"#,
            m.line,
            m.status,
            escape(request)
        )?;
        if m.flow.is_none() {
            writeln!(
                w,
                r#"      <skipped message="{}"/>"#,
                escape("no captured transaction matches it")
            )?;
        } else if let Some(first) = failing.first() {
            // The type is the cause, not the balancer's status that it explains.
            let root = failing
                .iter()
                .find(|f| f.explained_by.is_empty())
                .unwrap_or(first);
            write!(
                w,
                r#"      <failure message="{}" type="{}">"#,
                escape(&m.summary),
                root.kind
            )?;
            write!(w, "{}", text(&listing(failing)))?;
            writeln!(w, "</failure>")?;
        }
        writeln!(w, "      <system-out>{}</system-out>", text(&m.summary))?;
        writeln!(w, "    </testcase>")?;
    }
    if !l.log.notes.is_empty() {
        writeln!(
            w,
            "    <system-out>{}</system-out>",
            text(&l.log.notes.join("\n"))
        )?;
    }
    writeln!(w, "  </testsuite>")
}

fn render_suite(id: usize, s: &Suite<'_>, fail_on: FailOn, w: &mut dyn Write) -> io::Result<()> {
    let name = escape(s.file);
    writeln!(
        w,
        r#"  <testsuite name="{name}" id="{id}" tests="{}" failures="{}" errors="{}" skipped="0" time="0">"#,
        s.groups.len() + 1,
        s.failures,
        usize::from(s.error.is_some()),
    )?;
    let read = format!(r#"<testcase classname="lbdiag.capture" name="read {name}" time="0""#);
    match s.error {
        Some(err) => {
            writeln!(w, "    {read}>")?;
            writeln!(
                w,
                r#"      <error message="{}" type="unreadable">{}</error>"#,
                escape(err),
                text(err)
            )?;
            writeln!(w, "    </testcase>")?;
        }
        None => writeln!(w, "    {read}/>")?,
    }
    for g in &s.groups {
        render_case(g, fail_on, w)?;
    }
    if s.error.is_none() && !s.verdict.is_empty() {
        writeln!(w, "    <system-out>{}</system-out>", text(s.verdict))?;
    }
    writeln!(w, "  </testsuite>")
}

fn render_case(g: &Group<'_>, fail_on: FailOn, w: &mut dyn Write) -> io::Result<()> {
    let kind = g.kind.as_str();
    writeln!(
        w,
        r#"    <testcase classname="lbdiag.{kind}" name="{kind} at {}" time="0">"#,
        escape(g.server)
    )?;
    let failing: Vec<&Finding> = g
        .findings
        .iter()
        .map(|(_, f)| *f)
        .filter(|f| reaches(f.severity, fail_on))
        .collect();
    if let Some(first) = failing.first() {
        let message = if failing.len() == 1 {
            first.summary.clone()
        } else {
            format!("{} findings; the first: {}", failing.len(), first.summary)
        };
        write!(
            w,
            r#"      <failure message="{}" type="{kind}">"#,
            escape(&message)
        )?;
        write!(w, "{}", text(&listing(&failing)))?;
        writeln!(w, "</failure>")?;
    }
    // What did not reach the threshold is still worth reading in the CI log.
    let passing: Vec<&Finding> = g
        .findings
        .iter()
        .map(|(_, f)| *f)
        .filter(|f| !reaches(f.severity, fail_on))
        .collect();
    if !passing.is_empty() {
        writeln!(
            w,
            "      <system-out>{}</system-out>",
            text(&listing(&passing))
        )?;
    }
    writeln!(w, "    </testcase>")
}

fn listing(findings: &[&Finding]) -> String {
    let mut out = String::new();
    for f in findings.iter().take(LISTED) {
        let frames: Vec<String> = f.packets.iter().take(8).map(u64::to_string).collect();
        out.push_str(&format!(
            "{} frames {} at {}: {}\nWireshark: {}\n",
            f.severity,
            frames.join(", "),
            f.time,
            f.summary,
            f.flow.filter
        ));
    }
    if findings.len() > LISTED {
        out.push_str(&format!(
            "{} more; --format json lists them all.\n",
            findings.len() - LISTED
        ));
    }
    out
}

fn reaches(severity: Severity, fail_on: FailOn) -> bool {
    match fail_on {
        FailOn::Severity(level) => severity >= level,
        FailOn::Never => false,
    }
}

fn fails(g: &Group<'_>, fail_on: FailOn) -> bool {
    reaches(g.severity, fail_on)
}

/// Escapes text content; line breaks stay real so a CI log reads line by line.
fn text(s: &str) -> String {
    escape(s).replace("&#10;", "\n")
}

/// Escapes for attribute values (and text), and shows the characters XML 1.0 forbids
/// (controls other than tab and line breaks, U+FFFE, U+FFFF) as `\u{..}` text: a document
/// holding one is not well-formed, and CI would reject the whole report. Line breaks become
/// character references so an attribute keeps them.
pub fn escape(s: &str) -> String {
    let s = terminal_safe(s);
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\u{fffe}' | '\u{ffff}' => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::report::CaptureSummary;

    #[test]
    fn test_escape_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a b="c" d='e'>&</a>"#),
            "&lt;a b=&quot;c&quot; d=&apos;e&apos;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn test_escape_forbidden_characters_shown() {
        let e = escape("a\0b\x1bc\u{fffe}d\u{ffff}\n\t");
        assert!(
            e.chars()
                .all(|c| c >= ' ' && c != '\u{fffe}' && c != '\u{ffff}')
        );
        assert_eq!(e, "a\\u{0}b\\u{1b}c\\u{fffe}d\\u{ffff}&#10;\\t");
    }

    #[test]
    fn test_escape_cdata_end_harmless() {
        assert_eq!(escape("]]>"), "]]&gt;");
    }

    #[test]
    fn test_render_unreadable_capture_is_error() {
        let c = CaptureSummary {
            file: "x<.pcap".into(),
            error: Some("not a capture".into()),
            ..Default::default()
        };
        let mut out = Vec::new();
        let r = Report::new(vec![c], vec![], 0);
        render(&r, FailOn::Severity(Severity::Error), &mut out).unwrap();
        let x = String::from_utf8(out).unwrap();
        assert!(x.contains(r#"errors="1""#), "{x}");
        assert!(x.contains(r#"<error message="not a capture" type="unreadable">"#));
        assert!(x.contains(r#"name="x&lt;.pcap""#));
    }
}
