//! Writes synthetic captures for the speed and memory benchmarks (benches/run.sh,
//! benches/memory.sh, benches/reassembly.sh, benches/throughput.sh):
//!   cargo run --release --example synth -- keepalive-api N_CONN REQS_PER_CONN OUT.pcap
//!   cargo run --release --example synth -- mixed SIZE_MB OUT.pcap
//!   cargo run --release --example synth -- syn-flood N OUT.pcap
//!   cargo run --release --example synth -- out-of-order N OUT.pcap
//!   cargo run --release --example synth -- in-order N OUT.pcap
//!   cargo run --release --example synth -- one-byte-reverse|one-byte-alternate|one-byte-random N OUT.pcap
//!
//! `keepalive-api` is N_CONN keep-alive connections, 100 open at a time and interleaved packet
//! by packet, each carrying REQS_PER_CONN small API transactions (100 B-1 KB requests, 100 B-4 KB
//! responses, some chunked, about 0.3% answered 5xx and 0.15% 4xx) and then closed with FINs.
//! `mixed` is SIZE_MB MiB of plain HTTP downloads (10 KB-5 MB, one to three per connection) and
//! TLS 1.2 connections (a real handshake from captures/tls12-healthy.pcap, then application data
//! records of the same sizes), a few hundred open at a time, with about one server segment in
//! 1,500 lost before the capture point and recovered by fast retransmission. Both are seen from the
//! client's side: every frame carries valid checksums and correct sequence and acknowledgment
//! numbers, and every connection opens with a handshake and ends with FINs. Runs are reproducible:
//! the random numbers come from fixed seeds. Next to OUT they write OUT.meta, `key=value` lines
//! with what was generated (connections, HTTP transactions, statuses, retransmissions), so a
//! benchmark can count transactions without asking the analyzer.
//!
//! A SYN flood is N half-open connections; out-of-order is one connection whose N segments
//! arrive in reverse order within each window of 64. The one-byte kinds are one connection of
//! N one-byte segments in orders that are hard on a reassembler (benches/reassembly.sh): all
//! reversed, every other byte and then the rest, or shuffled.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, BufWriter, Write};
use std::sync::OnceLock;

fn frame(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload.len());
    f.extend([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let total = (20 + 20 + payload.len()) as u16;
    let mut ip = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ];
    ip.extend(src);
    ip.extend(dst);
    f.extend(ip);
    f.extend(sport.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend(seq.to_be_bytes());
    f.extend(0u32.to_be_bytes());
    f.extend([0x50, flags]);
    f.extend(65535u16.to_be_bytes());
    f.extend([0, 0, 0, 0]);
    f.extend(payload);
    f
}

fn write_record(w: &mut impl Write, ts_us: u64, f: &[u8]) -> std::io::Result<()> {
    w.write_all(&((ts_us / 1_000_000) as u32).to_le_bytes())?;
    w.write_all(&((ts_us % 1_000_000) as u32).to_le_bytes())?;
    w.write_all(&(f.len() as u32).to_le_bytes())?;
    w.write_all(&(f.len() as u32).to_le_bytes())?;
    w.write_all(f)
}

/// 0..n in a fixed pseudo-random order (Fisher-Yates over xorshift), the same on every run.
fn shuffled(n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Realistic traffic: keepalive-api and mixed.

/// 2026-11-25T03:00:00Z: inside the validity of the certificate in the embedded TLS handshake
/// (2026-11-15 to 2027-11-25), so the analyzer sees a healthy certificate.
const REAL_START_US: u64 = 1_795_575_600 * 1_000_000;
/// Payload of a full-size segment: Ethernet MTU 1500 without TCP options on data segments.
const MSS: usize = 1460;
/// SYN options: MSS 1460, NOP, window scale 7.
const SYN_OPTIONS: [u8; 8] = [2, 4, 0x05, 0xb4, 1, 3, 3, 7];
const TCP_SYN: u8 = 0x02;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

// The TLS 1.2 handshake of captures/tls12-healthy.pcap (frames 4, 6, 8, 9, 18 and 17: SNI
// backend.test, ECDHE-ECDSA-AES256-GCM, a certificate that covers the name), taken with
// `tshark -T fields -e tcp.payload`. Every synthetic TLS connection replays it.
const CLIENT_HELLO: &str = concat!(
    "16030100da010000d60303f79f83e01428d1c740b79295c639329458bd0e540943caf5ef55e2f89a05ff87000038c02c",
    "c030009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c",
    "0035002f00ff0100007500000011000f00000c6261636b656e642e74657374000b000403000102000a000c000a001d00",
    "17001e001900180010000e000c02683208687474702f312e310016000000170000000d002a0028040305030603080708",
    "080809080a080b080408050806040105010601030303010302040205020602",
);
const SERVER_FLIGHT: &str = concat!(
    "160303005d020000590303c7422ebb25d2c0859bf3d90313533492639689d3b71fedf19f136a39ed3f85e22030ec5bd5",
    "86fad166c591c023ee03b77c6400c1e7062b7e06ff58050883bf4ce7c02c000011ff01000100000b0004030001020017",
    "000016030301590b00015500015200014f3082014b3081f3a003020102021411329f252a29b6b7dced789137761d629d",
    "c852c6300a06082a8648ce3d04030230193117301506035504030c0e6c62646961672074657374204341301e170d3236",
    "313131353032333234385a170d3237313132353032333234385a30173115301306035504030c0c6261636b656e642e74",
    "6573743059301306072a8648ce3d020106082a8648ce3d03010703420004f6b25c4b21626faf3b6bdeab142014d5513c",
    "0e523ea514deb1e841f72b9c870795ab51eb91883f2a578ba25dd429c87c7aca25caffc1cfa4fb4e5d5dd0cae757a31b",
    "301930170603551d110410300e820c6261636b656e642e74657374300a06082a8648ce3d040302034700304402206abd",
    "549cd8a8149bc514d0db5886ebc5d9fcb2171cc0340e40c2ae2805805ba3022044363c2499ba59e33e1a37225aa00072",
    "8168f039dd2265393d10000f180b360816030300720c00006e03001d2047dade92e811ae09a278450ce8c9e93716c289",
    "23e7692d3ca83ea43c7ab3cd1c0403004630440220021065cc6cc46b6da34406c4d4e1784cd13302418587438b068ec8",
    "4607538cd70220266201a5718bae07a6dac5ffee53a2876eb4fb4f122fba9dab502e4c1583df7e16030300040e000000",
);
const CLIENT_FINISH: &str = concat!(
    "160303002510000021205442b28b4c9a3efe24aa22deaa559b9c9ea1cb0c68a9b60340d0ec63ff300714140303000101",
    "1603030028107668a7b392c2636a9555510042aa82fe77f63ac0398e8cb194708c3b697ccf74ac67b957757dde",
);
const SERVER_FINISH: &str = concat!(
    "1403030001011603030028e50696ebcd86d30bee1727a9f738c651003c06e09bdad92f17bd20cb50082b75637400356d",
    "df35b7",
);
const CLIENT_CLOSE_NOTIFY: &str = "150303001a107668a7b392c2657330a62ee6b5674e90392054a31c2938e597";
const SERVER_CLOSE_NOTIFY: &str = "150303001ae50696ebcd86d30defaacd8c0f9ba04e128beaeed6f70e79ccc0";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex constant"))
        .collect()
}

/// splitmix64: small, fast, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// lo..=hi, uniform.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// lo..=hi with a log-uniform spread: sizes and times in real traffic are skewed small.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let v = lo as f64 * (hi as f64 / lo as f64).powf(self.unit());
        (v.round() as u64).clamp(lo, hi)
    }

    fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// 64 KiB of random bytes (binary bodies, TLS ciphertext) and of JSON-like text (API bodies);
