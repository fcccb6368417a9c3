//! `--format jsonl`: JSON Lines for loading into a database; one object per line, each with a
//! `type` and the `capture` file it belongs to. Per capture, in order: its `capture` record, its
//! `finding` records, then a `story` record for each finding that something explains. Then, per
//! access log (`--access-log`), its `log` record and a `log_line` record for each line it
//! reports. With `--same-traffic`, an `alignment` record per pair of captures. The record types
//! are documented in docs/report-formats.md.

use crate::report::{Finding, Report};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::io::{self, Write};

pub fn render(report: &Report, w: &mut dyn Write) -> io::Result<()> {
    for capture in &report.captures {
        let mut record = object(capture)?;
        record.insert("capture".into(), Value::String(capture.file.clone()));
        line(w, "capture", record)?;
        let mine = || {
            report
                .findings
                .iter()
                .enumerate()
                .filter(|(_, f)| f.capture == capture.file)
        };
        for (i, f) in mine() {
            let mut record = object(f)?;
            record.insert("index".into(), json!(i));
            line(w, "finding", record)?;
        }
        for (i, f) in mine().filter(|(_, f)| !f.explained_by.is_empty()) {
            let because: Vec<Value> = f
                .explained_by
                .iter()
                .filter_map(|&j| report.findings.get(j).map(|x| brief(j, x)))
                .collect();
            let mut record = Map::new();
            record.insert("capture".into(), Value::String(f.capture.clone()));
            record.insert("finding".into(), brief(i, f));
            record.insert("explained_by".into(), Value::Array(because));
            line(w, "story", record)?;
        }
    }
    for log in &report.logs {
        let mut record = object(log)?;
        record.insert("log".into(), Value::String(log.path.clone()));
        line(w, "log", record)?;
        for m in report.log_matches.iter().filter(|m| m.log == log.path) {
            let mut record = object(m)?;
            // The kinds beside the indexes, so a query reads a line without a join.
            let kinds: Vec<Value> = m
                .findings
                .iter()
                .filter_map(|&i| report.findings.get(i))
                .map(|f| Value::String(f.kind.to_string()))
                .collect();
            record.insert("finding_kinds".into(), Value::Array(kinds));
            line(w, "log_line", record)?;
        }
    }
    // `--same-traffic`: how each pair of captures was aligned (its links are `story` records).
    for a in &report.alignments {
        let mut record = object(a)?;
        record.insert("capture".into(), Value::String(a.capture.clone()));
        line(w, "alignment", record)?;
    }
    Ok(())
}

/// What a story needs of a finding to read without joining: the join key is `index`.
fn brief(index: usize, f: &Finding) -> Value {
    json!({
        "index": index,
        "kind": f.kind,
        "severity": f.severity,
        "leg": f.leg,
        "client": f.flow.client,
        "server": f.flow.server,
        "status": f.causes.first().map(|c| c.status),
        "packets": f.packets,
        "time": f.time,
        "summary": f.summary,
    })
}

fn object<T: Serialize>(value: &T) -> io::Result<Map<String, Value>> {
    match serde_json::to_value(value).map_err(io::Error::other)? {
        Value::Object(map) => Ok(map),
        _ => Err(io::Error::other("a report record is not a JSON object")),
    }
}

/// `type` first, so a reader scanning the file sees what each line is (a `Map` sorts its
/// keys, so it is written ahead of the object rather than put in it).
fn line(w: &mut dyn Write, kind: &str, fields: Map<String, Value>) -> io::Result<()> {
    // serde_json escapes line breaks inside strings, so a record is always one line.
    let body = serde_json::to_string(&fields).map_err(io::Error::other)?;
    let rest = body.strip_prefix('{').unwrap_or(&body);
    let sep = if rest == "}" { "" } else { "," };
    writeln!(w, "{{\"type\":\"{kind}\"{sep}{rest}")
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::report::{CaptureSummary, Report};

    #[test]
    fn test_render_unreadable_capture_one_line() {
        let c = CaptureSummary {
            file: "a\nb.pcap".into(),
            error: Some("cut\nshort".into()),
            ..Default::default()
        };
        let mut out = Vec::new();
        render(&Report::new(vec![c], vec![], 0), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["type"], "capture");
        assert_eq!(v["capture"], "a\nb.pcap");
        assert!(text.starts_with("{\"type\":\"capture\""));
    }
}
