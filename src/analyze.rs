//! The pipeline for one capture: capture -> decode -> connection -> finding -> report.

mod judging;
mod shard;
mod shard_report;
mod threads;

pub use shard_report::{ShardReportError, merge_shard_reports, write_shard_report};
pub use threads::{Dealt, ShardSpec, deal_only};

use crate::capture::{CaptureError, CaptureReader, Frame, LinkType, Timestamp};
use crate::decode::{self, DecodeError, Packet, Transport};
use crate::detect::{Context, Thresholds};
use crate::flow::{Connection, FlowLimits, FlowStats};
use crate::proto::http::{HttpLimits, Transaction};
use crate::report::{
    CapturePart, CaptureSummary, ConnectionReport, Finding, Report, TransactionReport, Warnings,
};
use crate::verdict;
use judging::{Collected, Judging};
use serde::{Deserialize, Serialize};
use shard::Shard;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How a capture is analyzed. A shard report carries these, so `lbdiag merge` judges the
/// shards' connections as the run that recorded them would have (the threads and the progress
/// counter are the run's own; access logs are given to the merge).
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    #[serde(skip)]
    pub progress: Option<Arc<AtomicU64>>,
    /// Threads analyzing one capture (0: the cores available). The report is the same for
    /// any number; budgets (`max_connections`, `max_ooo_total`, `max_protocol_buffers`) are
    /// shared out among them.
    #[serde(skip)]
    pub threads: usize,
    /// Access logs whose lines are joined to the captures' transactions (`--access-log`).
    #[serde(skip)]
    pub access_logs: Option<Arc<crate::accesslog::LogIndex>>,
    /// `--same-traffic`: the captures show the same traffic from different hosts; they are
    /// aligned with each other within this clock offset (`--max-clock-offset`).
    #[serde(skip)]
    pub same_traffic: Option<crate::capture::Duration>,
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
            threads: 1,
            access_logs: None,
            same_traffic: None,
        }
    }
}

/// The result of analyzing one capture.
pub struct CaptureAnalysis {
    pub summary: CaptureSummary,
    pub findings: Vec<Finding>,
    pub suppressed: u64,
    /// With access logs: the transactions some line could be, their findings indexing `findings`.
    pub log_candidates: Vec<crate::accesslog::Candidate>,
    /// With `--same-traffic`: a bounded sample of its requests.
    pub host_samples: Vec<crate::hosts::Sample>,
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
    /// Files that are parts of one capture (tcpdump's rotated files, or `--join`), analyzed
    /// as one continuous capture in the order of their first frames.
    Joined { parts: Vec<PathBuf>, size: u64 },
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
                Input::Joined { size, .. } => *size,
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
    inputs.join_rotated();
    inputs
}

impl Inputs {
    /// Every file becomes one part of a single capture (`--join`).
    pub fn join_all(&mut self) {
        let mut parts = Vec::new();
        let mut size = 0;
        let mut rest = Vec::new();
        for e in self.entries.drain(..) {
            match e {
                Input::File { path, size: s } => {
                    parts.push(path);
                    size += s.unwrap_or(0);
                }
                Input::Joined { parts: p, size: s } => {
                    parts.extend(p);
                    size += s;
                }
                other => rest.push(other),
            }
        }
        if !parts.is_empty() {
            self.entries.push(Input::Joined { parts, size });
        }
        self.entries.extend(rest);
    }

