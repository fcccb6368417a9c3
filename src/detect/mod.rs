//! Detectors: each reads the facts a finalized connection carries and turns what is wrong with
//! it into findings tied to the status codes they explain.

mod accept_queue;
mod handshake;
mod http;
mod icmp;
mod reset;
mod tls;
mod transport;

use crate::capture::{Duration, Timestamp};
use crate::decode::TooBig;
use crate::flow::{Connection, Seen};
use crate::proto::http::HttpConn;
use crate::proto::tls::TlsConn;
use crate::report::{Cause, Finding, Flow, Kind, Severity};
use std::collections::HashMap;

/// Where each transport finding starts; flags with these defaults.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// IP packets above this are oversize (`--mtu`).
    pub mtu: u32,
    /// Share of a direction's data segments retransmitted (`--loss-threshold`, percent).
    pub loss_rate: f64,
    /// Loss needs at least this many retransmissions and data segments to be judged at all.
    pub loss_min_retransmissions: u32,
    pub loss_min_segments: u64,
    /// Handshake round trip (`--rtt-threshold`, ms).
    pub rtt: Duration,
    /// Longest zero-window stall (`--zero-window-threshold`, ms).
    pub zero_window: Duration,
    /// Time from the end of a request to the first response byte (`--response-timeout`).
    pub response_timeout: Duration,
    /// A request left unanswered this long when its connection or the capture ended is
    /// `no_response`; shorter, and the capture may simply have stopped too soon.
    pub no_response_after: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            mtu: 1500,
            loss_rate: 0.03,
            loss_min_retransmissions: 3,
            loss_min_segments: 10,
            rtt: Duration::from_millis(300),
            zero_window: Duration::from_secs(1),
            response_timeout: Duration::from_secs(60),
            no_response_after: Duration::from_secs(1),
        }
    }
}

/// What a detector knows besides the connection itself.
pub struct Context<'a> {
    pub capture: &'a str,
    pub thresholds: &'a Thresholds,
    /// The latest capture time seen when the connection was finalized.
    pub now: Timestamp,
    /// The connection was finalized because the capture ended, not because it closed or idled.
    pub at_capture_end: bool,
}

/// Collects findings, keeping at most `max_per_group` per kind and server so a flood of the
/// same failure stays readable and bounded; the rest are counted.
pub struct Findings {
    pub list: Vec<Finding>,
    per_group: HashMap<(Kind, String), u32>,
    max_per_group: u32,
    pub suppressed: u64,
}

impl Findings {
    pub fn new(max_per_group: u32) -> Findings {
        Findings {
            list: Vec::new(),
            per_group: HashMap::new(),
            max_per_group,
            suppressed: 0,
        }
    }

    /// Whether a finding of this kind about this server would still be listed; detectors ask
    /// first so a flood of the same failure costs a counter, not a finding built and dropped.
    pub fn accepts(&mut self, kind: Kind, server: std::net::SocketAddr) -> bool {
        let key = (kind, server.to_string());
        match self.per_group.get(&key) {
            Some(n) if *n >= self.max_per_group => {
                self.suppressed += 1;
                false
            }
            _ => true,
        }
    }

    pub fn push(&mut self, f: Finding) {
        let n = self
            .per_group
            .entry((f.kind, f.flow.server.clone()))
            .or_default();
        if *n >= self.max_per_group {
            self.suppressed += 1;
            return;
        }
        *n += 1;
        self.list.push(f);
    }
}

/// Every detector of a capture, with the state the ones that compare connections keep.
pub struct Detectors {
    pub findings: Findings,
    accept_queue: accept_queue::AcceptQueue,
    icmp: icmp::Unmatched,
    tls: tls::TlsFindings,
}

impl Detectors {
    pub fn new(max_findings_per_group: u32) -> Detectors {
        Detectors {
            findings: Findings::new(max_findings_per_group),
            accept_queue: accept_queue::AcceptQueue::default(),
            icmp: icmp::Unmatched::default(),
            tls: tls::TlsFindings::default(),
        }
    }

    /// Runs every connection detector on a finalized connection and what HTTP it carried.
    pub fn on_connection(
        &mut self,
        conn: &Connection,
        http: Option<&HttpConn>,
        tls: Option<&TlsConn>,
        ctx: &Context<'_>,
    ) {
        if let Some(t) = tls {
            self.tls.on_connection(conn, t, ctx, &mut self.findings);
        }
        handshake::detect(conn, ctx, &mut self.findings);
        reset::detect(conn, http.filter(|h| h.is_http), ctx, &mut self.findings);
        // Requests or responses alone cannot be paired; the capture's warnings say it is one-sided.
        if let Some(h) =
            http.filter(|h| (h.is_http || !h.transactions.is_empty()) && !conn.one_sided())
        {
            http::detect(conn, h, ctx, &mut self.findings);
        }
        transport::detect(conn, ctx, &mut self.findings);
        self.accept_queue.on_connection(conn, ctx);
    }

    /// An ICMP too-big message about a packet of no connection in the capture.
    pub fn on_unmatched_too_big(&mut self, msg: &TooBig, at: Seen) {
        self.icmp.note(msg, at);
    }

    pub fn finish(mut self, ctx: &Context<'_>) -> Findings {
        self.accept_queue.finish(&mut self.findings);
        self.icmp.finish(ctx, &mut self.findings);
        self.tls.finish(&mut self.findings);
        self.findings
    }
}

/// What a detector decides about a connection; [`Draft::finish`] adds what every finding shares.
pub(crate) struct Draft {
    pub kind: Kind,
    pub severity: Severity,
    pub packets: Vec<u64>,
    pub first_ts: Timestamp,
    pub summary: String,
    pub evidence: serde_json::Value,
    pub causes: Vec<Cause>,
}

impl Draft {
    pub fn finish(self, conn: &Connection, ctx: &Context<'_>) -> Finding {
        let mut packets = self.packets;
        packets.sort_unstable();
        packets.dedup();
        let mut evidence = match self.evidence {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        evidence.insert("connection".into(), conn.serial.into());
        let missing = conn.uncaptured_bytes();
        if missing > 0 && self.kind != Kind::CaptureGap {
            evidence.insert(
                "confidence".into(),
                format!("lower: the capture is missing {missing} byte(s) of this connection")
                    .into(),
            );
        }
        if !conn.start_captured() {
            evidence.insert("start_captured".into(), false.into());
            let how = match conn.roles {
                crate::flow::RoleSource::SynAck => "inferred from the SYN-ACK's sender",
                _ => "inferred from the ports: the well-known or lower port is the server",
            };
            evidence.insert("roles".into(), how.into());
        }
        Finding {
            kind: self.kind,
            severity: self.severity,
            capture: ctx.capture.to_string(),
            flow: Flow {
                client: conn.client.to_string(),
                server: conn.server.to_string(),
                filter: conn.display_filter(),
            },
            packets,
            time: self.first_ts.rfc3339(),
            summary: self.summary,
            evidence,
            causes: self.causes,
        }
    }
}

pub(crate) fn cause(
    status: u16,
    upstream: Option<&str>,
    explanation: String,
    next: &[String],
) -> Cause {
    Cause {
        status,
        upstream_status: upstream.map(str::to_string),
        explanation,
        next_steps: next.to_vec(),
    }
}
