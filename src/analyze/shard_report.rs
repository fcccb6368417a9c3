//! Shard reports: one share of a capture's connections (`lbdiag analyze --shard I/N`), written
//! as the events its workers produced in capture order, and the merge of every share's report
//! into the report of one full run (`lbdiag merge`).
//!
//! A shard run reads the whole capture (every frame moves capture time, so connections expire
//! at the same frame as in a full run) but analyzes only the connections whose hash falls in
//! its share. What it writes is what the threads of one run hand to the detectors: merging the
//! shards' events by their place in capture order and judging them is the same judging, so the
//! merged report is the full run's, byte for byte.
//!
//! The file is JSON Lines: a head (the capture, the share, the options judged with), one line
//! per event, and an end line with what reading the capture gave and what the share's flow
//! tables counted. The events are the analyzer's own types, so a shard report is read only by
//! the lbdiag version that wrote it.

use super::judging::Judging;
use super::threads::{self, Recorded, ShardSpec};
use super::{
    CaptureAnalysis, Extent, Intake, Options, ShardCounts, conclude, new_shard, open_parts, workers,
};
use crate::capture::CaptureError;
use crate::report::Report;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bumped whenever what a shard report holds changes shape.
const FORMAT: u32 = 1;

/// How an event line starts, as serde writes [`Line::Event`].
const EVENT_PREFIX: &str = "{\"event\":";

/// Events taken from each shard report at a time while merging.
const EVENTS_PER_READ: usize = 1024;

/// The longest line read from a shard report: a finalized connection with its protocol state
/// (a certificate chain, a head in progress) is far below this; a longer one is damage.
const MAX_LINE: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ShardReportError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("cannot write the shard report: {0}")]
    Write(io::Error),
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path}: not a shard report (those are written by `lbdiag analyze --shard I/N`)")]
    NotAShardReport { path: String },
    #[error("{path}: line {line}: {reason}")]
    Damaged {
        path: String,
        line: u64,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Mismatch { path: String, reason: String },
    #[error("{0}")]
    Incomplete(String),
    #[error(
        "{0}: the events of these shard reports contradict each other: they were altered, or not written by `lbdiag analyze --shard`"
    )]
    Inconsistent(String),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Head(Box<Head>),
    Event(Box<Recorded>),
    End(Box<End>),
}

#[derive(Serialize, Deserialize)]
struct Head {
    format: u32,
    version: String,
    capture: String,
    shard: ShardSpec,
    options: Options,
}

#[derive(Serialize, Deserialize)]
struct End {
    extent: Extent,
    counts: ShardCounts,
    events: u64,
    /// SHA-256 of the event lines as written, so a file damaged on its way to the merge is
    /// refused rather than judged.
    events_sha256: String,
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Analyzes the connections of `spec` in the capture made of `parts` (one file, or the files
/// of a rotated or joined capture) and writes its shard report to `out`.
pub fn write_shard_report(
    parts: &[PathBuf],
    options: &Options,
    spec: ShardSpec,
    out: &mut dyn Write,
) -> Result<(), ShardReportError> {
    let (mut readers, mut warnings) = open_parts(parts, options)?;
    let capture = readers
        .first()
        .map(|r| r.name().to_string())
        .unwrap_or_default();
    let mut out = LineWriter {
        out,
        line: Vec::new(),
        events: 0,
        digest: Sha256::new(),
    };
    out.write(&Line::Head(Box::new(Head {
        format: FORMAT,
        version: env!("CARGO_PKG_VERSION").to_string(),
        capture,
        shard: spec,
        options: options.clone(),
    })))
    .map_err(ShardReportError::Write)?;
    let n = workers(options);
    let shards = (0..n).map(|_| new_shard(options, n)).collect();
    let mut intake = Intake::default();
    let mut failed = None;
    let (shards, read) = threads::run(
        &mut readers,
        &mut warnings,
        &mut intake,
        shards,
        spec,
        &mut |r| {
            if failed.is_none() {
                failed = out.write(&Line::Event(Box::new(r))).err();
            }
        },
    );
    if let Some(e) = failed {
        return Err(ShardReportError::Write(e));
    }
    let end = End {
        extent: Extent::of(&readers, intake, warnings, read),
        counts: ShardCounts::of(&shards),
        events: out.events,
        events_sha256: hex(&out.digest.finalize_reset()),
    };
    out.write(&Line::End(Box::new(end)))
        .map_err(ShardReportError::Write)?;
    out.out.flush().map_err(ShardReportError::Write)
}

/// Writes a shard report's lines, counting and digesting the events.
struct LineWriter<'a> {
    out: &'a mut dyn Write,
    line: Vec<u8>,
    events: u64,
    digest: Sha256,
}

impl LineWriter<'_> {
    fn write(&mut self, line: &Line) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, line)?;
        self.line.push(b'\n');
        if matches!(line, Line::Event(_)) {
            self.events += 1;
            self.digest.update(&self.line);
        }
        self.out.write_all(&self.line)
    }
}

