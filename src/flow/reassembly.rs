//! One direction of a TCP connection turned back into a byte stream, in the manner of smoltcp's
//! assembler. In-order bytes are handed on without copying. Bytes that arrive ahead of a hole
//! are copied into one ring buffer per direction, at their stream position, and a small fixed
//! table of contiguous runs says which positions are held. Nothing grows with the number of
//! segments: when the table is full the oldest hole is given up, and when a budget runs out
//! holes are given up from the front, each time delivering in order what was held behind the
//! hole, so held bytes are never thrown away. The first copy of a byte to arrive is the one
//! delivered; a later copy that differs is counted as a conflict.

use crate::capture::Seen;
use crate::decode::SeqNumber;

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

/// Memory held for out-of-order bytes, shared by every reassembler of a capture. What counts
/// is what is allocated: the ring (holes and snaplen-cut bytes take room in it too) and the run
/// table, not just the payload bytes.
#[derive(Debug)]
pub struct Budget {
    pub per_connection: usize,
    pub total: usize,
    pub held: usize,
    /// Times a limit forced a hole to be given up; reported in the capture's warnings.
    pub exhausted: u64,
    /// The part of `exhausted` due to a direction having more holes than runs to track them.
    pub too_many_holes: u64,
}

impl Budget {
    pub fn new(per_connection: usize, total: usize) -> Budget {
        Budget {
            per_connection,
            total,
            held: 0,
            exhausted: 0,
            too_many_holes: 0,
        }
    }
}

/// Contiguous runs of held positions per direction. Reordering by the network leaves a few
/// holes; more than this is heavy loss or a crafted capture, not worth a table that grows.
const MAX_RUNS: usize = 32;

/// The smallest ring worth allocating: one lost segment and the few behind it.
const MIN_RING: usize = 4096;

/// Stream positions from `start` to `end` that are accounted for: `[start, data_end)` was
/// captured and sits in the ring, `[data_end, end)` was sent but cut by the snaplen, a hole of
/// known length that is delivered as a gap and never filled in.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct Run {
    start: u64,
    data_end: u64,
    end: u64,
    /// The segment that brought the run's first byte; its frame is what consumers cite.
    at: Seen,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Held {
    /// Stream offset `p` lives at `ring[p % ring.len()]`. Every held position lies within one
    /// ring length of the next expected byte, so positions never collide.
    ring: Box<[u8]>,
    /// Sorted and disjoint. One over `MAX_RUNS` while an insertion is being settled.
    runs: Vec<Run>,
}

/// What a `Held` costs apart from its ring, counted against the budgets with the ring.
const TABLE_COST: usize = std::mem::size_of::<Held>() + (MAX_RUNS + 1) * std::mem::size_of::<Run>();

impl Held {
    fn new(len: usize) -> Held {
        Held {
            ring: vec![0; len].into_boxed_slice(),
            runs: Vec::with_capacity(MAX_RUNS + 1),
        }
    }

    fn end(&self) -> Option<u64> {
        self.runs.last().map(|r| r.end)
    }

    /// The held bytes at stream offsets `[from, to)`: two slices when they wrap the ring.
    fn bytes(&self, from: u64, to: u64) -> (&[u8], &[u8]) {
        let n = self.ring.len();
        let len = (to - from) as usize;
        let i = (from % n as u64) as usize;
        let first = len.min(n - i);
        (&self.ring[i..i + first], &self.ring[..len - first])
    }

    fn write(&mut self, from: u64, bytes: &[u8]) {
        let n = self.ring.len();
        let i = (from % n as u64) as usize;
        let first = bytes.len().min(n - i);
        self.ring[i..i + first].copy_from_slice(&bytes[..first]);
        self.ring[..bytes.len() - first].copy_from_slice(&bytes[first..]);
    }

    fn holds(&self, from: u64, bytes: &[u8]) -> bool {
        let (a, b) = self.bytes(from, from + bytes.len() as u64);
        a == &bytes[..a.len()] && b == &bytes[a.len()..]
    }

    /// Moves the held bytes into a ring of `len` bytes; positions map afresh.
    fn grow(&mut self, len: usize) {
        let mut bigger = Held::new(len);
        for r in &self.runs {
            let (a, b) = self.bytes(r.start, r.data_end);
            bigger.write(r.start, a);
            bigger.write(r.start + a.len() as u64, b);
        }
        self.ring = bigger.ring;
    }

