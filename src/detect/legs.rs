//! Captures that hold both legs of a balancer (taken on the proxy host): which address is a
//! balancer, which leg each finding is on, and which back-leg finding explains a front-leg one
//! (the backend's reset behind the balancer's 502). Statuses are then judged with both legs in
//! view: the balancer closing a back connection at its read timeout while it answers 504 is a
//! slow backend, not a client that gave up.
//!
//! While the capture is read, completed transactions feed a small sketch: the latest request
//! seen per fingerprint, so the same request seen as the server of one connection and then sent
//! by that server on another marks a balancer. Memory is bounded by the sketch, never by the
//! capture. Links are made at the end, over the findings.

use super::http::request_key;
use super::{Answered, Context, Detector, Event, Findings};
use crate::capture::{Duration, Timestamp};
use crate::proto::http::{HttpEvent, Transaction};
use crate::report::{Actor, BalancerReport, Cause, Finding, Kind, Leg, Seen, Severity, Timings};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

/// Requests remembered for matching, at most.
const SKETCH_KEPT: usize = 8192;
/// Addresses followed as possible balancers, and endpoints listed per leg, at most.
const MAX_CANDIDATES: usize = 256;
const MAX_ENDPOINTS: usize = 64;
/// A forwarded request leaves the balancer this long after it arrived, at most.
const FORWARD_WINDOW: Duration = Duration::from_secs(30);
/// The same, when the request leaves from another address than the one it arrived at: only a
/// request sent at once is taken for the same one.
const FORWARD_WINDOW_OTHER_ADDRESS: Duration = Duration::from_secs(1);
/// Slack around a front request's lifetime when looking for what explains its answer.
const LINK_SLACK: Duration = Duration::from_millis(50);

#[derive(Clone, Copy)]
struct Brief {
    client: SocketAddr,
    server: SocketAddr,
    at: Timestamp,
    /// The answer's first byte: a request forwarded because of this one left before it.
    answered: Option<Timestamp>,
}

#[derive(Default)]
struct Candidate {
    forwarded: u64,
    /// Requests it sent that carried a forwarding header.
    headers: u64,
    front: BTreeSet<SocketAddr>,
    back: BTreeSet<SocketAddr>,
    /// The addresses it sends from on the back leg: its own, or another of a host with an
    /// interface on each side (a proxy host with `-i any`).
    back_from: BTreeSet<IpAddr>,
}

impl Candidate {
    fn note(&mut self, front: Option<SocketAddr>, back: Option<SocketAddr>) {
        for (set, addr) in [(&mut self.front, front), (&mut self.back, back)] {
            if let Some(a) = addr
                && set.len() < MAX_ENDPOINTS
            {
                set.insert(a);
            }
        }
    }
}

#[derive(Default)]
pub struct Legs {
    declared: Vec<IpAddr>,
    /// The latest request per fingerprint, direct-mapped: a fingerprint's slot is its low
    /// bits, and a newer request in the same slot replaces the older one. Fixed memory, one
    /// probe per transaction. The fingerprints sit apart from the requests: the probe reads
    /// 64 KB of them instead of a 1 MB table, and a request is read only when its slot matches.
    latest_keys: Vec<u64>,
    latest: Vec<Option<Brief>>,
    candidates: HashMap<IpAddr, Candidate, foldhash::fast::RandomState>,
    /// The latest requests answered below 400.
    answered: VecDeque<Answered>,
    /// Requests per (client, server) address pair seen talking HTTP, up to `PAIRS_KEPT` pairs.
    /// The servers, the clients and what each sent and received are read from it at the end:
    /// one lookup per transaction instead of one per question.
    pairs: HashMap<(IpAddr, IpAddr), u64, foldhash::fast::RandomState>,
    /// Requests seen arriving at one address and leaving from another soon after, by (front
    /// address, back address): a balancer only if the back address is never a client of the front
    /// one, which unrelated clients asking the same thing of different servers are.
    other_address: HashMap<(IpAddr, IpAddr), Candidate, foldhash::fast::RandomState>,
}

/// What the address pairs add up to, per address.
#[derive(Default)]
struct Tallies {
    /// Addresses seen as the server of an HTTP connection.
    servers: HashSet<IpAddr>,
    /// Requests each address sent as a client.
    sent: HashMap<IpAddr, u64>,
    /// Requests each address received as a server.
    received: HashMap<IpAddr, u64>,
}

/// Addresses a balancer host sends from besides its own, at most: more than this many
/// "second interfaces" for one front address are unrelated clients asking popular URLs.
const MAX_OTHER_BACK_ADDRESSES: usize = 4;

/// Client and server address pairs remembered, at most.
const PAIRS_KEPT: usize = 65_536;

impl Legs {
    pub fn new(declared: &[IpAddr]) -> Legs {
        Legs {
            declared: declared.to_vec(),
            ..Legs::default()
        }
    }

    fn candidate(&mut self, ip: IpAddr) -> Option<&mut Candidate> {
        if self.candidates.len() >= MAX_CANDIDATES && !self.candidates.contains_key(&ip) {
            return None;
        }
        Some(self.candidates.entry(ip).or_default())
    }

