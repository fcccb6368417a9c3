//! What TCP tells about one connection: who opened it, how the handshake went, who sent data
//! when, and how it ended. Detectors read these facts when the connection is finalized.

use super::frame_list::FrameList;
use super::reassembly::{Budget, Reassembler, StreamEvent};
use super::transport::TcpStats;
pub use crate::capture::Seen;
use crate::capture::{Duration, Timestamp};
use crate::decode::TcpSegment;
use crate::flow::SeqNumber;
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Client,
    Server,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

/// How we know which side is the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RoleSource {
    /// We saw the SYN: its sender is the client.
    Syn,
    /// The first packet was a SYN-ACK: its sender is the server.
    SynAck,
    /// The start was not captured: the side with the well-known or lower port is the server.
    Ports,
}

impl Seen {
    fn max_by_frame(self, other: Seen) -> Seen {
        if other.frame > self.frame {
            other
        } else {
            self
        }
    }
}

/// Facts about one direction of the connection.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Side {
    pub packets: u64,
    /// Packets that are neither SYN nor RST: ACKs, data, FINs, the traffic of an exchange.
    pub exchange_packets: u64,
    pub payload_bytes: u64,
    pub first_data: Option<Seen>,
    pub last_data: Option<Seen>,
    pub fin: Option<Seen>,
    /// The sequence number the FIN came at: where the sender's bytes ended.
    fin_end: Option<SeqNumber>,
    pub stream: Reassembler,
    /// Allocated with the first packet that needs it, so a half-open connection stays small.
    tcp: Option<Box<TcpStats>>,
}

static NO_TCP_STATS: std::sync::LazyLock<TcpStats> = std::sync::LazyLock::new(TcpStats::default);

impl Side {
    pub fn tcp(&self) -> &TcpStats {
        self.tcp.as_deref().unwrap_or(&NO_TCP_STATS)
    }

    fn tcp_mut(&mut self) -> &mut TcpStats {
        self.tcp.get_or_insert_with(Box::default)
    }
}

/// The first reset that ended the connection.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Reset {
    pub at: Seen,
    pub by: Role,
    /// Both sides had sent FIN before it: the connection was already closing normally.
    pub after_both_fins: bool,
    pub phase: TcpPhase,
}

/// Where in the exchange a reset came, as far as TCP alone can tell: no HTTP parsing, so
/// "request" means the client's bytes and "response" the server's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TcpPhase {
    /// The client had sent no payload.
    BeforeRequest,
    /// The client sent data and the server had not answered since.
    AwaitingResponse,
    /// The server was sending, and its last data was recent.
    DuringResponse,
    /// The server had answered, then the connection sat quiet, or the peer had closed.
    Idle,
}

impl TcpPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            TcpPhase::BeforeRequest => "before_request",
            TcpPhase::AwaitingResponse => "awaiting_response",
            TcpPhase::DuringResponse => "during_response",
            TcpPhase::Idle => "idle",
        }
    }
}

/// After the server's last data, this much quiet makes a reset one of an idle connection
/// rather than one that cut a response short. Responses rarely pause this long mid-body.
pub const IDLE_AFTER: Duration = Duration::from_secs(2);

/// Which connection stream bytes belong to, without borrowing the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnRef {
    pub serial: u64,
    pub first_frame: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub start_captured: bool,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Connection {
    /// The frame number of its first packet: unique in a capture, and the same however many
    /// tables analyze the capture.
    pub serial: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub roles: RoleSource,
    pub first: Seen,
    pub last: Seen,
    pub client_isn: Option<SeqNumber>,
    pub syns: FrameList,
    pub syn_acks: FrameList,
    /// The server answered a SYN with RST (no SYN-ACK yet at that point).
    pub handshake_rst: Option<Seen>,
    /// An ICMP destination-unreachable quoting the client's SYN, before any SYN-ACK: a host,
    /// router or firewall (iptables REJECT) refused the handshake on the server's behalf.
    pub handshake_unreachable: Option<Unreachable>,
    /// SYNs seen when the first SYN-ACK came: more than one means the server answered only a
    /// retransmission; a SYN repeated after the answer is the client's duplicate, not a delay.
    pub syns_before_syn_ack: u32,
    pub established: bool,
    /// The SYN the first SYN-ACK answered, and the client's first ACK after it: their distance
    /// is the round trip at any vantage point on the path.
    pub rtt_syn: Option<Seen>,
    pub rtt_ack: Option<Seen>,
    /// The latest SYN-ACK before that ACK: when the first one was lost on its way to the client
    /// and the server sent another, the ACK answers the later one.
    pub rtt_syn_ack: Option<Seen>,
    /// ICMP "fragmentation needed" / "packet too big" messages about this connection's packets.
    pub too_big: FrameList,
    pub too_big_mtu: u32,
    /// Which side's packets the ICMP messages were about.
    pub too_big_for: Option<Role>,
    pub resets: FrameList,
    pub reset: Option<Reset>,
    pub to_server: Side,
    pub to_client: Side,
    /// The deadline of this connection's current entry in the flow table's timer heap; other
    /// entries for it are stale.
    pub(super) queued: Timestamp,
}

