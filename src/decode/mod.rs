//! From a frame's bytes to the fields the analysis needs: addresses, IP length and DF, and the
//! TCP header and payload. Nothing is copied; a [`Packet`] borrows the frame.

mod seq;
pub use seq::SeqNumber;
mod link;

pub use link::Network;

use crate::capture::{Frame, LinkType};
use etherparse::{
    IpNumber, Ipv4Slice, Ipv6Slice, LaxNetSlice, LaxSlicedPacket, TcpSlice, TransportSlice,
};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    Tcp(TcpSegment<'a>),
    TooBig(TooBig),
    Unreachable(Unreachable),
    /// A non-first IP fragment, or a first one whose transport header we will not trust.
    Fragment,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    if let Some(packet) = whole_tcp(ip) {
        return Ok(Some(packet));
    }
    from_ip(ip, frame)
}

/// The common case, a TCP segment of an unfragmented IP packet that the capture holds whole,
/// by etherparse's strict slices: they check the same headers as the lax packet without
/// building it, a third of decoding's cost on small packets. `None` sends anything else
/// (ICMP, fragments, snaplen cuts, offload super-frames, bad headers) the general way, which
/// gives these packets the same result.
fn whole_tcp(ip: &[u8]) -> Option<Packet<'_>> {
    let (src, dst, ip_len, dont_fragment, payload) = match ip.first()? >> 4 {
        4 => {
            let v4 = Ipv4Slice::from_slice(ip).ok()?;
            if v4.is_payload_fragmented() || v4.payload_ip_number() != IpNumber::TCP {
                return None;
            }
            let h = v4.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.total_len() as u32,
                h.dont_fragment(),
                v4.payload().payload,
            )
        }
        6 => {
            let v6 = Ipv6Slice::from_slice(ip).ok()?;
            let h = v6.header();
            // A zero payload length (a jumbogram or an offload super-frame) takes its length
            // from the capture, as the general path works out.
            if h.payload_length() == 0
                || v6.is_payload_fragmented()
                || v6.payload().ip_number != IpNumber::TCP
            {
                return None;
            }
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                h.payload_length() as u32 + 40,
                true,
                v6.payload().payload,
            )
        }
        _ => return None,
    };
    let tcp = TcpSlice::from_slice(payload).ok()?;
    Some(Packet {
        src,
        dst,
        ip_len,
        dont_fragment,
        transport: Transport::Tcp(segment(&tcp, 0, ip_len, dont_fragment)),
    })
}

fn segment<'a>(tcp: &TcpSlice<'a>, uncaptured: u32, ip_len: u32, df: bool) -> TcpSegment<'a> {
    let payload = tcp.payload();
    TcpSegment {
        src_port: tcp.source_port(),
        dst_port: tcp.destination_port(),
        seq: SeqNumber(tcp.sequence_number()),
        ack: SeqNumber(tcp.acknowledgment_number()),
        flags: TcpFlags(tcp.slice()[13] & 0x3f),
        window: tcp.window_size(),
        payload,
        wire_payload_len: payload.len() as u32 + uncaptured,
        ip_len,
        dont_fragment: df,
    }
}

