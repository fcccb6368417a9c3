//! Joining log lines to captured transactions. The logs are read first and indexed by what a
//! capture can show of a line: the client's address and port (a client or proxy capture), the
//! client's address and the request (a log without ports), or the backend tried and the request
//! (a backend capture, where the client port is the balancer's), and the trace id the request
//! carried (`X-Amzn-Trace-Id`, `X-Request-Id`), which beats them all. While a capture is analyzed,
//! [`Collector`] (a detector) keeps only the transactions some line could be: memory follows the
//! log, not the capture. When every capture is done, [`join`] finds each pair of log and
//! capture's clock offset from the lines that matched one transaction only, then picks each
//! line's transaction within that offset.

use super::{LineClass, Log, LogError, LogLine, ReadOptions, TimeIs, haproxy};
use crate::capture::{Duration, Timestamp};
use crate::detect::{Context, Detector, Event, Findings};
use crate::flow::Seen;
use crate::proto::http::Transaction;
use crate::report::{ClockOffset, Finding, Flow, LogMatch, LogReport, Report, SkippedLine};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// A line in the index: which log, which of its kept lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LineRef {
    pub log: u32,
    pub line: u32,
}

/// The logs of a run, indexed for the collectors of every capture.
#[derive(Debug, Default)]
pub struct LogIndex {
    pub logs: Vec<Log>,
    by_client: HashMap<SocketAddr, Vec<LineRef>>,
    by_client_request: HashMap<(IpAddr, u64), Vec<LineRef>>,
    /// (backend, request) -> lines, with the status that backend gave (`None`: none).
    by_upstream: HashMap<(SocketAddr, u64), Vec<Attempt>>,
    /// Backends that gave no answer (or nginx's 502/504 for one it never reached), for
    /// connections that never carried a request (refused, unanswered SYNs).
    by_silent_upstream: HashMap<SocketAddr, Vec<LineRef>>,
    /// A trace id's [`trace_key`] -> lines.
    by_trace: HashMap<String, Vec<LineRef>>,
    /// How far a log's clock may be from a capture's (`--max-clock-offset`).
    pub max_offset: Duration,
}

/// A line, and the status the backend it names gave it (`None`: none).
type Attempt = (LineRef, Option<u16>);

/// How a transaction was found for a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    ClientPort,
    ClientRequest,
    Upstream,
    /// The request carried the line's trace id, on the front leg or the back one.
    Trace {
        front: bool,
    },
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::ClientPort => "client_port",
            Via::ClientRequest => "client_request",
            Via::Upstream => "upstream_request",
            Via::Trace { .. } => "trace_id",
        }
    }

    fn front(self) -> bool {
        match self {
            Via::Upstream => false,
            Via::Trace { front } => front,
            _ => true,
        }
    }

    fn is_trace(self) -> bool {
        matches!(self, Via::Trace { .. })
    }
}

/// A transaction some line could be, kept while its capture is analyzed.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub at: LineRef,
    pub via: Via,
    pub capture: String,
    pub connection: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub first_frame: u64,
    /// `None` for a connection that never carried a request (then `start` is its first SYN).
    pub request: Option<Seen>,
    pub start: Seen,
    pub response: Option<Seen>,
    /// The response's last byte, else how the exchange ended (a close, a reset, the last frame).
    pub end: Seen,
    pub status: Option<u16>,
    /// Indexes into the report's findings, once the capture's findings are final.
    pub findings: Vec<usize>,
}

/// Candidates kept per line; beyond it the one furthest from the line's time goes.
const PER_LINE: usize = 8;
/// How far a logged moment may sit from the packets once the clocks are aligned: scheduling,
/// and the balancer's own time between the packets and the line.
const SLACK: Duration = Duration::from_secs(1);

/// A request's fingerprint, the same for a log line and a captured request line. The target is
/// cut where the HTTP analyzer cuts what it keeps.
pub fn request_key(method: &str, target: &str) -> u64 {
    use std::hash::BuildHasher;
    let target = match target
        .char_indices()
        .nth(crate::proto::http::head::TARGET_KEPT)
    {
        Some((i, _)) => &target[..i],
        None => target,
    };
    foldhash::fast::FixedState::with_seed(0x6c6f_6773).hash_one((method, target))
}

