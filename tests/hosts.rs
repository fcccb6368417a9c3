//! `--same-traffic`: captures of the same traffic taken on different hosts, without an access
//! log. `captures/access-logs/hosts-client.pcap` (the client's link, clock 1.5 s ahead) and
//! `hosts-backend.pcap` (the backend's link, 7.25 s behind) hold the traffic behind
//! `trace.log`; `hosts.json` gives each failed request's frames on both, from tshark.

use serde_json::Value;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures")
}

fn run(args: &[&str]) -> std::process::Output {
    assert_cmd::Command::cargo_bin("lbdiag")
        .unwrap()
        .current_dir(dir())
        .arg("analyze")
        .arg("--fail-on=never")
        .args(args)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap()
}

fn report(args: &[&str]) -> Value {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn hosts() -> Value {
    let path = dir().join("access-logs/hosts.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const CLIENT: &str = "access-logs/hosts-client.pcap";
const BACKEND: &str = "access-logs/hosts-backend.pcap";

fn packets(f: &Value) -> Vec<u64> {
    f["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect()
}

fn indexes(f: &Value, key: &str) -> Vec<usize> {
    f[key].as_array().map_or(Vec::new(), |v| {
        v.iter().map(|i| i.as_u64().unwrap() as usize).collect()
    })
}

#[test]
fn test_client_and_backend_captures_find_their_offset_and_link_every_failure() {
    let h = hosts();
    // hosts.json gives each capture's offset from the log's clock (log minus capture): the
    // backend's clock minus the client's is their difference.
    let want_ms =
        h["client_offset_ms"].as_f64().unwrap() - h["backend_offset_ms"].as_f64().unwrap();
    assert_eq!(want_ms, -8750.0);
    for (first, other, sign) in [(CLIENT, BACKEND, 1.0), (BACKEND, CLIENT, -1.0)] {
        let r = report(&["--format", "json", "--same-traffic", first, other]);
        let a = &r["alignments"].as_array().unwrap()[..];
        assert_eq!(a.len(), 1, "{a:?}");
        let a = &a[0];
        assert_eq!(a["capture"], first);
        assert_eq!(a["other"], other);
        let found = a["offset_ms"].as_f64().expect("an offset");
        assert!(
            (found - sign * want_ms).abs() < 5.0,
            "{first} then {other}: {found} ms"
        );
        assert!(a["matches"].as_u64().unwrap() >= 3, "{a}");
        assert_eq!(a["front"], CLIENT);
        assert_eq!(a["back"], BACKEND);
        assert_eq!(a["balancer"], serde_json::json!(["10.72.0.2"]));
        assert_eq!(a["back_addresses"], serde_json::json!(["10.72.1.2"]));
        let lines = h["lines"].as_array().unwrap();
        assert_eq!(a["links"].as_u64().unwrap() as usize, lines.len());

        let findings = r["findings"].as_array().unwrap();
        for want in lines {
            let line = want["line"].as_u64().unwrap();
            let frame = want["client_capture"]["response_frame"].as_u64().unwrap();
            let (i, front) = findings
                .iter()
                .enumerate()
                .find(|(_, f)| {
                    f["capture"] == CLIENT
                        && f["kind"] == "error_status"
                        && packets(f).contains(&frame)
                })
                .unwrap_or_else(|| panic!("line {line}: no front finding at frame {frame}"));
            assert_eq!(front["leg"], "front", "line {line}");
            let by = indexes(front, "explained_by");
            assert_eq!(by.len(), 1, "line {line}: {front}");
            let back = &findings[by[0]];
            assert_eq!(back["capture"], BACKEND, "line {line}: {back}");
            assert_eq!(back["leg"], "back", "line {line}");
            assert!(indexes(back, "explains").contains(&i), "line {line}");
            let b = &want["backend_capture"];
            let back_frame = b["back_request_frame"]
                .as_u64()
                .or(b["back_syn_frame"].as_u64())
                .unwrap();
            assert!(
                packets(back).contains(&back_frame),
                "line {line}: {back_frame} not in {back}"
            );
            let kind = back["kind"].as_str().unwrap();
            assert!(
                want["kinds"].as_array().unwrap().iter().any(|k| k == kind),
                "line {line}: {kind}"
            );
            // The balancer answered 502 itself because of the back leg, named with its file.
            let summary = front["summary"].as_str().unwrap();
            assert!(
                summary.contains("because of the back leg") && summary.contains(BACKEND),
                "line {line}: {summary}"
            );
            assert_eq!(front["causes"][0]["upstream_status"], "-", "line {line}");
        }
    }
}

#[test]
fn test_text_report_shows_the_alignment_and_the_file_of_each_linked_finding() {
    let out = run(&["--same-traffic", CLIENT, BACKEND]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!(
            "== captures of the same traffic (--same-traffic)\n  {BACKEND} against {CLIENT}: clock -8.750 s"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Explained by: connection_reset (frames 9, 18 in {BACKEND})"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Explains: error_status (frames 9, 18 in {CLIENT})"
        )),
        "{text}"
    );
}

#[test]
fn test_captures_of_unrelated_traffic_get_no_offset_no_links_and_no_other_findings() {
    // Each pair was made by the same scripts minutes apart, on the same addresses, asking the
    // same things at the same pace: the hardest pairs the shipped captures offer.
    for pair in [
        [
            "plain-http-on-443-and-8443.pcap",
            "response-before-request.pcap",
        ],
        ["access-logs/haproxy.pcap", "access-logs/nginx.pcap"],
        [
            "backend-keepalive-race.pcap",
            "proxy-haproxy-keepalive-race.pcap",
        ],
        [
            "proxy-haproxy-keepalive-race.pcap",
            "proxy-keepalive-race-post.pcap",
        ],
        [CLIENT, "access-logs/trace.pcap"],
    ] {
        let plain = report(&["--format", "json", pair[0], pair[1]]);
        let r = report(&["--format", "json", "--same-traffic", pair[0], pair[1]]);
        let a = &r["alignments"][0];
        assert_eq!(a["offset_ms"], Value::Null, "{pair:?}: {a}");
        assert_eq!(a["links"], 0, "{pair:?}");
        assert_eq!(a["front"], Value::Null, "{pair:?}");
        assert!(
            a["note"].as_str().unwrap().starts_with("No offset found"),
            "{pair:?}: {a}"
        );
        assert_eq!(r["findings"], plain["findings"], "{pair:?}");
        assert_eq!(r["summary"], plain["summary"], "{pair:?}");
    }
}

#[test]
fn test_same_traffic_and_an_access_log_are_not_given_together() {
    let out = run(&[
        "--same-traffic",
        "--access-log",
        "access-logs/trace.log",
        CLIENT,
        BACKEND,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--same-traffic"));
}

#[test]
fn test_json_lines_and_junit_show_the_alignment() {
    let out = run(&["--same-traffic", "--format", "jsonl", CLIENT, BACKEND]);
    assert_eq!(out.status.code(), Some(0));
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let alignments: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "alignment")
        .collect();
    assert_eq!(alignments.len(), 1);
    let ms = alignments[0]["offset_ms"].as_f64().expect("an offset");
    assert!((ms.abs() - 8750.0).abs() < 5.0, "{ms}");
    assert_eq!(alignments[0]["links"], 4);
    let stories = records.iter().filter(|r| r["type"] == "story").count();
    assert!(stories >= 4, "the links are stories: {stories}");

    let out = run(&["--same-traffic", "--format", "junit", CLIENT, BACKEND]);
    let xml = String::from_utf8_lossy(&out.stdout);
    assert!(xml.contains(r#"<testsuite name="same traffic""#), "{xml}");
    assert!(xml.contains(r#"classname="lbdiag.same_traffic""#), "{xml}");
    assert!(!xml.contains("<skipped"), "an offset was found: {xml}");
}