    /// Files that tcpdump rotated (`-C`, `-W`: `x.pcap`, `x.pcap1`, `x.pcap2`, or `x.pcap0`,
    /// `x.pcap1`, ...) become one capture, in the place of the first of them.
    pub fn join_rotated(&mut self) {
        let mut sets: HashMap<PathBuf, usize> = HashMap::new();
        let mut entries: Vec<Input> = Vec::with_capacity(self.entries.len());
        for e in self.entries.drain(..) {
            let stem = match &e {
                Input::File { path, .. } => rotation_stem(path),
                _ => None,
            };
            let Some(stem) = stem else {
                entries.push(e);
                continue;
            };
            let Input::File { path, size } = e else {
                unreachable!("only files have a stem")
            };
            match sets.get(&stem) {
                Some(&at) => {
                    if let Input::Joined { parts, size: s } = &mut entries[at] {
                        parts.push(path);
                        *s += size.unwrap_or(0);
                    }
                }
                None => {
                    sets.insert(stem, entries.len());
                    entries.push(Input::Joined {
                        parts: vec![path],
                        size: size.unwrap_or(0),
                    });
                }
            }
        }
        // A "set" of one file is just a file.
        self.entries = entries
            .into_iter()
            .map(|e| match e {
                Input::Joined { mut parts, size } if parts.len() == 1 => Input::File {
                    path: parts.pop().expect("one part"),
                    size: Some(size),
                },
                e => e,
            })
            .collect();
    }
}

/// `x.pcap` for tcpdump's rotated `x.pcap`, `x.pcap1`, `x.pcap01`...: the name with the
/// digits tcpdump appends after a capture extension removed.
fn rotation_stem(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let lower = stem.to_ascii_lowercase();
    [".pcap", ".pcapng", ".cap"]
        .iter()
        .any(|ext| lower.ends_with(ext))
        .then(|| path.with_file_name(stem))
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
                        Input::Joined { parts, .. } => analyze_joined(parts, options),
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
    let samples: Vec<_> = (results.iter_mut().flatten())
        .map(|a| std::mem::take(&mut a.host_samples))
        .collect();
    let (mut report, candidates) = merge(results.into_iter().flatten());
    report.summary.skipped_files = inputs.skipped_files;
    if let Some(index) = &options.access_logs {
        crate::accesslog::join::join(&mut report, index, candidates);
    }
    if let Some(max_offset) = options.same_traffic {
        crate::hosts::align(&mut report, samples, max_offset);
    }
    report
}

/// Analyzes every path (`-` is standard input), one after another, and builds one report; a
/// directory stands for the captures under it ([`collect_inputs`]). A file that cannot be read
/// is listed with its error and does not stop the others.
pub fn analyze_paths<P: AsRef<Path>>(paths: &[P], options: &Options) -> Report {
    analyze_inputs(&collect_inputs(paths), options, 1, |_| {})
}

/// One report from captures' analyses, in the order given.
fn merge(
    analyses: impl Iterator<Item = CaptureAnalysis>,
) -> (Report, Vec<crate::accesslog::Candidate>) {
    let mut captures = Vec::new();
    let mut findings = Vec::new();
    let mut suppressed = 0;
    let mut candidates = Vec::new();
    for analysis in analyses {
        captures.push(analysis.summary);
        // Links between findings index the report's list, which holds every capture's.
        let offset = findings.len();
        candidates.extend(analysis.log_candidates.into_iter().map(|mut c| {
            c.findings.iter_mut().for_each(|i| *i += offset);
            c
        }));
        findings.extend(analysis.findings.into_iter().map(|mut f| {
            f.explained_by.iter_mut().for_each(|i| *i += offset);
            f.explains.iter_mut().for_each(|i| *i += offset);
            f
        }));
        suppressed += analysis.suppressed;
    }
    (Report::new(captures, findings, suppressed), candidates)
}

/// Several files as one capture: each opened, put in the order of its first frame, and read
/// one after the other with frame numbers running on, so a connection that spans two files is
/// one connection. A part that cannot be opened is named in the warnings and left out.
pub fn analyze_joined(parts: &[PathBuf], options: &Options) -> CaptureAnalysis {
    match open_parts(parts, options) {
        Ok((readers, warnings)) => analyze_readers(readers, warnings, options),
        Err(e) => unreadable(
            parts
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            e,
        ),
    }
}