/// The part of a trace id that a log and a request agree on: AWS's header gains `Self=` and
/// `Sampled=` fields as it passes balancers while its `Root=` stays; other ids are taken whole.
pub fn trace_key(id: &str) -> &str {
    id.split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("Root="))
        .unwrap_or(id.trim())
}

/// Whether a transaction carrying a line's trace id is the line's front connection (the
/// logged client's) rather than the balancer's own to a backend.
fn trace_is_front(line: &LogLine, client: SocketAddr, server: SocketAddr) -> bool {
    if line.client() == Some(client) {
        return true;
    }
    if line.upstreams().iter().any(|(a, _)| *a == Some(server)) {
        return false;
    }
    line.client_ip == Some(client.ip())
}

impl LogIndex {
    /// Reads every log; a log that cannot be read, or has no parsable line, is an error naming it.
    pub fn load(
        paths: &[impl AsRef<Path>],
        options: &ReadOptions,
        max_offset: Duration,
    ) -> Result<LogIndex, LogError> {
        let logs = paths
            .iter()
            .map(|p| super::read_path(p.as_ref(), options))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LogIndex::new(logs, max_offset))
    }

    pub fn new(logs: Vec<Log>, max_offset: Duration) -> LogIndex {
        let mut index = LogIndex {
            max_offset,
            ..LogIndex::default()
        };
        for (li, log) in logs.iter().enumerate() {
            for (i, line) in log.lines.iter().enumerate() {
                let at = LineRef {
                    log: li as u32,
                    line: i as u32,
                };
                let key = line
                    .method
                    .as_deref()
                    .zip(line.target.as_deref())
                    .map(|(m, t)| request_key(m, t));
                match (line.client(), line.client_ip, key) {
                    (Some(c), _, _) => index.by_client.entry(c).or_default().push(at),
                    (None, Some(ip), Some(k)) => {
                        index.by_client_request.entry((ip, k)).or_default().push(at)
                    }
                    _ => {}
                }
                if let Some(id) = &line.trace_id {
                    index
                        .by_trace
                        .entry(trace_key(id).to_string())
                        .or_default()
                        .push(at);
                }
                for (addr, status) in line.upstreams() {
                    let Some(addr) = addr else { continue };
                    if let Some(k) = key {
                        index
                            .by_upstream
                            .entry((addr, k))
                            .or_default()
                            .push((at, status));
                    }
                    // nginx logs its own 502 (refused) or 504 (connect timeout) as the status
                    // of a backend it never reached.
                    if matches!(status, None | Some(502 | 504)) {
                        index.by_silent_upstream.entry(addr).or_default().push(at);
                    }
                }
            }
        }
        index.logs = logs;
        index
    }

    pub fn line(&self, at: LineRef) -> Option<&LogLine> {
        self.logs.get(at.log as usize)?.lines.get(at.line as usize)
    }

    /// Whether a captured moment could be this line's, however its clock sits.
    fn in_window(&self, line: &LogLine, ts: Timestamp) -> bool {
        let reach = self.max_offset.0
            + line.precision.0
            + line.request_time.map_or(0, |d| d.0)
            + 2 * SLACK.0;
        (line.mid().0.saturating_sub(ts.0)).abs() <= reach
    }
}

/// The detector that keeps, for one capture, the transactions some line could be.
pub struct Collector {
    index: std::sync::Arc<LogIndex>,
    kept: HashMap<LineRef, Vec<Candidate>>,
    /// Where the candidates go when the capture ends: the pipeline that registered this
    /// detector holds the other end (detect/ knows nothing of access logs).
    out: Candidates,
}

/// The candidates a [`Collector`] hands over at the end of its capture.
pub type Candidates = std::sync::Arc<std::sync::Mutex<Vec<Candidate>>>;

impl Collector {
    pub fn new(index: std::sync::Arc<LogIndex>, out: Candidates) -> Collector {
        Collector {
            index,
            out,
            kept: HashMap::new(),
        }
    }