/// payloads are cut from them cyclically, so a 5 MB body costs no memory.
fn filler(text: bool) -> &'static [u8] {
    static BIN: OnceLock<Vec<u8>> = OnceLock::new();
    static TEXT: OnceLock<Vec<u8>> = OnceLock::new();
    if text {
        TEXT.get_or_init(|| {
            let mut rng = Rng(7);
            let mut t = Vec::with_capacity(70_000);
            while t.len() < 65_536 {
                let id = rng.below(1_000_000);
                let status = *rng.pick(&["active", "pending", "closed", "archived"]);
                t.extend(
                    format!(
                        "{{\"id\":{id},\"name\":\"item-{id}\",\"status\":\"{status}\",\"price\":{}.{:02}}},",
                        rng.below(1000),
                        rng.below(100)
                    )
                    .bytes(),
                );
            }
            t.truncate(65_536);
            t
        })
    } else {
        BIN.get_or_init(|| {
            let mut rng = Rng(11);
            (0..65_536).map(|_| rng.next() as u8).collect()
        })
    }
}

fn extend_cyclic(out: &mut Vec<u8>, source: &[u8], mut pos: u64, mut n: usize) {
    while n > 0 {
        let at = (pos % source.len() as u64) as usize;
        let take = n.min(source.len() - at);
        out.extend_from_slice(&source[at..at + take]);
        pos += take as u64;
        n -= take;
    }
}

/// TLS 1.2 AES-GCM application data: 5 header bytes, 8 of explicit nonce, the plaintext, 16 of tag.
const TLS_MAX_PLAIN: u64 = 16_384;
const TLS_FULL_RECORD: u64 = 5 + 8 + TLS_MAX_PLAIN + 16;

/// What one side sends in one message, generated on demand from its offset.
enum Payload {
    Bytes(Vec<u8>),
    /// An HTTP head and a Content-Length body cut from a filler.
    Http {
        head: Vec<u8>,
        body: u64,
        text: bool,
    },
    /// `plain` bytes of application data in full-size records.
    Tls {
        plain: u64,
    },
}

impl Payload {
    fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) => b.len() as u64,
            Payload::Http { head, body, .. } => head.len() as u64 + body,
            Payload::Tls { plain } => {
                let records = plain.div_ceil(TLS_MAX_PLAIN).max(1);
                plain + records * (TLS_FULL_RECORD - TLS_MAX_PLAIN)
            }
        }
    }

    fn fill(&self, mut off: u64, n: usize, out: &mut Vec<u8>) {
        let end = off + n as u64;
        match self {
            Payload::Bytes(b) => out.extend_from_slice(&b[off as usize..end as usize]),
            Payload::Http { head, text, .. } => {
                let h = head.len() as u64;
                if off < h {
                    let take = end.min(h);
                    out.extend_from_slice(&head[off as usize..take as usize]);
                    off = take;
                }
                if off < end {
                    extend_cyclic(out, filler(*text), off - h, (end - off) as usize);
                }
            }
            Payload::Tls { plain } => {
                let records = plain.div_ceil(TLS_MAX_PLAIN).max(1);
                let last_plain = plain - (records - 1) * TLS_MAX_PLAIN;
                while off < end {
                    let record = off / TLS_FULL_RECORD;
                    let within = off % TLS_FULL_RECORD;
                    let body = if record == records - 1 {
                        last_plain + 24
                    } else {
                        TLS_MAX_PLAIN + 24
                    };
                    if within < 5 {
                        let header = [0x17, 3, 3, (body >> 8) as u8, body as u8];
                        let take = (5 - within).min(end - off);
                        out.extend_from_slice(&header[within as usize..(within + take) as usize]);
                        off += take;
                    } else {
                        let take = (5 + body - within).min(end - off);
                        extend_cyclic(out, filler(false), off, take as usize);
                        off += take;
                    }
                }
            }
        }
    }
}

