//! HTTP policy: what each framing flaw and each completed transaction explains, and what was
//! left unfinished when the connection or the capture ended. A transaction is judged once,
//! when it completes; evidence is built only inside the branch that makes a finding.

use super::{Context, Draft, Findings, Subject, cause};
use crate::flow::{Connection, Role, Seen};
use crate::proto::http::{Flaw, FlawAt, HttpConn, InProgress, RequestLine, Transaction};
use crate::report::{Actor, Cause, Facts, Kind, Severity};
use serde_json::{Value, json};

/// Ports where a server speaks TLS; plain HTTP sent there gets a 400 from the balancer.
pub const TLS_PORTS: &[u16] = &[443, 4443, 8443, 9443];

/// ALICLOUD-ALB-TRACE headers beyond this mean a forwarding loop (the balancer answers 463).
const MAX_ALB_TRACE_HEADERS: usize = 16;

/// The status a finding explains, a headline, why, and what to do.
type Explained = (u16, &'static str, String, Vec<String>);

/// The typed facts of a finding about `txn`, done by `by`.
fn facts_of(txn: Option<&Transaction>, by: Option<Actor>) -> impl FnOnce(&mut Facts) + '_ {
    move |f: &mut Facts| {
        f.by = by;
        let Some(t) = txn else { return };
        f.request = Some(t.request_line());
        f.request_key = t.line.as_ref().map(request_key);
        f.request_at = t.request;
        f.reused_connection = t.seq.is_some_and(|n| n > 0);
        f.request_done_at = t.request_complete;
        f.response_at = t.response;
        f.response_done_at = t.response_complete;
        f.status = t.status;
    }
}

/// A fingerprint of a request line that is the same on both legs of a balancer, and keeps no
/// secret: the target is hashed, not stored.
pub fn request_key(line: &RequestLine) -> u64 {
    use std::hash::BuildHasher;
    // A fixed seed: the same request gets the same fingerprint on both legs of one run.
    foldhash::fast::FixedState::with_seed(0x6c62_6469_6167).hash_one((&line.method, &line.target))
}

/// The request and response a finding is about, for the report and the text view.
fn transaction_evidence(txn: Option<&Transaction>, evidence: &mut Value) {
    let Some(t) = txn else { return };
    evidence["request"] = t.request_line().into();
    if let Some(l) = &t.line
        && l.target_len > l.target.len()
    {
        evidence["target_length"] = l.target_len.into();
    }
    evidence["status"] = t.status.into();
    evidence["request_frame"] = t.request.map(|s| s.frame).into();
    evidence["response_frame"] = t.response.map(|s| s.frame).into();
    evidence["request_sent"] = t.request.map(|s| s.ts.rfc3339()).into();
    evidence["first_response_byte"] = t.response.map(|s| s.ts.rfc3339()).into();
    evidence["last_response_byte"] = t.response_complete.map(|s| s.ts.rfc3339()).into();
}

fn side_name(from: Role) -> &'static str {
    match from {
        Role::Client => "request",
        Role::Server => "response",
    }
}

/// A completed transaction: its flaws, the request policy, and what the answer said.
pub fn on_transaction(subject: &Subject, txn: &Transaction, ctx: &Context<'_>, out: &mut Findings) {
    for f in &txn.flaws {
        flaw(subject, f, Some(txn), ctx, out);
    }
    request_policy(subject, txn, ctx, out);
    response(subject, txn, ctx, out);
}

/// A flaw that belongs to no transaction still open (`last`: the one judged before it).
pub fn on_flaw(
    subject: &Subject,
    f: &FlawAt,
    last: Option<&Transaction>,
    ctx: &Context<'_>,
    out: &mut Findings,
) {
    // Bytes after the last response continue the one before them.
    let about = matches!(f.flaw, Flaw::AfterLastResponse)
        .then_some(last)
        .flatten();
    flaw(subject, f, about, ctx, out);
}

/// What finding a flaw makes, and the reason its evidence gives.
fn classify(f: &FlawAt, server_port: u16, max_uri: usize) -> Option<(Kind, String)> {
    let on_request = f.from == Role::Client;
    Some(match &f.flaw {
        Flaw::Head(p) if on_request => (Kind::MalformedRequest, p.to_string()),
        Flaw::Head(p) => (Kind::MalformedResponse, p.to_string()),
        Flaw::NotARequest => (
            Kind::MalformedRequest,
            "bytes that do not begin a request".into(),
        ),
        Flaw::NotAResponse => (
            Kind::MalformedResponse,
            "the response does not start with an HTTP/1.x status line".into(),
        ),
        Flaw::AfterLastResponse => (
            Kind::ResponseBodyOverrun,
            "bytes after a complete response that do not begin another one".into(),
        ),
        Flaw::TlsAnswer => (
            Kind::HttpOnTlsPort,
            format!("the server on port {server_port} answered a plain HTTP request with TLS"),
        ),
        Flaw::RequestHeadTooLarge { first_line } => {
            let kind = if first_line.is_none_or(|p| p > max_uri) {
                Kind::UriTooLong
            } else {
                Kind::HeaderTooLarge
            };
            (
                kind,
                "the request head is too large to follow and still not finished".into(),
            )
        }
        Flaw::ResponseHeadTooLarge => (
            Kind::MalformedResponse,
            "the response head is too large and still not finished".into(),
        ),
        Flaw::ConflictingLengths(v) => (
            Kind::ConflictingContentLength,
            format!("Content-Length values disagree: {}", v.join(", ")),
        ),
        Flaw::InvalidLength(v) => (
            Kind::ConflictingContentLength,
            format!("invalid Content-Length {v:?}"),
        ),
        Flaw::LengthWithChunked => (
            Kind::ContentLengthWithChunked,
            format!(
                "{} has both Content-Length and Transfer-Encoding: chunked",
                side_name(f.from)
            ),
        ),
        Flaw::CodingNotChunked { with_length } => (
            if on_request {
                Kind::MalformedRequest
            } else {
                Kind::MalformedResponse
            },
            if *with_length {
                "Transfer-Encoding whose final coding is not chunked, together with Content-Length: the length must be ignored and the message cannot be framed reliably".into()
            } else {
                "Transfer-Encoding whose final coding is not chunked: a request framed this way cannot be read".into()
            },
        ),
        Flaw::Chunk(e) => (Kind::MalformedChunked, e.to_string()),
    })
}

