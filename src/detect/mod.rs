//! Detectors: each judges typed events (an HTTP transaction as it completes, a flaw in the
//! bytes, a connection as it is finalized) and turns what is wrong into findings tied to the
//! status codes they explain. Evidence is built only for findings.

mod accept_queue;
mod handshake;
mod http;
mod icmp;
mod ladder;
mod legs;
mod reset;
mod timeline;
mod tls;
mod transport;

pub(crate) use http::request_key;
pub(crate) use legs::{explaining, front_outcome, rejudge};

use crate::capture::{Duration, Timestamp};
use crate::decode::TooBig;
use crate::flow::{ConnRef, Connection, RoleSource, Seen};
use crate::proto::http::{HttpConn, HttpEvent};
use crate::proto::tls::TlsConn;
use crate::report::{BalancerReport, Cause, Facts, Finding, Flow, Kind, Severity, Unlisted};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Where each transport finding starts; flags with these defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Request heads larger than this are `header_too_large` (the balancer's 32 KB limit).
    pub max_header: usize,
    /// Request targets longer than this are `uri_too_long`.
    pub max_uri: usize,
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
            max_header: 32 * 1024,
            max_uri: 32 * 1024,
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

/// Findings listed per capture, at most; the rest are counted in the summary.
const MAX_LISTED: usize = 20_000;

/// Collects findings, keeping at most `max_per_group` per kind and server so a flood of the
/// same failure stays readable and bounded; the rest are counted.
pub struct Findings {
    pub list: Vec<Finding>,
    per_group: HashMap<GroupKey, GroupCount>,
    max_per_group: u32,
    pub suppressed: u64,
    /// Findings about connections still open (judged as a transaction completed), by
    /// connection: their filter and confidence are settled when the connection is finalized.
    awaiting_end: HashMap<u64, Vec<usize>>,
    /// The capture's balancers, as far as the traffic showed them.
    pub balancers: Vec<BalancerReport>,
    /// Requests answered below 400, remembered (boundedly) to tell a back-leg failure the
    /// balancer recovered from by retrying.
    pub answered: Vec<Answered>,
    /// Addresses seen sending HTTP requests (as far as the legs' bounded memory goes).
    pub http_clients: std::collections::HashSet<std::net::IpAddr>,
    /// Requests over time, for the report's timeline.
    pub timeline: Option<crate::report::Timeline>,
}

/// What the cap on repeated findings counts by: kind and server, and for `error_status` the
/// status too, so a report can say how many requests got each status.
type GroupKey = (Kind, String, Option<u16>);

#[derive(Default)]
struct GroupCount {
    listed: u32,
    unlisted: u64,
}

/// A request that got an answer below 400.
#[derive(Clone, Copy, Debug)]
pub struct Answered {
    pub key: u64,
    pub server: SocketAddr,
    pub request: Timestamp,
    pub response: Timestamp,
    pub response_frame: u64,
    pub status: u16,
}

impl Findings {
    pub fn new(max_per_group: u32) -> Findings {
        Findings {
            list: Vec::new(),
            per_group: HashMap::new(),
            max_per_group,
            suppressed: 0,
            awaiting_end: HashMap::new(),
            balancers: Vec::new(),
            answered: Vec::new(),
            http_clients: std::collections::HashSet::new(),
            timeline: None,
        }
    }

    /// The connection these findings are about has ended: what only its end tells goes in.
    fn settle(&mut self, conn: &Connection) {
        let Some(indexes) = self.awaiting_end.remove(&conn.serial) else {
            return;
        };
        let subject = Subject::of(conn);
        for i in indexes {
            if let Some(f) = self.list.get_mut(i) {
                f.flow.filter = subject.display_filter();
                f.facts.connect = subject.connect;
                f.facts.tcp = Some(Box::new(ladder::moments(conn)));
                connection_notes(f.kind, &subject, &mut f.evidence);
            }
        }
    }

    /// Whether a finding of this kind about this server would still be listed; detectors ask
    /// first so a flood of the same failure costs a counter, not a finding built and dropped.
    pub fn accepts(&mut self, kind: Kind, server: SocketAddr) -> bool {
        self.accepts_key((kind, server.to_string(), None))
    }

    /// [`Findings::accepts`] for an `error_status` finding, counted by its status.
    pub fn accepts_status(&mut self, server: SocketAddr, status: u16) -> bool {
        self.accepts_key((Kind::ErrorStatus, server.to_string(), Some(status)))
    }

    fn accepts_key(&mut self, key: GroupKey) -> bool {
        let full = self.list.len() >= MAX_LISTED;
        match self.per_group.get_mut(&key) {
            Some(n) if full || n.listed >= self.max_per_group => {
                n.unlisted += 1;
                self.suppressed += 1;
                false
            }
            None if full => {
                self.per_group.entry(key).or_default().unlisted += 1;
                self.suppressed += 1;
                false
            }
            _ => true,
        }
    }

    /// Findings counted but not listed, by group, in a fixed order.
    pub fn unlisted(&self) -> Vec<Unlisted> {
        let mut out: Vec<Unlisted> = self
            .per_group
            .iter()
            .filter(|(_, n)| n.unlisted > 0)
            .map(|((kind, server, status), n)| Unlisted {
                kind: *kind,
                server: server.clone(),
                status: *status,
                count: n.unlisted,
            })
            .collect();
        out.sort_by(|a, b| (a.kind, &a.server, a.status).cmp(&(b.kind, &b.server, b.status)));
        out
    }

    pub(crate) fn push(&mut self, f: impl Into<Made>) {
        let made = f.into();
        self.push_about(made.finding, made.open);
    }

    /// Pushes a finding; `open` names the connection when it has not ended yet.
    fn push_about(&mut self, f: Finding, open: Option<u64>) {
        // The per-group cap bounds one failure repeated; this bounds a capture that fails
        // against many servers at once (a scan): memory must not follow the capture's length.
        let status = match f.kind {
            Kind::ErrorStatus => f.causes.first().map(|c| c.status),
            _ => None,
        };
        let full = self.list.len() >= MAX_LISTED;
        let n = self
            .per_group
            .entry((f.kind, f.flow.server.clone(), status))
            .or_default();
        if full || n.listed >= self.max_per_group {
            n.unlisted += 1;
            self.suppressed += 1;
            return;
        }
        n.listed += 1;
        if let Some(serial) = open {
            self.awaiting_end
                .entry(serial)
                .or_default()
                .push(self.list.len());
        }
        self.list.push(f);
    }
}

/// What the detectors are told, in capture order: typed facts, never report JSON.
pub enum Event<'a> {
    /// An HTTP transaction completed, or HTTP framing found a flaw outside any open
    /// transaction, on a connection still open.
    Http {
        conn: &'a ConnRef,
        event: HttpEvent<'a>,
    },
    /// An ICMP too-big message about a packet of no connection in the capture.
    UnmatchedTooBig { msg: &'a TooBig, at: Seen },
    /// A connection ended (closed and lingered, idle, evicted, or the capture ended), with what
    /// its protocol analyzers still hold: open transactions, half-framed messages, the TLS
    /// handshake.
    ConnectionFinalized {
        conn: &'a Connection,
        http: Option<&'a HttpConn>,
        tls: Option<&'a TlsConn>,
    },
}

/// One detector: it judges the events it cares about and keeps only what it needs to compare
/// connections (a count per server, a few frames), never the traffic.
pub trait Detector {
    fn on_event(&mut self, event: &Event<'_>, ctx: &Context<'_>, out: &mut Findings);
    /// The capture ended: findings that compare connections.
    fn finish(&mut self, _ctx: &Context<'_>, _out: &mut Findings) {}
}

/// Detectors that judge one connection at a time and keep nothing.
struct Handshake;
struct Reset;
struct Transport;

/// HTTP judges each transaction and connection; it keeps, per server, the idle times after which
/// the server closed keep-alive connections, to tell a keep-alive race its server's timeout.
#[derive(Default)]
struct Http {
    idle_closes: HashMap<SocketAddr, Vec<Duration>>,
}

/// Servers, and idle closes per server, remembered for that.
const IDLE_CLOSE_SERVERS: usize = 1024;
const IDLE_CLOSES_KEPT: usize = 16;

impl Http {
    /// A server that closed an idle keep-alive connection (FIN first, nothing outstanding).
    fn note_idle_close(&mut self, conn: &Connection, h: &HttpConn) {
        let Some(fin) = conn.to_client.fin else {
            return;
        };
        let client_first = conn.to_server.fin.is_some_and(|c| c.frame < fin.frame)
            || conn.reset.is_some_and(|r| r.at.frame < fin.frame);
        let Some(last) = h.last().and_then(|t| t.response_complete) else {
            return;
        };
        if client_first || h.open().next().is_some() || last.ts > fin.ts {
            return;
        }
        if self.idle_closes.len() >= IDLE_CLOSE_SERVERS
            && !self.idle_closes.contains_key(&conn.server)
        {
            return;
        }
        let list = self.idle_closes.entry(conn.server).or_default();
        if list.len() < IDLE_CLOSES_KEPT {
            list.push(fin.ts.saturating_sub(last.ts));
        }
    }
}

impl Detector for Handshake {
    fn on_event(&mut self, event: &Event<'_>, ctx: &Context<'_>, out: &mut Findings) {
        if let Event::ConnectionFinalized { conn, .. } = event {
            handshake::detect(conn, ctx, out);
        }
    }
}

impl Detector for Reset {
    fn on_event(&mut self, event: &Event<'_>, ctx: &Context<'_>, out: &mut Findings) {
        if let Event::ConnectionFinalized { conn, http, .. } = event {
            reset::detect(conn, http.filter(|h| h.is_http()), ctx, out);
        }
    }
}

impl Detector for Http {
    fn on_event(&mut self, event: &Event<'_>, ctx: &Context<'_>, out: &mut Findings) {
        match event {
            Event::Http { conn, event } => {
                let subject = Subject::open(conn);
                match event {
                    HttpEvent::Done(txn) => http::on_transaction(&subject, txn, ctx, out),
                    HttpEvent::Flaw { flaw, last } => {
                        http::on_flaw(&subject, flaw, *last, ctx, out)
                    }
                }
            }
            // Requests or responses alone cannot be paired; the capture's warnings say it is
            // one-sided.
            Event::ConnectionFinalized {
                conn,
                http: Some(h),
                ..
            } if (h.is_http() || h.transactions > 0) && !conn.one_sided() => {
                self.note_idle_close(conn, h);
                http::on_connection(conn, h, ctx, out)
            }
            _ => {}
        }
    }

    fn finish(&mut self, _ctx: &Context<'_>, out: &mut Findings) {
        for f in out
            .list
            .iter_mut()
            .filter(|f| f.kind == Kind::KeepaliveRace)
        {
            let Some(server) = f.flow.server.parse::<SocketAddr>().ok() else {
                continue;
            };
            let Some(idle) = self.idle_closes.get(&server) else {
                continue;
            };
            if let Some(timeout) = http::stable_idle(idle) {
                f.summary.push_str(&format!(
                    " This backend closes idle connections after {timeout} ({} other idle close(s) in the capture).",
                    idle.len()
                ));
                f.evidence.insert(
                    "server_idle_timeout_ms".into(),
                    timeout.as_millis_f64().into(),
                );
                f.evidence.insert(
                    "other_idle_closes_ms".into(),
                    idle.iter()
                        .map(|d| d.as_millis_f64())
                        .collect::<Vec<_>>()
                        .into(),
                );
            }
        }
    }
}

impl Detector for Transport {
    fn on_event(&mut self, event: &Event<'_>, ctx: &Context<'_>, out: &mut Findings) {
        if let Event::ConnectionFinalized { conn, .. } = event {
            transport::detect(conn, ctx, out);
        }
    }
}

impl Detector for tls::TlsFindings {
    fn on_event(&mut self, event: &Event<'_>, ctx: &Context<'_>, out: &mut Findings) {
        if let Event::ConnectionFinalized {
            conn, tls: Some(t), ..
        } = event
        {
            self.on_connection(conn, t, ctx, out);
        }
    }

    fn finish(&mut self, _ctx: &Context<'_>, out: &mut Findings) {
        std::mem::take(self).finish(out);
    }
}

impl Detector for accept_queue::AcceptQueue {
    fn on_event(&mut self, event: &Event<'_>, ctx: &Context<'_>, _out: &mut Findings) {
        if let Event::ConnectionFinalized { conn, .. } = event {
            self.on_connection(conn, ctx);
        }
    }

    fn finish(&mut self, _ctx: &Context<'_>, out: &mut Findings) {
        std::mem::take(self).finish(out);
    }
}

impl Detector for icmp::Unmatched {
    fn on_event(&mut self, event: &Event<'_>, _ctx: &Context<'_>, _out: &mut Findings) {
        if let Event::UnmatchedTooBig { msg, at } = event {
            self.note(msg, *at);
        }
    }

    fn finish(&mut self, ctx: &Context<'_>, out: &mut Findings) {
        std::mem::take(self).finish(ctx, out);
    }
}

/// Every detector of a capture, and the findings they made.
pub struct Detectors {
    pub findings: Findings,
    /// In the order their findings are listed when they share a first frame.
    detectors: Vec<Box<dyn Detector>>,
}

impl Detectors {
    pub fn new(max_findings_per_group: u32, balancers: &[std::net::IpAddr]) -> Detectors {
        Detectors {
            findings: Findings::new(max_findings_per_group),
            detectors: vec![
                Box::new(tls::TlsFindings::default()),
                Box::new(Handshake),
                Box::new(Reset),
                Box::new(Http::default()),
                Box::new(Transport),
                Box::new(accept_queue::AcceptQueue::default()),
                Box::new(icmp::Unmatched::default()),
                Box::new(legs::Legs::new(balancers)),
                Box::new(timeline::Histogram::default()),
            ],
        }
    }

    /// A detector besides the built-in ones (the access-log collector), judged after them.
    pub fn add(&mut self, detector: Box<dyn Detector>) {
        self.detectors.push(detector);
    }

    pub fn on_event(&mut self, event: Event<'_>, ctx: &Context<'_>) {
        if let Event::ConnectionFinalized { conn, .. } = &event {
            self.findings.settle(conn);
        }
        let before = self.findings.list.len();
        for d in &mut self.detectors {
            d.on_event(&event, ctx, &mut self.findings);
        }
        // Only a connection that has a finding is described for its ladder.
        if let Event::ConnectionFinalized { conn, .. } = &event {
            for f in self.findings.list.iter_mut().skip(before) {
                if f.facts.connection == Some(conn.serial) && f.facts.tcp.is_none() {
                    f.facts.tcp = Some(Box::new(ladder::moments(conn)));
                }
            }
        }
    }

    /// An HTTP transaction completed, or framing found a flaw, on a connection still open.
    pub fn on_http(&mut self, conn: &ConnRef, event: HttpEvent<'_>, ctx: &Context<'_>) {
        self.on_event(Event::Http { conn, event }, ctx);
    }

    /// A finalized connection and what its protocol analyzers hold.
    pub fn on_connection(
        &mut self,
        conn: &Connection,
        http: Option<&HttpConn>,
        tls: Option<&TlsConn>,
        ctx: &Context<'_>,
    ) {
        self.on_event(Event::ConnectionFinalized { conn, http, tls }, ctx);
    }

    /// An ICMP too-big message about a packet of no connection in the capture.
    pub fn on_unmatched_too_big(&mut self, msg: &TooBig, at: Seen, ctx: &Context<'_>) {
        self.on_event(Event::UnmatchedTooBig { msg, at }, ctx);
    }

    pub fn finish(mut self, ctx: &Context<'_>) -> Findings {
        for d in &mut self.detectors {
            d.finish(ctx, &mut self.findings);
        }
        self.findings
    }
}

/// Sets legs and links on a capture's sorted findings (see `legs.rs`).
pub fn link_legs(
    findings: &mut Vec<Finding>,
    balancers: &mut Vec<BalancerReport>,
    answered: &[Answered],
    http_clients: &std::collections::HashSet<std::net::IpAddr>,
) {
    legs::link(findings, balancers, answered, http_clients);
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

/// The connection a finding is about, as far as it is known when the finding is made: a
/// transaction is judged while its connection is still open.
pub struct Subject {
    pub serial: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
    first_frame: u64,
    /// `None` while the connection is open.
    last_frame: Option<u64>,
    start_captured: bool,
    roles: Option<RoleSource>,
    uncaptured: u64,
    /// The handshake's time, once the connection is known whole.
    connect: Option<Duration>,
}

impl Subject {
    pub fn of(conn: &Connection) -> Subject {
        Subject {
            serial: conn.serial,
            client: conn.client,
            server: conn.server,
            first_frame: conn.first.frame,
            last_frame: Some(conn.last.frame),
            start_captured: conn.start_captured(),
            roles: Some(conn.roles),
            uncaptured: conn.uncaptured_bytes(),
            connect: conn
                .syns
                .first
                .zip(conn.syn_acks.first)
                .map(|(syn, synack)| synack.ts.saturating_sub(syn.ts)),
        }
    }

    pub fn open(conn: &ConnRef) -> Subject {
        Subject {
            serial: conn.serial,
            client: conn.client,
            server: conn.server,
            first_frame: conn.first_frame,
            last_frame: None,
            start_captured: conn.start_captured,
            roles: None,
            uncaptured: 0,
            connect: None,
        }
    }

    /// A Wireshark display filter for this connection; the frame range keeps a reused 4-tuple's
    /// other connections out.
    pub fn display_filter(&self) -> String {
        let (ca, sa) = (self.client.ip(), self.server.ip());
        let ip = if ca.is_ipv4() { "ip" } else { "ipv6" };
        let mut filter = format!(
            "{ip}.addr=={ca} && tcp.port=={} && {ip}.addr=={sa} && tcp.port=={} && frame.number>={}",
            self.client.port(),
            self.server.port(),
            self.first_frame,
        );
        if let Some(last) = self.last_frame {
            filter.push_str(&format!(" && frame.number<={last}"));
        }
        filter
    }
}

/// What every finding about a connection says of the connection itself.
fn connection_notes(
    kind: Kind,
    subject: &Subject,
    evidence: &mut serde_json::Map<String, serde_json::Value>,
) {
    evidence.insert("connection".into(), subject.serial.into());
    if subject.uncaptured > 0 && kind != Kind::CaptureGap {
        evidence.insert(
            "confidence".into(),
            format!(
                "lower: the capture is missing {} byte(s) of this connection",
                subject.uncaptured
            )
            .into(),
        );
    }
    if !subject.start_captured {
        evidence.insert("start_captured".into(), false.into());
        let how = match subject.roles {
            Some(RoleSource::SynAck) => "inferred from the SYN-ACK's sender",
            _ => "inferred from the ports: the well-known or lower port is the server",
        };
        evidence.insert("roles".into(), how.into());
    }
}

/// The report's name for a side of a connection.
pub(crate) fn actor(r: crate::flow::Role) -> crate::report::Actor {
    match r {
        crate::flow::Role::Client => crate::report::Actor::Client,
        crate::flow::Role::Server => crate::report::Actor::Server,
    }
}

/// A finding made, with the connection it is about.
pub(crate) struct Made {
    pub finding: Finding,
    open: Option<u64>,
}

impl Made {
    /// Adds what the detector knows as typed facts; the evidence keeps its words for people.
    pub fn with(mut self, fill: impl FnOnce(&mut Facts)) -> Made {
        fill(&mut self.finding.facts);
        self
    }
}

impl From<Finding> for Made {
    fn from(finding: Finding) -> Made {
        Made {
            finding,
            open: None,
        }
    }
}

impl Draft {
    pub fn finish(self, conn: &Connection, ctx: &Context<'_>) -> Finding {
        self.finish_for(&Subject::of(conn), ctx).finding
    }

    pub fn finish_for(self, subject: &Subject, ctx: &Context<'_>) -> Made {
        let mut packets = self.packets;
        packets.sort_unstable();
        packets.dedup();
        let packets_first = packets.first().copied().unwrap_or_default();
        let mut evidence = match self.evidence {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        connection_notes(self.kind, subject, &mut evidence);
        Made {
            finding: Finding {
                kind: self.kind,
                severity: self.severity,
                capture: ctx.capture.to_string(),
                flow: Flow {
                    client: subject.client.to_string(),
                    server: subject.server.to_string(),
                    filter: subject.display_filter(),
                },
                packets,
                time: self.first_ts.rfc3339(),
                summary: self.summary,
                evidence,
                causes: self.causes,
                leg: None,
                explained_by: Vec::new(),
                explains: Vec::new(),
                facts: Facts {
                    at: Seen {
                        frame: packets_first,
                        ts: self.first_ts,
                    },
                    connection: Some(subject.serial),
                    connect: subject.connect,
                    ..Facts::default()
                },
            },
            open: subject.last_frame.is_none().then_some(subject.serial),
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
