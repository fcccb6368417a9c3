use std::fmt;

/// A pcap LINKTYPE_ value. Unknown values survive and print as numbers.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct LinkType(pub u32);

impl LinkType {
    pub const NULL: LinkType = LinkType(0);
    pub const ETHERNET: LinkType = LinkType(1);
    /// OpenBSD's DLT_RAW and some systems' values before LINKTYPE_RAW was fixed at 101.
    pub const RAW_OLD_12: LinkType = LinkType(12);
    pub const RAW_OLD_14: LinkType = LinkType(14);
    pub const RAW: LinkType = LinkType(101);
    pub const LOOP: LinkType = LinkType(108);
    pub const LINUX_SLL: LinkType = LinkType(113);
    pub const IPV4: LinkType = LinkType(228);
    pub const IPV6: LinkType = LinkType(229);
    pub const NFLOG: LinkType = LinkType(239);
    pub const LINUX_SLL2: LinkType = LinkType(276);

    pub fn name(self) -> String {
        match self {
            Self::NULL => "null".into(),
            Self::ETHERNET => "ethernet".into(),
            Self::RAW | Self::RAW_OLD_12 | Self::RAW_OLD_14 => "raw".into(),
            Self::LOOP => "loop".into(),
            Self::LINUX_SLL => "linux-sll".into(),
            Self::IPV4 => "ipv4".into(),
            Self::IPV6 => "ipv6".into(),
            Self::NFLOG => "nflog".into(),
            Self::LINUX_SLL2 => "linux-sll2".into(),
            LinkType(n) => format!("linktype-{n}"),
        }
    }
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