fn flaw(
    subject: &Subject,
    f: &FlawAt,
    txn: Option<&Transaction>,
    ctx: &Context<'_>,
    out: &mut Findings,
) {
    let Some((kind, reason)) = classify(f, subject.server.port(), ctx.thresholds.max_uri) else {
        return;
    };
    if !out.accepts(kind, subject.server) {
        return;
    }
    let on_request = f.from == Role::Client;
    let (status, what, explanation, steps): (u16, &str, String, Vec<String>) = match kind {
        Kind::MalformedResponse => (
            502,
            "The backend sent a response the balancer cannot parse",
            "A response head that does not follow HTTP/1.1 (status line, header syntax, framing) is rejected by the balancer, which answers 502.".into(),
            vec![format!("Fetch the same URL from the backend directly and inspect the raw head: curl -sv http://{}/ -o /dev/null", subject.server)],
        ),
        Kind::MalformedRequest => (
            400,
            "The client sent a request that does not parse",
            "A request head that does not follow HTTP/1.1 is rejected with 400 before it reaches any backend.".into(),
            vec!["Capture on the client and compare the request line and headers with a valid request.".into()],
        ),
        Kind::ResponseBodyOverrun => (
            502,
            "The backend sent more bytes than its response declared",
            "Bytes after the declared end of a response that do not start another response mean the backend's framing (Content-Length) is wrong; the balancer drops the connection and answers 502.".into(),
            vec!["Check how the backend computes Content-Length (compression or templating after the length was set is a common cause).".into()],
        ),
        Kind::ConflictingContentLength if on_request => (
            400,
            "The request carries conflicting or invalid Content-Length values",
            "A request whose length cannot be determined is rejected with 400 (it is also a request-smuggling vector).".into(),
            vec!["Fix the client so it sends exactly one valid Content-Length.".into()],
        ),
        Kind::ConflictingContentLength => (
            502,
            "The backend's response carries conflicting or invalid Content-Length values",
            "The balancer cannot tell where the response ends and answers 502.".into(),
            vec!["Fix the backend so it sends exactly one valid Content-Length.".into()],
        ),
        Kind::ContentLengthWithChunked if on_request => (
            400,
            "The request has both Content-Length and Transfer-Encoding: chunked",
            "A request framed two ways is rejected with 400: it is the classic request-smuggling pattern.".into(),
            vec!["Fix the client or the proxy in front of it so only one framing header is sent.".into()],
        ),
        Kind::ContentLengthWithChunked => (
            502,
            "The backend's response has both Content-Length and Transfer-Encoding: chunked",
            "A response framed two ways is treated as invalid; the balancer answers 502.".into(),
            vec!["Fix the backend (or the middleware adding one of the headers) so only one framing header is sent.".into()],
        ),
        Kind::MalformedChunked if on_request => (
            400,
            "The request's chunked body is malformed",
            "An invalid chunk size line or chunk terminator makes the request unreadable: 400.".into(),
            vec!["Capture on the client and check its chunked encoder.".into()],
        ),
        Kind::MalformedChunked => (
            502,
            "The backend's chunked response body is malformed",
            "An invalid chunk size line or chunk terminator breaks the response framing: the balancer answers 502.".into(),
            vec!["Check the backend's chunked encoder (or code that writes to the socket directly).".into()],
        ),
        Kind::HeaderTooLarge => header_too_large(),
        Kind::UriTooLong => uri_too_long(),
        Kind::HttpOnTlsPort => http_on_tls_port(subject),
        _ => return,
    };
    let mut evidence = json!({
        "direction": side_name(f.from),
        "reason": reason,
        "offset": f.offset,
        "frame": f.at.frame,
    });
    if let Some(x) = &f.excerpt {
        evidence["excerpt"] = x.clone().into();
    }
    transaction_evidence(txn, &mut evidence);
    let mut packets = vec![f.at.frame];
    if let Some(t) = txn {
        packets.extend(t.request.map(|s| s.frame));
    }
    out.push(
        Draft {
            kind,
            severity: Severity::Error,
            packets,
            first_ts: f.at.ts,
            summary: format!("{what}: {reason} (frame {}).", f.at.frame),
            evidence,
            causes: vec![cause(status, None, explanation, &steps)],
        }
        .finish_for(subject, ctx)
        .with(|facts| {
            facts_of(txn, None)(facts);
            facts.excerpt = f.excerpt.clone();
        }),
    );
}

