//! The report: the one serde schema users, tests and CI read (`--format json`). Renderers only
//! format it. A change that breaks a consumer of this schema must raise [`SCHEMA_VERSION`].

mod kind;

pub use crate::capture::{Warning, Warnings};
pub use kind::Kind;

pub use crate::capture::Seen;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// 2: `logs`, `log_matches` and `unlogged_findings` (`--access-log`).
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: Tool,
    pub schema: u32,
    pub captures: Vec<CaptureSummary>,
    pub findings: Vec<Finding>,
    pub summary: Summary,
    /// With `--access-log`: each log read, how it was read and how its clock sits against the
    /// captures'.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogReport>,
    /// One per reported log line (4xx/5xx, or all with `--all-lines`): the transaction it
    /// matched and the findings that explain it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log_matches: Vec<LogMatch>,
    /// With `--access-log`: error findings about requests that no log line mentions (indexes
    /// into `findings`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlogged_findings: Option<Vec<usize>>,
    /// With `--same-traffic`: each pair of captures, how their clocks sit and which leg each
    /// shows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alignments: Vec<Alignment>,
}

/// Two captures given with `--same-traffic`: the clock offset found from requests seen on
/// both, which one shows the front leg (client to balancer) and which the back leg (balancer to
/// backend), and how many front findings were linked to a back finding across them.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Alignment {
    /// The first of the two, in report order: the offset is measured from its clock.
    pub capture: String,
    pub other: String,
    /// `other`'s clock minus `capture`'s, in milliseconds (a moment stamped `t` in `capture` is
    /// stamped `t + offset` in `other`); `null` when no offset was found.
    pub offset_ms: Option<f64>,
    /// Requests seen on both that fit only each other at that offset.
    pub matches: usize,
    /// The capture that shows the front leg and the one that shows the back leg; `null` when
    /// that could not be told, or both show the same leg.
    pub front: Option<String>,
    pub back: Option<String>,
    /// The addresses the front leg's clients reach, and those the back leg's requests come from.
    pub balancer: Vec<String>,
    pub back_addresses: Vec<String>,
    /// Front findings linked to a back finding of the other capture (`explained_by`).
    pub links: usize,
    /// One sentence: what was found, or why nothing was.
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

impl Default for Tool {
    fn default() -> Self {
        Tool {
            name: "lbdiag",
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct CaptureSummary {
    pub file: String,
    /// `pcap` or `pcapng`; empty when the file could not be read at all.
    pub format: String,
    pub compressed: bool,
    pub link_types: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
    pub first_timestamp: Option<String>,
    pub last_timestamp: Option<String>,
    pub connections: u64,
    /// The file ended inside a record or was damaged; findings cover what came before.
    pub truncated: bool,
    /// Set when nothing could be read; the message names the reason.
    pub error: Option<String>,
    /// HTTP requests seen (each analyzed, whether or not it is listed).
    pub http_transactions: u64,
    /// One or two sentences for a reader who does not know TCP.
    pub verdict: String,
    pub warnings: Vec<Warning>,
    /// Balancers found in the capture (or named with `--balancer`), with the legs they serve.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub balancers: Vec<BalancerReport>,
    /// With `--transactions`: each connection's HTTP requests and responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_connections: Option<Vec<ConnectionReport>>,
    /// HTTP requests over time by what answered them; absent when the capture holds none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
    /// Findings counted but not listed, because a group (kind and server; for `error_status`
    /// the status too) reached `--max-findings`, or the capture reached its overall limit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unlisted: Vec<Unlisted>,
    /// The files this capture was joined from (rotated files, `--join`), in the order read;
    /// frame numbers run on from one to the next. Absent for a capture of one file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<CapturePart>,
}

/// HTTP requests counted per time bucket by what answered them. The number of buckets is
/// fixed (at most 512): a longer capture gets wider buckets, not more of them.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Timeline {
    /// RFC 3339 start of bucket 0.
    pub start: String,
    #[serde(skip)]
    pub origin: crate::capture::Timestamp,
    /// Each bucket's width in microseconds: 1 ms doubled as often as the capture needed.
    pub bucket_us: u64,
    /// The buckets that hold a request, in time order.
    pub buckets: Vec<TimelineBucket>,
    /// Requests whose time lies too far from the others to fit (a clock that jumped by years).
    pub outside: u64,
}

/// One bucket: requests sent in `[start + index × bucket_us, start + (index + 1) × bucket_us)`.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct TimelineBucket {
    pub index: u32,
    /// Answered with a final status below 400.
    pub ok: u64,
    /// Answered 4xx.
    pub client_error: u64,
    /// Answered 5xx.
    pub server_error: u64,
    /// No answer seen: the connection or the capture ended first.
    pub no_response: u64,
}

/// Findings of one group that were counted but not listed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Unlisted {
    pub kind: Kind,
    pub server: String,
    /// For `error_status`: the status these findings are about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub count: u64,
}