/// An ICMP or ICMPv6 destination-unreachable message about one of the connection's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unreachable {
    pub at: Seen,
    pub v6: bool,
    pub icmp_type: u8,
    pub code: u8,
}

impl Unreachable {
    /// The message's name as the RFCs give it, e.g. "port unreachable".
    pub fn name(&self) -> &'static str {
        crate::decode::unreachable_name(self.v6, self.code)
    }

    /// "ICMP type 3 code 3" or "ICMPv6 type 1 code 4".
    pub fn type_code(&self) -> String {
        format!(
            "{} type {} code {}",
            if self.v6 { "ICMPv6" } else { "ICMP" },
            self.icmp_type,
            self.code
        )
    }
}

impl Connection {
    /// Where its exchange ended: the first FIN or reset, else its last frame.
    pub fn ended(&self) -> Seen {
        [
            self.to_server.fin,
            self.to_client.fin,
            self.reset.map(|r| r.at),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|s| s.frame)
        .unwrap_or(self.last)
    }

    /// The deadline it was last queued for: when it expired, if it did.
    pub fn deadline(&self) -> Timestamp {
        self.queued
    }

    pub fn new(
        serial: u64,
        client: SocketAddr,
        server: SocketAddr,
        roles: RoleSource,
        at: Seen,
    ) -> Self {
        Connection {
            serial,
            client,
            server,
            roles,
            first: at,
            last: at,
            client_isn: None,
            syns: FrameList::default(),
            syn_acks: FrameList::default(),
            handshake_rst: None,
            handshake_unreachable: None,
            syns_before_syn_ack: 0,
            established: false,
            rtt_syn: None,
            rtt_ack: None,
            rtt_syn_ack: None,
            too_big: FrameList::default(),
            too_big_mtu: 0,
            too_big_for: None,
            resets: FrameList::default(),
            reset: None,
            to_server: Side::default(),
            to_client: Side::default(),
            queued: Timestamp(i64::MIN),
        }
    }

    /// Records SYNs of the client that carried nothing else (no payload, no FIN, within the
    /// MTU), as [`Connection::on_segment`] would: the flow table keeps half-open connections in
    /// a compact form and rebuilds the connection from them.
    pub(super) fn replay_syns(&mut self, isn: SeqNumber, syns: impl Iterator<Item = Seen>) {
        for at in syns {
            self.last = at;
            self.syns.push(at);
            self.client_isn.get_or_insert(isn);
            self.to_server.stream.start_at(isn.plus(1));
            self.to_server.packets += 1;
        }
    }

    pub fn id(&self) -> ConnRef {
        ConnRef {
            serial: self.serial,
            first_frame: self.first.frame,
            client: self.client,
            server: self.server,
            start_captured: self.start_captured(),
        }
    }

    /// Bytes of this connection the capture does not hold (lost to capture drops or snaplen).
    pub fn uncaptured_bytes(&self) -> u64 {
        self.to_server.stream.gap_bytes + self.to_client.stream.gap_bytes
    }

    pub fn side(&self, from: Role) -> &Side {
        match from {
            Role::Client => &self.to_server,
            Role::Server => &self.to_client,
        }
    }