fn header_too_large() -> Explained {
    (
        400,
        "The request head is larger than the 32 KB the balancer accepts",
        "Request heads over 32 KB are rejected with 400, usually because of large cookies or many headers.".into(),
        vec!["Find the large header (often Cookie) and shrink it; move data into the body.".into()],
    )
}

fn uri_too_long() -> Explained {
    (
        414,
        "The request target is longer than the 32 KB the balancer accepts",
        "A URI over 32 KB is rejected with 414; send large data in a POST body instead.".into(),
        vec!["Shorten the URI or switch to POST with the data in the body.".into()],
    )
}

fn http_on_tls_port(subject: &Subject) -> Explained {
    (
        400,
        "Plain HTTP was sent to a port that speaks TLS",
        "An HTTPS listener answers plain HTTP requests with 400 (or a TLS alert, or a close)."
            .into(),
        vec![format!(
            "Use https:// for port {}: curl -v https://{}/",
            subject.server.port(),
            subject.server
        )],
    )
}

/// What the balancer's own rules say about a request: size limits, TRACE, forwarding loops,
/// plain HTTP on a TLS port.
fn request_policy(subject: &Subject, txn: &Transaction, ctx: &Context<'_>, out: &mut Findings) {
    let Some(line) = &txn.line else { return };
    let Some(start) = txn.request else { return };
    let t = ctx.thresholds;
    let mut judged: Vec<(Kind, String, Explained)> = Vec::new();
    if line.target_len > t.max_uri {
        judged.push((
            Kind::UriTooLong,
            format!(
                "the request target is {} bytes, over the {}-byte limit",
                line.target_len, t.max_uri
            ),
            uri_too_long(),
        ));
    } else if txn.request_head_len > t.max_header {
        judged.push((
            Kind::HeaderTooLarge,
            format!(
                "the request head is {} bytes, over the {}-byte limit",
                txn.request_head_len, t.max_header
            ),
            header_too_large(),
        ));
    }
    if line.method == "TRACE" {
        judged.push((
            Kind::TraceMethod,
            "TRACE request".into(),
            (
                405,
                "The client used the TRACE method",
                "The balancer does not allow TRACE and answers 405.".into(),
                vec!["Use another method; TRACE is disabled on purpose.".into()],
            ),
        ));
    }
    if txn.alb_trace_headers > MAX_ALB_TRACE_HEADERS || txn.alb_trace_repeated {
        judged.push((
            Kind::AlbTraceLoop,
            format!(
                "{} ALICLOUD-ALB-TRACE headers{}",
                txn.alb_trace_headers,
                if txn.alb_trace_repeated {
                    ", one value repeated"
                } else {
                    ""
                }
            ),
            (
                463,
                "The request has passed through the balancer too many times",
                "The balancer adds an ALICLOUD-ALB-TRACE header each time a request passes; more than 16 of them, or a repeated value, means a forwarding loop, and it answers 463.".into(),
                vec!["Check whether a backend forwards requests back to the balancer (proxy_pass to the balancer's own address).".into()],
            ),
        ));
    }
    // Plain HTTP to a TLS port is a problem only when the server treats it as one: healthy
    // plain HTTP on 8443 exists. A TLS answer is reported from its flaw.
    let port = subject.server.port();
    let refused_by_tls =
        txn.status == Some(400) && !txn.flaws.iter().any(|f| f.flaw == Flaw::TlsAnswer);
    if TLS_PORTS.contains(&port) && refused_by_tls {
        judged.push((
            Kind::HttpOnTlsPort,
            format!("plain HTTP request to port {port}, answered 400"),
            http_on_tls_port(subject),
        ));
    }
    for (kind, reason, (status, what, explanation, steps)) in judged {
        if !out.accepts(kind, subject.server) {
            continue;
        }
        let mut evidence = json!({
            "direction": "request",
            "reason": reason,
            "frame": start.frame,
        });
        transaction_evidence(Some(txn), &mut evidence);
        let mut packets = vec![start.frame];
        packets.extend(txn.response.map(|s| s.frame));
        out.push(
            Draft {
                kind,
                severity: Severity::Error,
                packets,
                first_ts: start.ts,
                summary: format!("{what}: {reason} (frame {}).", start.frame),
                evidence,
                causes: vec![cause(status, None, explanation, &steps)],
            }
            .finish_for(subject, ctx)
            .with(facts_of(Some(txn), None)),
        );
    }
}

