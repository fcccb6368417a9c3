//! Every capture in `captures/` is analyzed and checked against the `.truth.json` beside it:
//! the findings it must produce (kind, status, server port, evidence frames, and optionally the
//! request, and text the reason must or must not contain), the kinds it must not produce, the
//! warnings it must carry, and the strings (secrets) no report may show. Proxy captures (both
//! legs of a balancer) add each finding's `leg` and `explained_by` links, the balancers the
//! capture summary lists, a ceiling on severity and the status the verdict tells.

use serde_json::Value;
use std::path::{Path, PathBuf};

fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures")
}

fn truth_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(captures_dir())
        .expect("captures/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".truth.json"))
        .collect();
    files.sort();
    files
}

/// Runs lbdiag on a capture; returns its standard output (the report).
fn run(capture: &Path, args: &[String]) -> Vec<u8> {
    let out = assert_cmd::Command::cargo_bin("lbdiag")
        .unwrap()
        .arg("analyze")
        .arg("--fail-on=never")
        .args(args)
        .arg(capture)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c == 0),
        "{}: exit {:?}, stderr: {}",
        capture.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn analyze(capture: &Path, args: &[String]) -> Value {
    let mut all = vec!["--format=json".to_string()];
    all.extend_from_slice(args);
    serde_json::from_slice(&run(capture, &all)).expect("valid JSON report")
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn server_port(f: &Value) -> Option<u64> {
    f["flow"]["server"]
        .as_str()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

fn statuses(f: &Value) -> Vec<u64> {
    f["causes"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["status"].as_u64()).collect())
        .unwrap_or_default()
}

/// The evidence field `key` of a finding as text ("" when absent).
fn evidence(f: &Value, key: &str) -> String {
    f["evidence"][key].as_str().unwrap_or_default().to_string()
}

/// Whether a finding meets an expectation's optional text conditions: `request` (equal to
/// evidence.request, e.g. "GET /fail"), `reason_contains` and `reason_not` (text that
/// evidence.reason must, or must not, contain; letter case aside).
fn evidence_matches(exp: &Value, f: &Value) -> bool {
    let reason = evidence(f, "reason").to_lowercase();
    exp["request"]
        .as_str()
        .is_none_or(|r| evidence(f, "request") == r)
        && exp["reason_contains"]
            .as_str()
            .is_none_or(|r| reason.contains(&r.to_lowercase()))
        && exp["reason_not"]
            .as_str()
            .is_none_or(|r| !reason.contains(&r.to_lowercase()))
}

fn packets(f: &Value) -> Vec<u64> {
    f["packets"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn frames(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// An expectation's `kind`: one kind, or a list of kinds any of which is right (where the
/// catalogue leaves the choice open, e.g. a back request the balancer gave up on: slow_response
/// or no_response).
fn kinds(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn kind_matches(want: &Value, f: &Value) -> bool {
    f["kind"]
        .as_str()
        .is_some_and(|k| kinds(want).iter().any(|w| w == k))
}

/// The optional proxy conditions of an expectation: `leg` ("front" or "back", equal to the
/// finding's leg), `severity`, and `explained_by`: each entry (`kind`, `leg`, `frames`) must be
/// matched by a finding that this finding's `explained_by` indexes point at.
fn proxy_matches(exp: &Value, f: &Value, findings: &[Value]) -> bool {
    let leg_ok = exp["leg"].as_str().is_none_or(|l| f["leg"] == l);
    let severity_ok = exp["severity"].as_str().is_none_or(|s| f["severity"] == s);
    let causes: Vec<&Value> = f["explained_by"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| findings.get(usize::try_from(i.as_u64()?).ok()?))
                .collect()
        })
        .unwrap_or_default();
    let explained_ok = exp["explained_by"]
        .as_array()
        .map(|wants| {
            wants.iter().all(|want| {
                let want_frames = frames(&want["frames"]);
                causes.iter().any(|c| {
                    kind_matches(&want["kind"], c)
                        && want["leg"].as_str().is_none_or(|l| c["leg"] == l)
                        && want_frames.iter().all(|n| packets(c).contains(n))
                })
            })
        })
        .unwrap_or(true);
    leg_ok && severity_ok && explained_ok
}

const SEVERITIES: [&str; 3] = ["info", "warning", "error"];

/// The optional top-level proxy conditions: `balancers` (each entry's address found in
/// captures[0].balancers with exactly its front and back endpoints, so one balancer credited
/// with another's backends fails; as many balancers as the truth lists, so `[]` means none), `max_severity` (no finding above it: what worked for the
/// client is no error), and `status_story` (the capture's verdict names that status and
/// contains every `contains` string, letter case aside).
fn check_proxy(truth: &Value, name: &str, report: &Value, findings: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let capture = &report["captures"][0];
    if let Some(want) = truth["balancers"].as_array() {
        let got = capture["balancers"].as_array().cloned().unwrap_or_default();
        if got.len() != want.len() {
            problems.push(format!(
                "{name}: expected {} balancers, report lists {:?}",
                want.len(),
                capture["balancers"]
            ));
        }
        for w in want {
            let found = got.iter().any(|g| {
                g["address"] == w["address"]
                    && ["front", "back"].iter().all(|leg| {
                        let (mut have, mut want) = (strings(g, leg), strings(w, leg));
                        have.sort();
                        want.sort();
                        have == want
                    })
            });
            if !found {
                problems.push(format!(
                    "{name}: no balancer matches {w}; report lists {:?}",
                    capture["balancers"]
                ));
            }
        }
    }
    if let Some(max) = truth["max_severity"].as_str() {
        let rank = |s: &str| SEVERITIES.iter().position(|x| *x == s);
        for f in findings {
            if rank(f["severity"].as_str().unwrap_or("error")) > rank(max) {
                problems.push(format!(
                    "{name}: {} is {}, above {max}: {}",
                    f["kind"], f["severity"], f["summary"]
                ));
            }
        }
    }
    if let Some(story) = truth.get("status_story").filter(|s| s.is_object()) {
        let verdict = capture["verdict"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        let status = story["status"].as_u64().map(|s| s.to_string());
        for want in status.iter().cloned().chain(strings(story, "contains")) {
            if !verdict.contains(&want.to_lowercase()) {
                problems.push(format!(
                    "{name}: the verdict does not mention {want:?}: {verdict:?}"
                ));
            }
        }
    }
    problems
}

/// Checks one capture; returns the problems found, empty when it matches its truth.
fn check(truth_path: &Path) -> Vec<String> {
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(truth_path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", truth_path.display()));
    let name = truth["capture"].as_str().expect("truth names its capture");
    let capture = captures_dir().join(name);
    let args = strings(&truth, "args");
    let report = analyze(&capture, &args);
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    let mut used = vec![false; findings.len()];

    let mut expected_kinds = Vec::new();
    for exp in truth["expect"].as_array().cloned().unwrap_or_default() {
        expected_kinds.extend(kinds(&exp["kind"]));
        let want_frames = frames(&exp["frames"]);
        let hit = findings.iter().enumerate().position(|(i, f)| {
            !used[i]
                && kind_matches(&exp["kind"], f)
                && proxy_matches(&exp, f, &findings)
                && exp["server_port"]
                    .as_u64()
                    .is_none_or(|p| server_port(f) == Some(p))
                && exp["status"]
                    .as_u64()
                    .is_none_or(|s| statuses(f).contains(&s))
                && want_frames.iter().all(|n| packets(f).contains(n))
                && evidence_matches(&exp, f)
        });
        match hit {
            Some(i) => used[i] = true,
            None => problems.push(format!(
                "{name}: expected {exp} but found none matching; findings: {}",
                findings
                    .iter()
                    .map(|f| format!(
                        "{}@{}{:?} leg={} explained_by={} {:?} {:?}",
                        f["kind"],
                        f["flow"]["server"],
                        packets(f),
                        f["leg"],
                        f["explained_by"],
                        evidence(f, "request"),
                        evidence(f, "reason")
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    let acceptable: Vec<String> = strings(&truth, "also_acceptable");
    for kind in strings(&truth, "must_not") {
        if findings.iter().any(|f| f["kind"] == kind.as_str()) {
            problems.push(format!("{name}: produced {kind}, which it must not"));
        }
    }
    for (i, f) in findings.iter().enumerate() {
        let kind = f["kind"].as_str().unwrap_or_default().to_string();
        // An expected kind found more often than the truth lists it is a problem too (a second
        // reset on the wrong connection), unless the truth also accepts extra ones.
        if !used[i] && !acceptable.contains(&kind) {
            problems.push(format!(
                "{name}: unexpected {kind} ({}) frames {:?}: {}",
                f["severity"],
                packets(f),
                f["summary"]
            ));
        }
    }
    if truth["healthy"].as_bool() == Some(true) {
        for f in &findings {
            if f["severity"] != "info" {
                problems.push(format!(
                    "{name}: healthy capture has {} {}",
                    f["severity"], f["kind"]
                ));
            }
        }
    }
    problems.extend(check_proxy(&truth, name, &report, &findings));
    let warnings: Vec<String> = report["captures"][0]["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w["message"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for want in strings(&truth, "warnings") {
        if !warnings.iter().any(|w| w.contains(&want)) {
            problems.push(format!(
                "{name}: no warning mentions {want:?}; warnings: {warnings:?}"
            ));
        }
    }
    problems.extend(never_in_output(&truth, name, &capture, &args));
    problems
}

/// `never_in_output`: strings (secrets in the capture) that no report may show without
/// --show-secrets: not the JSON report, not the JSON report with every transaction, not the
/// text report.
fn never_in_output(truth: &Value, name: &str, capture: &Path, args: &[String]) -> Vec<String> {
    let secrets = strings(truth, "never_in_output");
    if secrets.is_empty() {
        return Vec::new();
    }
    let with = |extra: &[&str]| {
        let mut all: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        all.extend_from_slice(args);
        String::from_utf8_lossy(&run(capture, &all)).into_owned()
    };
    let outputs = [
        ("JSON", with(&["--format=json"])),
        (
            "JSON --transactions",
            with(&["--format=json", "--transactions"]),
        ),
        ("text", with(&["--format=text", "--color=never"])),
    ];
    let mut problems = Vec::new();
    for (format, text) in &outputs {
        for secret in &secrets {
            if text.contains(secret.as_str()) {
                problems.push(format!("{name}: the {format} report shows {secret:?}"));
            }
        }
    }
    problems
}

#[test]
fn every_capture_matches_its_truth_file() {
    let files = truth_files();
    assert!(!files.is_empty(), "captures/ has no truth files");
    let mut problems = Vec::new();
    for f in &files {
        problems.extend(check(f));
    }
    println!("checked {} captures against their truth files", files.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_capture_has_a_truth_file() {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(captures_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let stem = name
            .strip_suffix(".gz")
            .unwrap_or(&name)
            .trim_end_matches(".pcapng")
            .trim_end_matches(".pcap")
            .to_string();
        let is_capture = [".pcap", ".pcapng", ".pcap.gz", ".pcapng.gz"]
            .iter()
            .any(|ext| name.ends_with(ext));
        if is_capture && !captures_dir().join(format!("{stem}.truth.json")).exists() {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "captures without truth files: {missing:?}"
    );
}

/// Kinds no capture in captures/ demonstrates yet, each with the reason. Everything else in the
/// catalogue must be expected by at least one truth file.
const NOT_YET_CAPTURED: &[(&str, &str)] = &[];

#[test]
fn every_finding_kind_is_demonstrated_by_a_capture() {
    let catalogue =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/findings.md"))
            .unwrap();
    let documented: Vec<String> = catalogue
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let mut expected = std::collections::BTreeSet::new();
    for f in truth_files() {
        let truth: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        // A list of acceptable kinds demonstrates none of them on its own.
        for e in truth["expect"].as_array().unwrap() {
            if let Some(kind) = e["kind"].as_str() {
                expected.insert(kind.to_string());
            }
        }
    }
    let missing: Vec<&String> = documented
        .iter()
        .filter(|k| !expected.contains(*k) && !NOT_YET_CAPTURED.iter().any(|(n, _)| n == k))
        .collect();
    assert!(
        missing.is_empty(),
        "kinds no capture demonstrates: {missing:?}"
    );
}
