//! From a frame's bytes to the fields the analysis needs: addresses, IP length and DF, and the
//! TCP header and payload. Nothing is copied; a [`Packet`] borrows the frame.

mod link;

pub use link::Network;

use crate::capture::{Frame, LinkType};
use crate::flow::SeqNumber;
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
}

#[derive(Debug, Clone, Copy)]
pub enum Transport<'a> {
    Tcp(TcpSegment<'a>),
    /// A non-first IP fragment, or a first one whose transport header we will not trust.
    Fragment,
    Other,
}

#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport<'a>,
}

/// Decodes a frame. `Ok(None)` means the frame is valid but not IP (ARP and the like).
pub fn decode<'a>(frame: &Frame<'a>) -> Result<Option<Packet<'a>>, DecodeError> {
    let ip = match link::strip(frame.link_type, frame.data)? {
        Network::Ip(ip) => ip,
        Network::NotIp => return Ok(None),
    };
    let sliced = LaxSlicedPacket::from_ip(ip).map_err(|_| DecodeError::Malformed("IP header"))?;
    let (src, dst, fragmented) = match &sliced.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.is_payload_fragmented(),
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.is_payload_fragmented(),
            )
        }
        _ => return Ok(None),
    };
    let missing_on_capture = frame.orig_len.saturating_sub(frame.data.len() as u32);
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
                })
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
        transport,
    }))
}
