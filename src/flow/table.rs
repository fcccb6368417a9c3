//! All live connections of a capture, keyed by their 4-tuple. Connections that have closed or
//! gone idle (in capture time) are finalized and freed as the capture advances, so memory
//! follows the number of live connections, not the length of the capture.

use super::connection::{ConnRef, Connection, Role, RoleSource, Seen, Unreachable};
use super::reassembly::{Budget, StreamEvent};
use crate::capture::{Duration, Timestamp};
use crate::decode::SeqNumber;
use crate::decode::{self, TcpSegment};
use hashbrown::HashTable;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlowLimits {
    /// A connection with no packets for this long is finalized.
    pub idle_timeout: Duration,
    /// A closed connection is kept this long for late retransmissions and resets.
    pub close_linger: Duration,
    /// At most this many live connections; beyond it the one due soonest is finalized early.
    pub max_connections: usize,
    pub max_ooo_per_connection: usize,
    pub max_ooo_total: usize,
    /// Packets larger than this (IP length) are oversize.
    pub mtu: u32,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            idle_timeout: Duration::from_secs(300),
            close_linger: Duration::from_secs(5),
            max_connections: 500_000,
            max_ooo_per_connection: 1 << 20,
            max_ooo_total: 256 << 20,
            mtu: 1500,
        }
    }
}

/// Receives what the table learns: stream bytes as they are reassembled, and connections once
/// they are finalized (closed, idle, evicted, or at the end of the capture).
pub trait FlowObserver {
    fn on_stream(&mut self, conn: ConnRef, from: Role, event: StreamEvent<'_>);
    /// Called before a connection's last stream events and [`FlowObserver::on_finalized`],
    /// saying why it ends now: a pipeline that merges several tables' output orders by it.
    fn finalizing(&mut self, _conn: &Connection, _why: Finalize) {}
    fn on_finalized(&mut self, conn: Connection);
}

/// Why a connection is finalized at this point of the capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finalize {
    /// Its deadline (idle timeout or close linger) passed as capture time advanced.
    Expired,
    /// The packet being processed ended it: a reused 4-tuple, or the table was full.
    ByPacket,
    /// The capture ended.
    AtEnd,
}

/// A hash of a connection's two endpoints that is the same for both directions and in every
/// run: which share of the connections (thread or `--shard`) a packet belongs to.
pub fn flow_hash(a: SocketAddr, b: SocketAddr) -> u64 {
    let key = FlowKey::new(a, b);
    // The fields one by one, as the key hashed before it had a hash of its own: which shard a
    // connection belongs to stays what it was.
    foldhash::fast::FixedState::with_seed(0x6c62_7368_6172_6431).hash_one((key.low, key.high))
}

/// Order-independent key: the same for both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FlowKey {
    low: (IpAddr, u16),
    high: (IpAddr, u16),
}

/// The table's hash of a key, on every packet: both addresses and both ports in two words
/// (one multiplication of foldhash), where the derived hash fed it the address family, each
/// address as a slice and each port apart. Equal keys hash the same; an IPv4 key and the
/// IPv6 key of the mapped addresses may collide, and equality tells them apart.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let ports = u32::from(self.low.1) << 16 | u32::from(self.high.1);
        match (self.low.0, self.high.0) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                h.write_u64(u64::from(a.to_bits()) << 32 | u64::from(b.to_bits()));
            }
            (a, b) => {
                let bits = |ip: IpAddr| match ip {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
                    IpAddr::V6(v6) => v6.to_bits(),
                };
                h.write_u128(bits(a));
                h.write_u128(bits(b));
            }
        }
        h.write_u32(ports);
    }
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

#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct FlowStats {
    pub connections: u64,
    pub evicted_early: u64,
    pub peak_live: usize,
    /// Finalized connections of which the capture holds only one direction.
    pub one_sided: u64,
    /// The first frame of the first such connection.
    pub first_one_sided: Option<u64>,
}

/// SYNs a half-open connection keeps in its compact form; one more makes it a full connection.
const HALF_OPEN_SYNS: usize = 4;

/// A connection that is so far only its client's SYN (and up to three retransmissions of it):
/// about a tenth of a full [`Connection`], so a SYN flood of half a million sources stays in
/// tens of megabytes. It becomes a full connection with its next other packet.
#[derive(Clone, Copy, Debug)]
struct HalfOpen {
    key: FlowKey,
    serial: u64,
    first: Seen,
    last_ts: Timestamp,
    /// The deadline of its entry in the timer heap.
    queued: Timestamp,
    isn: SeqNumber,
    /// Frames of the retransmissions, as offsets from the first SYN's frame.
    again: [u32; HALF_OPEN_SYNS - 1],
    syns: u8,
    client_is_low: bool,
}

impl HalfOpen {
    fn client(&self) -> SocketAddr {
        let (ip, port) = if self.client_is_low {
            self.key.low
        } else {
            self.key.high
        };
        SocketAddr::new(ip, port)
    }

