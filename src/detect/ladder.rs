//! The TCP moments of a flagged connection, as typed facts for its ladder diagram: the
//! handshake, the closes, the reset, the first and last retransmission and the first capture
//! gap of each side. Built only for connections that have a finding, from what the connection
//! already kept; a healthy connection costs nothing here.

use super::actor;
use crate::flow::{Connection, FrameList, Side};
use crate::report::{Repeats, TcpMoments};

fn repeats(list: &FrameList) -> Option<Repeats> {
    Some(Repeats {
        count: list.count,
        first: list.first?,
        last: list.last?,
    })
}

fn gap(side: &Side) -> Option<(u64, u64)> {
    side.stream
        .first_gap_frame
        .map(|frame| (frame, side.stream.gap_bytes))
}

pub fn moments(conn: &Connection) -> TcpMoments {
    TcpMoments {
        syn: conn.syns.first,
        syns: repeats(&conn.syns).filter(|r| r.count > 1),
        syn_ack: conn.syn_acks.first,
        handshake_rst: conn.handshake_rst,
        client_fin: conn.to_server.fin,
        server_fin: conn.to_client.fin,
        reset: conn.reset.map(|r| (actor(r.by), r.at)),
        client_retransmissions: repeats(&conn.to_server.tcp().retransmissions),
        server_retransmissions: repeats(&conn.to_client.tcp().retransmissions),
        client_gap: gap(&conn.to_server),
        server_gap: gap(&conn.to_client),
    }
}
