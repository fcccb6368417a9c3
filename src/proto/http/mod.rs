//! HTTP/1.x over the two reassembled streams of a connection, detected by content (any port).
//! [`framer`] turns bytes into messages (RFC 9112); this module pairs them into
//! [`Transaction`]s and hands each one on the moment it completes, then keeps only the last few.
//! A connection holds its open transactions and counters, never its history. What a
//! transaction or a flaw explains is decided in `detect/http.rs`.

pub mod chunked;
pub mod framer;
pub mod head;
pub mod redact;

use crate::flow::{Role, Seen};
pub use framer::{Flaw, FlawAt, HttpPhase, InProgress, KNOWN_METHODS};
use framer::{Framer, Message};
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct HttpLimits {
    /// A head is buffered up to this many bytes; beyond it, it is too large to follow.
    pub max_head: usize,
    /// Keep credentials (Authorization, cookies, token-like query parameters) in reports.
    pub show_secrets: bool,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_head: 64 * 1024,
            show_secrets: false,
        }
    }
}

/// Open transactions kept per connection, at most: beyond it (a pipeline no server keeps up
/// with) the oldest is handed on as it stands.
const MAX_OPEN: usize = 1024;

/// Flaws kept per transaction; each is about one message, so a few is all there can be.
const MAX_FLAWS: usize = 8;

/// Judged transactions kept for the connection's end, which may still change what they mean
/// (a client that closed before an answer that came later).
const RECENT_KEPT: usize = 4;

/// The first line of a request, as far as a report needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestLine {
    pub method: head::Method,
    /// Cut to a length fit for a report, before redaction.
    pub target: String,
    pub target_len: usize,
    /// 9 for HTTP/0.9, 0 for 1.0, 1 for 1.1.
    pub version: u8,
}

/// One request and its response.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Transaction {
    /// The request's number on the connection; `None` when the capture holds no request for
    /// this response.
    pub seq: Option<u64>,
    /// `None` when the request was not captured, or its head did not parse.
    pub line: Option<RequestLine>,
    /// A request head that did not parse (its flaw says why).
    pub malformed_request: bool,
    pub request: Option<Seen>,
    pub request_head_len: usize,
    /// When the last byte of the request (head and body) arrived.
    pub request_complete: Option<Seen>,
    pub request_body: u64,
    pub request_declared: Option<u64>,
    pub expect_continue: bool,
    pub upgrade: bool,
    /// The request carries a header proxies add when forwarding.
    pub forwarded: bool,
    pub alb_trace_headers: usize,
    pub alb_trace_repeated: bool,
    /// `X-Amzn-Trace-Id` and `X-Request-Id`, for joining access-log lines.
    pub trace_ids: head::TraceIds,
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
    /// The connection switched protocols (101, or a CONNECT tunnel) after this exchange.
    pub tunnel: bool,
    /// A capture gap fell inside this exchange, or swallowed its answer: nothing about its
    /// completeness is certain.
    pub gap: bool,
    /// What framing found wrong with its request or response.
    pub flaws: Vec<FlawAt>,
    /// The user asked to see credentials in reports.
    pub show_secrets: bool,
    /// An answer without a request that a request may still join.
    joinable: bool,
}

impl Transaction {
    pub fn method(&self) -> Option<&str> {
        self.line.as_ref().map(|l| l.method.as_str())
    }

    /// `METHOD target` for a report, secrets redacted unless asked for.
    pub fn request_line(&self) -> String {
        match &self.line {
            None if self.malformed_request => "(a request that does not parse)".to_string(),
            None => "(request not captured)".to_string(),
            Some(l) => {
                let target = if self.show_secrets {
                    l.target.clone()
                } else {
                    redact::redact_target(&l.target)
                };
                format!("{} {target}", l.method)
            }
        }
    }

