//! Per-direction transport facts: retransmissions, what the peer acknowledged and at which
//! packet sizes, duplicate ACKs, zero windows, and packets larger than the MTU. Detectors for
//! loss, MTU blackholes and stalled receivers read these when the connection is finalized.

use super::frame_list::FrameList;
use crate::capture::Duration;
use crate::capture::Seen;
use crate::decode::SeqNumber;
use std::collections::VecDeque;

/// Segments remembered while unacknowledged, to learn which sizes got through. Older ones are
/// forgotten (without credit) when this fills.
const UNACKED_KEPT: usize = 64;

/// What one side of a connection did: what it sent (as the peer acknowledged it) and the
/// ACKs and windows it advertised.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct TcpStats {
    pub data_segments: u64,
    /// Data segments that started below the highest byte already sent: retransmissions, or at
    /// a receiver-side vantage, late fills of holes left by lost packets.
    pub retransmissions: FrameList,
    /// Highest sequence number sent plus one.
    pub highest_end: Option<SeqNumber>,
    /// Highest acknowledgement the peer sent for this side's bytes.
    pub acked_upto: Option<SeqNumber>,
    unacked: VecDeque<(SeqNumber, u32)>,
    /// Largest IP packet of this side that the peer is known to have acknowledged.
    pub largest_acked_ip_len: u32,
    /// Retransmitted segments not yet acknowledged when resent, larger than any acknowledged one.
    pub large_unacked_retransmissions: FrameList,
    pub large_retransmitted_ip_len: u32,
    /// End of the earliest such segment: if the peer never acknowledges past it, it never arrived.
    pub large_retransmitted_end: Option<SeqNumber>,
    pub largest_ip_len: u32,
    /// IP packets over the MTU.
    pub oversize: FrameList,
    pub oversize_largest: u32,
    pub oversize_with_df: u32,
    /// Pure ACKs repeating the previous acknowledgement (the peer's data is missing here).
    pub dup_acks: u32,
    last_ack: Option<(SeqNumber, u16)>,
    /// Times this side advertised a zero window, and for how long.
    pub zero_windows: FrameList,
    zero_since: Option<Seen>,
    pub zero_window_total: Duration,
    pub zero_window_longest: Duration,
}

impl TcpStats {
    /// A segment this side sent. `ip_len` is the size of its IP packet.
    pub fn on_data(&mut self, seq: SeqNumber, len: u32, ip_len: u32, at: Seen) {
        let end = seq.plus(len);
        self.data_segments += 1;
        self.largest_ip_len = self.largest_ip_len.max(ip_len);
        match self.highest_end {
            Some(high) if seq < high => {
                self.retransmissions.push(at);
                let still_unacked = self.acked_upto.is_none_or(|a| end > a);
                if still_unacked && ip_len > 576 && ip_len > self.largest_acked_ip_len {
                    self.large_unacked_retransmissions.push(at);
                    self.large_retransmitted_ip_len = self.large_retransmitted_ip_len.max(ip_len);
                    self.large_retransmitted_end.get_or_insert(end);
                }
            }
            _ => {
                if self.unacked.len() == UNACKED_KEPT {
                    self.unacked.pop_front();
                }
                self.unacked.push_back((end, ip_len));
            }
        }
        if self.highest_end.is_none_or(|h| end > h) {
            self.highest_end = Some(end);
        }
    }

    pub fn on_oversize(&mut self, ip_len: u32, dont_fragment: bool, at: Seen) {
        self.oversize.push(at);
        self.oversize_largest = self.oversize_largest.max(ip_len);
        if dont_fragment {
            self.oversize_with_df += 1;
        }
    }

    /// The peer acknowledged up to `ack`.
    pub fn on_peer_ack(&mut self, ack: SeqNumber) {
        if self.acked_upto.is_some_and(|a| ack <= a) {
            return;
        }
        // An ACK far beyond what was sent is not about this stream (or we missed its start).
        if self.highest_end.is_some_and(|h| ack.diff(h) > 0) {
            self.acked_upto = Some(ack);
            self.unacked.clear();
            return;
        }
        self.acked_upto = Some(ack);
        while let Some(&(end, ip_len)) = self.unacked.front() {
            if end > ack {
                break;
            }
            self.largest_acked_ip_len = self.largest_acked_ip_len.max(ip_len);
            self.unacked.pop_front();
        }
    }

