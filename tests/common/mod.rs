//! Building small synthetic captures for tests of the reader, the CLI and robustness. Findings
//! about real traffic are tested on real captures (tests/truth.rs), not on these.
#![allow(dead_code)]

use etherparse::PacketBuilder;

pub mod busy;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

/// A legacy little-endian microsecond pcap with Ethernet frames.
pub fn pcap(frames: &[(f64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(0xa1b2c3d4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend([0u8; 8]);
    out.extend(262144u32.to_le_bytes());
    out.extend(1u32.to_le_bytes());
    for (ts, f) in frames {
        out.extend((*ts as u32).to_le_bytes());
        out.extend((((ts.fract()) * 1e6) as u32).to_le_bytes());
        out.extend((f.len() as u32).to_le_bytes());
        out.extend((f.len() as u32).to_le_bytes());
        out.extend(f);
    }
    out
}

/// One Ethernet/IPv4/TCP frame.
pub fn tcp(from_client: bool, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (a, b, sp, dp) = if from_client {
        ([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80)
    } else {
        ([10, 0, 0, 2], [10, 0, 0, 1], 80, 40000)
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

/// A complete keep-alive HTTP exchange starting at the given initial sequence numbers (pick
/// ones near 2^32 to exercise wraparound), then a server reset while a request waits.
pub fn http_conversation(client_isn: u32, server_isn: u32) -> Vec<(f64, Vec<u8>)> {
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    let req2 = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    let c = client_isn.wrapping_add(1);
    let s = server_isn.wrapping_add(1);
    let r1 = req.len() as u32;
    let s1 = resp.len() as u32;
    vec![
        (1.0, tcp(true, client_isn, 0, SYN, b"")),
        (1.001, tcp(false, server_isn, c, SYN | ACK, b"")),
        (1.002, tcp(true, c, s, ACK, b"")),
        (1.003, tcp(true, c, s, ACK | PSH, req)),
        (1.010, tcp(false, s, c.wrapping_add(r1), ACK | PSH, resp)),
        (
            1.011,
            tcp(
                true,
                c.wrapping_add(r1),
                s.wrapping_add(s1),
                ACK | PSH,
                req2,
            ),
        ),
        (1.300, tcp(false, s.wrapping_add(s1), 0, RST, b"")),
    ]
}

/// A refused connection from another client port.
pub fn refused() -> Vec<(f64, Vec<u8>)> {
    let syn = {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40001, 8081, 7, 65535)
            .syn()
            .write(&mut out, b"")
            .unwrap();
        out
    };
    let rst = {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2; 6], [1; 6])
            .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .tcp(8081, 40001, 0, 0)
            .rst()
            .ack(8)
            .write(&mut out, b"")
            .unwrap();
        out
    };
    vec![(2.0, syn), (2.001, rst)]
}

/// A small capture holding all of the above.
pub fn sample_capture() -> Vec<u8> {
    let mut frames = http_conversation(u32::MAX - 10, u32::MAX - 3);
    frames.extend(refused());
    pcap(&frames)
}

/// The same frames as a little-endian pcapng with one Ethernet interface.
pub fn pcapng(frames: &[(f64, Vec<u8>)]) -> Vec<u8> {
    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let padded = body.len().div_ceil(4) * 4;
        let len = (12 + padded) as u32;
        let mut b = Vec::new();
        b.extend(kind.to_le_bytes());
        b.extend(len.to_le_bytes());
        b.extend(body);
        b.resize(8 + padded, 0);
        b.extend(len.to_le_bytes());
        b
    }
    let mut out = Vec::new();
    let mut shb = Vec::new();
    shb.extend(0x1a2b3c4du32.to_le_bytes());
    shb.extend(1u16.to_le_bytes());
    shb.extend(0u16.to_le_bytes());
    shb.extend((-1i64).to_le_bytes());
    out.extend(block(0x0a0d0d0a, &shb));
    let mut idb = Vec::new();
    idb.extend(1u16.to_le_bytes());
    idb.extend(0u16.to_le_bytes());
    idb.extend(0u32.to_le_bytes());
    out.extend(block(1, &idb));
    for (ts, f) in frames {
        let micros = (ts * 1e6) as u64;
        let mut epb = Vec::new();
        epb.extend(0u32.to_le_bytes());
        epb.extend(((micros >> 32) as u32).to_le_bytes());
        epb.extend((micros as u32).to_le_bytes());
        epb.extend((f.len() as u32).to_le_bytes());
        epb.extend((f.len() as u32).to_le_bytes());
        epb.extend(f);
        out.extend(block(6, &epb));
    }
    out
}