/// One file of a capture joined from several.
#[derive(Debug, Clone, Serialize, Default, PartialEq, serde::Deserialize)]
pub struct CapturePart {
    pub file: String,
    /// The capture's frame number of this file's first frame.
    pub first_frame: u64,
    pub frames: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionReport {
    pub connection: u64,
    pub client: String,
    pub server: String,
    pub first_frame: u64,
    pub transactions: Vec<TransactionReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransactionReport {
    pub request: String,
    pub status: Option<u16>,
    pub request_frame: Option<u64>,
    pub response_frame: Option<u64>,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    pub request_sent: Option<String>,
    pub first_response_byte: Option<String>,
    pub last_response_byte: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Flow {
    pub client: String,
    pub server: String,
    /// A Wireshark display filter that isolates this connection.
    pub filter: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cause {
    pub status: u16,
    /// What the balancer's access log shows in `upstream_status`, where that is known.
    pub upstream_status: Option<String>,
    pub explanation: String,
    pub next_steps: Vec<String>,
}

/// A side of a connection, as facts name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    Client,
    Server,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Client => "client",
            Actor::Server => "server",
        }
    }
}

/// What a finding is about, typed: the verdict, the renderers and the links between the legs
/// of a balancer read these, never the evidence JSON (which is serialized from them, plus
/// detail for people). Detectors fill what they know.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// First evidence frame and time.
    pub at: Seen,
    /// The connection's number in the capture, when the finding is about one.
    pub connection: Option<u64>,
    /// Who acted: the side that reset or closed.
    pub by: Option<Actor>,
    /// The side that stopped reading (zero window).
    pub receiver: Option<Actor>,
    /// `METHOD target`, redacted.
    pub request: Option<String>,
    /// A fingerprint of the method and the unredacted target, to recognise the same request on
    /// the two legs of a balancer without keeping it.
    pub request_key: Option<u64>,
    pub request_at: Option<Seen>,
    /// The request's last byte.
    pub request_done_at: Option<Seen>,
    pub response_at: Option<Seen>,
    /// The response's last byte.
    pub response_done_at: Option<Seen>,
    /// The connection's handshake: the first SYN to the SYN-ACK.
    pub connect: Option<crate::capture::Duration>,
    /// The request was not the first on its connection (a reused keep-alive connection).
    pub reused_connection: bool,
    pub status: Option<u16>,
    pub retransmission_rate: Option<f64>,
    pub rtt_ms: Option<f64>,
    pub longest_stall_ms: Option<f64>,
    pub unacknowledged_ip_len: Option<u32>,
    pub sni: Option<String>,
    pub alert: Option<String>,
    /// The bytes a malformed-message finding quotes, escaped and redacted.
    pub excerpt: Option<String>,
    /// A front finding linked to its back leg: the request as the balancer saw it.
    pub timings: Option<Timings>,
    /// The TCP moments of the connection, for its ladder; set once the connection has ended.
    pub tcp: Option<Box<TcpMoments>>,
}

