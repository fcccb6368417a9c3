//! Batches: directories walked for captures, files analyzed in parallel with a report that does
//! not depend on `--jobs`, unreadable files among readable ones, `--output` and `--quiet`.

use assert_cmd::Command;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn captures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures")
}

fn lbdiag() -> Command {
    Command::cargo_bin("lbdiag").unwrap()
}

/// Three shipped captures (one gzip-compressed, one in a subdirectory, one without an
/// extension that is found by its first bytes), a junk file and a truth file.
fn batch_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let c = captures();
    std::fs::copy(c.join("refused.pcap"), dir.path().join("b-refused.pcap")).unwrap();
    std::fs::copy(
        c.join("server-reset.pcap.gz"),
        dir.path().join("a-server-reset.pcap.gz"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::copy(
        c.join("two-linktypes.pcapng"),
        dir.path().join("sub/rotated-capture1"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a capture\n").unwrap();
    dir
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn files_of(report: &Value) -> Vec<String> {
    report["captures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["file"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn test_directory_walk_analyzes_captures_and_counts_the_rest() {
    let dir = batch_dir();
    let out = lbdiag()
        .current_dir(dir.path())
        .args(["analyze", "--format", "json", "--fail-on", "never", "."])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["summary"]["captures"], 3);
    assert_eq!(report["summary"]["skipped_files"], 1);
    assert_eq!(report["summary"]["unreadable_captures"], 0);
    // Name order at each level, directories where their names fall.
    assert_eq!(
        files_of(&report),
        [
            "./a-server-reset.pcap.gz",
            "./b-refused.pcap",
            "./sub/rotated-capture1"
        ]
    );
}

#[test]
fn test_explicit_file_is_analyzed_whatever_its_name() {
    let dir = batch_dir();
    let out = lbdiag()
        .current_dir(dir.path())
        .args(["analyze", "--format", "json", "notes.txt", "b-refused.pcap"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let report = json_of(&out);
    assert_eq!(files_of(&report), ["notes.txt", "b-refused.pcap"]);
    assert!(report["summary"].get("skipped_files").is_none());
}

#[test]
fn test_symlink_loop_is_not_followed() {
    let dir = batch_dir();
    std::os::unix::fs::symlink("..", dir.path().join("sub/up")).unwrap();
    let out = lbdiag()
        .current_dir(dir.path())
        .args(["analyze", "--format", "json", "--fail-on", "never", "."])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json_of(&out)["summary"]["captures"], 3);
}

#[test]
fn test_jobs_do_not_change_the_report() {
    let run = |jobs: &str| {
        lbdiag()
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["analyze", "--format", "json", "--jobs", jobs, "captures/"])
            .output()
            .unwrap()
    };
    let (one, three) = (run("1"), run("3"));
    assert_eq!(one.status.code(), three.status.code());
    assert!(json_of(&one)["summary"]["captures"].as_u64().unwrap() > 50);
    assert!(
        one.stdout == three.stdout,
        "--jobs 1 and --jobs 3 gave different reports"
    );
}

#[test]
fn test_unreadable_capture_in_directory_exits_2_after_the_others() {
    let dir = batch_dir();
    std::fs::write(dir.path().join("c-damaged.pcap"), "junk, not a capture").unwrap();
    std::os::unix::fs::symlink("missing.pcap", dir.path().join("d-dangling.pcap")).unwrap();
    let out = lbdiag()
        .current_dir(dir.path())
        .args(["analyze", "--format", "json", "--jobs", "2", "."])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["summary"]["captures"], 5);
    assert_eq!(report["summary"]["unreadable_captures"], 2);
    let captures = report["captures"].as_array().unwrap();
    let analyzed = captures.iter().filter(|c| c["packets"].as_u64() > Some(0));
    assert_eq!(analyzed.count(), 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("c-damaged.pcap"), "{stderr}");
    assert!(stderr.contains("d-dangling.pcap"), "{stderr}");
}

#[test]
fn test_output_format_follows_the_extension() {
    let dir = batch_dir();
    let json = dir.path().join("report.json");
    let text = dir.path().join("report.txt");
    for path in [&json, &text] {
        let out = lbdiag()
            .current_dir(dir.path())
            .args([
                "analyze",
                "--fail-on",
                "never",
                "b-refused.pcap",
                "--output",
            ])
            .arg(path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(out.stdout.is_empty(), "the report went to stdout too");
    }
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["summary"]["captures"], 1);
    let text = std::fs::read_to_string(&text).unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err());
    assert!(text.contains("b-refused.pcap"), "{text}");
    assert!(!text.contains('\x1b'), "no colour in a file");
}

#[test]
fn test_output_format_flag_wins_and_unknown_extension_is_refused() {
    let dir = batch_dir();
    let out = lbdiag()
        .current_dir(dir.path())
        .args([
            "analyze",
            "b-refused.pcap",
            "--format",
            "json",
            "-o",
            "r.out",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(2), "{out:?}");
    let written = std::fs::read(dir.path().join("r.out")).unwrap();
    assert!(serde_json::from_slice::<Value>(&written).is_ok());
    let out = lbdiag()
        .current_dir(dir.path())
        .args(["analyze", "b-refused.pcap", "-o", "r.out2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format"));
}

#[test]
fn test_quiet_prints_nothing_on_stderr() {
    let dir = batch_dir();
    let out = lbdiag()
        .current_dir(dir.path())
        .args(["analyze", "--quiet", "--fail-on", "never", "."])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
}
