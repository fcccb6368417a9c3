//! The reader of `lbdiag --threads N` alone: read and decode every frame and deal it into rounds
//! for N workers, exactly as a threaded run does, with nobody analyzing them (the queues are
//! emptied and their buffers handed back). benches/run.sh times it next to lbdiag, and its rate
//! over one worker's says at how many workers the reader becomes the limit.
//!   cargo build --release --bench reader_only
//!   target/release/deps/reader_only-* [--workers N] FILE.pcap

use lbdiag::analyze::deal_only;
use lbdiag::capture::CaptureReader;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut workers = 2;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--workers" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => workers = n,
                None => {
                    eprintln!("reader_only: --workers needs a number");
                    return ExitCode::from(2);
                }
            },
            // `cargo bench` passes `--bench`; only file names count.
            _ if a.starts_with("--") => {}
            _ => files.push(a),
        }
    }
    if files.is_empty() {
        eprintln!("usage: reader_only [--workers N] FILE...");
        return ExitCode::from(2);
    }
    for f in &files {
        match CaptureReader::open(Path::new(f)) {
            Ok(mut reader) => {
                let d = deal_only(&mut reader, workers);
                println!(
                    "{f}: {} packets, {} dealt to {workers} workers, {} bytes",
                    d.frames, d.dealt, d.bytes
                );
            }
            Err(e) => {
                eprintln!("reader_only: {f}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