/// One request as a balancer saw it, in the measures balancers log (haproxy's Tq/Tw/Tc/Tr/Ta,
/// nginx's request_time and upstream_response_time); each absent where the capture does not
/// tell.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    /// The client sending its request: first byte to last.
    pub client_request: Option<crate::capture::Duration>,
    /// The balancer holding the request before it sent it on.
    pub wait: Option<crate::capture::Duration>,
    /// The back connection's handshake; zero on a reused keep-alive connection.
    pub connect: Option<crate::capture::Duration>,
    /// The backend's answer, or what ended the wait for it (a timeout, a reset).
    pub backend_response: Option<crate::capture::Duration>,
    /// The client's request to the end of the balancer's answer.
    pub total: Option<crate::capture::Duration>,
}

/// A repeated TCP event: how many, the first and the last.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Repeats {
    pub count: u32,
    pub first: Seen,
    pub last: Seen,
}

/// What a flagged connection did at the TCP level, with frames and times.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TcpMoments {
    /// The client's first SYN; `syns` only when it was sent more than once.
    pub syn: Option<Seen>,
    pub syns: Option<Repeats>,
    pub syn_ack: Option<Seen>,
    /// The server's RST answering the SYN.
    pub handshake_rst: Option<Seen>,
    pub client_fin: Option<Seen>,
    pub server_fin: Option<Seen>,
    /// The reset that ended the connection, and who sent it.
    pub reset: Option<(Actor, Seen)>,
    /// Data segments each side sent again.
    pub client_retransmissions: Option<Repeats>,
    pub server_retransmissions: Option<Repeats>,
    /// The first capture gap in what each side sent (frame after it) and the bytes missing.
    pub client_gap: Option<(u64, u64)>,
    pub server_gap: Option<(u64, u64)>,
}

/// Which leg of a balancer a finding is on, in a capture that holds both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Leg {
    /// Client to balancer.
    Front,
    /// Balancer to backend.
    Back,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub severity: Severity,
    /// The capture file the finding comes from.
    pub capture: String,
    pub flow: Flow,
    /// 1-based frame numbers of the evidence, as Wireshark numbers them.
    pub packets: Vec<u64>,
    /// RFC 3339 UTC time of the first evidence frame.
    pub time: String,
    pub summary: String,
    pub evidence: serde_json::Map<String, serde_json::Value>,
    pub causes: Vec<Cause>,
    /// On a capture that holds both legs of a balancer: which leg this finding is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leg: Option<Leg>,
    /// Indexes into the report's `findings` of what explains this one (the backend's reset
    /// behind the balancer's 502) and of what this one explains.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub explained_by: Vec<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub explains: Vec<usize>,
    #[serde(skip)]
    pub facts: Facts,
}

/// An access log given with `--access-log`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LogReport {
    pub path: String,
    /// `balancer_json`, `balancer_csv`, `nginx_combined`, `nginx_log_format`,
    /// `haproxy_httplog`, `aws_alb`.
    pub format: String,
    /// Non-empty lines read (a CSV header row not counted).
    pub lines_read: u64,
    pub lines_skipped: u64,
    /// The first skipped lines, each with why.
    pub skipped: Vec<SkippedLine>,
    /// Lines joined (4xx/5xx, or all with `--all-lines`) and how many found a transaction.
    pub lines_reported: u64,
    pub lines_matched: u64,
    /// Log clock minus capture clock, from the lines that matched one transaction only, for the
    /// capture with most such lines; `null` when none did.
    pub clock_offset_ms: Option<f64>,
    /// The same per capture that any line matched.
    pub clock_offsets: Vec<ClockOffset>,
    pub first_time: Option<String>,
    pub last_time: Option<String>,
    /// What a reader should know: a time window outside the captures', zones assumed, lines
    /// not joined for a limit.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SkippedLine {
    pub line: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClockOffset {
    pub capture: String,
    pub offset_ms: f64,
    /// Unambiguous matches it was found from.
    pub samples: usize,
}