    fn offer(&mut self, c: Candidate) {
        let Some(line) = self.index.line(c.at) else {
            return;
        };
        // A trace id is the line's whatever the clocks say.
        if !c.via.is_trace() && !self.index.in_window(line, c.start.ts) {
            return;
        }
        let distance = |c: &Candidate| {
            if c.via.is_trace() {
                return 0;
            }
            (line.mid().0.saturating_sub(c.start.ts.0)).abs()
        };
        let list = self.kept.entry(c.at).or_default();
        if list.len() < PER_LINE {
            list.push(c);
        } else if let Some(worst) = (0..list.len()).max_by_key(|&i| distance(&list[i]))
            && distance(&list[worst]) > distance(&c)
        {
            list[worst] = c;
        }
    }

    /// Every line the transaction could be.
    fn on_transaction(&mut self, t: &Transaction, base: &Candidate) {
        let key = t
            .line
            .as_ref()
            .map(|l| request_key(l.method.as_str(), &l.target));
        let Some(request) = t.request else { return };
        let c = Candidate {
            request: Some(request),
            start: request,
            response: t.response,
            end: t.response_complete.unwrap_or(base.end),
            status: t.status,
            ..base.clone()
        };
        let index = self.index.clone();
        let mut ids = t.trace_ids.iter().map(trace_key);
        let (first, second) = (ids.next(), ids.next());
        for id in [first, second.filter(|s| Some(*s) != first)]
            .into_iter()
            .flatten()
        {
            for &at in index.by_trace.get(id).into_iter().flatten() {
                if let Some(line) = index.line(at) {
                    let front = trace_is_front(line, c.client, c.server);
                    self.offer(Candidate {
                        at,
                        via: Via::Trace { front },
                        ..c.clone()
                    });
                }
            }
        }
        let front_ok = |line: &LogLine| t.status.is_none() || t.status == Some(line.status);
        for &at in index.by_client.get(&c.client).into_iter().flatten() {
            if index.line(at).is_some_and(front_ok) {
                self.offer(Candidate {
                    at,
                    via: Via::ClientPort,
                    ..c.clone()
                });
            }
        }
        let Some(key) = key else { return };
        for &at in index
            .by_client_request
            .get(&(c.client.ip(), key))
            .into_iter()
            .flatten()
        {
            if index.line(at).is_some_and(front_ok) {
                self.offer(Candidate {
                    at,
                    via: Via::ClientRequest,
                    ..c.clone()
                });
            }
        }
        for &(at, status) in index
            .by_upstream
            .get(&(c.server, key))
            .into_iter()
            .flatten()
        {
            // An upstream that gave no status may still have sent part of an answer; nginx
            // logs its own 504 as the upstream's status when the backend was too slow,
            // whatever it sent later, and its own 502 when the backend failed: never for a
            // whole, well-formed answer of another status.
            let failed = t.response_complete.is_none() || !t.flaws.is_empty();
            let fits = match status {
                None | Some(504) => true,
                Some(502) => t.status.is_none_or(|s| s == 502) || failed,
                s => s == t.status,
            };
            if fits {
                self.offer(Candidate {
                    at,
                    via: Via::Upstream,
                    ..c.clone()
                });
            }
        }
    }
}

