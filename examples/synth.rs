//! Writes synthetic stress captures for the memory and speed benchmarks (benches/memory.sh):
//!   cargo run --release --example synth -- syn-flood N OUT.pcap
//!   cargo run --release --example synth -- out-of-order N OUT.pcap
//!   cargo run --release --example synth -- in-order N OUT.pcap
//!   cargo run --release --example synth -- one-byte-reverse|one-byte-alternate|one-byte-random N OUT.pcap
//! A SYN flood is N half-open connections; out-of-order is one connection whose N segments
//! arrive in reverse order within each window of 64. The one-byte kinds are one connection of
//! N one-byte segments in orders that are hard on a reassembler (benches/reassembly.sh): all
//! reversed, every other byte and then the rest, or shuffled.

use std::io::{BufWriter, Write};

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

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (kind, n, out) = match args.as_slice() {
        [_, k, n, o] => (k.as_str(), n.parse::<u64>().expect("count"), o),
        _ => {
            eprintln!(
                "usage: synth syn-flood|out-of-order|in-order|one-byte-reverse|one-byte-alternate|one-byte-random N OUT.pcap"
            );
            std::process::exit(2);
        }
    };
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
        other => panic!("unknown kind {other}"),
    }
    w.flush()
}
