//! The pipeline for one capture: capture -> decode -> connection -> finding -> report.

use crate::capture::{CaptureError, CaptureReader, Frame, LinkType, Timestamp};
use crate::decode::{self, DecodeError, Transport};
use crate::detect::{Context, Detectors, Thresholds};
use crate::flow::{
    ConnRef, Connection, FlowLimits, FlowObserver, FlowTable, Role, Seen, StreamEvent,
};
use crate::proto::App;
use crate::proto::http::{HttpEvent, HttpLimits, Transaction};
use crate::report::{
    CaptureSummary, ConnectionReport, Finding, Report, TransactionReport, Warnings,
};
use crate::verdict;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Clone, Debug)]
pub struct Options {
    pub limits: FlowLimits,
    pub thresholds: Thresholds,
    pub http: HttpLimits,
    /// Include each connection's HTTP transactions in the report.
    pub transactions: bool,
    /// Bytes of HTTP heads and TLS handshakes buffered across all connections.
    pub max_protocol_buffers: usize,
    /// Findings kept per kind and server; the rest are counted in the summary.
    pub max_findings_per_group: u32,
    /// Addresses the user says are balancers (`--balancer`), besides those the traffic shows.
    pub balancers: Vec<std::net::IpAddr>,
    /// Bytes read from capture files are added here, for a progress bar.
    pub progress: Option<Arc<AtomicU64>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: FlowLimits::default(),
            thresholds: Thresholds::default(),
            http: HttpLimits::default(),
            transactions: false,
            max_protocol_buffers: 256 << 20,
            max_findings_per_group: 100,
            balancers: Vec::new(),
            progress: None,
        }
    }
}

/// The result of analyzing one capture.
pub struct CaptureAnalysis {
    pub summary: CaptureSummary,
    pub findings: Vec<Finding>,
    pub suppressed: u64,
}

/// What to analyze, in report order: the paths named, with each directory replaced by the
/// captures found under it.
#[derive(Debug, Default)]
pub struct Inputs {
    pub entries: Vec<Input>,
    /// Files under a directory that are not captures.
    pub skipped_files: usize,
}

#[derive(Debug)]
pub enum Input {
    /// A file to analyze, with its size when known (for progress).
    File { path: PathBuf, size: Option<u64> },
    /// A directory that could not be listed; reported like an unreadable capture.
    Unlistable {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl Inputs {
    /// Bytes on disk of every file, for a progress bar; standard input counts as nothing.
    pub fn total_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e {
                Input::File { size, .. } => size.unwrap_or(0),
                Input::Unlistable { .. } => 0,
            })
            .sum()
    }
}

/// Names that are captures without looking inside: tcpdump's, Wireshark's and their gzip.
const CAPTURE_EXTENSIONS: [&str; 6] = [
    ".pcap",
    ".pcapng",
    ".cap",
    ".pcap.gz",
    ".pcapng.gz",
    ".cap.gz",
];

fn named_like_capture(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    CAPTURE_EXTENSIONS.iter().any(|ext| name.ends_with(ext))
}

/// Whether a file starts like a capture, gzip-compressed or not: tcpdump's rotated files
/// (`-C`, `-G`) and captures saved without an extension are found this way.
fn starts_like_capture(path: &Path) -> bool {
    fn magic(mut r: impl Read) -> Option<[u8; 4]> {
        let mut m = [0u8; 4];
        r.read_exact(&mut m).ok()?;
        Some(m)
    }
    fn is_capture(m: [u8; 4]) -> bool {
        matches!(
            m,
            [0x0a, 0x0d, 0x0d, 0x0a]
                | [0xd4, 0xc3, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0xc3, 0xd4]
                | [0x4d, 0x3c, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0x3c, 0x4d]
                | [0x34, 0xcd, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0xcd, 0x34]
        )
    }
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut file = std::io::BufReader::new(file);
    match magic(&mut file) {
        Some([0x1f, 0x8b, _, _]) => {
            // Read the gzip header again from the start through the decoder.
            let Ok(file) = std::fs::File::open(path) else {
                return false;
            };
            magic(flate2::read::MultiGzDecoder::new(file)).is_some_and(is_capture)
        }
        Some(m) => is_capture(m),
        None => false,
    }
}