fn response(subject: &Subject, txn: &Transaction, ctx: &Context<'_>, out: &mut Findings) {
    let Some(status) = txn.status else {
        return;
    };
    let response = txn.response.unwrap_or_default();
    let packets = || {
        let mut p = vec![response.frame];
        p.extend(txn.request.map(|s| s.frame));
        p
    };
    let evidence = || {
        let mut e = json!({});
        transaction_evidence(Some(txn), &mut e);
        e
    };

    if txn.qps_limited && out.accepts(Kind::AlbQpsLimited, subject.server) {
        out.push(
            Draft {
                kind: Kind::AlbQpsLimited,
                severity: Severity::Error,
                packets: packets(),
                first_ts: response.ts,
                summary: format!("The balancer throttled {} with {status} (ALB-QPS-Limited: Limited).", txn.request_line()),
                evidence: evidence(),
                causes: vec![cause(
                    503,
                    Some("-"),
                    "The request was refused by the balancer's QPS limit before reaching a backend.".into(),
                    &[
                        "Check the Requests per second metric and the access log (upstream_status '-').".into(),
                        "Access the balancer through its DNS name so traffic spreads over all its addresses.".into(),
                    ],
                )],
            }
            .finish_for(subject, ctx)
            .with(facts_of(Some(txn), None)),
        );
    }
    if status >= 400 && out.accepts_status(subject.server, status) {
        let server_error = status >= 500;
        out.push(
            Draft {
                kind: Kind::ErrorStatus,
                severity: if server_error { Severity::Error } else { Severity::Info },
                packets: packets(),
                first_ts: response.ts,
                summary: format!(
                    "{} answered {} with {status} {}.",
                    subject.server,
                    txn.request_line(),
                    txn.reason
                ),
                evidence: evidence(),
                causes: vec![Cause {
                    status,
                    upstream_status: Some(status.to_string()),
                    explanation: "The server itself answered with this status; a balancer in front passes it through (status and upstream_status match), so the cause is in the server's own logs.".into(),
                    next_steps: vec![format!("Read {}'s access and error logs for this request at {}.", subject.server, response.ts.rfc3339())],
                }],
            }
            .finish_for(subject, ctx)
            .with(facts_of(Some(txn), None)),
        );
    }
    if let (Some(done), Some(first)) = (txn.request_complete, txn.response) {
        let waited = first.ts.saturating_sub(done.ts);
        if waited >= ctx.thresholds.response_timeout
            && out.accepts(Kind::SlowResponse, subject.server)
        {
            let mut evidence = evidence();
            evidence["wait_ms"] = waited.as_millis_f64().into();
            evidence["threshold_ms"] = ctx.thresholds.response_timeout.as_millis_f64().into();
            out.push(
                Draft {
                    kind: Kind::SlowResponse,
                    severity: Severity::Warning,
                    packets: vec![done.frame, first.frame],
                    first_ts: done.ts,
                    summary: format!(
                        "{} took {waited} to start answering {}, longer than the {} response timeout.",
                        subject.server,
                        txn.request_line(),
                        ctx.thresholds.response_timeout
                    ),
                    evidence,
                    causes: vec![cause(
                        504,
                        Some("-"),
                        "The balancer stops waiting for a backend's first byte after its response timeout (60 s by default) and answers 504.".into(),
                        &[
                            format!("Find what the backend {} does for this request: application logs, slow queries, CPU.", subject.server),
                            "Compare with upstream_response_time in the access log.".into(),
                        ],
                    )],
                }
                .finish_for(subject, ctx)
            .with(facts_of(Some(txn), None)),
            );
        }
    }
}

/// How the connection ended, as far as an outstanding exchange is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    ServerFin(Seen),
    ClientClosed(Seen, &'static str),
    ServerReset(Seen),
    /// Still open when the capture ended or the connection went idle.
    Open,
}

fn how_it_ended(conn: &Connection) -> End {
    let mut events: Vec<(u64, End)> = Vec::new();
    if let Some(f) = conn.to_client.fin {
        events.push((f.frame, End::ServerFin(f)));
    }
    if let Some(f) = conn.to_server.fin {
        events.push((f.frame, End::ClientClosed(f, "FIN")));
    }
    if let Some(r) = conn.reset {
        events.push((
            r.at.frame,
            match r.by {
                Role::Server => End::ServerReset(r.at),
                Role::Client => End::ClientClosed(r.at, "RST"),
            },
        ));
    }
    events.sort_by_key(|(f, _)| *f);
    events.first().map_or(End::Open, |(_, e)| *e)
}

/// The connection was finalized: what its open transactions and half-framed messages mean,
/// now that its end is known.
pub fn on_connection(conn: &Connection, http: &HttpConn, ctx: &Context<'_>, out: &mut Findings) {
    let subject = Subject::of(conn);
    // What is still open was never completed; judge what it did get first.
    for txn in http.open() {
        on_transaction(&subject, txn, ctx, out);
    }
    ending(conn, &subject, http, ctx, out);
}

