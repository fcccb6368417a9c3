//! One capture on several threads gives the same report, byte for byte, as on one: on every
//! shipped capture, and on a synthetic one busy enough that connections expire, are reused and
//! fail while packets of other connections (other threads' connections) arrive in between.

mod common;

use common::busy::busy_capture;
use lbdiag::Options;
use lbdiag::analyze::{analyze_paths, analyze_reader};
use lbdiag::capture::{CaptureReader, Duration};
use lbdiag::render::json;
use std::io::Cursor;
use std::path::Path;

const THREADS: [usize; 4] = [1, 2, 3, 8];

fn json_of(report: &lbdiag::report::Report) -> String {
    let mut out = Vec::new();
    json::render(report, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn test_threads_give_identical_reports_on_shipped_captures() {
    let captures = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
    for transactions in [false, true] {
        let options = |threads| Options {
            threads,
            transactions,
            ..Options::default()
        };
        let one = json_of(&analyze_paths(&[&captures], &options(1)));
        assert!(one.contains("\"explained_by\": [\n"), "links were made");
        for n in &THREADS[1..] {
            let many = json_of(&analyze_paths(&[&captures], &options(*n)));
            assert!(
                one == many,
                "--threads {n} differs from 1 (transactions {transactions})"
            );
        }
    }
}

#[test]
fn test_threads_give_identical_reports_on_a_busy_capture() {
    let bytes = busy_capture();
    let run = |threads: usize| {
        let reader =
            CaptureReader::from_read("busy.pcap".into(), Box::new(Cursor::new(bytes.clone())))
                .unwrap();
        let mut options = Options {
            threads,
            transactions: true,
            ..Options::default()
        };
        options.limits.idle_timeout = Duration::from_secs(2);
        let a = analyze_reader(reader, &options);
        let report = lbdiag::report::Report::new(vec![a.summary], a.findings, a.suppressed);
        json_of(&report)
    };
    let one = run(1);
    // The capture exercises what threads could get wrong: many kinds of finding, and
    // connections that expire while others are still sending.
    for kind in [
        "handshake_refused",
        "syn_unanswered",
        "connection_reset",
        "error_status",
    ] {
        assert!(one.contains(&format!("\"kind\": \"{kind}\"")), "{kind}");
    }
    for n in &THREADS[1..] {
        assert!(one == run(*n), "--threads {n} differs from 1");
    }
}
