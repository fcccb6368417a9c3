//! criterion micro-benchmarks of the four stages a byte goes through, each on input built
//! here so a run needs no capture: the decoder (`decode::decode`), the assembler
//! (`flow::Reassembler`), the HTTP framer (`proto::http::framer::Framer`) and the TLS reader
//! (`proto::tls::TlsConn`). Throughput is in bytes of the stage's input, so the figures compare
//! with benches/run.sh's GB/s. docs/performance.md says how to run them.
//!   cargo bench --bench micro                 # all
//!   cargo bench --bench micro -- http_framer  # one group

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use lbdiag::capture::{Frame, LinkType, Timestamp};
use lbdiag::decode::{self, SeqNumber};
use lbdiag::flow::{Budget, Reassembler, Role, Seen, StreamEvent};
use lbdiag::proto::http::HttpLimits;
use lbdiag::proto::http::framer::{Framer, Message};
use lbdiag::proto::tls::TlsConn;
use std::hint::black_box;

const MSS: usize = 1448;

fn at(frame: u64) -> Seen {
    Seen {
        frame,
        ts: Timestamp::from_secs_f64(1_700_000_000.0 + frame as f64 * 1e-5),
    }
}

/// An Ethernet/IPv4/TCP frame carrying `payload`.
fn tcp_frame(payload: &[u8], seq: u32) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(80, 40000, seq, 65535)
        .ack(1)
        .psh();
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).expect("a frame in memory");
    out
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, payload) in [("full_segment", vec![b'x'; MSS]), ("bare_ack", vec![])] {
        let data = tcp_frame(&payload, 1);
        let frame = Frame {
            number: 1,
            ts: at(1).ts,
            link_type: LinkType::ETHERNET,
            data: &data,
            orig_len: data.len() as u32,
        };
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(name, |b| b.iter(|| decode::decode(black_box(&frame))));
    }
    group.finish();
}

/// A stream of `len` bytes cut into MSS segments: (sequence offset, bytes).
fn segments(len: usize) -> Vec<(u32, Vec<u8>)> {
    let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    body.chunks(MSS)
        .enumerate()
        .map(|(i, chunk)| ((i * MSS) as u32, chunk.to_vec()))
        .collect()
}

fn bench_assembler(c: &mut Criterion) {
    const STREAM: usize = 1 << 20;
    let in_order = segments(STREAM);
    // Every pair swapped: each even segment waits in the ring for the one before it.
    let mut swapped = in_order.clone();
    for pair in swapped.chunks_mut(2) {
        pair.reverse();
    }
    let mut group = c.benchmark_group("assembler");
    group.throughput(Throughput::Bytes(STREAM as u64));
    for (name, segs) in [("in_order", &in_order), ("pairs_swapped", &swapped)] {
        group.bench_function(BenchmarkId::new(name, "1MiB"), |b| {
            b.iter(|| {
                let mut budget = Budget::new(1 << 20, 256 << 20);
                let mut r = Reassembler::default();
                r.start_at(SeqNumber(1000));
                let mut delivered = 0u64;
                let mut sink = |ev: StreamEvent<'_>| {
                    if let StreamEvent::Data { bytes, .. } = ev {
                        delivered += bytes.len() as u64;
                    }
                };
                for (i, (off, bytes)) in segs.iter().enumerate() {
                    r.segment(
                        SeqNumber(1000u32.wrapping_add(*off)),
                        bytes,
                        bytes.len() as u32,
                        at(i as u64 + 1),
                        &mut budget,
                        &mut sink,
                    );
                }
                r.finish(&mut budget, &mut sink);
                assert_eq!(delivered, STREAM as u64);
            })
        });
    }
    group.finish();
}

/// Feeds a framer the client's and the server's bytes, alternating exchange by exchange and
/// cut into MSS pieces as the assembler would deliver them.
fn frame_http(exchanges: &[(Vec<u8>, Vec<u8>)]) -> usize {
    let mut framer = Framer::new(true, HttpLimits::default());
    let mut out: Vec<Message> = Vec::new();
    let (mut client_off, mut server_off, mut n, mut messages) = (0u64, 0u64, 0u64, 0usize);
    for (request, response) in exchanges {
        for (role, bytes, off) in [
            (Role::Client, request, &mut client_off),
            (Role::Server, response, &mut server_off),
        ] {
            for piece in bytes.chunks(MSS) {
                n += 1;
                framer.on_data(role, *off, piece, at(n), &mut out);
                *off += piece.len() as u64;
                messages += out.len();
                out.clear();
            }
        }
    }
    messages
}