    fn server(&self) -> SocketAddr {
        let (ip, port) = if self.client_is_low {
            self.key.high
        } else {
            self.key.low
        };
        SocketAddr::new(ip, port)
    }

    /// Records a retransmission; false when it does not fit the compact form.
    fn add_syn(&mut self, at: Seen) -> bool {
        let n = self.syns as usize;
        let Ok(offset) = u32::try_from(at.frame.saturating_sub(self.first.frame)) else {
            return false;
        };
        if n >= HALF_OPEN_SYNS || offset == 0 {
            return false;
        }
        self.again[n - 1] = offset;
        self.syns += 1;
        self.last_ts = at.ts;
        true
    }

    fn into_connection(self) -> Connection {
        let mut conn = Connection::new(
            self.serial,
            self.client(),
            self.server(),
            RoleSource::Syn,
            self.first,
        );
        let later = self.again[..self.syns as usize - 1]
            .iter()
            .map(|&off| Seen {
                frame: self.first.frame + off as u64,
                // Only the last retransmission's time is kept, and only it is read: a frame
                // list keeps the time of its first and last entries.
                ts: self.last_ts,
            });
        conn.replay_syns(self.isn, std::iter::once(self.first).chain(later));
        conn.queued = self.queued;
        conn
    }
}

/// Half-open connections: the records in a slab, and an index of 4-byte slot numbers hashed by
/// each record's key, so the key is stored once.
struct HalfOpenTable {
    index: HashTable<u32>,
    slots: Vec<HalfOpen>,
    free: Vec<u32>,
    hasher: foldhash::fast::RandomState,
}