fn ending(
    conn: &Connection,
    subject: &Subject,
    http: &HttpConn,
    ctx: &Context<'_>,
    out: &mut Findings,
) {
    let end = how_it_ended(conn);
    let end_frame = match end {
        End::ServerFin(s) | End::ClientClosed(s, _) | End::ServerReset(s) => Some(s),
        End::Open => None,
    };
    let stalled_for = |since: Option<Seen>| since.map(|s| ctx.now.saturating_sub(s.ts));

    // A request that never finished arriving.
    if let Some(InProgress {
        seq,
        in_head,
        head_bytes,
        body_bytes,
        body_declared,
    }) = http.request_in_progress()
    {
        let txn = http.find(seq);
        let started = txn.and_then(|t| t.request).or(http.request_head_start());
        let stalled = stalled_for(conn.to_server.last_data);
        let judged = match end {
            End::ClientClosed(..) => Some(400),
            End::ServerFin(_) | End::ServerReset(_) => Some(408),
            End::Open if stalled.is_some_and(|d| d >= ctx.thresholds.no_response_after) => {
                Some(408)
            }
            End::Open => None,
        };
        // A server that refused the request before it was all there (417 to a 100-continue,
        // 413 mid-upload) told the client to stop: the client stopping is no fault of its own.
        let server_answered =
            txn.is_some_and(|t| t.answered_early() && t.status.is_some_and(|s| s >= 400));
        let kind = if in_head {
            Kind::RequestIncomplete
        } else {
            Kind::RequestBodyTruncated
        };
        if let (Some(status), Some(start), false, false, true) = (
            judged,
            started,
            txn.is_some_and(|t| t.gap),
            server_answered,
            out.accepts(kind, conn.server),
        ) {
            let mut evidence = json!({
                "ended_by": end_label(end),
                "head_bytes_received": head_bytes,
                "stalled_ms": stalled.map(|d| d.as_millis_f64()),
            });
            if !in_head {
                evidence["body_bytes_received"] = body_bytes.into();
                evidence["body_bytes_declared"] = body_declared.into();
            }
            transaction_evidence(txn, &mut evidence);
            let what = if in_head {
                "its request head"
            } else {
                "its request body"
            };
            let explanation = if status == 400 {
                "The client closed before sending the whole request; the balancer answers 400."
            } else {
                "The client stopped sending before the request was complete; the balancer waits for the rest until its request timeout (60 s by default), then answers 408."
            };
            let mut packets = vec![start.frame];
            packets.extend(end_frame.map(|s| s.frame));
            out.push(
                Draft {
                    kind,
                    severity: Severity::Warning,
                    packets,
                    first_ts: start.ts,
                    summary: format!("The client {} never finished {what} ({}).", conn.client, end_label(end)),
                    evidence,
                    causes: vec![cause(status, None, explanation.into(), &["Capture on the client to see why it stops sending (a slow uploader, a crash, a timeout shorter than the upload).".into()])],
                }
                .finish_for(&Subject::of(conn), ctx)
            .with(facts_of(txn, Some(Actor::Client))),
            );
        }
    }

    // A response that was cut short.
    let cut_response = http.response_in_progress();
    if let Some(InProgress {
        seq,
        in_head,
        body_bytes: got,
        body_declared: declared,
        ..
    }) = cut_response
    {
        let txn = http.find(seq);
        if let (Some(stop), false) = (end_frame, txn.is_some_and(|t| t.gap)) {
            match end {
                End::ServerFin(_) if in_head => {
                    // A head that never ended: the server closed with a partial answer.
                    if let Some(t) = txn {
                        closed_before_response(conn, t, stop, true, ctx, out);
                    }
                }
                // The reset itself is reported as connection_reset.
                End::ServerReset(_) if in_head => {}
                End::ServerFin(_) | End::ServerReset(_) => {
                    if out.accepts(Kind::ResponseBodyTruncated, conn.server) {
                        let mut evidence = json!({
                            "ended_by": end_label(end),
                            "body_bytes_received": got,
                            "body_bytes_declared": declared,
                        });
                        transaction_evidence(txn, &mut evidence);
                        let mut packets = vec![stop.frame];
                        packets.extend(txn.and_then(|t| t.response).map(|s| s.frame));
                        out.push(
                            Draft {
                                kind: Kind::ResponseBodyTruncated,
                                severity: Severity::Error,
                                packets,
                                first_ts: stop.ts,
                                summary: format!(
                                    "{} closed the connection ({}) after {got} of {} response body bytes.",
                                    conn.server,
                                    end_label(end),
                                    declared.map_or("the announced".to_string(), |d| d.to_string())
                                ),
                                evidence,
                                causes: vec![
                                    cause(502, Some("-"), "The backend closed the connection before the body its headers announced was complete.".into(), &[format!("Check {}'s logs for errors while writing the response (crashes, timeouts, killed workers).", conn.server)]),
                                    cause(500, None, "When the balancer had already passed part of the response on, the client sees a cut or 500 response.".into(), &[]),
                                ],
                            }
                            .finish_for(&Subject::of(conn), ctx)
            .with(facts_of(txn, Some(Actor::Server))),
                        );
                    }
                }
                End::ClientClosed(at, how) => client_closed(conn, txn, at, how, ctx, out),
                End::Open => {}
            }
        }
    }

    // The client closed before an answer was complete, even if the answer came afterwards.
    let client_close = [
        conn.to_server.fin.map(|f| (f, "FIN")),
        conn.reset
            .filter(|r| r.by == Role::Client)
            .map(|r| (r.at, "RST")),
    ]
    .into_iter()
    .flatten()
    .min_by_key(|(s, _)| s.frame);
    let server_close = [
        conn.to_client.fin,
        conn.reset.filter(|r| r.by == Role::Server).map(|r| r.at),
    ]
    .into_iter()
    .flatten()
    .map(|s| s.frame)
    .min();
    let all = || http.recent().chain(http.open());
    if let Some((closed, how)) = client_close
        && !matches!(end, End::ClientClosed(..))
        && server_close.is_none_or(|s| closed.frame < s)
    {
        let early = all().find(|t| {
            !t.gap
                && t.request_complete.is_some_and(|d| d.frame < closed.frame)
                && t.response_complete.is_none_or(|r| r.frame > closed.frame)
                && t.response.is_none_or(|r| r.frame > closed.frame)
        });
        if let Some(txn) = early {
            client_closed(conn, Some(txn), closed, how, ctx, out);
        }
    }
    if let (End::ClientClosed(closed, how), true) = (end, cut_response.is_none()) {
        let answered_late = all().find(|t| {
            !t.gap
                && t.request_complete.is_some_and(|d| d.frame < closed.frame)
                && t.response.is_some_and(|r| r.frame > closed.frame)
        });
        if let Some(txn) = answered_late {
            client_closed(conn, Some(txn), closed, how, ctx, out);
        }
    }

    // Requests with no response at all.
    let in_progress = cut_response.and_then(|p| p.seq);
    for txn in http.open() {
        if txn.status.is_some()
            || txn.response.is_some()
            || txn.seq.is_some() && txn.seq == in_progress
            || txn.gap
            || txn.malformed_request
        {
            continue;
        }
        let Some(done) = txn.request_complete else {
            continue;
        };
        match end {
            End::ServerFin(fin) => {
                match keepalive_race(conn, http, txn, fin) {
                    Some(race) => race.report(conn, txn, fin, ctx, out),
                    None => closed_before_response(conn, txn, fin, false, ctx, out),
                }
                break;
            }
            End::ClientClosed(at, how) => {
                client_closed(conn, Some(txn), at, how, ctx, out);
                break;
            }
            // The reset itself is reported as connection_reset, with this phase.
            End::ServerReset(_) => break,
            End::Open => {
                if !out.accepts(Kind::NoResponse, conn.server) {
                    continue;
                }
                let waited = ctx.now.saturating_sub(done.ts);
                // The capture's last packet is the only clock there is: a request that came
                // just before it may simply not have been answered yet.
                let barely = waited < ctx.thresholds.no_response_after;
                let mut evidence = json!({
                    "ended_by": if ctx.at_capture_end { "capture end" } else { "idle timeout" },
                    "waited_ms": waited.as_millis_f64(),
                });
                transaction_evidence(Some(txn), &mut evidence);
                out.push(
                    Draft {
                        kind: Kind::NoResponse,
                        severity: if barely {
                            Severity::Info
                        } else if waited >= ctx.thresholds.response_timeout {
                            Severity::Error
                        } else {
                            Severity::Warning
                        },
                        packets: vec![done.frame],
                        first_ts: done.ts,
                        summary: if barely {
                            format!("{} was unanswered when the capture ended, only {waited} after it was sent.", txn.request_line())
                        } else {
                            format!("{} was still unanswered {waited} after it was sent, when the capture ended.", txn.request_line())
                        },
                        evidence,
                        causes: vec![
                            cause(504, Some("-"), "A backend that does not answer makes the balancer time out (60 s by default) and answer 504.".into(), &[format!("Find what {} is doing with this request: application logs, thread dumps, slow queries.", conn.server)]),
                            cause(499, None, "If the client gives up first, the balancer logs 499.".into(), &[]),
                        ],
                    }
                    .finish_for(subject, ctx)
            .with(facts_of(Some(txn), None)),
                );
            }
        }
    }
}

