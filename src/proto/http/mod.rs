//! HTTP/1.x over the two reassembled streams of a connection, detected by content (any port).
//! Requests and responses are paired in order (keep-alive and pipelining), bodies are framed by
//! Content-Length, chunked coding or connection close (RFC 9112 §6), and counted, never kept.
//! Heads are buffered up to a bound. What is wrong with a message is recorded as an
//! [`Anomaly`]; `detect/http.rs` turns anomalies and transactions into findings.

pub mod chunked;
pub mod head;
pub mod redact;

use crate::flow::{Role, Seen};
use crate::report::Kind;
use chunked::{Chunked, Fed};
use head::{ContentLength, HeadError, RequestHead, ResponseHead, excerpt};

#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// A head is buffered up to this many bytes; beyond it, it is too large to follow.
    pub max_head: usize,
    /// Request heads larger than this are `header_too_large` (the balancer's 32 KB limit).
    pub max_header: usize,
    /// Request targets longer than this are `uri_too_long`.
    pub max_uri: usize,
    /// Transactions recorded per connection; analysis of the connection stops beyond it.
    pub max_transactions: usize,
    /// Keep credentials (Authorization, cookies, token-like query parameters) in reports.
    pub show_secrets: bool,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_head: 64 * 1024,
            max_header: 32 * 1024,
            max_uri: 32 * 1024,
            max_transactions: 10_000,
            show_secrets: false,
        }
    }
}

/// Ports where a server speaks TLS; plain HTTP sent there gets a 400 from the balancer.
pub const TLS_PORTS: &[u16] = &[443, 4443, 8443, 9443];

/// Bytes searched for the start of the next message after losing sync, before giving up on a
/// direction.
const MAX_RESYNC_SCAN: u64 = 1 << 20;

/// One request and its response.
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    pub method: String,
    pub target: String,
    pub target_len: usize,
    pub version: u8,
    pub request: Option<Seen>,
    pub request_head_len: usize,
    /// When the last byte of the request (head and body) arrived.
    pub request_complete: Option<Seen>,
    pub request_body: u64,
    pub request_declared: Option<u64>,
    pub expect_continue: bool,
    pub interim_responses: u32,
    pub status: Option<u16>,
    pub reason: String,
    /// The first byte of the final response head.
    pub response: Option<Seen>,
    pub response_complete: Option<Seen>,
    pub response_body: u64,
    pub response_declared: Option<u64>,
    /// The body runs until the server closes: complete when it does.
    pub response_until_close: bool,
    pub qps_limited: bool,
    /// A capture gap fell inside this exchange: nothing about its completeness is certain.
    pub gap: bool,
    /// The user asked to see credentials in reports.
    pub show_secrets: bool,
}

impl Transaction {
    pub fn request_line(&self) -> String {
        if self.method.is_empty() {
            "(request not captured)".to_string()
        } else {
            let target = if self.show_secrets {
                self.target.clone()
            } else {
                redact::redact_target(&self.target)
            };
            format!("{} {target}", self.method)
        }
    }
}

/// Something wrong with a message, found while parsing.
#[derive(Debug, Clone)]
pub struct Anomaly {
    pub kind: Kind,
    pub from: Role,
    pub at: Seen,
    /// Byte offset in the direction's stream.
    pub offset: u64,
    pub reason: String,
    pub excerpt: Option<String>,
    /// Index into [`HttpConn::transactions`].
    pub transaction: Option<usize>,
}

#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

#[derive(Debug)]
enum Mode {
    /// Waiting for the first byte of a message.
    Start,
    Head,
    Body(Body),
    /// After 101 Switching Protocols or a CONNECT tunnel: not HTTP any more.
    Tunnel,
    /// Sync lost (gap, capture started mid-connection, unparseable message): looking for the
    /// start of the next message.
    Lost {
        scanned: u64,
    },
    /// Not HTTP.
    Off,
}

#[derive(Debug)]
struct Direction {
    mode: Mode,
    head: Vec<u8>,
    head_start: Option<Seen>,
    head_offset: u64,
    /// (position in `head`, frame) for each segment that contributed to the head.
    head_frames: Vec<(usize, Seen)>,
    scanned: usize,
    /// Any byte seen in this direction.
    started: bool,
}

impl Direction {
    fn new(start_captured: bool) -> Direction {
        Direction {
            mode: if start_captured {
                Mode::Start
            } else {
                Mode::Lost { scanned: 0 }
            },
            head: Vec::new(),
            head_start: None,
            head_offset: 0,
            head_frames: Vec::new(),
            scanned: 0,
            started: false,
        }
    }

    fn reset_head(&mut self) {
        self.head.clear();
        self.head_frames.clear();
        self.head_start = None;
        self.scanned = 0;
    }

