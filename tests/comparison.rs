//! Keeps docs/comparison.md true: its table compares, for every capture in captures/, what
//! `tshark -q -z expert` reports (saved in captures/expert/ by captures/tools/expert.sh, since
//! CI has no tshark) with what lbdiag reports. `LBDIAG_BLESS=1 cargo test --test comparison`
//! rewrites the table after a deliberate change.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn expert_counts(text: &str) -> (u64, u64, u64) {
    let count = |label: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(label)
                    .and_then(|r| r.trim().strip_prefix('('))
            })
            .and_then(|r| r.trim_end_matches(')').parse().ok())
            .unwrap_or(0)
    };
    (count("Errors "), count("Warns "), count("Notes "))
}

fn lbdiag_cell(report: &Value) -> (String, String) {
    let mut problems: BTreeMap<String, usize> = BTreeMap::new();
    let mut notes: BTreeMap<String, usize> = BTreeMap::new();
    let mut statuses: Vec<u64> = Vec::new();
    for f in report["findings"].as_array().unwrap() {
        let kind = f["kind"].as_str().unwrap().to_string();
        if f["severity"] == "info" {
            *notes.entry(kind).or_default() += 1;
        } else {
            *problems.entry(kind).or_default() += 1;
            if let Some(s) = f["causes"][0]["status"].as_u64()
                && !statuses.contains(&s)
            {
                statuses.push(s);
            }
        }
    }
    let list = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, n)| {
                if *n > 1 {
                    format!("{k} ×{n}")
                } else {
                    k.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut cell = if problems.is_empty() {
        "nothing wrong".to_string()
    } else {
        list(&problems)
    };
    if !notes.is_empty() {
        cell.push_str(&format!(" (info: {})", list(&notes)));
    }
    statuses.sort_unstable();
    let explained = if statuses.is_empty() {
        "-".to_string()
    } else {
        statuses
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    (cell, explained)
}

fn table(root: &Path) -> String {
    let mut rows = vec![
        "| capture | tshark expert: errors / warnings / notes | lbdiag | status explained |"
            .to_string(),
        "|---|---|---|---|".to_string(),
    ];
    let mut files: Vec<_> = std::fs::read_dir(root.join("captures/expert"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for expert in files {
        let name = expert
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".txt")
            .to_string();
        let capture = root.join("captures").join(&name);
        if !capture.exists() {
            continue;
        }
        let (e, w, n) = expert_counts(&std::fs::read_to_string(&expert).unwrap());
        let out = assert_cmd::Command::cargo_bin("lbdiag")
            .unwrap()
            .args(["analyze", "--format=json", "--fail-on=never"])
            .arg(&capture)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let (cell, explained) = lbdiag_cell(&report);
        rows.push(format!(
            "| `{name}` | {e} / {w} / {n} | {cell} | {explained} |"
        ));
    }
    rows.join("\n")
}

#[test]
fn comparison_table_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc_path = root.join("docs/comparison.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let (start, end) = ("<!-- table:start -->\n", "\n<!-- table:end -->");
    let a = doc.find(start).expect("table start marker") + start.len();
    let b = doc.find(end).expect("table end marker");
    let fresh = table(root);
    if std::env::var("LBDIAG_BLESS").is_ok() {
        std::fs::write(&doc_path, format!("{}{}{}", &doc[..a], fresh, &doc[b..])).unwrap();
        return;
    }
    assert_eq!(
        &doc[a..b],
        fresh,
        "docs/comparison.md is out of date; rerun with LBDIAG_BLESS=1 after checking the change"
    );
}
