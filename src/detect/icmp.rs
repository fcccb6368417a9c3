//! ICMP too-big messages whose quoted packet belongs to no connection in the capture (the
//! capture started later, or holds only the ICMP). Grouped per quoted flow and MTU, bounded.

use super::{Context, Findings, cause};
use crate::decode::TooBig;
use crate::flow::{FrameList, Seen};
use crate::report::{Facts, Finding, Flow, Kind, Severity};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;

const MAX_GROUPS: usize = 10_000;

#[derive(Default)]
pub struct Unmatched {
    groups: BTreeMap<(SocketAddr, SocketAddr, u32), FrameList>,
}

impl Unmatched {
    pub fn note(&mut self, msg: &TooBig, at: Seen) {
        let key = (msg.quoted_src, msg.quoted_dst, msg.next_hop_mtu);
        if self.groups.len() >= MAX_GROUPS && !self.groups.contains_key(&key) {
            return;
        }
        self.groups.entry(key).or_default().push(at);
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Findings) {
        for ((sender, receiver, mtu), frames) in self.groups {
            let Some(first) = frames.first else { continue };
            let ip = if sender.is_ipv4() { "ip" } else { "ipv6" };
            let icmp = if sender.is_ipv4() { "icmp" } else { "icmpv6" };
            out.push(Finding {
                leg: None,
                explained_by: Vec::new(),
                explains: Vec::new(),
                facts: Facts {
                    at: first,
                    ..Facts::default()
                },
                kind: Kind::IcmpFragNeeded,
                severity: Severity::Info,
                capture: ctx.capture.to_string(),
                flow: Flow {
                    client: sender.to_string(),
                    server: receiver.to_string(),
                    filter: format!("{icmp} && {ip}.addr=={} && {ip}.addr=={}", sender.ip(), receiver.ip()),
                },
                packets: frames.frames(),
                time: first.ts.rfc3339(),
                summary: format!(
                    "A router told {sender} that its packets to {receiver} do not fit a {mtu}-byte link ({} ICMP message(s)); the connection itself is not in the capture.",
                    frames.count
                ),
                evidence: [
                    ("next_hop_mtu".to_string(), json!(mtu)),
                    ("messages".to_string(), json!(frames.count)),
                    ("connection_captured".to_string(), json!(false)),
                ]
                .into_iter()
                .collect(),
                causes: vec![cause(
                    502,
                    Some("-"),
                    format!("The path MTU toward {} is {mtu} bytes; if such messages are filtered before reaching the sender, large packets vanish (an MTU blackhole).", receiver.ip()),
                    &["Make sure ICMP type 3 code 4 (IPv6: type 2) is allowed back to the sender.".to_string()],
                )],
            });
        }
    }
}
