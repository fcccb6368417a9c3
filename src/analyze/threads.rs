//! One capture on several threads. A reader decodes each frame and hands the packet to the
//! worker that owns its connection (a symmetric hash of the endpoints; ICMP by the connection it
//! quotes), as Suricata's flow-hash load balancing and a Zeek cluster's workers do. Each worker
//! runs a [`Shard`] and records what it produces. The calling thread merges the recordings in
//! capture order and judges them, so the detectors see exactly the sequence of events one thread
//! would have produced, and the report is the same for any number of workers.
//!
//! Work moves in rounds of frames. Every worker gets every round, with the time of every frame
//! in it, so a worker with no packets of its own still advances capture time and finalizes its
//! idle connections at the same frame as a single thread would. Rounds pass through bounded
//! queues, so memory stays a few rounds' worth beyond what the shards hold.

use super::shard::{Judge, Moment, Shard};
use super::{Intake, read_parts};
use crate::capture::{CaptureReader, Frame, LinkType, Timestamp, Warnings};
use crate::decode::{self, TooBig, Transport};
use crate::flow::{ConnRef, Connection, Finalize, Seen, flow_hash};
use crate::proto::App;
use crate::proto::http::{FlawAt, HttpEvent, Transaction};
use crate::report::CapturePart;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Frames per round: enough that handing a round over costs little next to analyzing it, few
/// enough that the rounds in flight stay small.
const ROUND_FRAMES: usize = 1024;

/// Bytes of frames in a round, at most (one frame more can pass it): on bulk traffic 1,024
/// full-size frames would be 1.5 MB a round, and the rounds in flight and their spare buffers
/// would hold several times that, more than a thread's share of the analysis needs.
const ROUND_BYTES: usize = 256 << 10;

/// Rounds queued between the reader and a worker, and between a worker and the merge.
const QUEUED_ROUNDS: usize = 2;

/// No worker: the frame only moves the clock.
const NOBODY: u16 = u16::MAX;

/// One frame of a round, as every worker sees it.
#[derive(Clone, Copy)]
struct Entry {
    number: u64,
    ts: Timestamp,
    link_type: LinkType,
    orig_len: u32,
    /// The worker that analyzes it.
    owner: u16,
    /// A TCP segment: every table's clock advances with it.
    tcp: bool,
    /// Where its bytes are in the owner's round buffer.
    start: u32,
    len: u32,
}

struct Round {
    entries: Arc<Vec<Entry>>,
    /// The bytes of this worker's frames.
    data: Vec<u8>,
}

/// Where an event falls in the order a single thread would have produced it: by the frame
/// being processed; at one frame, connections that expired (by deadline, then first frame)
/// before the frame's own packet; at the end, by first frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Order {
    frame: u64,
    phase: Phase,
    when: Timestamp,
    first: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Phase {
    Expired,
    Packet,
}