    /// The frame that holds byte `pos` of the buffered head.
    fn frame_at(&self, pos: usize) -> Seen {
        self.head_frames
            .iter()
            .rev()
            .find(|(start, _)| *start <= pos)
            .map(|(_, s)| *s)
            .or(self.head_start)
            .unwrap_or_default()
    }
}

/// Where in the HTTP exchange a connection was when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpPhase {
    BeforeRequest,
    DuringRequest,
    AwaitingResponse,
    DuringResponse,
    Idle,
}

impl HttpPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpPhase::BeforeRequest => "before_request",
            HttpPhase::DuringRequest => "during_request",
            HttpPhase::AwaitingResponse => "awaiting_response",
            HttpPhase::DuringResponse => "during_response",
            HttpPhase::Idle => "idle",
        }
    }
}

#[derive(Debug)]
pub struct HttpConn {
    limits: HttpLimits,
    server_port: u16,
    req: Direction,
    resp: Direction,
    pub transactions: Vec<Transaction>,
    /// First transaction without a final response.
    next_response: usize,
    pub anomalies: Vec<Anomaly>,
    /// Requests were seen: this connection carries HTTP.
    pub is_http: bool,
    /// Times sync was lost after a gap (reported as a capture warning).
    pub resyncs: u32,
    pub gaps: u32,
    pub truncated_analysis: bool,
    early_response: Vec<(u64, Vec<u8>, Seen)>,
    early_response_bytes: usize,
    /// A response that arrived while its request's head was still arriving (a server that
    /// answers a too-large request before reading all of it): the request, once complete,
    /// joins this transaction instead of starting an unanswered one.
    answered_early: Option<usize>,
}

const MAX_ANOMALIES: usize = 64;

/// Server bytes held while waiting for the first request (see `response_step`).
const EARLY_RESPONSE_KEPT: usize = 16 * 1024;

/// Methods that make a request HTTP even when the rest of its head is broken. Other tokens
/// (SMTP's EHLO, FTP's USER, ...) count as HTTP only when the whole head parses.
const KNOWN_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "REPORT",
    "SEARCH",
    "PURGE",
];

fn looks_like_method(data: &[u8]) -> bool {
    let token_len = data.iter().take_while(|b| b.is_ascii_uppercase()).count();
    (3..=16).contains(&token_len) && (token_len == data.len() || data[token_len] == b' ')
}

fn is_prefix_of(data: &[u8], word: &[u8]) -> bool {
    let n = data.len().min(word.len());
    data[..n] == word[..n]
}

impl HttpConn {
    pub fn new(server_port: u16, start_captured: bool, limits: HttpLimits) -> HttpConn {
        HttpConn {
            limits,
            server_port,
            req: Direction::new(start_captured),
            resp: Direction::new(start_captured),
            transactions: Vec::new(),
            next_response: 0,
            anomalies: Vec::new(),
            is_http: false,
            resyncs: 0,
            gaps: 0,
            truncated_analysis: false,
            early_response: Vec::new(),
            early_response_bytes: 0,
            answered_early: None,
        }
    }

    fn anomaly(&mut self, a: Anomaly) {
        // Each kind is reported once per transaction (or once per connection without one).
        if self.anomalies.len() >= MAX_ANOMALIES
            || self
                .anomalies
                .iter()
                .any(|x| x.kind == a.kind && x.transaction == a.transaction && x.from == a.from)
        {
            return;
        }
        self.anomalies.push(a);
    }

    /// Bytes this connection holds in buffers (heads being assembled, early server bytes).
    pub fn buffered_bytes(&self) -> usize {
        self.req.head.capacity() + self.resp.head.capacity() + self.early_response_bytes
    }

    /// Drops every buffer because the capture-wide budget ran out: heads in progress are given
    /// up (resynchronising at the next message) and held server bytes are forgotten.
    pub fn shed_buffers(&mut self) {
        for dir in [&mut self.req, &mut self.resp] {
            if matches!(dir.mode, Mode::Head) {
                dir.mode = Mode::Lost { scanned: 0 };
            }
            dir.head = Vec::new();
            dir.reset_head();
        }
        self.early_response = Vec::new();
        self.early_response_bytes = 0;
    }

    /// The response to the oldest outstanding request is done (or given up on).
    fn advance_response(&mut self) {
        self.next_response = (self.next_response + 1).min(self.transactions.len());
    }

    fn redact(&self, text: &str) -> String {
        if self.limits.show_secrets {
            text.to_string()
        } else {
            redact::redact_head_text(text)
        }
    }

    pub fn pending(&self) -> &[Transaction] {
        &self.transactions[self.next_response.min(self.transactions.len())..]
    }

