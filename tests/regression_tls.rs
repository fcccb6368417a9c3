//! One test per TLS defect fixed that needs the whole pipeline (TCP and TLS together), on small
//! synthetic captures. Real captures of the same situations are in captures/ (made by
//! captures/make-transport-regressions.sh) and checked by tests/truth.rs.

mod common;

use common::{ACK, FIN, PSH, SYN, pcap, tcp};
use lbdiag::analyze::{CaptureAnalysis, Options, analyze_reader};
use lbdiag::capture::CaptureReader;
use std::io::Cursor;

fn analyze(frames: &[(f64, Vec<u8>)]) -> CaptureAnalysis {
    let reader = CaptureReader::from_read("t.pcap".into(), Box::new(Cursor::new(pcap(frames))))
        .expect("pcap");
    analyze_reader(reader, &Options::default())
}

fn kinds(a: &CaptureAnalysis) -> Vec<String> {
    a.findings.iter().map(|f| f.kind.to_string()).collect()
}

fn record(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![kind, 3, 3];
    r.extend((body.len() as u16).to_be_bytes());
    r.extend(body);
    r
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend(&(body.len() as u32).to_be_bytes()[1..]);
    m.extend(body);
    m
}

fn client_hello() -> Vec<u8> {
    let name = b"backend.test";
    let mut sni = ((name.len() + 3) as u16).to_be_bytes().to_vec();
    sni.push(0);
    sni.extend((name.len() as u16).to_be_bytes());
    sni.extend(name);
    let mut exts = vec![0, 0];
    exts.extend((sni.len() as u16).to_be_bytes());
    exts.extend(sni);
    let mut b = vec![3, 3];
    b.extend([7u8; 32]);
    b.push(0);
    b.extend([0, 2, 0xc0, 0x2b, 1, 0]);
    b.extend((exts.len() as u16).to_be_bytes());
    b.extend(exts);
    record(22, &message(1, &b))
}

fn server_flight() -> Vec<u8> {
    let mut sh = vec![3, 3];
    sh.extend([9u8; 32]);
    sh.extend([0, 0xc0, 0x2b, 0, 0, 0]);
    let mut flight = message(2, &sh);
    flight.extend(message(12, &[0; 300]));
    flight.extend(message(14, &[]));
    record(22, &flight)
}

/// A TLS 1.2 exchange whose ClientHello rides on the SYN (TCP Fast Open), with application
/// data both ways and a normal FIN close. `drop_server_segment` leaves the second segment of
/// the server's flight out of the capture.
fn fast_open_exchange(drop_server_segment: bool) -> Vec<(f64, Vec<u8>)> {
    let hello = client_hello();
    let flight = server_flight();
    let (part1, part2) = flight.split_at(100);
    let mut client_fin = record(22, &message(16, &[0; 65]));
    client_fin.extend(record(20, &[1]));
    client_fin.extend(record(22, &[0; 40]));
    let mut server_fin = record(20, &[1]);
    server_fin.extend(record(22, &[0; 40]));
    let request = record(23, &[0x55; 120]);
    let response = record(23, &[0x66; 900]);

    let c0 = 5000u32;
    let s0 = 9000u32;
    let mut c = c0 + 1 + hello.len() as u32;
    let mut s = s0 + 1;
    let mut frames = vec![
        (1.0, tcp(true, c0, 0, SYN, &hello)),
        (1.001, tcp(false, s0, c, SYN | ACK, b"")),
        (1.002, tcp(true, c, s0 + 1, ACK, b"")),
        (1.003, tcp(false, s, c, ACK | PSH, part1)),
    ];
    s += part1.len() as u32;
    if !drop_server_segment {
        frames.push((1.004, tcp(false, s, c, ACK | PSH, part2)));
    }
    s += part2.len() as u32;
    frames.push((1.010, tcp(true, c, s, ACK | PSH, &client_fin)));
    c += client_fin.len() as u32;
    frames.push((1.011, tcp(false, s, c, ACK | PSH, &server_fin)));
    s += server_fin.len() as u32;
    frames.push((1.012, tcp(true, c, s, ACK | PSH, &request)));
    c += request.len() as u32;
    frames.push((1.020, tcp(false, s, c, ACK | PSH, &response)));
    s += response.len() as u32;
    frames.push((1.030, tcp(true, c, s, ACK | FIN, b"")));
    frames.push((1.031, tcp(false, s, c + 1, ACK | FIN, b"")));
    frames.push((1.032, tcp(true, c + 1, s + 1, ACK, b"")));
    frames
}

#[test]
fn regression_completed_tls_handshake_with_fast_open_is_no_failure() {
    for drop in [false, true] {
        let a = analyze(&fast_open_exchange(drop));
        assert!(
            !kinds(&a).contains(&"tls_handshake_failure".to_string()),
            "drop={drop}: {:?}",
            a.findings.iter().map(|f| &f.summary).collect::<Vec<_>>()
        );
    }
}

#[test]
fn test_fast_open_client_hello_on_the_syn_is_read() {
    let a = analyze(&fast_open_exchange(false));
    // The ClientHello carried SNI: no tls_no_sni; the ServerHello (whose record ends in frame
    // 5) was read, and this flight carries no certificate.
    assert!(
        !kinds(&a).contains(&"tls_no_sni".to_string()),
        "{:?}",
        kinds(&a)
    );
    let f = a
        .findings
        .iter()
        .find(|f| f.kind.to_string() == "tls_cert_unverifiable")
        .expect("no certificate in this flight");
    assert_eq!(f.packets, vec![5]);
}

#[test]
fn test_handshake_cut_short_by_fin_is_still_a_failure() {
    let hello = client_hello();
    let c = 5001 + hello.len() as u32;
    let frames = vec![
        (1.0, tcp(true, 5000, 0, SYN, b"")),
        (1.001, tcp(false, 9000, 5001, SYN | ACK, b"")),
        (1.002, tcp(true, 5001, 9001, ACK, b"")),
        (1.003, tcp(true, 5001, 9001, ACK | PSH, &hello)),
        (1.004, tcp(false, 9001, c, ACK | FIN, b"")),
        (1.005, tcp(true, c, 9002, ACK | FIN, b"")),
    ];
    let a = analyze(&frames);
    assert!(kinds(&a).contains(&"tls_handshake_failure".to_string()));
}
