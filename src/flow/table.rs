//! All live connections of a capture, keyed by their 4-tuple. Connections that have closed or
//! gone idle (in capture time) are finalized and freed as the capture advances, so memory
//! follows the number of live connections, not the length of the capture.

use super::connection::{ConnRef, Connection, Role, RoleSource, Seen};
use super::reassembly::{Budget, StreamEvent};
use crate::capture::{Duration, Timestamp};
use crate::decode::TcpSegment;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Copy, Debug)]
pub struct FlowLimits {
    /// A connection with no packets for this long is finalized.
    pub idle_timeout: Duration,
    /// A closed connection is kept this long for late retransmissions and resets.
    pub close_linger: Duration,
    /// At most this many live connections; beyond it the one due soonest is finalized early.
    pub max_connections: usize,
    pub max_ooo_per_connection: usize,
    pub max_ooo_total: usize,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            idle_timeout: Duration::from_secs(300),
            close_linger: Duration::from_secs(5),
            max_connections: 1_000_000,
            max_ooo_per_connection: 1 << 20,
            max_ooo_total: 256 << 20,
        }
    }
}

/// Order-independent key: the same for both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct FlowKey {
    low: (IpAddr, u16),
    high: (IpAddr, u16),
}

impl FlowKey {
    fn new(a: SocketAddr, b: SocketAddr) -> FlowKey {
        let (a, b) = ((a.ip(), a.port()), (b.ip(), b.port()));
        if a <= b {
            FlowKey { low: a, high: b }
        } else {
            FlowKey { low: b, high: a }
        }
    }
}

/// Ports that identify a server when the handshake was not captured.
const SERVICE_PORTS: &[u16] = &[
    1080, 1433, 1521, 2379, 3000, 3306, 3128, 4443, 5000, 5432, 5672, 6379, 6443, 8000, 8008, 8080,
    8081, 8088, 8443, 8888, 9000, 9090, 9200, 9443, 11211, 27017,
];