    pub fn phase(&self) -> HttpPhase {
        if matches!(self.req.mode, Mode::Head | Mode::Body(_)) {
            return HttpPhase::DuringRequest;
        }
        if matches!(self.resp.mode, Mode::Head | Mode::Body(_)) {
            return HttpPhase::DuringResponse;
        }
        if !self.pending().is_empty() {
            return HttpPhase::AwaitingResponse;
        }
        if self.transactions.is_empty() {
            HttpPhase::BeforeRequest
        } else {
            HttpPhase::Idle
        }
    }

    /// The server closed its side: a body delimited by the close is complete.
    pub fn on_server_close(&mut self, at: Seen) {
        if let Mode::Body(Body::UntilClose) = self.resp.mode {
            if let Some(t) = self.transactions.get_mut(self.next_response) {
                t.response_complete = Some(at);
            }
            self.advance_response();
            self.resp.mode = Mode::Start;
        }
    }

    /// A response framed by length or chunks was cut short, if one was in progress.
    pub fn response_in_progress(&self) -> Option<(usize, u64, Option<u64>)> {
        match &self.resp.mode {
            Mode::Body(Body::Length(left)) => {
                let t = self.next_response;
                let txn = self.transactions.get(t)?;
                Some((t, txn.response_body, Some(txn.response_body + left)))
            }
            Mode::Body(Body::Chunked(c)) => Some((self.next_response, c.body_bytes, None)),
            Mode::Head => self
                .transactions
                .get(self.next_response)
                .map(|_| (self.next_response, 0, None)),
            _ => None,
        }
    }

    /// A request whose head or body had not fully arrived: (transaction, head bytes so far).
    pub fn request_in_progress(&self) -> Option<(Option<usize>, usize)> {
        match &self.req.mode {
            Mode::Head => Some((None, self.req.head.len())),
            Mode::Body(_) => Some((self.transactions.len().checked_sub(1), 0)),
            _ => None,
        }
    }

    pub fn request_head_start(&self) -> Option<Seen> {
        self.req.head_start
    }

    pub fn on_gap(&mut self, from: Role, len: u64) {
        self.gaps += 1;
        let pending = self.next_response;
        let last = self.transactions.len().checked_sub(1);
        let (dir, txn) = match from {
            Role::Client => (&mut self.req, last),
            Role::Server => (&mut self.resp, Some(pending)),
        };
        let keeps_sync = match &mut dir.mode {
            Mode::Body(Body::Length(left)) if *left >= len => {
                *left -= len;
                true
            }
            Mode::Body(Body::Chunked(c)) => c.skip_data(len),
            Mode::Body(Body::UntilClose) | Mode::Tunnel | Mode::Off | Mode::Lost { .. } => true,
            Mode::Start | Mode::Head | Mode::Body(Body::Length(_)) => false,
        };
        if let Some(t) = txn.and_then(|t| self.transactions.get_mut(t)) {
            t.gap = true;
        }
        let dir = match from {
            Role::Client => &mut self.req,
            Role::Server => &mut self.resp,
        };
        if !keeps_sync {
            dir.reset_head();
            dir.mode = Mode::Lost { scanned: 0 };
            self.resyncs += 1;
        } else if let Mode::Body(Body::Length(0)) = dir.mode {
            dir.mode = Mode::Start;
            if from == Role::Server {
                self.advance_response();
            }
        }
    }

    /// Replays server bytes that arrived before the first request, now that there is one.
    fn replay_early_response(&mut self) {
        if self.early_response.is_empty() || !self.is_http {
            return;
        }
        let held = std::mem::take(&mut self.early_response);
        self.early_response_bytes = 0;
        for (off, bytes, at) in held {
            self.on_data(Role::Server, off, &bytes, at);
        }
    }

    pub fn on_data(&mut self, from: Role, offset: u64, bytes: &[u8], at: Seen) {
        let mut data = bytes;
        let mut off = offset;
        while !data.is_empty() {
            let used = match from {
                Role::Client => self.request_step(data, off, at),
                Role::Server => self.response_step(data, off, at),
            };
            debug_assert!(used > 0 && used <= data.len());
            let used = used.clamp(1, data.len());
            data = &data[used..];
            off += used as u64;
        }
        if from == Role::Client {
            self.replay_early_response();
        }
    }

    fn direction(&mut self, from: Role) -> &mut Direction {
        match from {
            Role::Client => &mut self.req,
            Role::Server => &mut self.resp,
        }
    }

    /// Appends to the buffered head; returns the head's full length once its blank line has
    /// arrived, and how many of `data` were taken.
    fn buffer_head(
        &mut self,
        from: Role,
        data: &[u8],
        off: u64,
        at: Seen,
    ) -> (Option<usize>, usize) {
        let max_head = self.limits.max_head;
        let dir = self.direction(from);
        if dir.head.is_empty() {
            dir.head_start = Some(at);
            dir.head_offset = off;
        }
        if dir.head_frames.len() < 64 {
            dir.head_frames.push((dir.head.len(), at));
        }
        let before = dir.head.len();
        let take = data.len().min(max_head - before);
        dir.head.extend_from_slice(&data[..take]);
        let from_pos = dir.scanned.saturating_sub(3);
        let found = dir.head[from_pos..]
            .windows(2)
            .enumerate()
            .find_map(|(i, w)| {
                let p = from_pos + i;
                (w == b"\n\n").then_some(p + 2).or_else(|| {
                    (w == b"\n\r" && dir.head.get(p + 2) == Some(&b'\n')).then_some(p + 3)
                })
            });
        dir.scanned = dir.head.len();
        match found {
            Some(end) => (Some(end), end - before),
            None => (None, take),
        }
    }

