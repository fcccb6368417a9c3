use super::*;
use crate::capture::Timestamp;
use proptest::prelude::*;

fn seen(frame: u64) -> Seen {
    Seen {
        frame,
        ts: Timestamp(frame as i64 * 1_000_000),
    }
}

/// Feeds the client and server streams, each cut at the given split points, requests first.
fn run(request: &[u8], response: &[u8], splits: &[usize]) -> HttpConn {
    let mut h = HttpConn::new(80, true, HttpLimits::default());
    let mut frame = 1;
    for (role, bytes) in [(Role::Client, request), (Role::Server, response)] {
        let mut cuts: Vec<usize> = splits.iter().map(|s| s % (bytes.len() + 1)).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        cuts.dedup();
        for w in cuts.windows(2) {
            h.on_data(role, w[0] as u64, &bytes[w[0]..w[1]], seen(frame));
            frame += 1;
        }
    }
    h
}

fn kinds(h: &HttpConn) -> Vec<Kind> {
    let mut k: Vec<Kind> = h.anomalies.iter().map(|a| a.kind).collect();
    k.sort();
    k
}

fn summary(h: &HttpConn) -> Vec<(String, Option<u16>, u64, bool)> {
    h.transactions
        .iter()
        .map(|t| {
            (
                t.method.clone(),
                t.status,
                t.response_body,
                t.response_complete.is_some(),
            )
        })
        .collect()
}

const HEALTHY_REQ: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\nPOST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhelloGET /d HTTP/1.1\r\nHost: x\r\n\r\nGET /e HTTP/1.1\r\n\r\n";
const HEALTHY_RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n";

#[test]
fn test_healthy_keepalive_pipelined_head_continue_chunked_304() {
    let h = run(HEALTHY_REQ, HEALTHY_RESP, &[]);
    assert!(h.anomalies.is_empty(), "{:?}", h.anomalies);
    assert_eq!(
        summary(&h),
        vec![
            ("GET".into(), Some(200), 3, true),
            ("HEAD".into(), Some(200), 0, true),
            ("POST".into(), Some(204), 0, true),
            ("GET".into(), Some(200), 3, true),
            ("GET".into(), Some(304), 0, true),
        ]
    );
    assert_eq!(h.transactions[2].interim_responses, 1);
    assert_eq!(h.phase(), HttpPhase::Idle);
}

proptest! {
    #[test]
    fn prop_framing_same_however_split(splits in proptest::collection::vec(0usize..400, 0..12)) {
        let whole = run(HEALTHY_REQ, HEALTHY_RESP, &[]);
        let split = run(HEALTHY_REQ, HEALTHY_RESP, &splits);
        prop_assert_eq!(summary(&whole), summary(&split));
        prop_assert_eq!(kinds(&whole), kinds(&split));
    }

    #[test]
    fn prop_bad_responses_same_however_split(splits in proptest::collection::vec(0usize..200, 0..8), which in 0usize..5) {
        let bodies: [&[u8]; 5] = [
            b"HTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-Broken header\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabJUNKJUNK",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ];
        let req = b"GET / HTTP/1.1\r\n\r\n";
        let whole = run(req, bodies[which], &[]);
        let split = run(req, bodies[which], &splits);
        prop_assert_eq!(kinds(&whole), kinds(&split));
        prop_assert!(!kinds(&whole).is_empty());
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(req in proptest::collection::vec(any::<u8>(), 0..300), resp in proptest::collection::vec(any::<u8>(), 0..300), splits in proptest::collection::vec(0usize..300, 0..6)) {
        let mut r = b"GET / HTTP/1.1\r\n".to_vec();
        r.extend(req);
        let mut s = b"HTTP/1.1 200 OK\r\n".to_vec();
        s.extend(resp);
        let h = run(&r, &s, &splits);
        prop_assert!(h.anomalies.len() <= MAX_ANOMALIES);
    }
}

#[test]
fn test_each_malformed_kind() {
    let req = b"GET / HTTP/1.1\r\n\r\n";
    let cases: &[(&[u8], Kind)] = &[
        (b"HTP/1.1 200 OK\r\n\r\n", Kind::MalformedResponse),
        (
            b"HTTP/1.1 200 OK\r\nX-Broken header value\r\n\r\n",
            Kind::MalformedResponse,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789JUNK-NOT-A-RESPONSE",
            Kind::ResponseBodyOverrun,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 12\r\n\r\n",
            Kind::ConflictingContentLength,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            Kind::ContentLengthWithChunked,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            Kind::MalformedChunked,
        ),
    ];
    for (resp, kind) in cases {
        let h = run(req, resp, &[]);
        assert_eq!(kinds(&h), vec![*kind], "{}", String::from_utf8_lossy(resp));
    }
}

#[test]
fn test_request_side_kinds() {
    let long_uri = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(40_000));
    let h = run(long_uri.as_bytes(), b"", &[]);
    assert_eq!(kinds(&h), vec![Kind::UriTooLong]);
    let big_header = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(40_000));
    let h = run(big_header.as_bytes(), b"", &[]);
    assert_eq!(kinds(&h), vec![Kind::HeaderTooLarge]);
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(100_000));
    let h = run(huge.as_bytes(), b"", &[]);
    assert_eq!(kinds(&h), vec![Kind::HeaderTooLarge]);
    let h = run(b"TRACE / HTTP/1.1\r\n\r\n", b"", &[]);
    assert_eq!(kinds(&h), vec![Kind::TraceMethod]);
    let mut alb = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..17 {
        alb.extend(format!("ALICLOUD-ALB-TRACE: {i:016x}\r\n").bytes());
    }
    alb.extend(b"\r\n");
    let h = run(&alb, b"", &[]);
    assert_eq!(kinds(&h), vec![Kind::AlbTraceLoop]);
    let h = run(
        b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        &[],
    );
    assert_eq!(kinds(&h), vec![Kind::MalformedRequest]);
    assert_eq!(h.transactions[0].status, Some(400));
}

