//! The floor under lbdiag's speed: read every record with pcap-parser (the same reader and
//! buffer size lbdiag uses) and slice each packet with etherparse, counting packets, bytes and
//! TCP segments, and nothing else. benches/run.sh times it next to lbdiag on the same files.
//!   cargo build --release --bench parse_only
//!   target/release/deps/parse_only-* FILE.pcap

use etherparse::{LaxSlicedPacket, TransportSlice};
use pcap_parser::{Block, PcapBlockOwned, PcapError};
use std::process::ExitCode;

#[derive(Default)]
struct Counts {
    packets: u64,
    bytes: u64,
    tcp: u64,
    tcp_payload: u64,
}

impl Counts {
    fn packet(&mut self, data: &[u8]) {
        self.packets += 1;
        self.bytes += data.len() as u64;
        if let Ok(p) = LaxSlicedPacket::from_ethernet(data)
            && let Some(TransportSlice::Tcp(tcp)) = &p.transport
        {
            self.tcp += 1;
            self.tcp_payload += tcp.payload().len() as u64;
        }
    }
}

fn count(path: &str) -> Result<Counts, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut reader = pcap_parser::create_reader(256 * 1024, file)
        .map_err(|e| format!("{path}: not a capture ({e:?})"))?;
    let mut counts = Counts::default();
    loop {
        match reader.next() {
            Ok((len, block)) => {
                match block {
                    PcapBlockOwned::Legacy(b) => counts.packet(b.data),
                    PcapBlockOwned::NG(Block::EnhancedPacket(b)) => counts.packet(b.data),
                    _ => {}
                }
                reader.consume(len);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                reader.refill().map_err(|e| format!("{path}: {e:?}"))?;
            }
            Err(e) => return Err(format!("{path}: {e:?}")),
        }
    }
    Ok(counts)
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; only file names count.
    let files: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if files.is_empty() {
        eprintln!("usage: parse_only FILE...");
        return ExitCode::from(2);
    }
    for f in &files {
        match count(f) {
            Ok(c) => println!(
                "{f}: {} packets, {} bytes, {} TCP segments, {} TCP payload bytes",
                c.packets, c.bytes, c.tcp, c.tcp_payload
            ),
            Err(e) => {
                eprintln!("parse_only: {e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