    fn request_step(&mut self, data: &[u8], off: u64, at: Seen) -> usize {
        self.req.started = true;
        match &mut self.req.mode {
            Mode::Off | Mode::Tunnel => data.len(),
            Mode::Lost { scanned } => {
                let found = (0..data.len()).find(|&i| {
                    (i == 0 || data[i - 1] == b'\n')
                        && looks_like_method(&data[i..data.len().min(i + 17)])
                });
                match found {
                    Some(0) => {
                        self.req.mode = Mode::Start;
                        self.request_step(data, off, at)
                    }
                    Some(p) => {
                        self.req.mode = Mode::Start;
                        p
                    }
                    None => {
                        *scanned += data.len() as u64;
                        if *scanned > MAX_RESYNC_SCAN {
                            self.req.mode = Mode::Off;
                        }
                        data.len()
                    }
                }
            }
            Mode::Start => {
                let blank = data
                    .iter()
                    .take_while(|b| **b == b'\r' || **b == b'\n')
                    .count();
                if blank > 0 {
                    return blank;
                }
                let plausible = if self.is_http {
                    data[0].is_ascii_uppercase()
                } else {
                    let head = &data[..data.len().min(17)];
                    let letters = head.iter().take_while(|b| b.is_ascii_uppercase()).count();
                    // A method still arriving, or a method and its space.
                    letters == head.len() && letters < 17 || looks_like_method(head)
                };
                if plausible {
                    // A known method and a space is a request line, even if the head never
                    // finishes: a stalled or abandoned request is still HTTP.
                    if KNOWN_METHODS
                        .iter()
                        .any(|m| data.starts_with(m.as_bytes()) && data.get(m.len()) == Some(&b' '))
                    {
                        self.is_http = true;
                    }
                    self.req.mode = Mode::Head;
                    return self.request_step(data, off, at);
                }
                if !self.is_http {
                    // TLS, SSH, a database protocol...: not ours.
                    self.req.mode = Mode::Off;
                    return data.len();
                }
                self.anomaly(Anomaly {
                    kind: Kind::MalformedRequest,
                    from: Role::Client,
                    at,
                    offset: off,
                    reason: "bytes that do not begin a request".into(),
                    excerpt: Some(excerpt(
                        self.redact(&String::from_utf8_lossy(&data[..data.len().min(64)]))
                            .as_bytes(),
                        80,
                    )),
                    transaction: None,
                });
                self.req.mode = Mode::Lost { scanned: 0 };
                data.len()
            }
            Mode::Head => {
                let (end, used) = self.buffer_head(Role::Client, data, off, at);
                match end {
                    Some(end) => {
                        self.on_request_head(end, at);
                        used
                    }
                    None => {
                        if let Some(line_end) = self.simple_request_line() {
                            // HTTP/0.9: `GET /path` alone on its line is the whole request.
                            let before = self.req.head.len() - used;
                            self.on_simple_request(at);
                            return line_end.saturating_sub(before).clamp(1, used);
                        }
                        if self.req.head.len() >= self.limits.max_head {
                            self.request_head_too_large(at);
                        }
                        used
                    }
                }
            }
            Mode::Body(_) => self.body_step(Role::Client, data, off, at),
        }
    }