impl Order {
    fn packet(frame: u64) -> Order {
        Order {
            frame,
            phase: Phase::Packet,
            when: Timestamp(0),
            first: 0,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Owned {
    Done(ConnRef, Box<Transaction>),
    Flaw(ConnRef, Box<FlawAt>, Option<Box<Transaction>>),
    Finalized(Box<Connection>, Option<App>),
    TooBig(TooBig, Seen),
}

/// A worker's event with its place in capture order: what a shard report (`--shard`) holds, one
/// per line.
#[derive(Serialize, Deserialize)]
pub(crate) struct Recorded {
    order: Order,
    moment: Moment,
    event: Owned,
}

/// A worker's judge: keeps what its shard produced, in order, for the merge.
struct Recorder {
    frame: u64,
    order: Order,
    out: Vec<Recorded>,
    /// At the end of the capture: where to send what is recorded as it grows, so finalizing
    /// every connection still open (a SYN flood's million) is never all held at once.
    flush_to: Option<SyncSender<Output>>,
}

impl Recorder {
    fn at_frame(&mut self, frame: u64) {
        self.frame = frame;
        self.order = Order::packet(frame);
    }

    fn push(&mut self, moment: Moment, event: Owned) {
        self.out.push(Recorded {
            order: self.order,
            moment,
            event,
        });
        if let Some(tx) = &self.flush_to
            && self.out.len() >= ROUND_FRAMES
        {
            // A closed channel means the merge has stopped; what is left is dropped.
            let _ = tx.send(Output::End(std::mem::take(&mut self.out)));
        }
    }
}

impl Judge for Recorder {
    fn http(&mut self, conn: ConnRef, event: HttpEvent<'_>, at: Moment) {
        let owned = match event {
            HttpEvent::Done(t) => Owned::Done(conn, Box::new(t.clone())),
            HttpEvent::Flaw { flaw, last } => Owned::Flaw(
                conn,
                Box::new(flaw.clone()),
                last.map(|t| Box::new(t.clone())),
            ),
        };
        self.push(at, owned);
    }

    fn finalizing(&mut self, conn: &Connection, why: Finalize) {
        self.order = match why {
            Finalize::Expired => Order {
                frame: self.frame,
                phase: Phase::Expired,
                when: conn.deadline(),
                first: conn.first.frame,
            },
            Finalize::ByPacket => Order::packet(self.frame),
            Finalize::AtEnd => Order {
                frame: u64::MAX,
                phase: Phase::Expired,
                when: Timestamp(0),
                first: conn.first.frame,
            },
        };
    }

    fn finalized(&mut self, conn: Connection, app: Option<App>, at: Moment) {
        self.push(at, Owned::Finalized(Box::new(conn), app));
        self.order = Order::packet(self.frame);
    }

    fn unmatched_too_big(&mut self, msg: &TooBig, at: Seen, moment: Moment) {
        self.push(moment, Owned::TooBig(*msg, at));
    }
}

/// Hands a recorded event to the judge, as if the shard had produced it there.
pub(crate) fn replay(recorded: Recorded, judge: &mut impl Judge) {
    let Recorded { event, moment, .. } = recorded;
    match event {
        Owned::Done(conn, t) => judge.http(conn, HttpEvent::Done(&t), moment),
        Owned::Flaw(conn, flaw, last) => judge.http(
            conn,
            HttpEvent::Flaw {
                flaw: &flaw,
                last: last.as_deref(),
            },
            moment,
        ),
        Owned::Finalized(conn, app) => judge.finalized(*conn, app, moment),
        Owned::TooBig(msg, at) => judge.unmatched_too_big(&msg, at, moment),
    }
}

enum Output {
    Round(Vec<Recorded>),
    /// What finalizing the connections open at the end produced, in one or more parts.
    End(Vec<Recorded>),
    Done(Box<Shard>),
}

/// Which share of a capture's connections a run analyzes (`--shard I/N`): those whose hash
/// falls in share `index` of `count`, counted from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    pub index: u32,
    pub count: u32,
}

impl ShardSpec {
    /// Every connection.
    pub const WHOLE: ShardSpec = ShardSpec { index: 0, count: 1 };
}

/// Shards are named as the flag gives them: `I/N`, I counted from 1.
impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index + 1, self.count)
    }
}

impl std::str::FromStr for ShardSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<ShardSpec, String> {
        let bad = || format!("{s:?}: give the shard as I/N, I from 1 to N (for example 2/4)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (i, n): (u32, u32) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || i == 0 || i > n {
            return Err(bad());
        }
        Ok(ShardSpec {
            index: i - 1,
            count: n,
        })
    }
}

/// Which worker analyzes a decoded packet; `None` when no table of this run needs it. Of a
/// connection's hash, the remainder by the shard count picks the shard and the quotient the
/// worker, so a shard's workers share its connections as evenly as a whole run's do.
fn owner(
    transport: &Transport<'_>,
    src: SocketAddr,
    dst: SocketAddr,
    n: usize,
    spec: ShardSpec,
) -> Option<usize> {
    let count = u64::from(spec.count.max(1));
    let of = |a, b| {
        let h = flow_hash(a, b);
        if count == 1 {
            // A whole run, on every packet: no division by the shard count.
            return Some((h % n as u64) as usize);
        }
        (h % count == u64::from(spec.index)).then_some(((h / count) % n as u64) as usize)
    };
    match transport {
        Transport::Tcp(_) => of(src, dst),
        Transport::TooBig(m) if m.quoted_tcp => of(m.quoted_src, m.quoted_dst),
        // Judged without a connection: any one worker of the first shard will do, always the
        // same one.
        Transport::TooBig(_) => (spec.index == 0).then_some(0),
        Transport::Unreachable(m) if m.quoted_tcp => of(m.quoted_src, m.quoted_dst),
        _ => None,
    }
}