    fn on_transaction(&mut self, client: SocketAddr, server: SocketAddr, t: &Transaction) {
        let kept = self.pairs.len();
        match self.pairs.entry((client.ip(), server.ip())) {
            Entry::Occupied(mut requests) => *requests.get_mut() += 1,
            Entry::Vacant(pair) if kept < PAIRS_KEPT => {
                pair.insert(1);
            }
            Entry::Vacant(_) => {}
        }
        if t.forwarded
            && let Some(c) = self.candidate(client.ip())
        {
            c.headers += 1;
            c.back_from.insert(client.ip());
            c.note(None, Some(server));
        }
        let (Some(line), Some(req)) = (&t.line, t.request) else {
            return;
        };
        let key = request_key(line);
        let answered = t.response.map(|r| r.ts);
        if let (Some(status), Some(resp)) = (t.status, t.response_complete.or(t.response))
            && status < 400
        {
            if self.answered.len() >= SKETCH_KEPT {
                self.answered.pop_front();
            }
            self.answered.push_back(Answered {
                key,
                server,
                request: req.ts,
                response: resp.ts,
                response_frame: resp.frame,
                status,
            });
        }
        if self.latest.is_empty() {
            self.latest_keys = vec![0; SKETCH_KEPT];
            self.latest = vec![None; SKETCH_KEPT];
        }
        let slot = (key as usize) % SKETCH_KEPT;
        if self.latest_keys[slot] == key
            && let Some(e) = self.latest[slot]
        {
            // The earlier one arrived at the balancer; the later one left it, from the same
            // address or (soon after) from another one toward another server.
            // A balancer cannot answer before it forwarded: the same request sent after the
            // answer is another client's (on a host with two balancers, the other one's).
            let forwarded = |front: Brief, back: Brief| {
                let gap = back.at.saturating_sub(front.at);
                back.at >= front.at
                    && front.answered.is_none_or(|a| back.at <= a)
                    && front.server.ip() != back.server.ip()
                    && back.client.ip() != front.client.ip()
                    && (front.server.ip() == back.client.ip() && gap <= FORWARD_WINDOW
                        || gap <= FORWARD_WINDOW_OTHER_ADDRESS)
            };
            let now = Brief {
                client,
                server,
                at: req.ts,
                answered,
            };
            let pair = if forwarded(e, now) {
                Some((e, now))
            } else if forwarded(now, e) {
                Some((now, e))
            } else {
                None
            };
            if let Some((front, back)) = pair {
                let same_address = front.server.ip() == back.client.ip();
                let c = if same_address {
                    self.candidate(front.server.ip())
                } else if self.other_address.len() < MAX_CANDIDATES
                    || self
                        .other_address
                        .contains_key(&(front.server.ip(), back.client.ip()))
                {
                    Some(
                        self.other_address
                            .entry((front.server.ip(), back.client.ip()))
                            .or_default(),
                    )
                } else {
                    None
                };
                if let Some(c) = c {
                    c.forwarded += 1;
                    c.back_from.insert(back.client.ip());
                    c.note(Some(front.server), Some(back.server));
                }
            }
        }
        self.latest_keys[slot] = key;
        self.latest[slot] = Some(Brief {
            client,
            server,
            at: req.ts,
            answered,
        });
    }

    /// The balancers the capture shows: named ones, ones seen forwarding a request, and
    /// addresses that serve HTTP and send requests carrying forwarding headers.
    fn tallies(&self) -> Tallies {
        let mut t = Tallies::default();
        for (&(client, server), &requests) in &self.pairs {
            t.servers.insert(server);
            *t.sent.entry(client).or_default() += requests;
            *t.received.entry(server).or_default() += requests;
        }
        t
    }

    fn balancers(&mut self, tallies: &Tallies) -> Vec<BalancerReport> {
        // A request that left from another address counts only when that address never spoke
        // to the front one as a client: a host's second interface does not, a client does.
        // A host's second interface sends mostly forwarded requests; a client that asked a
        // popular URL of another server at the same moment sends mostly its own.
        let other = std::mem::take(&mut self.other_address);
        let mut accepted: BTreeMap<IpAddr, Vec<(IpAddr, Candidate)>> = BTreeMap::new();
        for ((front, back_from), found) in other {
            if self.pairs.contains_key(&(back_from, front)) || tallies.servers.contains(&back_from)
            {
                continue;
            }
            let sent = tallies.sent.get(&back_from).copied().unwrap_or(0);
            if found.forwarded * 2 < sent {
                continue;
            }
            accepted.entry(front).or_default().push((back_from, found));
        }
        for (front, found) in accepted {
            // A balancer forwards much of what it receives; unrelated servers share a popular
            // URL with another one now and then.
            let forwarded: u64 = found.iter().map(|(_, c)| c.forwarded).sum();
            let received = tallies.received.get(&front).copied().unwrap_or(0);
            if found.len() > MAX_OTHER_BACK_ADDRESSES || forwarded * 3 < received {
                continue;
            }
            for (_, found) in found {
                let Some(c) = self.candidate(front) else {
                    continue;
                };
                c.forwarded += found.forwarded;
                c.back_from.extend(found.back_from);
                c.front.extend(found.front);
                c.back.extend(found.back);
            }
        }
        let mut out: Vec<BalancerReport> = Vec::new();
        let mut ips: BTreeSet<IpAddr> = self.declared.iter().copied().collect();
        for (ip, c) in &self.candidates {
            if c.forwarded > 0 || (c.headers > 0 && tallies.servers.contains(ip)) {
                ips.insert(*ip);
            }
        }
        for ip in ips {
            let c = self.candidates.get(&ip);
            let mut back_addresses: BTreeSet<IpAddr> =
                c.map_or(BTreeSet::new(), |c| c.back_from.clone());
            back_addresses.insert(ip);
            out.push(BalancerReport {
                address: ip.to_string(),
                back_addresses: back_addresses.iter().map(|a| a.to_string()).collect(),
                front: c.map_or(Vec::new(), |c| {
                    c.front.iter().map(|a| a.to_string()).collect()
                }),
                back: c.map_or(Vec::new(), |c| {
                    c.back.iter().map(|a| a.to_string()).collect()
                }),
                forwarded_requests: c.map_or(0, |c| c.forwarded),
            });
        }
        out
    }
}

