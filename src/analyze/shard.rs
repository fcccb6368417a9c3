//! The per-connection half of a capture's analysis: the flow table and the protocol analyzers
//! of its connections. What they produce goes to a [`Judge`]: the detectors directly when one
//! thread analyzes the capture, or a recording that is merged with other shards' in capture
//! order when several do (see `threads.rs`).

use crate::capture::{Frame, Timestamp};
use crate::decode::{Packet, TooBig, Transport};
use crate::flow::{
    ConnRef, Connection, Finalize, FlowLimits, FlowObserver, FlowTable, Role, Seen, StreamEvent,
};
use crate::proto::App;
use crate::proto::http::{HttpEvent, HttpLimits};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Where in capture time an event happened, as the detectors' context reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Moment {
    /// The latest frame time seen so far in the capture.
    pub now: Timestamp,
    /// The capture has ended and connections still open are being finalized.
    pub at_end: bool,
}

/// What judges a shard's output.
pub(crate) trait Judge {
    fn http(&mut self, conn: ConnRef, event: HttpEvent<'_>, at: Moment);
    /// A connection is about to be finalized (its last stream events follow, then
    /// [`Judge::finalized`]).
    fn finalizing(&mut self, _conn: &Connection, _why: Finalize) {}
    fn finalized(&mut self, conn: Connection, app: Option<App>, at: Moment);
    /// An ICMP too-big message about a packet of no connection in the capture.
    fn unmatched_too_big(&mut self, msg: &TooBig, at: Seen, moment: Moment);
}

/// The protocol analyzers of a shard's connections, under one budget for their buffers.
struct Protocols {
    apps: HashMap<u64, App, foldhash::fast::RandomState>,
    http: HttpLimits,
    /// Bytes held in protocol buffers across the shard's connections.
    buffered: usize,
    max_buffered: usize,
    /// Times the budget forced buffers to be shed.
    shed: u64,
    moment: Moment,
}

/// The flow table's observer for one call: the shard's protocols and where they report.
struct Wiring<'a, J: Judge> {
    protocols: &'a mut Protocols,
    judge: &'a mut J,
}

impl<J: Judge> FlowObserver for Wiring<'_, J> {
    fn on_stream(&mut self, conn: ConnRef, from: Role, event: StreamEvent<'_>) {
        let p = &mut *self.protocols;
        let moment = p.moment;
        let app = match event {
            StreamEvent::Data { bytes, .. } => p
                .apps
                .entry(conn.serial)
                .or_insert_with(|| App::new(from, bytes, conn.start_captured, p.http)),
            StreamEvent::Gap { .. } => match p.apps.get_mut(&conn.serial) {
                Some(app) => app,
                None => return,
            },
        };
        let before = app.buffered_bytes();
        let judge = &mut *self.judge;
        let mut sink = |e: HttpEvent<'_>| judge.http(conn, e, moment);
        match event {
            StreamEvent::Data { offset, bytes, at } => {
                app.on_data(from, offset, bytes, at, &mut sink)
            }
            StreamEvent::Gap { len, at, .. } => app.on_gap(from, len, at, &mut sink),
        }
        // Protocol buffers share one budget, so many connections with half-sent heads cannot
        // add up to unbounded memory.
        let after = app.buffered_bytes();
        p.buffered = (p.buffered + after).saturating_sub(before);
        if p.buffered > p.max_buffered {
            app.shed_buffers();
            p.buffered -= after.min(p.buffered);
            p.buffered += app.buffered_bytes();
            p.shed += 1;
        }
    }

    fn finalizing(&mut self, conn: &Connection, why: Finalize) {
        self.judge.finalizing(conn, why);
    }

    fn on_finalized(&mut self, conn: Connection) {
        let p = &mut *self.protocols;
        let mut app = p.apps.remove(&conn.serial);
        if let Some(a) = &app {
            p.buffered -= a.buffered_bytes().min(p.buffered);
        }
        let moment = p.moment;
        // The server's FIN ends a body delimited by the close; a reset before it does not.
        if let (Some(h), Some(fin)) = (app.as_mut().and_then(App::http_mut), conn.to_client.fin)
            && conn.reset.is_none_or(|r| r.at.frame > fin.frame)
        {
            let id = conn.id();
            let judge = &mut *self.judge;
            h.on_server_close(fin, &mut |e| judge.http(id, e, moment));
        }
        self.judge.finalized(conn, app, moment);
    }
}

/// One share of a capture's connections (all of them when one thread analyzes it).
pub(crate) struct Shard {
    pub table: FlowTable,
    protocols: Protocols,
}

impl Shard {
    pub fn new(limits: FlowLimits, http: HttpLimits, max_protocol_buffers: usize) -> Shard {
        Shard {
            table: FlowTable::new(limits),
            protocols: Protocols {
                apps: HashMap::default(),
                http,
                buffered: 0,
                max_buffered: max_protocol_buffers,
                shed: 0,
                moment: Moment {
                    now: Timestamp(i64::MIN),
                    at_end: false,
                },
            },
        }
    }

    /// Capture time has reached this frame's (every frame of the capture passes here, also
    /// the ones another shard handles); a frame from before it leaves the clock where it is.
    pub fn clock(&mut self, ts: Timestamp) {
        self.protocols.moment.now = self.protocols.moment.now.max(ts);
    }

    pub fn now(&self) -> Timestamp {
        self.protocols.moment.now
    }

    /// Times protocol buffers were shed for the budget.
    pub fn shed(&self) -> u64 {
        self.protocols.shed
    }

    /// A TCP segment of a connection another shard holds: only time advances here.
    pub fn advance(&mut self, ts: Timestamp, judge: &mut impl Judge) {
        let mut wiring = Wiring {
            protocols: &mut self.protocols,
            judge,
        };
        self.table.advance(ts, &mut wiring);
    }

    /// A decoded packet of this shard.
    pub fn on_packet(&mut self, frame: &Frame<'_>, packet: Packet<'_>, judge: &mut impl Judge) {
        let at = Seen {
            frame: frame.number,
            ts: frame.ts,
        };
        let mut wiring = Wiring {
            protocols: &mut self.protocols,
            judge,
        };
        match packet.transport {
            Transport::Tcp(seg) => self.table.on_segment(
                SocketAddr::new(packet.src, seg.src_port),
                SocketAddr::new(packet.dst, seg.dst_port),
                &seg,
                at,
                &mut wiring,
            ),
            Transport::TooBig(msg) => {
                if !msg.quoted_tcp
                    || !self.table.note_too_big(
                        msg.quoted_src,
                        msg.quoted_dst,
                        msg.next_hop_mtu,
                        at,
                    )
                {
                    wiring
                        .judge
                        .unmatched_too_big(&msg, at, wiring.protocols.moment);
                }
            }
            Transport::Unreachable(msg) => {
                if msg.quoted_tcp {
                    self.table.note_unreachable(&msg, at);
                }
            }
            Transport::Fragment | Transport::Other => {}
        }
    }

    /// The capture ended: every connection still open is finalized.
    pub fn finish(&mut self, judge: &mut impl Judge) {
        self.protocols.moment.at_end = true;
        let mut wiring = Wiring {
            protocols: &mut self.protocols,
            judge,
        };
        self.table.finish(&mut wiring);
    }
}