    /// Feeds body bytes of the current request (client) or response (server) and updates its
    /// transaction; returns how many bytes belong to the body.
    fn body_step(&mut self, from: Role, data: &[u8], off: u64, at: Seen) -> usize {
        let t = match from {
            Role::Client => self.transactions.len().saturating_sub(1),
            Role::Server => self.next_response,
        };
        let dir = self.direction(from);
        let Mode::Body(body) = &mut dir.mode else {
            return data.len();
        };
        let (used, done) = match body {
            Body::Length(left) => {
                let take = (*left).min(data.len() as u64);
                *left -= take;
                (take as usize, *left == 0)
            }
            Body::Chunked(c) => match c.feed(data) {
                Fed::NeedMore => (data.len(), false),
                Fed::Done { consumed } => (consumed, true),
                Fed::Error { at: pos, error } => {
                    dir.mode = Mode::Lost { scanned: 0 };
                    self.anomaly(Anomaly {
                        kind: Kind::MalformedChunked,
                        from,
                        at,
                        offset: off + pos as u64,
                        reason: error.to_string(),
                        excerpt: Some(excerpt(
                            &data[pos.saturating_sub(8)..data.len().min(pos + 24)],
                            80,
                        )),
                        transaction: Some(t),
                    });
                    if from == Role::Server {
                        self.advance_response();
                    }
                    return data.len();
                }
            },
            Body::UntilClose => (data.len(), false),
        };
        let decoded = match body {
            Body::Chunked(c) => Some(c.body_bytes),
            _ => None,
        };
        if done {
            dir.mode = Mode::Start;
        }
        if let Some(txn) = self.transactions.get_mut(t) {
            let (count, complete) = match from {
                Role::Client => (&mut txn.request_body, &mut txn.request_complete),
                Role::Server => (&mut txn.response_body, &mut txn.response_complete),
            };
            *count = decoded.unwrap_or(*count + used as u64);
            if done {
                *complete = Some(at);
            }
        }
        if done && from == Role::Server {
            self.advance_response();
        }
        used.clamp(1, data.len())
    }

    /// The end of the buffered head's first line when it is an HTTP/0.9 request line: a known
    /// method, one space, a target, and no version.
    fn simple_request_line(&self) -> Option<usize> {
        let head = &self.req.head;
        let nl = head.iter().position(|&b| b == b'\n')?;
        let line = head[..nl].strip_suffix(b"\r").unwrap_or(&head[..nl]);
        let mut parts = line.split(|&b| b == b' ');
        let method = parts.next()?;
        let target = parts.next()?;
        let simple = parts.next().is_none()
            && target.starts_with(b"/")
            && KNOWN_METHODS.iter().any(|m| m.as_bytes() == method);
        simple.then_some(nl + 1)
    }

    fn on_simple_request(&mut self, at: Seen) {
        let head = std::mem::take(&mut self.req.head);
        let nl = head.iter().position(|&b| b == b'\n').unwrap_or(0);
        let line = String::from_utf8_lossy(&head[..nl]).trim_end().to_string();
        let (method, target) = line.split_once(' ').unwrap_or((&line, ""));
        self.is_http = true;
        self.transactions.push(Transaction {
            method: method.to_string(),
            target: target.chars().take(head::TARGET_KEPT).collect(),
            target_len: target.len(),
            version: 9,
            request: self.req.head_start.or(Some(at)),
            request_head_len: nl + 1,
            request_complete: Some(at),
            show_secrets: self.limits.show_secrets,
            ..Transaction::default()
        });
        self.req.head = head;
        self.req.reset_head();
        self.req.mode = Mode::Start;
    }

    fn request_head_too_large(&mut self, at: Seen) {
        let first_line = self.req.head.iter().position(|&b| b == b'\n');
        let kind = if first_line.is_none_or(|p| p > self.limits.max_uri) {
            Kind::UriTooLong
        } else {
            Kind::HeaderTooLarge
        };
        let start = self.req.head_start.unwrap_or(at);
        let head = std::mem::take(&mut self.req.head);
        self.anomaly(Anomaly {
            kind,
            from: Role::Client,
            at: start,
            offset: self.req.head_offset,
            reason: format!(
                "the request head is more than {} bytes and still not finished",
                self.limits.max_head
            ),
            excerpt: Some(excerpt(
                self.redact(&String::from_utf8_lossy(&head[..head.len().min(60)]))
                    .as_bytes(),
                80,
            )),
            transaction: None,
        });
        self.req.head = head;
        self.req.reset_head();
        self.req.mode = Mode::Lost { scanned: 0 };
    }

    fn on_request_head(&mut self, end: usize, at: Seen) {
        let head = std::mem::take(&mut self.req.head);
        let start = self.req.head_start.unwrap_or(at);
        let parsed = head::parse_request(&head[..end]);
        let offset = self.req.head_offset;
        match parsed {
            Ok(r) => {
                self.is_http = true;
                self.req.head = head;
                self.req.reset_head();
                self.new_transaction(r, start, at, offset);
            }
            Err(_)
                if !self.is_http
                    && !KNOWN_METHODS
                        .iter()
                        .any(|m| head.starts_with(format!("{m} ").as_bytes())) =>
            {
                // Some other text protocol that happens to start with a capitalised word.
                self.req.head = head;
                self.req.reset_head();
                self.req.mode = Mode::Off;
                self.resp.mode = Mode::Off;
            }
            Err(HeadError {
                offset: pos,
                reason,
            }) => {
                self.is_http = true;
                let line_end = head[pos..end]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(end, |p| pos + p + 1);
                let frame = self.req.frame_at(pos);
                let text = self.redact(&String::from_utf8_lossy(&head[pos..line_end]));
                self.anomaly(Anomaly {
                    kind: Kind::MalformedRequest,
                    from: Role::Client,
                    at: frame,
                    offset: offset + pos as u64,
                    reason,
                    excerpt: Some(excerpt(text.as_bytes(), 120)),
                    transaction: None,
                });
                // The server may still answer it (with 400): pair that answer with something.
                self.transactions.push(Transaction {
                    method: String::from_utf8_lossy(
                        &head[..head.iter().position(|&b| b == b' ').unwrap_or(0).min(16)],
                    )
                    .into_owned(),
                    target: "(malformed request)".into(),
                    request: Some(start),
                    request_head_len: end,
                    request_complete: Some(at),
                    show_secrets: self.limits.show_secrets,
                    ..Transaction::default()
                });
                self.req.head = head;
                self.req.reset_head();
                self.req.mode = Mode::Lost { scanned: 0 };
            }
        }
    }