impl Detector for Legs {
    fn on_event(&mut self, event: &Event<'_>, _ctx: &Context<'_>, _out: &mut Findings) {
        match event {
            Event::Http {
                conn,
                event: HttpEvent::Done(t),
            } => self.on_transaction(conn.client, conn.server, t),
            Event::ConnectionFinalized {
                conn,
                http: Some(h),
                ..
            } => {
                for t in h.open() {
                    self.on_transaction(conn.client, conn.server, t);
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, _ctx: &Context<'_>, out: &mut Findings) {
        let tallies = self.tallies();
        out.balancers = self.balancers(&tallies);
        out.answered = std::mem::take(&mut self.answered).into();
        out.http_clients = tallies.sent.into_keys().collect();
    }
}

fn addr(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}

/// Front-leg findings that a back-leg failure can explain, and back-leg failures that can.
pub(crate) fn front_outcome(f: &Finding) -> bool {
    match f.kind {
        Kind::ErrorStatus => f.facts.status.is_some_and(|s| s >= 500),
        Kind::ClientClosedEarly
        | Kind::NoResponse
        | Kind::ClosedBeforeResponse
        | Kind::ResponseBodyTruncated => true,
        Kind::ConnectionReset => f.facts.by == Some(Actor::Server),
        _ => false,
    }
}

pub(crate) fn back_cause(f: &Finding) -> bool {
    matches!(
        f.kind,
        Kind::HandshakeRefused
            | Kind::SynUnanswered
            | Kind::ConnectionReset
            | Kind::ClosedBeforeResponse
            | Kind::KeepaliveRace
            | Kind::ServerRestart
            | Kind::ClientClosedEarly
            | Kind::NoResponse
            | Kind::SlowResponse
            | Kind::ResponseBodyTruncated
            | Kind::MalformedResponse
            | Kind::ResponseBodyOverrun
            | Kind::ConflictingContentLength
            | Kind::ContentLengthWithChunked
            | Kind::MalformedChunked
            | Kind::MtuBlackhole
            | Kind::TlsHandshakeFailure
            | Kind::TlsCertExpired
            | Kind::TlsSniMismatch
            | Kind::ErrorStatus
    )
}

/// When the front finding began and ended: its request's first byte to its answer (or to
/// the finding itself).
fn window(f: &Finding) -> (Timestamp, Timestamp) {
    let start = f.facts.request_at.unwrap_or(f.facts.at).ts;
    let end = f
        .facts
        .response_at
        .map_or(f.facts.at.ts, |r| r.ts)
        .max(f.facts.at.ts);
    (
        Timestamp(start.0.saturating_sub(LINK_SLACK.0)),
        end.saturating_add(LINK_SLACK),
    )
}

/// Sets each finding's leg, links front outcomes to the back failures behind them, and
/// re-judges what only both legs together tell. `balancers` may grow: an address that
/// answered 5xx while its own connection to a backend failed is a balancer too.
pub fn link(
    findings: &mut Vec<Finding>,
    balancers: &mut Vec<BalancerReport>,
    answered: &[Answered],
    http_clients: &std::collections::HashSet<IpAddr>,
) {
    let flows: Vec<(Option<SocketAddr>, Option<SocketAddr>)> = findings
        .iter()
        .map(|f| (addr(&f.flow.client), addr(&f.flow.server)))
        .collect();
    let ip = |s: &str| s.parse::<IpAddr>().ok();
    // Each balancer: the address clients reach, and the addresses it sends from to backends.
    let mut known: Vec<(IpAddr, BTreeSet<IpAddr>)> = balancers
        .iter()
        .filter_map(|b| {
            let front = ip(&b.address)?;
            let mut from: BTreeSet<IpAddr> =
                b.back_addresses.iter().filter_map(|a| ip(a)).collect();
            from.insert(front);
            Some((front, from))
        })
        .collect();
    // Which client addresses each server's findings show, asked once per candidate pair below.
    let clients_of: std::collections::HashSet<(IpAddr, SocketAddr)> = flows
        .iter()
        .filter_map(|&(c, s)| Some((c?.ip(), s?)))
        .collect();
    // A 5xx answered by X while a connection to another server failed during that request:
    // X is a balancer even when no request reached a backend to be matched.
    for (i, f) in findings.iter().enumerate() {
        let (Some(client), Some(server)) = flows[i] else {
            continue;
        };
        if f.kind != Kind::ErrorStatus || !front_outcome(f) {
            continue;
        }
        let (start, end) = window(f);
        let failed_then = findings.iter().enumerate().find(|(j, b)| {
            let (Some(bc), Some(bs)) = flows[*j] else {
                return false;
            };
            // The cheap tests first: this runs for every pair of findings.
            let plausible = bc.ip() != client.ip()
                && bs.ip() != server.ip()
                && matches!(
                    b.kind,
                    Kind::HandshakeRefused | Kind::SynUnanswered | Kind::ConnectionReset
                )
                && (start..=end).contains(&b.facts.at.ts);
            if !plausible {
                return false;
            }
            // Sent from another balancer's address: that balancer's back leg, not this one's.
            let others = known
                .iter()
                .any(|(x, from)| *x != server.ip() && from.contains(&bc.ip()));
            // A client of X itself is X's client, not an address X reaches backends from:
            // on a busy server without a balancer, other clients' failures fall in the window.
            let client_of_x = clients_of.contains(&(bc.ip(), server));
            // An address X is not known to send from counts for a balancer the traffic already
            // showed, or when it never sent a request of its own (a host's second interface
            // whose every attempt failed): otherwise any client failing at that moment, on a
            // busy server without a balancer, would make X one.
            let known_x =
                known.iter().any(|(x, _)| *x == server.ip()) || !http_clients.contains(&bc.ip());
            !others
                && !client_of_x
                && (bc.ip() == server.ip()
                    || known_x && b.facts.at.ts >= f.facts.request_at.map_or(start, |r| r.ts))
        });
        if let Some((j, _)) = failed_then
            && let (Some(bc), Some(bs)) = flows[j]
        {
            if let Some(k) = known.iter().position(|(x, _)| *x == server.ip()) {
                // A known balancer: this is one of the addresses it reaches backends from.
                known[k].1.insert(bc.ip());
                if let Some(report) = balancers
                    .iter_mut()
                    .find(|r| r.address == server.ip().to_string())
                {
                    let from = bc.ip().to_string();
                    if !report.back_addresses.contains(&from) {
                        report.back_addresses.push(from);
                        report.back_addresses.sort();
                    }
                    if !report.front.contains(&server.to_string())
                        && report.front.len() < MAX_ENDPOINTS
                    {
                        report.front.push(server.to_string());
                    }
                }
                continue;
            }
            known.push((server.ip(), [server.ip(), bc.ip()].into_iter().collect()));
            balancers.push(BalancerReport {
                address: server.ip().to_string(),
                back_addresses: [server.ip(), bc.ip()]
                    .into_iter()
                    .collect::<BTreeSet<_>>()
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
                front: vec![server.to_string()],
                back: vec![bs.to_string()],
                forwarded_requests: 0,
            });
        }
    }
    if !known.is_empty() {
        link_legs(findings, balancers, answered, &flows, &known);
    }
    restarts(findings, answered);
    absorb(findings);
}

fn link_legs(
    findings: &mut [Finding],
    balancers: &mut [BalancerReport],
    answered: &[Answered],
    flows: &[(Option<SocketAddr>, Option<SocketAddr>)],
    known: &[(IpAddr, BTreeSet<IpAddr>)],
) {
    // Which balancer (by index) each finding's front or back leg belongs to.
    let mut balancer_of: Vec<Option<usize>> = vec![None; findings.len()];
    for (i, f) in findings.iter_mut().enumerate() {
        let (client, server) = flows[i];
        if let Some(b) = server.and_then(|s| known.iter().position(|(x, _)| *x == s.ip())) {
            f.leg = Some(Leg::Front);
            balancer_of[i] = Some(b);
        } else if let Some(b) = client.and_then(|c| {
            // A one-armed balancer's own address first: another balancer may (wrongly) have
            // been credited with it too.
            known
                .iter()
                .position(|(x, _)| *x == c.ip())
                .or_else(|| known.iter().position(|(_, from)| from.contains(&c.ip())))
        }) {
            f.leg = Some(Leg::Back);
            balancer_of[i] = Some(b);
        }
    }
    let mut links: Vec<(usize, usize)> = Vec::new();
    for (i, f) in findings.iter().enumerate() {
        if f.leg != Some(Leg::Front) || !front_outcome(f) {
            continue;
        }
        let backs = findings
            .iter()
            .enumerate()
            .filter(|(j, b)| b.leg == Some(Leg::Back) && balancer_of[*j] == balancer_of[i]);
        if let Some(j) = explaining(f, backs, 0, |_| false) {
            links.push((i, j));
        }
    }
    for (front, back) in links {
        rejudge(findings, front, back, 0);
    }
    // Every backend the balancers reached, failures included.
    for (i, f) in findings.iter().enumerate() {
        if let (Some(Leg::Back), Some(b), Some(server)) = (f.leg, balancer_of[i], flows[i].1)
            && let Some(report) = balancers
                .iter_mut()
                .find(|r| r.address == known[b].0.to_string())
            && !report.back.contains(&server.to_string())
            && report.back.len() < MAX_ENDPOINTS
        {
            report.back.push(server.to_string());
            report.back.sort();
        }
    }
    recovered_by_retry(findings, known, &balancer_of, answered);
}

/// A back-leg failure that explains no front failure, while the balancer answered the same
/// request (or one in flight then) below 400: it retried, and the client never saw it.
fn recovered_by_retry(
    findings: &mut [Finding],
    known: &[(IpAddr, BTreeSet<IpAddr>)],
    balancer_of: &[Option<usize>],
    answered: &[Answered],
) {
    for (i, f) in findings.iter_mut().enumerate() {
        let Some(b) = balancer_of[i] else { continue };
        if f.leg != Some(Leg::Back) || !f.explains.is_empty() || f.severity != Severity::Error {
            continue;
        }
        let at = f.facts.at.ts;
        let retried = answered.iter().find(|a| {
            a.server.ip() == known[b].0
                && a.request <= at
                && at <= a.response
                && (f.facts.request_key.is_none() || f.facts.request_key == Some(a.key))
        });
        if let Some(a) = retried {
            f.severity = Severity::Warning;
            f.summary = format!(
                "{} The balancer retried and its client got {} at {}: no request failed because of it, but it will when a retry is not possible (a POST, or no other backend).",
                f.summary.trim_end(),
                a.status,
                a.server
            );
        }
    }
}

/// How close together a server's failures must be to be one restart.
const RESTART_WINDOW: Duration = Duration::from_millis(100);

/// One server that closed or reset several connections with requests in flight at once: the
/// process died (and the refusals after it say it was not back yet).
/// Whether `server` finished answering a request strictly between two moments.
fn answered_between(answered: &[Answered], server: &str, from: Timestamp, to: Timestamp) -> bool {
    answered
        .iter()
        .any(|a| a.response > from && a.response < to && a.server.to_string() == server)
}

fn restarts(findings: &mut Vec<Finding>, answered: &[Answered]) {
    let died = |f: &Finding| match f.kind {
        Kind::ClosedBeforeResponse | Kind::ResponseBodyTruncated => true,
        Kind::ConnectionReset => f.facts.by == Some(Actor::Server),
        _ => false,
    };
    let mut by_server: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, f) in findings.iter().enumerate() {
        if died(f) {
            by_server.entry(f.flow.server.clone()).or_default().push(i);
        }
    }
    let mut made = Vec::new();
    for (server, mut deaths) in by_server {
        deaths.sort_by_key(|&i| findings[i].facts.at.ts);
        let mut start = 0;
        while start < deaths.len() {
            let first = findings[deaths[start]].facts.at.ts;
            let mut end = start;
            while end + 1 < deaths.len()
                && findings[deaths[end + 1]].facts.at.ts.saturating_sub(first) <= RESTART_WINDOW
            {
                end += 1;
            }
            let group: Vec<usize> = deaths[start..=end].to_vec();
            let connections: BTreeSet<u64> = group
                .iter()
                .filter_map(|&i| findings[i].facts.connection)
                .collect();
            // A server that went on answering while its connections died did not go down.
            let last = findings[deaths[end]].facts.at.ts;
            // Nor did one that answered, after they died, a request it had before.
            let survived = answered
                .iter()
                .any(|a| a.request < first && a.response > last && a.server.to_string() == server);
            if connections.len() >= 2
                && !survived
                && !answered_between(answered, &server, first, last)
            {
                made.push((server.clone(), group));
            }
            start = end + 1;
        }
    }
    for (server, group) in made {
        let first = &findings[group[0]];
        let down = first.facts.at;
        let last = group
            .iter()
            .map(|&i| findings[i].facts.at.ts)
            .max()
            .unwrap_or(down.ts);
        let refused: Vec<usize> = findings
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                f.kind == Kind::HandshakeRefused
                    && f.flow.server == server
                    && f.facts.at.ts >= down.ts
                    && !answered_between(answered, &server, down.ts, f.facts.at.ts)
            })
            .map(|(i, _)| i)
            .collect();
        let mut packets: Vec<u64> = group
            .iter()
            .flat_map(|&i| findings[i].packets.iter().copied().max())
            .collect();
        packets.sort_unstable();
        let refused_until = refused
            .iter()
            .map(|&i| findings[i].facts.at)
            .max_by_key(|s| s.ts);
        let down_until = refused_until.map_or(last, |r| r.ts.max(last));
        // Back: the first request it answered after the last failure.
        let back = answered
            .iter()
            .filter(|a| a.server.to_string() == server && a.request >= down_until)
            .min_by_key(|a| a.response);
        let index = findings.len();
        let summary = format!(
            "{server} dropped {} connections with requests in flight within {} at {}{}{}: the process died or restarted.",
            group.len(),
            last.saturating_sub(down.ts),
            down.ts.rfc3339(),
            refused_until.map_or(String::new(), |r| format!(
                ", then refused {} new connection(s) until frame {}",
                refused.len(),
                r.frame
            )),
            back.map_or(String::new(), |a| format!(
                ", and answered again from frame {} ({} after it went down)",
                a.response_frame,
                a.response.saturating_sub(down.ts)
            )),
        );
        let mut evidence = serde_json::Map::new();
        evidence.insert("went_down".into(), down.ts.rfc3339().into());
        evidence.insert("connections".into(), group.len().into());
        evidence.insert("refused_after".into(), refused.len().into());
        evidence.insert(
            "refused_until_frame".into(),
            refused_until.map(|r| r.frame).into(),
        );
        evidence.insert(
            "back_at_frame".into(),
            back.map(|a| a.response_frame).into(),
        );
        evidence.insert("back_at".into(), back.map(|a| a.response.rfc3339()).into());
        let restart = Finding {
            kind: Kind::ServerRestart,
            severity: Severity::Error,
            capture: first.capture.clone(),
            flow: crate::report::Flow {
                client: first.flow.client.clone(),
                server: server.clone(),
                filter: format!("tcp.port=={}", server.rsplit(':').next().unwrap_or("")),
            },
            packets,
            time: down.ts.rfc3339(),
            summary,
            evidence,
            causes: vec![Cause {
                status: 502,
                upstream_status: Some("-".into()),
                explanation: "The backend process went away with requests in flight: every one of them gets 502, and new connections are refused until it is back. Unlike a keep-alive race, the connections die at once and mid-request.".into(),
                next_steps: vec![
                    format!("Look for a crash, an OOM kill or a deploy on {} at {}: journalctl, dmesg | grep -i kill, the orchestrator's events.", server, down.ts.rfc3339()),
                    "Drain backends before restarting them (deregistration delay, graceful shutdown) so the balancer stops sending first.".into(),
                ],
            }],
            leg: first.leg,
            explained_by: Vec::new(),
            explains: group.iter().chain(refused.iter()).copied().collect(),
            facts: crate::report::Facts {
                at: down,
                ..Default::default()
            },
        };
        for &i in group.iter().chain(refused.iter()) {
            findings[i].explained_by.push(index);
        }
        findings.push(restart);
    }
}

