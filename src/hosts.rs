//! Captures of the same traffic taken on different hosts, given together with
//! `--same-traffic`: a client's capture shows the front leg (client to balancer), a backend's
//! the back leg (balancer to backend), each stamped by its own clock. While each capture is
//! analyzed, [`Sampler`] (a detector) keeps a bounded sample of its requests. When every
//! capture is done, [`align`] pairs requests seen on both captures of each pair, finds the
//! clock offset that only the true pairs agree on, tells which capture is the front and which
//! the back, and links each front failure to the back finding that explains it, by the rules
//! that link the two legs of one capture taken on the balancer (`detect/legs.rs`).

use crate::capture::{Duration, Seen};
use crate::detect::{Context, Detector, Event, Findings};
use crate::proto::http::{HttpEvent, Transaction};
use crate::report::{Alignment, Finding, Leg, Report};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// One request as a capture saw it: only what matching it with the other capture needs.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The request's fingerprint (method and target), as findings carry it.
    key: u64,
    /// Its `X-Amzn-Trace-Id` or `X-Request-Id`, when it carried one (the `Root=` of AWS's).
    trace: Option<Box<str>>,
    client: SocketAddr,
    server: SocketAddr,
    connection: u64,
    /// The request's first byte.
    start: Seen,
    /// The answer's last byte, else what ended the exchange (a close, a reset, the last frame).
    end: Seen,
    /// Answered below 400 in full: on the other leg it was answered too.
    ok: bool,
    /// It carried a header proxies add when forwarding: a back-leg request.
    forwarded: bool,
}

/// Where a [`Sampler`] puts its samples when its capture ends; the pipeline that registered it
/// holds the other end (detect/ knows nothing of other captures).
pub type Samples = Arc<Mutex<Vec<Sample>>>;

/// Requests answered below 400 kept per capture, at most. Beyond it the sample is thinned by
/// fingerprint (only the requests whose fingerprint ends in one more zero bit stay), so two
/// captures of the same traffic keep the same requests whatever their sizes.
pub const MAX_SAMPLES: usize = 8192;
/// Failed requests (4xx/5xx, or no full answer) kept per capture: the first ones.
pub const MAX_FAILED: usize = 8192;
/// A fingerprint asked more often than this on both captures together (the product of its
/// counts) is too common to tell its requests apart: it is left out of the matching.
const MAX_PAIRS_PER_KEY: usize = 4096;
/// How far the two legs' moments may disagree with the rule that the back leg's exchange lies
/// within the front's: timestamp granularity, and the balancer's abort after its client gave up.
const SLACK: Duration = Duration::from_millis(5);
/// Unambiguous matches needed before an offset is believed.
const MIN_MATCHES: usize = 2;
/// The balancer's own time on a request, at most: its front exchange's length less the back
/// one's. Two requests whose lengths differ by more are not taken for one (a request retried
/// after a long failed attempt is left out of the matching, not of the links).
const MAX_BALANCER_TIME: Duration = Duration::from_millis(100);
/// The share of matches that must agree on which capture holds the longer exchanges (the
/// front): unrelated captures that happen to ask the same things at the same pace disagree.
const AGREEING: f64 = 0.8;

#[derive(Default)]
pub struct Sampler {
    ok: Vec<Sample>,
    failed: Vec<Sample>,
    /// Requests are kept when their fingerprint has at least this many trailing zero bits.
    level: u32,
    out: Samples,
}

impl Sampler {
    pub fn new(out: Samples) -> Sampler {
        Sampler {
            out,
            ..Sampler::default()
        }
    }

