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
