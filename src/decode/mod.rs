//! From a frame's bytes to the fields the analysis needs: addresses, IP length and DF, and the
//! TCP header and payload. Nothing is copied; a [`Packet`] borrows the frame.

mod seq;
pub use seq::SeqNumber;
mod link;

pub use link::Network;

use crate::capture::{Frame, LinkType};
use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use std::net::IpAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unsupported link type {0}")]
    UnsupportedLinkType(LinkType),
    #[error("{0} cut short")]
    Truncated(&'static str),
    #[error("malformed {0}")]
    Malformed(&'static str),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;

    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    pub flags: TcpFlags,
    pub window: u16,
    /// The payload bytes the capture holds.
    pub payload: &'a [u8],
    /// The payload length on the wire; more than `payload.len()` when the snaplen cut it.
    pub wire_payload_len: u32,
    /// Length of the IP packet carrying the segment, on the wire.
    pub ip_len: u32,
    pub dont_fragment: bool,
}

/// ICMP "fragmentation needed" (v4) or "packet too big" (v6): a router's word that a packet
/// did not fit the next hop, naming the packet by the headers it quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TooBig {
    pub next_hop_mtu: u32,
    /// Source and destination of the quoted packet (the one that was too big).
    pub quoted_src: std::net::SocketAddr,
    pub quoted_dst: std::net::SocketAddr,
    /// The quoted packet was TCP (else the ports are meaningless).
    pub quoted_tcp: bool,
    pub quoted_seq: Option<SeqNumber>,
}

/// ICMP destination unreachable (v4 type 3 other than code 4) or ICMPv6 destination
/// unreachable (type 1): a host, router or firewall saying the quoted packet cannot be
/// delivered. iptables' REJECT target sends these (port unreachable by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreachable {
    pub v6: bool,
    pub icmp_type: u8,
    pub code: u8,
    pub quoted_src: std::net::SocketAddr,
    pub quoted_dst: std::net::SocketAddr,
    pub quoted_tcp: bool,
    /// The quoted TCP sequence number (the first 8 bytes of the TCP header are always quoted).
    pub quoted_seq: Option<SeqNumber>,
}

/// The name of an unreachable code (RFC 792 and RFC 1812 for ICMP, RFC 4443 for ICMPv6).
pub fn unreachable_name(v6: bool, code: u8) -> &'static str {
    if v6 {
        match code {
            0 => "no route to destination",
            1 => "communication administratively prohibited",
            2 => "beyond scope of source address",
            3 => "address unreachable",
            4 => "port unreachable",
            5 => "source address failed ingress/egress policy",
            6 => "reject route to destination",
            _ => "destination unreachable",
        }
    } else {
        match code {
            0 => "net unreachable",
            1 => "host unreachable",
            2 => "protocol unreachable",
            3 => "port unreachable",
            5 => "source route failed",
            6 => "destination network unknown",
            7 => "destination host unknown",
            9 => "network administratively prohibited",
            10 => "host administratively prohibited",
            11 => "network unreachable for type of service",
            12 => "host unreachable for type of service",
            13 => "communication administratively prohibited",
            14 => "host precedence violation",
            15 => "precedence cutoff in effect",
            _ => "destination unreachable",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Transport<'a> {
    Tcp(TcpSegment<'a>),
    TooBig(TooBig),
    Unreachable(Unreachable),
    /// A non-first IP fragment, or a first one whose transport header we will not trust.
    Fragment,
    Other,
}

#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Length of the IP packet on the wire, headers included.
    pub ip_len: u32,
    /// IPv4 Don't Fragment; always true for IPv6, where routers never fragment.
    pub dont_fragment: bool,
    pub transport: Transport<'a>,
}

/// Decodes a frame. `Ok(None)` means the frame is valid but not IP (ARP and the like).
pub fn decode<'a>(frame: &Frame<'a>) -> Result<Option<Packet<'a>>, DecodeError> {
    let ip = match link::strip(frame.link_type, frame.data)? {
        Network::Ip(ip) => ip,
        Network::NotIp => return Ok(None),
    };
    let sliced = LaxSlicedPacket::from_ip(ip).map_err(|_| DecodeError::Malformed("IP header"))?;
    let missing_on_capture = frame.orig_len.saturating_sub(frame.data.len() as u32);
    // A zero length field means a segmentation-offload super-frame (BIG TCP, jumbograms):
    // the real length is what the capture holds plus what the snaplen cut.
    let on_wire = ip.len() as u32 + missing_on_capture;
    let (src, dst, fragmented, ip_len, dont_fragment) = match &sliced.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let total = h.total_len() as u32;
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.is_payload_fragmented(),
                if total == 0 { on_wire } else { total },
                h.dont_fragment(),
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            let payload = h.payload_length() as u32;
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.is_payload_fragmented(),
                if payload == 0 { on_wire } else { payload + 40 },
                true,
            )
        }
        _ => return Ok(None),
    };
    let transport = if fragmented {
        Transport::Fragment
    } else {
        match &sliced.transport {
            Some(TransportSlice::Tcp(tcp)) => {
                let payload = tcp.payload();
                let incomplete = match &sliced.net {
                    Some(LaxNetSlice::Ipv4(v4)) => v4.payload().incomplete,
                    Some(LaxNetSlice::Ipv6(v6)) => v6.payload().incomplete,
                    _ => false,
                };
                let wire_payload_len =
                    payload.len() as u32 + if incomplete { missing_on_capture } else { 0 };
                Transport::Tcp(TcpSegment {
                    src_port: tcp.source_port(),
                    dst_port: tcp.destination_port(),
                    seq: SeqNumber(tcp.sequence_number()),
                    ack: SeqNumber(tcp.acknowledgment_number()),
                    flags: TcpFlags(tcp.slice()[13] & 0x3f),
                    window: tcp.window_size(),
                    payload,
                    wire_payload_len,
                    ip_len,
                    dont_fragment,
                })
            }
            Some(TransportSlice::Icmpv4(icmp)) if icmp.type_u8() == 3 && icmp.code_u8() == 4 => {
                let b = icmp.bytes5to8();
                let mtu = u16::from_be_bytes([b[2], b[3]]) as u32;
                quoted(icmp.payload(), mtu).map_or(Transport::Other, Transport::TooBig)
            }
            Some(TransportSlice::Icmpv4(icmp)) if icmp.type_u8() == 3 => {
                unreachable(false, icmp.type_u8(), icmp.code_u8(), icmp.payload())
            }
            Some(TransportSlice::Icmpv6(icmp)) if icmp.type_u8() == 2 => {
                let mtu = u32::from_be_bytes(icmp.bytes5to8());
                quoted(icmp.payload(), mtu).map_or(Transport::Other, Transport::TooBig)
            }
            Some(TransportSlice::Icmpv6(icmp)) if icmp.type_u8() == 1 => {
                unreachable(true, icmp.type_u8(), icmp.code_u8(), icmp.payload())
            }
            Some(_) => Transport::Other,
            None => match &sliced.stop_err {
                Some((_, etherparse::err::Layer::TcpHeader)) => {
                    return Err(DecodeError::Truncated("TCP header"));
                }
                _ => Transport::Other,
            },
        }
    };
    Ok(Some(Packet {
        src,
        dst,
        ip_len,
        dont_fragment,
        transport,
    }))
}