    fn new_transaction(&mut self, r: RequestHead, start: Seen, at: Seen, offset: u64) {
        if self.transactions.len() >= self.limits.max_transactions {
            self.truncated_analysis = true;
            self.req.mode = Mode::Off;
            self.resp.mode = Mode::Off;
            return;
        }
        let len = self.transactions.len();
        let joins_early_answer = self
            .answered_early
            .take()
            .is_some_and(|i| i + 1 == len && self.transactions[i].method.is_empty());
        let t = if joins_early_answer { len - 1 } else { len };
        let note = |this: &mut HttpConn, kind: Kind, reason: String| {
            this.anomaly(Anomaly {
                kind,
                from: Role::Client,
                at: start,
                offset,
                reason,
                excerpt: None,
                transaction: Some(t),
            })
        };
        if r.target_len > self.limits.max_uri {
            note(
                self,
                Kind::UriTooLong,
                format!(
                    "the request target is {} bytes, over the {}-byte limit",
                    r.target_len, self.limits.max_uri
                ),
            );
        } else if r.head_len > self.limits.max_header {
            note(
                self,
                Kind::HeaderTooLarge,
                format!(
                    "the request head is {} bytes, over the {}-byte limit",
                    r.head_len, self.limits.max_header
                ),
            );
        }
        if r.method == "TRACE" {
            note(self, Kind::TraceMethod, "TRACE request".into());
        }
        if r.alb_trace_headers > 16 || r.alb_trace_repeated {
            note(
                self,
                Kind::AlbTraceLoop,
                format!(
                    "{} ALICLOUD-ALB-TRACE headers{}",
                    r.alb_trace_headers,
                    if r.alb_trace_repeated {
                        ", one value repeated"
                    } else {
                        ""
                    }
                ),
            );
        }
        if TLS_PORTS.contains(&self.server_port) {
            note(
                self,
                Kind::HttpOnTlsPort,
                format!("plain HTTP request to port {}", self.server_port),
            );
        }
        let f = &r.framing;
        let body = match (&f.content_length, f.transfer_encoding) {
            (ContentLength::Absent, false) => None,
            (_, true) => {
                if !matches!(f.content_length, ContentLength::Absent) {
                    note(
                        self,
                        Kind::ContentLengthWithChunked,
                        "request has both Content-Length and Transfer-Encoding".into(),
                    );
                }
                if f.chunked {
                    Some(Body::Chunked(Chunked::default()))
                } else {
                    note(
                        self,
                        Kind::MalformedRequest,
                        "Transfer-Encoding whose final coding is not chunked".into(),
                    );
                    None
                }
            }
            (ContentLength::Valid(0), false) => None,
            (ContentLength::Valid(n), false) => Some(Body::Length(*n)),
            (ContentLength::Conflicting(v), false) => {
                note(
                    self,
                    Kind::ConflictingContentLength,
                    format!("Content-Length values disagree: {}", v.join(", ")),
                );
                None
            }
            (ContentLength::Invalid(v), false) => {
                note(
                    self,
                    Kind::ConflictingContentLength,
                    format!("invalid Content-Length {v:?}"),
                );
                None
            }
        };
        let declared = match f.content_length {
            ContentLength::Valid(n) => Some(n),
            _ => None,
        };
        let complete = body.is_none().then_some(at);
        let upgrade_or_connect = r.upgrade || r.method == "CONNECT";
        let request = Transaction {
            method: r.method,
            target: r.target,
            target_len: r.target_len,
            version: r.version,
            request: Some(start),
            request_head_len: r.head_len,
            request_complete: complete,
            request_declared: declared,
            expect_continue: r.expect_continue,
            show_secrets: self.limits.show_secrets,
            ..Transaction::default()
        };
        if joins_early_answer {
            let answered = std::mem::take(&mut self.transactions[t]);
            self.transactions[t] = Transaction {
                status: answered.status,
                reason: answered.reason,
                response: answered.response,
                response_complete: answered.response_complete,
                response_body: answered.response_body,
                response_declared: answered.response_declared,
                response_until_close: answered.response_until_close,
                qps_limited: answered.qps_limited,
                interim_responses: answered.interim_responses,
                gap: answered.gap,
                ..request
            };
        } else {
            self.transactions.push(request);
        }
        let switching = upgrade_or_connect;
        self.req.mode = match body {
            Some(b) => Mode::Body(b),
            // After an Upgrade or CONNECT request the client may speak another protocol at
            // once; the response decides, and request parsing stops either way.
            None if switching => Mode::Tunnel,
            None => Mode::Start,
        };
    }