/// A reset that only repeats what another finding on the same connection already tells (the
/// backend's RST after its keep-alive close, the balancer's RST at its read timeout) is folded
/// into that finding.
fn absorb(findings: &mut Vec<Finding>) {
    let tells_it = |f: &Finding| {
        matches!(f.kind, Kind::KeepaliveRace | Kind::SlowResponse)
            || f.explained_by
                .iter()
                .any(|_| f.kind == Kind::ClientClosedEarly)
    };
    let mut drop = vec![false; findings.len()];
    for i in 0..findings.len() {
        if findings[i].kind != Kind::ConnectionReset || !findings[i].explains.is_empty() {
            continue;
        }
        let conn = findings[i].facts.connection;
        if let Some(j) = (0..findings.len()).find(|&j| {
            j != i
                && conn.is_some()
                && findings[j].facts.connection == conn
                && tells_it(&findings[j])
        }) {
            let frames = findings[i].packets.clone();
            let keeper = &mut findings[j];
            keeper.packets.extend(frames);
            keeper.packets.sort_unstable();
            keeper.packets.dedup();
            drop[i] = true;
        }
    }
    let keep: Vec<bool> = drop.iter().map(|d| !d).collect();
    crate::report::retain_findings(findings, &keep);
}

/// One request as the balancer saw it: how long the client took to send it, how long the
/// balancer waited before sending it on, the backend connection's handshake, how long the
/// backend took to answer, and the whole.
fn timings(front: &Finding, back: &Finding) -> Option<Timings> {
    let span = |a: Option<Seen>, b: Option<Seen>| {
        a.zip(b)
            .filter(|(a, b)| b.ts >= a.ts)
            .map(|(a, b)| b.ts.saturating_sub(a.ts))
    };
    let f = &front.facts;
    let b = &back.facts;
    let start = f.request_at?;
    // The backend's first answer byte, or what ended the wait for it, whichever came first: a
    // late answer after the balancer gave up is not what the balancer waited.
    let backend_end = match b.response_at {
        Some(r) if r.ts <= b.at.ts => Some(r),
        // Nothing after the request says when the wait ended: unknown, not zero.
        _ if b.at.ts <= b.request_done_at.or(b.request_at).map_or(b.at.ts, |r| r.ts) => None,
        _ => Some(b.at),
    };
    Some(Timings {
        client_request: span(f.request_at, f.request_done_at),
        wait: span(f.request_done_at, b.request_at),
        // A reused keep-alive connection costs no handshake.
        connect: if b.reused_connection {
            Some(Duration(0))
        } else {
            b.connect
        },
        backend_response: span(b.request_done_at.or(b.request_at), backend_end),
        total: span(
            Some(start),
            f.response_done_at.or(f.response_at).or(Some(f.at)),
        ),
    })
}

