//! Transport trouble on one connection: packets over the MTU, MTU blackholes, ICMP too-big,
//! loss, a slow round trip, stalled receivers and capture gaps. Each threshold is a flag whose
//! default a healthy network does not reach (docs/thresholds.md gives the reasoning).

use super::{Context, Draft, Findings, Subject, actor, cause};
use crate::capture::Duration;
use crate::flow::{Connection, Role, Side};
use crate::report::{Kind, Severity};
use serde_json::json;

pub fn detect(conn: &Connection, ctx: &Context<'_>, out: &mut Findings) {
    let mut blackholed = [false; 2];
    for (i, from) in [Role::Client, Role::Server].into_iter().enumerate() {
        blackholed[i] = mtu_blackhole(conn, from, ctx, out);
        oversize(conn, from, ctx, out);
    }
    icmp_too_big(conn, ctx, out);
    packet_loss(conn, blackholed, ctx, out);
    high_rtt(conn, ctx, out);
    for receiver in [Role::Client, Role::Server] {
        zero_window(conn, receiver, ctx, out);
    }
    capture_gap(conn, ctx, out);
}

fn sender_name(from: Role) -> &'static str {
    match from {
        Role::Client => "client",
        Role::Server => "server",
    }
}

fn addr_of(conn: &Connection, role: Role) -> std::net::SocketAddr {
    match role {
        Role::Client => conn.client,
        Role::Server => conn.server,
    }
}

fn oversize(conn: &Connection, from: Role, ctx: &Context<'_>, out: &mut Findings) {
    let tcp = &conn.side(from).tcp();
    let Some(first) = tcp.oversize.first else {
        return;
    };
    let mtu = ctx.thresholds.mtu;
    // Segments that really crossed a link with this MTU could not have been larger; if the
    // peer acknowledged them, the capturing host's NIC or kernel split or merged them
    // (TSO/GSO/GRO) and the wire carried MTU-sized packets.
    let acked_over_mtu = tcp.largest_acked_ip_len > mtu;
    let never_acked_and_resent = tcp.large_unacked_retransmissions.count > 0
        && tcp.large_retransmitted_ip_len > mtu
        && tcp.large_segments_never_acked();
    let offload = acked_over_mtu || !never_acked_and_resent || conn.one_sided();
    let severity = if offload {
        Severity::Info
    } else {
        Severity::Warning
    };
    let who = addr_of(conn, from);
    let summary = if offload {
        format!(
            "{} sent {} packet(s) larger than the {mtu}-byte MTU (up to {} bytes): segmentation-offload super-frames seen on the capturing host, not packets on the wire.",
            who, tcp.oversize.count, tcp.oversize_largest
        )
    } else {
        format!(
            "{} sent {} packet(s) larger than the {mtu}-byte MTU (up to {} bytes) that were never acknowledged.",
            who, tcp.oversize.count, tcp.oversize_largest
        )
    };
    let causes = if offload {
        vec![]
    } else {
        vec![cause(
            502,
            Some("-"),
            format!("Packets larger than {mtu} bytes leave {who} but do not arrive: a link on the path has a smaller MTU than this host's interface."),
            &["Compare interface MTUs along the path: ip link show; and test: ping -M do -s 1472 <peer>".to_string()],
        )]
    };
    out.push(
        Draft {
            kind: Kind::OversizePacket,
            severity,
            packets: tcp.oversize.frames(),
            first_ts: first.ts,
            summary,
            evidence: json!({
                "sender": sender_name(from),
                "packets_over_mtu": tcp.oversize.count,
                "largest_ip_len": tcp.oversize_largest,
                "mtu": mtu,
                "dont_fragment": tcp.oversize_with_df > 0,
                "offload_likely": offload,
                "acknowledged_over_mtu": acked_over_mtu,
            }),
            causes,
        }
        .finish(conn, ctx),
    );
}