fn worker(
    mut shard: Box<Shard>,
    me: u16,
    rounds: Receiver<Round>,
    out: SyncSender<Output>,
    spent: SyncSender<Vec<u8>>,
) {
    let mut recorder = Recorder {
        frame: 0,
        order: Order::packet(0),
        out: Vec::new(),
        flush_to: None,
    };
    for round in rounds {
        for e in round.entries.iter() {
            shard.clock(e.ts);
            if e.owner == me {
                let data = &round.data[e.start as usize..(e.start + e.len) as usize];
                let frame = Frame {
                    number: e.number,
                    ts: e.ts,
                    link_type: e.link_type,
                    data,
                    orig_len: e.orig_len,
                };
                recorder.at_frame(e.number);
                // The reader decoded the same bytes already; it counted any failure.
                if let Ok(Some(packet)) = decode::decode(&frame) {
                    shard.on_packet(&frame, packet, &mut recorder);
                }
            } else if e.tcp {
                recorder.at_frame(e.number);
                shard.advance(e.ts, &mut recorder);
            }
        }
        let _ = spent.try_send(round.data);
        // The next round likely records about as much: start it at this one's size rather
        // than growing (and moving) it from nothing.
        let size = recorder.out.len();
        let recorded = std::mem::replace(&mut recorder.out, Vec::with_capacity(size));
        if out.send(Output::Round(recorded)).is_err() {
            return;
        }
    }
    recorder.at_frame(u64::MAX);
    recorder.flush_to = Some(out.clone());
    shard.finish(&mut recorder);
    recorder.flush_to = None;
    let _ = out.send(Output::End(std::mem::take(&mut recorder.out)));
    let _ = out.send(Output::Done(shard));
}

/// The reader's side: frames into rounds, each worker's packets into its buffer.
struct Dealer {
    senders: Vec<SyncSender<Round>>,
    spent: Receiver<Vec<u8>>,
    entries: Vec<Entry>,
    data: Vec<Vec<u8>>,
    /// Bytes in this round's buffers.
    bytes: usize,
}

impl Dealer {
    fn deal(&mut self, frame: &Frame<'_>, owner: Option<usize>, tcp: bool) {
        let (owner, start) = match owner {
            Some(w) => {
                let buf = &mut self.data[w];
                let start = buf.len() as u32;
                buf.extend_from_slice(frame.data);
                self.bytes += frame.data.len();
                (w as u16, start)
            }
            None => (NOBODY, 0),
        };
        self.entries.push(Entry {
            number: frame.number,
            ts: frame.ts,
            link_type: frame.link_type,
            orig_len: frame.orig_len,
            owner,
            tcp,
            start,
            len: if owner == NOBODY {
                0
            } else {
                frame.data.len() as u32
            },
        });
        if self.entries.len() >= ROUND_FRAMES || self.bytes >= ROUND_BYTES {
            self.send();
        }
    }

    /// Sends the round to every worker; false when they have stopped.
    fn send(&mut self) -> bool {
        self.bytes = 0;
        let entries = Arc::new(std::mem::replace(
            &mut self.entries,
            Vec::with_capacity(ROUND_FRAMES),
        ));
        for (w, tx) in self.senders.iter().enumerate() {
            let fresh = self.spent.try_recv().map(|mut b| {
                b.clear();
                b
            });
            let data = std::mem::replace(&mut self.data[w], fresh.unwrap_or_default());
            if tx
                .send(Round {
                    entries: entries.clone(),
                    data,
                })
                .is_err()
            {
                return false;
            }
        }
        true
    }
}

