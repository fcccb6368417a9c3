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

fn warnings(a: &CaptureAnalysis) -> Vec<String> {
    a.summary
        .warnings
        .iter()
        .map(|w| w.message.clone())
        .collect()
}

fn errors(a: &CaptureAnalysis) -> Vec<String> {
    a.findings
        .iter()
        .filter(|f| f.severity == lbdiag::Severity::Error)
        .map(|f| format!("{}: {}", f.kind, f.summary))
        .collect()
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

const GET: &[u8] = b"GET /orders HTTP/1.1\r\nHost: backend\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

fn one_sided_warning(a: &CaptureAnalysis) -> bool {
    warnings(a)
        .iter()
        .any(|w| w.contains("show only one direction"))
}

#[test]
fn regression_one_sided_capture_is_not_syn_unanswered() {
    // Only the client's direction: SYN, then ACK and a request, then FIN.
    let c = 1001u32;
    let client_only = vec![
        (1.0, tcp(true, 1000, 0, SYN, b"")),
        (1.01, tcp(true, c, 501, ACK, b"")),
        (1.02, tcp(true, c, 501, ACK | PSH, GET)),
        (1.05, tcp(true, c + GET.len() as u32, 540, ACK, b"")),
        (1.06, tcp(true, c + GET.len() as u32, 540, ACK | FIN, b"")),
    ];
    let a = analyze(&client_only);
    assert!(!kinds(&a).contains(&"syn_unanswered".to_string()));
    assert!(errors(&a).is_empty(), "{:?}", errors(&a));
    assert!(one_sided_warning(&a), "{:?}", warnings(&a));

    // Only the server's direction.
    let server_only = vec![
        (1.0, tcp(false, 500, 1001, SYN | ACK, b"")),
        (
            1.03,
            tcp(false, 501, 1001 + GET.len() as u32, ACK | PSH, OK),
        ),
        (
            1.04,
            tcp(false, 501 + OK.len() as u32, 1040, ACK | FIN, b""),
        ),
    ];
    let a = analyze(&server_only);
    assert!(errors(&a).is_empty(), "{:?}", errors(&a));
    assert!(one_sided_warning(&a), "{:?}", warnings(&a));
}

#[test]
fn regression_missing_synack_with_answered_exchange_is_not_syn_unanswered() {
    let c = 1001u32;
    let g = GET.len() as u32;
    let frames = vec![
        (1.0, tcp(true, 1000, 0, SYN, b"")),
        // The SYN-ACK is not in the capture.
        (1.01, tcp(true, c, 501, ACK, b"")),
        (1.02, tcp(true, c, 501, ACK | PSH, GET)),
        (1.03, tcp(false, 501, c + g, ACK | PSH, OK)),
        (
            1.04,
            tcp(true, c + g, 501 + OK.len() as u32, ACK | FIN, b""),
        ),
        (
            1.05,
            tcp(false, 501 + OK.len() as u32, c + g + 1, ACK | FIN, b""),
        ),
        (1.06, tcp(true, c + g + 1, 502 + OK.len() as u32, ACK, b"")),
    ];
    let a = analyze(&frames);
    assert!(!kinds(&a).contains(&"syn_unanswered".to_string()));
    assert!(errors(&a).is_empty(), "{:?}", errors(&a));
}

#[test]
fn regression_unanswered_syn_still_reported() {
    let a = analyze(&[
        (1.0, tcp(true, 1000, 0, SYN, b"")),
        (2.0, tcp(true, 1000, 0, SYN, b"")),
        (4.0, tcp(true, 1000, 0, SYN, b"")),
        (9.0, tcp(true, 1000, 0, SYN, b"")),
        (9.5, common::refused()[0].1.clone()),
    ]);
    assert!(kinds(&a).contains(&"syn_unanswered".to_string()));
    assert!(!one_sided_warning(&a));
}

#[test]
fn regression_one_sided_capture_gives_no_false_findings() {
    let c = 1001u32;
    let g = GET.len() as u32;
    // The client's side: it asks twice, waits, closes and resets; the answers are not here.
    let client_only = vec![
        (1.0, tcp(true, 1000, 0, SYN, b"")),
        (1.01, tcp(true, c, 501, ACK, b"")),
        (1.02, tcp(true, c, 501, ACK | PSH, GET)),
        (1.05, tcp(true, c + g, 540, ACK, b"")),
        (9.06, tcp(true, c + g, 540, ACK | PSH, GET)),
        (20.06, tcp(true, c + 2 * g, 580, ACK | FIN, b"")),
        (20.07, tcp(true, c + 2 * g + 1, 0, common::RST, b"")),
    ];
    let a = analyze(&client_only);
    assert!(a.findings.is_empty(), "{:?}", kinds(&a));
    assert!(one_sided_warning(&a));
    // The server's side: it answers, sends more, and resets.
    let server_only = vec![
        (1.0, tcp(false, 500, 1001, SYN | ACK, b"")),
        (1.03, tcp(false, 501, 1001 + g, ACK | PSH, OK)),
        (
            5.0,
            tcp(false, 501 + OK.len() as u32, 1001 + g, ACK | PSH, &OK[..20]),
        ),
        (
            5.04,
            tcp(false, 521 + OK.len() as u32, 1040, common::RST, b""),
        ),
    ];
    let a = analyze(&server_only);
    assert!(a.findings.is_empty(), "{:?}", kinds(&a));
    assert!(one_sided_warning(&a));
}

/// Captured on the server: its first SYN-ACK is lost on the way to the client, which repeats
/// its SYN a second later; the ACK answers the last SYN-ACK at once.
#[test]
fn regression_repeated_syn_after_synack_is_not_high_rtt() {
    let a = analyze(&[
        (1.0, tcp(true, 1000, 0, SYN, b"")),
        (1.00004, tcp(false, 500, 1001, SYN | ACK, b"")),
        (2.02, tcp(false, 500, 1001, SYN | ACK, b"")),
        (2.0201, tcp(true, 1000, 0, SYN, b"")),
        (2.0202, tcp(false, 500, 1001, SYN | ACK, b"")),
        (2.0203, tcp(true, 1001, 501, ACK, b"")),
        (2.03, tcp(true, 1001, 501, ACK | FIN, b"")),
        (2.031, tcp(false, 501, 1002, ACK | FIN, b"")),
    ]);
    assert!(a.findings.is_empty(), "{:?}", kinds(&a));
}
