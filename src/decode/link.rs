//! Link-layer headers, stripped by hand: etherparse has no SLL2 or NFLOG and rejects some SLL
//! variants, so we find the ether type ourselves and hand the network layer to etherparse.

use super::DecodeError;
use crate::capture::LinkType;

/// What lies under the link header.
#[derive(Debug, PartialEq, Eq)]
pub enum Network<'a> {
    /// An IPv4 or IPv6 packet.
    Ip(&'a [u8]),
    /// Something other than IP (ARP, LLDP, ...): not our business, not an error.
    NotIp,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const VLAN_TAGS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

fn be16(data: &[u8], at: usize) -> Option<u16> {
    data.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn by_ether_type(ether_type: u16, rest: &[u8]) -> Network<'_> {
    match ether_type {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Network::Ip(rest),
        _ => Network::NotIp,
    }
}

fn truncated(layer: &'static str) -> DecodeError {
    DecodeError::Truncated(layer)
}

pub fn strip(link_type: LinkType, data: &[u8]) -> Result<Network<'_>, DecodeError> {
    match link_type {
        LinkType::ETHERNET => ethernet(data),
        LinkType::RAW
        | LinkType::RAW_OLD_12
        | LinkType::RAW_OLD_14
        | LinkType::IPV4
        | LinkType::IPV6 => Ok(Network::Ip(data)),
        LinkType::LINUX_SLL => {
            let proto = be16(data, 14).ok_or(truncated("Linux cooked header"))?;
            let hatype = be16(data, 2).ok_or(truncated("Linux cooked header"))?;
            // ARPHRD_NETLINK frames carry netlink messages, not IP.
            if hatype == 824 {
                return Ok(Network::NotIp);
            }
            Ok(by_ether_type(proto, &data[16..]))
        }
        LinkType::LINUX_SLL2 => {
            let proto = be16(data, 0).ok_or(truncated("Linux cooked v2 header"))?;
            if data.len() < 20 {
                return Err(truncated("Linux cooked v2 header"));
            }
            Ok(by_ether_type(proto, &data[20..]))
        }
        LinkType::NULL | LinkType::LOOP => {
            // The family is in the capturing host's byte order; the IP version nibble is not.
            let rest = data.get(4..).ok_or(truncated("loopback header"))?;
            match rest.first().map(|b| b >> 4) {
                Some(4) | Some(6) => Ok(Network::Ip(rest)),
                Some(_) => Ok(Network::NotIp),
                None => Err(truncated("loopback header")),
            }
        }
        LinkType::NFLOG => nflog(data),
        other => Err(DecodeError::UnsupportedLinkType(other)),
    }
}

fn ethernet(data: &[u8]) -> Result<Network<'_>, DecodeError> {
    let mut ether_type = be16(data, 12).ok_or(truncated("Ethernet header"))?;
    let mut offset = 14;
    while VLAN_TAGS.contains(&ether_type) {
        ether_type = be16(data, offset + 2).ok_or(truncated("VLAN tag"))?;
        offset += 4;
    }
    if ether_type <= 1500 {
        // IEEE 802.3 length field: only LLC/SNAP carries an ether type we can follow.
        return match data.get(offset..offset + 8) {
            Some([0xaa, 0xaa, 0x03, 0, 0, 0, hi, lo]) => Ok(by_ether_type(
                u16::from_be_bytes([*hi, *lo]),
                &data[offset + 8..],
            )),
            _ => Ok(Network::NotIp),
        };
    }
    Ok(by_ether_type(ether_type, &data[offset..]))
}

/// NFLOG: a 4-byte header, then TLVs (length and type in host byte order, padded to 4); the
/// packet is the payload TLV, type 9.
fn nflog(data: &[u8]) -> Result<Network<'_>, DecodeError> {
    let mut offset = 4;
    if data.len() < offset {
        return Err(truncated("NFLOG header"));
    }
    while offset + 4 <= data.len() {
        let len_le = u16::from_le_bytes([data[offset], data[offset + 1]]) as usize;
        let kind = u16::from_le_bytes([data[offset + 2], data[offset + 3]]) & 0x7fff;
        if len_le < 4 {
            break;
        }
        let end = (offset + len_le).min(data.len());
        if kind == 9 {
            return Ok(Network::Ip(&data[offset + 4..end]));
        }
        offset += (len_le + 3) & !3;
    }
    Ok(Network::NotIp)
}

#[cfg(test)]
mod test {
    use super::*;

    const IP: &[u8] = &[0x45, 0, 0, 20];

    #[test]
    fn test_ethernet_with_qinq_tags() {
        let mut f = vec![0u8; 12];
        f.extend([0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00]);
        f.extend(IP);
        assert_eq!(strip(LinkType::ETHERNET, &f).unwrap(), Network::Ip(IP));
    }

    #[test]
    fn test_ethernet_llc_snap() {
        let mut f = vec![0u8; 12];
        f.extend([0x00, 0x30, 0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
        f.extend(IP);
        assert_eq!(strip(LinkType::ETHERNET, &f).unwrap(), Network::Ip(IP));
    }

    #[test]
    fn test_arp_is_not_ip_and_short_frame_is_truncated() {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x06]);
        assert_eq!(strip(LinkType::ETHERNET, &f).unwrap(), Network::NotIp);
        assert!(matches!(
            strip(LinkType::ETHERNET, &f[..8]),
            Err(DecodeError::Truncated(_))
        ));
    }

    #[test]
    fn test_sll_and_sll2() {
        let mut sll = vec![0u8; 14];
        sll.extend([0x86, 0xdd]);
        sll.extend(IP);
        assert_eq!(strip(LinkType::LINUX_SLL, &sll).unwrap(), Network::Ip(IP));
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend([0u8; 18]);
        sll2.extend(IP);
        assert_eq!(strip(LinkType::LINUX_SLL2, &sll2).unwrap(), Network::Ip(IP));
    }

    #[test]
    fn test_null_either_byte_order() {
        for fam in [[2u8, 0, 0, 0], [0, 0, 0, 2]] {
            let mut f = fam.to_vec();
            f.extend(IP);
            assert_eq!(strip(LinkType::NULL, &f).unwrap(), Network::Ip(IP));
        }
    }

    #[test]
    fn test_nflog_payload_tlv() {
        let mut f = vec![2, 0, 0, 0];
        f.extend([8, 0, 1, 0, 0, 0, 0, 0]); // some TLV, 8 bytes
        f.extend([(4 + IP.len()) as u8, 0, 9, 0]);
        f.extend(IP);
        assert_eq!(strip(LinkType::NFLOG, &f).unwrap(), Network::Ip(IP));
    }

    #[test]
    fn test_unknown_link_type() {
        assert!(matches!(
            strip(LinkType(160), IP),
            Err(DecodeError::UnsupportedLinkType(LinkType(160)))
        ));
    }
}