/// Analyzes the connections of `spec` on `shards.len()` workers, handing their output to
/// `sink` in capture order. Returns the shards as the workers left them, for their counts.
pub(crate) fn run(
    readers: &mut [CaptureReader],
    warnings: &mut Warnings,
    intake: &mut Intake,
    shards: Vec<Shard>,
    spec: ShardSpec,
    sink: &mut impl FnMut(Recorded),
) -> (Vec<Shard>, Vec<CapturePart>) {
    let n = shards.len();
    std::thread::scope(|scope| {
        let (spent_tx, spent_rx) = sync_channel(n * (QUEUED_ROUNDS + 2));
        let mut senders = Vec::new();
        let mut outputs = Vec::new();
        for (me, shard) in shards.into_iter().enumerate() {
            let (tx, rx) = sync_channel(QUEUED_ROUNDS);
            let (out_tx, out_rx) = sync_channel(QUEUED_ROUNDS);
            let spent = spent_tx.clone();
            let shard = Box::new(shard);
            scope.spawn(move || worker(shard, me as u16, rx, out_tx, spent));
            senders.push(tx);
            outputs.push(out_rx);
        }
        drop(spent_tx);
        let reading = scope.spawn(move || read(readers, warnings, intake, senders, spent_rx, spec));
        let mut done: Vec<Option<Shard>> = (0..n).map(|_| None).collect();
        let mut batches: Vec<std::vec::IntoIter<Recorded>> = Vec::with_capacity(n);
        // Every worker gets every round, so they all reach the end in the same iteration.
        let mut ended = false;
        while !ended {
            batches.clear();
            for rx in &outputs {
                match rx.recv() {
                    Ok(Output::Round(batch)) => batches.push(batch.into_iter()),
                    Ok(Output::End(batch)) => {
                        ended = true;
                        batches.push(batch.into_iter());
                    }
                    Ok(Output::Done(_)) | Err(_) => {
                        ended = true;
                        batches.push(Vec::new().into_iter());
                    }
                }
            }
            if !ended {
                // A round is whole: no worker has more of it to come.
                merge(&mut batches, sink, |_| None);
            }
        }
        merge_end(&mut batches, &outputs, &mut done, sink);
        let parts = reading.join().unwrap_or_default();
        (done.into_iter().flatten().collect(), parts)
    })
}

/// Judges what the workers recorded at the end of the capture, in capture order: each sends
/// it in parts, so the merge takes a worker's next part when it has used up the last one.
fn merge_end(
    batches: &mut [std::vec::IntoIter<Recorded>],
    outputs: &[Receiver<Output>],
    done: &mut [Option<Shard>],
    sink: &mut impl FnMut(Recorded),
) {
    let mut finished = vec![false; batches.len()];
    merge(batches, sink, |w| {
        while !finished[w] {
            match outputs[w].recv() {
                Ok(Output::End(part)) | Ok(Output::Round(part)) => return Some(part),
                Ok(Output::Done(shard)) => {
                    done[w] = Some(*shard);
                    finished[w] = true;
                }
                Err(_) => finished[w] = true,
            }
        }
        None
    });
}

/// Hands on the workers' (or shard reports') recordings in capture order. Each one's are in
/// order already, so this is a k-way merge (two workers never record the same order);
/// `next_part(w)` gives `w`'s next recordings once its current ones are used up, `None` when
/// it has no more.
pub(crate) fn merge(
    batches: &mut [std::vec::IntoIter<Recorded>],
    sink: &mut impl FnMut(Recorded),
    mut next_part: impl FnMut(usize) -> Option<Vec<Recorded>>,
) {
    let mut heads: Vec<Option<Recorded>> = batches.iter_mut().map(Iterator::next).collect();
    loop {
        for w in 0..heads.len() {
            while heads[w].is_none() {
                let Some(part) = next_part(w) else { break };
                batches[w] = part.into_iter();
                heads[w] = batches[w].next();
            }
        }
        let next = heads
            .iter()
            .enumerate()
            .filter_map(|(w, h)| h.as_ref().map(|r| (r.order, w)))
            .min();
        let Some((_, w)) = next else {
            return;
        };
        let r = std::mem::replace(&mut heads[w], batches[w].next()).expect("present");
        sink(r);
    }
}

