//! A busy synthetic capture: 3,000 connections interleaved packet by packet, some healthy, some
//! answered 502, reset, refused, unanswered or left idle to expire, with 4-tuples reused.
#![allow(dead_code)]

use super::{ACK, FIN, PSH, RST, SYN};
use etherparse::PacketBuilder;

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
pub fn busy_capture() -> Vec<u8> {
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
    super::pcap(&frames)
}
