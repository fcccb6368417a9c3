//! One direction of a TCP connection turned back into a byte stream. In-order bytes are handed
//! on without copying; out-of-order segments are copied and held until the hole before them
//! fills, within a per-connection and a global byte budget. When a budget runs out, or the
//! connection ends with holes, the holes are delivered as gaps so consumers can resynchronise.

use super::SeqNumber;
use super::connection::Seen;

/// What a protocol analyzer sees of one direction, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEvent<'a> {
    Data {
        offset: u64,
        bytes: &'a [u8],
        at: Seen,
    },
    /// Bytes the sender sent that the capture does not hold (dropped, snaplen, or over budget).
    Gap { offset: u64, len: u64, at: Seen },
}

/// Out-of-order bytes held across all connections, shared by every reassembler of a capture.
#[derive(Debug)]
pub struct Budget {
    pub per_connection: usize,
    pub total: usize,
    pub held: usize,
    /// Times a budget forced a hole to be given up; reported in the capture's warnings.
    pub exhausted: u64,
}

impl Budget {
    pub fn new(per_connection: usize, total: usize) -> Budget {
        Budget {
            per_connection,
            total,
            held: 0,
            exhausted: 0,
        }
    }
}

#[derive(Debug)]
struct Held {
    seq: SeqNumber,
    data: Vec<u8>,
    /// Length on the wire; the part beyond `data` was cut by the snaplen.
    wire_len: u32,
    at: Seen,
}

/// A segment that starts this far past the expected sequence number is not from this stream
/// (garbage, or a sequence space we misread): it is ignored rather than opening a huge hole.
const MAX_PLAUSIBLE_JUMP: i64 = 1 << 30;

/// The first and last bytes of a recently delivered segment: enough to notice a retransmission
/// that carries different bytes than the original, without keeping the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sample {
    seq: u32,
    len: u32,
    head: [u8; 8],
    tail: [u8; 8],
}

impl Sample {
    fn of(seq: SeqNumber, payload: &[u8]) -> Sample {
        let mut s = Sample {
            seq: seq.0,
            len: payload.len() as u32,
            ..Sample::default()
        };
        let n = payload.len().min(8);
        s.head[..n].copy_from_slice(&payload[..n]);
        s.tail[..n].copy_from_slice(&payload[payload.len() - n..]);
        s
    }
}

const SAMPLES: usize = 8;

#[derive(Debug, Default)]
pub struct Reassembler {
    next: Option<SeqNumber>,
    offset: u64,
    /// Sorted by sequence number; segments usually arrive at either end, so a deque.
    held: std::collections::VecDeque<Held>,
    held_bytes: usize,
    pub delivered_bytes: u64,
    pub gap_bytes: u64,
    pub gaps: u32,
    pub first_gap_frame: Option<u64>,
    pub retransmitted_bytes: u64,
    pub implausible_segments: u32,
    /// Retransmissions whose bytes differ from what was delivered first (sampled comparison);
    /// the first version is the one analyzed.
    pub conflicts: u32,
    pub first_conflict_frame: Option<u64>,
    samples: Option<Box<[Sample; SAMPLES]>>,
    next_sample: usize,
}

impl Reassembler {
    /// Sets the first sequence number of the stream (ISN + 1 after a SYN).
    pub fn start_at(&mut self, seq: SeqNumber) {
        if self.next.is_none() {
            self.next = Some(seq);
        }
    }

    pub fn is_started(&self) -> bool {
        self.next.is_some()
    }

    /// Stream offset of the next byte expected.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    pub fn segment(
        &mut self,
        seq: SeqNumber,
        payload: &[u8],
        wire_len: u32,
        at: Seen,
        budget: &mut Budget,
        sink: &mut dyn FnMut(StreamEvent<'_>),
    ) {
        if wire_len == 0 {
            return;
        }
        let next = *self.next.get_or_insert(seq);
        let rel = seq.diff(next);
        if !(-MAX_PLAUSIBLE_JUMP..=MAX_PLAUSIBLE_JUMP).contains(&rel) {
            self.implausible_segments += 1;
            return;
        }
        if rel + wire_len as i64 <= 0 {
            self.retransmitted_bytes += wire_len as u64;
            self.check_retransmission(seq, payload, wire_len, at);
            return;
        }
        if rel == 0 && payload.len() == wire_len as usize {
            let samples = self.samples.get_or_insert_with(Box::default);
            samples[self.next_sample] = Sample::of(seq, payload);
            self.next_sample = (self.next_sample + 1) % SAMPLES;
        }
        if rel <= 0 {
            let skip = (-rel) as u32;
            self.retransmitted_bytes += skip as u64;
            self.deliver(payload, wire_len, skip, at, sink);
            self.drain(budget, sink);
            return;
        }
        // Ahead of the stream: hold a copy until the hole fills, if the budgets allow.
        let cost = payload.len();
        if self.held_bytes + cost > budget.per_connection || budget.held + cost > budget.total {
            budget.exhausted += 1;
            self.give_up_hole(next, seq, at, sink);
            self.deliver(payload, wire_len, 0, at, sink);
            self.drain(budget, sink);
            return;
        }
        let index = self.held.partition_point(|h| h.seq.diff(seq) <= 0);
        self.held.insert(
            index,
            Held {
                seq,
                data: payload.to_vec(),
                wire_len,
                at,
            },
        );
        self.held_bytes += cost;
        budget.held += cost;
    }

