//! Resets that end an established connection, classified by who sent them and where in the
//! exchange they came. A reset after both sides sent FIN is normal teardown and not reported.

use super::{Context, Draft, Findings, Subject, actor, cause};
use crate::flow::{Connection, Role, TcpPhase};
use crate::proto::http::{HttpConn, HttpPhase};
use crate::report::{Cause, Kind, Severity};
use serde_json::json;

/// Where in the exchange the reset came: from HTTP when the connection carried it, else from
/// TCP alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    BeforeRequest,
    DuringRequest,
    AwaitingResponse,
    DuringResponse,
    Idle,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::BeforeRequest => "before_request",
            Phase::DuringRequest => "during_request",
            Phase::AwaitingResponse => "awaiting_response",
            Phase::DuringResponse => "during_response",
            Phase::Idle => "idle",
        }
    }
}

impl From<TcpPhase> for Phase {
    fn from(p: TcpPhase) -> Phase {
        match p {
            TcpPhase::BeforeRequest => Phase::BeforeRequest,
            TcpPhase::AwaitingResponse => Phase::AwaitingResponse,
            TcpPhase::DuringResponse => Phase::DuringResponse,
            TcpPhase::Idle => Phase::Idle,
        }
    }
}

impl From<HttpPhase> for Phase {
    fn from(p: HttpPhase) -> Phase {
        match p {
            HttpPhase::BeforeRequest => Phase::BeforeRequest,
            HttpPhase::DuringRequest => Phase::DuringRequest,
            HttpPhase::AwaitingResponse => Phase::AwaitingResponse,
            HttpPhase::DuringResponse => Phase::DuringResponse,
            HttpPhase::Idle => Phase::Idle,
        }
    }
}

pub fn detect(conn: &Connection, http: Option<&HttpConn>, ctx: &Context<'_>, out: &mut Findings) {
    let Some(reset) = conn.reset else {
        return;
    };
    // After both FINs the reset is normal teardown; a reset that is the first packet we saw of
    // the connection says nothing about an exchange we never observed.
    if reset.after_both_fins || reset.at.frame == conn.first.frame {
        return;
    }
    // With one direction missing from the capture, where the reset came in the exchange (and
    // so what it explains) cannot be told: a server reset would look like one before any
    // request, a client reset like one awaiting a response the capture never held.
    if conn.one_sided() {
        return;
    }
    let (phase, basis) = match http {
        Some(h) => (Phase::from(h.phase()), "http"),
        None => (Phase::from(reset.phase), "tcp"),
    };
    let (severity, what, causes) = judge(conn, reset.by, phase);
    // Which kind of reset this is: the normal ones (answering data that arrives after a close,
    // as nginx's lingering close does, or closing an idle keep-alive connection) are info.
    let fin_before = [conn.to_server.fin, conn.to_client.fin]
        .iter()
        .flatten()
        .any(|f| f.frame < reset.at.frame);
    let reset_kind = if fin_before {
        "after_close"
    } else if phase == Phase::Idle {
        "idle_keepalive"
    } else {
        "abort"
    };
    let mut packets = vec![reset.at.frame];
    let last_request = conn.to_server.last_data;
    let last_response = conn.to_client.last_data;
    packets.extend(last_request.map(|s| s.frame));
    packets.extend(last_response.map(|s| s.frame));
    let (resetter, other) = match reset.by {
        Role::Client => (conn.client, conn.server),
        Role::Server => (conn.server, conn.client),
    };
    let summary = format!(
        "The {} {resetter} reset its connection with {other} {what} (frame {}).",
        reset.by.as_str(),
        reset.at.frame
    );
    let mut evidence = json!({
        "by": reset.by.as_str(),
        "phase": phase.as_str(),
        "phase_basis": basis,
        "reset_kind": reset_kind,
        "reset_frame": reset.at.frame,
        "resets": conn.resets.count,
        "client_bytes": conn.to_server.payload_bytes,
        "server_bytes": conn.to_client.payload_bytes,
        "last_client_data_frame": last_request.map(|s| s.frame),
        "last_server_data_frame": last_response.map(|s| s.frame),
        "ms_since_last_client_data": last_request.map(|s| reset.at.ts.saturating_sub(s.ts).as_millis_f64()),
        "ms_since_last_server_data": last_response.map(|s| reset.at.ts.saturating_sub(s.ts).as_millis_f64()),
        "client_fin_frame": conn.to_server.fin.map(|s| s.frame),
        "server_fin_frame": conn.to_client.fin.map(|s| s.frame),
    });
    if let Some(txn) = http.and_then(|h| h.last()) {
        evidence["request"] = txn.request_line().into();
        evidence["status"] = txn.status.into();
    }
    out.push(
        Draft {
            kind: Kind::ConnectionReset,
            severity,
            packets,
            first_ts: reset.at.ts,
            summary,
            evidence,
            causes,
        }
        .finish_for(&Subject::of(conn), ctx)
        .with(|f| {
            f.by = Some(actor(reset.by));
            if let Some(txn) = http.and_then(|h| h.last()) {
                f.request = Some(txn.request_line());
                f.status = txn.status;
                f.request_at = txn.request;
            }
        }),
    );
}

