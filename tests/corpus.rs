//! Runs every capture of `../shared/corpus` (public captures from other projects) through the
//! analyzer: no panic, no hang, and exit 2 only on files MANIFEST.tsv calls corrupt. For the
//! kinds lbdiag implements, the findings MANIFEST.tsv expects must appear.
//! Skips with a message when the corpus is not beside the clone, except under `CI=true`, where
//! a missing corpus fails the test.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Kinds lbdiag produces today; expectations for other kinds are not checked yet.
const IMPLEMENTED: &[&str] = &[
    "handshake_refused",
    "syn_unanswered",
    "connection_reset",
    "syn_retransmitted",
    "oversize_packet",
    "mtu_blackhole",
    "icmp_frag_needed",
    "packet_loss",
    "high_rtt",
    "zero_window",
    "capture_gap",
    "malformed_response",
    "malformed_request",
    "response_body_truncated",
    "response_body_overrun",
    "conflicting_content_length",
    "content_length_with_chunked",
    "malformed_chunked",
    "request_body_truncated",
    "request_incomplete",
    "header_too_large",
    "uri_too_long",
    "trace_method",
    "http_on_tls_port",
    "alb_trace_loop",
    "alb_qps_limited",
    "error_status",
    "slow_response",
    "no_response",
    "closed_before_response",
    "client_closed_early",
    "tls_cert_expired",
    "tls_sni_mismatch",
    "tls_handshake_failure",
    "tls_no_sni",
    "tls_cert_unverifiable",
];

#[test]
fn corpus_is_analyzed_without_panic_or_hang() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    let Ok(manifest) = std::fs::read_to_string(dir.join("MANIFEST.tsv")) else {
        // CI puts the corpus beside the clone: there, a missing corpus is a broken setup, not
        // a pass.
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true but no corpus at {}",
            dir.display()
        );
        println!("skipped: no corpus at {}", dir.display());
        return;
    };
    let mut lines = manifest.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (file_col, what_col, expect_col) =
        (col("file"), col("what_it_shows"), col("lbdiag_expect"));

    let mut analyzed = 0;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let file = fields[file_col];
        let described_corrupt = fields
            .get(what_col)
            .is_some_and(|w| w.to_lowercase().contains("corrupt"));
        let expected: Vec<&str> = fields
            .get(expect_col)
            .map(|e| {
                e.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let out = assert_cmd::Command::cargo_bin("lbdiag")
            .unwrap()
            .args(["analyze", "--format=json", "--fail-on=never"])
            .arg(dir.join(file))
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        analyzed += 1;
        match out.status.code() {
            Some(0) => {}
            Some(2) if described_corrupt => {}
            other => {
                problems.push(format!(
                    "{file}: exit {other:?} (a panic, a timeout or an unexpected read failure): {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
                continue;
            }
        }
        let report: Value = match serde_json::from_slice(&out.stdout) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{file}: invalid JSON: {e}"));
                continue;
            }
        };
        let found: Vec<String> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["kind"].as_str().unwrap().to_string())
            .collect();
        for k in &found {
            *kinds.entry(k.clone()).or_default() += 1;
        }
        for want in expected.iter().filter(|k| IMPLEMENTED.contains(k)) {
            if !found.iter().any(|k| k == want) {
                problems.push(format!(
                    "{file}: MANIFEST expects {want}, lbdiag found {found:?}"
                ));
            }
        }
    }
    println!("corpus: analyzed {analyzed} captures");
    for (kind, n) in &kinds {
        println!("corpus: {n:>4} {kind}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