/// One request and its response on a connection.
struct Exchange {
    request: Vec<u8>,
    response: Payload,
    /// Server time between the request and the first response byte, on top of the RTT.
    service_us: u64,
    /// Client time between receiving the whole response and its next request (or FIN).
    think_us: u64,
}

/// What a connection carries, decided when it opens.
enum Plan {
    Api { left: u32 },
    Download { sizes: Vec<u64> },
    Tls { step: u32, sizes: Vec<u64> },
}

#[derive(Default)]
struct Stats {
    connections: u64,
    tls_connections: u64,
    http_transactions: u64,
    tls_exchanges: u64,
    status_4xx: u64,
    status_5xx: u64,
    chunked: u64,
    retransmissions: u64,
}

fn status_reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Gateway Timeout",
    }
}

/// A small API transaction: a GET or a POST with a JSON body, answered with JSON.
fn api_exchange(rng: &mut Rng, stats: &mut Stats) -> Exchange {
    let target = rng.log_uniform(100, 1024) as usize;
    let resource = *rng.pick(&["users", "orders", "items", "carts", "sessions", "prices"]);
    let id = rng.below(10_000_000);
    let post = rng.chance(300_000);
    let mut head = if post {
        format!("POST /api/v1/{resource} HTTP/1.1\r\n")
    } else {
        format!("GET /api/v1/{resource}/{id}?fields=id,name,status HTTP/1.1\r\n")
    };
    head.push_str(
        "Host: api.backend.test\r\nUser-Agent: synth-client/1.0\r\nAccept: application/json\r\n",
    );
    head.push_str(&format!("X-Request-Id: {:016x}\r\n", rng.next()));
    if rng.chance(500_000) {
        head.push_str(&format!(
            "Authorization: Bearer {:016x}{:016x}\r\n",
            rng.next(),
            rng.next()
        ));
    }
    let request = if post {
        // The body fills the request to its target size.
        let body = target.saturating_sub(head.len() + 56).max(2);
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {body}\r\n\r\n"
        ));
        let mut r = head.into_bytes();
        let start = rng.below(60_000);
        extend_cyclic(&mut r, filler(true), start, body);
        r
    } else {
        let pad = target.saturating_sub(head.len() + 2);
        if pad > 20 {
            head.push_str("X-Client-Context: ");
            head.push_str(&"c".repeat(pad - 20));
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    };

    let status: u16 = if rng.chance(3_000) {
        stats.status_5xx += 1;
        *rng.pick(&[500, 502, 503, 504])
    } else if rng.chance(1_500) {
        stats.status_4xx += 1;
        *rng.pick(&[400, 404, 429])
    } else {
        200
    };
    let size = rng.log_uniform(100, 4096);
    let chunked = rng.chance(100_000);
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nDate: Wed, 25 Nov 2026 03:00:00 GMT\r\nServer: synth-backend\r\nContent-Type: application/json\r\n",
        status_reason(status)
    );
    let body = size.saturating_sub(head.len() as u64 + 48).max(16);
    let start = rng.below(60_000);
    let response = if chunked {
        stats.chunked += 1;
        head.push_str("Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n");
        let mut r = head.into_bytes();
        let chunks = rng.range(1, 3);
        let mut left = body;
        for k in 0..chunks {
            let n = if k == chunks - 1 {
                left
            } else {
                (left / 2).max(1)
            };
            if n == 0 {
                break;
            }
            r.extend(format!("{n:x}\r\n").bytes());
            extend_cyclic(&mut r, filler(true), start + body - left, n as usize);
            r.extend(b"\r\n");
            left -= n;
        }
        r.extend(b"0\r\n\r\n");
        Payload::Bytes(r)
    } else {
        head.push_str(&format!(
            "Content-Length: {body}\r\nConnection: keep-alive\r\n\r\n"
        ));
        let mut r = head.into_bytes();
        extend_cyclic(&mut r, filler(true), start, body as usize);
        Payload::Bytes(r)
    };
    stats.http_transactions += 1;
    Exchange {
        request,
        response,
        service_us: rng.log_uniform(300, 15_000),
        think_us: rng.log_uniform(100, 20_000),
    }
}

fn download_exchange(rng: &mut Rng, stats: &mut Stats, size: u64) -> Exchange {
    let file = rng.below(1_000_000);
    let request = format!(
        "GET /files/{file:06}.bin HTTP/1.1\r\nHost: downloads.backend.test\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
    )
    .into_bytes();
    let head = format!(
        "HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: Wed, 25 Nov 2026 03:00:00 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\nLast-Modified: Mon, 02 Nov 2026 10:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"{:x}-{size:x}\"\r\nAccept-Ranges: bytes\r\n\r\n",
        rng.next() as u32
    )
    .into_bytes();
    stats.http_transactions += 1;
    Exchange {
        request,
        response: Payload::Http {
            head,
            body: size,
            text: false,
        },
        service_us: rng.log_uniform(1_000, 30_000),
        think_us: rng.log_uniform(5_000, 100_000),
    }
}