/// Opens the files of one capture in the order of their first frames. A part that cannot be
/// opened is named in the warnings and left out; only when none can be is it an error.
fn open_parts(
    parts: &[PathBuf],
    options: &Options,
) -> Result<(Vec<CaptureReader>, Warnings), CaptureError> {
    let mut opened = Vec::new();
    let mut failed = Vec::new();
    for path in parts {
        match CaptureReader::open_counted(path, options.progress.clone()) {
            // One file needs no order (and standard input cannot be read twice).
            Ok(r) if parts.len() == 1 => opened.push((None, r)),
            Ok(r) => opened.push((CaptureReader::first_timestamp(path), r)),
            Err(e) => failed.push(e),
        }
    }
    if opened.is_empty() {
        return Err(failed.into_iter().next().unwrap_or(CaptureError::Empty {
            path: String::new(),
        }));
    }
    // Files without a frame sort first; they add nothing but their name.
    opened.sort_by_key(|(first, _)| *first);
    let mut warnings = Warnings::default();
    for e in failed {
        warnings.push(None, format!("part of the joined capture left out: {e}"));
    }
    Ok((opened.into_iter().map(|(_, r)| r).collect(), warnings))
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
        log_candidates: Vec::new(),
        host_samples: Vec::new(),
    }
}

/// Counts of frames we could not use, reported once per capture instead of once per frame.
#[derive(Default, Serialize, Deserialize, PartialEq, Debug)]
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

/// What every frame goes through before its connection's shard: counts of frames that cannot
/// be used, the capture's extent, and decoding.
#[derive(Default)]
pub(crate) struct Intake {
    skipped: Skipped,
    bytes: u64,
    first_ts: Option<Timestamp>,
    last_ts: Option<Timestamp>,
    now: Option<Timestamp>,
}

impl Intake {
    /// The frame's packet, when there is one to analyze.
    pub(crate) fn take<'a>(&mut self, frame: &Frame<'a>) -> Option<Packet<'a>> {
        self.bytes += frame.orig_len as u64;
        self.first_ts.get_or_insert(frame.ts);
        self.last_ts = Some(frame.ts);
        match self.now {
            Some(now) if frame.ts < now => count(&mut self.skipped.clock_backwards, frame.number),
            _ => self.now = Some(frame.ts),
        }
        match decode::decode(frame) {
            Ok(Some(p)) if matches!(p.transport, Transport::Fragment) => {
                count(&mut self.skipped.fragments, frame.number);
                None
            }
            Ok(p) => p,
            Err(DecodeError::UnsupportedLinkType(lt)) => {
                count(
                    self.skipped.unsupported.entry(lt).or_default(),
                    frame.number,
                );
                None
            }
            Err(e) => {
                count(
                    self.skipped.undecodable.entry(e.to_string()).or_default(),
                    frame.number,
                );
                None
            }
        }
    }
}

/// Workers for one capture: `threads`, or the cores available when it is 0.
fn workers(options: &Options) -> usize {
    match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, MAX_THREADS)
}

/// More workers than this only add queues.
pub const MAX_THREADS: usize = 256;

/// Reads the parts of a capture in order, numbering frames on from one part to the next.
pub(crate) fn read_parts(
    readers: &mut [CaptureReader],
    warnings: &mut Warnings,
    mut visit: impl FnMut(&Frame<'_>),
) -> Vec<CapturePart> {
    let mut parts = Vec::with_capacity(readers.len());
    let mut next = 1;
    for r in readers.iter_mut() {
        r.number_from(next);
        r.for_each_frame(warnings, &mut visit);
        parts.push(CapturePart {
            file: r.name().to_string(),
            first_frame: next,
            frames: r.frames_read() + 1 - next,
        });
        next = r.frames_read() + 1;
    }
    parts
}

pub fn analyze_reader(reader: CaptureReader, options: &Options) -> CaptureAnalysis {
    analyze_readers(vec![reader], Warnings::default(), options)
}

/// One capture made of one or more files read in the order given.
fn analyze_readers(
    mut readers: Vec<CaptureReader>,
    mut warnings: Warnings,
    options: &Options,
) -> CaptureAnalysis {
    let name = readers
        .first()
        .map(|r| r.name().to_string())
        .unwrap_or_default();
    let mut judging = Judging::new(&name, options);
    let collected = judging.add_collectors();
    let mut intake = Intake::default();
    let n = workers(options);
    let (shards, parts) = if n == 1 {
        let mut shard = new_shard(options, 1);
        let parts = read_parts(&mut readers, &mut warnings, |frame: &Frame<'_>| {
            shard.clock(frame.ts);
            if let Some(packet) = intake.take(frame) {
                shard.on_packet(frame, packet, &mut judging);
            }
        });
        shard.finish(&mut judging);
        (vec![shard], parts)
    } else {
        let shards = (0..n).map(|_| new_shard(options, n)).collect();
        threads::run(
            &mut readers,
            &mut warnings,
            &mut intake,
            shards,
            ShardSpec::WHOLE,
            &mut |r| threads::replay(r, &mut judging),
        )
    };
    let extent = Extent::of(&readers, intake, warnings, parts);
    conclude(extent, ShardCounts::of(&shards), judging, collected)
}