/// One log line and what the captures show of it.
#[derive(Debug, Clone, Serialize)]
pub struct LogMatch {
    /// The log's path, as in `logs[].path`.
    pub log: String,
    /// 1-based.
    pub line: u64,
    /// As logged, in RFC 3339 UTC (the log's clock).
    pub time: String,
    pub client: Option<String>,
    pub request: Option<String>,
    pub status: u16,
    /// As logged (`502, 504`, `-`); `null` when the format has none.
    pub upstream_status: Option<String>,
    pub upstream_addr: Option<String>,
    /// `passed_through`, `changed`, `no_response`; `null` when the log does not say.
    pub class: Option<LineClass>,
    /// haproxy's termination state, with what it means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination: Option<String>,
    /// How the transaction was found: `trace_id`, `client_port`, `client_request` or
    /// `upstream_request`.
    pub matched_by: Option<&'static str>,
    pub capture: Option<String>,
    /// The matched front connection (client side), else the back one; `null` when nothing
    /// matched.
    pub flow: Option<Flow>,
    /// On a capture with both legs, or when matched by upstream: the back connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back_flow: Option<Flow>,
    /// The capture `back_flow` is in: another than `capture` when the legs were captured on
    /// different hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back_capture: Option<String>,
    /// Frames of the back connection's request and response in `back_capture`, when that is
    /// another capture than `capture` (then `packets` holds only the front's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back_packets: Option<Vec<u64>>,
    /// Frames of the matched requests and responses.
    pub packets: Vec<u64>,
    /// Indexes into `findings`: those on the matched connections and what explains them.
    pub findings: Vec<usize>,
    /// One sentence: the line, and what the packets say of it.
    pub summary: String,
}

/// An address that serves client connections and forwards their requests on connections of
/// its own: a balancer or proxy of the capture.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BalancerReport {
    /// The address clients connect to.
    pub address: String,
    /// The addresses it connects to backends from (another one on a host with an interface on
    /// each side).
    pub back_addresses: Vec<String>,
    /// The endpoints it serves clients on.
    pub front: Vec<String>,
    /// The backends it forwards to.
    pub back: Vec<String>,
    /// Requests seen on both legs; 0 when named with `--balancer`.
    pub forwarded_requests: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub captures: usize,
    pub unreadable_captures: usize,
    pub findings: usize,
    pub by_severity: BTreeMap<String, usize>,
    pub by_kind: BTreeMap<String, usize>,
    /// Findings beyond `--max-findings` per kind and server that were counted but not listed.
    pub suppressed: u64,
    /// Files under the directories given that are not captures; absent when none were.
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped_files: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Keeps the findings whose `keep` is true and renumbers the `explained_by` / `explains`
/// links among those that remain (links to dropped findings go).
pub fn retain_findings(findings: &mut Vec<Finding>, keep: &[bool]) {
    if keep.iter().all(|k| *k) {
        return;
    }
    let mut index = vec![None; findings.len()];
    let mut next = 0;
    for (i, k) in keep.iter().enumerate() {
        if *k {
            index[i] = Some(next);
            next += 1;
        }
    }
    let renumber = |links: &[usize]| -> Vec<usize> {
        links
            .iter()
            .filter_map(|&j| index.get(j).copied().flatten())
            .collect()
    };
    let old = std::mem::take(findings);
    for (i, mut f) in old.into_iter().enumerate() {
        if keep.get(i).copied().unwrap_or(false) {
            f.explained_by = renumber(&f.explained_by);
            f.explains = renumber(&f.explains);
            findings.push(f);
        }
    }
}

/// Log matches point into `findings` too: they follow when findings are dropped.
fn renumber_log_links(matches: &mut [LogMatch], unlogged: Option<&mut Vec<usize>>, keep: &[bool]) {
    let mut index = vec![None; keep.len()];
    let mut next = 0;
    for (i, k) in keep.iter().enumerate() {
        if *k {
            index[i] = Some(next);
            next += 1;
        }
    }
    let renumber = |links: &mut Vec<usize>| {
        *links = links
            .iter()
            .filter_map(|&j| index.get(j).copied().flatten())
            .collect();
    };
    for m in matches {
        renumber(&mut m.findings);
    }
    if let Some(u) = unlogged {
        renumber(u);
    }
}