    pub fn start_captured(&self) -> bool {
        self.roles == RoleSource::Syn
    }

    pub fn is_closed(&self) -> bool {
        self.reset.is_some()
            || self.handshake_rst.is_some()
            || self.handshake_unreachable.is_some()
            || (self.to_server.fin.is_some() && self.to_client.fin.is_some())
    }

    /// The server refused the handshake (RST, or ICMP unreachable) and never accepted it
    /// afterwards.
    pub fn refused(&self) -> bool {
        (self.handshake_rst.is_some() || self.handshake_unreachable.is_some())
            && self.syn_acks.count == 0
    }

    /// Only one direction of the connection is in the capture, though that side shows an
    /// exchange under way (a client that acknowledges or sends data after its SYN had its
    /// SYN-ACK, which the capture does not hold): asymmetric routing, a one-way span port.
    /// Resets, and a lone packet of a connection begun before the capture, are not enough.
    pub fn one_sided(&self) -> bool {
        let shows_exchange = |s: &Side| s.exchange_packets >= 2;
        (self.to_client.packets == 0 && shows_exchange(&self.to_server))
            || (self.to_server.packets == 0 && shows_exchange(&self.to_client))
    }

    /// The SYN-ACK is missing while the client went on as though it had one (it acknowledged
    /// or sent data after its SYN), or the server sent data: the handshake was answered.
    pub fn answer_not_captured(&self) -> bool {
        self.syn_acks.count == 0
            && (self.to_client.payload_bytes > 0 || self.to_server.exchange_packets > 0)
    }

    /// Records an ICMP destination-unreachable about a packet the client sent. Before any
    /// SYN-ACK it refuses the handshake; later ones say nothing the TCP exchange does not.
    pub fn on_unreachable(&mut self, about_client: bool, msg: Unreachable) {
        if about_client
            && self.syns.count > 0
            && self.syn_acks.count == 0
            && self.handshake_unreachable.is_none()
        {
            self.handshake_unreachable = Some(msg);
            self.last = self.last.max_by_frame(msg.at);
        }
    }

    fn side_mut(&mut self, from: Role) -> &mut Side {
        match from {
            Role::Client => &mut self.to_server,
            Role::Server => &mut self.to_client,
        }
    }