/// A server closing an idle keep-alive connection just as a request was sent on it: the
/// request crossed the FIN on the wire.
struct Race {
    idle: crate::capture::Duration,
    last_activity: Seen,
    position: u64,
    reset: Option<Seen>,
}

/// A server's keep-alive timeout, when its idle closes agree: all within 10% of their median.
pub fn stable_idle(closes: &[crate::capture::Duration]) -> Option<crate::capture::Duration> {
    let mut v = closes.to_vec();
    v.sort();
    let median = *v.get(v.len() / 2)?;
    let tolerance = median.0 / 10;
    v.iter()
        .all(|d| (d.0 - median.0).abs() <= tolerance)
        .then_some(median)
}

/// How close in capture time the request and the server's FIN must be to have crossed: about a
/// round trip, with room for the capture point's place on the path.
const RACE_SLACK: crate::capture::Duration = crate::capture::Duration::from_millis(20);
/// A connection idle for less than this before the server closed it was not closed for being
/// idle.
const RACE_MIN_IDLE: crate::capture::Duration = crate::capture::Duration::from_millis(200);

fn keepalive_race(
    conn: &Connection,
    http: &HttpConn,
    txn: &Transaction,
    fin: Seen,
) -> Option<Race> {
    let seq = txn.seq?;
    let request = txn.request?;
    if seq == 0 || txn.response.is_some() {
        return None;
    }
    // The previous exchange on the connection ended its activity; then it sat idle.
    let previous = http.find(Some(seq - 1))?;
    let last_activity = previous.response_complete.or(previous.response)?;
    let idle = fin.ts.saturating_sub(last_activity.ts);
    let rtt = match (conn.rtt_syn, conn.rtt_ack) {
        (Some(a), Some(b)) => b.ts.saturating_sub(a.ts),
        _ => crate::capture::Duration::default(),
    };
    let window = crate::capture::Duration(rtt.0.saturating_mul(2) + RACE_SLACK.0);
    let apart = if request.ts >= fin.ts {
        request.ts.saturating_sub(fin.ts)
    } else {
        fin.ts.saturating_sub(request.ts)
    };
    (idle >= RACE_MIN_IDLE && apart <= window && request.ts > last_activity.ts).then_some(Race {
        idle,
        last_activity,
        position: seq + 1,
        reset: conn.reset.filter(|r| r.by == Role::Server).map(|r| r.at),
    })
}