/// Expands directories into the captures under them, recursively and in name order so the
/// report does not depend on the file system's listing order. A file is a capture when its
/// name ends in a capture extension (then it is analyzed even if damaged, so the damage is
/// reported) or when its first bytes are a capture's (gzip or not); anything else is counted in
/// `skipped_files`. Files named on the command line are always analyzed. Each directory is
/// visited once, by its canonical path, so symbolic links that loop are not followed round.
pub fn collect_inputs<P: AsRef<Path>>(paths: &[P]) -> Inputs {
    let mut inputs = Inputs::default();
    let mut visited = HashSet::new();
    for path in paths {
        let path = path.as_ref();
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => walk(path, &mut visited, &mut inputs),
            m => inputs.entries.push(Input::File {
                path: path.to_path_buf(),
                size: m.ok().map(|m| m.len()),
            }),
        }
    }
    inputs
}

fn walk(dir: &Path, visited: &mut HashSet<PathBuf>, inputs: &mut Inputs) {
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if !visited.insert(canonical) {
        return;
    }
    let listing = std::fs::read_dir(dir).and_then(|entries| {
        entries
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()
    });
    let mut children = match listing {
        Ok(children) => children,
        Err(error) => {
            inputs.entries.push(Input::Unlistable {
                path: dir.to_path_buf(),
                error,
            });
            return;
        }
    };
    children.sort();
    for child in children {
        match std::fs::metadata(&child) {
            Ok(m) if m.is_dir() => walk(&child, visited, inputs),
            Ok(m) if m.is_file() && (named_like_capture(&child) || starts_like_capture(&child)) => {
                inputs.entries.push(Input::File {
                    path: child,
                    size: Some(m.len()),
                })
            }
            // A dangling link or unreadable entry named as a capture is reported, so a capture
            // the user expected is not silently missing.
            Err(_) if named_like_capture(&child) => inputs.entries.push(Input::File {
                path: child,
                size: None,
            }),
            _ => inputs.skipped_files += 1,
        }
    }
}

/// How far a batch has got, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: usize,
    pub files_total: usize,
}

/// How often [`analyze_inputs`] reports progress while files are being read.
const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Analyzes every input on `jobs` threads and builds one report. The report is the same for
/// any `jobs`: results are placed by input index, not by when they finish. `on_progress` is
/// called on the calling thread about every 100 ms and after each file.
pub fn analyze_inputs(
    inputs: &Inputs,
    options: &Options,
    jobs: usize,
    mut on_progress: impl FnMut(Progress),
) -> Report {
    let counter = options.progress.clone().unwrap_or_default();
    let options = Options {
        progress: Some(counter.clone()),
        ..options.clone()
    };
    let n = inputs.entries.len();
    let mut progress = Progress {
        bytes_done: 0,
        bytes_total: inputs.total_bytes(),
        files_done: 0,
        files_total: n,
    };
    let mut results: Vec<Option<CaptureAnalysis>> = (0..n).map(|_| None).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..jobs.clamp(1, n.max(1)) {
            let tx = tx.clone();
            let (next, options) = (&next, &options);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(input) = inputs.entries.get(i) else {
                        break;
                    };
                    let analysis = match input {
                        Input::File { path, .. } => analyze_path(path, options),
                        Input::Unlistable { path, error } => unreadable(
                            path.display().to_string(),
                            CaptureError::Open {
                                path: path.display().to_string(),
                                source: std::io::Error::new(error.kind(), error.to_string()),
                            },
                        ),
                    };
                    if tx.send((i, analysis)).is_err() {
                        break;
                    }
                }
            });
        }
        // The workers hold the only senders now, so the loop ends when the last one is done.
        drop(tx);
        loop {
            match rx.recv_timeout(PROGRESS_INTERVAL) {
                Ok((i, analysis)) => {
                    results[i] = Some(analysis);
                    progress.files_done += 1;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
            progress.bytes_done = counter.load(Ordering::Relaxed);
            on_progress(progress);
        }
    });
    let mut report = merge(results.into_iter().flatten());
    report.summary.skipped_files = inputs.skipped_files;
    report
}

/// Analyzes every path (`-` is standard input), one after another, and builds one report; a
/// directory stands for the captures under it ([`collect_inputs`]). A file that cannot be read
/// is listed with its error and does not stop the others.
pub fn analyze_paths<P: AsRef<Path>>(paths: &[P], options: &Options) -> Report {
    analyze_inputs(&collect_inputs(paths), options, 1, |_| {})
}