impl Detector for Collector {
    fn on_event(&mut self, event: &Event<'_>, ctx: &Context<'_>, _out: &mut Findings) {
        match event {
            Event::Http {
                conn,
                event: crate::proto::http::HttpEvent::Done(t),
            } => {
                let at = t.request.unwrap_or_default();
                let base = Candidate {
                    at: LineRef { log: 0, line: 0 },
                    via: Via::ClientPort,
                    capture: ctx.capture.to_string(),
                    connection: conn.serial,
                    client: conn.client,
                    server: conn.server,
                    first_frame: conn.first_frame,
                    request: None,
                    start: at,
                    response: None,
                    end: t.response_complete.or(t.response).unwrap_or(at),
                    status: None,
                    findings: Vec::new(),
                };
                self.on_transaction(t, &base);
            }
            Event::ConnectionFinalized { conn, http, .. } => {
                // Where an unanswered exchange ended: the first close or reset, else the last frame.
                let end = conn.ended();
                let first = conn.syns.first.unwrap_or(conn.first);
                let base = Candidate {
                    at: LineRef { log: 0, line: 0 },
                    via: Via::Upstream,
                    capture: ctx.capture.to_string(),
                    connection: conn.serial,
                    client: conn.client,
                    server: conn.server,
                    first_frame: conn.first.frame,
                    request: None,
                    start: first,
                    response: None,
                    end,
                    status: None,
                    findings: Vec::new(),
                };
                let mut any = false;
                for t in http.iter().flat_map(|h| h.open()) {
                    any = true;
                    self.on_transaction(t, &base);
                }
                let carried = http.is_some_and(|h| h.transactions > 0 || h.is_http());
                if !any && !carried && !conn.established {
                    let index = self.index.clone();
                    for &at in index
                        .by_silent_upstream
                        .get(&conn.server)
                        .into_iter()
                        .flatten()
                    {
                        self.offer(Candidate { at, ..base.clone() });
                    }
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, _ctx: &Context<'_>, _out: &mut Findings) {
        let kept = std::mem::take(&mut self.kept).into_values().flatten();
        // A poisoned lock means another thread panicked with it; the candidates are lost then.
        if let Ok(mut out) = self.out.lock() {
            out.extend(kept);
        }
    }
}

/// Once a capture's findings are sorted and linked: each candidate's findings are those about
/// its connection (its own request's, or the connection's as a whole) and what explains them.
pub fn attach(candidates: &mut [Candidate], findings: &[Finding]) {
    let mut by_conn: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, f) in findings.iter().enumerate() {
        if let Some(c) = f.facts.connection {
            by_conn.entry(c).or_default().push(i);
        }
    }
    for c in candidates {
        let mut found: Vec<usize> = by_conn
            .get(&c.connection)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| {
                let f = &findings[i];
                match (f.facts.request_at, c.request) {
                    (Some(r), Some(q)) => r.frame == q.frame,
                    _ => true,
                }
            })
            .collect();
        let mut seen: HashSet<usize> = found.iter().copied().collect();
        let mut i = 0;
        while i < found.len() {
            for &j in &findings[found[i]].explained_by {
                if j < findings.len() && seen.insert(j) {
                    found.push(j);
                }
            }
            i += 1;
        }
        found.sort_unstable();
        c.findings = found;
    }
}

fn flow_of(c: &Candidate) -> Flow {
    let (ca, sa) = (c.client.ip(), c.server.ip());
    let ip = if ca.is_ipv4() { "ip" } else { "ipv6" };
    Flow {
        client: c.client.to_string(),
        server: c.server.to_string(),
        filter: format!(
            "{ip}.addr=={ca} && tcp.port=={} && {ip}.addr=={sa} && tcp.port=={} && frame.number>={}",
            c.client.port(),
            c.server.port(),
            c.first_frame
        ),
    }
}

/// Log clock minus capture clock, if this candidate is the line's transaction, and how far off
/// that may be for the line. A front transaction ends when the balancer logs it; a back one
/// starts just after the balancer's request began (the logged end less `request_time`).
fn sample(line: &LogLine, c: &Candidate) -> (i64, i64) {
    let loose = line.precision.0 / 2 + SLACK.0;
    let mid = line.mid().0;
    match (line.time_is, c.via.front(), line.request_time) {
        (TimeIs::Start, _, _) => (mid.saturating_sub(c.start.ts.0), loose),
        (TimeIs::End, true, _) => (mid.saturating_sub(c.end.ts.0), loose),
        (TimeIs::End, false, Some(rt)) => {
            (mid.saturating_sub(rt.0).saturating_sub(c.start.ts.0), loose)
        }
        (TimeIs::End, false, None) => (mid.saturating_sub(c.end.ts.0), loose + SLACK.0 * 4),
    }
}

/// The clock offset that fits every sample (each known to within its half-precision: a second
/// for `$time_local`), else the median: one outlier cannot move it far. Also aligns captures of
/// the same traffic with each other (`crate::hosts`).
pub(crate) fn offset(samples: &[(i64, i64)]) -> Option<i64> {
    let lo = samples.iter().map(|(s, e)| s - e).max()?;
    let hi = samples.iter().map(|(s, e)| s + e).min()?;
    if lo <= hi {
        return Some(lo + (hi - lo) / 2);
    }
    let mut v: Vec<i64> = samples.iter().map(|(s, _)| *s).collect();
    v.sort_unstable();
    Some(v[v.len() / 2])
}

/// `10:42:07.118`
fn clock(ts: Timestamp) -> String {
    let s = ts.rfc3339();
    s.get(11..23).unwrap_or(&s).to_string()
}

/// Builds the report's log sections from every capture's candidates (their findings already
/// indexing the report's list).
pub fn join(report: &mut Report, index: &LogIndex, candidates: Vec<Candidate>) {
    let mut per_line: HashMap<LineRef, Vec<Candidate>> = HashMap::new();
    for c in candidates {
        per_line.entry(c.at).or_default().push(c);
    }
    let mut mentioned: HashSet<usize> = HashSet::new();
    for (li, log) in index.logs.iter().enumerate() {
        // Offsets per capture, from lines that only one front (or only one back) transaction fits.
        let mut samples: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
        for (i, line) in log.lines.iter().enumerate() {
            let at = LineRef {
                log: li as u32,
                line: i as u32,
            };
            let Some(list) = per_line.get(&at) else {
                continue;
            };
            for front in [true, false] {
                let leg: Vec<&Candidate> = list.iter().filter(|c| c.via.front() == front).collect();
                let traced = leg.iter().any(|c| c.via.is_trace());
                // The same transaction may come by its trace id and another key.
                let mut these: Vec<&Candidate> = leg
                    .into_iter()
                    .filter(|c| !traced || c.via.is_trace())
                    .collect();
                these.sort_by_key(|c| (&c.capture, c.connection, c.start.frame));
                these.dedup_by_key(|c| (&c.capture, c.connection, c.start.frame));
                if let [c] = these[..]
                    && c.via != Via::ClientRequest
                {
                    samples
                        .entry(&c.capture)
                        .or_default()
                        .push((sample(line, c).0, line.precision.0 / 2));
                }
            }
        }
        let mut offsets: Vec<ClockOffset> = Vec::new();
        let mut offset_of: HashMap<String, i64> = HashMap::new();
        for (capture, s) in samples {
            let n = s.len();
            if let Some(m) = offset(&s) {
                offset_of.insert(capture.to_string(), m);
                offsets.push(ClockOffset {
                    capture: capture.to_string(),
                    // `+ 0.0` turns a rounded -0 into 0.
                    offset_ms: (m as f64 / 1e6).round() + 0.0,
                    samples: n,
                });
            }
        }
        offsets.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.capture.cmp(&b.capture)));
        let mut matched = 0u64;
        for (i, line) in log.lines.iter().enumerate() {
            let at = LineRef {
                log: li as u32,
                line: i as u32,
            };
            let list = per_line.get(&at).map(Vec::as_slice).unwrap_or(&[]);
            let pick = |front: bool| {
                let leg = || list.iter().filter(move |c| c.via.front() == front);
                let distance = |c: &Candidate| {
                    let off = offset_of.get(&c.capture).copied().unwrap_or(0);
                    (sample(line, c).0 - off).abs()
                };
                // The strongest key: no time window, only the nearest when a retry sent the
                // same id twice.
                if let Some(c) = leg()
                    .filter(|c| c.via.is_trace())
                    .min_by_key(|c| distance(c))
                {
                    return Some(c);
                }
                leg()
                    .filter_map(|c| {
                        let off = offset_of.get(&c.capture).copied().unwrap_or(0);
                        let (at, within) = sample(line, c);
                        let d = (at - off).abs();
                        (d <= within).then_some((d, c))
                    })
                    .min_by_key(|(d, _)| *d)
                    .map(|(_, c)| c)
            };
            let (front, back) = (pick(true), pick(false));
            let m = log_match(log, line, front, back, &report.findings);
            if m.flow.is_some() {
                matched += 1;
            }
            mentioned.extend(m.findings.iter().copied());
            report.log_matches.push(m);
        }
        report.logs.push(log_report(
            log,
            matched,
            offsets,
            &report.captures,
            index.max_offset,
        ));
    }
    report.unlogged_findings = Some(
        report
            .findings
            .iter()
            .enumerate()
            .filter(|(i, f)| {
                f.severity == crate::report::Severity::Error
                    && f.facts.request_at.is_some()
                    && !mentioned.contains(i)
            })
            .map(|(i, _)| i)
            .collect(),
    );
}