#[test]
fn test_http_on_tls_port() {
    let mut h = HttpConn::new(443, true, HttpLimits::default());
    h.on_data(Role::Client, 0, b"GET / HTTP/1.1\r\n\r\n", seen(1));
    assert_eq!(kinds(&h), vec![Kind::HttpOnTlsPort]);
}

#[test]
fn test_tls_client_is_not_http_and_gives_nothing() {
    let h = run(
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"\x16\x03\x03\x00\x5a\x02",
        &[],
    );
    assert!(!h.is_http);
    assert!(h.anomalies.is_empty() && h.transactions.is_empty());
}

#[test]
fn test_phases() {
    let h = run(b"GET / HTTP/1.1\r\nHost", b"", &[]);
    assert_eq!(h.phase(), HttpPhase::DuringRequest);
    let h = run(b"GET / HTTP/1.1\r\n\r\n", b"", &[]);
    assert_eq!(h.phase(), HttpPhase::AwaitingResponse);
    let h = run(
        b"GET / HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        &[],
    );
    assert_eq!(h.phase(), HttpPhase::DuringResponse);
    assert_eq!(h.response_in_progress(), Some((0, 3, Some(10))));
}

#[test]
fn test_gap_in_body_keeps_sync_gap_in_head_resyncs() {
    let mut h = HttpConn::new(80, true, HttpLimits::default());
    h.on_data(
        Role::Client,
        0,
        b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
        seen(1),
    );
    h.on_data(
        Role::Server,
        0,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab",
        seen(2),
    );
    h.on_gap(Role::Server, 5);
    h.on_data(
        Role::Server,
        0,
        b"cdeHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        seen(3),
    );
    assert!(h.anomalies.is_empty(), "{:?}", h.anomalies);
    assert_eq!(h.transactions[1].status, Some(200));
    assert!(h.transactions[0].gap);

    let mut h = HttpConn::new(80, true, HttpLimits::default());
    h.on_data(Role::Client, 0, b"GET / HTTP/1.1\r\n\r\n", seen(1));
    h.on_data(Role::Server, 0, b"HTTP/1.1 200 OK\r\nContent-", seen(2));
    h.on_gap(Role::Server, 30);
    h.on_data(
        Role::Server,
        0,
        b"garbage\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        seen(3),
    );
    assert!(
        h.anomalies.is_empty(),
        "no malformed finding after a gap: {:?}",
        h.anomalies
    );
    assert_eq!(h.resyncs, 1);
}

#[test]
fn test_mid_stream_start_resyncs_without_findings() {
    let mut h = HttpConn::new(80, false, HttpLimits::default());
    h.on_data(
        Role::Server,
        0,
        b"tail of a body\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        seen(1),
    );
    assert!(h.anomalies.is_empty());
    assert_eq!(h.transactions[0].status, Some(404));
}

#[test]
fn test_upgrade_ends_http() {
    let h = run(
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi",
        &[],
    );
    assert!(h.anomalies.is_empty(), "{:?}", h.anomalies);
    assert_eq!(h.transactions.len(), 1);
}

/// Found by the bit-flip robustness test: a response after a malformed one, with no request
/// left to pair it with, indexed past the transaction list.
#[test]
fn test_regression_response_after_malformed_response_without_request() {
    let h = run(
        b"GET / HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nBad Header\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &[],
    );
    assert!(
        h.anomalies
            .iter()
            .any(|a| a.kind == Kind::MalformedResponse)
    );
}

/// Found by rebuilding the nginx captures: nginx answers a 40 KB URI with 414 before the whole
/// request has arrived. The answer belongs to that request; it is not left unanswered.
#[test]
fn test_answer_before_the_request_head_finished_belongs_to_it() {
    let mut h = HttpConn::new(80, true, HttpLimits::default());
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(40_000));
    let (first, rest) = long.as_bytes().split_at(20_000);
    h.on_data(Role::Client, 0, first, seen(1));
    h.on_data(
        Role::Server,
        0,
        b"HTTP/1.1 414 Request-URI Too Large\r\nContent-Length: 0\r\n\r\n",
        seen(2),
    );
    h.on_data(Role::Client, 20_000, rest, seen(3));
    assert_eq!(h.transactions.len(), 1);
    assert_eq!(h.transactions[0].status, Some(414));
    assert_eq!(h.transactions[0].method, "GET");
    assert!(h.pending().is_empty());
    assert_eq!(kinds(&h), vec![Kind::UriTooLong]);
}