impl Race {
    fn report(
        &self,
        conn: &Connection,
        txn: &Transaction,
        fin: Seen,
        ctx: &Context<'_>,
        out: &mut Findings,
    ) {
        if !out.accepts(Kind::KeepaliveRace, conn.server) {
            return;
        }
        let request = txn.request.unwrap_or(fin);
        let mut evidence = json!({
            "request_position": self.position,
            "idle_ms": self.idle.as_millis_f64(),
            "last_activity_frame": self.last_activity.frame,
            "close_frame": fin.frame,
            "request_frame": request.frame,
            "reset_frame": self.reset.map(|r| r.frame),
        });
        transaction_evidence(Some(txn), &mut evidence);
        let mut packets = vec![fin.frame, request.frame];
        packets.extend(self.reset.map(|r| r.frame));
        out.push(
            Draft {
                kind: Kind::KeepaliveRace,
                severity: Severity::Error,
                packets,
                first_ts: fin.ts.min(request.ts),
                summary: format!(
                    "{} closed its keep-alive connection after {} idle (FIN, frame {}) just as {} sent {} on it (request {} on the connection, frame {}): the request crossed the close and got no answer.",
                    conn.server,
                    self.idle,
                    fin.frame,
                    conn.client,
                    txn.request_line(),
                    self.position,
                    request.frame
                ),
                evidence,
                causes: vec![cause(
                    502,
                    Some("-"),
                    "The backend's keep-alive timeout is shorter than the balancer's idle timeout for upstream connections: the balancer reuses a connection the backend is closing, the request is lost, and the balancer answers 502 (or retries, for idempotent requests).".into(),
                    &[
                        "Make the backend's keep-alive timeout longer than the balancer's (e.g. 65 s behind a 60 s balancer): nginx keepalive_timeout 65s; Node server.keepAliveTimeout = 65000; gunicorn --keep-alive 65.".into(),
                        "Or make the balancer's upstream idle timeout shorter than the backend's (nginx upstream keepalive_timeout, haproxy timeout server-fin / http-reuse).".into(),
                    ],
                )],
            }
            .finish_for(&Subject::of(conn), ctx)
            .with(facts_of(Some(txn), Some(Actor::Server))),
        );
    }
}

fn closed_before_response(
    conn: &Connection,
    txn: &Transaction,
    fin: Seen,
    partial: bool,
    ctx: &Context<'_>,
    out: &mut Findings,
) {
    if !out.accepts(Kind::ClosedBeforeResponse, conn.server) {
        return;
    }
    let mut evidence = json!({"ended_by": "server FIN", "partial_response": partial});
    transaction_evidence(Some(txn), &mut evidence);
    let mut packets = vec![fin.frame];
    packets.extend(txn.request_complete.or(txn.request).map(|s| s.frame));
    let (status, how) = if partial {
        (500, "with only part of a response head")
    } else {
        (502, "without answering")
    };
    out.push(
        Draft {
            kind: Kind::ClosedBeforeResponse,
            severity: Severity::Error,
            packets,
            first_ts: fin.ts,
            summary: format!(
                "{} closed the connection {how} {} (frame {}).",
                conn.server,
                txn.request_line(),
                fin.frame
            ),
            evidence,
            causes: vec![cause(
                status,
                Some("-"),
                "The backend closed the connection instead of answering: the balancer gets no usable response and answers 502 (500 when part of a response had come).".into(),
                &[
                    format!("Check {}'s logs at this time for a crash, a worker restart, or a keep-alive timeout shorter than the balancer's.", conn.server),
                    "Make the backend's keep-alive timeout longer than the balancer's idle timeout.".into(),
                ],
            )],
        }
        .finish_for(&Subject::of(conn), ctx)
            .with(facts_of(Some(txn), Some(Actor::Server))),
    );
}

fn end_label(end: End) -> &'static str {
    match end {
        End::ServerFin(_) => "server FIN",
        End::ClientClosed(_, "RST") => "client RST",
        End::ClientClosed(..) => "client FIN",
        End::ServerReset(_) => "server RST",
        End::Open => "still open",
    }
}

