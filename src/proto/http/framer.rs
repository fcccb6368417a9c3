//! RFC 9112 message framing over the two reassembled streams of a connection. The framer finds
//! where each request and response head starts and ends, how long each body is (Content-Length,
//! chunked, until close; none for HEAD, 1xx, 204, 304), and which request each response answers.
//! It emits [`Message`]s in stream order and knows nothing of findings: what a flaw explains is
//! decided in `detect/`. Bodies are counted, never kept; heads are buffered up to a bound.

use super::HttpLimits;
use super::chunked::{ChunkError, Chunked, Fed};
use super::head::{self, ContentLength, HeadError, HeadProblem, RequestHead, ResponseHead};
use super::redact;
use crate::flow::{Role, Seen};
use std::collections::VecDeque;

/// Bytes searched for the start of the next message after losing sync, before giving up on a
/// direction. Not reset by a false start, so a body full of request-like lines cannot keep the
/// search going forever.
const MAX_RESYNC_SCAN: u64 = 1 << 20;

/// Server bytes held while waiting for the first request.
const EARLY_RESPONSE_KEPT: usize = 16 * 1024;

/// Requests waiting for their answer, at most: a deeper pipeline than this is not one a
/// balancer keeps, and the oldest are given up as unpaired.
const MAX_WAITING: usize = 1024;

/// Methods that make a request HTTP even when the rest of its head is broken. Other tokens
/// (SMTP's EHLO, FTP's USER, ...) count as HTTP only when the whole head parses.
pub const KNOWN_METHODS: &[&str] = &[
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

/// What is wrong with the bytes, found while framing them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Flaw {
    Head(HeadProblem),
    /// Client bytes where a request should begin.
    NotARequest,
    /// Server bytes where the response to a waiting request should begin.
    NotAResponse,
    /// Server bytes after every request was answered that do not begin a response.
    AfterLastResponse,
    /// The server answered a plain HTTP request with a TLS record.
    TlsAnswer,
    /// A request head still unfinished after `max_head` bytes; the length of its first line,
    /// if that ended.
    RequestHeadTooLarge {
        first_line: Option<usize>,
    },
    ResponseHeadTooLarge,
    ConflictingLengths(Vec<String>),
    InvalidLength(String),
    LengthWithChunked,
    /// Transfer-Encoding whose final coding is not chunked (`gzip` alone).
    CodingNotChunked {
        with_length: bool,
    },
    Chunk(ChunkError),
}

/// A flaw, where it is, and which request it concerns.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FlawAt {
    pub flaw: Flaw,
    pub from: Role,
    pub at: Seen,
    /// Byte offset in the direction's stream.
    pub offset: u64,
    /// An escaped, redacted, bounded rendering of the bytes at fault.
    pub excerpt: Option<String>,
    pub seq: Option<u64>,
}