fn log_match(
    log: &Log,
    line: &LogLine,
    front: Option<&Candidate>,
    back: Option<&Candidate>,
    findings: &[Finding],
) -> LogMatch {
    let main = front.or(back);
    // Frame numbers are per capture: the back leg's go in a list of their own when it was
    // captured elsewhere.
    let elsewhere = back.filter(|b| main.is_some_and(|m| m.capture != b.capture));
    let frames_of = |legs: &[Option<&Candidate>]| {
        let mut v: Vec<u64> = legs
            .iter()
            .flatten()
            .flat_map(|c| [c.request.or(Some(c.start)), c.response])
            .flatten()
            .map(|s| s.frame)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let packets = match elsewhere {
        Some(_) => frames_of(&[front]),
        None => frames_of(&[front, back]),
    };
    let back_packets = elsewhere.map(|b| frames_of(&[Some(b)]));
    let mut linked: Vec<usize> = [front, back]
        .into_iter()
        .flatten()
        .flat_map(|c| c.findings.iter().copied())
        .collect();
    linked.sort_unstable();
    linked.dedup();
    let termination = line.termination.as_deref().map(haproxy::termination_words);
    let summary = sentence(line, main, &linked, findings, termination.as_deref());
    LogMatch {
        log: log.path.clone(),
        line: line.line,
        time: line.time.rfc3339(),
        client: line
            .client()
            .map(|c| c.to_string())
            .or(line.client_ip.map(|i| i.to_string())),
        request: line.request(),
        status: line.status,
        upstream_status: line.upstream_status.clone(),
        upstream_addr: line.upstream_addr.clone(),
        class: line.class(),
        termination,
        matched_by: main.map(|c| c.via.name()),
        capture: main.map(|c| c.capture.clone()),
        flow: main.map(flow_of),
        back_flow: back.filter(|_| front.is_some()).map(flow_of),
        back_capture: back.filter(|_| front.is_some()).map(|c| c.capture.clone()),
        back_packets,
        packets,
        findings: linked,
        summary,
    }
}

/// "log line 812, 502 upstream - at 10:42:07.118: <what the packets say>".
fn sentence(
    line: &LogLine,
    main: Option<&Candidate>,
    linked: &[usize],
    findings: &[Finding],
    termination: Option<&str>,
) -> String {
    let mut s = format!("log line {}, {}", line.line, line.status);
    if let Some(u) = &line.upstream_status {
        s.push_str(&format!(" upstream {}", if u.is_empty() { "-" } else { u }));
    }
    s.push_str(&format!(" at {}", clock(line.time)));
    if let Some(t) = termination {
        s.push_str(&format!(" (haproxy {t})"));
    }
    let Some(c) = main else {
        s.push_str(": no captured transaction matches it");
        return s;
    };
    // The finding at the root of the story: one that nothing else explains, on the back leg
    // when there is one, else the first.
    let root = linked
        .iter()
        .map(|&i| &findings[i])
        .filter(|f| f.explained_by.is_empty())
        .max_by_key(|f| {
            (
                f.leg == Some(crate::report::Leg::Back),
                f.severity,
                std::cmp::Reverse(f.facts.at.frame),
            )
        });
    match root {
        Some(f) => {
            let shown: Vec<String> = f.packets.iter().take(6).map(u64::to_string).collect();
            // A finding from another host's capture: its frames are that file's, and its
            // clock is not the request's.
            let here = f.capture == c.capture;
            let place = if here {
                String::new()
            } else {
                format!(" in {}", f.capture)
            };
            s.push_str(&format!(": {}{place} (frames {})", f.kind, shown.join(", ")));
            if let Some(q) = c.request
                && here
                && f.facts.at.ts > q.ts
            {
                s.push_str(&format!(
                    ", {} after the request (frame {})",
                    f.facts.at.ts.saturating_sub(q.ts),
                    q.frame
                ));
            }
            s.push_str(&format!(": {}", f.summary));
        }
        None => match (c.request, c.response) {
            (Some(q), Some(r)) => s.push_str(&format!(
                ": request at frame {}, answered {} at frame {}; nothing else wrong on that connection",
                q.frame,
                c.status.map_or("-".into(), |s| s.to_string()),
                r.frame
            )),
            (Some(q), None) => s.push_str(&format!(
                ": request at frame {}, never answered on that connection",
                q.frame
            )),
            (None, _) => s.push_str(&format!(
                ": connection attempt at frame {} to {} carried no request",
                c.start.frame, c.server
            )),
        },
    }
    s
}

fn log_report(
    log: &Log,
    matched: u64,
    offsets: Vec<ClockOffset>,
    captures: &[crate::report::CaptureSummary],
    max_offset: Duration,
) -> LogReport {
    let mut notes = Vec::new();
    let parse = |s: &Option<String>| s.as_deref().and_then(super::time::iso8601).map(|t| t.at);
    let first = captures
        .iter()
        .filter_map(|c| parse(&c.first_timestamp))
        .min();
    let last = captures
        .iter()
        .filter_map(|c| parse(&c.last_timestamp))
        .max();
    if let (Some(lf), Some(ll), Some(cf), Some(cl)) = (log.first, log.last, first, last) {
        let reach = max_offset.0 + SLACK.0;
        if ll.0.saturating_add(reach) < cf.0 || lf.0.saturating_sub(reach) > cl.0 {
            notes.push(format!(
                "the log covers {} to {} and the captures {} to {}: further apart than --max-clock-offset ({}), so no line was matched; the log is from another time window, or a clock is that far off",
                lf.rfc3339(),
                ll.rfc3339(),
                cf.rfc3339(),
                cl.rfc3339(),
                max_offset
            ));
        }
    }
    let reported = log.lines.len() as u64;
    if notes.is_empty() && matched < reported {
        notes.push(format!(
            "{} of {reported} line(s) match no captured transaction: the capture was probably taken on another host or interface than the one that served them, or stopped before them",
            reported - matched
        ));
    }
    if log.zone_assumed {
        notes.push("its times name no time zone: read as UTC".into());
    }
    if log.not_kept > 0 {
        notes.push(format!(
            "{} line(s) beyond the first {} were counted, not joined",
            log.not_kept,
            super::MAX_LINES_KEPT
        ));
    }
    LogReport {
        path: log.path.clone(),
        format: log.format.name().to_string(),
        lines_read: log.lines_read,
        lines_skipped: log.skipped_count,
        skipped: log
            .skipped
            .iter()
            .map(|s| SkippedLine {
                line: s.line,
                reason: s.reason.clone(),
            })
            .collect(),
        lines_reported: reported,
        lines_matched: matched,
        clock_offset_ms: offsets.first().map(|o| o.offset_ms),
        clock_offsets: offsets,
        first_time: log.first.map(Timestamp::rfc3339),
        last_time: log.last.map(Timestamp::rfc3339),
        notes,
    }
}

/// A line's class when its log says nothing of the upstream; kept for renderers.
pub fn class_name(c: Option<LineClass>) -> &'static str {
    c.map_or("not logged", LineClass::as_str)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_trace_key_keeps_the_root_of_an_aws_id() {
        assert_eq!(
            trace_key("Self=1-67-aa;Root=1-58337262-36d228ad;Sampled=1"),
            "1-58337262-36d228ad"
        );
        assert_eq!(trace_key("Root=1-58337262-36d228ad"), "1-58337262-36d228ad");
        assert_eq!(trace_key(" 5f3c9a "), "5f3c9a");
    }

    #[test]
    fn test_trace_is_front_by_client_then_by_backend() {
        let mut line = LogLine::new(
            1,
            super::super::time::any("2024-05-01T10:42:07Z").unwrap(),
            TimeIs::End,
            502,
        );
        line.client_ip = Some("10.0.0.1".parse().unwrap());
        line.client_port = Some(4000);
        line.upstream_addr = Some("10.0.3.7:8080".into());
        let (c, b, s) = (
            "10.0.0.1:4000".parse().unwrap(),
            "10.0.1.2:5000".parse().unwrap(),
            "10.0.3.7:8080".parse().unwrap(),
        );
        assert!(trace_is_front(&line, c, "10.0.0.2:80".parse().unwrap()));
        assert!(!trace_is_front(&line, b, s));
    }
}