/// One report from captures' analyses, in the order given.
fn merge(analyses: impl Iterator<Item = CaptureAnalysis>) -> Report {
    let mut captures = Vec::new();
    let mut findings = Vec::new();
    let mut suppressed = 0;
    for analysis in analyses {
        captures.push(analysis.summary);
        // Links between findings index the report's list, which holds every capture's.
        let offset = findings.len();
        findings.extend(analysis.findings.into_iter().map(|mut f| {
            f.explained_by.iter_mut().for_each(|i| *i += offset);
            f.explains.iter_mut().for_each(|i| *i += offset);
            f
        }));
        suppressed += analysis.suppressed;
    }
    Report::new(captures, findings, suppressed)
}

pub fn analyze_path(path: &Path, options: &Options) -> CaptureAnalysis {
    match CaptureReader::open_counted(path, options.progress.clone()) {
        Ok(reader) => analyze_reader(reader, options),
        Err(e) => unreadable(path.display().to_string(), e),
    }
}

fn unreadable(file: String, e: CaptureError) -> CaptureAnalysis {
    CaptureAnalysis {
        summary: CaptureSummary {
            verdict: format!("This file could not be analyzed: {e}."),
            error: Some(e.to_string()),
            file,
            ..CaptureSummary::default()
        },
        findings: Vec::new(),
        suppressed: 0,
    }
}

/// Counts of frames we could not use, reported once per capture instead of once per frame.
#[derive(Default)]
struct Skipped {
    unsupported: BTreeMap<LinkType, (u64, u64)>,
    undecodable: BTreeMap<String, (u64, u64)>,
    fragments: (u64, u64),
    clock_backwards: (u64, u64),
}

fn count(slot: &mut (u64, u64), frame: u64) {
    if slot.0 == 0 {
        slot.1 = frame;
    }
    slot.0 += 1;
}

/// Connections whose TLS stopped parsing that are named in the warnings, at most.
const MAX_NOT_TLS_LISTED: usize = 20;

/// Transactions listed in a report (`--transactions`), over all connections of a capture. Only
/// the listing is capped: every transaction is analyzed.
const MAX_REPORTED_TRANSACTIONS: usize = 10_000;

fn transaction_report(t: &Transaction) -> TransactionReport {
    TransactionReport {
        request: t.request_line(),
        status: t.status,
        request_frame: t.request.map(|s| s.frame),
        response_frame: t.response.map(|s| s.frame),
        request_body_bytes: t.request_body,
        response_body_bytes: t.response_body,
        request_sent: t.request.map(|s| s.ts.rfc3339()),
        first_response_byte: t.response.map(|s| s.ts.rfc3339()),
        last_response_byte: t.response_complete.map(|s| s.ts.rfc3339()),
    }
}

/// The `--transactions` listing: transactions of connections still open, then each connection's
/// list once it ends.
#[derive(Default)]
struct Listing {
    open: HashMap<u64, Vec<TransactionReport>, foldhash::fast::RandomState>,
    connections: Vec<ConnectionReport>,
    listed: usize,
}

impl Listing {
    fn add(&mut self, serial: u64, t: &Transaction) {
        if self.listed < MAX_REPORTED_TRANSACTIONS {
            self.listed += 1;
            self.open
                .entry(serial)
                .or_default()
                .push(transaction_report(t));
        }
    }

    fn close(&mut self, conn: &Connection) {
        if let Some(transactions) = self.open.remove(&conn.serial) {
            self.connections.push(ConnectionReport {
                connection: conn.serial,
                client: conn.client.to_string(),
                server: conn.server.to_string(),
                first_frame: conn.first.frame,
                transactions,
            });
        }
    }
}

/// What the flow table drives: protocol analyzers per connection, then the detectors.
struct Pipeline<'a> {
    name: &'a str,
    options: &'a Options,
    detectors: Detectors,
    apps: HashMap<u64, App, foldhash::fast::RandomState>,
    now: Timestamp,
    at_capture_end: bool,
    resynced_connections: u64,
    /// Connections whose TLS stopped parsing: (first frame, why), for the capture's warnings.
    not_tls: Vec<(u64, String)>,
    /// Retransmissions carrying different bytes than the original: count and first frame.
    conflicts: (u64, Option<u64>),
    /// Bytes held in protocol buffers across all connections, and times they had to be shed.
    buffered: usize,
    shed: u64,
    /// With `--transactions`.
    listing: Option<Listing>,
    http_transactions: u64,
}

