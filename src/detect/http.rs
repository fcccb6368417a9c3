//! HTTP findings: what the parser flagged in each message, what each response said, how long
//! answers took, and what was left unanswered when the connection or the capture ended.

use super::{Context, Draft, Findings, cause};
use crate::flow::{Connection, Role, Seen};
use crate::proto::http::{Anomaly, HttpConn, Transaction};
use crate::report::{Cause, Kind, Severity};
use serde_json::{Value, json};

pub fn detect(conn: &Connection, http: &HttpConn, ctx: &Context<'_>, out: &mut Findings) {
    for a in &http.anomalies {
        anomaly(conn, http, a, ctx, out);
    }
    for txn in &http.transactions {
        responses(conn, txn, ctx, out);
    }
    ending(conn, http, ctx, out);
}

/// The request and response a finding is about, for the report and the text view.
fn transaction_evidence(txn: Option<&Transaction>, evidence: &mut Value) {
    let Some(t) = txn else { return };
    evidence["request"] = t.request_line().into();
    if t.target_len > t.target.len() {
        evidence["target_length"] = t.target_len.into();
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

fn anomaly(conn: &Connection, http: &HttpConn, a: &Anomaly, ctx: &Context<'_>, out: &mut Findings) {
    let txn = a.transaction.and_then(|t| http.transactions.get(t));
    let on_request = a.from == Role::Client;
    let (status, what, explanation, steps): (u16, &str, String, Vec<String>) = match a.kind {
        Kind::MalformedResponse => (
            502,
            "The backend sent a response the balancer cannot parse",
            "A response head that does not follow HTTP/1.1 (status line, header syntax) is rejected by the balancer, which answers 502.".into(),
            vec![format!("Fetch the same URL from the backend directly and inspect the raw head: curl -sv http://{}/ -o /dev/null", conn.server)],
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
        Kind::HeaderTooLarge => (
            400,
            "The request head is larger than the 32 KB the balancer accepts",
            "Request heads over 32 KB are rejected with 400, usually because of large cookies or many headers.".into(),
            vec!["Find the large header (often Cookie) and shrink it; move data into the body.".into()],
        ),
        Kind::UriTooLong => (
            414,
            "The request target is longer than the 32 KB the balancer accepts",
            "A URI over 32 KB is rejected with 414; send large data in a POST body instead.".into(),
            vec!["Shorten the URI or switch to POST with the data in the body.".into()],
        ),
        Kind::TraceMethod => (
            405,
            "The client used the TRACE method",
            "The balancer does not allow TRACE and answers 405.".into(),
            vec!["Use another method; TRACE is disabled on purpose.".into()],
        ),
        Kind::HttpOnTlsPort => (
            400,
            "Plain HTTP was sent to a port that speaks TLS",
            "An HTTPS listener answers plain HTTP requests with 400.".into(),
            vec![format!("Use https:// for port {}: curl -v https://{}/", conn.server.port(), conn.server)],
        ),
        Kind::AlbTraceLoop => (
            463,
            "The request has passed through the balancer too many times",
            "The balancer adds an ALICLOUD-ALB-TRACE header each time a request passes; more than 16 of them, or a repeated value, means a forwarding loop, and it answers 463.".into(),
            vec!["Check whether a backend forwards requests back to the balancer (proxy_pass to the balancer's own address).".into()],
        ),
        _ => return,
    };
    let mut evidence = json!({
        "direction": side_name(a.from),
        "reason": a.reason,
        "offset": a.offset,
        "frame": a.at.frame,
    });
    if let Some(x) = &a.excerpt {
        evidence["excerpt"] = x.clone().into();
    }
    transaction_evidence(txn, &mut evidence);
    let mut packets = vec![a.at.frame];
    if let Some(t) = txn {
        packets.extend(t.request.map(|s| s.frame));
    }
    out.push(
        Draft {
            kind: a.kind,
            severity: Severity::Error,
            packets,
            first_ts: a.at.ts,
            summary: format!("{what}: {} (frame {}).", a.reason, a.at.frame),
            evidence,
            causes: vec![cause(status, None, explanation, &steps)],
        }
        .finish(conn, ctx),
    );
}

fn responses(conn: &Connection, txn: &Transaction, ctx: &Context<'_>, out: &mut Findings) {
    // Unanswered requests are judged once the connection's end is known, in `ending`.
    let Some(status) = txn.status else {
        return;
    };
    let response = txn.response.unwrap_or_default();
    let mut evidence = json!({});
    transaction_evidence(Some(txn), &mut evidence);
    let mut packets = vec![response.frame];
    packets.extend(txn.request.map(|s| s.frame));

    if txn.qps_limited {
        out.push(
            Draft {
                kind: Kind::AlbQpsLimited,
                severity: Severity::Error,
                packets: packets.clone(),
                first_ts: response.ts,
                summary: format!("The balancer throttled {} with {status} (ALB-QPS-Limited: Limited).", txn.request_line()),
                evidence: evidence.clone(),
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
            .finish(conn, ctx),
        );
    }
    if status >= 400 {
        let server_error = status >= 500;
        out.push(
            Draft {
                kind: Kind::ErrorStatus,
                severity: if server_error { Severity::Error } else { Severity::Info },
                packets: packets.clone(),
                first_ts: response.ts,
                summary: format!(
                    "{} answered {} with {status} {}.",
                    conn.server,
                    txn.request_line(),
                    txn.reason
                ),
                evidence: evidence.clone(),
                causes: vec![Cause {
                    status,
                    upstream_status: Some(status.to_string()),
                    explanation: "The server itself answered with this status; a balancer in front passes it through (status and upstream_status match), so the cause is in the server's own logs.".into(),
                    next_steps: vec![format!("Read {}'s access and error logs for this request at {}.", conn.server, response.ts.rfc3339())],
                }],
            }
            .finish(conn, ctx),
        );
    }
    if let (Some(done), Some(first)) = (txn.request_complete, txn.response) {
        let waited = first.ts.saturating_sub(done.ts);
        if waited >= ctx.thresholds.response_timeout {
            let mut evidence = evidence.clone();
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
                        conn.server,
                        txn.request_line(),
                        ctx.thresholds.response_timeout
                    ),
                    evidence,
                    causes: vec![cause(
                        504,
                        Some("-"),
                        "The balancer stops waiting for a backend's first byte after its response timeout (60 s by default) and answers 504.".into(),
                        &[
                            format!("Find what the backend {} does for this request: application logs, slow queries, CPU.", conn.server),
                            "Compare with upstream_response_time in the access log.".into(),
                        ],
                    )],
                }
                .finish(conn, ctx),
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

fn ending(conn: &Connection, http: &HttpConn, ctx: &Context<'_>, out: &mut Findings) {
    let end = how_it_ended(conn);
    let end_frame = match end {
        End::ServerFin(s) | End::ClientClosed(s, _) | End::ServerReset(s) => Some(s),
        End::Open => None,
    };
    let stalled_for = |since: Option<Seen>| since.map(|s| ctx.now.saturating_sub(s.ts));

    // A request that never finished arriving.
    if let Some((txn_index, head_bytes)) = http.request_in_progress() {
        let txn = txn_index.and_then(|i| http.transactions.get(i));
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
        if let (Some(status), Some(start), false) = (judged, started, txn.is_some_and(|t| t.gap)) {
            let kind = if txn.is_some() {
                Kind::RequestBodyTruncated
            } else {
                Kind::RequestIncomplete
            };
            let mut evidence = json!({
                "ended_by": end_label(end),
                "head_bytes_received": head_bytes,
                "stalled_ms": stalled.map(|d| d.as_millis_f64()),
            });
            if let Some(t) = txn {
                evidence["body_bytes_received"] = t.request_body.into();
                evidence["body_bytes_declared"] = t.request_declared.into();
            }
            transaction_evidence(txn, &mut evidence);
            let what = if kind == Kind::RequestIncomplete {
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
                .finish(conn, ctx),
            );
        }
    }

    // A response that was cut short.
    if let Some((t, got, declared)) = http.response_in_progress() {
        let txn = http.transactions.get(t);
        if let (Some(stop), false) = (end_frame, txn.is_some_and(|t| t.gap)) {
            match end {
                End::ServerFin(_) | End::ServerReset(_) => {
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
                        .finish(conn, ctx),
                    );
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
    if let Some((closed, how)) = client_close
        && !matches!(end, End::ClientClosed(..))
        && server_close.is_none_or(|s| closed.frame < s)
    {
        let early = http.transactions.iter().find(|t| {
            !t.gap
                && t.request_complete.is_some_and(|d| d.frame < closed.frame)
                && t.response_complete.is_none_or(|r| r.frame > closed.frame)
                && t.response.is_none_or(|r| r.frame > closed.frame)
        });
        if let Some(txn) = early {
            client_closed(conn, Some(txn), closed, how, ctx, out);
        }
    }
    if let (End::ClientClosed(closed, how), true) = (end, http.response_in_progress().is_none()) {
        let answered_late = http.transactions.iter().find(|t| {
            !t.gap
                && t.request_complete.is_some_and(|d| d.frame < closed.frame)
                && t.response.is_some_and(|r| r.frame > closed.frame)
        });
        if let Some(txn) = answered_late {
            client_closed(conn, Some(txn), closed, how, ctx, out);
        }
    }

    // Requests with no response at all.
    let in_progress = http.response_in_progress().map(|(t, _, _)| t);
    for (i, txn) in http.transactions.iter().enumerate() {
        if txn.status.is_some() || txn.response.is_some() || Some(i) == in_progress || txn.gap {
            continue;
        }
        let Some(done) = txn.request_complete else {
            continue;
        };
        if txn.target == "(malformed request)" {
            continue;
        }
        match end {
            End::ServerFin(fin) => {
                let mut evidence = json!({"ended_by": end_label(end)});
                transaction_evidence(Some(txn), &mut evidence);
                out.push(
                    Draft {
                        kind: Kind::ClosedBeforeResponse,
                        severity: Severity::Error,
                        packets: vec![done.frame, fin.frame],
                        first_ts: fin.ts,
                        summary: format!("{} closed the connection without answering {} (FIN, frame {}).", conn.server, txn.request_line(), fin.frame),
                        evidence,
                        causes: vec![cause(
                            502,
                            Some("-"),
                            "The backend closed the connection instead of answering: the balancer gets no response and answers 502.".into(),
                            &[
                                format!("Check {}'s logs at this time for a crash, a worker restart, or a keep-alive timeout shorter than the balancer's.", conn.server),
                                "Make the backend's keep-alive timeout longer than the balancer's idle timeout.".into(),
                            ],
                        )],
                    }
                    .finish(conn, ctx),
                );
                break;
            }
            End::ClientClosed(at, how) => {
                client_closed(conn, Some(txn), at, how, ctx, out);
                break;
            }
            // The reset itself is reported as connection_reset, with this phase.
            End::ServerReset(_) => break,
            End::Open => {
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
                    .finish(conn, ctx),
                );
            }
        }
    }
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
        .finish(conn, ctx),
    );
}