fn server_by_ports(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let score = |p: u16| {
        if p < 1024 {
            0
        } else if SERVICE_PORTS.contains(&p) {
            1
        } else {
            2
        }
    };
    let (sa, sb) = (score(a.port()), score(b.port()));
    if sa < sb || (sa == sb && a.port() <= b.port()) {
        (b, a)
    } else {
        (a, b)
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct FlowStats {
    pub connections: u64,
    pub evicted_early: u64,
    pub peak_live: usize,
}

pub struct FlowTable {
    limits: FlowLimits,
    live: HashMap<FlowKey, Connection>,
    /// Lazy deadlines: an entry may be stale; it is checked against the connection when popped.
    deadlines: BinaryHeap<Reverse<(Timestamp, u64, FlowKey)>>,
    pub budget: Budget,
    pub stats: FlowStats,
    now: Timestamp,
}

impl FlowTable {
    pub fn new(limits: FlowLimits) -> FlowTable {
        FlowTable {
            budget: Budget::new(limits.max_ooo_per_connection, limits.max_ooo_total),
            limits,
            live: HashMap::new(),
            deadlines: BinaryHeap::new(),
            stats: FlowStats::default(),
            now: Timestamp(i64::MIN),
        }
    }

    pub fn live(&self) -> usize {
        self.live.len()
    }

    fn deadline(&self, c: &Connection) -> Timestamp {
        let wait = if c.is_closed() {
            self.limits.close_linger
        } else {
            self.limits.idle_timeout
        };
        c.last.ts.saturating_add(wait)
    }

    /// Feeds one TCP segment. Connections it ends (a reused 4-tuple) and connections whose time
    /// has passed go to `done`; stream bytes go to `stream`.
    pub fn on_segment(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        seg: &TcpSegment<'_>,
        at: Seen,
        stream: &mut dyn FnMut(ConnRef, Role, StreamEvent<'_>),
        done: &mut dyn FnMut(Connection, &mut Budget),
    ) {
        if at.ts > self.now {
            self.now = at.ts;
            self.expire(stream, done);
        }
        let key = FlowKey::new(src, dst);
        let pure_syn = seg.flags.syn() && !seg.flags.ack() && !seg.flags.rst();

        if pure_syn
            && let Some(existing) = self.live.get(&key)
            && starts_new_connection(existing, src, seg)
        {
            let old = self.live.remove(&key).expect("present");
            self.finalize(old, stream, done);
        }

        if !self.live.contains_key(&key) {
            if self.live.len() >= self.limits.max_connections {
                self.evict_one(stream, done);
            }
            let (client, server, roles) = if pure_syn {
                (src, dst, RoleSource::Syn)
            } else if seg.flags.syn() && seg.flags.ack() {
                (dst, src, RoleSource::SynAck)
            } else {
                let (c, s) = server_by_ports(src, dst);
                (c, s, RoleSource::Ports)
            };
            self.stats.connections += 1;
            let conn = Connection::new(self.stats.connections, client, server, roles, at);
            let serial = conn.serial;
            self.deadlines.push(Reverse((
                at.ts.saturating_add(self.limits.idle_timeout),
                serial,
                key,
            )));
            self.live.insert(key, conn);
            self.stats.peak_live = self.stats.peak_live.max(self.live.len());
        }

        let conn = self.live.get_mut(&key).expect("inserted above");
        let from = if src == conn.client {
            Role::Client
        } else {
            Role::Server
        };
        let id = conn.id();
        conn.on_segment(from, seg, at, &mut self.budget, &mut |role, ev| {
            stream(id, role, ev)
        });
    }

    fn expire(
        &mut self,
        stream: &mut dyn FnMut(ConnRef, Role, StreamEvent<'_>),
        done: &mut dyn FnMut(Connection, &mut Budget),
    ) {
        while let Some(Reverse((when, serial, key))) = self.deadlines.peek().copied() {
            if when > self.now {
                break;
            }
            self.deadlines.pop();
            let Some(conn) = self.live.get(&key) else {
                continue;
            };
            if conn.serial != serial {
                continue;
            }
            let due = self.deadline(conn);
            if due > self.now {
                self.deadlines.push(Reverse((due, serial, key)));
                continue;
            }
            let conn = self.live.remove(&key).expect("present");
            self.finalize(conn, stream, done);
        }
    }

    fn evict_one(
        &mut self,
        stream: &mut dyn FnMut(ConnRef, Role, StreamEvent<'_>),
        done: &mut dyn FnMut(Connection, &mut Budget),
    ) {
        while let Some(Reverse((_, serial, key))) = self.deadlines.pop() {
            if self.live.get(&key).is_some_and(|c| c.serial == serial) {
                let conn = self.live.remove(&key).expect("present");
                self.stats.evicted_early += 1;
                self.finalize(conn, stream, done);
                return;
            }
        }
    }

    fn finalize(
        &mut self,
        mut conn: Connection,
        stream: &mut dyn FnMut(ConnRef, Role, StreamEvent<'_>),
        done: &mut dyn FnMut(Connection, &mut Budget),
    ) {
        let id = conn.id();
        conn.finish_streams(&mut self.budget, &mut |role, ev| stream(id, role, ev));
        done(conn, &mut self.budget);
    }

    /// Finalizes every live connection, in the order they were first seen.
    pub fn finish(
        &mut self,
        stream: &mut dyn FnMut(ConnRef, Role, StreamEvent<'_>),
        done: &mut dyn FnMut(Connection, &mut Budget),
    ) {
        let mut rest: Vec<Connection> = self.live.drain().map(|(_, c)| c).collect();
        rest.sort_by_key(|c| c.serial);
        self.deadlines.clear();
        for conn in rest {
            self.finalize(conn, stream, done);
        }
    }
}

/// A SYN on a known 4-tuple opens a new connection when it cannot be a retransmission of the
/// SYN that opened the existing one: the ports were reused.
fn starts_new_connection(existing: &Connection, src: SocketAddr, seg: &TcpSegment<'_>) -> bool {
    if src != existing.client {
        return existing.is_closed() || existing.start_captured();
    }
    match existing.client_isn {
        Some(isn) => isn != seg.seq,
        None => true,
    }
}