fn client_closed(
    conn: &Connection,
    txn: Option<&Transaction>,
    at: Seen,
    how: &str,
    ctx: &Context<'_>,
    out: &mut Findings,
) {
    if !out.accepts(Kind::ClientClosedEarly, conn.server) {
        return;
    }
    let mut evidence = json!({"closed_with": how});
    transaction_evidence(txn, &mut evidence);
    let mut packets = vec![at.frame];
    packets.extend(txn.and_then(|t| t.request).map(|s| s.frame));
    let waited = txn
        .and_then(|t| t.request_complete)
        .map(|d| at.ts.saturating_sub(d.ts));
    if let Some(w) = waited {
        evidence["waited_ms"] = w.as_millis_f64().into();
    }
    out.push(
        Draft {
            kind: Kind::ClientClosedEarly,
            severity: Severity::Warning,
            packets,
            first_ts: at.ts,
            summary: format!(
                "The client {} closed the connection ({how}, frame {}) before the answer to {} was complete{}.",
                conn.client,
                at.frame,
                txn.map_or("its request".to_string(), |t| t.request_line()),
                waited.map_or(String::new(), |w| format!(", {w} after sending it"))
            ),
            evidence,
            causes: vec![cause(
                499,
                None,
                "The client gave up before the response arrived; the balancer logs 499. Either the client's timeout is shorter than the backend's response time, or the network is slow.".into(),
                &[
                    "Compare the client's timeout with upstream_response_time in the access log.".into(),
                    "Check the backend's response time for this request.".into(),
                ],
            )],
        }
        .finish_for(&Subject::of(conn), ctx)
            .with(facts_of(txn, Some(Actor::Client))),
    );
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::capture::Timestamp;
    use crate::detect::Thresholds;
    use crate::flow::ConnRef;
    use crate::proto::http::test::{CONVERSATION, Step, feed, interleave};
    use crate::proto::http::{HttpEvent, HttpLimits};
    use proptest::prelude::*;

    /// The kinds the HTTP policy finds in a conversation with a server on `port`, judging
    /// transactions as they complete (the connection's end is not part of this).
    fn kinds(port: u16, steps: &[Step<'_>]) -> Vec<Kind> {
        let conn = ConnRef {
            serial: 1,
            first_frame: 1,
            client: "10.0.0.1:40000".parse().unwrap(),
            server: format!("10.0.0.2:{port}").parse().unwrap(),
            start_captured: true,
        };
        let thresholds = Thresholds::default();
        let ctx = Context {
            capture: "test",
            thresholds: &thresholds,
            now: Timestamp(0),
            at_capture_end: false,
        };
        let subject = Subject::open(&conn);
        let mut out = Findings::new(100);
        let mut h = HttpConn::new(true, HttpLimits::default());
        feed(&mut h, steps, &mut |e: HttpEvent<'_>| match e {
            HttpEvent::Done(t) => on_transaction(&subject, t, &ctx, &mut out),
            HttpEvent::Flaw { flaw: f, last } => on_flaw(&subject, f, last, &ctx, &mut out),
        });
        for t in h.open() {
            on_transaction(&subject, t, &ctx, &mut out);
        }
        let mut k: Vec<Kind> = out.list.iter().map(|f| f.kind).collect();
        k.sort();
        k
    }

    const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";

    #[test]
    fn test_request_policy_kinds() {
        use Step::*;
        let long_uri = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(40_000));
        assert_eq!(
            kinds(80, &[C(long_uri.as_bytes()), S(NO_CONTENT)]),
            vec![Kind::UriTooLong]
        );
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(40_000));
        assert_eq!(
            kinds(80, &[C(big.as_bytes()), S(NO_CONTENT)]),
            vec![Kind::HeaderTooLarge]
        );
        let huge = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(100_000));
        assert_eq!(kinds(80, &[C(huge.as_bytes())]), vec![Kind::HeaderTooLarge]);
        assert_eq!(
            kinds(80, &[C(b"TRACE / HTTP/1.1\r\n\r\n"), S(NO_CONTENT)]),
            vec![Kind::TraceMethod]
        );
        let mut alb = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..17 {
            alb.extend(format!("ALICLOUD-ALB-TRACE: {i:016x}\r\n").bytes());
        }
        alb.extend(b"\r\n");
        assert_eq!(
            kinds(80, &[C(&alb), S(NO_CONTENT)]),
            vec![Kind::AlbTraceLoop]
        );
    }

    #[test]
    fn regression_plain_http_answered_in_http_on_a_tls_port_is_healthy() {
        use Step::*;
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            kinds(
                443,
                &[C(req), S(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]
            ),
            vec![]
        );
        assert_eq!(
            kinds(
                8443,
                &[C(req), S(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]
            ),
            vec![]
        );
        // nginx's answer to plain HTTP on its ssl port, and a TLS server's alert.
        assert_eq!(
            kinds(
                443,
                &[
                    C(req),
                    S(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                ]
            ),
            vec![Kind::HttpOnTlsPort, Kind::ErrorStatus]
        );
        assert_eq!(
            kinds(443, &[C(req), S(b"\x15\x03\x01\x00\x02\x02\x46")]),
            vec![Kind::HttpOnTlsPort]
        );
    }

    #[test]
    fn regression_http09_and_odd_request_lines_name_their_problem() {
        use Step::*;
        for line in [
            &b"POST  /  HTTP/1.0\r\n\r\n"[..],
            b"OPTIONS HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                kinds(
                    80,
                    &[
                        C(line),
                        S(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    ]
                ),
                vec![Kind::MalformedRequest, Kind::ErrorStatus]
            );
        }
    }

    proptest! {
        /// However the capture cut and interleaved the two streams, the findings are the same.
        #[test]
        fn prop_split_and_interleaved_conversation_same_findings(
            cuts in proptest::collection::vec(0usize..120, 0..10),
            order in proptest::collection::vec(any::<bool>(), 0..60),
        ) {
            let plain = kinds(80, &interleave(CONVERSATION, &[], &[]));
            let mixed = kinds(80, &interleave(CONVERSATION, &cuts, &order));
            prop_assert_eq!(&plain, &mixed);
            prop_assert_eq!(plain, vec![Kind::ConflictingContentLength, Kind::ErrorStatus]);
        }
    }
}