impl Plan {
    fn next(&mut self, rng: &mut Rng, stats: &mut Stats) -> Option<Exchange> {
        match self {
            Plan::Api { left } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                Some(api_exchange(rng, stats))
            }
            Plan::Download { sizes } => {
                let size = sizes.pop()?;
                Some(download_exchange(rng, stats, size))
            }
            Plan::Tls { step, sizes } => {
                *step += 1;
                let ex = match *step {
                    1 => Exchange {
                        request: unhex(CLIENT_HELLO),
                        response: Payload::Bytes(unhex(SERVER_FLIGHT)),
                        service_us: rng.log_uniform(200, 1_000),
                        think_us: rng.log_uniform(200, 1_500),
                    },
                    2 => Exchange {
                        request: unhex(CLIENT_FINISH),
                        response: Payload::Bytes(unhex(SERVER_FINISH)),
                        service_us: rng.log_uniform(100, 600),
                        think_us: rng.log_uniform(50, 500),
                    },
                    _ => match sizes.pop() {
                        Some(plain) => {
                            // An encrypted request: one record of 105 bytes.
                            let mut request = vec![0x17, 3, 3, 0, 105];
                            extend_cyclic(&mut request, filler(false), rng.below(60_000), 105);
                            stats.tls_exchanges += 1;
                            Exchange {
                                request,
                                response: Payload::Tls { plain },
                                service_us: rng.log_uniform(1_000, 30_000),
                                think_us: rng.log_uniform(5_000, 100_000),
                            }
                        }
                        None if *step < 1_000_000 => {
                            *step = 1_000_000;
                            Exchange {
                                request: unhex(CLIENT_CLOSE_NOTIFY),
                                response: Payload::Bytes(unhex(SERVER_CLOSE_NOTIFY)),
                                service_us: rng.log_uniform(50, 300),
                                think_us: rng.log_uniform(50, 300),
                            }
                        }
                        None => return None,
                    },
                };
                Some(ex)
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Side {
    mac: [u8; 6],
    ip: [u8; 4],
    port: u16,
    ip_id: u16,
    /// The raw window field after the handshake (scaled by 2^7).
    window: u16,
}

/// One TCP connection, seen from the client's side of the path: the client's segments are
/// captured as it sends them, the server's as they arrive, so the client's acknowledgment is
/// always everything captured from the server so far except a segment lost on the way.
struct Conn {
    client: Side,
    server: Side,
    /// Next sequence number each side sends.
    c_nxt: u32,
    s_nxt: u32,
    /// The client's cumulative acknowledgment.
    rcv_nxt: u32,
    rtt_us: u64,
    /// Time between the server's segments (its sending rate).
    pace_us: u64,
    loss_per_million: u64,
    plan: Plan,
    response: Payload,
    response_off: u64,
    response_seq: u32,
    think_us: u64,
    /// The acknowledgment the client last sent: an ACK that would repeat it with nothing new
    /// to say is not sent, so that every duplicate ACK in the capture means a loss.
    sent_ack: u32,
    /// Segments received in order since the client last acknowledged.
    unacked: u32,
    /// A lost server segment (offset in the response, length) and what arrived beyond it.
    hole: Option<(u64, usize)>,
    beyond_hole: u32,
    dupacks: u32,
    retransmit_due: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Act {
    Syn,
    SynAck,
    HandshakeAck,
    Exchange,
    ResponseSegment,
    ClientAck,
    Retransmit,
    ServerFin,
    LastAck,
}

/// Events by time; the counter keeps events at the same microsecond in the order they were made.
#[derive(Default)]
struct Schedule {
    heap: BinaryHeap<Reverse<(u64, u64, usize, Act)>>,
    made: u64,
}

impl Schedule {
    fn at(&mut self, t: u64, conn: usize, act: Act) {
        self.made += 1;
        self.heap.push(Reverse((t, self.made, conn, act)));
    }
}

struct Pcap<W: Write> {
    w: W,
    buf: Vec<u8>,
    frames: u64,
    bytes: u64,
    last_ts: u64,
}

impl<W: Write> Pcap<W> {
    fn new(mut w: W) -> io::Result<Self> {
        w.write_all(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0])?;
        w.write_all(&262144u32.to_le_bytes())?;
        w.write_all(&1u32.to_le_bytes())?;
        Ok(Pcap {
            w,
            buf: Vec::with_capacity(2048),
            frames: 0,
            bytes: 24,
            last_ts: 0,
        })
    }

    /// Writes one Ethernet/IPv4/TCP frame with valid checksums; `fill` appends the payload.
    #[allow(clippy::too_many_arguments)]
    fn tcp(
        &mut self,
        ts: u64,
        src: &mut Side,
        dst: &Side,
        seq: u32,
        ack: u32,
        flags: u8,
        options: &[u8],
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<()> {
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(&dst.mac);
        b.extend_from_slice(&src.mac);
        b.extend_from_slice(&[0x08, 0x00]);
        src.ip_id = src.ip_id.wrapping_add(1);
        b.extend_from_slice(&[0x45, 0, 0, 0]);
        b.extend_from_slice(&src.ip_id.to_be_bytes());
        b.extend_from_slice(&[0x40, 0, 64, 6, 0, 0]);
        b.extend_from_slice(&src.ip);
        b.extend_from_slice(&dst.ip);
        b.extend_from_slice(&src.port.to_be_bytes());
        b.extend_from_slice(&dst.port.to_be_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&(if flags & TCP_ACK != 0 { ack } else { 0 }).to_be_bytes());
        let window = if flags & TCP_SYN != 0 {
            64_240
        } else {
            src.window
        };
        b.extend_from_slice(&[(((20 + options.len()) / 4) << 4) as u8, flags]);
        b.extend_from_slice(&window.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(options);
        fill(b);
        let ip_len = (b.len() - 14) as u16;
        b[16..18].copy_from_slice(&ip_len.to_be_bytes());
        let ip_sum = checksum(&b[14..34], 0);
        b[24..26].copy_from_slice(&ip_sum.to_be_bytes());
        let tcp_len = (b.len() - 34) as u64;
        let pseudo = ones_sum(&b[26..34], 6 + tcp_len);
        let tcp_sum = checksum(&b[34..], pseudo);
        b[50..52].copy_from_slice(&tcp_sum.to_be_bytes());

        let ts = ts.max(self.last_ts);
        self.last_ts = ts;
        write_record(&mut self.w, ts, &self.buf)?;
        self.frames += 1;
        self.bytes += 16 + self.buf.len() as u64;
        Ok(())
    }
}

/// The one's-complement sum of 16-bit big-endian words, added four bytes at a time (65536 is 1
/// modulo 65535, so folding the 32-bit sums gives the same result).
fn ones_sum(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as u64;
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u16::from_be_bytes([p[0], p[1]]) as u64;
    }
    if let [last] = pairs.remainder() {
        acc += (*last as u64) << 8;
    }
    acc
}

fn checksum(data: &[u8], acc: u64) -> u16 {
    let mut s = ones_sum(data, acc);
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Where new connections come from.
enum Source {
    /// keepalive-api: a fixed number of connections, each with a fixed number of transactions.
    Api { conns: u64, made: u64, reqs: u32 },
    /// mixed: connections until the bytes they will carry reach the target.
    Mixed {
        target: u64,
        planned: u64,
        made: u64,
    },
}

struct Sim<W: Write> {
    pcap: Pcap<W>,
    schedule: Schedule,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    rng: Rng,
    stats: Stats,
    source: Source,
    /// Next client port per client address.
    ports: Vec<u16>,
}

impl<W: Write> Sim<W> {
    fn make(&mut self) -> Option<Conn> {
        let rng = &mut self.rng;
        let (plan, server_ip, server_port, rtt_us, pace_us, loss) = match &mut self.source {
            Source::Api { conns, made, reqs } => {
                if *made == *conns {
                    return None;
                }
                *made += 1;
                let server = [10, 2, 0, 1 + rng.below(4) as u8];
                // Inside a data centre: sub-millisecond to 2 ms round trips, 10 Gbit/s links.
                (
                    Plan::Api { left: *reqs },
                    server,
                    8080,
                    rng.log_uniform(200, 2_000),
                    rng.range(2, 12),
                    0,
                )
            }
            Source::Mixed {
                target,
                planned,
                made,
            } => {
                if *planned >= *target {
                    return None;
                }
                *made += 1;
                let server = [10, 3, 0, 1 + rng.below(8) as u8];
                let rtt = rng.log_uniform(1_000, 80_000);
                // 5-100 Mbit/s per connection, and never more in flight than the 256 KiB window.
                let mbps = rng.log_uniform(5, 100);
                let pace = (MSS as u64 * 8 / mbps)
                    .max(rtt * MSS as u64 / 200_000)
                    .max(1);
                let count = *rng.pick(&[1, 1, 1, 2, 3]);
                let sizes: Vec<u64> = (0..count)
                    .map(|_| rng.log_uniform(10_000, 5_000_000))
                    .collect();
                // Headers, ACKs and record framing add about 8% to the payload.
                *planned += sizes.iter().sum::<u64>() * 108 / 100;
                if rng.chance(450_000) {
                    self.stats.tls_connections += 1;
                    (Plan::Tls { step: 0, sizes }, server, 443, rtt, pace, 660)
                } else {
                    (Plan::Download { sizes }, server, 80, rtt, pace, 660)
                }
            }
        };
        self.stats.connections += 1;
        let clients = self.ports.len() as u64;
        let c = rng.below(clients) as usize;
        let port = self.ports[c];
        self.ports[c] = if port >= 60_999 { 32_768 } else { port + 1 };
        let client_ip = [10, 1, (c / 250) as u8, (c % 250 + 1) as u8];
        let client = Side {
            mac: [0x02, 0, 0, 0, 0, 0x01],
            ip: client_ip,
            port,
            ip_id: rng.next() as u16,
            window: 2048,
        };
        let server = Side {
            mac: [0x02, 0, 0, 0, 0, 0x02],
            ip: server_ip,
            port: server_port,
            ip_id: rng.next() as u16,
            window: 502,
        };
        Some(Conn {
            client,
            server,
            c_nxt: rng.next() as u32,
            s_nxt: rng.next() as u32,
            rcv_nxt: 0,
            rtt_us,
            pace_us,
            loss_per_million: loss,
            plan,
            response: Payload::Bytes(Vec::new()),
            response_off: 0,
            response_seq: 0,
            think_us: 0,
            sent_ack: 0,
            unacked: 0,
            hole: None,
            beyond_hole: 0,
            dupacks: 0,
            retransmit_due: false,
        })
    }

    fn open(&mut self, t: u64) {
        if let Some(conn) = self.make() {
            let id = match self.free.pop() {
                Some(id) => {
                    self.conns[id] = Some(conn);
                    id
                }
                None => {
                    self.conns.push(Some(conn));
                    self.conns.len() - 1
                }
            };
            self.schedule.at(t, id, Act::Syn);
        }
    }

    fn run(&mut self, concurrency: u64, stagger_us: u64) -> io::Result<()> {
        for k in 0..concurrency {
            self.open(REAL_START_US + k * stagger_us);
        }
        while let Some(Reverse((t, _, id, act))) = self.schedule.heap.pop() {
            if self.step(t, id, act)? {
                self.conns[id] = None;
                self.free.push(id);
                let gap = self.rng.range(10, 2_000);
                self.open(t + gap);
            }
        }
        self.pcap.w.flush()
    }

    /// Carries out one event; true when the connection has ended.
    fn step(&mut self, t: u64, id: usize, act: Act) -> io::Result<bool> {
        let Some(c) = self.conns[id].as_mut() else {
            return Ok(false);
        };
        let p = &mut self.pcap;
        let s = &mut self.schedule;
        let rng = &mut self.rng;
        // The client's own reaction time to what it just received.
        let delta = rng.range(5, 40);
        match act {
            Act::Syn => {
                p.tcp(
                    t,
                    &mut c.client,
                    &c.server,
                    c.c_nxt,
                    0,
                    TCP_SYN,
                    &SYN_OPTIONS,
                    |_| {},
                )?;
                c.c_nxt = c.c_nxt.wrapping_add(1);
                s.at(t + c.rtt_us, id, Act::SynAck);
            }
            Act::SynAck => {
                let flags = TCP_SYN | TCP_ACK;
                p.tcp(
                    t,
                    &mut c.server,
                    &c.client,
                    c.s_nxt,
                    c.c_nxt,
                    flags,
                    &SYN_OPTIONS,
                    |_| {},
                )?;
                c.s_nxt = c.s_nxt.wrapping_add(1);
                c.rcv_nxt = c.s_nxt;
                s.at(t + delta, id, Act::HandshakeAck);
            }
            Act::HandshakeAck => {
                p.tcp(
                    t,
                    &mut c.client,
                    &c.server,
                    c.c_nxt,
                    c.rcv_nxt,
                    TCP_ACK,
                    &[],
                    |_| {},
                )?;
                c.sent_ack = c.rcv_nxt;
                s.at(t + rng.range(20, 300), id, Act::Exchange);
            }
            Act::Exchange => match c.plan.next(rng, &mut self.stats) {
                None => {
                    let flags = TCP_FIN | TCP_ACK;
                    p.tcp(
                        t,
                        &mut c.client,
                        &c.server,
                        c.c_nxt,
                        c.rcv_nxt,
                        flags,
                        &[],
                        |_| {},
                    )?;
                    c.c_nxt = c.c_nxt.wrapping_add(1);
                    s.at(t + c.rtt_us, id, Act::ServerFin);
                }
                Some(ex) => {
                    let req = &ex.request;
                    for (k, part) in req.chunks(MSS).enumerate() {
                        let last = (k + 1) * MSS >= req.len();
                        let flags = if last { TCP_PSH | TCP_ACK } else { TCP_ACK };
                        let seq = c.c_nxt;
                        p.tcp(
                            t,
                            &mut c.client,
                            &c.server,
                            seq,
                            c.rcv_nxt,
                            flags,
                            &[],
                            |b| b.extend_from_slice(part),
                        )?;
                        c.c_nxt = c.c_nxt.wrapping_add(part.len() as u32);
                    }
                    c.sent_ack = c.rcv_nxt;
                    c.response = ex.response;
                    c.response_off = 0;
                    c.response_seq = c.s_nxt;
                    c.think_us = ex.think_us;
                    c.unacked = 0;
                    s.at(t + c.rtt_us + ex.service_us, id, Act::ResponseSegment);
                }
            },
            Act::ResponseSegment => {
                let total = c.response.len();
                let off = c.response_off;
                let len = (total - off).min(MSS as u64) as usize;
                let last = off + len as u64 == total;
                let seq = c.response_seq.wrapping_add(off as u32);
                c.response_off += len as u64;
                c.s_nxt = c.s_nxt.wrapping_add(len as u32);
                let lost =
                    c.hole.is_none() && c.loss_per_million > 0 && rng.chance(c.loss_per_million);
                if lost {
                    c.hole = Some((off, len));
                    c.beyond_hole = seq.wrapping_add(len as u32);
                } else {
                    let flags = if last { TCP_PSH | TCP_ACK } else { TCP_ACK };
                    let response = &c.response;
                    p.tcp(t, &mut c.server, &c.client, seq, c.c_nxt, flags, &[], |b| {
                        response.fill(off, len, b)
                    })?;
                    if c.hole.is_some() {
                        // Out of order behind the hole: the client repeats its ACK at once.
                        c.beyond_hole = seq.wrapping_add(len as u32);
                        c.dupacks += 1;
                        s.at(t + delta, id, Act::ClientAck);
                        if c.dupacks == 3 && !c.retransmit_due {
                            // Fast retransmit: the third duplicate reaches the server half a
                            // round trip later, and its answer comes back after the other half.
                            c.retransmit_due = true;
                            s.at(t + delta + c.rtt_us, id, Act::Retransmit);
                        }
                    } else {
                        c.rcv_nxt = seq.wrapping_add(len as u32);
                        c.unacked += 1;
                        if c.unacked >= 2 || last {
                            c.unacked = 0;
                            s.at(t + delta, id, Act::ClientAck);
                        }
                    }
                }
                if !last {
                    s.at(t + c.pace_us, id, Act::ResponseSegment);
                } else if c.hole.is_none() {
                    s.at(t + delta + c.think_us, id, Act::Exchange);
                } else if !c.retransmit_due {
                    // Too few segments followed the loss for a fast retransmit: the server's
                    // tail loss probe fires after about two round trips.
                    c.retransmit_due = true;
                    s.at(t + 2 * c.rtt_us + 10_000, id, Act::Retransmit);
                }
            }
            Act::ClientAck => {
                if c.hole.is_some() || c.rcv_nxt != c.sent_ack {
                    p.tcp(
                        t,
                        &mut c.client,
                        &c.server,
                        c.c_nxt,
                        c.rcv_nxt,
                        TCP_ACK,
                        &[],
                        |_| {},
                    )?;
                    c.sent_ack = c.rcv_nxt;
                }
            }
            Act::Retransmit => {
                if let Some((off, len)) = c.hole.take() {
                    let seq = c.response_seq.wrapping_add(off as u32);
                    let response = &c.response;
                    p.tcp(
                        t,
                        &mut c.server,
                        &c.client,
                        seq,
                        c.c_nxt,
                        TCP_ACK,
                        &[],
                        |b| response.fill(off, len, b),
                    )?;
                    self.stats.retransmissions += 1;
                    c.rcv_nxt = c.beyond_hole;
                    c.dupacks = 0;
                    c.unacked = 0;
                    c.retransmit_due = false;
                    s.at(t + delta, id, Act::ClientAck);
                    if c.response_off == c.response.len() {
                        s.at(t + delta + c.think_us, id, Act::Exchange);
                    }
                }
            }
            Act::ServerFin => {
                let flags = TCP_FIN | TCP_ACK;
                p.tcp(
                    t,
                    &mut c.server,
                    &c.client,
                    c.s_nxt,
                    c.c_nxt,
                    flags,
                    &[],
                    |_| {},
                )?;
                c.s_nxt = c.s_nxt.wrapping_add(1);
                c.rcv_nxt = c.s_nxt;
                s.at(t + delta, id, Act::LastAck);
            }
            Act::LastAck => {
                p.tcp(
                    t,
                    &mut c.client,
                    &c.server,
                    c.c_nxt,
                    c.rcv_nxt,
                    TCP_ACK,
                    &[],
                    |_| {},
                )?;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Runs the simulation into `w` and returns the `key=value` lines of what it made.
fn generate<W: Write>(source: Source, seed: u64, clients: usize, w: W) -> io::Result<String> {
    let (concurrency, stagger_us) = match &source {
        Source::Api { conns, .. } => ((*conns).min(100), 500),
        // A few hundred open at a time on the large files; fewer on small ones so that
        // connections still come and go over the capture.
        Source::Mixed { target, .. } => ((target >> 22).clamp(16, 300), 20_000),
    };
    let mut sim = Sim {
        pcap: Pcap::new(w)?,
        schedule: Schedule::default(),
        conns: Vec::new(),
        free: Vec::new(),
        rng: Rng(seed),
        stats: Stats::default(),
        source,
        ports: vec![32_768; clients],
    };
    sim.run(concurrency, stagger_us)?;
    let st = &sim.stats;
    let last_s = sim.pcap.last_ts.saturating_sub(REAL_START_US) as f64 / 1e6;
    Ok(format!(
        "frames={}\nbytes={}\nconnections={}\ntls_connections={}\ntransactions={}\ntls_exchanges={}\nstatus_4xx={}\nstatus_5xx={}\nchunked={}\nretransmissions={}\nconcurrency={concurrency}\nseconds={last_s:.3}\n",
        sim.pcap.frames,
        sim.pcap.bytes,
        st.connections,
        st.tls_connections,
        st.http_transactions,
        st.tls_exchanges,
        st.status_4xx,
        st.status_5xx,
        st.chunked,
        st.retransmissions,
    ))
}

fn simulate(source: Source, seed: u64, clients: usize, out: &str) -> io::Result<()> {
    let file = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let meta = generate(source, seed, clients, file)?;
    std::fs::write(format!("{out}.meta"), &meta)?;
    eprint!("{out}:\n{meta}");
    Ok(())
}

fn usage() -> ! {
    eprintln!(
        "usage: synth keepalive-api N_CONN REQS_PER_CONN OUT.pcap\n       synth mixed SIZE_MB OUT.pcap\n       synth syn-flood|out-of-order|in-order|one-byte-reverse|one-byte-alternate|one-byte-random N OUT.pcap"
    );
    std::process::exit(2);
}

fn number(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| usage())
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.as_slice() {
        [_, k, conns, reqs, out] if k == "keepalive-api" => {
            let (conns, reqs) = (number(conns), number(reqs));
            let reqs = u32::try_from(reqs).unwrap_or_else(|_| usage());
            let source = Source::Api {
                conns,
                made: 0,
                reqs,
            };
            // Balancer nodes as clients: few addresses, many ports each.
            simulate(source, 0x6b61_0000 ^ (conns << 20) ^ reqs as u64, 16, out)
        }
        [_, k, size_mb, out] if k == "mixed" => {
            let mb = number(size_mb);
            let source = Source::Mixed {
                target: mb << 20,
                planned: 0,
                made: 0,
            };
            simulate(source, 0x6d69_0000 ^ mb, 1000, out)
        }
        [_, k, n, out] => legacy(k, number(n), out),
        _ => usage(),
    }
}

/// The stress kinds: one pattern each, no timing model.
fn legacy(kind: &str, n: u64, out: &str) -> std::io::Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(out)?);
    w.write_all(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0])?;
    w.write_all(&262144u32.to_le_bytes())?;
    w.write_all(&1u32.to_le_bytes())?;
    let start = 1_700_000_000_000_000u64;
    match kind {
        "syn-flood" => {
            for i in 0..n {
                let src = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
                let f = frame(
                    src,
                    [10, 255, 0, 1],
                    1024 + (i % 60000) as u16,
                    80,
                    i as u32,
                    0x02,
                    b"",
                );
                write_record(&mut w, start + i, &f)?;
            }
        }
        "in-order" => {
            // One long download: full-size segments from the server, an ACK every second one.
            let payload = [b'y'; 1448];
            let syn = frame([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, 0, 0x02, b"");
            write_record(&mut w, start, &syn)?;
            let mut seq = 1u32;
            for i in 0..n {
                // Only data frames advance the sequence: the ACK frames carry none of it.
                let f = if i % 3 == 2 {
                    frame([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, 1, 0x10, b"")
                } else {
                    seq = seq.wrapping_add(1448);
                    let s = seq.wrapping_sub(1448);
                    frame([10, 0, 0, 2], [10, 0, 0, 1], 80, 40000, s, 0x18, &payload)
                };
                write_record(&mut w, start + 1 + i, &f)?;
            }
        }
        "out-of-order" => {
            let payload = [b'x'; 100];
            let syn = frame([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, 0, 0x02, b"");
            write_record(&mut w, start, &syn)?;
            for window in 0..n.div_ceil(64) {
                for k in (0..64u64).rev() {
                    let i = window * 64 + k;
                    if i >= n {
                        continue;
                    }
                    let seq = 1u32.wrapping_add((i * 100) as u32);
                    let f = frame([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, seq, 0x18, &payload);
                    write_record(&mut w, start + 1 + window * 64 + (63 - k), &f)?;
                }
            }
        }
        "one-byte-reverse" | "one-byte-alternate" | "one-byte-random" => {
            let order: Vec<u64> = match kind {
                "one-byte-reverse" => (0..n).rev().collect(),
                "one-byte-alternate" => (1..n).step_by(2).chain((0..n).step_by(2)).collect(),
                _ => shuffled(n),
            };
            let syn = frame([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, 0, 0x02, b"");
            write_record(&mut w, start, &syn)?;
            for (k, i) in order.into_iter().enumerate() {
                let seq = 1u32.wrapping_add(i as u32);
                let byte = [b'a' + (i % 26) as u8];
                let f = frame([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, seq, 0x18, &byte);
                write_record(&mut w, start + 1 + k as u64, &f)?;
            }
        }
        _ => usage(),
    }
    w.flush()
}

#[cfg(test)]
mod test {
    use super::*;
    use std::collections::HashMap;

    struct Seg {
        key: ([u8; 4], u16, [u8; 4], u16),
        seq: u32,
        ack: u32,
        flags: u8,
        payload: Vec<u8>,
    }

    /// Splits a generated capture into TCP segments, checking both checksums of each.
    fn segments(pcap: &[u8]) -> Vec<Seg> {
        let mut out = Vec::new();
        let mut at = 24;
        while at < pcap.len() {
            let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
            let f = &pcap[at + 16..at + 16 + len];
            at += 16 + len;
            assert_eq!(checksum(&f[14..34], 0), 0, "IPv4 header checksum");
            let tcp_len = (f.len() - 34) as u64;
            assert_eq!(
                checksum(&f[34..], ones_sum(&f[26..34], 6 + tcp_len)),
                0,
                "TCP checksum"
            );
            let doff = (f[46] >> 4) as usize * 4;
            out.push(Seg {
                key: (
                    f[26..30].try_into().unwrap(),
                    u16::from_be_bytes([f[34], f[35]]),
                    f[30..34].try_into().unwrap(),
                    u16::from_be_bytes([f[36], f[37]]),
                ),
                seq: u32::from_be_bytes(f[38..42].try_into().unwrap()),
                ack: u32::from_be_bytes(f[42..46].try_into().unwrap()),
                flags: f[47],
                payload: f[34 + doff..].to_vec(),
            });
        }
        out
    }

    /// Per direction: every segment starts where the previous new one ended (or repeats an
    /// earlier range: a retransmission), and no ACK covers bytes the other side has not sent.
    fn check_sequence(segs: &[Seg]) {
        let mut next: HashMap<_, u32> = HashMap::new();
        for s in segs {
            let len = s.payload.len() as u32 + u32::from(s.flags & (TCP_SYN | TCP_FIN) != 0);
            if s.flags & TCP_SYN != 0 {
                next.insert(s.key, s.seq.wrapping_add(1));
            } else {
                let n = next[&s.key];
                let ahead = s.seq.wrapping_sub(n);
                assert!(ahead == 0 || ahead > 1 << 31 || len > 0, "seq jumps ahead");
                if ahead == 0 || ahead > 1 << 31 {
                    let end = s.seq.wrapping_add(len);
                    if end.wrapping_sub(n) < 1 << 31 {
                        next.insert(s.key, end);
                    }
                } else {
                    // A loss before the capture point: the gap is filled by a retransmission.
                    next.insert(s.key, s.seq.wrapping_add(len));
                }
            }
            let back = (s.key.2, s.key.3, s.key.0, s.key.1);
            if s.flags & TCP_ACK != 0 {
                let sent = next[&back];
                assert!(
                    sent.wrapping_sub(s.ack) < 1 << 31,
                    "ACK beyond the other side's bytes"
                );
            }
        }
    }

    #[test]
    fn test_keepalive_api_sequence_and_counts() {
        let mut pcap = Vec::new();
        let source = Source::Api {
            conns: 30,
            made: 0,
            reqs: 20,
        };
        let meta = generate(source, 1, 4, &mut pcap).unwrap();
        assert!(meta.contains("transactions=600\n"), "{meta}");
        let segs = segments(&pcap);
        check_sequence(&segs);
        let syns = segs.iter().filter(|s| s.flags == TCP_SYN).count();
        let fins = segs.iter().filter(|s| s.flags & TCP_FIN != 0).count();
        let requests = segs
            .iter()
            .filter(|s| s.payload.starts_with(b"GET ") || s.payload.starts_with(b"POST "))
            .count();
        assert_eq!((syns, fins, requests), (30, 60, 600));
    }

    #[test]
    fn test_mixed_loss_is_retransmitted() {
        let mut pcap = Vec::new();
        let source = Source::Mixed {
            target: 8 << 20,
            planned: 0,
            made: 0,
        };
        let meta = generate(source, 2, 50, &mut pcap).unwrap();
        let segs = segments(&pcap);
        check_sequence(&segs);
        assert!(
            segs.iter()
                .any(|s| s.payload.starts_with(&unhex(CLIENT_HELLO)[..16]))
        );
        assert!(!meta.contains("retransmissions=0\n"), "{meta}");
    }

    #[test]
    fn test_tls_payload_records_chain() {
        for plain in [1, 16_384, 16_385, 100_000] {
            let p = Payload::Tls { plain };
            let mut b = Vec::new();
            // Cut at odd places, as segments do.
            let mut off = 0;
            while off < p.len() {
                let n = (p.len() - off).min(1000) as usize;
                p.fill(off, n, &mut b);
                off += n as u64;
            }
            let (mut at, mut sum) = (0, 0);
            while at < b.len() {
                assert_eq!(&b[at..at + 3], &[0x17, 3, 3]);
                let len = u16::from_be_bytes([b[at + 3], b[at + 4]]) as usize;
                sum += len - 24;
                at += 5 + len;
            }
            assert_eq!((at, sum as u64), (b.len(), plain));
        }
    }
}