    fn on_transaction(&mut self, conn: (u64, SocketAddr, SocketAddr), t: &Transaction, end: Seen) {
        let (Some(line), Some(start)) = (&t.line, t.request) else {
            return;
        };
        let key = crate::detect::request_key(line);
        let ok = t.status.is_some_and(|s| s < 400) && t.response_complete.is_some();
        let sample = || Sample {
            key,
            trace: t
                .trace_ids
                .iter()
                .next()
                .map(|id| crate::accesslog::join::trace_key(id).into()),
            client: conn.1,
            server: conn.2,
            connection: conn.0,
            start,
            end: not_before(t.response_complete.or(t.response).unwrap_or(end), start),
            ok,
            forwarded: t.forwarded,
        };
        if !ok {
            if self.failed.len() < MAX_FAILED {
                self.failed.push(sample());
            }
            return;
        }
        if key.trailing_zeros() < self.level {
            return;
        }
        self.ok.push(sample());
        while self.ok.len() > MAX_SAMPLES && self.level < 64 {
            self.level += 1;
            let level = self.level;
            self.ok.retain(|s| s.key.trailing_zeros() >= level);
        }
        // Only a fingerprint of 0 survives level 64; crafted requests could all have it.
        self.ok.truncate(MAX_SAMPLES);
    }
}

/// An end never before the start, whatever order the frames were stamped in.
fn not_before(end: Seen, start: Seen) -> Seen {
    if end.ts < start.ts { start } else { end }
}