/// The timings as the JSON report shows them: milliseconds, null where unknown.
fn timings_json(t: &Timings) -> serde_json::Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis_f64());
    serde_json::json!({
        "client_request_ms": ms(t.client_request),
        "wait_ms": ms(t.wait),
        "connect_ms": ms(t.connect),
        "backend_response_ms": ms(t.backend_response),
        "total_ms": ms(t.total),
    })
}

/// Of the back-leg findings of a front outcome's balancer, the one that explains it: a failure
/// within the front request's lifetime; the same request beats a neighbour (`matched`, a
/// request known to be this one, beats both), a failure beats a pass-through status, the
/// latest beats earlier ones. `shift` (nanoseconds, the back findings' clock minus the front
/// one's) is non-zero when the back leg was captured on another host.
pub(crate) fn explaining<'a>(
    f: &Finding,
    backs: impl Iterator<Item = (usize, &'a Finding)>,
    shift: i64,
    matched: impl Fn(&Finding) -> bool,
) -> Option<usize> {
    let (start, end) = window(f);
    backs
        .map(|(j, b)| (j, b, Timestamp(b.facts.at.ts.0.saturating_sub(shift))))
        .filter(|(_, b, at)| back_cause(b) && (start..=end).contains(at))
        .max_by_key(|(_, b, at)| {
            let same_request =
                b.facts.request_key.is_some() && b.facts.request_key == f.facts.request_key;
            (matched(b), same_request, b.kind != Kind::ErrorStatus, *at)
        })
        .map(|(j, _, _)| j)
}

