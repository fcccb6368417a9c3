//! A script-driven harness: client bytes, server bytes, gaps and closes, in the order a
//! capture would deliver them, each step one frame a millisecond after the last.

use super::*;
use crate::capture::Timestamp;
use head::HeadProblem;
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Step<'a> {
    C(&'a [u8]),
    S(&'a [u8]),
    GapC(u64),
    GapS(u64),
    CloseS,
}

pub(crate) fn seen(frame: u64) -> Seen {
    Seen {
        frame,
        ts: Timestamp(frame as i64 * 1_000_000),
    }
}

/// What a connection gave: the transactions in the order they completed (then the open
/// ones), and every flaw.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub done: Vec<Transaction>,
    pub open: Vec<Transaction>,
    pub flaws: Vec<Flaw>,
    pub phase: Option<HttpPhase>,
    pub resyncs: u32,
}

impl Outcome {
    fn all(&self) -> impl Iterator<Item = &Transaction> {
        self.done.iter().chain(self.open.iter())
    }

    /// (method, status, response body bytes, response complete) per transaction, by request.
    fn summary(&self) -> Vec<(Option<String>, Option<u16>, u64, bool)> {
        let mut all: Vec<&Transaction> = self.all().collect();
        all.sort_by_key(|t| t.seq.unwrap_or(u64::MAX));
        all.iter()
            .map(|t| {
                (
                    t.method().map(str::to_string),
                    t.status,
                    t.response_body,
                    t.response_complete.is_some(),
                )
            })
            .collect()
    }

    fn flaws_sorted(&self) -> Vec<String> {
        let mut v: Vec<String> = self.flaws.iter().map(|f| format!("{f:?}")).collect();
        v.sort();
        v
    }
}

/// Feeds the steps to a connection, each a frame a millisecond after the last.
pub(crate) fn feed(h: &mut HttpConn, steps: &[Step<'_>], sink: &mut dyn FnMut(HttpEvent<'_>)) {
    let (mut c_off, mut s_off) = (0u64, 0u64);
    for (i, step) in steps.iter().enumerate() {
        let at = seen(i as u64 + 1);
        match *step {
            Step::C(b) => {
                h.on_data(Role::Client, c_off, b, at, sink);
                c_off += b.len() as u64;
            }
            Step::S(b) => {
                h.on_data(Role::Server, s_off, b, at, sink);
                s_off += b.len() as u64;
            }
            Step::GapC(n) => {
                h.on_gap(Role::Client, n, at, sink);
                c_off += n;
            }
            Step::GapS(n) => {
                h.on_gap(Role::Server, n, at, sink);
                s_off += n;
            }
            Step::CloseS => h.on_server_close(at, sink),
        }
    }
}

pub(crate) fn script_with(steps: &[Step<'_>], start_captured: bool, limits: HttpLimits) -> Outcome {
    let mut h = HttpConn::new(start_captured, limits);
    let mut out = Outcome::default();
    feed(&mut h, steps, &mut |e: HttpEvent<'_>| match e {
        HttpEvent::Done(t) => {
            out.flaws.extend(t.flaws.iter().map(|f| f.flaw.clone()));
            out.done.push(t.clone());
        }
        HttpEvent::Flaw { flaw, .. } => out.flaws.push(flaw.flaw.clone()),
    });
    for t in h.open() {
        out.flaws.extend(t.flaws.iter().map(|f| f.flaw.clone()));
        out.open.push(t.clone());
    }
    out.phase = Some(h.phase());
    out.resyncs = h.resyncs();
    out
}