impl Detector for Sampler {
    fn on_event(&mut self, event: &Event<'_>, _ctx: &Context<'_>, _out: &mut Findings) {
        match event {
            Event::Http {
                conn,
                event: HttpEvent::Done(t),
            } => {
                let end = t.request.unwrap_or_default();
                self.on_transaction((conn.serial, conn.client, conn.server), t, end);
            }
            Event::ConnectionFinalized {
                conn,
                http: Some(h),
                ..
            } => {
                let end = conn.ended();
                for t in h.open() {
                    self.on_transaction((conn.serial, conn.client, conn.server), t, end);
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, _ctx: &Context<'_>, _out: &mut Findings) {
        let mut kept = std::mem::take(&mut self.failed);
        kept.append(&mut self.ok);
        // A poisoned lock means another thread panicked with it; the samples are lost then.
        if let Ok(mut out) = self.out.lock() {
            out.extend(kept);
        }
    }
}

/// A request of the first capture and one of the other that could be the same, with the
/// offsets (other clock minus first, nanoseconds) at which they would be.
#[derive(Clone, Copy, Debug)]
struct Pair {
    a: usize,
    b: usize,
    lo: i64,
    hi: i64,
    /// The first capture's exchange lasted longer: it holds the other's, as a front holds its back.
    a_holds_b: bool,
}

/// Which leg each of two captures shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Roles {
    /// The first capture is the front, the other the back.
    FirstFront,
    OtherFront,
    /// Both show the same connections: two captures of one leg.
    SameLeg,
    Unknown,
}

/// What two captures' samples say of each other.
#[derive(Debug)]
struct Fit {
    /// Other clock minus first, nanoseconds.
    offset: i64,
    /// (first sample, other sample) that fit only each other.
    matches: Vec<(usize, usize)>,
    roles: Roles,
}

/// Whether two requests could be one request seen twice: the same fingerprint, the same trace
/// id when both carry one, both answered or both failed; and on one connection (one leg
/// captured twice), or on two legs: then, as for a balancer's two legs in one capture, the
/// back leg's client (the balancer) is not the front's client, nor its server the front's.
fn compatible(a: &Sample, b: &Sample) -> bool {
    let same_connection = a.client == b.client && a.server == b.server;
    let two_legs = a.client.ip() != b.client.ip() && a.server.ip() != b.server.ip();
    a.key == b.key
        && a.ok == b.ok
        && (same_connection || two_legs)
        && match (&a.trace, &b.trace) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
}

/// Every pair of requests that could be the same, within `max_offset`. The rule that makes an
/// offset from a pair: the back leg's exchange starts after the front's and ends before it, so
/// with `ds` the difference of their starts and `de` of their ends, the offset lies between
/// the two, whichever capture is the front.
fn pairs(a: &[Sample], b: &[Sample], max_offset: Duration) -> Vec<Pair> {
    let mut by_key: HashMap<u64, (Vec<usize>, Vec<usize>)> = HashMap::new();
    for (i, s) in a.iter().enumerate() {
        by_key.entry(s.key).or_default().0.push(i);
    }
    for (j, s) in b.iter().enumerate() {
        if let Some(e) = by_key.get_mut(&s.key) {
            e.1.push(j);
        }
    }
    let mut keys: Vec<_> = by_key.into_iter().collect();
    // Deterministic order, so the report is the same run after run.
    keys.sort_unstable_by_key(|(k, _)| *k);
    let mut out = Vec::new();
    for (_, (ia, ib)) in keys {
        if ia.len() * ib.len() > MAX_PAIRS_PER_KEY {
            continue;
        }
        for &i in &ia {
            for &j in &ib {
                let (x, y) = (&a[i], &b[j]);
                if !compatible(x, y) {
                    continue;
                }
                let ds = y.start.ts.0.saturating_sub(x.start.ts.0);
                let de = y.end.ts.0.saturating_sub(x.end.ts.0);
                let (lo, hi) = (ds.min(de) - SLACK.0, ds.max(de) + SLACK.0);
                if lo > max_offset.0
                    || hi < -max_offset.0
                    || ds.abs_diff(de) > MAX_BALANCER_TIME.0.unsigned_abs()
                {
                    continue;
                }
                out.push(Pair {
                    a: i,
                    b: j,
                    lo,
                    hi,
                    a_holds_b: ds > de,
                });
            }
        }
    }
    out
}

/// The offset the most pairs agree on (the middle of the stretch that most of their ranges
/// cover), then the pairs at that offset whose two requests fit nothing else there, and the
/// offset refined from those alone.
fn fit(a: &[Sample], b: &[Sample], max_offset: Duration) -> Option<Fit> {
    let pairs = pairs(a, b, max_offset);
    // A sweep over the ranges' ends: +1 where one begins, -1 after it ends.
    let mut ends: Vec<(i64, i32)> = pairs
        .iter()
        .flat_map(|p| [(p.lo, 1), (p.hi.saturating_add(1), -1)])
        .collect();
    ends.sort_unstable();
    let (mut depth, mut best, mut from) = (0, 0, 0i64);
    let mut stretch = None;
    for &(at, step) in &ends {
        if step > 0 {
            depth += 1;
            if depth > best {
                best = depth;
                from = at;
                stretch = None;
            }
        } else {
            if depth == best && stretch.is_none() {
                stretch = Some((from, at - 1));
            }
            depth -= 1;
        }
    }
    let (lo, hi) = stretch?;
    let coarse = lo + (hi - lo) / 2;
    let at: Vec<&Pair> = pairs
        .iter()
        .filter(|p| p.lo <= coarse && coarse <= p.hi)
        .collect();
    let mut per_a: HashMap<usize, usize> = HashMap::new();
    let mut per_b: HashMap<usize, usize> = HashMap::new();
    for p in &at {
        *per_a.entry(p.a).or_default() += 1;
        *per_b.entry(p.b).or_default() += 1;
    }
    let only: Vec<&Pair> = at
        .into_iter()
        .filter(|p| per_a[&p.a] == 1 && per_b[&p.b] == 1)
        .collect();
    if only.len() < MIN_MATCHES {
        return None;
    }
    let two_legs: Vec<&&Pair> = only
        .iter()
        .filter(|p| a[p.a].client != b[p.b].client || a[p.a].server != b[p.b].server)
        .collect();
    let holds = two_legs.iter().filter(|p| p.a_holds_b).count();
    let most = holds.max(two_legs.len() - holds);
    if (most as f64) < AGREEING * two_legs.len() as f64 {
        return None;
    }
    let ranges: Vec<(i64, i64)> = only
        .iter()
        .map(|p| (p.lo + (p.hi - p.lo) / 2, (p.hi - p.lo) / 2))
        .collect();
    let offset = crate::accesslog::join::offset(&ranges)?;
    let matches: Vec<(usize, usize)> = only.iter().map(|p| (p.a, p.b)).collect();
    Some(Fit {
        offset,
        roles: roles(a, b, &only),
        matches,
    })
}

/// Which capture is the front: an address that is the server of one capture's request and the
/// client of the other's (a balancer with one address) says it outright; else the exchanges
/// that hold the others' (a front request outlives its back one) and forwarding headers
/// (carried on the back leg) vote.
fn roles(a: &[Sample], b: &[Sample], matches: &[&Pair]) -> Roles {
    let (mut first, mut other, mut same, mut ties) = (0usize, 0usize, 0usize, (0usize, 0usize));
    for p in matches {
        let (x, y) = (&a[p.a], &b[p.b]);
        if x.client == y.client && x.server == y.server {
            same += 1;
            continue;
        }
        if x.server.ip() == y.client.ip() {
            ties.0 += 1;
        }
        if y.server.ip() == x.client.ip() {
            ties.1 += 1;
        }
        if p.a_holds_b {
            first += 1;
        } else {
            other += 1;
        }
        match (x.forwarded, y.forwarded) {
            (false, true) => first += 1,
            (true, false) => other += 1,
            _ => {}
        }
    }
    if same * 2 >= matches.len() {
        return Roles::SameLeg;
    }
    match (ties.0.cmp(&ties.1), first.cmp(&other)) {
        (std::cmp::Ordering::Greater, _) => Roles::FirstFront,
        (std::cmp::Ordering::Less, _) => Roles::OtherFront,
        (_, std::cmp::Ordering::Greater) => Roles::FirstFront,
        (_, std::cmp::Ordering::Less) => Roles::OtherFront,
        _ => Roles::Unknown,
    }
}

/// Aligns every pair of captures of the report (`samples[i]` is `report.captures[i]`'s), links
/// front findings to the back findings of the other capture that explain them, and says so in
/// `report.alignments`.
pub fn align(report: &mut Report, samples: Vec<Vec<Sample>>, max_offset: Duration) {
    let n = report.captures.len().min(samples.len());
    let mut touched = BTreeSet::new();
    for i in 0..n {
        for j in i + 1..n {
            let (first, other) = (&report.captures[i], &report.captures[j]);
            if first.error.is_some() || other.error.is_some() {
                continue;
            }
            let (first, other) = (first.file.clone(), other.file.clone());
            let mut alignment = Alignment {
                capture: first.clone(),
                other: other.clone(),
                ..Alignment::default()
            };
            let Some(fit) = fit(&samples[i], &samples[j], max_offset) else {
                alignment.note = format!(
                    "No offset found: no two requests of {first} and {other} fit only each other within --max-clock-offset ({max_offset}); they do not show the same traffic, so nothing was linked."
                );
                report.alignments.push(alignment);
                continue;
            };
            // `+ 0.0` turns a rounded -0 into 0.
            alignment.offset_ms = Some((fit.offset as f64 / 1e3).round() / 1e3 + 0.0);
            alignment.matches = fit.matches.len();
            let (front, back, shift, matches) = match fit.roles {
                Roles::FirstFront => (i, j, fit.offset, fit.matches.clone()),
                Roles::OtherFront => (
                    j,
                    i,
                    -fit.offset,
                    fit.matches.iter().map(|&(x, y)| (y, x)).collect(),
                ),
                Roles::SameLeg | Roles::Unknown => {
                    alignment.note = format!(
                        "{other}'s clock is {} from {first}'s, from {} request(s) seen on both; {}, so nothing was linked.",
                        signed(fit.offset),
                        fit.matches.len(),
                        if fit.roles == Roles::SameLeg {
                            "both show the same connections (one leg captured twice)"
                        } else {
                            "which of them shows the front leg could not be told"
                        }
                    );
                    report.alignments.push(alignment);
                    continue;
                }
            };
            let (fs, bs) = (&samples[front], &samples[back]);
            let balancer: BTreeSet<IpAddr> =
                matches.iter().map(|&(f, _)| fs[f].server.ip()).collect();
            let from: BTreeSet<IpAddr> = matches.iter().map(|&(_, b)| bs[b].client.ip()).collect();
            // The back connection each matched front request went out on.
            let went_out: HashMap<(u64, u64), u64> = matches
                .iter()
                .map(|&(f, b)| ((fs[f].connection, fs[f].start.frame), bs[b].connection))
                .collect();
            let names = (
                report.captures[front].file.clone(),
                report.captures[back].file.clone(),
            );
            let links = link(report, &names, &balancer, &from, &went_out, shift);
            touched.extend([front, back]);
            alignment.front = Some(names.0.clone());
            alignment.back = Some(names.1.clone());
            alignment.balancer = balancer.iter().map(IpAddr::to_string).collect();
            alignment.back_addresses = from.iter().map(IpAddr::to_string).collect();
            alignment.links = links;
            alignment.note = format!(
                "{other}'s clock is {} from {first}'s, from {} request(s) seen on both; {} shows the front leg (clients to {}), {} the back leg (from {}); {links} front finding(s) linked to what the back leg shows.",
                signed(fit.offset),
                fit.matches.len(),
                names.0,
                alignment.balancer.join(", "),
                names.1,
                alignment.back_addresses.join(", "),
            );
            report.alignments.push(alignment);
        }
    }
    for c in touched {
        reverdict(report, c);
    }
    report.recount();
}

/// "+8.750 s", "-0.120 s".
fn signed(ns: i64) -> String {
    format!("{:+.3} s", ns as f64 / 1e9)
}

/// Sets the legs of the two captures' findings and links each front outcome that nothing in
/// its own capture explains to the back finding of the other capture that does. Returns how
/// many were linked.
fn link(
    report: &mut Report,
    (front, back): &(String, String),
    balancer: &BTreeSet<IpAddr>,
    from: &BTreeSet<IpAddr>,
    went_out: &HashMap<(u64, u64), u64>,
    shift: i64,
) -> usize {
    let ip = |s: &str| s.parse::<SocketAddr>().ok().map(|a| a.ip());
    for f in report.findings.iter_mut() {
        if f.leg.is_some() {
            continue;
        }
        if f.capture == *front && ip(&f.flow.server).is_some_and(|a| balancer.contains(&a)) {
            f.leg = Some(Leg::Front);
        } else if f.capture == *back && ip(&f.flow.client).is_some_and(|a| from.contains(&a)) {
            f.leg = Some(Leg::Back);
        }
    }
    let findings = &report.findings;
    let backs = || {
        findings.iter().enumerate().filter(|(_, b)| {
            b.capture == *back
                && b.leg == Some(Leg::Back)
                && ip(&b.flow.client).is_some_and(|a| from.contains(&a))
        })
    };
    let mut links = Vec::new();
    for (i, f) in findings.iter().enumerate() {
        if f.capture != *front
            || f.leg != Some(Leg::Front)
            || !f.explained_by.is_empty()
            || !crate::detect::front_outcome(f)
            || !ip(&f.flow.server).is_some_and(|a| balancer.contains(&a))
        {
            continue;
        }
        let out = f
            .facts
            .connection
            .zip(f.facts.request_at)
            .and_then(|(c, r)| went_out.get(&(c, r.frame)).copied());
        let matched = |b: &Finding| out.is_some() && b.facts.connection == out;
        if let Some(j) = crate::detect::explaining(f, backs(), shift, matched) {
            links.push((i, j));
        }
    }
    for &(f, b) in &links {
        crate::detect::rejudge(&mut report.findings, f, b, shift);
    }
    links.len()
}

/// A capture's verdict again, now that its findings may be linked to another capture's: its
/// own findings, with the findings of other captures that explain its front ones after them.
fn reverdict(report: &mut Report, capture: usize) {
    let name = &report.captures[capture].file;
    let mut order: Vec<usize> = (0..report.findings.len())
        .filter(|&i| report.findings[i].capture == *name)
        .collect();
    let own: HashSet<usize> = order.iter().copied().collect();
    for &i in order.clone().iter() {
        let f = &report.findings[i];
        if f.leg == Some(Leg::Front) {
            order.extend(f.explained_by.iter().filter(|j| !own.contains(j)));
        }
    }
    order.dedup();
    let at: HashMap<usize, usize> = order.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let renumber = |v: &[usize]| v.iter().filter_map(|i| at.get(i).copied()).collect();
    let list: Vec<Finding> = order
        .iter()
        .map(|&i| {
            let mut f = report.findings[i].clone();
            f.explained_by = renumber(&f.explained_by);
            f.explains = renumber(&f.explains);
            f
        })
        .collect();
    let verdict = crate::verdict::verdict(&report.captures[capture], &list);
    report.captures[capture].verdict = verdict;
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::capture::Timestamp;

    fn sample(key: u64, client: &str, server: &str, start_ms: i64, end_ms: i64) -> Sample {
        let seen = |ms: i64| Seen {
            frame: ms as u64,
            ts: Timestamp(ms * 1_000_000),
        };
        Sample {
            key,
            trace: None,
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            connection: start_ms as u64,
            start: seen(start_ms),
            end: seen(end_ms),
            ok: true,
            forwarded: false,
        }
    }

    #[test]
    fn test_fit_finds_the_offset_and_the_front_from_requests_seen_on_both() {
        // The back capture's clock is 8.75 s behind; each back exchange lies within its front.
        let front: Vec<Sample> = (0..5)
            .map(|k| {
                sample(
                    k,
                    "10.0.0.1:4000",
                    "10.0.0.2:80",
                    1000 * k as i64,
                    1000 * k as i64 + 300,
                )
            })
            .collect();
        let back: Vec<Sample> = (0..5)
            .map(|k| {
                let t = 1000 * k as i64 - 8750;
                sample(k, "10.0.1.2:5000", "10.0.1.3:8080", t + 1, t + 299)
            })
            .collect();
        let fit = fit(&front, &back, Duration::from_secs(60)).unwrap();
        assert!(
            (fit.offset + 8_750_000_000).abs() < 2_000_000,
            "{}",
            fit.offset
        );
        assert_eq!(fit.matches.len(), 5);
        assert_eq!(fit.roles, Roles::FirstFront);
        let fit = super::fit(&back, &front, Duration::from_secs(60)).unwrap();
        assert_eq!(fit.roles, Roles::OtherFront);
        assert!((fit.offset - 8_750_000_000).abs() < 2_000_000);
    }

    #[test]
    fn test_fit_finds_nothing_beyond_the_max_offset_or_for_one_request() {
        let a = vec![sample(1, "10.0.0.1:4000", "10.0.0.2:80", 0, 300)];
        let b = vec![sample(1, "10.0.1.2:5000", "10.0.1.3:8080", 1, 299)];
        assert!(fit(&a, &b, Duration::from_secs(60)).is_none());
        let a: Vec<Sample> = (0..3)
            .map(|k| {
                sample(
                    k,
                    "10.0.0.1:4000",
                    "10.0.0.2:80",
                    1000 * k as i64,
                    1000 * k as i64 + 300,
                )
            })
            .collect();
        let b: Vec<Sample> = (0..3)
            .map(|k| {
                sample(
                    k,
                    "10.0.1.2:5000",
                    "10.0.1.3:8080",
                    1000 * k as i64 + 90_001,
                    1000 * k as i64 + 90_299,
                )
            })
            .collect();
        assert!(fit(&a, &b, Duration::from_secs(60)).is_none());
    }

    #[test]
    fn test_sampler_thins_by_fingerprint_and_stays_bounded() {
        let mut s = Sampler::default();
        let mut t = Transaction::default();
        t.status = Some(200);
        for k in 0..(MAX_SAMPLES as u64 * 3) {
            t.line = Some(crate::proto::http::RequestLine {
                method: crate::proto::http::head::Method::new("GET"),
                target: format!("/{k}"),
                target_len: 0,
                version: 1,
            });
            let at = Seen {
                frame: k + 1,
                ts: Timestamp(k as i64),
            };
            t.request = Some(at);
            t.response_complete = Some(at);
            let addr: SocketAddr = "10.0.0.1:1".parse().unwrap();
            s.on_transaction((k, addr, addr), &t, at);
        }
        assert!(s.ok.len() <= MAX_SAMPLES);
        assert!(s.level >= 1);
        assert!(s.ok.iter().all(|x| x.key.trailing_zeros() >= s.level));
    }
}