fn bench_http_framer(c: &mut Criterion) {
    let api: Vec<(Vec<u8>, Vec<u8>)> = (0..1000)
        .map(|i| {
            let body = format!("{{\"id\":{i},\"ok\":true}}");
            (
                format!(
                    "GET /api/v1/items/{i}?fields=name HTTP/1.1\r\nHost: api.example.com\r\n\
                     User-Agent: bench/1.0\r\nAccept: application/json\r\n\r\n"
                )
                .into_bytes(),
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            )
        })
        .collect();
    let mut download = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                         Content-Length: 1048576\r\n\r\n"
        .to_vec();
    download.resize(download.len() + (1 << 20), b'z');
    let bulk = vec![(
        b"GET /file.bin HTTP/1.1\r\nHost: files.example.com\r\n\r\n".to_vec(),
        download,
    )];

    // Every exchange is framed: a request and a response message each, at least.
    assert!(frame_http(&api) >= 2 * api.len());
    let mut group = c.benchmark_group("http_framer");
    for (name, exchanges) in [("keepalive_1000_exchanges", &api), ("download_1MiB", &bulk)] {
        let bytes: usize = exchanges.iter().map(|(q, a)| q.len() + a.len()).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(name, |b| b.iter(|| frame_http(black_box(exchanges))));
    }
    group.finish();
}

fn record(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![kind, 3, 3];
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    m.extend_from_slice(body);
    m
}

/// A TLS 1.2 ClientHello with an SNI, as a record.
fn client_hello(sni: &str) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 4, 0xc0, 0x2f, 0x00, 0x9c]); // cipher suites
    body.extend_from_slice(&[1, 0]); // compression: null
    let name = sni.as_bytes();
    let mut ext = vec![0, 0]; // server_name
    ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    ext.push(0); // host_name
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    record(22, &handshake(1, &body))
}

/// ServerHello, Certificate (one certificate, `der`) and ServerHelloDone in one record.
fn server_flight(der: &[u8]) -> Vec<u8> {
    let mut hello = vec![3, 3];
    hello.extend_from_slice(&[9; 32]);
    hello.push(0);
    hello.extend_from_slice(&[0xc0, 0x2f, 0]);
    let mut chain = Vec::new();
    chain.extend_from_slice(&(der.len() as u32).to_be_bytes()[1..]);
    chain.extend_from_slice(der);
    let mut certs = (chain.len() as u32).to_be_bytes()[1..].to_vec();
    certs.extend_from_slice(&chain);
    let mut flight = handshake(2, &hello);
    flight.extend_from_slice(&handshake(11, &certs));
    flight.extend_from_slice(&handshake(14, &[]));
    record(22, &flight)
}

fn read_tls(client: &[Vec<u8>], server: &[Vec<u8>]) -> TlsConn {
    let mut tls = TlsConn::default();
    let mut n = 0;
    for (role, pieces) in [(Role::Client, client), (Role::Server, server)] {
        for piece in pieces {
            n += 1;
            tls.on_data(role, piece, at(n));
        }
    }
    tls
}

fn bench_tls_reader(c: &mut Criterion) {
    let der = include_bytes!("../src/proto/tls/testdata/v1-cn-only.der");
    let hello = client_hello("www.example.com");
    let flight = server_flight(der);
    // The server's flight as the assembler delivers it: in MSS pieces, so the Certificate
    // message is put together across them.
    let flight_pieces: Vec<Vec<u8>> = flight.chunks(MSS).map(<[u8]>::to_vec).collect();
    let mut group = c.benchmark_group("tls_reader");
    group.throughput(Throughput::Bytes((hello.len() + flight.len()) as u64));
    let hello_only = vec![hello.clone()];
    // What is measured is a handshake read to its end, not an early refusal.
    let read = read_tls(&hello_only, &flight_pieces);
    assert!(read.client_hello.is_some() && read.server_hello.is_some());
    assert_eq!(read.certificates.len(), 1);
    group.bench_function("handshake", |b| {
        b.iter(|| read_tls(black_box(&hello_only), black_box(&flight_pieces)))
    });

    // After the handshake: 1 MiB of application-data records, which the reader steps over.
    let mut ccs = record(20, &[1]);
    ccs.extend_from_slice(&record(22, &[0x55; 40])); // encrypted Finished
    let mut server = flight_pieces.clone();
    server.push(ccs.clone());
    let data = record(23, &[0xaa; 16 * 1024]);
    let app: Vec<u8> = data.repeat(64);
    let app_bytes = app.len();
    server.extend(app.chunks(MSS).map(<[u8]>::to_vec));
    let client = vec![hello, ccs];
    group.throughput(Throughput::Bytes(app_bytes as u64));
    assert_eq!(read_tls(&client, &server).server_app_records, 64);
    group.bench_function("application_data_1MiB", |b| {
        b.iter(|| read_tls(black_box(&client), black_box(&server)))
    });
    group.finish();
}

criterion_group!(
    micro,
    bench_decode,
    bench_assembler,
    bench_http_framer,
    bench_tls_reader
);
criterion_main!(micro);
