//! Handshakes that never completed: refused with a reset, or never answered.

use super::{Context, Draft, Findings, cause};
use crate::capture::Duration;
use crate::flow::Connection;
use crate::report::{Kind, Severity};
use serde_json::json;

/// A single SYN seen this close to the end of the capture may simply not have had time to be
/// answered; it is reported, but as a warning.
const TOO_CLOSE_TO_END: Duration = Duration::from_secs(1);

pub fn detect(conn: &Connection, ctx: &Context<'_>, out: &mut Findings) {
    if conn.refused() {
        if out.accepts(Kind::HandshakeRefused, conn.server) {
            refused(conn, ctx, out);
        }
    } else if conn.syns.count > 0
        && conn.to_client.packets == 0
        && conn.resets.count == 0
        // A client that went on after its SYN had an answer the capture does not hold.
        && !conn.answer_not_captured()
        && out.accepts(Kind::SynUnanswered, conn.server)
    {
        unanswered(conn, ctx, out);
    }
}

fn refused(conn: &Connection, ctx: &Context<'_>, out: &mut Findings) {
    let first_syn = conn.syns.first.expect("refused implies a SYN");
    let last_syn = conn.syns.last.unwrap_or(first_syn);
    let port = conn.server.port();
    let host = conn.server.ip();
    let mut packets = conn.syns.frames();
    // The first refusal decides: a reset, or an ICMP unreachable from the host or a firewall.
    let icmp = conn
        .handshake_unreachable
        .filter(|u| conn.handshake_rst.is_none_or(|r| u.at.frame < r.frame));
    let (summary, evidence, next) = match (icmp, conn.handshake_rst) {
        (Some(u), _) => {
            packets.push(u.at.frame);
            let summary = format!(
                "The connection from {} to {} was refused: the SYN was answered with ICMP {} ({}, frame {}).",
                conn.client,
                conn.server,
                u.name(),
                u.type_code(),
                u.at.frame
            );
            let evidence = json!({
                "syn_frames": conn.syns.frames(),
                "syn_attempts": conn.syns.count,
                "refused_by": "icmp",
                "icmp_frame": u.at.frame,
                "icmp_type": u.icmp_type,
                "icmp_code": u.code,
                "icmp": format!("{}: {}", u.type_code(), u.name()),
                "icmp_after_ms": u.at.ts.saturating_sub(last_syn.ts).as_millis_f64(),
            });
            let next = "A firewall on the path or on the host answers for the port (iptables REJECT sends ICMP port unreachable by default): iptables -S | grep -i reject; ip6tables -S | grep -i reject".to_string();
            (summary, evidence, next)
        }
        (None, Some(rst)) => {
            packets.push(rst.frame);
            let summary = format!(
                "{} refused the connection from {}: it answered the SYN with a reset (frame {}).",
                conn.server, conn.client, rst.frame
            );
            let evidence = json!({
                "syn_frames": conn.syns.frames(),
                "syn_attempts": conn.syns.count,
                "refused_by": "reset",
                "reset_frame": rst.frame,
                "reset_after_ms": rst.ts.saturating_sub(last_syn.ts).as_millis_f64(),
            });
            let next =
                "Look for firewall rules that reject rather than drop: iptables -S | grep -i reject"
                    .to_string();
            (summary, evidence, next)
        }
        (None, None) => return,
    };
    let causes = vec![cause(
        502,
        Some("-"),
        format!(
            "Nothing accepted connections on port {port} of {host} at that moment, or a firewall there rejects them. \
             A load balancer whose backend refuses the connection answers the client with 502 and logs upstream_status '-'."
        ),
        &[
            format!(
                "On {host}, check that the service is running and listening on {port}: ss -tlnp 'sport = :{port}'"
            ),
            format!(
                "Check that the port configured for this backend in the balancer's server group is {port}, the one the service listens on."
            ),
            next,
        ],
    )];
    out.push(
        Draft {
            kind: Kind::HandshakeRefused,
            severity: Severity::Error,
            packets,
            first_ts: first_syn.ts,
            summary,
            evidence,
            causes,
        }
        .finish(conn, ctx),
    );
}

fn unanswered(conn: &Connection, ctx: &Context<'_>, out: &mut Findings) {
    let first_syn = conn.syns.first.expect("checked by caller");
    let last_syn = conn.syns.last.unwrap_or(first_syn);
    let waited = ctx.now.saturating_sub(first_syn.ts);
    let port = conn.server.port();
    let host = conn.server.ip();
    let barely_waited = conn.syns.count == 1 && ctx.at_capture_end && waited < TOO_CLOSE_TO_END;
    // Nothing says the SYN went unanswered, only that the capture stopped: a note, not a problem.
    let severity = if barely_waited {
        Severity::Info
    } else {
        Severity::Error
    };
    let mut summary = format!(
        "{} never answered {} from {}: {} SYN{} over {} got no reply.",
        conn.server,
        if conn.syns.count > 1 {
            "the connection attempts"
        } else {
            "the connection attempt"
        },
        conn.client,
        conn.syns.count,
        if conn.syns.count > 1 { "s" } else { "" },
        last_syn.ts.saturating_sub(first_syn.ts),
    );
    if barely_waited {
        summary.push_str(&format!(
            " The capture ended only {waited} after the SYN, so the answer may simply not have come yet."
        ));
    }
    let evidence = json!({
        "syn_frames": conn.syns.frames(),
        "syn_attempts": conn.syns.count,
        "retransmission_span_ms": last_syn.ts.saturating_sub(first_syn.ts).as_millis_f64(),
        "waited_ms": waited.as_millis_f64(),
        "ended_by": if ctx.at_capture_end { "capture end" } else { "idle timeout" },
    });
    let drop_steps = [
        format!(
            "On {host}, capture to see whether the SYNs arrive at all: tcpdump -ni any 'tcp port {port} and tcp[tcpflags] & tcp-syn != 0'"
        ),
        format!(
            "Check the security group and iptables on {host} for rules that drop the balancer's source addresses: iptables -S | grep -i drop"
        ),
        format!("Check that {host} is up and routed: ping {host}"),
    ];
    let causes = vec![
        cause(
            504,
            Some("-"),
            "The balancer gives up connecting to a backend after 5 seconds and answers 504 when SYNs go unanswered.".to_string(),
            &drop_steps,
        ),
        cause(
            502,
            Some("-"),
            format!("The SYNs to {host}:{port} are dropped silently (a security group or iptables rule that drops the balancer's addresses) or the host is down."),
            &drop_steps,
        ),
    ];
    out.push(
        Draft {
            kind: Kind::SynUnanswered,
            severity,
            packets: conn.syns.frames(),
            first_ts: first_syn.ts,
            summary,
            evidence,
            causes,
        }
        .finish(conn, ctx),
    );
}
