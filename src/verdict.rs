//! The one or two sentences at the top of each capture's report, for a reader who has never
//! read a TCP trace: what went wrong, where, and what a load balancer would answer.

use crate::report::{Actor, CaptureSummary, Finding, Kind, Leg, Severity};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn by(f: &Finding) -> &'static str {
    f.facts.by.map_or("", Actor::as_str)
}

/// One sentence about `n` findings like `f`.
fn sentence(f: &Finding, n: usize, statuses: &BTreeSet<u16>) -> String {
    let server = &f.flow.server;
    let them = if n == 1 { "it" } else { "them" };
    match f.kind {
        Kind::HandshakeRefused => format!(
            "{} to {server} {} refused: nothing accepted connections on that port (or a firewall rejected them), which a load balancer reports as 502.",
            plural(n, "connection", "connections"),
            if n == 1 { "was" } else { "were" }
        ),
        Kind::SynUnanswered => format!(
            "{} to {server} got no answer at all, as if a firewall silently dropped {them} or the host was down; a load balancer reports this as 504 or 502.",
            plural(n, "connection attempt", "connection attempts"),
        ),
        Kind::ConnectionReset if f.facts.by == Some(Actor::Server) => format!(
            "The server {server} abruptly reset {} while a request was waiting for its answer; a load balancer reports this as 502.",
            plural(n, "connection", "connections")
        ),
        Kind::ConnectionReset => format!(
            "The client gave up on {} to {server} before the answer came (a load balancer logs this as 499).",
            plural(n, "connection", "connections")
        ),
        Kind::SynRetransmitted => format!(
            "{server} let {} wait for the client to resend its SYN while answering others at once: its accept queue is full, which shows up as 502s and slow first bytes behind a load balancer.",
            plural(n, "connection", "connections")
        ),
        Kind::MtuBlackhole => format!(
            "Large packets to or from {server} vanish while small ones get through ({} bytes never arrived): the path MTU is smaller than the packets and the ICMP message that would say so is blocked, so health checks pass but long requests fail with 502 or 504.",
            f.facts.unacknowledged_ip_len.unwrap_or(0)
        ),
        Kind::PacketLoss => format!(
            "Packets are being lost between {} and {server} ({:.1}% retransmitted), stretching exchanges into timeouts (504, 408 or 499).",
            f.flow.client,
            f.facts.retransmission_rate.unwrap_or(0.0) * 100.0
        ),
        Kind::HighRtt => format!(
            "The round trip between {} and {server} is slow ({:.0} ms for the handshake), so every exchange is slow; clients may give up (499) or requests time out (408).",
            f.flow.client,
            f.facts.rtt_ms.unwrap_or(0.0)
        ),
        Kind::ZeroWindow => format!(
            "The {} stopped reading for up to {:.1} s on {}, stalling the transfer (504 or 408 once a timeout hits).",
            f.facts.receiver.map_or("receiver", Actor::as_str),
            f.facts.longest_stall_ms.unwrap_or(0.0) / 1000.0,
            plural(n, "connection", "connections")
        ),
        Kind::OversizePacket => format!(
            "Packets larger than the MTU were sent toward {server} and never acknowledged: a link on the path has a smaller MTU."
        ),
        Kind::ClientClosedEarly => format!(
            "The client closed {} to {server} before the answer was complete: it gave up waiting (a load balancer logs 499).",
            plural(n, "connection", "connections")
        ),
        Kind::ClosedBeforeResponse => format!(
            "{server} closed {} without answering the request on it, which a load balancer reports as 502.",
            plural(n, "connection", "connections")
        ),
        Kind::NoResponse => format!(
            "{} to {server} never got an answer before the capture ended; a load balancer times out with 504.",
            plural(n, "request", "requests")
        ),
        Kind::SlowResponse => format!(
            "{server} took longer than the response timeout to start answering {}, which a load balancer reports as 504.",
            plural(n, "request", "requests")
        ),
        Kind::MalformedResponse | Kind::ResponseBodyOverrun | Kind::ResponseBodyTruncated => {
            format!(
                "{server} sent {} that a load balancer cannot pass on (broken or cut-short HTTP), which it reports as 502.",
                plural(n, "response", "responses")
            )
        }
        Kind::ErrorStatus => format!(
            "{server} itself answered {} with an error status ({}); a load balancer passes that through, so look at the server's own logs.",
            plural(n, "request", "requests"),
            if statuses.is_empty() {
                "?".to_string()
            } else {
                statuses
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        Kind::MalformedRequest
        | Kind::HeaderTooLarge
        | Kind::UriTooLong
        | Kind::TraceMethod
        | Kind::HttpOnTlsPort
        | Kind::RequestIncomplete
        | Kind::RequestBodyTruncated
        | Kind::AlbTraceLoop => format!(
            "The client sent {} that a load balancer rejects before any backend sees it ({}).",
            plural(n, "request", "requests"),
            f.summary.trim_end_matches('.')
        ),
        Kind::ConflictingContentLength
        | Kind::ContentLengthWithChunked
        | Kind::MalformedChunked => {
            format!("{} ({} time(s)).", f.summary.trim_end_matches('.'), n)
        }
        Kind::AlbQpsLimited => format!(
            "The load balancer throttled {} to {server} (ALB-QPS-Limited) and answered 503.",
            plural(n, "request", "requests")
        ),
        Kind::TlsCertExpired => format!(
            "{server} presents a certificate that is not valid at the time of the capture (expired or not yet valid), so clients that check it fail the TLS handshake; behind a load balancer this shows up as 502."
        ),
        Kind::TlsSniMismatch => format!(
            "{server} presents a certificate that does not cover the name the client asked for ({}), so clients that check names fail; behind a load balancer this shows up as 502.",
            f.facts.sni.as_deref().unwrap_or("")
        ),
        Kind::TlsHandshakeFailure => format!(
            "The TLS handshake with {server} failed on {} ({}); no request could be sent, which a load balancer reports as 502 on a backend leg.",
            plural(n, "connection", "connections"),
            f.facts.alert.as_deref().map_or(
                "the connection closed during the handshake".to_string(),
                |a| format!("{a} alert")
            )
        ),
        Kind::KeepaliveRace => format!(
            "{server} closed {} just as a request was sent on it (a keep-alive race), which a load balancer answers with 502 unless it retries: the backend's keep-alive timeout is shorter than the balancer's.",
            plural(
                n,
                "idle keep-alive connection",
                "idle keep-alive connections"
            )
        ),
        Kind::ServerRestart => format!(
            "{server} went down with requests in flight (a crash or restart) and refused connections until it was back, which a load balancer answers with 502."
        ),
        Kind::IcmpFragNeeded | Kind::CaptureGap => {
            format!("{} ({} time(s)).", f.summary.trim_end_matches('.'), n)
        }
        other => format!("{n} {other} finding(s) for {server}."),
    }
}

/// Findings that tell the same story from two angles get one sentence between them.
fn story(kind: Kind, by: &str) -> Kind {
    match (kind, by) {
        (Kind::ConnectionReset, "client") => Kind::ClientClosedEarly,
        (Kind::ResponseBodyTruncated, _) | (Kind::ClosedBeforeResponse, _) => Kind::ConnectionReset,
        (k, _) => k,
    }
}

/// Problems that read as one sentence: same severity, kind, actor and server.
type GroupKey = (Reverse<Severity>, Kind, String, String);

/// What a back-leg finding says happened, as the end of "because backend X ...", and what
/// that means, told after the frames and timings.
fn because(b: &Finding) -> (String, Option<&'static str>) {
    match b.kind {
        Kind::HandshakeRefused => ("refused the connection".into(), None),
        Kind::SynUnanswered => (
            "never answered the balancer's connection attempt".into(),
            Some("its connect timeout ran out"),
        ),
        Kind::ConnectionReset => ("reset the connection".into(), None),
        Kind::ClosedBeforeResponse => ("closed the connection without answering".into(), None),
        Kind::KeepaliveRace => (
            "closed its idle keep-alive connection just as the balancer sent the request on it"
                .into(),
            Some(
                "a keep-alive race (the backend's keep-alive timeout is shorter than the balancer's)",
            ),
        ),
        Kind::SlowResponse => (
            "did not answer within the balancer's read timeout".into(),
            None,
        ),
        Kind::MtuBlackhole => (
            "never received the request's large packets".into(),
            Some("an MTU blackhole on the back leg"),
        ),
        Kind::ErrorStatus => (
            format!(
                "answered {} itself",
                b.facts
                    .status
                    .map_or("an error".to_string(), |s| s.to_string())
            ),
            None,
        ),
        Kind::ResponseBodyTruncated => ("cut its response short".into(), None),
        other => (format!("failed ({other})"), None),
    }
}

/// Where the back leg's failure is in the capture: "back request frame 9, the balancer gave up
/// at frame 11". Evidence frames are in capture order, so the failure is the one its kind
/// puts there (a reset after the request and the partial answer, the give-up after the request).
fn back_frames(b: &Finding) -> String {
    let first = b.packets.first().copied();
    let last = b.packets.last().copied();
    let request = b
        .facts
        .request_at
        .map(|r| format!("back request frame {}", r.frame));
    // What ended the wait, where the request's own frame comes first.
    let after_request = b
        .packets
        .iter()
        .copied()
        .find(|&p| Some(p) != b.facts.request_at.map(|r| r.frame));
    let event = match b.kind {
        Kind::HandshakeRefused => first
            .zip(last)
            .map(|(s, r)| format!("SYN frame {s} refused at frame {r}")),
        Kind::SynUnanswered => first.map(|s| format!("SYN frame {s} never answered")),
        Kind::SlowResponse => after_request.map(|p| format!("the balancer gave up at frame {p}")),
        Kind::ClientClosedEarly => after_request.map(|p| format!("aborted at frame {p}")),
        Kind::KeepaliveRace if b.packets.len() >= 3 => Some(format!(
            "the backend's FIN at frame {} crossed it, reset at frame {}",
            b.packets[1],
            b.packets[b.packets.len() - 1]
        )),
        Kind::ConnectionReset | Kind::KeepaliveRace => last.map(|p| format!("reset at frame {p}")),
        Kind::ClosedBeforeResponse => last.map(|p| format!("closed at frame {p}")),
        Kind::ResponseBodyTruncated => last.map(|p| format!("cut at frame {p}")),
        Kind::ErrorStatus => last.map(|p| format!("answered at frame {p}")),
        Kind::MtuBlackhole => {
            first.map(|p| format!("its large packets retransmitted from frame {p}"))
        }
        _ => last.map(|p| format!("frame {p}")),
    };
    request
        .into_iter()
        .chain(event)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The request's timings as the balancer saw them, the measures haproxy logs as Tq/Tw/Tc/Tr
/// (the total is told with the answer): "client request 0 µs, forwarded after 435 µs, connect
/// 42 µs, waited 2.00 s for the response". Empty when nothing is known.
fn timing_words(f: &Finding, back: &Finding) -> String {
    let Some(t) = f.facts.timings else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let Some(d) = t.client_request {
        parts.push(format!("client request {d}"));
    }
    if let Some(d) = t.wait {
        parts.push(format!("forwarded after {d}"));
    }
    if back.facts.reused_connection {
        parts.push("on a reused connection".to_string());
    } else if let Some(d) = t.connect {
        parts.push(format!("connect {d}"));
    }
    if let Some(d) = t.backend_response {
        parts.push(format!("waited {d} for the response"));
    }
    parts.join(", ")
}

/// "(back request frame 9, the balancer gave up at frame 11; connect 42 µs, ...)", or nothing.
fn back_detail(f: &Finding, back: &Finding) -> String {
    // Frame numbers are per file: a back leg captured on another host says which.
    let mut frames = back_frames(back);
    if back.capture != f.capture && !frames.is_empty() {
        frames.push_str(&format!(" in {}", back.capture));
    }
    let parts: Vec<String> = [frames, timing_words(f, back)]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

type ChainKey = (String, Option<u16>, Kind, String);

/// On a capture with a balancer, the chain behind each of its failed answers, ranked by how
/// many requests it explains: "the balancer answered 502 to GET / because backend X reset".
fn stories(findings: &[Finding]) -> Vec<String> {
    // (front kind, status, back kind, backend) -> (requests, first front, its back finding)
    let mut groups: BTreeMap<ChainKey, (usize, usize, usize)> = BTreeMap::new();
    for (i, f) in findings.iter().enumerate() {
        if f.leg != Some(Leg::Front) || f.severity < Severity::Warning {
            continue;
        }
        let Some(&b) = f.explained_by.first().or(f.explains.first()) else {
            continue;
        };
        let Some(back) = findings.get(b) else {
            continue;
        };
        groups
            .entry((
                f.kind.to_string(),
                f.facts.status,
                back.kind,
                back.flow.server.clone(),
            ))
            .or_insert((0, i, b))
            .0 += 1;
    }
    let mut ranked: Vec<_> = groups.into_values().collect();
    ranked.sort_by_key(|(n, i, _)| (Reverse(*n), *i));
    ranked
        .into_iter()
        .map(|(n, i, b)| {
            let (f, back) = (&findings[i], &findings[b]);
            let request = f.facts.request.as_deref().unwrap_or("a request");
            let more = if n > 1 {
                format!(" and {} more", n - 1)
            } else {
                String::new()
            };
            let restarted = back
                .explained_by
                .iter()
                .any(|&r| findings.get(r).is_some_and(|x| x.kind == Kind::ServerRestart));
            let (what, why) = because(back);
            let why = if restarted {
                Some("it went down with requests in flight (a crash or restart)")
            } else {
                why
            };
            let why = why.map_or(String::new(), |w| format!(": {w}"));
            let detail = back_detail(f, back);
            match f.kind {
                Kind::ClientClosedEarly => format!(
                    "The client {} gave up on {request}{more} at the balancer {}{}, before the answer came, and the balancer aborted its request to {}{detail}: it logs 499.",
                    f.flow.client,
                    f.flow.server,
                    f.facts
                        .timings
                        .and_then(|t| t.total)
                        .map_or(String::new(), |d| format!(" after {d}")),
                    back.flow.server
                ),
                Kind::ResponseBodyTruncated => format!(
                    "The balancer {} cut its answer to {request}{more} short because backend {} {what}{detail}{why}.",
                    f.flow.server, back.flow.server,
                ),
                _ => format!(
                    "The balancer {} answered {} to {request}{more}{} because backend {} {what}{detail}{why}.",
                    f.flow.server,
                    f.facts.status.map_or("an error".to_string(), |s| s.to_string()),
                    f.facts
                        .request_at
                        .zip(f.facts.response_at)
                        .map_or(String::new(), |(q, r)| format!(
                            " (frame {}, {} after the request)",
                            r.frame,
                            r.ts.saturating_sub(q.ts)
                        )),
                    back.flow.server,
                ),
            }
        })
        .collect()
}

pub fn verdict(capture: &CaptureSummary, findings: &[Finding]) -> String {
    let chains = stories(findings);
    if !chains.is_empty() {
        let mut t = chains.iter().take(3).cloned().collect::<Vec<_>>().join(" ");
        if chains.len() > 3 {
            t.push_str(&format!(
                " {} more chain(s) are listed below.",
                chains.len() - 3
            ));
        }
        if capture.truncated {
            t.push_str(" The file is cut short or damaged; it was analyzed up to that point.");
        }
        return t;
    }
    // Group problems by severity, kind, who acted and server; keep the first as the example.
    // Per group: how many, the first as the example, and the statuses the group's answers had.
    let mut groups: BTreeMap<GroupKey, (usize, &Finding, BTreeSet<u16>)> = BTreeMap::new();
    for f in findings.iter().filter(|f| f.severity >= Severity::Warning) {
        let by = by(f).to_string();
        let g = groups
            .entry((Reverse(f.severity), f.kind, by, f.flow.server.clone()))
            .or_insert((0, f, BTreeSet::new()));
        g.0 += 1;
        g.2.extend(f.facts.status);
    }
    // Findings past the cap on repeats were counted, not listed: they count here all the same.
    for u in &capture.unlisted {
        if u.kind == Kind::ErrorStatus && u.status.is_none_or(|s| s < 500) {
            continue;
        }
        if let Some(g) = groups
            .iter_mut()
            .find(|((_, kind, _, server), _)| *kind == u.kind && *server == u.server)
            .map(|(_, g)| g)
        {
            g.0 += u.count as usize;
            g.2.extend(u.status);
        }
    }
    let mut text = if groups.is_empty() {
        let infos = findings.len();
        format!(
            "No failed handshakes, broken connections or network trouble among {}{}.",
            plural(
                capture.connections as usize,
                "TCP connection",
                "TCP connections"
            ),
            if infos > 0 {
                format!(
                    " ({} only)",
                    plural(infos, "informational note", "informational notes")
                )
            } else {
                String::new()
            }
        )
    } else {
        // The worst problem first; a second sentence only when there is a second problem.
        let mut ranked: Vec<_> = groups.into_iter().collect();
        ranked.sort_by_key(|(key, (n, _, _))| (key.0, Reverse(*n)));
        let mut told = Vec::new();
        ranked.retain(|((_, kind, by, server), _)| {
            let key = (story(*kind, by), server.clone());
            let fresh = !told.contains(&key);
            told.push(key);
            fresh
        });
        let parts: Vec<String> = ranked
            .iter()
            .take(2)
            .map(|(_, (n, example, statuses))| sentence(example, *n, statuses))
            .collect();
        let mut t = parts.join(" ");
        if ranked.len() > 2 {
            t.push_str(&format!(
                " {} more problem group(s) are listed below.",
                ranked.len() - 2
            ));
        }
        t
    };
    if capture.truncated {
        text.push_str(" The file is cut short or damaged; it was analyzed up to that point.");
    }
    text
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::report::{Cause, Facts, Flow};

    fn error_status(status: u16) -> Finding {
        Finding {
            kind: Kind::ErrorStatus,
            severity: Severity::Error,
            capture: "t".into(),
            flow: Flow {
                client: "10.0.0.1:1".into(),
                server: "10.0.0.2:80".into(),
                filter: String::new(),
            },
            packets: vec![1],
            time: String::new(),
            summary: String::new(),
            evidence: Default::default(),
            causes: vec![Cause {
                status,
                upstream_status: None,
                explanation: String::new(),
                next_steps: vec![],
            }],
            leg: None,
            explained_by: vec![],
            explains: vec![],
            facts: Facts {
                status: Some(status),
                ..Facts::default()
            },
        }
    }

    #[test]
    fn test_story_of_a_504_tells_the_back_frames_and_timings() {
        use crate::capture::{Duration, Timestamp};
        use crate::report::{Seen, Timings};
        let seen = |frame: u64, ms: i64| Seen {
            frame,
            ts: Timestamp(ms * 1_000_000),
        };
        let mut front = error_status(504);
        front.flow.server = "10.0.0.5:80".into();
        front.leg = Some(Leg::Front);
        front.explained_by = vec![1];
        front.facts.request = Some("GET /search".into());
        front.facts.request_at = Some(seen(4, 0));
        front.facts.response_at = Some(seen(12, 2001));
        front.facts.timings = Some(Timings {
            client_request: Some(Duration(0)),
            wait: Some(Duration(400_000)),
            connect: Some(Duration(50_000)),
            backend_response: Some(Duration(2_000_000_000)),
            total: Some(Duration(2_001_000_000)),
        });
        let mut back = error_status(504);
        back.kind = Kind::SlowResponse;
        back.flow.server = "10.0.1.7:8080".into();
        back.leg = Some(Leg::Back);
        back.packets = vec![9, 11];
        back.facts.request_at = Some(seen(9, 1));
        let v = verdict(&CaptureSummary::default(), &[front, back]);
        assert!(
            v.contains(
                "because backend 10.0.1.7:8080 did not answer within the balancer's read timeout (back request frame 9, the balancer gave up at frame 11; client request 0 µs, forwarded after 400 µs, connect 50 µs, waited 2.00 s for the response)."
            ),
            "{v}"
        );
    }

    #[test]
    fn regression_a_group_of_error_statuses_names_every_status() {
        let findings = [error_status(500), error_status(503), error_status(500)];
        let v = verdict(&CaptureSummary::default(), &findings);
        assert!(
            v.contains("3 requests with an error status (500, 503)"),
            "{v}"
        );
    }
}