pub(crate) fn script(steps: &[Step<'_>]) -> Outcome {
    script_with(steps, true, HttpLimits::default())
}

/// Feeds the client and server streams, each cut at the given split points, requests first.
fn run(request: &[u8], response: &[u8], splits: &[usize]) -> Outcome {
    let mut steps = Vec::new();
    for (client, bytes) in [(true, request), (false, response)] {
        let mut cuts: Vec<usize> = splits.iter().map(|s| s % (bytes.len() + 1)).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        cuts.dedup();
        for w in cuts.windows(2) {
            let piece = &bytes[w[0]..w[1]];
            steps.push(if client {
                Step::C(piece)
            } else {
                Step::S(piece)
            });
        }
    }
    script(&steps)
}

const HEALTHY_REQ: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\nPOST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhelloGET /d HTTP/1.1\r\nHost: x\r\n\r\nGET /e HTTP/1.1\r\n\r\n";
const HEALTHY_RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n";

fn m(s: &str) -> Option<String> {
    Some(s.to_string())
}

#[test]
fn test_healthy_keepalive_pipelined_head_continue_chunked_304() {
    let o = run(HEALTHY_REQ, HEALTHY_RESP, &[]);
    assert!(o.flaws.is_empty(), "{:?}", o.flaws);
    assert_eq!(
        o.summary(),
        vec![
            (m("GET"), Some(200), 3, true),
            (m("HEAD"), Some(200), 0, true),
            (m("POST"), Some(204), 0, true),
            (m("GET"), Some(200), 3, true),
            (m("GET"), Some(304), 0, true),
        ]
    );
    assert!(
        o.open.is_empty(),
        "every transaction completed and was handed on"
    );
    assert_eq!(o.done[2].interim_responses, 1);
    assert_eq!(o.phase, Some(HttpPhase::Idle));
}

/// Splits each stream at `cuts` and merges the pieces in the order `order` picks, never
/// delivering a response piece before the request it answers has fully arrived.
pub(crate) fn interleave(
    exchanges: &[(&[u8], &[u8])],
    cuts: &[usize],
    order: &[bool],
) -> Vec<Step<'static>> {
    let piece = |bytes: &'static [u8], salt: usize| -> Vec<&'static [u8]> {
        let mut at: Vec<usize> = cuts
            .iter()
            .map(|c| (c + salt) % (bytes.len() + 1))
            .collect();
        at.extend([0, bytes.len()]);
        at.sort_unstable();
        at.dedup();
        at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
    };
    let leak = |b: &[u8]| -> &'static [u8] { Box::leak(b.to_vec().into_boxed_slice()) };
    // (exchange, piece) queues per side.
    let mut client: Vec<(usize, &[u8])> = Vec::new();
    let mut server: Vec<(usize, &[u8])> = Vec::new();
    for (i, (req, resp)) in exchanges.iter().enumerate() {
        client.extend(piece(leak(req), i).into_iter().map(|p| (i, p)));
        server.extend(piece(leak(resp), i * 7).into_iter().map(|p| (i, p)));
    }
    let mut steps = Vec::new();
    let (mut ci, mut si) = (0, 0);
    let mut k = 0;
    while ci < client.len() || si < server.len() {
        let pick_client = order.get(k).copied().unwrap_or(true);
        k += 1;
        let request_done =
            |exchange: usize, ci: usize| client[ci..].iter().all(|(e, _)| *e > exchange);
        let server_ready = si < server.len() && request_done(server[si].0, ci);
        if (pick_client || !server_ready) && ci < client.len() {
            steps.push(Step::C(client[ci].1));
            ci += 1;
        } else if si < server.len() {
            steps.push(Step::S(server[si].1));
            si += 1;
        }
    }
    steps
}

fn interleaved(exchanges: &[(&[u8], &[u8])], cuts: &[usize], order: &[bool]) -> Outcome {
    script(&interleave(exchanges, cuts, order))
}