impl HalfOpenTable {
    fn new() -> HalfOpenTable {
        HalfOpenTable {
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn find(&self, key: &FlowKey) -> Option<u32> {
        // Every segment asks; with no handshake pending (most of a keep-alive capture) it
        // need not hash the key.
        if self.index.is_empty() {
            return None;
        }
        let slots = &self.slots;
        self.index
            .find(self.hasher.hash_one(key), |&i| {
                slots[i as usize].key == *key
            })
            .copied()
    }

    fn get_mut(&mut self, slot: u32) -> &mut HalfOpen {
        &mut self.slots[slot as usize]
    }

    fn insert(&mut self, rec: HalfOpen) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = rec;
                i
            }
            None => {
                self.slots.push(rec);
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .insert_unique(hasher.hash_one(rec.key), slot, |&i| {
                hasher.hash_one(slots[i as usize].key)
            });
    }

    fn remove(&mut self, key: &FlowKey) -> Option<HalfOpen> {
        let slots = &self.slots;
        let entry = self
            .index
            .find_entry(self.hasher.hash_one(key), |&i| {
                slots[i as usize].key == *key
            })
            .ok()?;
        let (slot, _) = entry.remove();
        self.free.push(slot);
        Some(self.slots[slot as usize])
    }

    /// The slots of every record in the order the connections were first seen, emptying the
    /// index (the records stay in the slab until the table is dropped).
    fn drain_in_order(&mut self) -> Vec<u32> {
        let mut order: Vec<u32> = self.index.drain().collect();
        let slots = &self.slots;
        order.sort_by_key(|&i| slots[i as usize].serial);
        order
    }
}

/// A pure SYN that a half-open record can stand for: nothing in it but the SYN.
fn compact_syn(seg: &TcpSegment<'_>, mtu: u32) -> bool {
    seg.wire_payload_len == 0 && !seg.flags.fin() && seg.ip_len <= mtu
}

pub struct FlowTable {
    limits: FlowLimits,
    /// Boxed so the table's buckets stay small: a map of a million entries resizes by copying.
    /// foldhash: per-packet lookups with SipHash cost a quarter of the run time; foldhash is
    /// several times faster and still seeded per process, so a crafted capture cannot aim
    /// collisions at it.
    live: HashMap<FlowKey, Box<Connection>, foldhash::fast::RandomState>,
    /// Connections that are only a SYN so far, in compact form (a 4-tuple is in one table at
    /// most).
    half_open: HalfOpenTable,
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
            live: HashMap::default(),
            half_open: HalfOpenTable::new(),
            deadlines: BinaryHeap::new(),
            stats: FlowStats::default(),
            now: Timestamp(i64::MIN),
        }
    }

    pub fn live(&self) -> usize {
        self.live.len() + self.half_open.len()
    }

    fn deadline(&self, c: &Connection) -> Timestamp {
        let wait = if c.is_closed() {
            self.limits.close_linger
        } else {
            self.limits.idle_timeout
        };
        c.last.ts.saturating_add(wait)
    }

    fn push_deadline(&mut self, when: Timestamp, serial: u64, key: FlowKey) {
        // Entries left behind by connections that closed early or became full connections wait
        // in the heap until their time; rebuilding it from the valid ones keeps it in
        // proportion to the live connections.
        if self.deadlines.len() > 2 * self.live() + 1024 {
            let (live, half) = (&self.live, &self.half_open);
            self.deadlines
                .retain(|Reverse((when, serial, key))| valid(live, half, *when, *serial, key));
        }
        self.deadlines.push(Reverse((when, serial, key)));
    }

    /// Feeds one TCP segment. Connections it ends (a reused 4-tuple) and connections whose time
    /// has passed go to `done`; stream bytes go to `stream`.
    pub fn on_segment(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        seg: &TcpSegment<'_>,
        at: Seen,
        observer: &mut dyn FlowObserver,
    ) {
        self.advance(at.ts, observer);
        let key = FlowKey::new(src, dst);
        let pure_syn = seg.flags.syn() && !seg.flags.ack() && !seg.flags.rst();
        let compact = pure_syn && compact_syn(seg, self.limits.mtu);

        if let Some(slot) = self.half_open.find(&key) {
            let half = self.half_open.get_mut(slot);
            // A retransmission of the SYN stays compact; anything else makes it a full
            // connection, which the path below then handles like any other.
            if compact && src == half.client() && seg.seq == half.isn && half.add_syn(at) {
                return;
            }
            self.promote(&key);
        }

        // The common case, a packet of a known connection, costs one lookup.
        match self.live.get_mut(&key) {
            Some(conn) if !(pure_syn && starts_new_connection(conn, src, seg)) => {
                let closed = conn.is_closed();
                Self::apply(
                    conn,
                    src,
                    seg,
                    at,
                    self.limits.mtu,
                    &mut self.budget,
                    observer,
                );
                if !closed && conn.is_closed() {
                    self.closed(&key);
                }
                return;
            }
            Some(_) => {
                let old = self.live.remove(&key).expect("present");
                self.finalize(old, Finalize::ByPacket, observer);
            }
            None => {}
        }

        if self.live() >= self.limits.max_connections {
            self.evict_one(observer);
        }
        self.stats.connections += 1;
        // A packet opens at most one connection, so its frame number names the connection
        // uniquely, whichever table (of several analyzing one capture in parallel) holds it.
        let serial = at.frame;
        let idle_deadline = at.ts.saturating_add(self.limits.idle_timeout);
        if compact {
            self.half_open.insert(HalfOpen {
                key,
                serial,
                first: at,
                last_ts: at.ts,
                queued: idle_deadline,
                isn: seg.seq,
                again: [0; HALF_OPEN_SYNS - 1],
                syns: 1,
                client_is_low: (src.ip(), src.port()) == key.low,
            });
            self.push_deadline(idle_deadline, serial, key);
            self.stats.peak_live = self.stats.peak_live.max(self.live());
            return;
        }
        let (client, server, roles) = if pure_syn {
            (src, dst, RoleSource::Syn)
        } else if seg.flags.syn() && seg.flags.ack() {
            (dst, src, RoleSource::SynAck)
        } else {
            let (c, s) = server_by_ports(src, dst);
            (c, s, RoleSource::Ports)
        };
        let mut conn = Connection::new(serial, client, server, roles, at);
        conn.queued = idle_deadline;
        self.push_deadline(idle_deadline, serial, key);
        let conn = self.live.entry(key).insert_entry(Box::new(conn)).into_mut();
        Self::apply(
            conn,
            src,
            seg,
            at,
            self.limits.mtu,
            &mut self.budget,
            observer,
        );
        if conn.is_closed() {
            self.closed(&key);
        }
        self.stats.peak_live = self.stats.peak_live.max(self.live());
    }

    /// A half-open connection becomes a full one; its timer entry stays valid.
    fn promote(&mut self, key: &FlowKey) -> Option<&mut Connection> {
        let half = self.half_open.remove(key)?;
        let conn = Box::new(half.into_connection());
        Some(self.live.entry(*key).insert_entry(conn).into_mut())
    }

    /// The connection just closed: it is due after the close linger, sooner than the idle
    /// deadline its timer entry was pushed with.
    fn closed(&mut self, key: &FlowKey) {
        let Some(conn) = self.live.get_mut(key) else {
            return;
        };
        let due = conn.last.ts.saturating_add(self.limits.close_linger);
        if due < conn.queued {
            conn.queued = due;
            let serial = conn.serial;
            self.push_deadline(due, serial, *key);
        }
    }

    fn apply(
        conn: &mut Connection,
        src: SocketAddr,
        seg: &TcpSegment<'_>,
        at: Seen,
        mtu: u32,
        budget: &mut Budget,
        observer: &mut dyn FlowObserver,
    ) {
        let from = if src == conn.client {
            Role::Client
        } else {
            Role::Server
        };
        let id = conn.id();
        conn.on_segment(from, seg, at, mtu, budget, &mut |role, ev| {
            observer.on_stream(id, role, ev)
        });
    }

    /// The live connection of this 4-tuple, made a full connection if it was half-open.
    fn connection_mut(&mut self, key: &FlowKey) -> Option<&mut Connection> {
        if self.half_open.find(key).is_some() {
            return self.promote(key);
        }
        self.live.get_mut(key).map(|c| &mut **c)
    }

    /// Records an ICMP too-big message on the connection whose packet it quotes. Returns false
    /// when no live connection matches.
    pub fn note_too_big(
        &mut self,
        sender: SocketAddr,
        receiver: SocketAddr,
        mtu: u32,
        at: Seen,
    ) -> bool {
        match self.connection_mut(&FlowKey::new(sender, receiver)) {
            Some(conn) => {
                conn.too_big.push(at);
                conn.too_big_mtu = mtu;
                conn.too_big_for = Some(if sender == conn.client {
                    Role::Client
                } else {
                    Role::Server
                });
                true
            }
            None => false,
        }
    }

    /// Records an ICMP destination-unreachable on the connection whose packet it quotes: one
    /// about the client's SYN refuses the handshake. Returns false when no live connection
    /// matches.
    pub fn note_unreachable(&mut self, msg: &decode::Unreachable, at: Seen) -> bool {
        let key = FlowKey::new(msg.quoted_src, msg.quoted_dst);
        let Some(conn) = self.connection_mut(&key) else {
            return false;
        };
        // The quoted sequence number names the packet: the SYN carries the client's ISN.
        let about_syn = msg.quoted_src == conn.client
            && msg
                .quoted_seq
                .is_none_or(|seq| Some(seq) == conn.client_isn);
        let closed = conn.is_closed();
        conn.on_unreachable(
            about_syn,
            Unreachable {
                at,
                v6: msg.v6,
                icmp_type: msg.icmp_type,
                code: msg.code,
            },
        );
        if !closed && conn.is_closed() {
            self.closed(&key);
        }
        true
    }

    /// Capture time has reached `ts` (a TCP segment's, possibly of another table's
    /// connection): connections whose deadline has passed are finalized.
    pub fn advance(&mut self, ts: Timestamp, observer: &mut dyn FlowObserver) {
        if ts > self.now {
            self.now = ts;
            self.expire(observer);
        }
    }

    fn expire(&mut self, observer: &mut dyn FlowObserver) {
        while let Some(Reverse((when, serial, key))) = self.deadlines.peek().copied() {
            if when > self.now {
                break;
            }
            self.deadlines.pop();
            if let Some(slot) = self.half_open.find(&key) {
                let half = self.half_open.get_mut(slot);
                if half.serial != serial || half.queued != when {
                    continue;
                }
                let due = half.last_ts.saturating_add(self.limits.idle_timeout);
                if due > self.now {
                    half.queued = due;
                    self.push_deadline(due, serial, key);
                    continue;
                }
                let half = self.half_open.remove(&key).expect("present");
                self.finalize(
                    Box::new(half.into_connection()),
                    Finalize::Expired,
                    observer,
                );
                continue;
            }
            let Some(conn) = self.live.get(&key) else {
                continue;
            };
            if conn.serial != serial || conn.queued != when {
                continue;
            }
            let due = self.deadline(conn);
            if due > self.now {
                self.live.get_mut(&key).expect("present").queued = due;
                self.push_deadline(due, serial, key);
                continue;
            }
            let conn = self.live.remove(&key).expect("present");
            self.finalize(conn, Finalize::Expired, observer);
        }
    }

    fn evict_one(&mut self, observer: &mut dyn FlowObserver) {
        while let Some(Reverse((when, serial, key))) = self.deadlines.pop() {
            if !valid(&self.live, &self.half_open, when, serial, &key) {
                continue;
            }
            self.stats.evicted_early += 1;
            let conn = match self.half_open.remove(&key) {
                Some(half) => Box::new(half.into_connection()),
                None => self.live.remove(&key).expect("valid"),
            };
            self.finalize(conn, Finalize::ByPacket, observer);
            return;
        }
    }

    fn finalize(
        &mut self,
        mut conn: Box<Connection>,
        why: Finalize,
        observer: &mut dyn FlowObserver,
    ) {
        observer.finalizing(&conn, why);
        let id = conn.id();
        conn.finish_streams(&mut self.budget, &mut |role, ev| {
            observer.on_stream(id, role, ev)
        });
        if conn.one_sided() {
            self.stats.one_sided += 1;
            self.stats.first_one_sided.get_or_insert(conn.first.frame);
        }
        observer.on_finalized(*conn);
    }

    /// Finalizes every live connection, in the order they were first seen.
    pub fn finish(&mut self, observer: &mut dyn FlowObserver) {
        self.deadlines = BinaryHeap::new();
        let mut rest: Vec<Box<Connection>> = self.live.drain().map(|(_, c)| c).collect();
        rest.sort_by_key(|c| c.serial);
        let half = self.half_open.drain_in_order();
        // Half-open records become full connections one at a time, so a flood of them never
        // exists at full size all at once.
        let (mut rest, mut half) = (rest.into_iter().peekable(), half.into_iter().peekable());
        loop {
            let next_half = half.peek().map(|&i| self.half_open.slots[i as usize]);
            let conn = match (rest.peek(), next_half) {
                (Some(c), Some(h)) if c.serial < h.serial => rest.next().expect("peeked"),
                (_, Some(h)) => {
                    half.next();
                    Box::new(h.into_connection())
                }
                (Some(_), None) => rest.next().expect("peeked"),
                (None, None) => break,
            };
            self.finalize(conn, Finalize::AtEnd, observer);
        }
        self.half_open = HalfOpenTable::new();
    }
}

