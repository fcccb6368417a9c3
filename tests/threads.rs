//! One capture on several threads gives the same report, byte for byte, as on one: on every
//! shipped capture, and on a synthetic one busy enough that connections expire, are reused and
//! fail while packets of other connections (other threads' connections) arrive in between.

mod common;

use common::{ACK, FIN, PSH, RST, SYN};
use etherparse::PacketBuilder;
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

/// A tiny deterministic generator, so the capture is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// What a synthetic connection does.
#[derive(Clone, Copy)]
enum Script {
    /// Three keep-alive requests answered 200, then FIN both ways.
    Healthy,
    /// The second request is answered 502.
    BadGateway,
    /// The server resets while the request waits.
    ResetAwaiting,
    /// A SYN sent three times, never answered.
    Unanswered,
    /// Refused with a reset.
    Refused,
    /// A request answered, then nothing: it goes idle and expires mid-capture.
    Idle,
}

struct Conn {
    client: ([u8; 4], u16),
    server: ([u8; 4], u16),
    packets: Vec<(bool, u32, u32, u8, Vec<u8>)>,
    next: usize,
}

fn frame(c: &Conn, from_client: bool, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let ((a, sp), (b, dp)) = if from_client {
        (c.client, c.server)
    } else {
        (c.server, c.client)
    };
    let mut builder = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(a, b, 64)
        .tcp(sp, dp, seq, 65535);
    if flags & SYN != 0 {
        builder = builder.syn();
    }
    if flags & ACK != 0 {
        builder = builder.ack(ack);
    }
    if flags & PSH != 0 {
        builder = builder.psh();
    }
    if flags & FIN != 0 {
        builder = builder.fin();
    }
    if flags & RST != 0 {
        builder = builder.rst();
    }
    let mut out = Vec::new();
    builder.write(&mut out, payload).unwrap();
    out
}

fn script(s: Script) -> Vec<(bool, u32, u32, u8, Vec<u8>)> {
    let (ci, si) = (1000u32, 5000u32);
    let mut p = vec![(true, ci, 0, SYN, vec![])];
    match s {
        Script::Unanswered => {
            p.push((true, ci, 0, SYN, vec![]));
            p.push((true, ci, 0, SYN, vec![]));
            return p;
        }
        Script::Refused => {
            p.push((false, 0, ci + 1, RST | ACK, vec![]));
            return p;
        }
        _ => {}
    }
    p.push((false, si, ci + 1, SYN | ACK, vec![]));
    p.push((true, ci + 1, si + 1, ACK, vec![]));
    let (mut c, mut sv) = (ci + 1, si + 1);
    let requests = match s {
        Script::Healthy | Script::BadGateway => 3,
        _ => 1,
    };
    for i in 0..requests {
        let req = format!("GET /item/{i} HTTP/1.1\r\nHost: shop\r\n\r\n").into_bytes();
        p.push((true, c, sv, PSH | ACK, req.clone()));
        c += req.len() as u32;
        if let Script::ResetAwaiting = s {
            p.push((false, sv, c, RST | ACK, vec![]));
            return p;
        }
        let status = if matches!(s, Script::BadGateway) && i == 1 {
            "502 Bad Gateway"
        } else {
            "200 OK"
        };
        let resp = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\nhello").into_bytes();
        p.push((false, sv, c, PSH | ACK, resp.clone()));
        sv += resp.len() as u32;
        p.push((true, c, sv, ACK, vec![]));
    }
    if let Script::Idle = s {
        return p;
    }
    p.push((true, c, sv, FIN | ACK, vec![]));
    p.push((false, sv, c + 1, FIN | ACK, vec![]));
    p.push((true, c + 1, sv + 1, ACK, vec![]));
    p
}

/// Many connections interleaved packet by packet, with some 4-tuples used twice.
fn busy_capture() -> Vec<u8> {
    let mut rng = Lcg(0x7468_7265_6164);
    let scripts = [
        Script::Healthy,
        Script::Healthy,
        Script::Healthy,
        Script::BadGateway,
        Script::ResetAwaiting,
        Script::Unanswered,
        Script::Refused,
        Script::Idle,
    ];
    let mut pending: Vec<Conn> = (0..3000u32)
        .map(|i| Conn {
            client: (
                [10, 1, (i % 7) as u8, (i % 40) as u8],
                20000 + (i % 2500) as u16,
            ),
            server: ([10, 2, 0, (i % 5) as u8], 80),
            packets: script(scripts[rng.below(scripts.len() as u64) as usize]),
            next: 0,
        })
        .collect();
    pending.reverse();
    let mut active: Vec<Conn> = Vec::new();
    let mut frames = Vec::new();
    let mut t = 1_700_000_000.0;
    while !pending.is_empty() || !active.is_empty() {
        // Keep about 60 connections open at once; start a new one now and then.
        if !pending.is_empty() && (active.len() < 60 || rng.below(4) == 0) {
            active.push(pending.pop().unwrap());
        }
        let i = rng.below(active.len() as u64) as usize;
        let c = &mut active[i];
        let (from_client, seq, ack, flags, payload) = c.packets[c.next].clone();
        frames.push((t, frame(c, from_client, seq, ack, flags, &payload)));
        c.next += 1;
        if c.next == c.packets.len() {
            active.swap_remove(i);
        }
        // Now and then a pause long enough for idle connections to expire.
        t += if rng.below(500) == 0 { 3.0 } else { 0.001 };
    }
    common::pcap(&frames)
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