/// One framing event. Requests are numbered (`seq`) in the order they were sent; a response
/// names the request it answers (`None`: one the capture does not hold).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Message {
    /// A request head ended; `head` is `None` when it did not parse. `done` is set when the
    /// request has no body.
    Request {
        seq: u64,
        start: Seen,
        head: Option<RequestHead>,
        head_len: usize,
        done: Option<Seen>,
        /// The answer to this request began before its head was captured (see
        /// [`Framer::take_answered`]): the unpaired response already framed is its answer.
        joins_answer: bool,
    },
    RequestBodyDone {
        seq: u64,
        at: Seen,
        body: u64,
    },
    Interim {
        seq: Option<u64>,
        at: Seen,
    },
    Response {
        seq: Option<u64>,
        start: Seen,
        head: ResponseHead,
        until_close: bool,
        done: Option<Seen>,
        /// 101 Switching Protocols or a CONNECT tunnel: the rest is not HTTP.
        tunnel: bool,
    },
    ResponseBodyDone {
        seq: Option<u64>,
        at: Seen,
        body: u64,
    },
    /// A capture gap swallowed the answers to these requests: the next response the capture
    /// holds answers a later one.
    Skipped {
        seq: u64,
    },
    /// Bytes of this request or its response fell into a capture gap.
    Gap {
        seq: u64,
    },
    Flaw(FlawAt),
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Body {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Mode {
    /// Waiting for the first byte of a message.
    Start,
    Head,
    Body(Body),
    /// After an Upgrade or CONNECT request, client bytes that are not a request: the client
    /// already speaks the new protocol, and the answer decides whether that was right.
    Tentative,
    Tunnel,
    /// Sync lost (gap, capture started mid-connection, unparseable message): looking for the
    /// start of the next message.
    Lost,
    /// Not HTTP.
    Off,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Direction {
    mode: Mode,
    head: Vec<u8>,
    head_start: Option<Seen>,
    head_offset: u64,
    /// (position in `head`, frame) for each segment that contributed to the head.
    head_frames: Vec<(usize, Seen)>,
    /// The message being framed began right after a resync: a head that does not parse is a
    /// false start, not a malformed message.
    after_resync: bool,
    body_count: u64,
    body_declared: Option<u64>,
    /// Bytes scanned while lost, since the last message that parsed.
    lost_scanned: u64,
}

impl Direction {
    fn new(start_captured: bool) -> Direction {
        Direction {
            mode: if start_captured {
                Mode::Start
            } else {
                Mode::Lost
            },
            head: Vec::new(),
            head_start: None,
            head_offset: 0,
            head_frames: Vec::new(),
            after_resync: !start_captured,
            body_count: 0,
            body_declared: None,
            lost_scanned: 0,
        }
    }

    fn reset_head(&mut self) {
        self.head.clear();
        self.head_frames.clear();
        self.head_start = None;
    }

    /// A head parsed, from the buffer or straight from a segment: the direction is in step.
    fn head_parsed(&mut self) {
        self.reset_head();
        self.after_resync = false;
        self.lost_scanned = 0;
    }

    fn lose(&mut self) {
        self.reset_head();
        self.mode = Mode::Lost;
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

    fn in_message(&self) -> bool {
        matches!(self.mode, Mode::Head | Mode::Body(_))
    }
}

/// What the framer remembers of a request until its answer begins: enough to frame the answer.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Waiting {
    seq: u64,
    start: Seen,
    head_method: bool,
    connect: bool,
    upgrade: bool,
    simple: bool,
}

impl Waiting {
    /// A request whose answer is framed the ordinary way.
    fn plain(seq: u64, start: Seen) -> Waiting {
        Waiting {
            seq,
            start,
            head_method: false,
            connect: false,
            upgrade: false,
            simple: false,
        }
    }
}

/// Where in the exchange a connection is.
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

/// A message cut short when the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InProgress {
    /// The request it is (or answers); `None` for a request head still arriving, or a response
    /// to a request the capture does not hold.
    pub seq: Option<u64>,
    pub head_bytes: usize,
    pub body_bytes: u64,
    pub body_declared: Option<u64>,
    /// Still in its head.
    pub in_head: bool,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Framer {
    limits: HttpLimits,
    req: Direction,
    resp: Direction,
    waiting: VecDeque<Waiting>,
    next_seq: u64,
    /// The request whose body is arriving.
    receiving: Option<u64>,
    /// The request the response being framed answers (`Some(None)`: an unknown one).
    answering: Option<Option<u64>>,
    /// Requests were seen: this connection carries HTTP.
    pub is_http: bool,
    /// Times sync was lost (reported as a capture warning).
    pub resyncs: u32,
    pub gaps: u32,
    /// The server's stream lost sync since the last response began: the next response is
    /// paired by capture order, not by counting.
    response_lost: bool,
    /// A final answer came for the request whose body is still arriving (a refused
    /// `Expect: 100-continue`, a 413 mid-upload): the client may drop the body.
    receiving_answered: bool,
    early: Vec<(u64, Vec<u8>, Seen)>,
    early_bytes: usize,
    /// A response began with no request waiting, at this time. The capture may have written it
    /// before its request (the two directions pass through different queues on the capturing
    /// host), or the server answered a request head still arriving (a 431 or 413 before the
    /// whole head): the next request joins it.
    orphan: Option<Seen>,
}

/// How long after an unpaired answer its request may appear in the capture and still be the
/// one it answers. Capture queues reorder by microseconds; a request sent a human moment after
/// an unsolicited answer (an idle-timeout 408) is a new request.
const JOIN_WINDOW: crate::capture::Duration = crate::capture::Duration::from_millis(10);

/// Where a head's blank line ends in `data`, the bytes after `buffered` (the head so far):
/// just past `\n\n` or `\n\r\n`, which may start in the buffered bytes.
fn head_end(buffered: &[u8], data: &[u8]) -> Option<usize> {
    let before = |i: usize, back: usize| -> Option<u8> {
        if i >= back {
            Some(data[i - back])
        } else {
            buffered.len().checked_sub(back - i).map(|j| buffered[j])
        }
    };
    // Every head byte is looked at once per message: a vectorised search for line ends.
    memchr::memchr_iter(b'\n', data).find_map(|i| match before(i, 1) {
        Some(b'\n') => Some(i + 1),
        Some(b'\r') if before(i, 2) == Some(b'\n') => Some(i + 1),
        _ => None,
    })
}

fn looks_like_method(data: &[u8]) -> bool {
    let token_len = data.iter().take_while(|b| b.is_ascii_uppercase()).count();
    (3..=16).contains(&token_len) && (token_len == data.len() || data[token_len] == b' ')
}

/// A known method, a space and the start of a target: what a resync accepts as a request.
fn starts_request(data: &[u8]) -> bool {
    KNOWN_METHODS.iter().any(|m| {
        data.starts_with(m.as_bytes())
            && data.get(m.len()) == Some(&b' ')
            && data
                .get(m.len() + 1)
                .is_none_or(|b| matches!(b, b'/' | b'*' | b'h' | b'H') || b.is_ascii_alphanumeric())
    })
}

fn is_prefix_of(data: &[u8], word: &[u8]) -> bool {
    let n = data.len().min(word.len());
    data[..n] == word[..n]
}

impl Framer {
    pub fn new(start_captured: bool, limits: HttpLimits) -> Framer {
        Framer {
            limits,
            req: Direction::new(start_captured),
            resp: Direction::new(start_captured),
            waiting: VecDeque::new(),
            next_seq: 0,
            receiving: None,
            answering: None,
            is_http: false,
            resyncs: 0,
            gaps: 0,
            response_lost: !start_captured,
            receiving_answered: false,
            early: Vec::new(),
            early_bytes: 0,
            orphan: None,
        }
    }

    /// Whether a request whose head began at `start` is the one an unpaired answer answers;
    /// forgets the unpaired answer either way.
    fn joins_orphan(&mut self, start: Seen) -> bool {
        self.orphan.take().is_some_and(|answer| {
            start.frame <= answer.frame || start.ts.saturating_sub(answer.ts) <= JOIN_WINDOW
        })
    }

    /// Bytes held in buffers (heads being assembled, early server bytes).
    pub fn buffered_bytes(&self) -> usize {
        self.req.head.capacity() + self.resp.head.capacity() + self.early_bytes
    }

    /// Drops every buffer because the capture-wide budget ran out: heads in progress are given
    /// up (resynchronising at the next message) and held server bytes are forgotten.
    pub fn shed_buffers(&mut self) {
        for dir in [&mut self.req, &mut self.resp] {
            if matches!(dir.mode, Mode::Head) {
                dir.lose();
            }
            dir.head = Vec::new();
            dir.reset_head();
        }
        self.early = Vec::new();
        self.early_bytes = 0;
    }

    pub fn phase(&self) -> HttpPhase {
        if self.req.in_message() {
            return HttpPhase::DuringRequest;
        }
        if self.resp.in_message() {
            return HttpPhase::DuringResponse;
        }
        if !self.waiting.is_empty() {
            return HttpPhase::AwaitingResponse;
        }
        if self.next_seq == 0 {
            HttpPhase::BeforeRequest
        } else {
            HttpPhase::Idle
        }
    }

    pub fn request_head_start(&self) -> Option<Seen> {
        self.req.head_start
    }

    pub fn request_in_progress(&self) -> Option<InProgress> {
        match &self.req.mode {
            Mode::Head => Some(InProgress {
                seq: None,
                head_bytes: self.req.head.len(),
                body_bytes: 0,
                body_declared: None,
                in_head: true,
            }),
            Mode::Body(b) if !matches!(b, Body::UntilClose) => Some(InProgress {
                seq: self.receiving,
                head_bytes: 0,
                body_bytes: self.req.body_count,
                body_declared: self.req.body_declared,
                in_head: false,
            }),
            _ => None,
        }
    }

    pub fn response_in_progress(&self) -> Option<InProgress> {
        let seq = self.answering?;
        match &self.resp.mode {
            Mode::Head => Some(InProgress {
                seq,
                head_bytes: self.resp.head.len(),
                body_bytes: 0,
                body_declared: None,
                in_head: true,
            }),
            Mode::Body(Body::Length(_)) | Mode::Body(Body::Chunked(_)) => Some(InProgress {
                seq,
                head_bytes: 0,
                body_bytes: self.resp.body_count,
                body_declared: self.resp.body_declared,
                in_head: false,
            }),
            _ => None,
        }
    }

    /// The server closed its side: a body delimited by the close is complete.
    pub fn on_server_close(&mut self, at: Seen, out: &mut Vec<Message>) {
        if let Mode::Body(Body::UntilClose) = self.resp.mode {
            out.push(Message::ResponseBodyDone {
                seq: self.answering.take().flatten(),
                at,
                body: self.resp.body_count,
            });
            self.resp.mode = Mode::Start;
        }
    }

    pub fn on_gap(&mut self, from: Role, len: u64, at: Seen, out: &mut Vec<Message>) {
        self.gaps += 1;
        let concerns = match from {
            Role::Client => self.receiving,
            Role::Server => self.answering.flatten(),
        };
        let dir = match from {
            Role::Client => &mut self.req,
            Role::Server => &mut self.resp,
        };
        let keeps_sync = match &mut dir.mode {
            Mode::Body(Body::Length(left)) if *left >= len => {
                *left -= len;
                dir.body_count += len;
                true
            }
            Mode::Body(Body::Chunked(c)) => c.skip_data(len),
            Mode::Body(Body::UntilClose) => {
                dir.body_count += len;
                true
            }
            Mode::Tunnel | Mode::Off | Mode::Lost | Mode::Tentative => true,
            Mode::Start | Mode::Head | Mode::Body(Body::Length(_)) => false,
        };
        if let Some(seq) = concerns {
            out.push(Message::Gap { seq });
        }
        if from == Role::Client {
            self.orphan = None;
        }
        if !keeps_sync {
            dir.after_resync = true;
            dir.lose();
            self.resyncs += 1;
            match from {
                Role::Client => self.receiving = None,
                Role::Server => {
                    self.answering = None;
                    self.response_lost = true;
                }
            }
        } else if let Mode::Body(Body::Length(0)) = dir.mode {
            self.body_done(from, at, out);
        } else if from == Role::Server {
            // Bytes of an answer are missing: pair what follows by capture order.
            self.response_lost |= matches!(self.resp.mode, Mode::Lost);
        }
    }

    pub fn on_data(
        &mut self,
        from: Role,
        offset: u64,
        bytes: &[u8],
        at: Seen,
        out: &mut Vec<Message>,
    ) {
        let mut data = bytes;
        let mut off = offset;
        while !data.is_empty() {
            let used = match from {
                Role::Client => self.request_step(data, off, at, out),
                Role::Server => self.response_step(data, off, at, out),
            };
            debug_assert!(used > 0 && used <= data.len());
            let used = used.clamp(1, data.len());
            data = &data[used..];
            off += used as u64;
        }
        if from == Role::Client && self.is_http && !self.early.is_empty() {
            // Server bytes that arrived before the first request, now that there is one.
            let held = std::mem::take(&mut self.early);
            self.early_bytes = 0;
            for (off, bytes, at) in held {
                self.on_data(Role::Server, off, &bytes, at, out);
            }
        }
    }

    fn direction(&mut self, from: Role) -> &mut Direction {
        match from {
            Role::Client => &mut self.req,
            Role::Server => &mut self.resp,
        }
    }

    /// The bytes of a segment a head that starts it may occupy: one that ends within them fits
    /// the `max_head` bound, exactly as one buffered would.
    fn head_window<'d>(&self, data: &'d [u8]) -> &'d [u8] {
        &data[..data.len().min(self.limits.max_head)]
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
        // Only the head is copied, never the body behind it in the same segment.
        let end_in_data = head_end(&dir.head, data);
        let take = end_in_data
            .unwrap_or(data.len())
            .min(data.len())
            .min(max_head - before);
        dir.head.extend_from_slice(&data[..take]);
        match end_in_data {
            Some(end) if end <= take => (Some(before + end), end),
            _ => (None, take),
        }
    }

    /// An excerpt of the buffered head's line at `pos`, redacted with the whole head before it
    /// in view (a folded line continues the header above it).
    fn head_excerpt(&self, from: Role, pos: usize, end: usize) -> String {
        let head = match from {
            Role::Client => &self.req.head,
            Role::Server => &self.resp.head,
        };
        let end = end.min(head.len());
        let pos = pos.min(end);
        let line_end = head[pos..end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(end, |p| pos + p + 1);
        let shown = if self.limits.show_secrets {
            String::from_utf8_lossy(&head[pos..line_end]).into_owned()
        } else {
            let before = String::from_utf8_lossy(&head[..pos]).len();
            let text = redact::redact_head_text(&String::from_utf8_lossy(&head[..line_end]));
            // Redaction keeps every line before `pos` a line; find where the bad one starts.
            let lines_before = head[..pos].iter().filter(|&&b| b == b'\n').count();
            let start = text
                .match_indices('\n')
                .nth(lines_before.wrapping_sub(1))
                .map_or(if lines_before == 0 { 0 } else { before }, |(i, _)| i + 1);
            text.get(start..).unwrap_or_default().to_string()
        };
        head::excerpt(shown.as_bytes(), 120)
    }

    fn raw_excerpt(&self, bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]);
        let shown = if self.limits.show_secrets {
            text.into_owned()
        } else {
            redact::redact_head_text(&text)
        };
        head::excerpt(shown.as_bytes(), 80)
    }

    fn flaw(
        &self,
        flaw: Flaw,
        from: Role,
        at: Seen,
        offset: u64,
        excerpt: Option<String>,
        seq: Option<u64>,
    ) -> Message {
        Message::Flaw(FlawAt {
            flaw,
            from,
            at,
            offset,
            excerpt,
            seq,
        })
    }

    fn scan_lost(&mut self, from: Role, data: &[u8]) -> Option<usize> {
        let found = match from {
            Role::Client => (0..data.len()).find(|&i| {
                (i == 0 || data[i - 1] == b'\n') && starts_request(&data[i..data.len().min(i + 20)])
            }),
            Role::Server => data
                .windows(7)
                .enumerate()
                .find(|(i, w)| *w == b"HTTP/1." && (*i == 0 || data[i - 1] == b'\n'))
                .map(|(i, _)| i),
        };
        let dir = self.direction(from);
        match found {
            Some(p) => {
                dir.lost_scanned += p as u64;
                dir.mode = Mode::Start;
                dir.after_resync = true;
                Some(p)
            }
            None => {
                dir.lost_scanned += data.len() as u64;
                if dir.lost_scanned > MAX_RESYNC_SCAN {
                    dir.mode = Mode::Off;
                } else {
                    dir.mode = Mode::Lost;
                }
                None
            }
        }
    }

    fn request_step(&mut self, data: &[u8], off: u64, at: Seen, out: &mut Vec<Message>) -> usize {
        match &mut self.req.mode {
            Mode::Off | Mode::Tunnel | Mode::Tentative => data.len(),
            Mode::Lost => match self.scan_lost(Role::Client, data) {
                Some(0) => self.request_step(data, off, at, out),
                Some(p) => p,
                None => data.len(),
            },
            Mode::Start => {
                // RFC 9112 §2.2: empty lines before a request line are ignored.
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
                    return self.request_step(data, off, at, out);
                }
                if !self.is_http {
                    // TLS, SSH, a database protocol...: not ours.
                    self.req.mode = Mode::Off;
                    return data.len();
                }
                if self.waiting.back().is_some_and(|w| w.connect || w.upgrade) {
                    self.req.mode = Mode::Tentative;
                    return data.len();
                }
                if !self.req.after_resync {
                    let excerpt = self.raw_excerpt(data);
                    out.push(self.flaw(
                        Flaw::NotARequest,
                        Role::Client,
                        at,
                        off,
                        Some(excerpt),
                        None,
                    ));
                }
                self.req.lose();
                data.len()
            }
            Mode::Head => {
                if self.req.head.is_empty()
                    && let Some(r) = head::complete_request(self.head_window(data))
                {
                    // The whole head in this segment, as almost always: parsed where it lies.
                    debug_assert_eq!(head_end(&[], data), Some(r.head_len));
                    let used = r.head_len;
                    self.is_http = true;
                    self.req.head_parsed();
                    self.new_request(r, at, at, off, out);
                    return used;
                }
                let (end, used) = self.buffer_head(Role::Client, data, off, at);
                match end {
                    Some(end) => {
                        self.on_request_head(end, at, out);
                        used
                    }
                    None => {
                        if let Some(line_end) = self.simple_request_line() {
                            // HTTP/0.9: `GET /path` alone on its line is the whole request.
                            let before = self.req.head.len() - used;
                            self.on_simple_request(line_end, at, out);
                            return line_end.saturating_sub(before).clamp(1, used);
                        }
                        if self.req.head.len() >= self.limits.max_head {
                            self.request_head_too_large(at, out);
                        }
                        used
                    }
                }
            }
            Mode::Body(_) => {
                if self.receiving_answered && self.req.body_count == 0 && starts_request(data) {
                    // The server answered before the body came (a refused 100-continue), and
                    // the client went on with its next request instead of the body.
                    if let Some(seq) = self.receiving.take() {
                        out.push(Message::RequestBodyDone { seq, at, body: 0 });
                    }
                    self.receiving_answered = false;
                    self.req.mode = Mode::Start;
                    return self.request_step(data, off, at, out);
                }
                self.body_step(Role::Client, data, off, at, out)
            }
        }
    }

    /// Feeds body bytes of the current request (client) or response (server); returns how
    /// many bytes belong to the body.
    fn body_step(
        &mut self,
        from: Role,
        data: &[u8],
        off: u64,
        at: Seen,
        out: &mut Vec<Message>,
    ) -> usize {
        let dir = self.direction(from);
        let Mode::Body(body) = &mut dir.mode else {
            return data.len();
        };
        let (used, done) = match body {
            Body::Length(left) => {
                let take = (*left).min(data.len() as u64);
                *left -= take;
                dir.body_count += take;
                (take as usize, *left == 0)
            }
            Body::Chunked(c) => {
                let fed = c.feed(data);
                let decoded = c.body_bytes;
                dir.body_count = decoded;
                match fed {
                    Fed::NeedMore => (data.len(), false),
                    Fed::Done { consumed } => (consumed, true),
                    Fed::Error { at: pos, error } => {
                        dir.lose();
                        let seq = match from {
                            Role::Client => self.receiving.take(),
                            Role::Server => self.answering.take().flatten(),
                        };
                        let excerpt = head::excerpt(
                            &data[pos.saturating_sub(8)..data.len().min(pos + 24)],
                            80,
                        );
                        out.push(self.flaw(
                            Flaw::Chunk(error),
                            from,
                            at,
                            off + pos as u64,
                            Some(excerpt),
                            seq,
                        ));
                        return data.len();
                    }
                }
            }
            Body::UntilClose => {
                dir.body_count += data.len() as u64;
                (data.len(), false)
            }
        };
        if done {
            self.body_done(from, at, out);
        }
        used.clamp(1, data.len())
    }

    /// The body of the message `from` is sending ended at `at`: the next byte starts a message.
    fn body_done(&mut self, from: Role, at: Seen, out: &mut Vec<Message>) {
        let dir = self.direction(from);
        dir.mode = Mode::Start;
        let body = dir.body_count;
        match from {
            Role::Client => {
                self.receiving_answered = false;
                if let Some(seq) = self.receiving.take() {
                    out.push(Message::RequestBodyDone { seq, at, body });
                }
            }
            Role::Server => {
                if let Some(seq) = self.answering.take() {
                    out.push(Message::ResponseBodyDone { seq, at, body });
                }
            }
        }
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

    fn new_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// A request whose head just ended: it waits for its answer, unless it joins the unpaired
    /// answer already being framed (which then answers it).
    fn await_answer(&mut self, w: Waiting, joins_answer: bool, out: &mut Vec<Message>) {
        if !joins_answer {
            self.wait_for_answer(w, out);
        } else if self.answering == Some(None) {
            self.answering = Some(Some(w.seq));
        }
    }

    fn wait_for_answer(&mut self, w: Waiting, out: &mut Vec<Message>) {
        if self.waiting.len() >= MAX_WAITING
            && let Some(old) = self.waiting.pop_front()
        {
            out.push(Message::Skipped { seq: old.seq });
        }
        self.waiting.push_back(w);
    }

    fn on_simple_request(&mut self, line_end: usize, at: Seen, out: &mut Vec<Message>) {
        let head = std::mem::take(&mut self.req.head);
        let line = String::from_utf8_lossy(&head[..line_end])
            .trim_end()
            .to_string();
        let (method, target) = line.split_once(' ').unwrap_or((&line, ""));
        self.is_http = true;
        let start = self.req.head_start.unwrap_or(at);
        let seq = self.new_seq();
        let request = RequestHead::simple(method, target, line_end);
        let joins_answer = self.joins_orphan(start);
        out.push(Message::Request {
            seq,
            start,
            head: Some(request),
            head_len: line_end,
            done: Some(at),
            joins_answer,
        });
        // Framed as HTTP/0.9 (its answer runs until close), and still a flaw: balancers
        // answer such a request 400.
        let excerpt = self.raw_excerpt(&head[..line_end]);
        out.push(self.flaw(
            Flaw::Head(HeadProblem::RequestLineNoVersion),
            Role::Client,
            start,
            self.req.head_offset,
            Some(excerpt),
            Some(seq),
        ));
        self.await_answer(
            Waiting {
                simple: true,
                ..Waiting::plain(seq, start)
            },
            joins_answer,
            out,
        );
        self.req.head = head;
        self.req.reset_head();
        self.req.mode = Mode::Start;
        self.req.after_resync = false;
    }

    fn request_head_too_large(&mut self, at: Seen, out: &mut Vec<Message>) {
        let first_line = self.req.head.iter().position(|&b| b == b'\n');
        let start = self.req.head_start.unwrap_or(at);
        let excerpt = self.raw_excerpt(&self.req.head[..self.req.head.len().min(60)]);
        let offset = self.req.head_offset;
        out.push(self.flaw(
            Flaw::RequestHeadTooLarge { first_line },
            Role::Client,
            start,
            offset,
            Some(excerpt),
            None,
        ));
        self.req.lose();
    }

    fn on_request_head(&mut self, end: usize, at: Seen, out: &mut Vec<Message>) {
        let start = self.req.head_start.unwrap_or(at);
        let offset = self.req.head_offset;
        let parsed = head::parse_request(&self.req.head[..end]);
        let known_method = KNOWN_METHODS.iter().any(|m| {
            self.req.head.starts_with(m.as_bytes()) && self.req.head.get(m.len()) == Some(&b' ')
        });
        match parsed {
            Ok(r) => {
                self.is_http = true;
                self.req.head_parsed();
                self.new_request(r, start, at, offset, out);
            }
            Err(_) if !self.is_http && !known_method => {
                // Some other text protocol that happens to start with a capitalised word.
                self.req.reset_head();
                self.req.mode = Mode::Off;
                self.resp.mode = Mode::Off;
            }
            Err(_) if self.req.after_resync => {
                // A line in a body we lost our place in, not a request.
                self.req.lose();
            }
            Err(HeadError {
                offset: pos,
                problem,
            }) => {
                self.is_http = true;
                let frame = self.req.frame_at(pos);
                let excerpt = self.head_excerpt(Role::Client, pos, end);
                // The server may still answer it (with 400): pair that answer with it.
                let seq = self.new_seq();
                let joins_answer = self.joins_orphan(start);
                out.push(Message::Request {
                    seq,
                    start,
                    head: None,
                    head_len: end,
                    done: Some(at),
                    joins_answer,
                });
                out.push(self.flaw(
                    Flaw::Head(problem),
                    Role::Client,
                    frame,
                    offset + pos as u64,
                    Some(excerpt),
                    Some(seq),
                ));
                self.await_answer(Waiting::plain(seq, start), joins_answer, out);
                self.req.lose();
            }
        }
    }

    fn new_request(
        &mut self,
        r: RequestHead,
        start: Seen,
        at: Seen,
        offset: u64,
        out: &mut Vec<Message>,
    ) {
        let seq = self.new_seq();
        let flaw =
            |this: &Framer, f: Flaw| this.flaw(f, Role::Client, start, offset, None, Some(seq));
        let f = &r.framing;
        let mut flaws = Vec::new();
        let body = match (&f.content_length, f.transfer_encoding) {
            (ContentLength::Absent, false) => None,
            (_, true) => {
                let with_length = !matches!(f.content_length, ContentLength::Absent);
                if f.chunked {
                    if with_length {
                        flaws.push(flaw(self, Flaw::LengthWithChunked));
                    }
                    Some(Body::Chunked(Chunked::default()))
                } else {
                    // RFC 9112 §6.3: a request whose final coding is not chunked cannot be framed.
                    flaws.push(flaw(self, Flaw::CodingNotChunked { with_length }));
                    None
                }
            }
            (ContentLength::Valid(0), false) => None,
            (ContentLength::Valid(n), false) => Some(Body::Length(*n)),
            (ContentLength::Conflicting(v), false) => {
                flaws.push(flaw(self, Flaw::ConflictingLengths(v.clone())));
                None
            }
            (ContentLength::Invalid(v), false) => {
                flaws.push(flaw(self, Flaw::InvalidLength(v.clone())));
                None
            }
        };
        self.req.body_declared = match f.content_length {
            ContentLength::Valid(n) => Some(n),
            _ => None,
        };
        self.req.body_count = 0;
        let waiting = Waiting {
            seq,
            start,
            head_method: r.method == "HEAD",
            connect: r.method == "CONNECT",
            upgrade: r.upgrade,
            simple: false,
        };
        let head_len = r.head_len;
        let has_body = body.is_some();
        let joins_answer = self.joins_orphan(start);
        out.push(Message::Request {
            seq,
            start,
            head: Some(r),
            head_len,
            done: (!has_body).then_some(at),
            joins_answer,
        });
        out.extend(flaws);
        self.receiving_answered = joins_answer;
        self.await_answer(waiting, joins_answer, out);
        match body {
            Some(b) => {
                self.receiving = Some(seq);
                self.req.mode = Mode::Body(b);
            }
            None => self.req.mode = Mode::Start,
        }
    }

    /// Which waiting request a response that begins now answers. In order, as RFC 9112 says,
    /// unless the server's stream lost bytes since the last answer: then the answers in the gap
    /// are unknown, and the response answers the latest request sent before it began (the
    /// client of a keep-alive connection sends the next request after the previous answer).
    fn take_answered(&mut self, start: Seen, out: &mut Vec<Message>) -> Option<Waiting> {
        if std::mem::take(&mut self.response_lost) {
            let before = self
                .waiting
                .iter()
                .rposition(|w| w.start.frame <= start.frame);
            match before {
                Some(i) => {
                    for skipped in self.waiting.drain(..i) {
                        out.push(Message::Skipped { seq: skipped.seq });
                    }
                }
                None => return None,
            }
        }
        let answered = self.waiting.pop_front();
        if answered.is_none() {
            self.orphan = Some(start);
        }
        answered
    }

    fn response_step(&mut self, data: &[u8], off: u64, at: Seen, out: &mut Vec<Message>) -> usize {
        match &mut self.resp.mode {
            Mode::Off | Mode::Tunnel | Mode::Tentative => data.len(),
            Mode::Lost => match self.scan_lost(Role::Server, data) {
                Some(0) => self.response_step(data, off, at, out),
                Some(p) => p,
                None => data.len(),
            },
            Mode::Start => {
                if self.waiting.front().is_some_and(|w| w.simple) && !self.response_lost {
                    // An HTTP/0.9 answer has no status line: its body runs until close.
                    let w = self.waiting.pop_front().expect("front exists");
                    self.answering = Some(Some(w.seq));
                    out.push(Message::Response {
                        seq: Some(w.seq),
                        start: at,
                        head: ResponseHead::simple(),
                        until_close: true,
                        done: None,
                        tunnel: false,
                    });
                    self.resp.body_count = 0;
                    self.resp.body_declared = None;
                    self.resp.mode = Mode::Body(Body::UntilClose);
                    return self.response_step(data, off, at, out);
                }
                // Empty lines between messages: a CRLF after a body is a common slip that
                // recipients tolerate (RFC 9112 §2.2).
                let blank = data
                    .iter()
                    .take_while(|b| **b == b'\r' || **b == b'\n')
                    .count();
                if blank > 0 {
                    return blank;
                }
                if is_prefix_of(data, b"HTTP/") {
                    self.resp.mode = Mode::Head;
                    return self.response_step(data, off, at, out);
                }
                if !self.is_http {
                    // Server bytes before any request: a capture that wrote the response before
                    // the request (clock or queue skew between directions), or a protocol where
                    // the server speaks first. Hold a little until a request shows up.
                    if self.early_bytes + data.len() <= EARLY_RESPONSE_KEPT {
                        self.early_bytes += data.len();
                        self.early.push((off, data.to_vec(), at));
                    } else {
                        self.early.clear();
                        self.early_bytes = 0;
                        self.resp.mode = Mode::Off;
                    }
                    return data.len();
                }
                let tls_reply =
                    data.len() >= 2 && (data[0] == 0x15 || data[0] == 0x16) && data[1] == 0x03;
                let excerpt = Some(head::excerpt(&data[..data.len().min(48)], 80));
                if !self.resp.after_resync {
                    if let Some(w) = self.take_answered(at, out) {
                        let flaw = if tls_reply {
                            Flaw::TlsAnswer
                        } else {
                            Flaw::NotAResponse
                        };
                        out.push(self.flaw(flaw, Role::Server, at, off, excerpt, Some(w.seq)));
                    } else {
                        out.push(self.flaw(
                            Flaw::AfterLastResponse,
                            Role::Server,
                            at,
                            off,
                            excerpt,
                            None,
                        ));
                    }
                }
                self.resp.lose();
                data.len()
            }
            Mode::Head => {
                if self.resp.head.is_empty()
                    && let Some(r) = head::complete_response(self.head_window(data))
                {
                    debug_assert_eq!(head_end(&[], data), Some(r.head_len));
                    let used = r.head_len;
                    self.resp.head_parsed();
                    self.on_response(r, at, at, off, out);
                    return used;
                }
                let (end, used) = self.buffer_head(Role::Server, data, off, at);
                if self.resp.head.len() >= 5 && !self.resp.head.starts_with(b"HTTP/") {
                    // It looked like the start of a status line until more bytes came.
                    let start = self.resp.head_start.unwrap_or(at);
                    let offset = self.resp.head_offset;
                    let head = std::mem::take(&mut self.resp.head);
                    self.resp.mode = Mode::Start;
                    self.response_step(&head, offset, start, out);
                    self.resp.head = head;
                    self.resp.reset_head();
                    return used;
                }
                match end {
                    Some(end) => {
                        self.on_response_head(end, at, out);
                        used
                    }
                    None => {
                        if self.resp.head.len() >= self.limits.max_head {
                            let start = self.resp.head_start.unwrap_or(at);
                            if !self.resp.after_resync {
                                let seq = self.take_answered(start, out).map(|w| w.seq);
                                let offset = self.resp.head_offset;
                                out.push(self.flaw(
                                    Flaw::ResponseHeadTooLarge,
                                    Role::Server,
                                    start,
                                    offset,
                                    None,
                                    seq,
                                ));
                            }
                            self.resp.lose();
                        }
                        used
                    }
                }
            }
            Mode::Body(_) => self.body_step(Role::Server, data, off, at, out),
        }
    }

    fn on_response_head(&mut self, end: usize, at: Seen, out: &mut Vec<Message>) {
        let start = self.resp.head_start.unwrap_or(at);
        let offset = self.resp.head_offset;
        match head::parse_response(&self.resp.head[..end]) {
            Ok(r) => {
                self.resp.head_parsed();
                self.on_response(r, start, at, offset, out);
            }
            Err(_) if self.resp.after_resync => self.resp.lose(),
            Err(HeadError {
                offset: pos,
                problem,
            }) => {
                let frame = self.resp.frame_at(pos);
                let excerpt = self.head_excerpt(Role::Server, pos, end);
                let seq = self.take_answered(start, out).map(|w| w.seq);
                out.push(self.flaw(
                    Flaw::Head(problem),
                    Role::Server,
                    frame,
                    offset + pos as u64,
                    Some(excerpt),
                    seq,
                ));
                self.resp.lose();
            }
        }
    }

    fn on_response(
        &mut self,
        r: ResponseHead,
        start: Seen,
        at: Seen,
        offset: u64,
        out: &mut Vec<Message>,
    ) {
        if (100..200).contains(&r.status) && r.status != 101 {
            out.push(Message::Interim {
                seq: self.waiting.front().map(|w| w.seq),
                at: start,
            });
            self.resp.mode = Mode::Start;
            return;
        }
        let answered = self.take_answered(start, out);
        let seq = answered.map(|w| w.seq);
        if self.receiving.is_some() && self.receiving == seq {
            self.receiving_answered = true;
        }
        let flaw = |this: &Framer, f: Flaw| this.flaw(f, Role::Server, start, offset, None, seq);
        let mut flaws = Vec::new();
        let f = &r.framing;
        let head_method = answered.is_some_and(|w| w.head_method);
        let no_body = head_method || r.status == 204 || r.status == 304;
        let tunnel = r.status == 101
            || (answered.is_some_and(|w| w.connect) && (200..300).contains(&r.status));
        let declared = match f.content_length {
            ContentLength::Valid(n) => Some(n),
            _ => None,
        };
        let body = if tunnel || no_body {
            None
        } else if f.transfer_encoding {
            let with_length = !matches!(f.content_length, ContentLength::Absent);
            if f.chunked {
                if with_length {
                    flaws.push(flaw(self, Flaw::LengthWithChunked));
                }
                Some(Body::Chunked(Chunked::default()))
            } else {
                // RFC 9112 §6.3: the body runs until the server closes.
                if with_length {
                    flaws.push(flaw(self, Flaw::CodingNotChunked { with_length }));
                }
                Some(Body::UntilClose)
            }
        } else {
            match &f.content_length {
                ContentLength::Absent => Some(Body::UntilClose),
                ContentLength::Valid(0) => None,
                ContentLength::Valid(n) => Some(Body::Length(*n)),
                ContentLength::Conflicting(v) => {
                    flaws.push(flaw(self, Flaw::ConflictingLengths(v.clone())));
                    Some(Body::UntilClose)
                }
                ContentLength::Invalid(v) => {
                    flaws.push(flaw(self, Flaw::InvalidLength(v.clone())));
                    Some(Body::UntilClose)
                }
            }
        };
        let until_close = matches!(body, Some(Body::UntilClose));
        self.resp.body_count = 0;
        self.resp.body_declared = declared;
        out.push(Message::Response {
            seq,
            start,
            head: r,
            until_close,
            done: body.is_none().then_some(at),
            tunnel,
        });
        out.extend(flaws);
        if tunnel {
            self.req.mode = Mode::Tunnel;
            self.resp.mode = Mode::Tunnel;
            return;
        }
        if matches!(self.req.mode, Mode::Tentative) {
            // The client spoke the new protocol early, but the server declined: whatever it
            // sent was not HTTP, and the next request starts somewhere after it.
            self.req.after_resync = true;
            self.req.lose();
        }
        match body {
            None => self.resp.mode = Mode::Start,
            Some(b) => {
                self.answering = Some(seq);
                self.resp.mode = Mode::Body(b);
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::head_end;

    #[test]
    fn test_head_end_across_segments() {
        assert_eq!(head_end(b"", b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n", b"\r\nbody"), Some(2));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r", b"\nbody"), Some(1));
        assert_eq!(head_end(b"GET / HTTP/1.1\n", b"\nx"), Some(1));
        assert_eq!(head_end(b"", b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head_end(b"", b"\n"), None);
    }
}
