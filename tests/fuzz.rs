//! Stable-Rust fuzzing: every parser that sees capture bytes, driven by proptest with a bounded
//! number of cases (set `PROPTEST_CASES` higher for a long run). cargo-fuzz needs a nightly
//! toolchain this project cannot assume; these targets run everywhere `cargo test` does.
//! A failure proptest finds is saved under `proptest-regressions/` and replayed on every run.

mod common;

use lbdiag::analyze::{Options, analyze_reader};
use lbdiag::capture::{CaptureReader, Frame, LinkType, Timestamp};
use lbdiag::flow::{Budget, Reassembler, Seen, SeqNumber, StreamEvent};
use lbdiag::proto::http::{HttpConn, HttpEvent, HttpLimits};
use lbdiag::report::Warnings;
use proptest::prelude::*;
use std::io::Cursor;

fn read_all(bytes: Vec<u8>) {
    if let Ok(mut r) = CaptureReader::from_read("f".into(), Box::new(Cursor::new(bytes))) {
        let mut w = Warnings::default();
        r.for_each_frame(&mut w, |f| {
            assert!(f.data.len() <= lbdiag::capture::MAX_RECORD_BYTES);
        });
    }
}

const LINK_TYPES: &[u32] = &[0, 1, 12, 101, 108, 113, 228, 229, 239, 276, 160];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Capture readers: a valid pcap or pcapng header followed by anything.
    #[test]
    fn fuzz_capture_readers(tail in proptest::collection::vec(any::<u8>(), 0..2000), ng in any::<bool>()) {
        let mut bytes = if ng { common::pcapng(&[]) } else { common::pcap(&[]) };
        bytes.extend(tail);
        read_all(bytes);
    }

    /// Gzip: a compressed valid prefix followed by garbage, or garbage after the magic.
    #[test]
    fn fuzz_gzip(garbage in proptest::collection::vec(any::<u8>(), 0..500), cut in 0usize..400) {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&common::sample_capture()).unwrap();
        let mut bytes = gz.finish().unwrap();
        bytes.truncate(cut.min(bytes.len()).max(2));
        bytes.extend(garbage);
        read_all(bytes);
    }

    /// Link, IP and TCP decoding of arbitrary frames of every supported link type.
    #[test]
    fn fuzz_decode(data in proptest::collection::vec(any::<u8>(), 0..200), lt in 0usize..LINK_TYPES.len(), extra in 0u32..100000) {
        let frame = Frame {
            number: 1,
            ts: Timestamp(0),
            link_type: LinkType(LINK_TYPES[lt]),
            data: &data,
            orig_len: data.len() as u32 + extra,
        };
        let _ = lbdiag::decode::decode(&frame);
    }

    /// The reassembler fed arbitrary segments: each byte offset is delivered or declared a gap
    /// exactly once, and held bytes never exceed the budget.
    #[test]
    fn fuzz_reassembler(segs in proptest::collection::vec((0u32..3000, proptest::collection::vec(any::<u8>(), 0..300), 0u32..50), 0..40)) {
        let mut r = Reassembler::default();
        r.start_at(SeqNumber(u32::MAX - 1000));
        let mut budget = Budget::new(2000, 4000);
        let mut next = 0u64;
        let mut sink = |e: StreamEvent<'_>| match e {
            StreamEvent::Data { offset, bytes, .. } => {
                assert_eq!(offset, next);
                next += bytes.len() as u64;
            }
            StreamEvent::Gap { offset, len, .. } => {
                assert_eq!(offset, next);
                next += len;
            }
        };
        for (i, (rel, data, cut)) in segs.iter().enumerate() {
            let wire = data.len() as u32 + cut;
            let at = Seen { frame: i as u64 + 1, ts: Timestamp(i as i64) };
            r.segment(SeqNumber(u32::MAX - 1000).plus(*rel), data, wire, at, &mut budget, &mut sink);
            assert!(budget.held <= budget.total);
            assert!(r.held_bytes() <= budget.per_connection);
        }
        r.finish(&mut budget, &mut sink);
        assert_eq!(budget.held, 0);
        assert_eq!(r.offset(), next);
    }

    /// The HTTP analyzer on arbitrary streams with gaps, split arbitrarily.
    #[test]
    fn fuzz_http(events in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..120), 0u8..8), 0..30), mid in any::<bool>()) {
        let mut h = HttpConn::new(!mid, HttpLimits { max_head: 256, ..HttpLimits::default() });
        let mut done = 0u64;
        let mut sink = |e: HttpEvent<'_>| if let HttpEvent::Done(_) = e { done += 1 };
        let mut offsets = [0u64; 2];
        for (i, (client, data, kind)) in events.iter().enumerate() {
            let role = if *client { lbdiag::flow::Role::Client } else { lbdiag::flow::Role::Server };
            let at = Seen { frame: i as u64, ts: Timestamp(i as i64) };
            let o = &mut offsets[*client as usize];
            if *kind == 0 {
                h.on_gap(role, data.len() as u64 + 1, at, &mut sink);
                *o += data.len() as u64 + 1;
            } else {
                // Seed with plausible starts so the parser gets past detection.
                let prefix: &[u8] = match (*client, kind) {
                    (true, 1) => b"GET / HTTP/1.1\r\n",
                    (false, 1) => b"HTTP/1.1 200 OK\r\n",
                    (false, 2) => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                    _ => b"",
                };
                let bytes = [prefix, data.as_slice()].concat();
                h.on_data(role, *o, &bytes, at, &mut sink);
                *o += bytes.len() as u64;
            }
        }
        let _ = h.phase();
        let _ = h.response_in_progress();
        prop_assert!(h.open().count() <= 1024);
    }

    /// The whole pipeline from file bytes to report, on a real-looking capture mutated at
    /// random positions.
    #[test]
    fn fuzz_pipeline(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..12)) {
        let mut bytes = common::sample_capture();
        for (i, b) in edits {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        if let Ok(r) = CaptureReader::from_read("f".into(), Box::new(Cursor::new(bytes))) {
            let a = analyze_reader(r, &Options::default());
            let report = lbdiag::Report::new(vec![a.summary], a.findings, 0);
            let mut out = Vec::new();
            lbdiag::render::render_json(&report, &mut out).unwrap();
            serde_json::from_slice::<serde_json::Value>(&out).unwrap();
            let mut text = Vec::new();
            lbdiag::render::render_text(&report, lbdiag::render::text::Style { color: false, all: false }, &mut text).unwrap();
            assert!(!text.contains(&0x1b), "no escape sequences from packet bytes");
        }
    }
}
