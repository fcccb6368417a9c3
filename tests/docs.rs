//! Keeps the documentation true: the JSON example in docs/json-report.md is what lbdiag prints
//! today for the capture it names (apart from the tool's version). `LBDIAG_BLESS=1` rewrites
//! it after a deliberate change.

use serde_json::Value;
use std::path::Path;

#[test]
fn json_report_example_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/json-report.md")).unwrap();
    let block = doc
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a json block");
    let mut documented: Value = serde_json::from_str(block).expect("the example is valid JSON");
    let capture = documented["captures"][0]["file"]
        .as_str()
        .unwrap()
        .to_string();
    let out = assert_cmd::Command::cargo_bin("lbdiag")
        .unwrap()
        .current_dir(root)
        .args(["analyze", "--format", "json"])
        .arg(&capture)
        .output()
        .unwrap();
    let mut actual: Value = serde_json::from_slice(&out.stdout).unwrap();
    if std::env::var("LBDIAG_BLESS").is_ok() {
        let fresh = String::from_utf8(out.stdout).unwrap();
        let doc = doc.replacen(block, fresh.trim_end(), 1);
        std::fs::write(root.join("docs/json-report.md"), doc).unwrap();
        return;
    }
    for v in [&mut documented, &mut actual] {
        v["tool"]["version"] = Value::Null;
    }
    assert_eq!(
        documented, actual,
        "docs/json-report.md is out of date: regenerate its example from {capture}"
    );
}

/// The text report `lbdiag analyze CAPTURE` prints, run from the crate root as the docs show it.
fn text_report(capture: &str) -> String {
    analyze(&[capture])
}

fn analyze(args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = assert_cmd::Command::cargo_bin("lbdiag")
        .unwrap()
        .current_dir(root)
        .arg("analyze")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).expect("the text report is UTF-8")
}

/// The access-log part of `lbdiag analyze ARGS`: from its first `== access log` heading to the
/// end of the report.
fn access_log_section(args: &[&str]) -> String {
    let report = analyze(args);
    let at = report
        .find("== access log ")
        .unwrap_or_else(|| panic!("lbdiag analyze {args:?} shows no access log"));
    report[at..].trim_end().to_string()
}

/// The part of a text report that shows `kind`: the capture's heading and verdict, then the
/// group heading and the first finding of that kind with its indented lines.
fn excerpt(report: &str, kind: &str) -> Option<String> {
    let lines: Vec<&str> = report.lines().collect();
    let head = lines
        .iter()
        .position(|l| l.is_empty())
        .unwrap_or(lines.len());
    let start = lines.iter().position(|l| {
        l.starts_with("  ") && !l.starts_with("   ") && l.split_whitespace().nth(1) == Some(kind)
    })?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| !l.starts_with("    "))
        .map_or(lines.len(), |n| start + 1 + n);
    let group = lines[..start]
        .iter()
        .rposition(|l| !l.is_empty() && !l.starts_with(' '))
        .filter(|&g| g >= head);
    let mut out: Vec<&str> = lines[..head].to_vec();
    out.push("");
    if let Some(g) = group {
        out.push(lines[g]);
        if g + 1 < start {
            out.push("  ...");
        }
    }
    out.extend(&lines[start..end]);
    if end < lines.len() {
        out.push("...");
    }
    Some(out.join("\n"))
}

/// Checks (or with `LBDIAG_BLESS=1` rewrites) every example block of a Markdown file: a line
/// `<!-- example: CAPTURE [KIND] -->` followed by a ```text block holding the text report of
/// CAPTURE, or its excerpt for KIND. Returns how many blocks it found.
fn check_examples(doc: &Path) -> usize {
    check_marked(doc, "<!-- example: ", |words| {
        let capture = words[0];
        let report = text_report(capture);
        match words.get(1) {
            Some(k) => excerpt(&report, k)
                .unwrap_or_else(|| panic!("{}: {capture} shows no {k}", doc.display())),
            None => report.trim_end().to_string(),
        }
    })
}

/// The same for `<!-- example-log: ARGS -->`: the block holds the access-log section of
/// `lbdiag analyze ARGS` (ARGS split at spaces).
fn check_log_examples(doc: &Path) -> usize {
    check_marked(doc, "<!-- example-log: ", access_log_section)
}

fn check_marked(doc: &Path, mark: &str, want: impl Fn(&[&str]) -> String) -> usize {
    let text = std::fs::read_to_string(doc).unwrap();
    let mut fresh = String::new();
    let mut rest = text.as_str();
    let mut stale = Vec::new();
    let mut found = 0;
    while let Some(i) = rest.find(mark) {
        let after = &rest[i + mark.len()..];
        let close = after
            .find(" -->\n")
            .expect("an example marker ends with -->");
        let words: Vec<&str> = after[..close].split_whitespace().collect();
        let capture = *words.first().expect("the marker names a capture");
        let body = &after[close + " -->\n".len()..];
        let body = body
            .strip_prefix("```text\n")
            .unwrap_or_else(|| panic!("{}: a ```text block follows {capture}", doc.display()));
        let end = body.find("```\n").expect("the text block ends");
        let shown = body[..end].trim_end_matches('\n');
        let want = want(&words);
        if shown != want {
            stale.push(capture.to_string());
        }
        fresh.push_str(&rest[..i + mark.len() + close + " -->\n".len()]);
        fresh.push_str("```text\n");
        fresh.push_str(&want);
        fresh.push_str("\n```\n");
        rest = &body[end + "```\n".len()..];
        found += 1;
    }
    fresh.push_str(rest);
    if std::env::var("LBDIAG_BLESS").is_ok() {
        std::fs::write(doc, fresh).unwrap();
    } else {
        assert!(
            stale.is_empty(),
            "{}: examples out of date for {stale:?}: rerun with LBDIAG_BLESS=1",
            doc.display()
        );
    }
    found
}

/// Every kind named in src/report/kind.rs (the contract's list).
fn kinds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(root.join("src/report/kind.rs")).unwrap();
    src.lines()
        .filter_map(|l| l.split("=> \"").nth(1))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_kind_has_a_page_linked_from_findings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let index = std::fs::read_to_string(root.join("docs/findings.md")).unwrap();
    let kinds = kinds();
    assert!(kinds.len() >= 38, "{kinds:?}");
    for kind in &kinds {
        let page = root.join(format!("docs/kinds/{kind}.md"));
        let text = std::fs::read_to_string(&page)
            .unwrap_or_else(|_| panic!("no page docs/kinds/{kind}.md"));
        for section in [
            "## How lbdiag detects it",
            "## The status it explains",
            "## What to do",
            "## Example",
        ] {
            assert!(text.contains(section), "{kind}: no {section:?}");
        }
        assert!(
            text.contains("<!-- example: captures/") && text.contains(&format!(" {kind} -->")),
            "{kind}: no example of itself"
        );
        assert!(
            index.contains(&format!("kinds/{kind}.md")),
            "docs/findings.md does not link kinds/{kind}.md"
        );
    }
}

#[test]
fn kind_page_examples_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for kind in kinds() {
        let page = root.join(format!("docs/kinds/{kind}.md"));
        if page.exists() {
            assert_eq!(check_examples(&page), 1, "{kind}: one example");
        }
    }
}

#[test]
fn readme_report_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(check_examples(&root.join("README.md")) >= 1);
}

#[test]
fn readme_access_log_example_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_eq!(check_log_examples(&root.join("README.md")), 1);
}
