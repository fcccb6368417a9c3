//! Runs tests/scale_out.sh, the scale-out pipeline of docs/scale-out.md on captures/: GNU
//! parallel and the Indexed Job's shard script map lbdiag over the captures, DuckDB loads the
//! JSON Lines reports and ranks servers by their 502/504 causes, and the ranking is checked
//! against the truth files.
//! Skips with a message when GNU parallel or the Python packages (duckdb, PyYAML; Python from
//! `SCALE_OUT_PYTHON`, else `python3`) are missing, except under `CI=true`, where .ci/run has
//! installed them and their absence fails the test.

use std::path::Path;
use std::process::Command;

fn python() -> String {
    std::env::var("SCALE_OUT_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Why the pipeline cannot run here, if it cannot.
fn missing() -> Option<String> {
    let runs = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !runs("parallel", &["--version"]) {
        return Some("GNU parallel is not installed".into());
    }
    let python = python();
    if !runs(&python, &["-c", "import duckdb, yaml"]) {
        return Some(format!(
            "{python} cannot import duckdb and yaml (pip install -r tests/scale_out.requirements.txt)"
        ));
    }
    None
}

#[test]
fn scale_out_pipeline_ranks_servers_as_the_truth_files_say() {
    if let Some(why) = missing() {
        // .ci/run installs both: there, a missing tool is a broken setup, not a pass.
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true but {why}"
        );
        println!("skipped: {why}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("tests/scale_out.sh"))
        .env("LBDIAG", env!("CARGO_BIN_EXE_lbdiag"))
        .env("SCALE_OUT_PYTHON", python())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "tests/scale_out.sh: {}\n{stdout}\n{stderr}",
        out.status
    );
}