/// The reader's thread: decodes every frame and deals it into rounds for `senders.len()`
/// workers. Dropping the senders at the end tells the workers the capture has ended.
fn read(
    readers: &mut [CaptureReader],
    warnings: &mut Warnings,
    intake: &mut Intake,
    senders: Vec<SyncSender<Round>>,
    spent: Receiver<Vec<u8>>,
    spec: ShardSpec,
) -> Vec<CapturePart> {
    let n = senders.len();
    let mut dealer = Dealer {
        senders,
        spent,
        entries: Vec::with_capacity(ROUND_FRAMES),
        data: vec![Vec::new(); n],
        bytes: 0,
    };
    let parts = read_parts(readers, warnings, |frame| {
        let Some(packet) = intake.take(frame) else {
            dealer.deal(frame, None, false);
            return;
        };
        let (src, dst) = match &packet.transport {
            Transport::Tcp(seg) => (
                SocketAddr::new(packet.src, seg.src_port),
                SocketAddr::new(packet.dst, seg.dst_port),
            ),
            _ => (
                SocketAddr::new(packet.src, 0),
                SocketAddr::new(packet.dst, 0),
            ),
        };
        let tcp = matches!(packet.transport, Transport::Tcp(_));
        dealer.deal(frame, owner(&packet.transport, src, dst, n, spec), tcp);
    });
    if !dealer.entries.is_empty() {
        dealer.send();
    }
    parts
}

/// What [`deal_only`] read: every frame, those dealt to a worker, and the bytes of all of them
/// on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dealt {
    pub frames: u64,
    pub dealt: u64,
    pub bytes: u64,
}

/// The reader of a threaded run alone, for benches/reader_only.rs: reads, decodes and deals
/// every frame to `workers` queues with the same code as [`run`], but whoever takes a round
/// off a queue only counts it and hands its buffer back. Its rate next to a worker's says how
/// many workers one reader can keep busy.
pub fn deal_only(reader: &mut CaptureReader, workers: usize) -> Dealt {
    let n = workers.clamp(1, super::MAX_THREADS);
    let mut warnings = Warnings::default();
    let mut intake = Intake::default();
    let (frames, dealt) = std::thread::scope(|scope| {
        let (spent_tx, spent_rx) = sync_channel(n * (QUEUED_ROUNDS + 2));
        let mut senders = Vec::new();
        let mut drains = Vec::new();
        for me in 0..n {
            let (tx, rx) = sync_channel::<Round>(QUEUED_ROUNDS);
            let spent = spent_tx.clone();
            drains.push(scope.spawn(move || {
                let (mut frames, mut mine) = (0, 0);
                for round in rx {
                    frames += round.entries.len() as u64;
                    mine += round
                        .entries
                        .iter()
                        .filter(|e| e.owner == me as u16)
                        .count() as u64;
                    let _ = spent.try_send(round.data);
                }
                (frames, mine)
            }));
            senders.push(tx);
        }
        drop(spent_tx);
        read(
            std::slice::from_mut(reader),
            &mut warnings,
            &mut intake,
            senders,
            spent_rx,
            ShardSpec::WHOLE,
        );
        let counts: Vec<(u64, u64)> = drains.into_iter().filter_map(|d| d.join().ok()).collect();
        let frames = counts.first().map_or(0, |c| c.0);
        (frames, counts.iter().map(|c| c.1).sum())
    });
    Dealt {
        frames,
        dealt,
        bytes: intake.bytes,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::path::Path;

    #[test]
    fn test_deal_only_counts_every_frame() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/captures/backend-keepalive-race.pcap"
        ));
        let mut frames = 0;
        CaptureReader::open(path)
            .expect("shipped capture")
            .for_each_frame(&mut Warnings::default(), |_| frames += 1);
        for workers in [1, 3] {
            let dealt = deal_only(
                &mut CaptureReader::open(path).expect("shipped capture"),
                workers,
            );
            assert_eq!(dealt.frames, frames);
            assert!(dealt.dealt > 0 && dealt.dealt <= frames);
            assert!(dealt.bytes > 0);
        }
    }
}
