//! Hostile and broken input: every prefix of a capture, random bit flips, absurd length fields,
//! clocks that jump, unknown and damaged pcapng blocks, sequence wraparound, fragments and
//! jumbo frames. Each must give a report or a clear error, never a panic, and what can be read
//! must be read. `LBDIAG_ROBUSTNESS=long` runs many more mutations.

mod common;

use lbdiag::analyze::{CaptureAnalysis, Options, analyze_reader};
use lbdiag::capture::CaptureReader;
use std::io::Cursor;
use std::path::Path;

fn analyze(bytes: &[u8]) -> Result<CaptureAnalysis, String> {
    let reader = CaptureReader::from_read("t.pcap".into(), Box::new(Cursor::new(bytes.to_vec())))
        .map_err(|e| e.to_string())?;
    Ok(analyze_reader(reader, &Options::default()))
}

fn kinds(a: &CaptureAnalysis) -> Vec<String> {
    a.findings.iter().map(|f| f.kind.to_string()).collect()
}

/// Small deterministic generator: the same mutations on every run, no extra crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn long_mode() -> bool {
    std::env::var("LBDIAG_ROBUSTNESS").is_ok_and(|v| v == "long")
}

/// Captures to torture: synthetic ones, plus the project's own and the corpus when present.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("sample.pcap".to_string(), common::sample_capture()),
        ("sample.pcapng".to_string(), {
            let mut f = common::http_conversation(1000, 5000);
            f.extend(common::refused());
            common::pcapng(&f)
        }),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [root.join("captures"), root.join("../shared/corpus")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for p in files {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let is_capture = name.ends_with(".pcap") || name.ends_with(".pcapng");
            let small = std::fs::metadata(&p).is_ok_and(|m| m.len() <= 64 * 1024);
            if is_capture && small {
                out.push((name, std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn every_prefix_gives_a_report_or_a_clear_error() {
    for (name, bytes) in seeds() {
        // Every byte in long mode; otherwise about 40 cuts per capture, always including
        // every cut of the first 200 bytes, where the headers are.
        let step = if long_mode() {
            1
        } else {
            (bytes.len() / 40).max(1)
        };
        let cuts = (0..bytes.len().min(200)).chain((0..=bytes.len()).step_by(step));
        for cut in cuts {
            match analyze(&bytes[..cut]) {
                Ok(a) => {
                    assert!(
                        a.summary.packets as usize <= cut / 16,
                        "{name} cut at {cut}"
                    );
                }
                Err(e) => assert!(!e.is_empty(), "{name} cut at {cut}: empty error"),
            }
        }
    }
}

#[test]
fn a_cut_in_the_middle_of_a_record_is_reported_and_earlier_frames_analyzed() {
    let bytes = common::sample_capture();
    let cut = &bytes[..bytes.len() - 10];
    let a = analyze(cut).unwrap();
    assert!(a.summary.truncated);
    assert!(a.summary.warnings.iter().any(|w| w.message.contains("cut")));
    // The refused connection's SYN is before the cut; the HTTP reset is too.
    assert!(
        kinds(&a).contains(&"connection_reset".to_string()),
        "{:?}",
        kinds(&a)
    );
}

#[test]
fn random_bit_flips_never_panic() {
    let rounds = if long_mode() { 20_000 } else { 40 };
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for (_, bytes) in seeds() {
        if bytes.is_empty() {
            continue;
        }
        for _ in 0..rounds {
            let mut m = bytes.clone();
            let flips = 1 + rng.next() % 8;
            for _ in 0..flips {
                let i = (rng.next() % m.len() as u64) as usize;
                m[i] ^= 1 << (rng.next() % 8);
            }
            let _ = analyze(&m);
        }
    }
}

fn record(ts_sec: u32, ts_frac: u32, caplen: u32, origlen: u32, data: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend(ts_sec.to_le_bytes());
    r.extend(ts_frac.to_le_bytes());
    r.extend(caplen.to_le_bytes());
    r.extend(origlen.to_le_bytes());
    r.extend(data);
    r
}

fn header(snaplen: u32) -> Vec<u8> {
    let mut h = common::pcap(&[]);
    h[16..20].copy_from_slice(&snaplen.to_le_bytes());
    h
}

#[test]
fn caplen_zero_and_absurd_caplen() {
    let mut bytes = header(65535);
    bytes.extend(record(1, 0, 0, 60, b""));
    bytes.extend(common::sample_capture()[24..].iter());
    let a = analyze(&bytes).unwrap();
    assert!(a.summary.packets > 1);

    let mut bytes = header(65535);
    bytes.extend(common::sample_capture()[24..].iter());
    bytes.extend(record(9, 0, u32::MAX, u32::MAX, &[0u8; 100]));
    let a = analyze(&bytes).unwrap();
    assert!(
        a.summary.truncated,
        "a 4 GB record is refused, not allocated"
    );
    assert!(kinds(&a).contains(&"handshake_refused".to_string()));
}

#[test]
fn snaplen_zero_and_caplen_over_snaplen() {
    let mut bytes = common::sample_capture();
    bytes[16..20].copy_from_slice(&0u32.to_le_bytes());
    assert!(analyze(&bytes).is_ok());
    let mut bytes = common::sample_capture();
    bytes[16..20].copy_from_slice(&10u32.to_le_bytes());
    let a = analyze(&bytes).unwrap();
    assert!(
        a.summary
            .warnings
            .iter()
            .any(|w| w.message.contains("snaplen"))
    );
}

#[test]
fn clocks_that_go_backwards_or_jump_years() {
    let mut frames = common::http_conversation(1, 2);
    frames[3].0 = 0.5; // earlier than the handshake
    frames[4].0 = 3_000_000_000.0; // year 2065
    let a = analyze(&common::pcap(&frames)).unwrap();
    assert!(
        a.summary
            .warnings
            .iter()
            .any(|w| w.message.contains("earlier"))
    );
}

#[test]
fn pcapng_unknown_block_is_skipped_and_bad_length_stops_cleanly() {
    let frames = common::http_conversation(1, 2);
    let good = common::pcapng(&frames);
    // Insert an unknown block type after the interface description.
    let idb_end = 28 + 20;
    let mut with_unknown = good[..idb_end].to_vec();
    let mut unknown = Vec::new();
    unknown.extend(0x0bad_0001u32.to_le_bytes());
    unknown.extend(16u32.to_le_bytes());
    unknown.extend([0xab; 4]);
    unknown.extend(16u32.to_le_bytes());
    with_unknown.extend(unknown);
    with_unknown.extend(&good[idb_end..]);
    let a = analyze(&with_unknown).unwrap();
    assert_eq!(a.summary.packets, frames.len() as u64);

    let mut bad_len = good.clone();
    bad_len[idb_end + 4..idb_end + 8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let a = analyze(&bad_len).unwrap();
    assert!(a.summary.truncated);
    assert!(!a.summary.warnings.is_empty());
}

#[test]
fn sequence_wraparound_keeps_the_stream_intact() {
    let a = analyze(&common::pcap(&common::http_conversation(
        u32::MAX - 5,
        u32::MAX - 1,
    )))
    .unwrap();
    assert_eq!(kinds(&a), vec!["connection_reset"], "{:?}", a.findings);
    assert_eq!(a.findings[0].evidence["phase"], "awaiting_response");
    assert_eq!(a.findings[0].evidence["phase_basis"], "http");
}

#[test]
fn ip_fragments_are_counted_not_misparsed_and_jumbo_frames_read() {
    use etherparse::PacketBuilder;
    let mut frames = common::http_conversation(1, 2);
    // An IPv4 fragment (MF set) that would look like TCP if parsed blindly.
    let mut frag = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([10, 0, 0, 9], [10, 0, 0, 2], 64)
        .tcp(1, 2, 3, 4)
        .write(&mut frag, &[0u8; 40])
        .unwrap();
    frag[14 + 6] |= 0x20; // more fragments
    frames.push((5.0, frag));
    let mut jumbo = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 80, 9, 65535)
        .ack(1)
        .write(&mut jumbo, &[b'x'; 8900])
        .unwrap();
    frames.push((6.0, jumbo));
    let a = analyze(&common::pcap(&frames)).unwrap();
    assert!(
        a.summary
            .warnings
            .iter()
            .any(|w| w.message.contains("fragment"))
    );
}

#[test]
fn not_a_capture_and_empty_input_are_clear_errors() {
    let e = analyze(b"<html>").err().unwrap();
    assert!(e.contains("not a pcap"), "{e}");
    let e = analyze(b"").err().unwrap();
    assert!(e.contains("empty"), "{e}");
}

#[test]
fn overlapping_retransmission_with_different_bytes_is_reported_and_first_version_analyzed() {
    let mut frames = common::http_conversation(1, 2);
    // Resend the request segment with a different target: same sequence numbers, other bytes.
    let original = frames[3].1.clone();
    let mut forged = original.clone();
    let at = forged.windows(6).position(|w| w == b"GET /a").unwrap();
    forged[at + 5] = b'z';
    // Fix nothing else: lbdiag does not check TCP checksums, as captures on the sender hold
    // checksums the NIC fills in later.
    frames.insert(4, (1.004, forged));
    let a = analyze(&common::pcap(&frames)).unwrap();
    assert!(
        a.summary
            .warnings
            .iter()
            .any(|w| w.message.contains("different bytes")),
        "{:?}",
        a.summary.warnings
    );
    assert_eq!(
        a.findings[0].evidence["request"], "GET /b",
        "the pipelined second request"
    );
}

#[test]
fn half_sent_heads_on_many_connections_stay_within_the_protocol_buffer_budget() {
    use etherparse::PacketBuilder;
    let mut frames = Vec::new();
    for i in 0..200u16 {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(20000 + i, 80, 1, 65535)
            .ack(1)
            .write(
                &mut f,
                format!("GET /{i} HTTP/1.1\r\nX-Pad: {}", "p".repeat(900)).as_bytes(),
            )
            .unwrap();
        frames.push((1.0 + i as f64 * 0.001, f));
    }
    let reader = CaptureReader::from_read(
        "heads.pcap".into(),
        Box::new(Cursor::new(common::pcap(&frames))),
    )
    .unwrap();
    let options = Options {
        max_protocol_buffers: 50_000,
        ..Options::default()
    };
    let a = analyze_reader(reader, &options);
    assert!(
        a.summary
            .warnings
            .iter()
            .any(|w| w.message.contains("--max-protocol-buffers")),
        "{:?}",
        a.summary.warnings
    );
}