fn mtu_blackhole(conn: &Connection, from: Role, ctx: &Context<'_>, out: &mut Findings) -> bool {
    let tcp = &conn.side(from).tcp();
    let resent = &tcp.large_unacked_retransmissions;
    // Without the peer's direction no acknowledgement is ever seen: nothing was "never acked".
    if !conn.established
        || conn.one_sided()
        || resent.count < 2
        || !tcp.large_segments_never_acked()
    {
        return false;
    }
    let Some(first) = resent.first else {
        return false;
    };
    let who = addr_of(conn, from);
    let peer = addr_of(
        conn,
        if from == Role::Client {
            Role::Server
        } else {
            Role::Client
        },
    );
    let got_through = tcp.largest_acked_ip_len;
    let failed = tcp.large_retransmitted_ip_len;
    let mut packets = resent.frames();
    packets.extend(conn.too_big.frames());
    let icmp_note = if conn.too_big.count > 0 {
        format!(
            " A router did report a {}-byte MTU (ICMP, frame {}), but the sender kept sending large packets.",
            conn.too_big_mtu,
            conn.too_big.first.map_or(0, |s| s.frame)
        )
    } else {
        " No ICMP \"fragmentation needed\" message reached this capture.".to_string()
    };
    let small = if got_through > 0 {
        format!("packets of up to {got_through} bytes got through")
    } else {
        "the handshake's small packets got through".to_string()
    };
    let summary = format!(
        "{who}'s {failed}-byte packets to {peer} were retransmitted {} times and never acknowledged, while {small}: the path MTU is smaller than {failed} bytes.{icmp_note}",
        resent.count
    );
    let steps = [
        format!("Find the path MTU from {who}: ping -M do -s 1472 {} (lower -s until it passes)", peer.ip()),
        "Allow ICMP type 3 code 4 (IPv6: type 2) through firewalls and security groups on the path.".to_string(),
        "Or lower the MTU / clamp the MSS on the sending side: iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu".to_string(),
    ];
    out.push(
        Draft {
            kind: Kind::MtuBlackhole,
            severity: Severity::Error,
            packets,
            first_ts: first.ts,
            summary,
            evidence: json!({
                "sender": sender_name(from),
                "largest_acknowledged_ip_len": got_through,
                "unacknowledged_ip_len": failed,
                "retransmissions_of_large_packets": resent.count,
                "icmp_frag_needed_frames": conn.too_big.frames(),
                "icmp_next_hop_mtu": (conn.too_big.count > 0).then_some(conn.too_big_mtu),
            }),
            causes: vec![
                cause(
                    502,
                    Some("-"),
                    "Packets larger than the path MTU are dropped and the ICMP message that would tell the sender is blocked: small requests and health checks pass, large ones never arrive, and the balancer gives up on the backend.".to_string(),
                    &steps,
                ),
                cause(
                    504,
                    Some("-"),
                    "When the large packets are the request, the backend never receives it whole and the balancer times out waiting for the response.".to_string(),
                    &steps,
                ),
            ],
        }
        .finish_for(&Subject::of(conn), ctx)
        .with(|f| f.unacknowledged_ip_len = Some(failed)),
    );
    true
}

fn icmp_too_big(conn: &Connection, ctx: &Context<'_>, out: &mut Findings) {
    let Some(first) = conn.too_big.first else {
        return;
    };
    let mtu = conn.too_big_mtu;
    let sender = conn.too_big_for.map(|r| addr_of(conn, r));
    let summary = format!(
        "A router told {} that its packets do not fit a {mtu}-byte link ({} ICMP message(s)).",
        sender.map_or("the sender".to_string(), |a| a.to_string()),
        conn.too_big.count
    );
    out.push(
        Draft {
            kind: Kind::IcmpFragNeeded,
            severity: Severity::Info,
            packets: conn.too_big.frames(),
            first_ts: first.ts,
            summary,
            evidence: json!({
                "next_hop_mtu": mtu,
                "messages": conn.too_big.count,
                "about_packets_from": conn.too_big_for.map(sender_name),
            }),
            causes: vec![cause(
                502,
                Some("-"),
                format!("The path MTU is {mtu} bytes. Path MTU discovery works when these messages reach the sender; if they are filtered elsewhere, large packets vanish (an MTU blackhole)."),
                &["Make sure ICMP type 3 code 4 (IPv6: type 2) is allowed back to the sender.".to_string()],
            )],
        }
        .finish(conn, ctx),
    );
}

fn loss_figures(side: &Side) -> serde_json::Value {
    json!({
        "data_segments": side.tcp().data_segments,
        "retransmissions": side.tcp().retransmissions.count,
        "retransmission_rate": (side.tcp().retransmission_rate() * 10000.0).round() / 10000.0,
        "duplicate_acks_received": 0,
    })
}