fn unreachable(v6: bool, icmp_type: u8, code: u8, inner: &[u8]) -> Transport<'static> {
    match quoted(inner, 0) {
        Some(q) => Transport::Unreachable(Unreachable {
            v6,
            icmp_type,
            code,
            quoted_src: q.quoted_src,
            quoted_dst: q.quoted_dst,
            quoted_tcp: q.quoted_tcp,
            quoted_seq: q.quoted_seq,
        }),
        None => Transport::Other,
    }
}

/// The addresses and ports of the packet an ICMP error quotes (its IP header and at least the
/// first 8 bytes of its transport header, by RFC 792 / RFC 4443).
fn quoted(inner: &[u8], next_hop_mtu: u32) -> Option<TooBig> {
    let version = inner.first()? >> 4;
    let (src, dst, proto, l4) = match version {
        4 => {
            let ihl = (inner[0] & 0x0f) as usize * 4;
            let h = inner.get(..20)?;
            let src = std::net::Ipv4Addr::new(h[12], h[13], h[14], h[15]);
            let dst = std::net::Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            (
                IpAddr::V4(src),
                IpAddr::V4(dst),
                h[9],
                inner.get(ihl.max(20)..)?,
            )
        }
        6 => {
            let h = inner.get(..40)?;
            let src: [u8; 16] = h[8..24].try_into().ok()?;
            let dst: [u8; 16] = h[24..40].try_into().ok()?;
            (
                IpAddr::V6(src.into()),
                IpAddr::V6(dst.into()),
                h[6],
                &inner[40..],
            )
        }
        _ => return None,
    };
    let ports = l4.get(..4)?;
    let quoted_seq = l4
        .get(4..8)
        .map(|b| SeqNumber(u32::from_be_bytes([b[0], b[1], b[2], b[3]])));
    Some(TooBig {
        next_hop_mtu,
        quoted_src: std::net::SocketAddr::new(src, u16::from_be_bytes([ports[0], ports[1]])),
        quoted_dst: std::net::SocketAddr::new(dst, u16::from_be_bytes([ports[2], ports[3]])),
        quoted_tcp: proto == 6,
        quoted_seq,
    })
}