/// Whether a timer entry is the current one of a live connection.
fn valid(
    live: &HashMap<FlowKey, Box<Connection>, foldhash::fast::RandomState>,
    half: &HalfOpenTable,
    when: Timestamp,
    serial: u64,
    key: &FlowKey,
) -> bool {
    if let Some(slot) = half.find(key) {
        let h = &half.slots[slot as usize];
        return h.serial == serial && h.queued == when;
    }
    live.get(key)
        .is_some_and(|c| c.serial == serial && c.queued == when)
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

#[cfg(test)]
mod test {
    use super::*;
    use crate::decode::TcpFlags;
    use crate::flow::{SeqNumber, TcpPhase};

    const C: &str = "10.0.0.1:40000";
    const S: &str = "10.0.0.2:80";
    const SYN: u8 = TcpFlags::SYN;
    const SYNACK: u8 = TcpFlags::SYN | TcpFlags::ACK;
    const ACK: u8 = TcpFlags::ACK;
    const PSH: u8 = TcpFlags::ACK | TcpFlags::PSH;
    const FIN: u8 = TcpFlags::ACK | TcpFlags::FIN;
    const RST: u8 = TcpFlags::RST;
    const RSTACK: u8 = TcpFlags::RST | TcpFlags::ACK;

    /// The shard of a connection is what it was with the derived hash of the key.
    #[test]
    fn test_flow_hash_is_the_derived_hash_of_the_key() {
        #[derive(Hash)]
        struct Derived {
            low: (IpAddr, u16),
            high: (IpAddr, u16),
        }
        let seeded = foldhash::fast::FixedState::with_seed(0x6c62_7368_6172_6431);
        for (a, b) in [
            ("10.0.0.1:40000", "10.0.0.2:80"),
            ("10.0.0.2:80", "10.0.0.1:40000"),
            ("[2001:db8::1]:443", "[2001:db8::2]:5000"),
        ] {
            let (a, b): (SocketAddr, SocketAddr) = (a.parse().unwrap(), b.parse().unwrap());
            let k = FlowKey::new(a, b);
            let derived = seeded.hash_one(Derived {
                low: k.low,
                high: k.high,
            });
            assert_eq!(flow_hash(a, b), derived);
            assert_eq!(flow_hash(b, a), derived);
        }
    }

    #[test]
    fn test_flow_key_hash_is_the_same_both_ways_and_tells_ports_apart() {
        let h = foldhash::fast::FixedState::with_seed(1);
        let (a, b): (SocketAddr, SocketAddr) = (C.parse().unwrap(), S.parse().unwrap());
        let c: SocketAddr = "10.0.0.1:40001".parse().unwrap();
        let key = |x, y| h.hash_one(FlowKey::new(x, y));
        assert_eq!(key(a, b), key(b, a));
        assert_ne!(key(a, b), key(c, b));
        let (a6, b6): (SocketAddr, SocketAddr) = (
            "[2001:db8::1]:40000".parse().unwrap(),
            "[2001:db8::2]:80".parse().unwrap(),
        );
        assert_eq!(key(a6, b6), key(b6, a6));
        assert_ne!(key(a6, b6), key(a, b));
    }

    #[derive(Default)]
    struct Collect {
        done: Vec<Connection>,
    }

    impl FlowObserver for Collect {
        fn on_stream(&mut self, _: ConnRef, _: Role, _: StreamEvent<'_>) {}
        fn on_finalized(&mut self, conn: Connection) {
            self.done.push(conn);
        }
    }

    /// Feeds (from, flags, seq, payload, seconds) and returns finalized connections.
    fn feed(table: &mut FlowTable, packets: &[(&str, u8, u32, &[u8], f64)]) -> Vec<Connection> {
        let mut done = Collect::default();
        for (i, (from, flags, seq, payload, secs)) in packets.iter().enumerate() {
            let (src, dst): (SocketAddr, SocketAddr) = if *from == C {
                (C.parse().unwrap(), S.parse().unwrap())
            } else {
                (S.parse().unwrap(), C.parse().unwrap())
            };
            let seg = TcpSegment {
                src_port: src.port(),
                dst_port: dst.port(),
                seq: SeqNumber(*seq),
                ack: SeqNumber(0),
                flags: TcpFlags(*flags),
                window: 1000,
                payload,
                wire_payload_len: payload.len() as u32,
                ip_len: 40 + payload.len() as u32,
                dont_fragment: true,
            };
            let at = Seen {
                frame: i as u64 + 1,
                ts: Timestamp::from_secs_f64(*secs),
            };
            table.on_segment(src, dst, &seg, at, &mut done);
        }
        table.finish(&mut done);
        done.done
    }

    fn run(packets: &[(&str, u8, u32, &[u8], f64)]) -> Vec<Connection> {
        feed(&mut FlowTable::new(FlowLimits::default()), packets)
    }

    #[test]
    fn test_syn_sent_rst_is_refused() {
        let conns = run(&[(C, SYN, 100, b"", 0.0), (S, RSTACK, 0, b"", 0.001)]);
        assert_eq!(conns.len(), 1);
        assert!(conns[0].refused());
        assert!(conns[0].reset.is_none());
    }

    #[test]
    fn test_rst_before_synack_then_synack_is_not_refused() {
        let conns = run(&[
            (C, SYN, 100, b"", 0.0),
            (S, RSTACK, 0, b"", 0.001),
            (S, SYNACK, 500, b"", 0.002),
        ]);
        assert!(!conns[0].refused());
    }

    #[test]
    fn test_syn_retransmissions_stay_one_connection() {
        let conns = run(&[
            (C, SYN, 100, b"", 0.0),
            (C, SYN, 100, b"", 1.0),
            (C, SYN, 100, b"", 3.0),
        ]);
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].syns.count, 3);
        assert_eq!(conns[0].syns.frames(), vec![1, 2, 3]);
    }

    fn handshake() -> Vec<(&'static str, u8, u32, &'static [u8], f64)> {
        vec![
            (C, SYN, 100, b"", 0.0),
            (S, SYNACK, 500, b"", 0.01),
            (C, ACK, 101, b"", 0.02),
        ]
    }

    #[test]
    fn test_established_server_reset_awaiting_response() {
        let mut p = handshake();
        p.push((C, PSH, 101, b"GET / HTTP/1.1\r\n\r\n", 0.03));
        p.push((S, RSTACK, 501, b"", 0.3));
        let conns = run(&p);
        let reset = conns[0].reset.unwrap();
        assert_eq!(reset.by, Role::Server);
        assert_eq!(reset.phase, TcpPhase::AwaitingResponse);
        assert!(!reset.after_both_fins);
    }

    #[test]
    fn test_reset_after_both_fins_is_marked() {
        let mut p = handshake();
        p.push((C, FIN, 101, b"", 0.03));
        p.push((S, FIN, 501, b"", 0.04));
        p.push((C, RST, 102, b"", 0.05));
        let reset = run(&p)[0].reset.unwrap();
        assert!(reset.after_both_fins);
    }

    #[test]
    fn test_phases_before_request_and_idle() {
        let mut p = handshake();
        p.push((C, RST, 101, b"", 0.03));
        assert_eq!(run(&p)[0].reset.unwrap().phase, TcpPhase::BeforeRequest);

        let mut p = handshake();
        p.push((C, PSH, 101, b"req", 0.03));
        p.push((S, PSH, 501, b"resp", 0.05));
        p.push((S, RSTACK, 505, b"", 10.0));
        assert_eq!(run(&p)[0].reset.unwrap().phase, TcpPhase::Idle);
    }

    #[test]
    fn test_reused_four_tuple_after_close_starts_new_connection() {
        let mut p = handshake();
        p.push((C, FIN, 101, b"", 0.03));
        p.push((S, FIN, 501, b"", 0.04));
        p.push((C, ACK, 102, b"", 0.05));
        p.push((C, SYN, 9000, b"", 1.0));
        p.push((S, RSTACK, 0, b"", 1.001));
        let conns = run(&p);
        assert_eq!(conns.len(), 2);
        assert!(!conns[0].refused());
        assert!(conns[1].refused());
        assert_eq!(conns[1].first.frame, 7);
    }

    #[test]
    fn test_mid_stream_roles_from_ports() {
        let conns = run(&[
            (S, PSH, 501, b"HTTP/1.1 200 OK\r\n", 0.0),
            (C, ACK, 101, b"", 0.01),
        ]);
        assert_eq!(conns[0].roles, RoleSource::Ports);
        assert_eq!(conns[0].server, S.parse().unwrap());
        assert!(!conns[0].start_captured());
    }

    #[test]
    fn test_idle_connection_is_finalized_as_capture_time_advances() {
        let mut table = FlowTable::new(FlowLimits {
            idle_timeout: Duration::from_secs(10),
            ..FlowLimits::default()
        });
        let mut done = Collect::default();
        let c: SocketAddr = C.parse().unwrap();
        let s: SocketAddr = S.parse().unwrap();
        let syn = TcpSegment {
            src_port: 40000,
            dst_port: 80,
            seq: SeqNumber(1),
            ack: SeqNumber(0),
            flags: TcpFlags(SYN),
            window: 0,
            payload: b"",
            wire_payload_len: 0,
            ip_len: 40,
            dont_fragment: true,
        };
        let at = |f: u64, s: i64| Seen {
            frame: f,
            ts: Timestamp(s * Timestamp::NANOS_PER_SEC),
        };
        table.on_segment(c, s, &syn, at(1, 0), &mut done);
        let other: SocketAddr = "10.0.0.3:1".parse().unwrap();
        table.on_segment(other, s, &syn, at(2, 11), &mut done);
        assert_eq!(done.done.len(), 1);
        assert_eq!(table.live(), 1);
    }

    #[test]
    fn test_max_connections_evicts_instead_of_growing() {
        let mut table = FlowTable::new(FlowLimits {
            max_connections: 2,
            ..FlowLimits::default()
        });
        let s: SocketAddr = S.parse().unwrap();
        let mut done = Collect::default();
        for port in 1..=5u16 {
            let c = SocketAddr::new("10.0.0.9".parse().unwrap(), port);
            let syn = TcpSegment {
                src_port: port,
                dst_port: 80,
                seq: SeqNumber(1),
                ack: SeqNumber(0),
                flags: TcpFlags(SYN),
                window: 0,
                payload: b"",
                wire_payload_len: 0,
                ip_len: 40,
                dont_fragment: true,
            };
            let at = Seen {
                frame: port as u64,
                ts: Timestamp(port as i64),
            };
            table.on_segment(c, s, &syn, at, &mut done);
            assert!(table.live() <= 2);
        }
        assert_eq!(done.done.len(), 3);
        assert_eq!(table.stats.evicted_early, 3);
    }

    #[test]
    fn regression_closed_connection_lingers_close_linger_not_idle_timeout() {
        let mut table = FlowTable::new(FlowLimits::default());
        let mut done = Collect::default();
        let c: SocketAddr = C.parse().unwrap();
        let s: SocketAddr = S.parse().unwrap();
        let seg = |flags: u8, seq: u32| TcpSegment {
            src_port: 0,
            dst_port: 0,
            seq: SeqNumber(seq),
            ack: SeqNumber(0),
            flags: TcpFlags(flags),
            window: 1000,
            payload: b"",
            wire_payload_len: 0,
            ip_len: 40,
            dont_fragment: true,
        };
        let at = |frame: u64, secs: f64| Seen {
            frame,
            ts: Timestamp::from_secs_f64(secs),
        };
        table.on_segment(c, s, &seg(SYN, 100), at(1, 0.0), &mut done);
        table.on_segment(s, c, &seg(SYNACK, 500), at(2, 0.01), &mut done);
        table.on_segment(c, s, &seg(ACK, 101), at(3, 0.02), &mut done);
        // Closed with both FINs at 20 s, long after its idle deadline entry was pushed.
        table.on_segment(c, s, &seg(FIN, 101), at(4, 20.0), &mut done);
        table.on_segment(s, c, &seg(FIN, 501), at(5, 20.01), &mut done);
        let other: SocketAddr = "10.0.0.3:1".parse().unwrap();
        table.on_segment(other, s, &seg(SYN, 1), at(6, 24.0), &mut done);
        assert!(done.done.is_empty(), "still within the 5 s linger");
        table.on_segment(other, s, &seg(SYN, 1), at(7, 25.5), &mut done);
        assert_eq!(done.done.len(), 1, "finalized 5 s after it closed");
        assert_eq!(done.done[0].serial, 1);

        // A reset closes too.
        let third: SocketAddr = "10.0.0.4:2".parse().unwrap();
        table.on_segment(third, s, &seg(SYN, 9), at(8, 30.0), &mut done);
        table.on_segment(s, third, &seg(SYNACK, 50), at(9, 30.01), &mut done);
        table.on_segment(third, s, &seg(RST, 10), at(10, 31.0), &mut done);
        table.on_segment(other, s, &seg(SYN, 1), at(11, 36.5), &mut done);
        assert!(done.done.iter().any(|c| c.client == third));
    }

    #[test]
    fn test_half_open_record_stays_small() {
        // With its 4-byte index slot and its 56-byte timer entry, about 170 bytes a SYN.
        assert!(std::mem::size_of::<HalfOpen>() <= 104);
        assert!(std::mem::size_of::<HalfOpen>() * 8 < std::mem::size_of::<Connection>());
    }

    #[test]
    fn test_half_open_becomes_full_connection_with_its_syns() {
        let conns = run(&[
            (C, SYN, 100, b"", 0.0),
            (C, SYN, 100, b"", 1.0),
            (C, SYN, 100, b"", 3.0),
            (S, SYNACK, 500, b"", 3.01),
            (C, ACK, 101, b"", 3.02),
        ]);
        assert_eq!(conns.len(), 1);
        let c = &conns[0];
        assert_eq!(c.syns.frames(), vec![1, 2, 3]);
        assert_eq!(c.syns.last.unwrap().ts, Timestamp::from_secs_f64(3.0));
        assert_eq!(c.syns_before_syn_ack, 3);
        assert_eq!(c.rtt_syn.unwrap().frame, 3);
        assert_eq!(c.to_server.packets, 4);
        assert_eq!(c.client_isn, Some(SeqNumber(100)));
        assert!(c.established);
    }

    #[test]
    fn test_half_open_many_retransmissions_keep_every_frame() {
        let p: Vec<_> = (0..10).map(|i| (C, SYN, 100, &b""[..], i as f64)).collect();
        let conns = run(&p);
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].syns.count, 10);
        assert_eq!(conns[0].syns.frames(), vec![1, 2, 3, 4, 5, 6, 7, 8, 10]);
        assert_eq!(conns[0].last.frame, 10);
    }

    #[test]
    fn test_half_open_finalized_in_serial_order_with_full_ones() {
        let mut table = FlowTable::new(FlowLimits::default());
        let mut done = Collect::default();
        let s: SocketAddr = S.parse().unwrap();
        for port in 1..=6u16 {
            let c = SocketAddr::new("10.0.0.9".parse().unwrap(), port);
            let flags = if port % 2 == 0 { SYN } else { PSH };
            let seg = TcpSegment {
                src_port: port,
                dst_port: 80,
                seq: SeqNumber(1),
                ack: SeqNumber(0),
                flags: TcpFlags(flags),
                window: 0,
                payload: b"x",
                wire_payload_len: if flags == SYN { 0 } else { 1 },
                ip_len: 41,
                dont_fragment: true,
            };
            let at = Seen {
                frame: port as u64,
                ts: Timestamp(port as i64),
            };
            table.on_segment(c, s, &seg, at, &mut done);
        }
        assert_eq!(table.live(), 6);
        table.finish(&mut done);
        let serials: Vec<u64> = done.done.iter().map(|c| c.serial).collect();
        assert_eq!(serials, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn regression_icmp_unreachable_answers_syn() {
        let mut table = FlowTable::new(FlowLimits::default());
        let mut done = Collect::default();
        let c: SocketAddr = C.parse().unwrap();
        let s: SocketAddr = S.parse().unwrap();
        let syn = TcpSegment {
            src_port: 40000,
            dst_port: 80,
            seq: SeqNumber(100),
            ack: SeqNumber(0),
            flags: TcpFlags(SYN),
            window: 0,
            payload: b"",
            wire_payload_len: 0,
            ip_len: 60,
            dont_fragment: true,
        };
        let at = |frame: u64, secs: f64| Seen {
            frame,
            ts: Timestamp::from_secs_f64(secs),
        };
        table.on_segment(c, s, &syn, at(1, 0.0), &mut done);
        let msg = decode::Unreachable {
            v6: false,
            icmp_type: 3,
            code: 3,
            quoted_src: c,
            quoted_dst: s,
            quoted_tcp: true,
            quoted_seq: Some(SeqNumber(100)),
        };
        assert!(table.note_unreachable(&msg, at(2, 0.001)));
        table.finish(&mut done);
        let conn = &done.done[0];
        assert!(conn.refused());
        assert!(conn.is_closed());
        let u = conn.handshake_unreachable.unwrap();
        assert_eq!((u.at.frame, u.icmp_type, u.code), (2, 3, 3));
        assert_eq!(u.name(), "port unreachable");
    }

    #[test]
    fn test_unreachable_about_a_later_packet_is_not_a_refusal() {
        let mut table = FlowTable::new(FlowLimits::default());
        let mut done = Collect::default();
        let c: SocketAddr = C.parse().unwrap();
        let s: SocketAddr = S.parse().unwrap();
        let syn = TcpSegment {
            src_port: 40000,
            dst_port: 80,
            seq: SeqNumber(100),
            ack: SeqNumber(0),
            flags: TcpFlags(SYN),
            window: 0,
            payload: b"",
            wire_payload_len: 0,
            ip_len: 60,
            dont_fragment: true,
        };
        let at = |frame: u64| Seen {
            frame,
            ts: Timestamp(frame as i64),
        };
        table.on_segment(c, s, &syn, at(1), &mut done);
        let msg = decode::Unreachable {
            v6: false,
            icmp_type: 3,
            code: 1,
            quoted_src: c,
            quoted_dst: s,
            quoted_tcp: true,
            quoted_seq: Some(SeqNumber(5000)),
        };
        table.note_unreachable(&msg, at(2));
        table.finish(&mut done);
        assert!(!done.done[0].refused());
    }
}