pub(crate) const CONVERSATION: &[(&[u8], &[u8])] = &[
    (
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    ),
    (
        b"POST /b HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody",
        b"HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    ),
    (
        b"HEAD /c HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
    ),
    (
        b"GET /d HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
    ),
];

proptest! {
    #[test]
    fn prop_framing_same_however_split(splits in proptest::collection::vec(0usize..400, 0..12)) {
        let whole = run(HEALTHY_REQ, HEALTHY_RESP, &[]);
        let split = run(HEALTHY_REQ, HEALTHY_RESP, &splits);
        prop_assert_eq!(whole.summary(), split.summary());
        prop_assert_eq!(whole.flaws_sorted(), split.flaws_sorted());
    }

    /// Splitting both streams anywhere and interleaving them in any causal order (pipelined or
    /// not) never changes what the conversation was.
    #[test]
    fn prop_split_and_interleaved_conversation_same_outcome(
        cuts in proptest::collection::vec(0usize..120, 0..10),
        order in proptest::collection::vec(any::<bool>(), 0..60),
    ) {
        let plain = interleaved(CONVERSATION, &[], &[]);
        let mixed = interleaved(CONVERSATION, &cuts, &order);
        prop_assert_eq!(plain.summary(), mixed.summary());
        prop_assert_eq!(plain.flaws_sorted(), mixed.flaws_sorted());
        prop_assert_eq!(plain.summary().len(), 4);
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
        prop_assert_eq!(whole.flaws_sorted(), split.flaws_sorted());
        prop_assert!(!whole.flaws.is_empty());
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(req in proptest::collection::vec(any::<u8>(), 0..300), resp in proptest::collection::vec(any::<u8>(), 0..300), splits in proptest::collection::vec(0usize..300, 0..6)) {
        let mut r = b"GET / HTTP/1.1\r\n".to_vec();
        r.extend(req);
        let mut s = b"HTTP/1.1 200 OK\r\n".to_vec();
        s.extend(resp);
        let o = run(&r, &s, &splits);
        prop_assert!(o.open.len() <= MAX_OPEN);
    }
}

#[test]
fn test_each_response_flaw() {
    let req = b"GET / HTTP/1.1\r\n\r\n";
    let cases: &[(&[u8], Flaw)] = &[
        (b"HTP/1.1 200 OK\r\n\r\n", Flaw::NotAResponse),
        (
            b"HTTP/1.1 200 OK\r\nX-Broken header value\r\n\r\n",
            Flaw::Head(HeadProblem::HeaderWithoutColon),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789JUNK-NOT-A-RESPONSE",
            Flaw::AfterLastResponse,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 12\r\n\r\n",
            Flaw::ConflictingLengths(vec!["10".into(), "12".into()]),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            Flaw::LengthWithChunked,
        ),
    ];
    for (resp, flaw) in cases {
        let o = run(req, resp, &[]);
        assert_eq!(
            o.flaws,
            vec![flaw.clone()],
            "{}",
            String::from_utf8_lossy(resp)
        );
    }
    let o = run(
        req,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        &[],
    );
    assert!(matches!(o.flaws[..], [Flaw::Chunk(_)]), "{:?}", o.flaws);
}

#[test]
fn test_malformed_request_is_paired_with_its_400() {
    let o = run(
        b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        &[],
    );
    assert_eq!(
        o.flaws,
        vec![Flaw::Head(HeadProblem::RequestTargetHasSpace)]
    );
    assert_eq!(o.done[0].status, Some(400));
    assert!(o.done[0].malformed_request && o.done[0].line.is_none());
}

#[test]
fn test_tls_client_is_not_http_and_gives_nothing() {
    let o = run(
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"\x16\x03\x03\x00\x5a\x02",
        &[],
    );
    assert!(o.flaws.is_empty() && o.all().next().is_none());
}

#[test]
fn test_phases() {
    let o = run(b"GET / HTTP/1.1\r\nHost", b"", &[]);
    assert_eq!(o.phase, Some(HttpPhase::DuringRequest));
    let o = run(b"GET / HTTP/1.1\r\n\r\n", b"", &[]);
    assert_eq!(o.phase, Some(HttpPhase::AwaitingResponse));
    let mut h = HttpConn::new(true, HttpLimits::default());
    let mut sink = |_: HttpEvent<'_>| {};
    h.on_data(
        Role::Client,
        0,
        b"GET / HTTP/1.1\r\n\r\n",
        seen(1),
        &mut sink,
    );
    h.on_data(
        Role::Server,
        0,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        seen(2),
        &mut sink,
    );
    assert_eq!(h.phase(), HttpPhase::DuringResponse);
    let p = h.response_in_progress().unwrap();
    assert_eq!(
        (p.seq, p.body_bytes, p.body_declared),
        (Some(0), 3, Some(10))
    );
}

#[test]
fn test_gap_in_body_keeps_sync_gap_in_head_resyncs() {
    use Step::*;
    let o = script(&[
        C(b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
        S(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab"),
        GapS(5),
        S(b"cdeHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert!(o.flaws.is_empty(), "{:?}", o.flaws);
    assert_eq!(o.summary()[1].1, Some(200));
    assert!(o.done[0].gap);

    let o = script(&[
        C(b"GET / HTTP/1.1\r\n\r\n"),
        S(b"HTTP/1.1 200 OK\r\nContent-"),
        GapS(30),
        S(b"garbage\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert!(
        o.flaws.is_empty(),
        "no malformed finding after a gap: {:?}",
        o.flaws
    );
    assert_eq!(o.resyncs, 1);
}

#[test]
fn test_mid_stream_start_resyncs_without_findings() {
    let o = script_with(
        &[Step::S(
            b"tail of a body\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        )],
        false,
        HttpLimits::default(),
    );
    assert!(o.flaws.is_empty());
    assert_eq!(o.all().next().unwrap().status, Some(404));
}

#[test]
fn test_upgrade_accepted_ends_http() {
    let o = run(
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi",
        &[],
    );
    assert!(o.flaws.is_empty(), "{:?}", o.flaws);
    assert_eq!(o.summary().len(), 1);
    assert!(o.done[0].tunnel);
}

#[test]
fn regression_declined_upgrade_and_connect_keep_http_going() {
    use Step::*;
    let o = script(&[
        C(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        S(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno"),
        C(b"GET /next HTTP/1.1\r\n\r\n"),
        S(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert_eq!(
        o.summary(),
        vec![
            (m("GET"), Some(200), 2, true),
            (m("GET"), Some(502), 0, true)
        ]
    );
    let o = script(&[
        C(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
        S(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"),
        C(b"GET http://example.com/ HTTP/1.1\r\n\r\n"),
        S(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert_eq!(
        o.summary(),
        vec![
            (m("CONNECT"), Some(407), 0, true),
            (m("GET"), Some(503), 0, true)
        ]
    );
    assert!(o.flaws.is_empty(), "{:?}", o.flaws);
}

#[test]
fn regression_gap_in_request_body_with_request_lines_is_no_malformed_request() {
    use Step::*;
    let o = script(&[
        C(b"POST /up HTTP/1.1\r\nContent-Length: 200\r\n\r\nline one\r\n"),
        GapC(300),
        C(b"GET /x HTTP/1.1 is what the body says\r\nPUT nonsense\r\n\r\nGET /real HTTP/1.1\r\n\r\n"),
        S(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert!(o.flaws.is_empty(), "{:?}", o.flaws);
}

#[test]
fn regression_resync_search_is_bounded() {
    use Step::*;
    let junk = vec![b'x'; 64 * 1024];
    let mut steps = vec![C(b"GET / HTTP/1.1\r\n\r\n"), GapC(10)];
    for _ in 0..20 {
        steps.push(C(&junk));
    }
    steps.push(C(b"\nGET /late HTTP/1.1\r\n\r\n"));
    let o = script(&steps);
    assert_eq!(o.summary().len(), 1, "the search gave up after 1 MiB");
}

#[test]
fn regression_many_transactions_are_all_analyzed() {
    use Step::*;
    let mut steps = Vec::new();
    for _ in 0..10_049 {
        steps.push(C(b"GET /ok HTTP/1.1\r\n\r\n"));
        steps.push(S(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    }
    steps.push(C(b"GET /last HTTP/1.1\r\n\r\n"));
    steps.push(S(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"));
    let o = script(&steps);
    assert_eq!(o.done.len(), 10_050);
    assert_eq!(o.done.last().unwrap().status, Some(502));
    assert!(o.open.is_empty());
}

#[test]
fn regression_response_captured_before_its_request_is_paired_with_it() {
    use Step::*;
    let o = script(&[
        C(b"GET /1 HTTP/1.1\r\n\r\n"),
        S(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
        S(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"),
        C(b"GET /2 HTTP/1.1\r\n\r\n"),
    ]);
    assert_eq!(
        o.summary(),
        vec![
            (m("GET"), Some(200), 1, true),
            (m("GET"), Some(200), 1, true)
        ]
    );
    assert!(o.open.is_empty() && o.flaws.is_empty());
}

#[test]
fn regression_pairing_after_a_gap_follows_capture_order() {
    use Step::*;
    let o = script(&[
        C(b"GET /1 HTTP/1.1\r\n\r\n"),
        S(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
        C(b"GET /2 HTTP/1.1\r\n\r\n"),
        GapS(40),
        C(b"GET /fail HTTP/1.1\r\n\r\n"),
        S(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"),
        C(b"GET /4 HTTP/1.1\r\n\r\n"),
        S(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    let failed: Vec<_> = o.all().filter(|t| t.status == Some(500)).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].line.as_ref().unwrap().target, "/fail");
    let fourth = o
        .all()
        .find(|t| t.line.as_ref().is_some_and(|l| l.target == "/4"))
        .unwrap();
    assert_eq!(fourth.status, Some(200));
    assert!(
        o.all()
            .find(|t| t.line.as_ref().unwrap().target == "/2")
            .unwrap()
            .gap
    );
}

#[test]
fn regression_bare_crlf_between_responses_is_tolerated() {
    let o = run(
        b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb\r\n",
        &[],
    );
    assert!(o.flaws.is_empty(), "{:?}", o.flaws);
    assert_eq!(o.summary().len(), 2);
}

#[test]
fn regression_no_status_line_is_not_a_response_not_an_overrun() {
    let o = run(b"GET / HTTP/1.1\r\n\r\n", b"hello, not http\r\n", &[]);
    assert_eq!(o.flaws, vec![Flaw::NotAResponse]);
}

#[test]
fn regression_gzip_coding_with_length_is_not_length_with_chunked() {
    use Step::*;
    let o = script(&[
        C(b"GET / HTTP/1.1\r\n\r\n"),
        S(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nabcdefgh"),
        CloseS,
    ]);
    assert_eq!(o.flaws, vec![Flaw::CodingNotChunked { with_length: true }]);
    assert_eq!(o.summary(), vec![(m("GET"), Some(200), 8, true)]);
}

#[test]
fn regression_refused_continue_then_next_request() {
    use Step::*;
    let o = script(&[
        C(b"PUT /big HTTP/1.1\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"),
        S(b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n"),
        C(b"GET /after HTTP/1.1\r\n\r\n"),
        S(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert_eq!(
        o.summary(),
        vec![
            (m("PUT"), Some(417), 0, true),
            (m("GET"), Some(200), 0, true)
        ]
    );
    assert!(o.done[0].answered_early());
}

/// Found by rebuilding the nginx captures: nginx answers a 40 KB URI with 414 before the whole
/// request has arrived. The answer belongs to that request; it is not left unanswered.
#[test]
fn test_answer_before_the_request_head_finished_belongs_to_it() {
    use Step::*;
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(40_000));
    let (first, rest) = long.as_bytes().split_at(20_000);
    let o = script(&[
        C(first),
        S(b"HTTP/1.1 414 Request-URI Too Large\r\nContent-Length: 0\r\n\r\n"),
        C(rest),
    ]);
    assert_eq!(o.summary(), vec![(m("GET"), Some(414), 0, true)]);
    assert!(o.open.is_empty());
}

/// Found by the bit-flip robustness test: a response after a malformed one, with no request
/// left to pair it with, indexed past the transaction list.
#[test]
fn test_regression_response_after_malformed_response_without_request() {
    let o = run(
        b"GET / HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nBad Header\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &[],
    );
    assert!(
        o.flaws
            .contains(&Flaw::Head(HeadProblem::HeaderWithoutColon))
    );
}

/// What a transaction says, without the frames its bytes came in (a split moves those).
fn fingerprint(o: &Outcome) -> Vec<String> {
    o.all()
        .map(|t| {
            let flaws: Vec<_> = t
                .flaws
                .iter()
                .map(|f| (&f.flaw, f.from, f.offset, &f.excerpt, f.seq))
                .collect();
            format!(
                "{:?} {:?} {} {} {:?} {:?} {} {:?} {} {:?} {:?} {} {} {:?} {:?} {:?}",
                t.seq,
                t.line,
                t.malformed_request,
                t.request_head_len,
                t.request_complete.is_some(),
                t.request_declared,
                t.request_body,
                (t.expect_continue, t.upgrade, t.forwarded),
                t.alb_trace_headers,
                t.trace_ids,
                (t.status, &t.reason, t.interim_responses),
                t.response_body,
                t.response_until_close,
                t.response_declared,
                (t.response_complete.is_some(), t.qps_limited, t.gap),
                flaws,
            )
        })
        .collect()
}

/// The exchange with its request cut in two at `k` (`None`: whole), or its response when
/// `server` is set.
fn cut_at(req: &[u8], resp: &[u8], k: Option<usize>, server: bool, limits: HttpLimits) -> Outcome {
    let mut steps = Vec::new();
    let mut push = |client: bool, b: &'static [u8]| {
        if !b.is_empty() {
            steps.push(if client { Step::C(b) } else { Step::S(b) });
        }
    };
    let leak = |b: &[u8]| -> &'static [u8] { Box::leak(b.to_vec().into_boxed_slice()) };
    for (client, bytes) in [(true, leak(req)), (false, leak(resp))] {
        match k {
            Some(k) if client != server => {
                push(client, &bytes[..k]);
                push(client, &bytes[k..]);
            }
            _ => push(client, bytes),
        }
    }
    script_with(&steps, true, limits)
}

/// A head parsed where it lies in one segment (with the body and the next message behind
/// it) must say exactly what the same head says when it arrives in two pieces and is
/// buffered: every field, flaw, offset and excerpt.
#[test]
fn test_head_in_one_segment_same_as_split_at_every_byte() {
    let exchanges: &[(&[u8], &[u8])] = &[
        (
            b"POST /api?token=s3cret HTTP/1.1\r\nHost: a\r\nX-Request-Id: 5f3c\r\nX-Forwarded-For: 10.0.0.1\r\nAuthorization: Bearer abc\r\nContent-Length: 4\r\n\r\nbodyGET /next HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabcHTTP/1.1 503 Slow Down\r\nTransfer-Encoding: gzip, chunked\r\nALB-QPS-Limited: Limited\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        ),
        (
            b"GET /a HTTP/1.1\r\nHost: x\r\nAuthorization Bearer leaked\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            b"GET /a HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nSet-Cookie: id=1\r\nX-Broken header value\r\n\r\n",
        ),
        (
            b"PUT /u HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: x1\r\n\r\nab",
        ),
        (
            b"GET /v HTTP/1.1\r\nUpgrade: websocket\r\nExpect: 100-continue\r\nALICLOUD-ALB-TRACE: t\r\nalicloud-alb-trace: t\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00",
        ),
    ];
    for (req, resp) in exchanges {
        let whole = fingerprint(&cut_at(req, resp, None, false, HttpLimits::default()));
        assert!(!whole.is_empty());
        for server in [false, true] {
            let len = if server { resp.len() } else { req.len() };
            for k in 1..len {
                let split = cut_at(req, resp, Some(k), server, HttpLimits::default());
                assert_eq!(
                    fingerprint(&split),
                    whole,
                    "cut at {k} (server: {server}) of {}",
                    String::from_utf8_lossy(if server { resp } else { req })
                );
            }
        }
    }
}

/// The `max_head` bound is the same for a head parsed where it lies as for a buffered one: a
/// head of exactly `max_head` bytes is read, one byte more is too large.
#[test]
fn test_head_in_one_segment_keeps_the_max_head_bound() {
    let req: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let resp: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    for max_head in [req.len(), resp.len()] {
        for slack in [0, 1] {
            let limits = HttpLimits {
                max_head: max_head - slack,
                ..HttpLimits::default()
            };
            let whole = cut_at(req, resp, None, false, limits);
            for server in [false, true] {
                for k in 1..if server { resp.len() } else { req.len() } {
                    let split = cut_at(req, resp, Some(k), server, limits);
                    assert_eq!(fingerprint(&split), fingerprint(&whole), "cut at {k}");
                }
            }
        }
    }
    let small = |max_head| HttpLimits {
        max_head,
        ..HttpLimits::default()
    };
    let fits = cut_at(req, resp, None, false, small(resp.len()));
    assert!(fits.flaws.is_empty(), "{:?}", fits.flaws);
    let over = cut_at(req, resp, None, false, small(req.len() - 1));
    assert!(
        matches!(over.flaws[0], Flaw::RequestHeadTooLarge { .. }),
        "{:?}",
        over.flaws
    );
    let over = cut_at(req, resp, None, false, small(resp.len() - 1));
    assert!(
        over.flaws.contains(&Flaw::ResponseHeadTooLarge),
        "{:?}",
        over.flaws
    );
}