/// What a detector knows besides the event: the capture, the thresholds, and how far its
/// clock has come.
fn context<'a>(
    capture: &'a str,
    options: &'a Options,
    now: Timestamp,
    at_capture_end: bool,
) -> Context<'a> {
    Context {
        capture,
        thresholds: &options.thresholds,
        now,
        at_capture_end,
    }
}

/// Where an HTTP analyzer's events go: the detectors judge them, the listing may keep them.
fn http_sink<'s>(
    conn: ConnRef,
    detectors: &'s mut Detectors,
    listing: &'s mut Option<Listing>,
    ctx: &'s Context<'s>,
) -> impl FnMut(HttpEvent<'_>) + 's {
    move |event| {
        if let (HttpEvent::Done(t), Some(l)) = (&event, listing.as_mut()) {
            l.add(conn.serial, t);
        }
        detectors.on_http(&conn, event, ctx);
    }
}

impl FlowObserver for Pipeline<'_> {
    fn on_stream(&mut self, conn: ConnRef, from: Role, event: StreamEvent<'_>) {
        let limits = self.options.http;
        let ctx = context(self.name, self.options, self.now, self.at_capture_end);
        let app = match event {
            StreamEvent::Data { bytes, .. } => self
                .apps
                .entry(conn.serial)
                .or_insert_with(|| App::new(from, bytes, conn.start_captured, limits)),
            StreamEvent::Gap { .. } => match self.apps.get_mut(&conn.serial) {
                Some(app) => app,
                None => return,
            },
        };
        let before = app.buffered_bytes();
        let mut sink = http_sink(conn, &mut self.detectors, &mut self.listing, &ctx);
        match event {
            StreamEvent::Data { offset, bytes, at } => {
                app.on_data(from, offset, bytes, at, &mut sink)
            }
            StreamEvent::Gap { len, at, .. } => app.on_gap(from, len, at, &mut sink),
        }
        // Protocol buffers share one capture-wide budget, so many connections with half-sent
        // heads cannot add up to unbounded memory.
        let after = app.buffered_bytes();
        self.buffered = (self.buffered + after).saturating_sub(before);
        if self.buffered > self.options.max_protocol_buffers {
            app.shed_buffers();
            self.buffered -= after.min(self.buffered);
            self.buffered += app.buffered_bytes();
            self.shed += 1;
        }
    }

    fn on_finalized(&mut self, conn: Connection) {
        let mut app = self.apps.remove(&conn.serial);
        if let Some(a) = &app {
            self.buffered -= a.buffered_bytes().min(self.buffered);
        }
        let ctx = context(self.name, self.options, self.now, self.at_capture_end);
        if let (Some(h), Some(fin)) = (app.as_mut().and_then(App::http_mut), conn.to_client.fin)
            && conn.reset.is_none_or(|r| r.at.frame > fin.frame)
        {
            let mut sink = http_sink(conn.id(), &mut self.detectors, &mut self.listing, &ctx);
            h.on_server_close(fin, &mut sink);
        }
        let http = app.as_ref().and_then(App::http);
        for side in [&conn.to_server, &conn.to_client] {
            if side.stream.conflicts > 0 {
                self.conflicts.0 += side.stream.conflicts as u64;
                self.conflicts.1 = self.conflicts.1.or(side.stream.first_conflict_frame);
            }
        }
        self.detectors
            .on_connection(&conn, http, app.as_ref().and_then(App::tls), &ctx);
        if let Some(tls) = app.as_ref().and_then(App::tls)
            && let Some(why) = &tls.not_tls
            && self.not_tls.len() < MAX_NOT_TLS_LISTED
        {
            self.not_tls.push((conn.first.frame, why.clone()));
        }
        if let Some(h) = http {
            self.http_transactions += h.transactions;
            if h.resyncs() > 0 {
                self.resynced_connections += 1;
            }
        }
        if let Some(listing) = &mut self.listing {
            for t in http.into_iter().flat_map(|h| h.open()) {
                listing.add(conn.serial, t);
            }
            listing.close(&conn);
        }
    }
}