    /// The server's final answer began before the request had all arrived: it answered (or
    /// refused) a request it had not read.
    pub fn answered_early(&self) -> bool {
        match (self.response, self.request_complete) {
            (Some(r), Some(c)) => r.frame < c.frame,
            (Some(_), None) => true,
            _ => false,
        }
    }

    fn is_complete(&self) -> bool {
        !self.joinable
            && self.response_complete.is_some()
            && (self.request_complete.is_some() || self.answered_early() || self.seq.is_none())
    }
}

/// What the HTTP analyzer hands on as it goes.
#[derive(Debug)]
pub enum HttpEvent<'a> {
    /// A transaction completed; it is dropped (kept among the last few) afterwards.
    Done(&'a Transaction),
    /// A flaw that belongs to no open transaction, with the last one judged for context.
    Flaw {
        flaw: &'a FlawAt,
        last: Option<&'a Transaction>,
    },
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct HttpConn {
    framer: Framer,
    /// The last few judged transactions (the first `judged`), then the open ones. One queue:
    /// a transaction completes in place, the common oldest open one without moving at all.
    txns: VecDeque<Transaction>,
    judged: usize,
    messages: Vec<Message>,
    show_secrets: bool,
    /// Transactions seen on this connection.
    pub transactions: u64,
}

impl HttpConn {
    pub fn new(start_captured: bool, limits: HttpLimits) -> HttpConn {
        HttpConn {
            framer: Framer::new(start_captured, limits),
            txns: VecDeque::new(),
            judged: 0,
            messages: Vec::new(),
            show_secrets: limits.show_secrets,
            transactions: 0,
        }
    }

    /// Requests were seen: this connection carries HTTP.
    pub fn is_http(&self) -> bool {
        self.framer.is_http
    }

    /// Times the framer lost its place after a gap (reported as a capture warning).
    pub fn resyncs(&self) -> u32 {
        self.framer.resyncs
    }

    pub fn buffered_bytes(&self) -> usize {
        self.framer.buffered_bytes()
    }

    pub fn shed_buffers(&mut self) {
        self.framer.shed_buffers();
    }

    pub fn phase(&self) -> HttpPhase {
        self.framer.phase()
    }

    pub fn request_head_start(&self) -> Option<Seen> {
        self.framer.request_head_start()
    }

    pub fn request_in_progress(&self) -> Option<InProgress> {
        self.framer.request_in_progress()
    }

    pub fn response_in_progress(&self) -> Option<InProgress> {
        self.framer.response_in_progress()
    }

    /// Transactions not yet complete, oldest first.
    pub fn open(&self) -> std::collections::vec_deque::Iter<'_, Transaction> {
        self.txns.range(self.judged..)
    }

    /// The last transactions judged, oldest first.
    pub fn recent(&self) -> std::collections::vec_deque::Iter<'_, Transaction> {
        self.txns.range(..self.judged)
    }

    /// The latest transaction, open or judged.
    pub fn last(&self) -> Option<&Transaction> {
        self.txns.back()
    }

    pub fn find(&self, seq: Option<u64>) -> Option<&Transaction> {
        let seq = seq?;
        self.open()
            .chain(self.recent())
            .find(|t| t.seq == Some(seq))
    }

    fn open_len(&self) -> usize {
        self.txns.len() - self.judged
    }

    /// The open transaction at position `i` among the open ones.
    fn open_at(&mut self, i: usize) -> &mut Transaction {
        &mut self.txns[self.judged + i]
    }

    fn open_get(&self, i: usize) -> Option<&Transaction> {
        if i < self.open_len() {
            self.txns.get(self.judged + i)
        } else {
            None
        }
    }

    fn last_judged(&self) -> Option<&Transaction> {
        self.judged.checked_sub(1).and_then(|i| self.txns.get(i))
    }

    pub fn on_data(
        &mut self,
        from: Role,
        offset: u64,
        bytes: &[u8],
        at: Seen,
        sink: &mut dyn FnMut(HttpEvent<'_>),
    ) {
        self.frame(sink, |f, m| f.on_data(from, offset, bytes, at, m));
    }

    pub fn on_gap(&mut self, from: Role, len: u64, at: Seen, sink: &mut dyn FnMut(HttpEvent<'_>)) {
        self.frame(sink, |f, m| f.on_gap(from, len, at, m));
    }

    /// The server closed its side: a body delimited by the close is complete.
    pub fn on_server_close(&mut self, at: Seen, sink: &mut dyn FnMut(HttpEvent<'_>)) {
        self.frame(sink, |f, m| f.on_server_close(at, m));
    }

    /// Lets the framer turn input into messages, then pairs them; the message buffer is kept
    /// for the next call, so framing allocates nothing per segment.
    fn frame(
        &mut self,
        sink: &mut dyn FnMut(HttpEvent<'_>),
        input: impl FnOnce(&mut Framer, &mut Vec<Message>),
    ) {
        let mut messages = std::mem::take(&mut self.messages);
        input(&mut self.framer, &mut messages);
        self.apply(&mut messages, sink);
        self.messages = messages;
    }

    fn position(&self, seq: Option<u64>) -> Option<usize> {
        match seq {
            Some(s) => self.open().rposition(|t| t.seq == Some(s)),
            // An answer to no captured request: the latest one of those.
            None => self.open().rposition(|t| t.seq.is_none()),
        }
    }

    fn apply(&mut self, messages: &mut Vec<Message>, sink: &mut dyn FnMut(HttpEvent<'_>)) {
        for m in messages.drain(..) {
            let touched = self.pair(m, sink);
            if let Some(i) = touched
                && self.open_get(i).is_some_and(Transaction::is_complete)
            {
                self.complete(i, sink);
            }
        }
    }

    /// Applies one message; returns the position of the open transaction it changed.
    fn pair(&mut self, m: Message, sink: &mut dyn FnMut(HttpEvent<'_>)) -> Option<usize> {
        match m {
            Message::Request {
                seq,
                start,
                head,
                head_len,
                done,
                joins_answer,
            } => {
                self.transactions += 1;
                let joined = if joins_answer {
                    self.open().rposition(|t| t.joinable)
                } else {
                    None
                };
                // Any other unpaired answer will not be joined now.
                for i in (0..self.open_len()).rev() {
                    if self.open_at(i).joinable && Some(i) != joined {
                        self.open_at(i).joinable = false;
                        if self.open_at(i).is_complete() {
                            self.complete(i, sink);
                        }
                    }
                }
                let i = match joined.and_then(|_| self.open().rposition(|t| t.joinable)) {
                    Some(i) => i,
                    None => {
                        if self.open_len() >= MAX_OPEN {
                            self.complete(0, sink);
                        }
                        self.txns.push_back(Transaction {
                            show_secrets: self.show_secrets,
                            ..Transaction::default()
                        });
                        self.open_len() - 1
                    }
                };
                let t = self.open_at(i);
                t.joinable = false;
                t.seq = Some(seq);
                t.request = Some(start);
                t.request_head_len = head_len;
                t.request_complete = done;
                match head {
                    Some(h) => {
                        t.request_declared = match h.framing.content_length {
                            head::ContentLength::Valid(n) => Some(n),
                            _ => None,
                        };
                        t.expect_continue = h.expect_continue;
                        t.upgrade = h.upgrade;
                        t.forwarded = h.forwarded;
                        t.alb_trace_headers = h.alb_trace_headers;
                        t.alb_trace_repeated = h.alb_trace_repeated;
                        t.trace_ids = h.trace_ids;

                        t.line = Some(RequestLine {
                            method: h.method,
                            target: h.target,
                            target_len: h.target_len,
                            version: h.version,
                        });
                    }
                    None => t.malformed_request = true,
                }
                Some(i)
            }
            Message::RequestBodyDone { seq, at, body } => {
                let i = self.position(Some(seq))?;
                let t = self.open_at(i);
                t.request_body = body;
                t.request_complete = Some(at);
                Some(i)
            }
            Message::Interim { seq, .. } => {
                let i = self.position(seq)?;
                self.open_at(i).interim_responses += 1;
                None
            }
            Message::Response {
                seq,
                start,
                head,
                until_close,
                done,
                tunnel,
            } => {
                let i = match seq.and_then(|s| self.position(Some(s))) {
                    Some(i) => i,
                    None => {
                        // An answer to a request the capture does not hold (yet).
                        for j in (0..self.open_len()).rev() {
                            if self.open_at(j).joinable {
                                self.open_at(j).joinable = false;
                                if self.open_at(j).is_complete() {
                                    self.complete(j, sink);
                                }
                            }
                        }
                        if self.open_len() >= MAX_OPEN {
                            self.complete(0, sink);
                        }
                        self.txns.push_back(Transaction {
                            seq,
                            joinable: seq.is_none(),
                            show_secrets: self.show_secrets,
                            ..Transaction::default()
                        });
                        self.open_len() - 1
                    }
                };
                let t = self.open_at(i);

                t.status = (head.version != 9).then_some(head.status);
                t.reason = head.reason;
                t.response = Some(start);
                t.response_declared = match head.framing.content_length {
                    head::ContentLength::Valid(n) => Some(n),
                    _ => None,
                };
                t.response_until_close = until_close;
                t.tunnel = tunnel;
                t.qps_limited = head.qps_limited;
                t.response_complete = done;
                Some(i)
            }
            Message::ResponseBodyDone { seq, at, body } => {
                let i = self.position(seq)?;
                let t = self.open_at(i);
                t.response_body = body;
                t.response_complete = Some(at);
                Some(i)
            }
            Message::Skipped { seq } | Message::Gap { seq } => {
                let skipped = matches!(m, Message::Skipped { .. });
                let i = self.position(Some(seq))?;
                self.open_at(i).gap = true;
                if skipped {
                    // Its answer is in the gap: it is as complete as it will ever be.
                    self.complete(i, sink);
                    return None;
                }
                Some(i)
            }
            Message::Flaw(f) => {
                match f.seq.and_then(|s| self.position(Some(s))) {
                    Some(i) => {
                        let t = self.open_at(i);
                        // A broken answer (or a broken body) is the end of that message: the
                        // flaw is what there is to say about it.
                        match (f.from, &f.flaw) {
                            (
                                Role::Server,
                                Flaw::NotAResponse
                                | Flaw::TlsAnswer
                                | Flaw::Head(_)
                                | Flaw::ResponseHeadTooLarge
                                | Flaw::Chunk(_),
                            ) => {
                                t.response.get_or_insert(f.at);
                                t.response_complete.get_or_insert(f.at);
                            }
                            (Role::Client, Flaw::Chunk(_)) => {
                                t.request_complete.get_or_insert(f.at);
                            }
                            _ => {}
                        }
                        if t.flaws.len() < MAX_FLAWS {
                            t.flaws.push(f);
                        }
                        Some(i)
                    }
                    None => {
                        sink(HttpEvent::Flaw {
                            flaw: &f,
                            last: self.last_judged(),
                        });
                        None
                    }
                }
            }
        }
    }

    /// Judges the open transaction at `i` and keeps it among the recent ones.
    fn complete(&mut self, i: usize, sink: &mut dyn FnMut(HttpEvent<'_>)) {
        if i >= self.open_len() {
            return;
        }
        if i > 0 {
            // Out of order (a pipelined answer skipped ahead): it joins the judged ones last.
            let t = self
                .txns
                .remove(self.judged + i)
                .expect("position is valid");
            self.txns.insert(self.judged, t);
        }
        self.judged += 1;
        sink(HttpEvent::Done(&self.txns[self.judged - 1]));
        if self.judged > RECENT_KEPT {
            self.txns.pop_front();
            self.judged -= 1;
        }
    }
}

#[cfg(test)]
pub(crate) mod test;