/// Any IP packet, by etherparse's lax slicing, which keeps what a snaplen cut short.
fn from_ip<'a>(ip: &'a [u8], frame: &Frame<'a>) -> Result<Option<Packet<'a>>, DecodeError> {
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
                let incomplete = match &sliced.net {
                    Some(LaxNetSlice::Ipv4(v4)) => v4.payload().incomplete,
                    Some(LaxNetSlice::Ipv6(v6)) => v6.payload().incomplete,
                    _ => false,
                };
                let uncaptured = if incomplete { missing_on_capture } else { 0 };
                Transport::Tcp(segment(tcp, uncaptured, ip_len, dont_fragment))
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

#[cfg(test)]
mod test {
    use super::*;
    use crate::capture::{CaptureReader, Timestamp, Warnings};

    /// Both ways of decoding a frame: the one [`decode`] takes, and the general one alone.
    fn both<'a>(frame: &Frame<'a>) -> (Result<Option<Packet<'a>>, DecodeError>, bool) {
        let general = match link::strip(frame.link_type, frame.data) {
            Ok(Network::Ip(ip)) => {
                let fast = whole_tcp(ip);
                let general = from_ip(ip, frame);
                if let Some(fast) = fast {
                    assert_eq!(Ok(Some(fast)), general, "frame {}", frame.number);
                }
                return (general, fast.is_some());
            }
            Ok(Network::NotIp) => Ok(None),
            Err(e) => Err(e),
        };
        (general, false)
    }

    fn captures_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                captures_under(&path, out);
            } else if path
                .extension()
                .is_some_and(|x| x == "pcap" || x == "pcapng")
            {
                out.push(path);
            }
        }
    }

    /// Every frame of the shipped captures (and of the directory `LBDIAG_DECODE_CORPUS` names,
    /// if set) decodes to the same packet by the fast path as by the general one.
    #[test]
    fn test_fast_path_decodes_every_shipped_frame_as_the_general_path() {
        let mut paths = Vec::new();
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
        captures_under(&shipped, &mut paths);
        assert!(paths.len() > 50, "captures/ holds {} captures", paths.len());
        if let Some(more) = std::env::var_os("LBDIAG_DECODE_CORPUS") {
            captures_under(std::path::Path::new(&more), &mut paths);
        }
        paths.sort();
        let (mut fast, mut general) = (0, 0);
        for path in &paths {
            let Ok(mut reader) = CaptureReader::open(path) else {
                continue;
            };
            reader.for_each_frame(&mut Warnings::default(), |frame| {
                let (expected, took_fast) = both(frame);
                assert_eq!(
                    decode(frame),
                    expected,
                    "{} frame {}",
                    path.display(),
                    frame.number
                );
                if took_fast {
                    fast += 1;
                } else {
                    general += 1;
                }
            });
        }
        // Both paths must have been exercised for the comparison to mean anything.
        assert!(
            fast > 1000 && general > 20,
            "fast {fast}, general {general}"
        );
    }

    fn frame(data: &[u8], orig_len: u32) -> Frame<'_> {
        Frame {
            number: 1,
            ts: Timestamp(0),
            link_type: LinkType::RAW,
            data,
            orig_len,
        }
    }

    /// An IPv4 TCP segment of 10 payload bytes, with the given total length field.
    fn ipv4_tcp(total_len: u16, flags_frag: [u8; 2]) -> Vec<u8> {
        let mut p = vec![
            0x45,
            0,
            0,
            0,
            0,
            1,
            flags_frag[0],
            flags_frag[1],
            64,
            6,
            0,
            0,
            10,
            0,
            0,
            1,
            10,
            0,
            0,
            2,
        ];
        p[2..4].copy_from_slice(&total_len.to_be_bytes());
        p.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x18, 1, 0]);
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(b"0123456789");
        p
    }

    #[test]
    fn test_fast_path_leaves_unusual_ipv4_to_the_general_path() {
        let whole = ipv4_tcp(50, [0x40, 0]);
        let f = frame(&whole, 50);
        assert!(matches!(both(&f), (Ok(Some(_)), true)));
        // Ethernet padding after the packet: still whole.
        let mut padded = whole.clone();
        padded.extend_from_slice(&[0; 6]);
        let f = frame(&padded, 56);
        assert!(matches!(both(&f), (Ok(Some(_)), true)));
        // Cut by the snaplen: the lax path counts the bytes the capture lacks.
        let f = frame(&whole[..45], 50);
        let (p, fast) = both(&f);
        assert!(!fast);
        match p.unwrap().unwrap().transport {
            Transport::Tcp(seg) => assert_eq!((seg.payload.len(), seg.wire_payload_len), (5, 10)),
            t => panic!("{t:?}"),
        }
        // An offload super-frame's zero total length.
        let tso = ipv4_tcp(0, [0x40, 0]);
        let (p, fast) = both(&frame(&tso, 50));
        assert!(!fast);
        assert_eq!(p.unwrap().unwrap().ip_len, 50);
        // A first fragment.
        let frag = ipv4_tcp(50, [0x20, 0]);
        let (p, fast) = both(&frame(&frag, 50));
        assert!(!fast);
        assert_eq!(p.unwrap().unwrap().transport, Transport::Fragment);
        // A TCP header cut short.
        let short = ipv4_tcp(30, [0x40, 0]);
        let (p, fast) = both(&frame(&short[..30], 30));
        assert!(!fast);
        assert_eq!(p, Err(DecodeError::Truncated("TCP header")));
    }
}