    fn response_step(&mut self, data: &[u8], off: u64, at: Seen) -> usize {
        self.resp.started = true;
        match &mut self.resp.mode {
            Mode::Off | Mode::Tunnel => data.len(),
            Mode::Lost { scanned } => {
                let found = data
                    .windows(7)
                    .enumerate()
                    .find(|(i, w)| *w == b"HTTP/1." && (*i == 0 || data[i - 1] == b'\n'))
                    .map(|(i, _)| i);
                match found {
                    Some(0) => {
                        self.resp.mode = Mode::Head;
                        self.response_step(data, off, at)
                    }
                    Some(p) => {
                        self.resp.mode = Mode::Start;
                        p
                    }
                    None => {
                        *scanned += data.len() as u64;
                        if *scanned > MAX_RESYNC_SCAN {
                            self.resp.mode = Mode::Off;
                        }
                        data.len()
                    }
                }
            }
            Mode::Start => {
                if let Some(t) = self
                    .transactions
                    .get_mut(self.next_response)
                    .filter(|t| t.version == 9)
                {
                    // An HTTP/0.9 answer has no status line: its body runs until close.
                    t.response = Some(at);
                    t.response_until_close = true;
                    self.resp.mode = Mode::Body(Body::UntilClose);
                    return self.response_step(data, off, at);
                }
                if is_prefix_of(data, b"HTTP/") {
                    self.resp.mode = Mode::Head;
                    return self.response_step(data, off, at);
                }
                if !self.is_http {
                    // Server bytes before any request: a capture that wrote the response before
                    // the request (clock or queue skew between directions), or a protocol where
                    // the server speaks first. Hold a little until a request shows up.
                    if self.early_response_bytes + data.len() <= EARLY_RESPONSE_KEPT {
                        self.early_response_bytes += data.len();
                        self.early_response.push((off, data.to_vec(), at));
                    } else {
                        self.early_response.clear();
                        self.resp.mode = Mode::Off;
                    }
                    return data.len();
                }
                let pending = self.next_response < self.transactions.len();
                let tls_reply =
                    data.len() >= 2 && (data[0] == 0x15 || data[0] == 0x16) && data[1] == 0x03;
                let (kind, reason) = if tls_reply {
                    (
                        Kind::HttpOnTlsPort,
                        "the server answered a plain HTTP request with TLS".to_string(),
                    )
                } else if pending {
                    (
                        Kind::MalformedResponse,
                        "the response does not start with an HTTP/1.x status line".to_string(),
                    )
                } else {
                    (
                        Kind::ResponseBodyOverrun,
                        "bytes after a complete response that do not begin another one".to_string(),
                    )
                };
                let transaction = if pending {
                    Some(self.next_response)
                } else {
                    self.next_response.checked_sub(1)
                };
                let kind_from = if kind == Kind::HttpOnTlsPort {
                    Role::Client
                } else {
                    Role::Server
                };
                if !transaction.is_some_and(|t| self.transactions[t].gap) {
                    self.anomaly(Anomaly {
                        kind,
                        from: kind_from,
                        at,
                        offset: off,
                        reason,
                        excerpt: Some(excerpt(&data[..data.len().min(48)], 80)),
                        transaction,
                    });
                }
                if pending {
                    // Something came back for this request, even if it was not HTTP.
                    if let Some(t) = self.transactions.get_mut(self.next_response) {
                        t.response.get_or_insert(at);
                    }
                    self.advance_response();
                }
                self.resp.mode = Mode::Lost { scanned: 0 };
                data.len()
            }
            Mode::Head => {
                let (end, used) = self.buffer_head(Role::Server, data, off, at);
                match end {
                    Some(end) => {
                        self.on_response_head(end, at);
                        used
                    }
                    None => {
                        if self.resp.head.len() >= self.limits.max_head {
                            let start = self.resp.head_start.unwrap_or(at);
                            self.anomaly(Anomaly {
                                kind: Kind::MalformedResponse,
                                from: Role::Server,
                                at: start,
                                offset: self.resp.head_offset,
                                reason: format!(
                                    "response head larger than {} bytes",
                                    self.limits.max_head
                                ),
                                excerpt: None,
                                transaction: Some(self.next_response),
                            });
                            self.resp.reset_head();
                            self.resp.mode = Mode::Lost { scanned: 0 };
                        }
                        used
                    }
                }
            }
            Mode::Body(_) => self.body_step(Role::Server, data, off, at),
        }
    }

