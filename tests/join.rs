//! Several files as one capture: tcpdump's rotated files (found by their names) and any set
//! given with `--join` are read in the order of their first frames, with frame numbers running
//! on, so a connection that spans files is one connection.

use assert_cmd::Command;
use lbdiag::Options;
use lbdiag::analyze::{analyze_joined, analyze_paths, collect_inputs};
use std::path::{Path, PathBuf};

fn captures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures")
}

/// The findings of a report as JSON, without the file each belongs to.
fn findings(report: &lbdiag::Report) -> Vec<serde_json::Value> {
    report
        .findings
        .iter()
        .map(|f| {
            let mut v = serde_json::to_value(f).unwrap();
            v.as_object_mut().unwrap().remove("capture");
            v
        })
        .collect()
}

#[test]
fn test_rotated_files_are_one_capture_like_the_file_they_were_cut_from() {
    let whole = analyze_paths(&[captures().join("zero-window.pcap")], &Options::default());
    for threads in [1, 2] {
        let options = Options {
            threads,
            ..Options::default()
        };
        let rotated = analyze_paths(&[captures().join("rotated")], &options);
        assert_eq!(rotated.captures.len(), 1, "one capture, not three");
        let c = &rotated.captures[0];
        assert_eq!(c.packets, whole.captures[0].packets);
        assert_eq!(c.connections, 1, "the connection spans the files");
        let parts: Vec<(String, u64, u64)> = c
            .parts
            .iter()
            .map(|p| {
                let name = Path::new(&p.file).file_name().unwrap();
                (name.to_string_lossy().into_owned(), p.first_frame, p.frames)
            })
            .collect();
        // Frame counts from tshark on each file.
        assert_eq!(
            parts,
            [
                ("zero-window.pcap".to_string(), 1, 1022),
                ("zero-window.pcap1".to_string(), 1023, 997),
                ("zero-window.pcap2".to_string(), 2020, 182),
            ]
        );
        assert_eq!(findings(&rotated), findings(&whole));
        assert!(!findings(&whole).is_empty());
    }
}

#[test]
fn test_join_orders_parts_by_their_first_frame_not_as_given() {
    let dir = captures().join("rotated");
    let shuffled = [
        dir.join("zero-window.pcap2"),
        dir.join("zero-window.pcap"),
        dir.join("zero-window.pcap1"),
    ];
    let joined = analyze_joined(&shuffled, &Options::default());
    let whole = analyze_paths(&[captures().join("zero-window.pcap")], &Options::default());
    assert_eq!(joined.summary.parts[0].first_frame, 1);
    assert!(joined.summary.parts[0].file.ends_with("zero-window.pcap"));
    let mut report = lbdiag::Report::new(vec![joined.summary], joined.findings, 0);
    report.summary.skipped_files = 0;
    assert_eq!(findings(&report), findings(&whole));
}

#[test]
fn test_join_flag_makes_any_files_one_capture() {
    let out = Command::cargo_bin("lbdiag")
        .unwrap()
        .args([
            "analyze",
            "--join",
            "--format",
            "json",
            "--fail-on",
            "never",
        ])
        .arg(captures().join("refused.pcap"))
        .arg(captures().join("server-reset.pcap.gz"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let captures = report["captures"].as_array().unwrap();
    assert_eq!(captures.len(), 1);
    assert_eq!(captures[0]["parts"].as_array().unwrap().len(), 2);
    // Both files' findings are there, the second file's at frame numbers after the first's.
    let first_frames = captures[0]["parts"][1]["first_frame"].as_u64().unwrap();
    assert!(first_frames > 1);
    let kinds: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"handshake_refused"), "{kinds:?}");
    assert!(kinds.contains(&"connection_reset"), "{kinds:?}");
}

#[test]
fn test_join_names_a_part_that_cannot_be_opened_and_reads_the_rest() {
    let parts = [
        captures().join("refused.pcap"),
        captures().join("no-such-part.pcap1"),
    ];
    let joined = analyze_joined(&parts, &Options::default());
    assert!(joined.summary.error.is_none());
    assert!(
        joined
            .summary
            .warnings
            .iter()
            .any(|w| w.message.contains("no-such-part.pcap1")),
        "{:?}",
        joined.summary.warnings
    );
    assert!(!joined.findings.is_empty());
}

#[test]
fn test_directory_listing_joins_only_rotated_names() {
    let inputs = collect_inputs(&[captures()]);
    let joined: Vec<_> = inputs
        .entries
        .iter()
        .filter_map(|e| match e {
            lbdiag::analyze::Input::Joined { parts, .. } => Some(parts.len()),
            _ => None,
        })
        .collect();
    assert_eq!(joined, [3], "only the rotated set is joined");
}