/// One of `n` workers' shards, each with its share of the budgets, so the capture's total
/// stays what the flags say.
fn new_shard(options: &Options, n: usize) -> Shard {
    let share = |total: usize| (total / n).max(1);
    let limits = FlowLimits {
        mtu: options.thresholds.mtu,
        max_connections: share(options.limits.max_connections),
        max_ooo_total: share(options.limits.max_ooo_total),
        ..options.limits
    };
    Shard::new(limits, options.http, share(options.max_protocol_buffers))
}

/// What reading a capture's files gave besides its connections: the same in every shard's run
/// of it.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Extent {
    formats: Vec<String>,
    compressed: bool,
    link_types: Vec<String>,
    packets: u64,
    truncated: bool,
    parts: Vec<CapturePart>,
    skipped: Skipped,
    bytes: u64,
    first_ts: Option<Timestamp>,
    last_ts: Option<Timestamp>,
    warnings: Warnings,
}

impl Extent {
    fn of(
        readers: &[CaptureReader],
        intake: Intake,
        warnings: Warnings,
        parts: Vec<CapturePart>,
    ) -> Extent {
        let mut formats: Vec<String> = Vec::new();
        let mut link_types: Vec<String> = Vec::new();
        for r in readers {
            let format = r.info.format.to_string();
            if !formats.contains(&format) {
                formats.push(format);
            }
            for l in &r.info.link_types {
                if !link_types.contains(&l.name()) {
                    link_types.push(l.name());
                }
            }
        }
        Extent {
            formats,
            compressed: readers.iter().any(|r| r.info.compressed),
            link_types,
            packets: readers.last().map_or(0, CaptureReader::frames_read),
            truncated: readers.iter().any(|r| r.info.truncated),
            parts,
            skipped: intake.skipped,
            bytes: intake.bytes,
            first_ts: intake.first_ts,
            last_ts: intake.last_ts,
            warnings,
        }
    }
}

/// What a capture's flow tables counted, summed over the shards that analyzed it.
#[derive(Serialize, Deserialize, Default, Debug)]
struct ShardCounts {
    stats: FlowStats,
    exhausted: u64,
    too_many_holes: u64,
    shed: u64,
    /// The latest frame time any of them saw.
    now: Option<Timestamp>,
}

impl ShardCounts {
    fn of(shards: &[Shard]) -> ShardCounts {
        let mut counts = ShardCounts::default();
        for s in shards {
            counts.add(ShardCounts {
                stats: s.table.stats,
                exhausted: s.table.budget.exhausted,
                too_many_holes: s.table.budget.too_many_holes,
                shed: s.shed(),
                now: Some(s.now()),
            });
        }
        counts
    }

    fn add(&mut self, other: ShardCounts) {
        let (stats, t) = (&mut self.stats, &other.stats);
        stats.connections += t.connections;
        stats.evicted_early += t.evicted_early;
        stats.one_sided += t.one_sided;
        stats.first_one_sided = match (stats.first_one_sided, t.first_one_sided) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.exhausted += other.exhausted;
        self.too_many_holes += other.too_many_holes;
        self.shed += other.shed;
        self.now = self.now.max(other.now);
    }
}

