//! The command line's contract: exit codes, several files, standard input, gzip, colour, and
//! quiet exit on a closed pipe. The captures here are synthesized: these tests are about the
//! command line, not about what real traffic looks like (that is `tests/truth.rs`).

mod common;

use assert_cmd::Command;
use etherparse::PacketBuilder;
use std::io::{Read, Write};
use std::process::Stdio;

fn refused_frame(src_port: u16, dst_port: u16, seq: u32, rst: bool, from_client: bool) -> Vec<u8> {
    let (a, b) = if from_client {
        ([10, 0, 0, 1], [10, 0, 0, 2])
    } else {
        ([10, 0, 0, 2], [10, 0, 0, 1])
    };
    let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(a, b, 64)
        .tcp(src_port, dst_port, seq, 1000);
    let builder = if rst {
        builder.rst().ack(seq + 1)
    } else {
        builder.syn()
    };
    let mut out = Vec::new();
    builder.write(&mut out, &[]).unwrap();
    out
}

/// `n` connections from consecutive client ports, each refused by the server.
fn refused_capture(n: u16) -> Vec<u8> {
    let mut frames = Vec::new();
    for i in 0..n {
        let port = 40000 + i;
        frames.push((
            1.0 + i as f64 * 0.001,
            refused_frame(port, 8081, 1000, false, true),
        ));
        frames.push((
            1.0005 + i as f64 * 0.001,
            refused_frame(8081, port, 0, true, false),
        ));
    }
    common::pcap(&frames)
}

fn write_temp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn lbdiag() -> Command {
    Command::cargo_bin("lbdiag").unwrap()
}

#[test]
fn refused_connection_fails_by_default_and_passes_with_fail_on_never() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(&dir, "r.pcap", &refused_capture(1));
    let out = lbdiag().arg("analyze").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("502 Bad Gateway"), "{text}");
    assert!(text.contains("handshake_refused"), "{text}");
    assert!(text.contains("refused"), "{text}");
    lbdiag()
        .args(["analyze", "--fail-on", "never"])
        .arg(&f)
        .assert()
        .code(0);
}

#[test]
fn unreadable_file_exits_2_names_it_and_others_are_still_reported() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_temp(&dir, "notes.txt", b"this is not a capture");
    let empty = write_temp(&dir, "empty.pcap", b"");
    let good = write_temp(&dir, "good.pcap", &refused_capture(1));
    let out = lbdiag()
        .args(["analyze", "--format", "json"])
        .arg(&bad)
        .arg(&empty)
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("notes.txt") && stderr.contains("not a pcap"),
        "{stderr}"
    );
    assert!(
        stderr.contains("empty.pcap") && stderr.contains("empty"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["captures"].as_array().unwrap().len(), 3);
    assert_eq!(report["findings"][0]["kind"], "handshake_refused");
}

#[test]
fn stdin_and_gzip_are_read() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&refused_capture(2)).unwrap();
    let out = lbdiag()
        .args(["analyze", "--format", "json", "-"])
        .write_stdin(gz.finish().unwrap())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["captures"][0]["compressed"], true);
    assert_eq!(report["summary"]["by_kind"]["handshake_refused"], 2);
}

#[test]
fn color_only_when_asked_or_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(&dir, "r.pcap", &refused_capture(1));
    let plain = lbdiag().arg("analyze").arg(&f).output().unwrap();
    assert!(
        !plain.stdout.contains(&0x1b),
        "piped output has no escape codes"
    );
    let colored = lbdiag()
        .args(["analyze", "--color", "always"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(colored.stdout.contains(&0x1b));
}

#[test]
fn closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(&dir, "many.pcap", &refused_capture(3000));
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("lbdiag"))
        .args(["analyze", "--max-findings", "100000", "--format", "json"])
        .arg(&f)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.is_empty(), "no message on a closed pipe: {stderr}");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn findings_beyond_the_limit_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(&dir, "many.pcap", &refused_capture(30));
    let out = lbdiag()
        .args(["analyze", "--format", "json", "--max-findings", "10"])
        .arg(&f)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["findings"].as_array().unwrap().len(), 10);
    assert_eq!(report["summary"]["suppressed"], 20);
}

#[test]
fn status_keeps_what_explains_that_status_with_its_chain() {
    let capture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/proxy-read-timeout.pcap");
    let run = |status: &str| -> serde_json::Value {
        let out = lbdiag()
            .args([
                "analyze",
                "--format",
                "json",
                "--fail-on",
                "never",
                "--status",
                status,
            ])
            .arg(&capture)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let kept = run("504");
    let kinds: Vec<&str> = kept["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["error_status", "slow_response"]);
    assert_eq!(kept["findings"][0]["explained_by"], serde_json::json!([1]));
    assert_eq!(run("404")["findings"].as_array().unwrap().len(), 0);
}

#[test]
fn a_named_balancer_gives_legs() {
    let capture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/proxy-refused.pcap");
    let out = lbdiag()
        .args([
            "analyze",
            "--format",
            "json",
            "--fail-on",
            "never",
            "--balancer",
            "10.71.0.2",
        ])
        .arg(&capture)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["captures"][0]["balancers"][0]["address"],
        "10.71.0.2"
    );
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["leg"].is_string())
    );
}
