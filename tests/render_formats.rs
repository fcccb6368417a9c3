//! The Markdown, JSON Lines and JUnit renderers on shipped captures: insta snapshots of each,
//! no secret in any of them, every JSONL line a JSON object, and JUnit that validates against
//! the common schema (tests/schemas/junit.xsd) with xmllint.

use lbdiag::render::{render_html, render_jsonl, render_junit, render_markdown};
use lbdiag::report::{CaptureSummary, Cause, Finding, Flow, Kind};
use lbdiag::{FailOn, Options, Report, Severity};
use std::path::Path;
use std::process::{Command, Stdio};

const CAPTURES: [&str; 3] = [
    "captures/refused.pcap",
    "captures/proxy-read-timeout.pcap",
    "captures/secret-header-without-colon.pcap",
];

const ERROR: FailOn = FailOn::Severity(Severity::Error);

fn report(path: &str) -> Report {
    lbdiag::analyze_paths(&[path], &Options::default())
}

fn markdown(r: &Report) -> String {
    let mut out = Vec::new();
    render_markdown(r, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn jsonl(r: &Report) -> String {
    let mut out = Vec::new();
    render_jsonl(r, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn junit(r: &Report, fail_on: FailOn) -> String {
    let mut out = Vec::new();
    render_junit(r, fail_on, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn name(path: &str) -> &str {
    Path::new(path).file_stem().unwrap().to_str().unwrap()
}

/// A report whose every packet-derived string is hostile to Markdown, HTML, XML and JSON Lines.
fn hostile() -> Report {
    let nasty =
        "<script>alert(1)</script> | `x` ]]> & \"q\" 'a' \u{0}\u{1b}[31m\r\n</details>\u{fffe}";
    let capture = CaptureSummary {
        file: format!("{nasty}.pcap"),
        format: "pcap".into(),
        verdict: nasty.into(),
        ..Default::default()
    };
    let finding = Finding {
        kind: Kind::MalformedRequest,
        severity: Severity::Error,
        capture: capture.file.clone(),
        flow: Flow {
            client: "10.0.0.1:1".into(),
            server: format!("10.0.0.2:80{nasty}"),
            filter: format!("frame.number==1 ```\n{nasty}"),
        },
        packets: vec![1],
        time: "2026-01-01T00:00:00Z".into(),
        summary: nasty.into(),
        evidence: [("excerpt".to_string(), format!("````{nasty}").into())]
            .into_iter()
            .collect(),
        causes: vec![Cause {
            status: 400,
            upstream_status: Some(nasty.into()),
            explanation: nasty.into(),
            next_steps: vec![nasty.into()],
        }],
        leg: None,
        explained_by: vec![],
        explains: vec![],
        facts: Default::default(),
    };
    let unreadable = CaptureSummary {
        file: "broken.pcap".into(),
        error: Some(nasty.into()),
        ..Default::default()
    };
    Report::new(vec![capture, unreadable], vec![finding], 0)
}

/// A shipped capture with the log its balancer wrote (haproxy's httplog: a refusal, a reset, a
/// timeout and a passed-through 503), joined.
fn report_with_log() -> Report {
    let index = lbdiag::accesslog::LogIndex::load(
        &["captures/access-logs/haproxy.log"],
        &Default::default(),
        lbdiag::capture::Duration::from_secs(60),
    )
    .unwrap();
    let options = Options {
        access_logs: Some(std::sync::Arc::new(index)),
        ..Options::default()
    };
    lbdiag::analyze_paths(&["captures/access-logs/haproxy.pcap"], &options)
}

#[test]
fn test_joined_view_snapshots() {
    let r = report_with_log();
    assert!(!r.log_matches.is_empty());
    insta::assert_snapshot!("jsonl_access_log_haproxy", jsonl(&r));
    insta::assert_snapshot!("junit_access_log_haproxy", junit(&r, ERROR));
    let mut out = Vec::new();
    render_html(&r, &mut out).unwrap();
    let html = String::from_utf8(out).unwrap();
    let logs = &html[html.find("<section class=\"log\"").unwrap()..];
    insta::assert_snapshot!("html_access_log_haproxy", logs);
}

#[test]
fn test_junit_with_access_log_validates_and_counts_lines() {
    let r = report_with_log();
    let xml = junit(&r, ERROR);
    let lines = xml.matches("classname=\"lbdiag.access_log\"").count();
    assert_eq!(lines, r.log_matches.len());
    assert_eq!(
        attribute(&xml, "testsuites", "tests"),
        xml.matches("<testcase ").count()
    );
    assert_eq!(
        attribute(&xml, "testsuites", "failures"),
        xml.matches("<failure ").count()
    );
    if xmllint() {
        for fail_on in [ERROR, FailOn::Severity(Severity::Info), FailOn::Never] {
            validate(&junit(&r, fail_on), "capture with its access log");
        }
    }
}

#[test]
fn test_joined_view_hostile_strings_escaped() {
    let nasty = "<script>alert(1)</script> & \"q\" ]]> \u{0}\u{1b}[31m\n</td>\u{fffe}";
    let mut r = hostile();
    r.logs.push(lbdiag::report::LogReport {
        path: format!("{nasty}.log"),
        notes: vec![nasty.into()],
        ..Default::default()
    });
    r.log_matches.push(lbdiag::report::LogMatch {
        log: format!("{nasty}.log"),
        line: 1,
        time: nasty.into(),
        client: Some(nasty.into()),
        request: Some(nasty.into()),
        status: 502,
        upstream_status: Some(nasty.into()),
        upstream_addr: Some(nasty.into()),
        class: None,
        termination: Some(nasty.into()),
        matched_by: Some("client_port"),
        capture: Some(nasty.into()),
        flow: Some(r.findings[0].flow.clone()),
        back_flow: None,
        back_capture: None,
        back_packets: None,
        packets: vec![1],
        findings: vec![0],
        summary: nasty.into(),
    });
    let mut out = Vec::new();
    render_html(&r, &mut out).unwrap();
    let html = String::from_utf8(out).unwrap();
    let logs = &html[html.find("<section class=\"log\"").unwrap()..];
    assert!(
        !logs.contains("<script>") && !logs.contains("</td>\u{fffe}"),
        "{logs}"
    );
    assert!(!logs.contains('\u{0}') && !logs.contains('\u{1b}'));
    for line in jsonl(&r).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["type"].is_string());
    }
    let xml = junit(&r, ERROR);
    assert!(xml.contains("lbdiag.access_log") && !xml.contains("<script>"));
    if xmllint() {
        validate(&xml, "hostile access log");
    }
}

#[test]
fn test_markdown_snapshots() {
    for path in CAPTURES {
        insta::assert_snapshot!(format!("markdown_{}", name(path)), markdown(&report(path)));
    }
}

#[test]
fn test_jsonl_snapshots() {
    for path in CAPTURES {
        insta::assert_snapshot!(format!("jsonl_{}", name(path)), jsonl(&report(path)));
    }
}

#[test]
fn test_junit_snapshots() {
    for path in CAPTURES {
        insta::assert_snapshot!(format!("junit_{}", name(path)), junit(&report(path), ERROR));
    }
}

#[test]
fn test_render_secret_never_shown() {
    let r = report("captures/secret-header-without-colon.pcap");
    for (format, out) in [
        ("markdown", markdown(&r)),
        ("jsonl", jsonl(&r)),
        ("junit", junit(&r, FailOn::Severity(Severity::Info))),
    ] {
        assert!(
            !out.contains("SECRET-TOKEN-H6"),
            "{format} shows the secret"
        );
        assert!(
            !out.contains("Bearer"),
            "{format} shows the credential scheme"
        );
    }
}

#[test]
fn test_jsonl_every_line_an_object_with_type_and_capture() {
    for r in CAPTURES.map(report).into_iter().chain([hostile()]) {
        let out = jsonl(&r);
        let mut stories = 0;
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let kind = v["type"].as_str().unwrap();
            assert!(["capture", "finding", "story"].contains(&kind), "{line}");
            assert!(v["capture"].is_string(), "{line}");
            stories += usize::from(kind == "story");
        }
        let explained = r.findings.iter().filter(|f| !f.explained_by.is_empty());
        assert_eq!(stories, explained.count());
    }
}

#[test]
fn test_markdown_hostile_strings_escaped() {
    check_markdown(&markdown(&hostile()));
}

/// Fenced code is shown literally, so packet text may stay raw there; everything else must be
/// escaped: no control characters, no tag but the renderer's own, no extra table column, no
/// code block left open (a fence closes only on a line of exactly its own backticks).
fn check_markdown(all: &str) {
    assert!(!all.contains('\u{1b}') && !all.contains('\0') && !all.contains('\r'));
    let mut out = String::new();
    let mut fence: Option<&str> = None;
    for line in all.lines() {
        match fence {
            Some(f) if line == f => fence = None,
            Some(_) => {}
            None if line.starts_with("```") && line.chars().all(|c| c == '`') => fence = Some(line),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(fence.is_none(), "a code block is left open:\n{all}");
    assert!(!out.contains("<script>"), "{out}");
    // The only raw tags are the renderer's own.
    let tags = out.matches('<').count();
    let own = ["<details>", "</details>", "<summary>", "</summary>"]
        .iter()
        .map(|t| out.matches(t).count())
        .sum::<usize>();
    assert_eq!(tags, own, "{out}");
    // Each table row keeps its seven columns: a `|` from a packet is escaped.
    for row in out
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| #"))
    {
        let bars = row.matches('|').count() - row.matches("\\|").count();
        assert_eq!(bars, 8, "{row}");
    }
}

fn xmllint() -> bool {
    let found = Command::new("xmllint")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("skipped: xmllint is not installed (apt-get install libxml2-utils)");
    }
    found
}

fn validate(xml: &str, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("junit.xml");
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg("tests/schemas/junit.xsd")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn test_junit_validates_against_schema() {
    if !xmllint() {
        return;
    }
    validate(&junit(&hostile(), ERROR), "hostile report");
    let mut shipped: Vec<_> = std::fs::read_dir("captures")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    shipped.sort();
    assert!(!shipped.is_empty());
    let r = lbdiag::analyze_paths(&shipped, &Options::default());
    for fail_on in [ERROR, FailOn::Severity(Severity::Warning), FailOn::Never] {
        validate(&junit(&r, fail_on), "shipped captures");
    }
}

#[test]
fn test_junit_failures_follow_threshold() {
    let r = report("captures/secret-header-without-colon.pcap");
    let count = |fail_on| junit(&r, fail_on).matches("<failure ").count();
    // malformed_request is an error; the 400 it caused is an informational error_status.
    assert_eq!(count(ERROR), 1);
    assert_eq!(count(FailOn::Severity(Severity::Info)), 2);
    assert_eq!(count(FailOn::Never), 0);
    let x = junit(&hostile(), ERROR);
    assert!(x.contains(r#"errors="1""#) && x.contains("<error "));
}

fn attribute(xml: &str, element: &str, name: &str) -> usize {
    let start = xml.find(&format!("<{element} ")).unwrap();
    let tag = &xml[start..start + xml[start..].find('>').unwrap()];
    let key = format!(" {name}=\"");
    let at = tag.find(&key).unwrap() + key.len();
    tag[at..at + tag[at..].find('"').unwrap()].parse().unwrap()
}

/// Every shipped capture renders in each format; Markdown stays escaped, each JSONL line is an
/// object, the JUnit totals match its test cases and failures, and no `never_in_output` string
/// of a truth file appears anywhere.
#[test]
fn test_render_every_shipped_capture() {
    let mut shipped: Vec<_> = std::fs::read_dir("captures")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    shipped.sort();
    for path in &shipped {
        let r = lbdiag::analyze_paths(&[path], &Options::default());
        let md = markdown(&r);
        check_markdown(&md);
        let lines = jsonl(&r);
        for line in lines.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["type"].is_string() && v["capture"].is_string(), "{line}");
        }
        let xml = junit(&r, FailOn::Severity(Severity::Warning));
        assert_eq!(
            attribute(&xml, "testsuites", "tests"),
            xml.matches("<testcase ").count()
        );
        assert_eq!(
            attribute(&xml, "testsuites", "failures"),
            xml.matches("<failure ").count()
        );
        let truth = path.with_extension("truth.json");
        let Ok(truth) = std::fs::read_to_string(&truth) else {
            continue;
        };
        let truth: serde_json::Value = serde_json::from_str(&truth).unwrap();
        let secrets = truth["never_in_output"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for secret in secrets.iter().filter_map(|s| s.as_str()) {
            for (format, out) in [("markdown", &md), ("jsonl", &lines), ("junit", &xml)] {
                assert!(!out.contains(secret), "{format} of {path:?} shows {secret}");
            }
        }
    }
}