fn packet_loss(conn: &Connection, blackholed: [bool; 2], ctx: &Context<'_>, out: &mut Findings) {
    let t = ctx.thresholds;
    let mut worst: Option<(Role, f64)> = None;
    for (i, from) in [Role::Client, Role::Server].into_iter().enumerate() {
        let tcp = &conn.side(from).tcp();
        // After an ICMP too-big, resending the data in smaller segments is path MTU discovery
        // working, not loss; icmp_frag_needed reports it.
        let pmtud = conn.too_big.count > 0 && conn.too_big_for == Some(from);
        if blackholed[i]
            || pmtud
            || tcp.data_segments < t.loss_min_segments
            || tcp.retransmissions.count < t.loss_min_retransmissions
        {
            continue;
        }
        let rate = tcp.retransmission_rate();
        if rate >= t.loss_rate && worst.is_none_or(|(_, r)| rate > r) {
            worst = Some((from, rate));
        }
    }
    let Some((from, rate)) = worst else {
        return;
    };
    let tcp = &conn.side(from).tcp();
    let receiver = if from == Role::Client {
        Role::Server
    } else {
        Role::Client
    };
    let dup_acks = conn.side(receiver).tcp().dup_acks;
    let mut to_server = loss_figures(&conn.to_server);
    to_server["duplicate_acks_received"] = conn.to_client.tcp().dup_acks.into();
    let mut to_client = loss_figures(&conn.to_client);
    to_client["duplicate_acks_received"] = conn.to_server.tcp().dup_acks.into();
    let summary = format!(
        "{:.1}% of the {}'s data segments to {} were retransmitted ({} of {}, {} duplicate ACKs): packets are being lost on this path.",
        rate * 100.0,
        sender_name(from),
        addr_of(conn, receiver),
        tcp.retransmissions.count,
        tcp.data_segments,
        dup_acks
    );
    let steps = [
        format!(
            "Measure loss along the path: mtr -rwc 100 {}",
            addr_of(conn, receiver).ip()
        ),
        "Check interface drops and errors on both hosts: ip -s link; nstat -az TcpRetransSegs"
            .to_string(),
    ];
    out.push(
        Draft {
            kind: Kind::PacketLoss,
            severity: Severity::Warning,
            packets: tcp.retransmissions.frames(),
            first_ts: tcp.retransmissions.first.map_or(conn.first.ts, |s| s.ts),
            summary,
            evidence: json!({
                "sender": sender_name(from),
                "retransmission_rate": (rate * 10000.0).round() / 10000.0,
                "threshold": t.loss_rate,
                "client_to_server": to_server,
                "server_to_client": to_client,
            }),
            causes: vec![
                cause(504, Some("-"), "On the balancer-to-backend leg, loss stretches the exchange past the balancer's timeouts.".to_string(), &steps),
                cause(408, None, "On the client leg, a request that arrives slowly because of loss runs into the request timeout.".to_string(), &steps),
                cause(499, None, "Clients give up on slow, lossy exchanges before the answer arrives.".to_string(), &steps),
            ],
        }
        .finish_for(&Subject::of(conn), ctx)
        .with(|f| f.retransmission_rate = Some((rate * 10000.0).round() / 10000.0)),
    );
}

fn high_rtt(conn: &Connection, ctx: &Context<'_>, out: &mut Findings) {
    let (Some(syn), Some(ack)) = (conn.rtt_syn, conn.rtt_ack) else {
        return;
    };
    let Some(synack) = conn.syn_acks.first else {
        return;
    };
    // The round trip is the SYN to the SYN-ACK that answered it, plus the SYN-ACK the ACK
    // answered to the ACK: a SYN-ACK lost on its way to the client and sent again (the client
    // repeating its SYN meanwhile) is a retransmission, not a slow path.
    let answered = conn.rtt_syn_ack.unwrap_or(synack);
    let syn_to_synack = synack.ts.saturating_sub(syn.ts);
    let synack_to_ack = ack.ts.saturating_sub(answered.ts);
    let rtt = Duration(syn_to_synack.0.saturating_add(synack_to_ack.0));
    if rtt < ctx.thresholds.rtt {
        return;
    }
    let summary = format!(
        "The handshake with {} took {rtt} from SYN to the client's ACK: a round trip this slow makes every exchange slow.",
        conn.server
    );
    let steps = [
        format!("Measure the path: mtr -rwc 50 {}", conn.server.ip()),
        "Check tcpinfo_rtt and request_time in the balancer's access log for the same clients."
            .to_string(),
    ];
    out.push(
        Draft {
            kind: Kind::HighRtt,
            severity: Severity::Warning,
            packets: vec![syn.frame, synack.frame, answered.frame, ack.frame],
            first_ts: syn.ts,
            summary,
            evidence: json!({
                "rtt_ms": rtt.as_millis_f64(),
                "syn_to_synack_ms": syn_to_synack.as_millis_f64(),
                "synack_to_ack_ms": synack_to_ack.as_millis_f64(),
                "threshold_ms": ctx.thresholds.rtt.as_millis_f64(),
            }),
            causes: vec![
                cause(408, None, "A slow network between client and balancer delays the request past the request timeout.".to_string(), &steps),
                cause(499, None, "Clients time out and close before the answer arrives over a slow path.".to_string(), &steps),
            ],
        }
        .finish_for(&Subject::of(conn), ctx)
        .with(|f| f.rtt_ms = Some(rtt.as_millis_f64())),
    );
}