/// One shard report being read.
struct Source {
    path: String,
    lines: Box<dyn BufRead>,
    line: u64,
    buf: String,
    /// The end line has been read.
    ended: bool,
}

impl Source {
    fn open(path: &Path) -> Result<Source, ShardReportError> {
        let name = path.display().to_string();
        let read_error = |source| ShardReportError::Read {
            path: name.clone(),
            source,
        };
        let mut file = BufReader::new(std::fs::File::open(path).map_err(read_error)?);
        // Shard reports compress well, and are often moved compressed.
        let gzip = file
            .fill_buf()
            .map_err(read_error)?
            .starts_with(&[0x1f, 0x8b]);
        let lines: Box<dyn BufRead> = if gzip {
            Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
        } else {
            Box::new(file)
        };
        Ok(Source {
            path: name,
            lines,
            line: 0,
            buf: String::new(),
            ended: false,
        })
    }

    fn damaged(&self, reason: impl Into<String>) -> ShardReportError {
        ShardReportError::Damaged {
            path: self.path.clone(),
            line: self.line,
            reason: reason.into(),
        }
    }

    /// The next line as text, `None` at the end of the file.
    fn next_raw(&mut self) -> Result<Option<&str>, ShardReportError> {
        self.buf.clear();
        self.line += 1;
        let read = (&mut self.lines)
            .take(MAX_LINE)
            .read_line(&mut self.buf)
            .map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => self.damaged("not UTF-8 text"),
                _ => ShardReportError::Read {
                    path: self.path.clone(),
                    source: e,
                },
            })?;
        if read == 0 {
            return Ok(None);
        }
        if !self.buf.ends_with('\n') {
            if read as u64 == MAX_LINE {
                return Err(self.damaged(format!("longer than {MAX_LINE} bytes")));
            }
            return Err(ShardReportError::Incomplete(format!(
                "{}: ends in the middle of line {}: the run that wrote it did not finish",
                self.path, self.line
            )));
        }
        Ok(Some(&self.buf))
    }

    /// The next line, `None` at the end of the file.
    fn next_line(&mut self) -> Result<Option<Line>, ShardReportError> {
        match self.next_raw()? {
            None => Ok(None),
            Some(text) => match serde_json::from_str(text) {
                Ok(line) => Ok(Some(line)),
                Err(e) => Err(self.damaged(e.to_string())),
            },
        }
    }

    fn head(&mut self) -> Result<Head, ShardReportError> {
        match self.next_line() {
            Ok(Some(Line::Head(head))) => Ok(*head),
            Ok(_) | Err(ShardReportError::Damaged { line: 1, .. }) => {
                Err(ShardReportError::NotAShardReport {
                    path: self.path.clone(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the whole file without judging it: its end line, once the events are found to be
    /// the ones written. So a file cut short, damaged or of another capture is refused before
    /// any of the merge's work.
    fn verify(path: &Path) -> Result<(Head, End), ShardReportError> {
        let mut source = Source::open(path)?;
        let head = source.head()?;
        let mut digest = Sha256::new();
        let mut events = 0;
        loop {
            let Some(line) = source.next_raw()? else {
                return Err(ShardReportError::Incomplete(format!(
                    "{}: ends before its end line: the run that wrote it did not finish",
                    source.path
                )));
            };
            // Events are hashed as written; only the end line is parsed.
            if line.starts_with(EVENT_PREFIX) {
                digest.update(line.as_bytes());
                events += 1;
                continue;
            }
            let end = match serde_json::from_str(line) {
                Ok(Line::End(end)) => end,
                Ok(_) => return Err(source.damaged("neither an event nor the end line")),
                Err(e) => return Err(source.damaged(e.to_string())),
            };
            if end.events != events || hex(&digest.finalize()) != end.events_sha256 {
                return Err(source.damaged(
                    "the events are not the ones written (their count or SHA-256 differs from the end line's): the file was altered or damaged",
                ));
            }
            return Ok((head, *end));
        }
    }

    /// Up to [`EVENTS_PER_READ`] more events; none once the end line has been read.
    fn next_events(&mut self) -> Result<Vec<Recorded>, ShardReportError> {
        let mut events = Vec::new();
        while !self.ended && events.len() < EVENTS_PER_READ {
            match self.next_line()? {
                Some(Line::Event(e)) => events.push(*e),
                // Its count and digest were checked by `verify`.
                Some(Line::End(_)) => {
                    self.ended = true;
                    return Ok(events);
                }
                Some(Line::Head(_)) => return Err(self.damaged("a second head line")),
                None => {
                    return Err(ShardReportError::Incomplete(format!(
                        "{}: ends before its end line: the run that wrote it did not finish",
                        self.path
                    )));
                }
            }
        }
        Ok(events)
    }
}

/// Merges the shard reports of one capture, one per share, into the report a single run over
/// the whole capture gives. With access logs, their lines are joined to the merged result.
pub fn merge_shard_reports(
    paths: &[PathBuf],
    access_logs: Option<Arc<crate::accesslog::LogIndex>>,
) -> Result<Report, ShardReportError> {
    // The events are the analyzer's own state, trusted as lbdiag wrote them (the digest
    // catches damage); one crafted to break the analyzer's invariants is an error, not a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        merge_in_order(paths, access_logs)
    }))
    .unwrap_or_else(|_| {
        Err(ShardReportError::Inconsistent(
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ))
    })
}

fn merge_in_order(
    paths: &[PathBuf],
    access_logs: Option<Arc<crate::accesslog::LogIndex>>,
) -> Result<Report, ShardReportError> {
    let mut heads = Vec::with_capacity(paths.len());
    let mut ends = Vec::with_capacity(paths.len());
    for path in paths {
        let (head, end) = Source::verify(path)?;
        heads.push(head);
        ends.push((path.display().to_string(), end));
    }
    let Some(first) = heads.first() else {
        return Err(ShardReportError::Incomplete(
            "no shard reports to merge".into(),
        ));
    };
    check_heads(first, &heads, paths)?;
    let mut ends = ends.into_iter();
    let (_, first_end) = ends.next().expect("one source at least");
    let mut counts = first_end.counts;
    for (path, end) in ends {
        if end.extent != first_end.extent {
            return Err(ShardReportError::Mismatch {
                path,
                reason: format!(
                    "is a report of another capture than {}: {} frames of {} bytes, not {} of {}",
                    first.capture,
                    end.extent.packets,
                    end.extent.bytes,
                    first_end.extent.packets,
                    first_end.extent.bytes
                ),
            });
        }
        counts.add(end.counts);
    }
    let mut sources = Vec::with_capacity(paths.len());
    for path in paths {
        let mut source = Source::open(path)?;
        source.head()?;
        sources.push(source);
    }
    let options = Options {
        access_logs: access_logs.clone(),
        same_traffic: None,
        ..first.options.clone()
    };
    let mut judging = Judging::new(&first.capture, &options);
    let collected = judging.add_collectors();
    let mut failed = None;
    let mut batches = Vec::with_capacity(sources.len());
    for s in &mut sources {
        batches.push(s.next_events()?.into_iter());
    }
    threads::merge(
        &mut batches,
        &mut |r| threads::replay(r, &mut judging),
        |w| {
            if failed.is_some() {
                return None;
            }
            match sources[w].next_events() {
                Ok(events) if events.is_empty() => None,
                Ok(events) => Some(events),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            }
        },
    );
    if let Some(e) = failed {
        return Err(e);
    }
    let analysis: CaptureAnalysis = conclude(first_end.extent, counts, judging, collected);
    let (mut report, candidates) = super::merge(std::iter::once(analysis));
    if let Some(index) = &access_logs {
        crate::accesslog::join::join(&mut report, index, candidates);
    }
    Ok(report)
}

/// The reports are of one capture, by this version, with the same options, and hold every
/// share once.
fn check_heads(first: &Head, heads: &[Head], paths: &[PathBuf]) -> Result<(), ShardReportError> {
    let options = serde_json::to_string(&first.options).unwrap_or_default();
    let mut seen = BTreeSet::new();
    for (head, path) in heads.iter().zip(paths) {
        let mismatch = |reason: String| ShardReportError::Mismatch {
            path: path.display().to_string(),
            reason,
        };
        if head.format != FORMAT || head.version != env!("CARGO_PKG_VERSION") {
            return Err(mismatch(format!(
                "written by lbdiag {}; this is {}: make every shard report with the version that merges them",
                head.version,
                env!("CARGO_PKG_VERSION")
            )));
        }
        if head.shard.count != first.shard.count {
            return Err(mismatch(format!(
                "is shard {} but the first report is shard {}: every shard must be of the same count",
                head.shard, first.shard
            )));
        }
        if serde_json::to_string(&head.options).unwrap_or_default() != options {
            return Err(mismatch(
                "was analyzed with other flags than the first report (thresholds, limits or balancers differ)".into(),
            ));
        }
        if !seen.insert(head.shard.index) {
            return Err(mismatch(format!("shard {} is given twice", head.shard)));
        }
    }
    let missing: Vec<String> = (0..first.shard.count)
        .filter(|i| !seen.contains(i))
        .map(|index| {
            ShardSpec {
                index,
                count: first.shard.count,
            }
            .to_string()
        })
        .collect();
    if !missing.is_empty() {
        return Err(ShardReportError::Incomplete(format!(
            "missing shard report(s) {} of {}",
            missing.join(", "),
            first.capture
        )));
    }
    Ok(())
}