    /// Applies one segment sent by `from`. Stream bytes go to `sink`. `mtu` is the path MTU
    /// packets are measured against.
    pub fn on_segment(
        &mut self,
        from: Role,
        seg: &TcpSegment<'_>,
        at: Seen,
        mtu: u32,
        budget: &mut Budget,
        sink: &mut dyn FnMut(Role, StreamEvent<'_>),
    ) {
        self.last = at;
        let flags = seg.flags;
        if flags.syn() && !flags.ack() && from == Role::Client {
            self.syns.push(at);
            self.client_isn.get_or_insert(seg.seq);
            self.to_server.stream.start_at(seg.seq.plus(1));
        } else if flags.syn() && flags.ack() && from == Role::Server {
            if self.syn_acks.count == 0 {
                self.rtt_syn = self.syns.last;
                self.syns_before_syn_ack = self.syns.count;
            }
            self.syn_acks.push(at);
            self.to_client.stream.start_at(seg.seq.plus(1));
        } else if !flags.syn() && !flags.rst() && self.syn_acks.count > 0 {
            self.established = true;
            if from == Role::Client && flags.ack() && self.rtt_ack.is_none() {
                self.rtt_ack = Some(at);
                self.rtt_syn_ack = self.syn_acks.last;
            }
        }

        if flags.rst() {
            self.on_reset(from, at);
        }

        if flags.ack() && !flags.rst() {
            let (peer, peer_role) = match from {
                Role::Client => (&mut self.to_client, Role::Server),
                Role::Server => (&mut self.to_server, Role::Client),
            };
            peer.tcp_mut().on_peer_ack(seg.ack);
            peer.stream
                .acknowledged(seg.ack, budget, &mut |ev| sink(peer_role, ev));
        }
        let side = self.side_mut(from);
        side.packets += 1;
        if !flags.syn() && !flags.rst() {
            side.exchange_packets += 1;
        }
        if seg.ip_len > mtu {
            side.tcp_mut()
                .on_oversize(seg.ip_len, seg.dont_fragment, at);
        }
        if flags.ack() && !flags.syn() && !flags.rst() {
            let pure = seg.wire_payload_len == 0 && !flags.fin();
            side.tcp_mut().on_own_ack(seg.ack, seg.window, pure, at);
        }
        if seg.wire_payload_len > 0 && !flags.rst() {
            side.payload_bytes += seg.wire_payload_len as u64;
            side.first_data.get_or_insert(at);
            side.last_data = Some(at);
            // The payload of a SYN starts after the SYN's own sequence number.
            let seq = if flags.syn() {
                seg.seq.plus(1)
            } else {
                seg.seq
            };
            side.tcp_mut()
                .on_data(seq, seg.wire_payload_len, seg.ip_len, at);
            side.stream.segment(
                seq,
                seg.payload,
                seg.wire_payload_len,
                at,
                budget,
                &mut |ev| sink(from, ev),
            );
        }
        if flags.fin() && side.fin.is_none() {
            side.fin = Some(at);
            let seq = if flags.syn() {
                seg.seq.plus(1)
            } else {
                seg.seq
            };
            side.fin_end = Some(seq.plus(seg.wire_payload_len));
        }
    }

    fn on_reset(&mut self, from: Role, at: Seen) {
        self.resets.push(at);
        if self.syn_acks.count == 0 && from == Role::Server && self.syns.count > 0 {
            self.handshake_rst.get_or_insert(at);
            return;
        }
        if self.reset.is_some() {
            return;
        }
        let after_both_fins = self.to_server.fin.is_some() && self.to_client.fin.is_some();
        let phase = self.tcp_phase(at.ts);
        self.reset = Some(Reset {
            at,
            by: from,
            after_both_fins,
            phase,
        });
    }

    fn tcp_phase(&self, now: Timestamp) -> TcpPhase {
        let Some(request) = self.to_server.last_data else {
            return TcpPhase::BeforeRequest;
        };
        // Once either side has sent FIN the exchange is being closed: a reset then is how many
        // stacks answer data that arrives after close (nginx's lingering close, clients that
        // drop the socket with bytes unread), not a failure of the exchange itself.
        if self.to_client.fin.is_some() || self.to_server.fin.is_some() {
            return TcpPhase::Idle;
        }
        match self.to_client.last_data {
            Some(response) if response.ts >= request.ts => {
                if now.saturating_sub(response.ts) >= IDLE_AFTER {
                    TcpPhase::Idle
                } else {
                    TcpPhase::DuringResponse
                }
            }
            _ => TcpPhase::AwaitingResponse,
        }
    }

    /// Ends both streams, delivering held bytes and gaps, and closes open measurements.
    pub fn finish_streams(
        &mut self,
        budget: &mut Budget,
        sink: &mut dyn FnMut(Role, StreamEvent<'_>),
    ) {
        if let Some(tcp) = &mut self.to_server.tcp {
            tcp.finish(self.last);
        }
        if let Some(tcp) = &mut self.to_client.tcp {
            tcp.finish(self.last);
        }
        let last = self.last;
        for (side, role) in [
            (&mut self.to_server, Role::Client),
            (&mut self.to_client, Role::Server),
        ] {
            // Where the sender's bytes ended: its FIN, else what the receiver acknowledged.
            let end = side
                .fin_end
                .or_else(|| side.tcp.as_ref().and_then(|t| t.acked_upto));
            let at = side.fin.unwrap_or(last);
            side.stream
                .finish_at(end, at, budget, &mut |ev| sink(role, ev));
        }
    }

    /// A Wireshark display filter for this connection; the frame range keeps a reused 4-tuple's
    /// other connections out.
    pub fn display_filter(&self) -> String {
        let (ca, sa) = (self.client.ip(), self.server.ip());
        let ip = if ca.is_ipv4() { "ip" } else { "ipv6" };
        format!(
            "{ip}.addr=={ca} && tcp.port=={} && {ip}.addr=={sa} && tcp.port=={} && frame.number>={} && frame.number<={}",
            self.client.port(),
            self.server.port(),
            self.first.frame,
            self.last.frame
        )
    }
}