pub fn analyze_reader(mut reader: CaptureReader, options: &Options) -> CaptureAnalysis {
    let name = reader.name().to_string();
    let mut warnings = Warnings::default();
    let mut table = FlowTable::new(FlowLimits {
        mtu: options.thresholds.mtu,
        ..options.limits
    });
    let mut pipeline = Pipeline {
        name: &name,
        options,
        detectors: Detectors::new(options.max_findings_per_group, &options.balancers),
        apps: HashMap::default(),
        now: Timestamp(i64::MIN),
        at_capture_end: false,
        resynced_connections: 0,
        not_tls: Vec::new(),
        conflicts: (0, None),
        buffered: 0,
        shed: 0,
        listing: options.transactions.then(Listing::default),
        http_transactions: 0,
    };
    let mut skipped = Skipped::default();
    let mut bytes = 0u64;
    let mut first_ts: Option<Timestamp> = None;
    let mut last_ts: Option<Timestamp> = None;

    reader.for_each_frame(&mut warnings, |frame: &Frame<'_>| {
        bytes += frame.orig_len as u64;
        first_ts.get_or_insert(frame.ts);
        last_ts = Some(frame.ts);
        if frame.ts < pipeline.now {
            count(&mut skipped.clock_backwards, frame.number);
        } else {
            pipeline.now = frame.ts;
        }
        let packet = match decode::decode(frame) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(DecodeError::UnsupportedLinkType(lt)) => {
                count(skipped.unsupported.entry(lt).or_default(), frame.number);
                return;
            }
            Err(e) => {
                count(
                    skipped.undecodable.entry(e.to_string()).or_default(),
                    frame.number,
                );
                return;
            }
        };
        let at = Seen {
            frame: frame.number,
            ts: frame.ts,
        };
        let seg = match packet.transport {
            Transport::Tcp(seg) => seg,
            Transport::TooBig(msg) => {
                if !msg.quoted_tcp
                    || !table.note_too_big(msg.quoted_src, msg.quoted_dst, msg.next_hop_mtu, at)
                {
                    let ctx = context(&name, options, pipeline.now, false);
                    pipeline.detectors.on_unmatched_too_big(&msg, at, &ctx);
                }
                return;
            }
            Transport::Unreachable(msg) => {
                if msg.quoted_tcp {
                    table.note_unreachable(&msg, at);
                }
                return;
            }
            Transport::Fragment => {
                count(&mut skipped.fragments, frame.number);
                return;
            }
            Transport::Other => return,
        };
        table.on_segment(
            SocketAddr::new(packet.src, seg.src_port),
            SocketAddr::new(packet.dst, seg.dst_port),
            &seg,
            at,
            &mut pipeline,
        );
    });

    pipeline.at_capture_end = true;
    table.finish(&mut pipeline);
    let ctx = context(&name, options, pipeline.now, true);
    let Pipeline {
        detectors,
        resynced_connections,
        not_tls,
        conflicts,
        shed,
        listing,
        http_transactions,
        ..
    } = pipeline;
    let findings = detectors.finish(&ctx);
    if shed > 0 {
        warnings.push(
            None,
            format!(
                "protocol buffer limit reached {shed} time(s) (--max-protocol-buffers): heads in progress were given up and resumed at the next message"
            ),
        );
    }
    if conflicts.0 > 0 {
        warnings.push(
            conflicts.1,
            format!(
                "{} retransmission(s) carried different bytes than the segment they repeat (an evasion attempt or a broken middlebox); the first version was analyzed",
                conflicts.0
            ),
        );
    }
    for (frame, why) in &not_tls {
        warnings.push(Some(*frame), why.clone());
    }
    if resynced_connections > 0 {
        warnings.push(
            None,
            format!(
                "HTTP lost its place after a capture gap on {resynced_connections} connection(s) and resumed at the next message; nothing was reported from the bytes in between"
            ),
        );
    }

    for (lt, (n, first)) in &skipped.unsupported {
        warnings.push(
            Some(*first),
            format!("{n} frame(s) of unsupported link type {lt} skipped"),
        );
    }
    for (reason, (n, first)) in &skipped.undecodable {
        warnings.push(
            Some(*first),
            format!("{n} frame(s) not decodable: {reason}"),
        );
    }
    if skipped.fragments.0 > 0 {
        warnings.push(
            Some(skipped.fragments.1),
            format!(
                "{} IP fragment(s) not reassembled; their TCP contents are not analyzed",
                skipped.fragments.0
            ),
        );
    }
    if skipped.clock_backwards.0 > 0 {
        warnings.push(
            Some(skipped.clock_backwards.1),
            format!(
                "{} frame(s) have a timestamp earlier than a frame before them; timings near them are approximate",
                skipped.clock_backwards.0
            ),
        );
    }
    let over_budget = table.budget.exhausted - table.budget.too_many_holes;
    if over_budget > 0 {
        warnings.push(
            None,
            format!(
                "out-of-order buffer limit reached {over_budget} time(s) (--max-ooo-per-conn / --max-ooo-total); holes were given up as gaps and the bytes held behind them analyzed"
            ),
        );
    }
    if table.budget.too_many_holes > 0 {
        warnings.push(
            None,
            format!(
                "{} hole(s) given up as gaps because a direction had more holes at once than are tracked (32): a capture missing many segments, or segments far out of order",
                table.budget.too_many_holes
            ),
        );
    }
    if table.stats.one_sided > 0 {
        warnings.push(
            table.stats.first_one_sided,
            format!(
                "{} connection(s) show only one direction: the capture holds one side of the traffic (asymmetric routing or a one-way span port)",
                table.stats.one_sided
            ),
        );
    }
    if table.stats.evicted_early > 0 {
        warnings.push(
            None,
            format!(
                "more than {} live connections (--max-connections): {} were finalized early",
                options.limits.max_connections, table.stats.evicted_early
            ),
        );
    }

    let mut list = findings.list;
    list.sort_by(|a, b| a.packets.first().cmp(&b.packets.first()));
    let mut balancers = findings.balancers;
    crate::detect::link_legs(&mut list, &mut balancers, &findings.answered);
    let mut summary = CaptureSummary {
        file: name,
        format: reader.info.format.to_string(),
        compressed: reader.info.compressed,
        link_types: reader.info.link_types.iter().map(|l| l.name()).collect(),
        packets: reader.frames_read(),
        bytes,
        first_timestamp: first_ts.map(Timestamp::rfc3339),
        last_timestamp: last_ts.map(Timestamp::rfc3339),
        connections: table.stats.connections,
        truncated: reader.info.truncated,
        error: None,
        http_transactions,
        verdict: String::new(),
        warnings: warnings.into_vec(),
        balancers,
        http_connections: listing.map(|l| l.connections),
        timeline: findings.timeline,
    };
    summary.verdict = verdict::verdict(&summary, &list);
    CaptureAnalysis {
        summary,
        findings: list,
        suppressed: findings.suppressed,
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_capture_names_and_magic_are_recognised() {
        for name in ["a.pcap", "B.PCAPNG", "x.cap", "y.pcap.gz", "z.pcapng.gz"] {
            assert!(named_like_capture(Path::new(name)), "{name}");
        }
        for name in ["a.pcap.meta", "truth.json", "pcap", "a.gz"] {
            assert!(!named_like_capture(Path::new(name)), "{name}");
        }
        let captures = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
        assert!(starts_like_capture(&captures.join("refused.pcap")));
        assert!(starts_like_capture(&captures.join("server-reset.pcap.gz")));
        assert!(starts_like_capture(&captures.join("two-linktypes.pcapng")));
        assert!(!starts_like_capture(&captures.join("refused.truth.json")));
        assert!(!starts_like_capture(&captures.join("no-such-file")));
    }

    #[test]
    fn test_jobs_keep_links_between_findings_in_each_capture() {
        let captures = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
        let inputs = collect_inputs(&[captures]);
        let serial = analyze_inputs(&inputs, &Options::default(), 1, |_| {});
        let parallel = analyze_inputs(&inputs, &Options::default(), 2, |_| {});
        let links = |r: &Report| -> Vec<(Vec<usize>, Vec<usize>)> {
            r.findings
                .iter()
                .map(|f| (f.explained_by.clone(), f.explains.clone()))
                .collect()
        };
        assert_eq!(links(&serial), links(&parallel));
        assert!(links(&serial).iter().any(|(by, _)| !by.is_empty()));
        // A link never crosses from one capture's findings into another's.
        for f in &serial.findings {
            for &j in f.explained_by.iter().chain(&f.explains) {
                assert_eq!(serial.findings[j].capture, f.capture);
            }
        }
    }
}