    fn on_response_head(&mut self, end: usize, at: Seen) {
        let head = std::mem::take(&mut self.resp.head);
        let start = self.resp.head_start.unwrap_or(at);
        let offset = self.resp.head_offset;
        let parsed = head::parse_response(&head[..end]);
        self.resp.head = head;
        match parsed {
            Ok(r) => {
                self.resp.reset_head();
                self.on_response(r, start, at, offset);
            }
            Err(HeadError {
                offset: pos,
                reason,
            }) => {
                let line_end = self.resp.head[pos..end]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(end, |p| pos + p + 1);
                let frame = self.resp.frame_at(pos);
                let text = self.redact(&String::from_utf8_lossy(&self.resp.head[pos..line_end]));
                let t = self.next_response;
                if self.transactions.get(t).is_some_and(|x| x.status.is_none()) {
                    self.transactions[t].response = Some(start);
                }
                self.anomaly(Anomaly {
                    kind: Kind::MalformedResponse,
                    from: Role::Server,
                    at: frame,
                    offset: offset + pos as u64,
                    reason,
                    excerpt: Some(excerpt(text.as_bytes(), 120)),
                    transaction: Some(t),
                });
                self.resp.reset_head();
                self.resp.mode = Mode::Lost { scanned: 0 };
                self.advance_response();
            }
        }
    }

    fn on_response(&mut self, r: ResponseHead, start: Seen, at: Seen, offset: u64) {
        self.next_response = self.next_response.min(self.transactions.len());
        if self.next_response >= self.transactions.len() {
            // A response to a request the capture does not hold.
            if self.transactions.len() >= self.limits.max_transactions {
                self.truncated_analysis = true;
                self.resp.mode = Mode::Off;
                return;
            }
            if matches!(self.req.mode, Mode::Head) {
                self.answered_early = Some(self.transactions.len());
            }
            self.transactions.push(Transaction::default());
        }
        let t = self.next_response;
        if (100..200).contains(&r.status) && r.status != 101 {
            self.transactions[t].interim_responses += 1;
            self.resp.mode = Mode::Start;
            return;
        }
        let method = self.transactions[t].method.clone();
        let note = |this: &mut HttpConn, kind: Kind, reason: String| {
            this.anomaly(Anomaly {
                kind,
                from: Role::Server,
                at: start,
                offset,
                reason,
                excerpt: None,
                transaction: Some(t),
            })
        };
        let f = &r.framing;
        let no_body = method == "HEAD"
            || r.status == 204
            || r.status == 304
            || (100..200).contains(&r.status);
        let tunnel = r.status == 101 || (method == "CONNECT" && (200..300).contains(&r.status));
        let declared = match f.content_length {
            ContentLength::Valid(n) => Some(n),
            _ => None,
        };
        let mut body = if tunnel || no_body {
            None
        } else if f.transfer_encoding {
            if !matches!(f.content_length, ContentLength::Absent) {
                note(
                    self,
                    Kind::ContentLengthWithChunked,
                    "response has both Content-Length and Transfer-Encoding".into(),
                );
            }
            Some(if f.chunked {
                Body::Chunked(Chunked::default())
            } else {
                Body::UntilClose
            })
        } else {
            match &f.content_length {
                ContentLength::Absent => Some(Body::UntilClose),
                ContentLength::Valid(0) => None,
                ContentLength::Valid(n) => Some(Body::Length(*n)),
                ContentLength::Conflicting(v) => {
                    note(
                        self,
                        Kind::ConflictingContentLength,
                        format!("Content-Length values disagree: {}", v.join(", ")),
                    );
                    Some(Body::UntilClose)
                }
                ContentLength::Invalid(v) => {
                    note(
                        self,
                        Kind::ConflictingContentLength,
                        format!("invalid Content-Length {v:?}"),
                    );
                    Some(Body::UntilClose)
                }
            }
        };
        // A 1.0-style close-delimited body is complete at close; nothing to check it against.
        let until_close = matches!(body, Some(Body::UntilClose));
        let txn = &mut self.transactions[t];
        txn.status = Some(r.status);
        txn.reason = r.reason;
        txn.response = Some(start);
        txn.response_declared = declared;
        txn.response_until_close = until_close;
        txn.qps_limited = r.qps_limited;
        if tunnel {
            txn.response_complete = Some(at);
            self.advance_response();
            self.req.mode = Mode::Tunnel;
            self.resp.mode = Mode::Tunnel;
            return;
        }
        match body.take() {
            None => {
                txn.response_complete = Some(at);
                self.advance_response();
                self.resp.mode = Mode::Start;
            }
            Some(b) => self.resp.mode = Mode::Body(b),
        }
    }
}

#[cfg(test)]
mod test;
