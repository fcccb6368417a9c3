//! Detectors: each reads the facts a finalized connection carries and turns what is wrong with
//! it into findings tied to the status codes they explain.

mod handshake;
mod reset;

use crate::capture::Timestamp;
use crate::flow::Connection;
use crate::report::{Cause, Finding, Flow, Kind, Severity};
use std::collections::HashMap;

/// What a detector knows besides the connection itself.
pub struct Context<'a> {
    pub capture: &'a str,
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

/// Runs every connection detector on a finalized connection.
pub fn on_connection(conn: &Connection, ctx: &Context<'_>, out: &mut Findings) {
    handshake::detect(conn, ctx, out);
    reset::detect(conn, ctx, out);
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
