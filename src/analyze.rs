//! The pipeline for one capture: capture -> decode -> connection -> finding -> report.

use crate::capture::{CaptureError, CaptureReader, Frame, LinkType, Timestamp};
use crate::decode::{self, DecodeError, Transport};
use crate::detect::{Context, Detectors, Thresholds};
use crate::flow::{FlowLimits, FlowTable, Seen};
use crate::report::{CaptureSummary, Finding, Report, Warnings};
use crate::verdict;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct Options {
    pub limits: FlowLimits,
    pub thresholds: Thresholds,
    /// Findings kept per kind and server; the rest are counted in the summary.
    pub max_findings_per_group: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: FlowLimits::default(),
            thresholds: Thresholds::default(),
            max_findings_per_group: 100,
        }
    }
}

/// The result of analyzing one capture.
pub struct CaptureAnalysis {
    pub summary: CaptureSummary,
    pub findings: Vec<Finding>,
    pub suppressed: u64,
}

/// Analyzes every path (`-` is standard input) and builds one report. A file that cannot be
/// read is listed with its error and does not stop the others.
pub fn analyze_paths<P: AsRef<Path>>(paths: &[P], options: &Options) -> Report {
    let mut captures = Vec::new();
    let mut findings = Vec::new();
    let mut suppressed = 0;
    for path in paths {
        let analysis = analyze_path(path.as_ref(), options);
        captures.push(analysis.summary);
        findings.extend(analysis.findings);
        suppressed += analysis.suppressed;
    }
    Report::new(captures, findings, suppressed)
}

pub fn analyze_path(path: &Path, options: &Options) -> CaptureAnalysis {
    match CaptureReader::open(path) {
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

pub fn analyze_reader(mut reader: CaptureReader, options: &Options) -> CaptureAnalysis {
    let name = reader.name().to_string();
    let mut warnings = Warnings::default();
    let mut table = FlowTable::new(FlowLimits {
        mtu: options.thresholds.mtu,
        ..options.limits
    });
    let mut detectors = Detectors::new(options.max_findings_per_group);
    let mut skipped = Skipped::default();
    let mut bytes = 0u64;
    let mut first_ts: Option<Timestamp> = None;
    let mut last_ts: Option<Timestamp> = None;
    let mut now = Timestamp(i64::MIN);

    reader.for_each_frame(&mut warnings, |frame: &Frame<'_>| {
        bytes += frame.orig_len as u64;
        first_ts.get_or_insert(frame.ts);
        last_ts = Some(frame.ts);
        if frame.ts < now {
            count(&mut skipped.clock_backwards, frame.number);
        } else {
            now = frame.ts;
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
                    detectors.on_unmatched_too_big(&msg, at);
                }
                return;
            }
            Transport::Fragment => {
                count(&mut skipped.fragments, frame.number);
                return;
            }
            Transport::Other => return,
        };
        let ctx = Context {
            capture: &name,
            thresholds: &options.thresholds,
            now,
            at_capture_end: false,
        };
        table.on_segment(
            SocketAddr::new(packet.src, seg.src_port),
            SocketAddr::new(packet.dst, seg.dst_port),
            &seg,
            at,
            &mut |_, _, _| {},
            &mut |conn, _| detectors.on_connection(&conn, &ctx),
        );
    });

    let ctx = Context {
        capture: &name,
        thresholds: &options.thresholds,
        now,
        at_capture_end: true,
    };
    table.finish(&mut |_, _, _| {}, &mut |conn, _| {
        detectors.on_connection(&conn, &ctx)
    });
    let findings = detectors.finish(&ctx);

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
    if table.budget.exhausted > 0 {
        warnings.push(
            None,
            format!(
                "out-of-order buffer limit reached {} time(s) (--max-ooo-per-conn / --max-ooo-total); holes were given up as gaps",
                table.budget.exhausted
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
        verdict: String::new(),
        warnings: warnings.into_vec(),
    };
    summary.verdict = verdict::verdict(&summary, &list);
    CaptureAnalysis {
        summary,
        findings: list,
        suppressed: findings.suppressed,
    }
}