/// Which severity makes the run fail (exit code 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOn {
    Severity(Severity),
    Never,
}

impl Report {
    pub fn new(captures: Vec<CaptureSummary>, findings: Vec<Finding>, suppressed: u64) -> Report {
        let summary = Summary {
            captures: captures.len(),
            unreadable_captures: captures.iter().filter(|c| c.error.is_some()).count(),
            suppressed,
            ..Summary::default()
        };
        let mut report = Report {
            tool: Tool::default(),
            schema: SCHEMA_VERSION,
            captures,
            findings,
            summary,
            logs: Vec::new(),
            log_matches: Vec::new(),
            unlogged_findings: None,
            alignments: Vec::new(),
        };
        report.recount();
        report
    }

    /// Counts the findings again after something changed their kind or severity.
    pub fn recount(&mut self) {
        self.summary.findings = self.findings.len();
        self.summary.by_severity.clear();
        self.summary.by_kind.clear();
        for f in &self.findings {
            *self
                .summary
                .by_severity
                .entry(f.severity.to_string())
                .or_default() += 1;
            *self.summary.by_kind.entry(f.kind.to_string()).or_default() += 1;
        }
    }

    /// Keeps only the findings that explain one of `statuses` (a cause with that status), and
    /// the findings those are explained by, so each chain stays whole (`--status`).
    pub fn keep_statuses(&mut self, statuses: &[u16]) {
        if statuses.is_empty() {
            return;
        }
        let n = self.findings.len();
        let mut keep: Vec<bool> = self
            .findings
            .iter()
            .map(|f| f.causes.iter().any(|c| statuses.contains(&c.status)))
            .collect();
        let mut stack: Vec<usize> = (0..n).filter(|&i| keep[i]).collect();
        while let Some(i) = stack.pop() {
            for &j in &self.findings[i].explained_by {
                if j < n && !keep[j] {
                    keep[j] = true;
                    stack.push(j);
                }
            }
        }
        retain_findings(&mut self.findings, &keep);
        let captures = std::mem::take(&mut self.captures);
        let findings = std::mem::take(&mut self.findings);
        let skipped_files = self.summary.skipped_files;
        let (logs, mut log_matches, mut unlogged) = (
            std::mem::take(&mut self.logs),
            std::mem::take(&mut self.log_matches),
            self.unlogged_findings.take(),
        );
        renumber_log_links(&mut log_matches, unlogged.as_mut(), &keep);
        *self = Report::new(captures, findings, self.summary.suppressed);
        self.summary.skipped_files = skipped_files;
        (self.logs, self.log_matches, self.unlogged_findings) = (logs, log_matches, unlogged);
    }

    /// 2 when an input could not be read, 1 when a finding reaches `fail_on`, else 0.
    pub fn exit_code(&self, fail_on: FailOn) -> i32 {
        if self.summary.unreadable_captures > 0 {
            return 2;
        }
        match fail_on {
            FailOn::Never => 0,
            FailOn::Severity(level) => {
                if self.findings.iter().any(|f| f.severity >= level) {
                    1
                } else {
                    0
                }
            }
        }
    }
}

/// The page's three readings of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineClass {
    /// status == upstream_status: the backend answered it; look at the backend.
    PassedThrough,
    /// The balancer answered another status than the backend's.
    Changed,
    /// upstream_status `-` or empty: no backend answered.
    NoResponse,
}

impl LineClass {
    pub fn as_str(self) -> &'static str {
        match self {
            LineClass::PassedThrough => "passed_through",
            LineClass::Changed => "changed",
            LineClass::NoResponse => "no_response",
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_exit_code_follows_fail_on() {
        let unreadable = CaptureSummary {
            error: Some("x".into()),
            ..Default::default()
        };
        let r = Report::new(vec![unreadable], vec![], 0);
        assert_eq!(r.exit_code(FailOn::Never), 2);
        let r = Report::new(vec![CaptureSummary::default()], vec![], 0);
        assert_eq!(r.exit_code(FailOn::Severity(Severity::Info)), 0);
    }
}