fn zero_window(conn: &Connection, receiver: Role, ctx: &Context<'_>, out: &mut Findings) {
    let tcp = &conn.side(receiver).tcp();
    let Some(first) = tcp.zero_windows.first else {
        return;
    };
    // Brief stalls are how flow control works; only a stall as long as the threshold can
    // explain a timeout. Many short ones that add up are worth a note, not an alarm.
    let long_stall = tcp.zero_window_longest >= ctx.thresholds.zero_window;
    let adds_up = tcp.zero_window_total.0 >= ctx.thresholds.zero_window.0 / 20;
    if !long_stall && !adds_up {
        return;
    }
    let who = addr_of(conn, receiver);
    let summary = if long_stall {
        format!(
            "The {} {who} stopped reading: it advertised a zero receive window {} time(s), the longest stall lasting {} ({} in all).",
            sender_name(receiver),
            tcp.zero_windows.count,
            tcp.zero_window_longest,
            tcp.zero_window_total
        )
    } else {
        format!(
            "The {} {who} advertised a zero receive window {} time(s), stalling the sender for {} in all (longest {}): it reads slower than data arrives, but no stall is long enough to explain a timeout.",
            sender_name(receiver),
            tcp.zero_windows.count,
            tcp.zero_window_total,
            tcp.zero_window_longest
        )
    };
    let causes = match receiver {
        Role::Server => vec![cause(
            504,
            Some("-"),
            "The backend is not reading what it is sent (busy, blocked, or out of workers), so the balancer's request stalls until it times out.".to_string(),
            &[format!("On {}, check the application's worker pool and CPU, and the socket's receive queue: ss -tnm 'sport = :{}'", conn.server.ip(), conn.server.port())],
        )],
        Role::Client => vec![cause(
            408,
            None,
            "The client is not reading the response fast enough (a slow or stuck client); the transfer stalls until a timeout closes it.".to_string(),
            &["Check the client's CPU and whether it reads the response while still sending.".to_string()],
        )],
    };
    out.push(
        Draft {
            kind: Kind::ZeroWindow,
            severity: if long_stall {
                Severity::Warning
            } else {
                Severity::Info
            },
            packets: tcp.zero_windows.frames(),
            first_ts: first.ts,
            summary,
            evidence: json!({
                "receiver": sender_name(receiver),
                "zero_windows": tcp.zero_windows.count,
                "longest_ms": tcp.zero_window_longest.as_millis_f64(),
                "total_ms": tcp.zero_window_total.as_millis_f64(),
                "threshold_ms": ctx.thresholds.zero_window.as_millis_f64(),
            }),
            causes,
        }
        .finish_for(&Subject::of(conn), ctx)
        .with(|f| {
            f.receiver = Some(actor(receiver));
            f.longest_stall_ms = Some(tcp.zero_window_longest.as_millis_f64());
        }),
    );
}

fn capture_gap(conn: &Connection, ctx: &Context<'_>, out: &mut Findings) {
    let missing = conn.uncaptured_bytes();
    if missing == 0 {
        return;
    }
    let gaps = conn.to_server.stream.gaps + conn.to_client.stream.gaps;
    let summary = format!(
        "The capture is missing {missing} byte(s) of this connection in {gaps} gap(s) (capture drops or snaplen); findings about it are less certain."
    );
    out.push(
        Draft {
            kind: Kind::CaptureGap,
            severity: Severity::Info,
            packets: [&conn.to_server, &conn.to_client]
                .iter()
                .filter_map(|s| s.stream.first_gap_frame)
                .collect(),
            first_ts: conn.first.ts,
            summary,
            evidence: json!({
                "missing_bytes": missing,
                "gaps": gaps,
                "client_to_server_missing": conn.to_server.stream.gap_bytes,
                "server_to_client_missing": conn.to_client.stream.gap_bytes,
            }),
            causes: vec![],
        }
        .finish(conn, ctx),
    );
}
