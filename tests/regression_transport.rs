//! One test per transport defect fixed (named after it), each on a small synthetic capture run
//! through the whole pipeline. Real captures of the same situations are in captures/ (made by
//! captures/make-transport-regressions.sh) and checked by tests/truth.rs.

mod common;

use common::{ACK, FIN, PSH, SYN, pcap, tcp};
use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, icmpv4, icmpv6};
use lbdiag::analyze::{CaptureAnalysis, Options, analyze_reader};
use lbdiag::capture::CaptureReader;
use std::io::Cursor;

fn analyze(frames: &[(f64, Vec<u8>)]) -> CaptureAnalysis {
    let bytes = pcap(frames);
    let reader =
        CaptureReader::from_read("t.pcap".into(), Box::new(Cursor::new(bytes))).expect("pcap");
    analyze_reader(reader, &Options::default())
}

fn kinds(a: &CaptureAnalysis) -> Vec<String> {
    a.findings.iter().map(|f| f.kind.to_string()).collect()
}

/// The IP packet inside an Ethernet frame made by `common::tcp`.
fn ip_of(frame: &[u8]) -> Vec<u8> {
    frame[14..].to_vec()
}

/// An ICMP destination unreachable from the server to the client, quoting `quoted`.
fn icmp4_unreachable(code: icmpv4::DestUnreachableHeader, quoted: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2; 6], [1; 6])
        .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(code))
        .write(&mut out, quoted)
        .unwrap();
    out
}

fn tcp6(from_client: bool, seq: u32, flags: u8) -> Vec<u8> {
    let (c, s) = (
        [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
    );
    let (a, b, sp, dp) = if from_client {
        (c, s, 40000, 443)
    } else {
        (s, c, 443, 40000)
    };
    let mut builder = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv6(a, b, 64)
        .tcp(sp, dp, seq, 65535);
    if flags & SYN != 0 {
        builder = builder.syn();
    }
    let mut out = Vec::new();
    builder.write(&mut out, b"").unwrap();
    out
}

#[test]
fn regression_icmp_unreachable_answers_syn() {
    use icmpv4::DestUnreachableHeader as D;
    for (code, number, name) in [
        (D::Port, 3, "port unreachable"),
        (D::HostProhibited, 10, "host administratively prohibited"),
        (D::Host, 1, "host unreachable"),
        (D::Network, 0, "net unreachable"),
        (
            D::FilterProhibited,
            13,
            "communication administratively prohibited",
        ),
    ] {
        let syn = tcp(true, 1000, 0, SYN, b"");
        let icmp = icmp4_unreachable(code, &ip_of(&syn));
        let a = analyze(&[(1.0, syn), (1.0005, icmp)]);
        assert_eq!(kinds(&a), vec!["handshake_refused"], "code {number}");
        let f = &a.findings[0];
        assert_eq!(f.packets, vec![1, 2]);
        assert_eq!(f.evidence["icmp_type"], 3);
        assert_eq!(f.evidence["icmp_code"], number);
        assert_eq!(f.evidence["icmp_frame"], 2);
        assert!(f.summary.contains(name), "{}", f.summary);
        assert!(f.summary.contains(&format!("type 3 code {number}")));
    }
}

#[test]
fn regression_icmpv6_unreachable_answers_syn() {
    let syn = tcp6(true, 7, SYN);
    let mut icmp = Vec::new();
    PacketBuilder::ethernet2([2; 6], [1; 6])
        .ipv6(
            [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            64,
        )
        .icmpv6(Icmpv6Type::DestinationUnreachable(
            icmpv6::DestUnreachableCode::Port,
        ))
        .write(&mut icmp, &syn[14..])
        .unwrap();
    let a = analyze(&[(1.0, syn), (1.001, icmp)]);
    assert_eq!(kinds(&a), vec!["handshake_refused"]);
    let f = &a.findings[0];
    assert_eq!(f.evidence["icmp_type"], 1);
    assert_eq!(f.evidence["icmp_code"], 4);
    assert!(f.summary.contains("ICMPv6 type 1 code 4"), "{}", f.summary);
}

#[test]
fn regression_icmp_unreachable_after_synack_is_not_a_refusal() {
    let syn = tcp(true, 1000, 0, SYN, b"");
    let data = tcp(true, 1001, 501, ACK | PSH, b"GET / HTTP/1.1\r\n\r\n");
    let icmp = icmp4_unreachable(icmpv4::DestUnreachableHeader::Port, &ip_of(&data));
    let a = analyze(&[
        (1.0, syn),
        (1.001, tcp(false, 500, 1001, SYN | ACK, b"")),
        (1.002, tcp(true, 1001, 501, ACK, b"")),
        (1.003, data),
        (1.004, icmp),
    ]);
    assert!(!kinds(&a).contains(&"handshake_refused".to_string()));
}

/// SYN, SYN-ACK, then a client that repeats its SYN anyway: the server answered the first one.
#[test]
fn regression_syn_retransmitted_only_when_synack_follows_retransmission() {
    let duplicated = vec![
        (1.0, tcp(true, 1000, 0, SYN, b"")),
        (1.001, tcp(false, 500, 1001, SYN | ACK, b"")),
        (1.002, tcp(true, 1000, 0, SYN, b"")),
        (1.003, tcp(false, 500, 1001, SYN | ACK, b"")),
        (1.004, tcp(true, 1001, 501, ACK, b"")),
        (1.005, tcp(true, 1001, 501, ACK | FIN, b"")),
        (1.006, tcp(false, 501, 1002, ACK | FIN, b"")),
    ];
    let a = analyze(&duplicated);
    assert!(
        !kinds(&a).contains(&"syn_retransmitted".to_string()),
        "{:?}",
        kinds(&a)
    );

    let delayed = vec![
        (1.0, tcp(true, 1000, 0, SYN, b"")),
        (2.0, tcp(true, 1000, 0, SYN, b"")),
        (2.001, tcp(false, 500, 1001, SYN | ACK, b"")),
        (2.002, tcp(true, 1001, 501, ACK, b"")),
        (2.005, tcp(true, 1001, 501, ACK | FIN, b"")),
        (2.006, tcp(false, 501, 1002, ACK | FIN, b"")),
    ];
    let a = analyze(&delayed);
    assert_eq!(kinds(&a), vec!["syn_retransmitted"]);
    assert_eq!(a.findings[0].evidence["syn_attempts"], 2);
}