/// Severity, a phrase for the summary, and the causes, by who reset and when.
fn judge(conn: &Connection, by: Role, phase: Phase) -> (Severity, &'static str, Vec<Cause>) {
    let host = conn.server.ip();
    let port = conn.server.port();
    let backend_logs = format!(
        "Read the backend's logs on {host} around this time for a crash, restart, or a worker killed mid-request."
    );
    let backend_resets = format!(
        "Count resets the backend sends: nstat -az TcpExtTCPAbortOnData TcpExtTCPAbortOnClose on {host}"
    );
    match (by, phase) {
        (Role::Server, Phase::BeforeRequest) => (
            Severity::Error,
            "before the client sent anything",
            vec![cause(
                502,
                Some("-"),
                format!("The backend accepted the connection on port {port} and then reset it at once: a service that is overloaded, restarting, or rejecting the balancer's addresses. The balancer answers 502 with upstream_status '-'."),
                &[backend_logs, backend_resets, "Check the backend's accept queue: netstat -s | grep -i listen".to_string()],
            )],
        ),
        (Role::Server, Phase::DuringRequest) => (
            Severity::Error,
            "while the request was still arriving",
            vec![cause(
                502,
                Some("-"),
                "The backend reset the connection before it had the whole request: it rejected or could not take the request (size limits, a crash), so the balancer answers 502.".to_string(),
                &[backend_logs.clone(), backend_resets.clone()],
            )],
        ),
        (Role::Server, Phase::AwaitingResponse) => (
            Severity::Error,
            "while the client was waiting for its response",
            vec![cause(
                502,
                Some("-"),
                "The backend dropped the request without answering it: the connection ended abnormally before any response, so the balancer answers 502 and logs upstream_status '-'.".to_string(),
                &[backend_logs, backend_resets],
            )],
        ),
        (Role::Server, Phase::DuringResponse) => (
            Severity::Error,
            "in the middle of sending its response",
            vec![
                cause(
                    502,
                    Some("-"),
                    "The backend cut its response short with a reset; the balancer cannot complete the answer.".to_string(),
                    &[backend_logs.clone(), backend_resets],
                ),
                cause(
                    500,
                    None,
                    "When part of the response had already been passed on, the client sees a broken or 500 response: the backend closed the connection unexpectedly.".to_string(),
                    &[backend_logs],
                ),
            ],
        ),
        (Role::Server, Phase::Idle) => (
            Severity::Info,
            "after the exchange, while the connection was idle",
            vec![cause(
                502,
                Some("-"),
                "Resetting an idle keep-alive connection is normal, but if the balancer sends a new request on it at that moment the request fails with 502. Make the backend's keep-alive timeout longer than the balancer's idle timeout.".to_string(),
                &["Compare the backend's keep-alive timeout (nginx: keepalive_timeout) with the balancer's connection idle timeout.".to_string()],
            )],
        ),
        (Role::Client, Phase::BeforeRequest) => (
            Severity::Info,
            "without sending anything",
            vec![cause(
                499,
                None,
                "A client that connects and resets without a request is typical of TCP health checks and port probes; it matters only if real clients do it.".to_string(),
                &["Check whether this client address is a health checker or scanner.".to_string()],
            )],
        ),
        (Role::Client, Phase::DuringRequest) => (
            Severity::Warning,
            "before it finished sending its request",
            vec![
                cause(
                    400,
                    None,
                    "The client closed before sending the complete request; the balancer answers (or logs) 400.".to_string(),
                    &["Check the client's logs and timeouts; capture on the client to see why it aborted.".to_string()],
                ),
                cause(499, None, "The balancer logs a client that closed early as 499.".to_string(), &[]),
            ],
        ),
        (Role::Client, Phase::AwaitingResponse) | (Role::Client, Phase::DuringResponse) => (
            Severity::Warning,
            if phase == Phase::AwaitingResponse {
                "before the response arrived"
            } else {
                "before the response was complete"
            },
            vec![cause(
                499,
                None,
                "The client gave up and closed the connection before getting its answer; a balancer logs this as 499. Usually the client's timeout is shorter than the time the backend takes, or the network between them is poor.".to_string(),
                &[
                    "Compare the client's request timeout with the backend's response time (upstream_response_time in the access log).".to_string(),
                    "Check the round-trip time and loss between the client and the balancer (tcpinfo_rtt in the access log, or mtr from the client).".to_string(),
                ],
            )],
        ),
        (Role::Client, Phase::Idle) => (
            Severity::Info,
            "after the exchange had finished",
            vec![cause(
                499,
                None,
                "A client resetting a connection after its answer, or after the server closed, is normal teardown for many clients.".to_string(),
                &[],
            )],
        ),
    }
}