    fn check_retransmission(&mut self, seq: SeqNumber, payload: &[u8], wire_len: u32, at: Seen) {
        if payload.len() != wire_len as usize {
            return;
        }
        let Some(samples) = &self.samples else { return };
        let now = Sample::of(seq, payload);
        let differs = samples
            .iter()
            .any(|s| s.seq == now.seq && s.len == now.len && s != &now);
        if differs {
            self.conflicts += 1;
            self.first_conflict_frame.get_or_insert(at.frame);
        }
    }

    /// Ends the stream: what is still held is delivered with gaps for the holes before it.
    pub fn finish(&mut self, budget: &mut Budget, sink: &mut dyn FnMut(StreamEvent<'_>)) {
        while let Some(held) = self.held.pop_front() {
            self.release(&held, budget);
            let next = self.next.unwrap_or(held.seq);
            if held.seq.diff(next) > 0 {
                self.give_up_hole(next, held.seq, held.at, sink);
            }
            self.deliver_held(held, sink);
        }
    }

    fn release(&mut self, held: &Held, budget: &mut Budget) {
        self.held_bytes -= held.data.len();
        budget.held -= held.data.len();
    }

    fn give_up_hole(
        &mut self,
        from: SeqNumber,
        to: SeqNumber,
        at: Seen,
        sink: &mut dyn FnMut(StreamEvent<'_>),
    ) {
        let len = to.diff(from).max(0) as u64;
        if len == 0 {
            return;
        }
        sink(StreamEvent::Gap {
            offset: self.offset,
            len,
            at,
        });
        self.offset += len;
        self.gap_bytes += len;
        self.gaps += 1;
        self.first_gap_frame.get_or_insert(at.frame);
        self.next = Some(to);
    }

    fn drain(&mut self, budget: &mut Budget, sink: &mut dyn FnMut(StreamEvent<'_>)) {
        while let Some(first) = self.held.front() {
            let next = self.next.expect("started before anything is held");
            if first.seq.diff(next) > 0 {
                break;
            }
            let held = self.held.pop_front().expect("front exists");
            self.release(&held, budget);
            self.deliver_held(held, sink);
        }
    }

    fn deliver_held(&mut self, held: Held, sink: &mut dyn FnMut(StreamEvent<'_>)) {
        let next = self.next.unwrap_or(held.seq);
        let rel = held.seq.diff(next);
        if rel + held.wire_len as i64 <= 0 {
            self.retransmitted_bytes += held.wire_len as u64;
            return;
        }
        let skip = (-rel).max(0) as u32;
        self.deliver(&held.data, held.wire_len, skip, held.at, sink);
    }

    /// Delivers a segment that starts at or before the expected byte, skipping `skip` bytes
    /// already delivered; the part the snaplen cut becomes a gap.
    fn deliver(
        &mut self,
        payload: &[u8],
        wire_len: u32,
        skip: u32,
        at: Seen,
        sink: &mut dyn FnMut(StreamEvent<'_>),
    ) {
        let captured = payload.get(skip as usize..).unwrap_or(&[]);
        if !captured.is_empty() {
            sink(StreamEvent::Data {
                offset: self.offset,
                bytes: captured,
                at,
            });
            self.offset += captured.len() as u64;
            self.delivered_bytes += captured.len() as u64;
        }
        let on_wire = wire_len.saturating_sub(skip) as u64;
        let cut = on_wire - captured.len().min(on_wire as usize) as u64;
        if cut > 0 {
            sink(StreamEvent::Gap {
                offset: self.offset,
                len: cut,
                at,
            });
            self.offset += cut;
            self.gap_bytes += cut;
            self.gaps += 1;
            self.first_gap_frame.get_or_insert(at.frame);
        }
        let next = self.next.unwrap_or_default();
        self.next = Some(next.plus(on_wire as u32));
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::capture::Timestamp;

    fn seen(frame: u64) -> Seen {
        Seen {
            frame,
            ts: Timestamp(frame as i64),
        }
    }

    #[derive(Debug, PartialEq)]
    enum Ev {
        D(u64, Vec<u8>),
        G(u64, u64),
    }

    fn run(segments: &[(u32, &[u8])], budget: &mut Budget) -> (Vec<Ev>, Reassembler) {
        let mut r = Reassembler::default();
        r.start_at(SeqNumber(1000));
        let mut out = Vec::new();
        let mut sink = |e: StreamEvent<'_>| match e {
            StreamEvent::Data { offset, bytes, .. } => out.push(Ev::D(offset, bytes.to_vec())),
            StreamEvent::Gap { offset, len, .. } => out.push(Ev::G(offset, len)),
        };
        for (i, (seq, data)) in segments.iter().enumerate() {
            r.segment(
                SeqNumber(*seq),
                data,
                data.len() as u32,
                seen(i as u64 + 1),
                budget,
                &mut sink,
            );
        }
        r.finish(budget, &mut sink);
        (out, r)
    }

    fn joined(events: &[Ev]) -> Vec<u8> {
        events
            .iter()
            .flat_map(|e| match e {
                Ev::D(_, d) => d.clone(),
                Ev::G(_, n) => vec![b'?'; *n as usize],
            })
            .collect()
    }

    fn big_budget() -> Budget {
        Budget::new(1 << 20, 1 << 24)
    }

    #[test]
    fn test_in_order_passes_through() {
        let (ev, r) = run(&[(1000, b"hello "), (1006, b"world")], &mut big_budget());
        assert_eq!(joined(&ev), b"hello world");
        assert_eq!(r.gaps, 0);
    }

    #[test]
    fn test_out_of_order_is_held_then_released() {
        let mut budget = big_budget();
        let (ev, _) = run(&[(1006, b"world"), (1000, b"hello ")], &mut budget);
        assert_eq!(
            ev,
            vec![Ev::D(0, b"hello ".to_vec()), Ev::D(6, b"world".to_vec())]
        );
        assert_eq!(budget.held, 0);
    }

    #[test]
    fn test_retransmission_and_overlap_deliver_each_byte_once() {
        let (ev, r) = run(
            &[
                (1000, b"abcd"),
                (1000, b"abcd"),
                (1002, b"cdef"),
                (1004, b"efgh"),
            ],
            &mut big_budget(),
        );
        assert_eq!(joined(&ev), b"abcdefgh");
        assert_eq!(r.retransmitted_bytes, 4 + 2 + 2);
    }

    #[test]
    fn test_hole_at_end_becomes_gap() {
        let (ev, r) = run(&[(1000, b"ab"), (1005, b"fg")], &mut big_budget());
        assert_eq!(
            ev,
            vec![
                Ev::D(0, b"ab".to_vec()),
                Ev::G(2, 3),
                Ev::D(5, b"fg".to_vec())
            ]
        );
        assert_eq!((r.gaps, r.gap_bytes), (1, 3));
    }

    #[test]
    fn test_budget_exhausted_gives_up_hole_and_stays_bounded() {
        let mut budget = Budget::new(4, 1 << 20);
        let (ev, r) = run(
            &[(1000, b"ab"), (1005, b"fghij"), (1002, b"cde")],
            &mut budget,
        );
        // "fghij" did not fit: the hole was given up, and the late "cde" is a retransmission.
        assert_eq!(joined(&ev), b"ab???fghij");
        assert_eq!(budget.exhausted, 1);
        assert_eq!(budget.held, 0);
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn test_sequence_wraparound() {
        let mut r = Reassembler::default();
        let start = SeqNumber(u32::MAX - 2);
        r.start_at(start);
        let mut got = Vec::new();
        let mut budget = big_budget();
        let mut sink = |e: StreamEvent<'_>| {
            if let StreamEvent::Data { bytes, .. } = e {
                got.extend_from_slice(bytes)
            }
        };
        r.segment(SeqNumber(0), b"def", 3, seen(2), &mut budget, &mut sink);
        r.segment(start, b"abc", 3, seen(1), &mut budget, &mut sink);
        assert_eq!(got, b"abcdef");
    }

    #[test]
    fn test_snaplen_cut_payload_is_a_gap_and_stream_continues() {
        let mut r = Reassembler::default();
        r.start_at(SeqNumber(0));
        let mut out = Vec::new();
        let mut budget = big_budget();
        let mut sink = |e: StreamEvent<'_>| match e {
            StreamEvent::Data { offset, bytes, .. } => out.push(Ev::D(offset, bytes.to_vec())),
            StreamEvent::Gap { offset, len, .. } => out.push(Ev::G(offset, len)),
        };
        r.segment(SeqNumber(0), b"ab", 10, seen(1), &mut budget, &mut sink);
        r.segment(SeqNumber(10), b"z", 1, seen(2), &mut budget, &mut sink);
        assert_eq!(
            out,
            vec![
                Ev::D(0, b"ab".to_vec()),
                Ev::G(2, 8),
                Ev::D(10, b"z".to_vec())
            ]
        );
    }

    #[test]
    fn test_retransmission_with_different_bytes_is_a_conflict_first_version_kept() {
        let (ev, r) = run(
            &[(1000, b"GET /a"), (1000, b"GET /a"), (1000, b"GET /b")],
            &mut big_budget(),
        );
        assert_eq!(joined(&ev), b"GET /a");
        assert_eq!(r.conflicts, 1);
        assert_eq!(r.first_conflict_frame, Some(3));
    }

    #[test]
    fn test_implausible_jump_is_ignored() {
        let (ev, r) = run(
            &[(1000, b"ab"), (1000 + (1 << 31) - 5, b"zz")],
            &mut big_budget(),
        );
        assert_eq!(joined(&ev), b"ab");
        assert_eq!(r.implausible_segments, 1);
    }
}