    /// The large retransmitted segments were never acknowledged by the end.
    pub fn large_segments_never_acked(&self) -> bool {
        match (self.large_retransmitted_end, self.acked_upto) {
            (Some(end), Some(acked)) => acked < end,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// An ACK this side sent, with its window; tracks duplicates and zero windows.
    pub fn on_own_ack(&mut self, ack: SeqNumber, window: u16, pure: bool, at: Seen) {
        if pure && self.last_ack == Some((ack, window)) {
            self.dup_acks += 1;
        }
        self.last_ack = Some((ack, window));
        match (window, self.zero_since) {
            (0, None) => {
                self.zero_windows.push(at);
                self.zero_since = Some(at);
            }
            (w, Some(since)) if w > 0 => {
                self.close_zero_window(since, at);
            }
            _ => {}
        }
    }

    fn close_zero_window(&mut self, since: Seen, until: Seen) {
        let d = until.ts.saturating_sub(since.ts);
        self.zero_window_total = Duration(self.zero_window_total.0.saturating_add(d.0));
        self.zero_window_longest = self.zero_window_longest.max(d);
        self.zero_since = None;
    }

    /// Ends an open zero window at the connection's last packet.
    pub fn finish(&mut self, last: Seen) {
        if let Some(since) = self.zero_since {
            self.close_zero_window(since, last);
        }
    }

    pub fn retransmission_rate(&self) -> f64 {
        if self.data_segments == 0 {
            0.0
        } else {
            self.retransmissions.count as f64 / self.data_segments as f64
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::capture::Timestamp;

    fn at(frame: u64, ms: i64) -> Seen {
        Seen {
            frame,
            ts: Timestamp(ms * 1_000_000),
        }
    }

    #[test]
    fn test_blackhole_pattern_small_acked_large_never() {
        let mut s = TcpStats::default();
        s.on_data(SeqNumber(1), 100, 140, at(1, 0));
        s.on_peer_ack(SeqNumber(101));
        s.on_data(SeqNumber(101), 1448, 1500, at(2, 10));
        s.on_data(SeqNumber(101), 1448, 1500, at(3, 300));
        s.on_data(SeqNumber(101), 1448, 1500, at(4, 900));
        assert_eq!(s.largest_acked_ip_len, 140);
        assert_eq!(s.large_unacked_retransmissions.count, 2);
        assert!(s.large_segments_never_acked());
        s.on_peer_ack(SeqNumber(1549));
        assert!(!s.large_segments_never_acked());
    }

    #[test]
    fn test_retransmission_rate() {
        let mut s = TcpStats::default();
        for i in 0..10u32 {
            s.on_data(SeqNumber(1 + i * 100), 100, 140, at(i as u64, 0));
        }
        s.on_data(SeqNumber(1), 100, 140, at(11, 0));
        assert_eq!(s.retransmissions.count, 1);
        assert!((s.retransmission_rate() - 1.0 / 11.0).abs() < 1e-9);
    }

    #[test]
    fn test_zero_window_duration_and_dup_acks() {
        let mut s = TcpStats::default();
        s.on_own_ack(SeqNumber(5), 100, true, at(1, 0));
        s.on_own_ack(SeqNumber(5), 100, true, at(2, 1));
        assert_eq!(s.dup_acks, 1);
        s.on_own_ack(SeqNumber(5), 0, true, at(3, 100));
        s.on_own_ack(SeqNumber(5), 0, true, at(4, 600));
        s.on_own_ack(SeqNumber(5), 500, true, at(5, 1600));
        assert_eq!(s.zero_windows.count, 1);
        assert_eq!(s.zero_window_longest, Duration::from_millis(1500));
        s.on_own_ack(SeqNumber(5), 0, true, at(6, 2000));
        s.finish(at(7, 2500));
        assert_eq!(s.zero_window_total, Duration::from_millis(2000));
    }
}