/// The capture's analysis once every connection has been judged: the detectors' conclusions
/// across connections, the warnings, and the summary.
fn conclude(
    extent: Extent,
    counts: ShardCounts,
    judging: Judging<'_>,
    collected: Collected,
) -> CaptureAnalysis {
    let name = judging.name.to_string();
    let options = judging.options;
    let ctx = context(
        &name,
        options,
        counts.now.unwrap_or(Timestamp(i64::MIN)),
        true,
    );
    let ShardCounts {
        stats,
        exhausted,
        too_many_holes,
        shed,
        ..
    } = counts;
    let Extent {
        formats,
        compressed,
        link_types,
        packets,
        truncated,
        parts,
        skipped,
        bytes,
        first_ts,
        last_ts,
        mut warnings,
    } = extent;
    let Judging {
        detectors,
        resynced_connections,
        not_tls,
        conflicts,
        listing,
        http_transactions,
        ..
    } = judging;
    let findings = detectors.finish(&ctx);
    let unlisted = findings.unlisted();
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
    let over_budget = exhausted - too_many_holes;
    if over_budget > 0 {
        warnings.push(
            None,
            format!(
                "out-of-order buffer limit reached {over_budget} time(s) (--max-ooo-per-conn / --max-ooo-total); holes were given up as gaps and the bytes held behind them analyzed"
            ),
        );
    }
    if too_many_holes > 0 {
        warnings.push(
            None,
            format!(
                "{} hole(s) given up as gaps because a direction had more holes at once than are tracked (32): a capture missing many segments, or segments far out of order",
                too_many_holes
            ),
        );
    }
    if stats.one_sided > 0 {
        warnings.push(
            stats.first_one_sided,
            format!(
                "{} connection(s) show only one direction: the capture holds one side of the traffic (asymmetric routing or a one-way span port)",
                stats.one_sided
            ),
        );
    }
    if stats.evicted_early > 0 {
        warnings.push(
            None,
            format!(
                "more than {} live connections (--max-connections): {} were finalized early",
                options.limits.max_connections, stats.evicted_early
            ),
        );
    }

    let mut list = findings.list;
    list.sort_by(|a, b| a.packets.first().cmp(&b.packets.first()));
    let mut balancers = findings.balancers;
    crate::detect::link_legs(
        &mut list,
        &mut balancers,
        &findings.answered,
        &findings.http_clients,
    );
    let mut log_candidates: Vec<crate::accesslog::Candidate> = std::mem::take(
        &mut collected
            .log_candidates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    crate::accesslog::join::attach(&mut log_candidates, &list);
    let mut summary = CaptureSummary {
        file: name,
        format: formats.join(", "),
        compressed,
        link_types,
        packets,
        bytes,
        first_timestamp: first_ts.map(Timestamp::rfc3339),
        last_timestamp: last_ts.map(Timestamp::rfc3339),
        connections: stats.connections,
        truncated,
        parts: if parts.len() > 1 { parts } else { Vec::new() },
        error: None,
        http_transactions,
        verdict: String::new(),
        warnings: warnings.into_vec(),
        balancers,
        http_connections: listing.map(|l| l.connections),
        timeline: findings.timeline,
        unlisted,
    };
    summary.verdict = verdict::verdict(&summary, &list);
    CaptureAnalysis {
        summary,
        findings: list,
        suppressed: findings.suppressed,
        log_candidates,
        host_samples: std::mem::take(
            &mut collected
                .host_samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ),
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
    fn test_rotation_stem_only_for_digits_after_a_capture_extension() {
        let stem = |n: &str| rotation_stem(Path::new(n)).map(|p| p.display().to_string());
        assert_eq!(stem("d/x.pcap1").as_deref(), Some("d/x.pcap"));
        assert_eq!(stem("x.pcap").as_deref(), Some("x.pcap"));
        assert_eq!(stem("x.pcapng012").as_deref(), Some("x.pcapng"));
        assert_eq!(stem("x.CAP7").as_deref(), Some("x.CAP"));
        // tcpdump -G names and editcap's splits carry digits before the extension: separate
        // captures, not a rotation.
        assert_eq!(stem("cap-101500.pcap").as_deref(), Some("cap-101500.pcap"));
        assert_eq!(stem("x.pcap.gz"), None);
        assert_eq!(stem("notes12"), None);
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