/// A back finding's moments on the front's clock (`shift` as in [`explaining`]).
fn shifted(facts: &mut crate::report::Facts, shift: i64) {
    if shift == 0 {
        return;
    }
    let back = |s: &mut Seen| s.ts = Timestamp(s.ts.0.saturating_sub(shift));
    back(&mut facts.at);
    for s in [
        &mut facts.request_at,
        &mut facts.request_done_at,
        &mut facts.response_at,
        &mut facts.response_done_at,
    ]
    .into_iter()
    .flatten()
    {
        back(s);
    }
}

/// Records that `back` explains `front` and says what the two together mean. `shift` as in
/// [`explaining`]; a back finding from another capture is named with its file, since frame
/// numbers are per file.
pub(crate) fn rejudge(findings: &mut [Finding], front: usize, back: usize, shift: i64) {
    let (f, mut b) = (findings[front].clone(), findings[back].clone());
    shifted(&mut b.facts, shift);
    let frames = |x: &Finding| {
        let list: Vec<String> = x.packets.iter().take(4).map(|p| p.to_string()).collect();
        let place = if x.capture == f.capture {
            String::new()
        } else {
            format!(" in {}", x.capture)
        };
        let at = if list.len() == 1 { "frame" } else { "frames" };
        format!("{} at {at} {}{place}", x.kind, list.join(", "))
    };
    let front_seen = frames(&f);
    if let Some(t) = timings(&f, &b) {
        findings[front]
            .evidence
            .insert("timings".into(), timings_json(&t));
        findings[front].facts.timings = Some(t);
    }
    let client_gave_up = f.kind == Kind::ClientClosedEarly;
    if client_gave_up && b.kind == Kind::ClientClosedEarly {
        // The client gave up, so the balancer aborted the request it had forwarded: one 499
        // story, told from the front.
        findings[back].explained_by.push(front);
        findings[front].explains.push(back);
        let bk = &mut findings[back];
        bk.severity = Severity::Info;
        bk.summary = format!(
            "The balancer {} aborted its request to {} because its own client gave up first ({front_seen}).",
            bk.flow.client, bk.flow.server
        );
        bk.causes = vec![Cause {
            status: 499,
            upstream_status: None,
            explanation: "The client closed before the answer came; the balancer stopped waiting for the backend and logs 499.".into(),
            next_steps: vec!["Compare the client's timeout with the backend's response time.".into()],
        }];
        return;
    }
    findings[front].explained_by.push(back);
    findings[back].explains.push(front);
    let status = f.facts.status.unwrap_or(502);
    if b.kind == Kind::ClientClosedEarly && f.kind == Kind::ErrorStatus && status == 504 {
        // The balancer closed the back connection at its read timeout: the backend was slower
        // than that timeout. Not a client giving up.
        let waited = b
            .facts
            .request_at
            .map(|r| b.facts.at.ts.saturating_sub(r.ts));
        let bk = &mut findings[back];
        bk.kind = Kind::SlowResponse;
        bk.severity = Severity::Error;
        bk.summary = format!(
            "{} did not answer {} within the balancer's read timeout{}: the balancer {} gave up on it and answered 504.",
            bk.flow.server,
            bk.facts.request.as_deref().unwrap_or("the request"),
            waited.map_or(String::new(), |w| format!(" ({w})")),
            bk.flow.client
        );
        bk.causes = vec![Cause {
            status: 504,
            upstream_status: Some("-".into()),
            explanation: "The backend is slower than the balancer's read timeout (proxy_read_timeout in nginx, timeout server in haproxy): the balancer stops waiting and answers 504.".into(),
            next_steps: vec![
                format!("Find why {} is slow for this request: application logs, slow queries, CPU.", bk.flow.server),
                "Or raise the balancer's read timeout if the backend is expected to take this long.".into(),
            ],
        }];
    }
    // What the back finding says now that it has been judged with the front in view.
    let mut b = findings[back].clone();
    shifted(&mut b.facts, shift);
    let back_seen = frames(&b);
    let why = b.summary.trim_end_matches('.').to_string();
    let fr = &mut findings[front];
    if fr.kind == Kind::ErrorStatus {
        let passed_through = b.kind == Kind::ErrorStatus && b.facts.status == f.facts.status;
        fr.summary = if passed_through {
            format!(
                "The balancer {} passed on {status} for {} from the backend ({back_seen}): {why}.",
                fr.flow.server,
                fr.facts.request.as_deref().unwrap_or("the request"),
            )
        } else {
            format!(
                "The balancer {} answered {status} to {} because of the back leg ({back_seen}): {why}.",
                fr.flow.server,
                fr.facts.request.as_deref().unwrap_or("the request"),
            )
        };
        if !passed_through {
            fr.causes = vec![Cause {
                status,
                upstream_status: Some("-".into()),
                explanation: format!(
                    "The balancer itself answered {status}: the backend failed it on the back leg ({back_seen})."
                ),
                next_steps: b
                    .causes
                    .first()
                    .map_or(Vec::new(), |c| c.next_steps.clone()),
            }];
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::report::{Facts, Flow};

    fn finding(kind: Kind, client: &str, server: &str, frame: u64, ms: i64) -> Finding {
        Finding {
            kind,
            severity: Severity::Error,
            capture: "t".into(),
            flow: Flow {
                client: client.into(),
                server: server.into(),
                filter: String::new(),
            },
            packets: vec![frame],
            time: String::new(),
            summary: format!("{kind}"),
            evidence: Default::default(),
            causes: vec![],
            leg: None,
            explained_by: vec![],
            explains: vec![],
            facts: Facts {
                at: Seen {
                    frame,
                    ts: Timestamp(ms * 1_000_000),
                },
                ..Facts::default()
            },
        }
    }

    #[test]
    fn test_front_502_is_explained_by_the_back_reset_and_roles_follow() {
        let mut front = finding(Kind::ErrorStatus, "10.0.0.1:5000", "10.0.0.5:80", 12, 20);
        front.facts.status = Some(502);
        front.facts.request_at = Some(Seen {
            frame: 4,
            ts: Timestamp(10_000_000),
        });
        front.facts.response_at = Some(front.facts.at);
        let mut reset = finding(
            Kind::ConnectionReset,
            "10.0.0.5:40000",
            "10.0.1.7:8080",
            11,
            19,
        );
        reset.facts.by = Some(Actor::Server);
        let unrelated = finding(Kind::ConnectionReset, "10.9.9.9:1", "10.0.1.7:8080", 13, 19);
        let mut list = vec![reset, front, unrelated];
        let mut balancers = vec![BalancerReport {
            address: "10.0.0.5".into(),
            back_addresses: vec![],
            front: vec![],
            back: vec![],
            forwarded_requests: 1,
        }];
        link(&mut list, &mut balancers, &[], &Default::default());
        assert_eq!(list[1].leg, Some(Leg::Front));
        assert_eq!(list[0].leg, Some(Leg::Back));
        assert_eq!(list[2].leg, None);
        assert_eq!(list[1].explained_by, vec![0]);
        assert_eq!(list[0].explains, vec![1]);
        assert!(
            list[1]
                .summary
                .contains("balancer 10.0.0.5:80 answered 502"),
            "{}",
            list[1].summary
        );
    }

    #[test]
    fn test_balancer_closing_at_its_read_timeout_is_a_slow_backend_not_a_499() {
        let mut front = finding(Kind::ErrorStatus, "10.0.0.1:5000", "10.0.0.5:80", 30, 2010);
        front.facts.status = Some(504);
        front.facts.request_at = Some(Seen {
            frame: 4,
            ts: Timestamp(10_000_000),
        });
        front.facts.response_at = Some(front.facts.at);
        let mut gave_up = finding(
            Kind::ClientClosedEarly,
            "10.0.0.5:40000",
            "10.0.1.7:8080",
            29,
            2009,
        );
        gave_up.facts.by = Some(Actor::Client);
        let mut list = vec![gave_up, front];
        // No forwarded request was matched: the refusal rule does not apply either, so the
        // balancer is named.
        let mut balancers = vec![BalancerReport {
            address: "10.0.0.5".into(),
            back_addresses: vec![],
            front: vec![],
            back: vec![],
            forwarded_requests: 0,
        }];
        link(&mut list, &mut balancers, &[], &Default::default());
        assert_eq!(list[0].kind, Kind::SlowResponse);
        assert_eq!(list[0].causes[0].status, 504);
        assert_eq!(list[1].explained_by, vec![0]);
    }

    #[test]
    fn test_refused_backend_during_a_502_makes_its_sender_a_balancer() {
        let mut front = finding(Kind::ErrorStatus, "10.0.0.1:5000", "10.0.0.5:80", 8, 12);
        front.facts.status = Some(502);
        front.facts.request_at = Some(Seen {
            frame: 4,
            ts: Timestamp(10_000_000),
        });
        front.facts.response_at = Some(front.facts.at);
        let refused = finding(
            Kind::HandshakeRefused,
            "10.0.0.5:40000",
            "10.0.1.7:8080",
            6,
            11,
        );
        let mut list = vec![refused, front];
        let mut balancers = Vec::new();
        link(&mut list, &mut balancers, &[], &Default::default());
        assert_eq!(balancers.len(), 1);
        assert_eq!(list[1].explained_by, vec![0]);
    }

    fn txn(target: &str, ms: i64) -> Transaction {
        let mut t = Transaction::default();
        t.line = Some(crate::proto::http::RequestLine {
            method: crate::proto::http::head::Method::new("GET"),
            target: target.into(),
            target_len: target.len(),
            version: 1,
        });
        t.request = Some(Seen {
            frame: ms as u64,
            ts: Timestamp(ms * 1_000_000),
        });
        t
    }

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn regression_clients_asking_the_same_of_different_servers_are_not_a_balancer() {
        let mut legs = Legs::new(&[]);
        // Two clients of both servers ask for the same URL within a second.
        legs.on_transaction(at("10.1.0.1:5000"), at("10.2.0.1:80"), &txn("/a", 0));
        legs.on_transaction(at("10.1.0.2:5001"), at("10.2.0.2:80"), &txn("/a", 300));
        legs.on_transaction(at("10.1.0.2:5002"), at("10.2.0.1:80"), &txn("/b", 900));
        let tallies = legs.tallies();
        assert!(legs.balancers(&tallies).is_empty());
    }

    #[test]
    fn regression_the_same_request_sent_after_another_balancer_answered_is_not_forwarded() {
        // proxy-two-balancers.pcap: haproxy (10.71.0.3) answered GET /health at 8 ms; 0.7 s
        // later nginx sent its own GET /health from 10.71.1.2. Within a second, but after the
        // answer: not haproxy forwarding it.
        let mut legs = Legs::new(&[]);
        let mut front = txn("/health", 0);
        front.status = Some(200);
        front.response = Some(Seen {
            frame: 8,
            ts: Timestamp(8_000_000),
        });
        let mut back = txn("/health", 1);
        back.status = Some(200);
        back.response = Some(Seen {
            frame: 7,
            ts: Timestamp(7_000_000),
        });
        legs.on_transaction(at("10.71.0.3:6000"), at("10.71.2.4:9212"), &back);
        legs.on_transaction(at("10.71.0.1:5000"), at("10.71.0.3:8202"), &front);
        legs.on_transaction(
            at("10.71.1.2:6001"),
            at("10.71.2.3:9211"),
            &txn("/health", 700),
        );
        let tallies = legs.tallies();
        let b = legs.balancers(&tallies);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].address, "10.71.0.3");
        assert_eq!(b[0].back_addresses, vec!["10.71.0.3".to_string()]);
        assert_eq!(b[0].back, vec!["10.71.2.4:9212".to_string()]);
    }

    #[test]
    fn regression_another_balancers_reset_during_a_504_is_not_its_back_leg() {
        // proxy-two-balancers.pcap: while nginx (10.71.0.2) waits 2 s for a slow backend,
        // haproxy (10.71.0.3, one address on both legs) answers 502 to a backend's reset.
        let front = |server: &str, frame: u64, ms: i64, status: u16, request_ms: i64| {
            let mut f = finding(Kind::ErrorStatus, "10.71.0.1:5000", server, frame, ms);
            f.facts.status = Some(status);
            f.facts.request_at = Some(Seen {
                frame: frame - 1,
                ts: Timestamp(request_ms * 1_000_000),
            });
            f.facts.response_at = Some(f.facts.at);
            f
        };
        let nginx_504 = front("10.71.0.2:8201", 98, 2375, 504, 375);
        let mut slow = finding(
            Kind::SlowResponse,
            "10.71.1.2:36380",
            "10.71.2.3:9201",
            97,
            2375,
        );
        slow.facts.by = Some(Actor::Client);
        let haproxy_502 = front("10.71.0.3:8202", 72, 1126, 502, 1018);
        let mut reset = finding(
            Kind::ConnectionReset,
            "10.71.0.3:36438",
            "10.71.2.4:9202",
            71,
            1122,
        );
        reset.facts.by = Some(Actor::Server);
        let mut list = vec![nginx_504, slow, haproxy_502, reset];
        let report = |address: &str, from: &str| BalancerReport {
            address: address.into(),
            back_addresses: vec![from.into()],
            front: vec![],
            back: vec![],
            forwarded_requests: 1,
        };
        let mut balancers = vec![
            report("10.71.0.2", "10.71.1.2"),
            report("10.71.0.3", "10.71.0.3"),
        ];
        link(&mut list, &mut balancers, &[], &Default::default());
        assert_eq!(list[0].explained_by, vec![1]);
        assert_eq!(list[2].explained_by, vec![3]);
        assert_eq!(balancers[0].back_addresses, vec!["10.71.1.2".to_string()]);
        assert_eq!(balancers[0].back, vec!["10.71.2.3:9201".to_string()]);
        assert_eq!(balancers[1].back, vec!["10.71.2.4:9202".to_string()]);
    }

    #[test]
    fn test_a_second_interface_that_never_speaks_to_the_front_is_a_balancer() {
        let mut legs = Legs::new(&[]);
        legs.on_transaction(at("10.71.0.1:5000"), at("10.71.0.2:80"), &txn("/a", 0));
        legs.on_transaction(at("10.71.1.2:6000"), at("10.71.2.3:9000"), &txn("/a", 2));
        let tallies = legs.tallies();
        let b = legs.balancers(&tallies);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].address, "10.71.0.2");
        assert!(b[0].back_addresses.contains(&"10.71.1.2".to_string()));
    }
}