    /// Joins runs that touch, keeping the first one's frame; false when none touch. A run that
    /// ends in cut bytes is not joined to the next: the gap must stay at its position.
    fn coalesce(&mut self) -> bool {
        let before = self.runs.len();
        let mut kept = 0;
        for i in 1..self.runs.len() {
            let r = self.runs[i];
            let last = &mut self.runs[kept];
            if last.end == r.start && last.data_end == last.end {
                last.data_end = r.data_end;
                last.end = r.end;
            } else {
                kept += 1;
                self.runs[kept] = r;
            }
        }
        self.runs.truncate(kept + 1);
        self.runs.len() < before
    }
}

/// A segment that starts this far past the expected sequence number is not from this stream
/// (garbage, or a sequence space we misread): it is ignored rather than opening a huge hole.
const MAX_PLAUSIBLE_JUMP: i64 = 1 << 30;

/// The first and last bytes of a recently delivered segment: enough to notice a retransmission
/// that carries different bytes than the original, without keeping the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Reassembler {
    /// The sequence number of the byte at `offset`.
    next: Option<SeqNumber>,
    offset: u64,
    /// Allocated while something is held, so an in-order connection carries none of it.
    held: Option<Box<Held>>,
    held_bytes: usize,
    pub delivered_bytes: u64,
    pub gap_bytes: u64,
    pub gaps: u32,
    pub first_gap_frame: Option<u64>,
    pub retransmitted_bytes: u64,
    pub implausible_segments: u32,
    /// Segments whose bytes differ from a copy that arrived first (compared exactly against
    /// held bytes, by sample against delivered ones); the first version is the one analyzed.
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

    /// Bytes allocated for held data (ring and run table), as counted against the budgets.
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
        let payload = &payload[..payload.len().min(wire_len as usize)];
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
        // From here on, stream offsets: they do not wrap.
        let skip = (-rel).max(0) as u64;
        self.retransmitted_bytes += skip;
        let captured = payload.get(skip as usize..).unwrap_or(&[]);
        let start = self.offset + rel.max(0) as u64;
        let end = self.offset.wrapping_add_signed(rel + wire_len as i64);
        if self.place(start, captured, end, at, budget, sink) {
            self.conflicts += 1;
            self.first_conflict_frame.get_or_insert(at.frame);
        }
        self.release_if_empty(budget);
    }

    /// Delivers or holds stream positions `[start, end)`, of which `payload` was captured;
    /// true when some of it differs from bytes already held there.
    fn place(
        &mut self,
        mut start: u64,
        mut payload: &[u8],
        end: u64,
        at: Seen,
        budget: &mut Budget,
        sink: &mut dyn FnMut(StreamEvent<'_>),
    ) -> bool {
        let mut over_budget = false;
        loop {
            // Held runs delivered below may have carried the stream past part of this segment.
            if end <= self.offset {
                self.retransmitted_bytes += end - start;
                return false;
            }
            if start < self.offset {
                let skip = self.offset - start;
                self.retransmitted_bytes += skip;
                payload = payload.get(skip as usize..).unwrap_or(&[]);
                start = self.offset;
            }
            let first_held = self
                .held
                .as_ref()
                .and_then(|h| h.runs.first())
                .map(|r| r.start);
            if start == self.offset {
                // The hot path: what comes before any held byte is passed on from the segment.
                let upto = first_held.map_or(end, |f| f.min(end));
                let (now, rest) = payload.split_at(payload.len().min((upto - start) as usize));
                self.deliver(now, upto - start, at, sink);
                if upto == end {
                    if let Some(mut h) = self.held.take() {
                        self.drain(&mut h, sink);
                        self.held = Some(h);
                    }
                    return false;
                }
                // The rest overlaps held bytes: compared with them, and merged below.
                payload = rest;
                start = upto;
            }
            let held_end = self.held.as_ref().and_then(|h| h.end()).unwrap_or(0);
            if self.reserve(end.max(held_end) - self.offset, budget)
                && let Some(mut h) = self.held.take()
            {
                let conflict = self.insert(&mut h, start, payload, end, at, budget, sink);
                self.drain(&mut h, sink);
                self.held = Some(h);
                return conflict;
            }
            if !over_budget {
                over_budget = true;
                budget.exhausted += 1;
            }
            match self.held.take() {
                Some(mut h) if !h.runs.is_empty() => {
                    // Stop the gap where this segment starts: its bytes are not given up.
                    self.give_up_hole(&mut h, start, sink);
                    self.held = Some(h);
                }
                held => {
                    self.held = held;
                    self.gap(start - self.offset, at, sink);
                    self.deliver(payload, end - start, at, sink);
                    return false;
                }
            }
        }
    }

    /// Makes the ring at least `len` bytes long, if the budgets allow it.
    fn reserve(&mut self, len: u64, budget: &mut Budget) -> bool {
        let have = self.held.as_ref().map_or(0, |h| h.ring.len());
        if len <= have as u64 {
            return true;
        }
        let others = budget.held.saturating_sub(self.held_bytes);
        let limit = budget
            .per_connection
            .min(budget.total.saturating_sub(others));
        let room = limit.saturating_sub(TABLE_COST);
        if len > room as u64 {
            return false;
        }
        // Doubling keeps the copying on growth linear in what is held.
        let len = (len as usize).max(have * 2).max(MIN_RING).min(room);
        match &mut self.held {
            Some(h) => h.grow(len),
            None => self.held = Some(Box::new(Held::new(len))),
        }
        budget.held = others + len + TABLE_COST;
        self.held_bytes = len + TABLE_COST;
        true
    }

    fn release_if_empty(&mut self, budget: &mut Budget) {
        if self.held.as_ref().is_some_and(|h| h.runs.is_empty()) {
            self.held = None;
            budget.held = budget.held.saturating_sub(self.held_bytes);
            self.held_bytes = 0;
        }
    }

    /// Copies positions `[start, end)` not yet held into the ring; positions already held keep
    /// their first version. True when an overlap differs.
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        h: &mut Held,
        start: u64,
        payload: &[u8],
        end: u64,
        at: Seen,
        budget: &mut Budget,
        sink: &mut dyn FnMut(StreamEvent<'_>),
    ) -> bool {
        let data_end = start + payload.len() as u64;
        let mut conflict = false;
        let mut pos = start;
        while pos < end {
            let i = h.runs.partition_point(|r| r.end <= pos);
            let after = h.runs.get(i).copied();
            match after {
                Some(r) if r.start <= pos => {
                    let to = r.end.min(end);
                    let compared = to.min(r.data_end).min(data_end);
                    if pos < compared {
                        let ours = &payload[(pos - start) as usize..(compared - start) as usize];
                        conflict |= !h.holds(pos, ours);
                    }
                    self.retransmitted_bytes += to - pos;
                    pos = to;
                }
                _ => {
                    let to = after.map_or(end, |r| r.start.min(end));
                    let captured_to = to.min(data_end).max(pos);
                    if captured_to > pos {
                        h.write(
                            pos,
                            &payload[(pos - start) as usize..(captured_to - start) as usize],
                        );
                    }
                    h.runs.insert(
                        i,
                        Run {
                            start: pos,
                            data_end: captured_to,
                            end: to,
                            at,
                        },
                    );
                    pos = to;
                    if h.runs.len() > MAX_RUNS && !h.coalesce() {
                        // Every run is cut off from the next by a hole: the oldest goes. The
                        // rest of this segment lies beyond the run just added, so none of it
                        // is in the hole given up; what the delivery passed was held already.
                        budget.exhausted += 1;
                        budget.too_many_holes += 1;
                        self.give_up_hole(h, u64::MAX, sink);
                        if pos < self.offset {
                            self.retransmitted_bytes += self.offset.min(end) - pos;
                            pos = self.offset;
                        }
                    }
                }
            }
        }
        conflict
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
        self.finish_at(None, Seen::default(), budget, sink);
    }

    /// Ends the stream at `end`, the sequence number its FIN (or the receiver's last ACK) shows
    /// the sender had reached: bytes up to it that the capture never held are a gap at the end,
    /// not a stream that simply stopped.
    pub fn finish_at(
        &mut self,
        end: Option<SeqNumber>,
        at: Seen,
        budget: &mut Budget,
        sink: &mut dyn FnMut(StreamEvent<'_>),
    ) {
        if let Some(mut h) = self.held.take() {
            while !h.runs.is_empty() {
                self.give_up_hole(&mut h, u64::MAX, sink);
            }
            self.held = Some(h);
        }
        self.release_if_empty(budget);
        if let (Some(end), Some(next)) = (end, self.next) {
            let missing = end.diff(next);
            if (1..=MAX_PLAUSIBLE_JUMP).contains(&missing) {
                self.gap(missing as u64, at, sink);
            }
        }
    }

    /// The receiver acknowledged every byte before `ack`: a hole below it will never fill (the
    /// bytes passed the capture point unseen), so what is held behind it goes on now instead of
    /// waiting for the connection's end, when the other direction has long moved on.
    pub fn acknowledged(
        &mut self,
        ack: SeqNumber,
        budget: &mut Budget,
        sink: &mut dyn FnMut(StreamEvent<'_>),
    ) {
        let Some(next) = self.next else { return };
        let rel = ack.diff(next);
        if !(1..=MAX_PLAUSIBLE_JUMP).contains(&rel) {
            return;
        }
        let acked = self.offset + rel as u64;
        if let Some(mut h) = self.held.take() {
            while h.runs.first().is_some_and(|r| r.start <= acked) {
                self.give_up_hole(&mut h, u64::MAX, sink);
            }
            self.held = Some(h);
        }
        self.release_if_empty(budget);
    }

    /// Gives up the hole before the first run, or its part before `upto`, as a gap; then
    /// delivers the runs it held back.
    fn give_up_hole(&mut self, h: &mut Held, upto: u64, sink: &mut dyn FnMut(StreamEvent<'_>)) {
        let Some(first) = h.runs.first().copied() else {
            return;
        };
        let to = first.start.min(upto);
        if to > self.offset {
            self.gap(to - self.offset, first.at, sink);
        }
        self.drain(h, sink);
    }

    /// Delivers the runs that start at the next expected byte, and those that follow them
    /// without a hole.
    fn drain(&mut self, h: &mut Held, sink: &mut dyn FnMut(StreamEvent<'_>)) {
        let mut done = 0;
        while let Some(r) = h.runs.get(done).copied()
            && r.start == self.offset
        {
            let (a, b) = h.bytes(r.start, r.data_end);
            self.deliver(a, a.len() as u64, r.at, sink);
            self.deliver(b, r.end - r.start - a.len() as u64, r.at, sink);
            done += 1;
        }
        h.runs.drain(..done);
    }

    /// Passes on `captured`, the first bytes of the next `on_wire` stream bytes; the rest was
    /// cut by the snaplen and becomes a gap.
    fn deliver(
        &mut self,
        captured: &[u8],
        on_wire: u64,
        at: Seen,
        sink: &mut dyn FnMut(StreamEvent<'_>),
    ) {
        if !captured.is_empty() {
            sink(StreamEvent::Data {
                offset: self.offset,
                bytes: captured,
                at,
            });
            self.advance(captured.len() as u64);
            self.delivered_bytes += captured.len() as u64;
        }
        self.gap(on_wire - captured.len() as u64, at, sink);
    }

    fn gap(&mut self, len: u64, at: Seen, sink: &mut dyn FnMut(StreamEvent<'_>)) {
        if len == 0 {
            return;
        }
        sink(StreamEvent::Gap {
            offset: self.offset,
            len,
            at,
        });
        self.advance(len);
        self.gap_bytes += len;
        self.gaps += 1;
        self.first_gap_frame.get_or_insert(at.frame);
    }

    fn advance(&mut self, len: u64) {
        self.offset += len;
        let next = self.next.unwrap_or_default();
        self.next = Some(next.plus(len as u32));
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::capture::Timestamp;
    use proptest::prelude::*;

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

    /// A reassembler with its own budget, recording what it delivers.
    struct Feed {
        r: Reassembler,
        budget: Budget,
        out: Vec<Ev>,
        frame: u64,
    }

    impl Feed {
        fn new(isn: u32, budget: Budget) -> Feed {
            let mut r = Reassembler::default();
            r.start_at(SeqNumber(isn));
            Feed {
                r,
                budget,
                out: Vec::new(),
                frame: 0,
            }
        }

        fn sink(out: &mut Vec<Ev>) -> impl FnMut(StreamEvent<'_>) + '_ {
            |e| match e {
                StreamEvent::Data { offset, bytes, .. } => out.push(Ev::D(offset, bytes.to_vec())),
                StreamEvent::Gap { offset, len, .. } => out.push(Ev::G(offset, len)),
            }
        }

        fn cut(&mut self, seq: u32, data: &[u8], wire: u32) {
            self.frame += 1;
            let mut sink = Feed::sink(&mut self.out);
            let at = seen(self.frame);
            self.r
                .segment(SeqNumber(seq), data, wire, at, &mut self.budget, &mut sink);
            assert!(self.r.held_bytes() <= self.budget.per_connection);
            assert!(self.budget.held <= self.budget.total);
        }

        fn seg(&mut self, seq: u32, data: &[u8]) {
            self.cut(seq, data, data.len() as u32);
        }

        fn finish(&mut self) {
            let mut sink = Feed::sink(&mut self.out);
            self.r.finish(&mut self.budget, &mut sink);
            assert_eq!(self.r.held_bytes(), 0);
        }

        fn runs(&self) -> usize {
            self.r.held.as_ref().map_or(0, |h| h.runs.len())
        }
    }

    /// The heap the held state really occupies, to check the accounting against.
    fn allocated(r: &Reassembler) -> usize {
        r.held.as_ref().map_or(0, |h| {
            h.ring.len() + h.runs.capacity() * std::mem::size_of::<Run>() + size_of::<Held>()
        })
    }

    /// Room for `ring` bytes of held stream and nothing more.
    fn budget_for_ring(ring: usize) -> Budget {
        Budget::new(TABLE_COST + ring, 1 << 24)
    }

    #[test]
    fn test_in_order_data_borrows_the_payload() {
        let mut r = Reassembler::default();
        r.start_at(SeqNumber(0));
        let mut budget = big_budget();
        let (first, later) = (b"abc".to_vec(), b"xyz".to_vec());
        let mut ptrs = Vec::new();
        let mut sink = |e: StreamEvent<'_>| {
            if let StreamEvent::Data { bytes, .. } = e {
                ptrs.push(bytes.as_ptr())
            }
        };
        r.segment(SeqNumber(10), &later, 3, seen(1), &mut budget, &mut sink);
        // In order while something is held further on: still passed on from the segment.
        r.segment(SeqNumber(0), &first, 3, seen(2), &mut budget, &mut sink);
        assert_eq!(ptrs, vec![first.as_ptr()]);
    }

    #[test]
    fn test_reverse_order_runs_coalesce_and_no_hole_is_given_up() {
        let data: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        let mut f = Feed::new(1000, big_budget());
        for i in (0..200u32).rev() {
            f.seg(1000 + i, &data[i as usize..i as usize + 1]);
            assert!(f.runs() <= MAX_RUNS);
        }
        f.finish();
        assert_eq!(joined(&f.out), data);
        assert_eq!((f.r.gaps, f.budget.exhausted), (0, 0));
    }

    #[test]
    fn test_too_many_holes_gives_up_the_oldest_hole() {
        let data: Vec<u8> = (0..66u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut f = Feed::new(1000, big_budget());
        // Bytes 1, 3, 5, ...: one hole before each; the 33rd hole is one too many.
        for i in (1..66u32).step_by(2) {
            f.seg(1000 + i, &data[i as usize..i as usize + 1]);
        }
        assert_eq!(f.out, vec![Ev::G(0, 1), Ev::D(1, vec![data[1]])]);
        assert_eq!(f.runs(), MAX_RUNS);
        assert_eq!((f.budget.too_many_holes, f.budget.exhausted), (1, 1));
        // The holes still open fill as usual; byte 0 is behind the stream now.
        for i in (0..66u32).step_by(2) {
            f.seg(1000 + i, &data[i as usize..i as usize + 1]);
        }
        f.finish();
        let mut expected = data.clone();
        expected[0] = b'?';
        assert_eq!(joined(&f.out), expected);
        assert_eq!((f.r.gaps, f.r.gap_bytes), (1, 1));
        assert_eq!(f.budget.held, 0);
    }

    #[test]
    fn test_snaplen_cut_held_segment_is_a_gap_of_known_length_at_its_position() {
        let mut f = Feed::new(1000, big_budget());
        f.cut(1005, b"fg", 5);
        f.seg(1010, b"k");
        // A full copy of the cut segment: the first arrival said those bytes were not
        // captured, and a gap is what is delivered there, whatever comes later.
        f.seg(1005, b"fgHIJ");
        f.seg(1000, b"abcde");
        assert_eq!(
            f.out,
            vec![
                Ev::D(0, b"abcde".to_vec()),
                Ev::D(5, b"fg".to_vec()),
                Ev::G(7, 3),
                Ev::D(10, b"k".to_vec()),
            ]
        );
        assert_eq!((f.r.gaps, f.r.gap_bytes, f.r.conflicts), (1, 3, 0));
    }

    #[test]
    fn test_cut_runs_do_not_coalesce_so_their_gaps_stay_in_place() {
        let mut f = Feed::new(0, big_budget());
        // Forty snaplen-cut segments behind a hole: more runs than the table has, and none
        // can be joined, so the hole goes, and each cut is still a gap at its own position.
        for i in 1..=40u32 {
            f.cut(i * 10, b"ab", 10);
        }
        f.finish();
        let mut expected = vec![Ev::G(0, 10)];
        for i in 1..=40u64 {
            expected.push(Ev::D(i * 10, b"ab".to_vec()));
            expected.push(Ev::G(i * 10 + 2, 8));
        }
        assert_eq!(f.out, expected);
    }

    #[test]
    fn regression_ooo_budget_exhaustion_keeps_held_data() {
        // Out-of-order budget exhaustion used to give up everything up to the new segment,
        // throwing away the held "fgh".
        let mut f = Feed::new(1000, budget_for_ring(16));
        f.seg(1000, b"ab");
        f.seg(1005, b"fgh");
        f.seg(1020, b"zz");
        f.finish();
        assert_eq!(
            f.out,
            vec![
                Ev::D(0, b"ab".to_vec()),
                Ev::G(2, 3),
                Ev::D(5, b"fgh".to_vec()),
                Ev::G(8, 12),
                Ev::D(20, b"zz".to_vec()),
            ]
        );
        assert_eq!(f.budget.exhausted, 1);
        assert_eq!(f.budget.held, 0);
    }

    #[test]
    fn test_budget_exhaustion_gives_up_no_byte_of_the_segment() {
        let mut f = Feed::new(0, budget_for_ring(16));
        f.seg(0, b"ab");
        f.seg(10, b"kl");
        // Does not fit: only the hole before it is given up, then it is in order.
        let long: Vec<u8> = (b'f'..=b'y').collect();
        f.seg(5, &long);
        f.finish();
        let mut expected = b"ab???".to_vec();
        expected.extend(&long);
        assert_eq!(joined(&f.out), expected);
        assert_eq!((f.r.gaps, f.r.gap_bytes, f.budget.exhausted), (1, 3, 1));
    }

    #[test]
    fn test_total_budget_is_shared_and_exhaustion_keeps_others_data() {
        let mut budget = Budget::new(1 << 20, TABLE_COST + MIN_RING + 100);
        let (mut a, mut b) = (Reassembler::default(), Reassembler::default());
        a.start_at(SeqNumber(0));
        b.start_at(SeqNumber(0));
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        a.segment(
            SeqNumber(5),
            b"held",
            4,
            seen(1),
            &mut budget,
            &mut Feed::sink(&mut out_a),
        );
        assert_eq!(budget.held, a.held_bytes());
        b.segment(
            SeqNumber(5),
            b"late",
            4,
            seen(2),
            &mut budget,
            &mut Feed::sink(&mut out_b),
        );
        assert_eq!(out_b, vec![Ev::G(0, 5), Ev::D(5, b"late".to_vec())]);
        assert_eq!(budget.exhausted, 1);
        a.segment(
            SeqNumber(0),
            b"still",
            5,
            seen(3),
            &mut budget,
            &mut Feed::sink(&mut out_a),
        );
        assert_eq!(joined(&out_a), b"stillheld");
        assert_eq!(budget.held, 0);
    }

    #[test]
    fn regression_held_overlap_first_arrival_wins() {
        // Held overlaps used to be won by whichever copy started earlier in sequence space.
        let mut f = Feed::new(1000, big_budget());
        f.seg(1003, b"de");
        f.seg(1002, b"CD");
        f.seg(1000, b"ab");
        f.finish();
        assert_eq!(joined(&f.out), b"abCde");
        assert_eq!(f.r.conflicts, 1);
        assert_eq!(f.r.first_conflict_frame, Some(2));
        assert_eq!(f.r.retransmitted_bytes, 1);
    }

    #[test]
    fn test_in_order_segment_over_held_bytes_keeps_held_version() {
        let mut f = Feed::new(1000, big_budget());
        f.seg(1002, b"cd");
        f.seg(1000, b"abXYef");
        f.seg(1003, b"d");
        f.finish();
        assert_eq!(joined(&f.out), b"abcdef");
        assert_eq!((f.r.conflicts, f.r.first_conflict_frame), (1, Some(2)));
    }

    #[test]
    fn test_held_duplicate_with_same_bytes_is_no_conflict() {
        let mut f = Feed::new(1000, big_budget());
        f.seg(1002, b"cdef");
        f.seg(1002, b"cdef");
        f.seg(1004, b"efgh");
        f.seg(1000, b"ab");
        f.finish();
        assert_eq!(joined(&f.out), b"abcdefgh");
        assert_eq!(f.r.conflicts, 0);
        assert_eq!(f.r.retransmitted_bytes, 4 + 2);
    }

    #[test]
    fn test_ring_growth_keeps_held_bytes_that_wrap() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let chunk = |c: usize| &data[c * 100..c * 100 + 100];
        let mut f = Feed::new(7, big_budget());
        // Two holes, at chunks 0 and 30. Filling the first moves the stream into the ring's
        // second lap, and what follows the second hole then outgrows the ring.
        let order = (1..40)
            .filter(|&c| c != 30)
            .chain([0])
            .chain(40..100)
            .chain([30]);
        let mut peak = 0;
        for c in order {
            f.seg(7 + c as u32 * 100, chunk(c));
            peak = peak.max(f.r.held_bytes());
        }
        f.finish();
        assert!(peak > TABLE_COST + MIN_RING);
        assert_eq!(joined(&f.out), data);
        assert_eq!(f.r.gaps, 0);
    }

    #[test]
    fn regression_one_byte_segments_within_budget() {
        // A million one-byte out-of-order segments under a 1 MiB budget used to cost about
        // 82 MB: each held segment's own allocation was not counted, only its payload byte.
        const N: u32 = 1_000_000;
        let byte = |i: u32| [(i % 253) as u8];
        for every_other in [false, true] {
            let budget = Budget::new(1 << 20, 1 << 24);
            let mut r = Reassembler::default();
            r.start_at(SeqNumber(0));
            let (mut budget, mut peak, mut covered, mut wrong) = (budget, 0, 0u64, 0u64);
            let mut sink = |e: StreamEvent<'_>| match e {
                StreamEvent::Data { offset, bytes, .. } => {
                    for (i, b) in bytes.iter().enumerate() {
                        wrong += ([*b] != byte(offset as u32 + i as u32)) as u64;
                    }
                    covered += bytes.len() as u64;
                }
                StreamEvent::Gap { len, .. } => covered += len,
            };
            let order: Box<dyn Iterator<Item = u32>> = if every_other {
                Box::new((1..N).step_by(2).chain((0..N).step_by(2)))
            } else {
                Box::new((0..N).rev())
            };
            for i in order {
                r.segment(SeqNumber(i), &byte(i), 1, seen(1), &mut budget, &mut sink);
                assert!(allocated(&r) <= r.held_bytes());
                assert!(r.held_bytes() <= budget.per_connection);
                peak = peak.max(r.held_bytes());
            }
            r.finish(&mut budget, &mut sink);
            assert_eq!((covered, wrong, budget.held), (N as u64, 0, 0));
            if !every_other {
                // The whole reverse-order stream fits the budget: nothing given up.
                assert_eq!(r.gaps, 0);
                assert!(peak > N as usize);
            }
        }
    }

    /// A stream cut into pieces that cover it, plus copies of parts of it, in any order.
    fn pieces(len: usize) -> impl Strategy<Value = (Vec<(usize, usize)>, Vec<u32>)> {
        let cuts = proptest::collection::vec(1..len.max(2), 0..15);
        let extras = proptest::collection::vec((0..len, 0..len), 0..16);
        let keys = proptest::collection::vec(any::<u32>(), 32);
        (cuts, extras, keys).prop_map(move |(mut cuts, extras, keys)| {
            cuts.push(0);
            cuts.push(len);
            cuts.sort();
            cuts.dedup();
            let mut p: Vec<(usize, usize)> = cuts.windows(2).map(|w| (w[0], w[1])).collect();
            p.extend(extras.into_iter().map(|(a, b)| (a.min(b), a.max(b) + 1)));
            (p, keys)
        })
    }

    fn stream_byte(isn: u32, offset: u64) -> u8 {
        (isn as u64).wrapping_add(offset.wrapping_mul(131)) as u8 ^ (offset >> 8) as u8
    }

    proptest! {
        #[test]
        fn prop_any_order_with_room_delivers_the_stream_once(
            isn in any::<u32>(),
            (len, (mut p, keys)) in (1usize..400).prop_flat_map(|len| (Just(len), pieces(len))),
        ) {
            let data: Vec<u8> = (0..len as u64).map(|o| stream_byte(isn, o)).collect();
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by_key(|&i| keys[i % keys.len()].wrapping_mul(i as u32 + 1));
            p = order.into_iter().map(|i| p[i]).collect();
            let mut f = Feed::new(isn, big_budget());
            for (a, b) in p {
                f.seg(isn.wrapping_add(a as u32), &data[a..b]);
            }
            f.finish();
            let mut at = 0;
            for e in &f.out {
                match e {
                    Ev::D(o, d) => { prop_assert_eq!(*o, at); at += d.len() as u64; }
                    Ev::G(..) => prop_assert!(false, "gap in {:?}", f.out),
                }
            }
            prop_assert_eq!(joined(&f.out), data);
            prop_assert_eq!(f.r.conflicts, 0);
            prop_assert_eq!(f.budget.held, 0);
        }

        #[test]
        fn prop_small_budget_covers_each_offset_once_in_order(
            isn in any::<u32>(),
            ring in 0usize..600,
            segs in proptest::collection::vec((0u64..500, 0usize..60, 0u32..20), 0..80),
        ) {
            let mut f = Feed::new(isn, budget_for_ring(ring));
            let mut captured = vec![false; 600];
            let mut end = 0;
            for &(start, len, cut) in &segs {
                let data: Vec<u8> = (start..start + len as u64).map(|o| stream_byte(isn, o)).collect();
                f.cut(isn.wrapping_add(start as u32), &data, len as u32 + cut);
                prop_assert!(f.runs() <= MAX_RUNS);
                prop_assert!(allocated(&f.r) <= f.r.held_bytes());
                captured[start as usize..start as usize + len].fill(true);
                if len as u32 + cut > 0 {
                    end = end.max(start + len as u64 + cut as u64);
                }
            }
            f.finish();
            let mut at = 0;
            for e in &f.out {
                match e {
                    Ev::D(o, d) => {
                        prop_assert_eq!(*o, at);
                        for (i, b) in d.iter().enumerate() {
                            let o = at + i as u64;
                            // Never fabricated: a captured byte, and the right one.
                            prop_assert!(captured[o as usize]);
                            prop_assert_eq!(*b, stream_byte(isn, o));
                        }
                        at += d.len() as u64;
                    }
                    Ev::G(o, n) => {
                        prop_assert_eq!(*o, at);
                        prop_assert!(*n > 0);
                        at += n;
                    }
                }
            }
            prop_assert_eq!(at, end);
            prop_assert_eq!(f.r.offset(), end);
            prop_assert_eq!(f.budget.held, 0);
        }
    }

    #[test]
    fn regression_hole_acknowledged_by_the_receiver_is_given_up_at_once() {
        let mut r = Reassembler::default();
        r.start_at(SeqNumber(0));
        let mut budget = Budget::new(1 << 20, 1 << 24);
        let mut out = Vec::new();
        let mut sink = |e: StreamEvent<'_>| match e {
            StreamEvent::Data { offset, bytes, .. } => out.push(Ev::D(offset, bytes.to_vec())),
            StreamEvent::Gap { offset, len, .. } => out.push(Ev::G(offset, len)),
        };
        r.segment(SeqNumber(0), b"ab", 2, seen(1), &mut budget, &mut sink);
        r.segment(SeqNumber(5), b"fg", 2, seen(2), &mut budget, &mut sink);
        // An ACK short of the held run changes nothing; one past the hole gives it up.
        r.acknowledged(SeqNumber(4), &mut budget, &mut sink);
        r.acknowledged(SeqNumber(6), &mut budget, &mut sink);
        assert_eq!(
            out,
            vec![
                Ev::D(0, b"ab".to_vec()),
                Ev::G(2, 3),
                Ev::D(5, b"fg".to_vec())
            ]
        );
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn regression_stream_end_beyond_captured_bytes_is_a_gap() {
        let mut r = Reassembler::default();
        r.start_at(SeqNumber(0));
        let mut budget = Budget::new(1 << 20, 1 << 24);
        let mut out = Vec::new();
        let mut sink = |e: StreamEvent<'_>| match e {
            StreamEvent::Data { offset, bytes, .. } => out.push(Ev::D(offset, bytes.to_vec())),
            StreamEvent::Gap { offset, len, .. } => out.push(Ev::G(offset, len)),
        };
        r.segment(SeqNumber(0), b"ab", 2, seen(1), &mut budget, &mut sink);
        r.finish_at(Some(SeqNumber(10)), seen(2), &mut budget, &mut sink);
        assert_eq!(out, vec![Ev::D(0, b"ab".to_vec()), Ev::G(2, 8)]);
    }
}
