//! `syn_retransmitted`: handshakes that completed only after the client resent its SYN. When
//! the same server answered other SYNs at once, the likely reason is a full accept queue: the
//! kernel drops SYNs for a listener whose backlog is full. That comparison needs every
//! connection to the server, so findings are held per server until the capture ends.

use super::{Context, Draft, Findings, cause};
use crate::flow::Connection;
use crate::report::{Finding, Kind, Severity};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Servers followed at once; a capture of a scan touches many, and memory must stay bounded.
const MAX_SERVERS: usize = 100_000;
/// Delayed handshakes kept per server until the end; further ones are only counted.
const MAX_DELAYED_KEPT: usize = 100;
/// The balancer's connect timeout: a handshake slower than this fails at the balancer.
const CONNECT_TIMEOUT_MS: f64 = 5000.0;

#[derive(Default)]
struct Server {
    answered_at_once: u64,
    delayed: Vec<Finding>,
    delayed_total: u64,
}

#[derive(Default)]
pub struct AcceptQueue {
    servers: HashMap<SocketAddr, Server>,
}

impl AcceptQueue {
    pub fn on_connection(&mut self, conn: &Connection, ctx: &Context<'_>) {
        let (Some(first_syn), Some(synack)) = (conn.syns.first, conn.syn_acks.first) else {
            return;
        };
        if self.servers.len() >= MAX_SERVERS && !self.servers.contains_key(&conn.server) {
            return;
        }
        let server = self.servers.entry(conn.server).or_default();
        // The server answered the first SYN: a SYN the client repeated afterwards (its SYN-ACK
        // was lost or late on the way back) is no sign of a full queue.
        if conn.syns_before_syn_ack <= 1 {
            server.answered_at_once += 1;
            return;
        }
        server.delayed_total += 1;
        if server.delayed.len() >= MAX_DELAYED_KEPT {
            return;
        }
        let delay = synack.ts.saturating_sub(first_syn.ts);
        let mut packets = conn.syns.frames();
        packets.push(synack.frame);
        let summary = format!(
            "{} answered {}'s connection only after {} SYNs, {delay} after the first.",
            conn.server, conn.client, conn.syns_before_syn_ack
        );
        server.delayed.push(
            Draft {
                kind: Kind::SynRetransmitted,
                severity: Severity::Warning,
                packets,
                first_ts: first_syn.ts,
                summary,
                evidence: json!({
                    "syn_attempts": conn.syns_before_syn_ack,
                    "syn_frames": conn.syns.frames(),
                    "synack_frame": synack.frame,
                    "handshake_delay_ms": delay.as_millis_f64(),
                }),
                causes: vec![],
            }
            .finish(conn, ctx),
        );
    }

    /// Judges each server now that all its connections are known.
    pub fn finish(self, out: &mut Findings) {
        let mut servers: Vec<_> = self.servers.into_iter().collect();
        servers.sort_by_key(|(addr, _)| *addr);
        for (addr, server) in servers {
            for mut f in server.delayed {
                let delay = f.evidence["handshake_delay_ms"].as_f64().unwrap_or(0.0);
                f.evidence
                    .insert("answered_at_once".into(), server.answered_at_once.into());
                f.evidence
                    .insert("delayed_handshakes".into(), server.delayed_total.into());
                let port = addr.port();
                if server.answered_at_once > 0 {
                    f.summary.push_str(&format!(
                        " In the same capture it answered {} other SYN(s) at once: its accept queue was full.",
                        server.answered_at_once
                    ));
                    f.severity = if delay >= CONNECT_TIMEOUT_MS {
                        Severity::Error
                    } else {
                        Severity::Warning
                    };
                    f.causes = vec![cause(
                        502,
                        Some("-"),
                        format!("The backend's listen backlog on port {port} is full: the application is not accepting connections as fast as they arrive, so the kernel drops new SYNs. Handshakes that wait longer than the balancer's 5-second connect timeout fail; the others start late."),
                        &[
                            format!("On {}, look for listen-queue overflows: netstat -s | grep -i listen", addr.ip()),
                            format!("Compare the accept queue with its limit: ss -ltn 'sport = :{port}' (Recv-Q against Send-Q)"),
                            "Raise the application's backlog and net.core.somaxconn, or add workers that accept faster.".to_string(),
                        ],
                    )];
                } else {
                    f.summary.push_str(
                        " No other connection to this server was answered at once, so a lost first SYN is as likely as a full accept queue.",
                    );
                    f.severity = Severity::Info;
                    f.causes = vec![cause(
                        502,
                        Some("-"),
                        "The first SYN was lost or dropped: by the network, or by a backend whose accept queue was full.".to_string(),
                        &[format!("On {}, check: netstat -s | grep -i listen", addr.ip())],
                    )];
                }
                out.push(f);
            }
        }
    }
}
