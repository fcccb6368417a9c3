//! Request and response heads: parsed with httparse (which allocates nothing), then the headers
//! that decide framing and the balancer-specific ones are read. When httparse rejects a head,
//! we find the line it choked on so the report can point at the byte.

use httparse::{Header, Status};
use std::mem::MaybeUninit;

/// More header fields than this in one head is itself a malformed message.
const MAX_HEADERS: usize = 128;

/// Longest trace id kept: real ones are under 100 bytes, and a longer value is not worth a
/// heap string per request.
pub const TRACE_ID_KEPT: usize = 128;

/// The request's trace headers, which a balancer's log also writes: the strongest key between
/// a log line and a request. Empty (and allocation-free) when the request carries neither.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceIds {
    /// `X-Amzn-Trace-Id`, as sent.
    pub amzn: Option<Box<str>>,
    /// `X-Request-Id` (nginx's `$request_id` when it sets the header for its backends).
    pub request_id: Option<Box<str>>,
}

impl TraceIds {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        [self.amzn.as_deref(), self.request_id.as_deref()]
            .into_iter()
            .flatten()
    }

    /// The first value of each header; one longer than [`TRACE_ID_KEPT`], empty, or not UTF-8
    /// is not kept (it could not be matched whole anyway).
    fn keep(slot: &mut Option<Box<str>>, value: &[u8]) {
        if slot.is_some() {
            return;
        }
        let v = trim_bytes(value);
        if v.is_empty() || v.len() > TRACE_ID_KEPT {
            return;
        }
        if let Ok(s) = std::str::from_utf8(v) {
            *slot = Some(s.into());
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ContentLength {
    Absent,
    Valid(u64),
    /// Several values that disagree.
    Conflicting(Vec<String>),
    /// A value that is not a plain decimal number (or does not fit in 63 bits).
    Invalid(String),
}

/// What the framing of a message depends on.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Framing {
    pub content_length: ContentLength,
    pub transfer_encoding: bool,
    /// Transfer-Encoding whose final coding is chunked.
    pub chunked: bool,
    pub connection_close: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RequestHead {
    pub method: Method,
    /// The target, cut to a length fit for a report (before redaction).
    pub target: String,
    pub target_len: usize,
    pub version: u8,
    pub head_len: usize,
    pub framing: Framing,
    pub expect_continue: bool,
    pub upgrade: bool,
    /// A header a proxy adds when it forwards a request (`X-Forwarded-For`, `Via`, ...).
    pub forwarded: bool,
    pub alb_trace_headers: usize,
    pub alb_trace_repeated: bool,
    pub trace_ids: TraceIds,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub version: u8,
    pub head_len: usize,
    pub framing: Framing,
    pub qps_limited: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadError {
    /// Offset within the head of the line (or byte) that is wrong.
    pub offset: usize,
    pub problem: HeadProblem,
}

/// What is wrong with a head, as precisely as the bytes tell: the report names it, so
/// "the method is not a valid token" must only be said of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HeadProblem {
    /// Two spaces in a row (or a leading space) in the request line.
    RequestLineExtraSpace,
    /// `OPTIONS HTTP/1.1`: a method and a version, no target.
    RequestLineNoTarget,
    /// `GET /path` and nothing else: an HTTP/0.9 request, which has no headers.
    RequestLineNoVersion,
    /// More than three space-separated parts: a space inside the target.
    RequestTargetHasSpace,
    MethodNotToken,
    /// A byte a request target may not hold (control character, DEL).
    RequestTargetInvalidByte,
    RequestVersionInvalid,
    StatusLineVersionInvalid,
    StatusCodeInvalid,
    StatusLineInvalid,
    /// A line that begins with a space or tab continues the previous header (RFC 9112 §5.2:
    /// obsolete line folding, which a recipient must reject or replace).
    ObsFold,
    HeaderWithoutColon,
    HeaderNameInvalid,
    HeaderValueInvalid,
    TooManyHeaders,
    BareCr,
    /// The head never reached its blank line.
    Unfinished,
}

impl std::fmt::Display for HeadProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeadProblem::RequestLineExtraSpace => {
                "the request line has more than one space between its parts"
            }
            HeadProblem::RequestLineNoTarget => "the request line has no target",
            HeadProblem::RequestLineNoVersion => {
                "the request line has no HTTP version (an HTTP/0.9 request)"
            }
            HeadProblem::RequestTargetHasSpace => "the request target contains a space",
            HeadProblem::MethodNotToken => "the method is not a valid token",
            HeadProblem::RequestTargetInvalidByte => {
                "the request target contains a control character"
            }
            HeadProblem::RequestVersionInvalid => {
                "the request line does not end with HTTP/1.0 or HTTP/1.1"
            }
            HeadProblem::StatusLineVersionInvalid => {
                "the status line does not start with HTTP/1.0 or HTTP/1.1"
            }
            HeadProblem::StatusCodeInvalid => {
                "the status line has no valid three-digit status code"
            }
            HeadProblem::StatusLineInvalid => "invalid status line",
            HeadProblem::ObsFold => {
                "a header line folded onto the next one (obs-fold: the line starts with a space or tab)"
            }
            HeadProblem::HeaderWithoutColon => "a header line has no colon",
            HeadProblem::HeaderNameInvalid => {
                "invalid header name (space or a character a name may not hold)"
            }
            HeadProblem::HeaderValueInvalid => {
                "invalid byte in a header value (control character or bare CR)"
            }
            HeadProblem::TooManyHeaders => "more than 128 header fields",
            HeadProblem::BareCr => "invalid line ending (bare CR)",
            HeadProblem::Unfinished => "head ends before its blank line",
        })
    }
}

pub const TARGET_KEPT: usize = 256;

/// A request method, kept inline: there is one per request, and a heap string each would be a
/// good part of what a small transaction costs.
#[derive(Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Method {
    bytes: [u8; 32],
    len: u8,
}

impl Method {
    pub fn new(s: &str) -> Method {
        let s = prefix(s, 32);
        let mut m = Method::default();
        let n = s.len().min(32);
        m.bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
        m.len = n as u8;
        m
    }

    pub fn as_str(&self) -> &str {
        let b = &self.bytes[..self.len as usize];
        // The common methods without validating UTF-8 again: this runs per request, several
        // times (pairing, detectors, hashing).
        match b {
            b"GET" => "GET",
            b"POST" => "POST",
            b"PUT" => "PUT",
            b"HEAD" => "HEAD",
            b"DELETE" => "DELETE",
            b"PATCH" => "PATCH",
            b"OPTIONS" => "OPTIONS",
            // Built from a `str` cut at a character boundary.
            _ => std::str::from_utf8(b).unwrap_or(""),
        }
    }
}

impl std::ops::Deref for Method {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::hash::Hash for Method {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<&str> for Method {
    fn eq(&self, other: &&str) -> bool {
        &self.bytes[..self.len as usize] == other.as_bytes()
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The first `n` characters of `s`, without walking it char by char when it is short.
fn prefix(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

impl Framing {
    fn none() -> Framing {
        Framing {
            content_length: ContentLength::Absent,
            transfer_encoding: false,
            chunked: false,
            connection_close: true,
        }
    }
}

impl RequestHead {
    /// An HTTP/0.9 request: a method and a target, nothing else.
    pub fn simple(method: &str, target: &str, head_len: usize) -> RequestHead {
        RequestHead {
            method: Method::new(method),
            target: prefix(target, TARGET_KEPT).to_string(),
            target_len: target.len(),
            version: 9,
            head_len,
            framing: Framing::none(),
            expect_continue: false,
            upgrade: false,
            forwarded: false,
            alb_trace_headers: 0,
            alb_trace_repeated: false,
            trace_ids: TraceIds::default(),
        }
    }
}

impl ResponseHead {
    /// The answer to an HTTP/0.9 request: no status line, a body until close.
    pub fn simple() -> ResponseHead {
        ResponseHead {
            status: 0,
            reason: String::new(),
            version: 9,
            head_len: 0,
            framing: Framing::none(),
            qps_limited: false,
        }
    }
}

/// The framing headers of a head, read as the one loop over its headers passes them. The
/// common head has one Content-Length or none and one coding: they are read without
/// allocating; lists are built only for the rare head that needs reporting.
#[derive(Default)]
struct FramingScan {
    length: Option<Result<u64, ()>>,
    conflicting: bool,
    te_seen: bool,
    last_coding_chunked: bool,
    connection_close: bool,
}

impl FramingScan {
    fn content_length(&mut self, value: &[u8]) {
        for v in value.split(|&b| b == b',') {
            let parsed = parse_length_bytes(trim_bytes(v)).ok_or(());
            match self.length {
                None => self.length = Some(parsed),
                Some(prev) if prev != parsed => self.conflicting = true,
                Some(_) => {}
            }
            if parsed.is_err() {
                self.length = Some(Err(()));
            }
        }
    }

    fn transfer_encoding(&mut self, value: &[u8]) {
        self.te_seen = true;
        if let Some(last) = value.rsplit(|&b| b == b',').map(trim_bytes).next() {
            self.last_coding_chunked = last.eq_ignore_ascii_case(b"chunked");
        }
    }

    fn connection(&mut self, value: &[u8]) {
        // `keep-alive`, the usual value, has no `c` and so no `close`: no split needed.
        self.connection_close |= value.iter().any(|&b| b | 0x20 == b'c')
            && value
                .split(|&b| b == b',')
                .any(|v| trim_bytes(v).eq_ignore_ascii_case(b"close"));
    }

    fn finish(self, headers: &[Header<'_>]) -> Framing {
        let content_length = match self.length {
            None => ContentLength::Absent,
            Some(Ok(n)) if !self.conflicting => ContentLength::Valid(n),
            _ => described_lengths(headers),
        };
        Framing {
            content_length,
            chunked: self.te_seen && self.last_coding_chunked,
            transfer_encoding: self.te_seen,
            connection_close: self.connection_close,
        }
    }
}

/// A header name against a lower-case one, ignoring ASCII case. Callers match on the length
/// first, so most names are passed over after one comparison of lengths and this runs mostly
/// on real matches. Only `lower` is folded: the one byte that matches a lower-case letter
/// with its 0x20 bit set is that letter in either case, so this is `eq_ignore_ascii_case`.
fn is(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len()
        && name
            .iter()
            .zip(lower)
            .all(|(&n, &l)| n == l || (l.is_ascii_lowercase() && n | 0x20 == l))
}

/// The Content-Length values of a head whose length is invalid or conflicting, for the report.
fn described_lengths(headers: &[Header<'_>]) -> ContentLength {
    let lengths: Vec<String> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .flat_map(|h| {
            String::from_utf8_lossy(h.value)
                .split(',')
                .map(|v| v.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    if let Some(bad) = lengths
        .iter()
        .find(|v| parse_length_bytes(v.as_bytes()).is_none())
    {
        ContentLength::Invalid(bad.chars().take(40).collect())
    } else {
        ContentLength::Conflicting(lengths.iter().take(8).cloned().collect())
    }
}

fn trim_bytes(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// RFC 9110 §8.6: one or more digits, nothing else. Values beyond 2^63 are treated as invalid.
fn parse_length_bytes(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (n <= i64::MAX as u64).then_some(n)
}

/// A request head at the start of `data`, which may run on past it (a body in the same
/// segment): httparse stops at the blank line. `Partial` until the blank line is there.
fn request(data: &[u8]) -> Result<Status<RequestHead>, httparse::Error> {
    // Uninitialised: a head is parsed per request, and zeroing 128 slots each time costs more
    // than parsing a small head.
    let mut headers = [const { MaybeUninit::<Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(data, &mut headers)? {
        Status::Complete(n) => n,
        Status::Partial => return Ok(Status::Partial),
    };
    let target = req.path.unwrap_or("");
    let mut alb_values: Vec<&[u8]> = Vec::new();
    let mut expect_continue = false;
    let mut upgrade = false;
    let mut forwarded = false;
    let mut trace_ids = TraceIds::default();
    let mut scan = FramingScan::default();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        // By length first: see `is`. The forwarding headers, which a proxy adds to the
        // requests it forwards, are `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Real-IP`, `Via`,
        // `Forwarded` and `X-Amzn-Trace-Id` (the balancer added or extended it).
        match name.len() {
            3 => forwarded |= is(name, b"via"),
            6 if is(name, b"expect") => {
                expect_continue |= h.value.eq_ignore_ascii_case(b"100-continue");
            }
            7 => upgrade |= is(name, b"upgrade"),
            9 => forwarded |= is(name, b"x-real-ip") || is(name, b"forwarded"),
            10 if is(name, b"connection") => scan.connection(h.value),
            12 if is(name, b"x-request-id") => {
                TraceIds::keep(&mut trace_ids.request_id, h.value);
            }
            14 if is(name, b"content-length") => scan.content_length(h.value),
            15 if is(name, b"x-amzn-trace-id") => {
                forwarded = true;
                TraceIds::keep(&mut trace_ids.amzn, h.value);
            }
            15 => forwarded |= is(name, b"x-forwarded-for"),
            17 if is(name, b"transfer-encoding") => scan.transfer_encoding(h.value),
            17 => forwarded |= is(name, b"x-forwarded-proto"),
            18 if is(name, b"alicloud-alb-trace") => alb_values.push(h.value),
            _ => {}
        }
    }
    let repeated = alb_values.len() > 1 && {
        alb_values.sort_unstable();
        alb_values.windows(2).any(|w| w[0] == w[1])
    };
    Ok(Status::Complete(RequestHead {
        method: Method::new(req.method.unwrap_or("")),
        target: prefix(target, TARGET_KEPT).to_string(),
        target_len: target.len(),
        version: req.version.unwrap_or(1),
        head_len,
        framing: scan.finish(req.headers),
        expect_continue,
        upgrade,
        forwarded,
        alb_trace_headers: alb_values.len(),
        alb_trace_repeated: repeated,
        trace_ids,
    }))
}

fn response(data: &[u8]) -> Result<Status<ResponseHead>, httparse::Error> {
    let mut headers = [const { MaybeUninit::<Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        data,
        &mut headers,
    )? {
        Status::Complete(n) => n,
        Status::Partial => return Ok(Status::Partial),
    };
    let mut qps_limited = false;
    let mut scan = FramingScan::default();
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        match name.len() {
            10 if is(name, b"connection") => scan.connection(h.value),
            14 if is(name, b"content-length") => scan.content_length(h.value),
            15 if is(name, b"alb-qps-limited") => {
                qps_limited |= String::from_utf8_lossy(h.value)
                    .trim()
                    .eq_ignore_ascii_case("limited");
            }
            17 if is(name, b"transfer-encoding") => scan.transfer_encoding(h.value),
            _ => {}
        }
    }
    Ok(Status::Complete(ResponseHead {
        status: resp.code.unwrap_or(0),
        // Only an error's reason phrase is ever shown: no string for the healthy ones.
        reason: if resp.code.is_some_and(|c| c >= 400) {
            prefix(resp.reason.unwrap_or(""), 80).to_string()
        } else {
            String::new()
        },
        version: resp.version.unwrap_or(1),
        head_len,
        framing: scan.finish(resp.headers),
        qps_limited,
    }))
}

/// Parses a whole request head (up to and including its blank line).
pub fn parse_request(head: &[u8]) -> Result<RequestHead, HeadError> {
    match request(head) {
        Ok(Status::Complete(r)) => Ok(r),
        Ok(Status::Partial) => Err(HeadError {
            offset: head.len(),
            problem: HeadProblem::Unfinished,
        }),
        Err(e) => Err(locate(head, e, false)),
    }
}

pub fn parse_response(head: &[u8]) -> Result<ResponseHead, HeadError> {
    match response(head) {
        Ok(Status::Complete(r)) => Ok(r),
        Ok(Status::Partial) => Err(HeadError {
            offset: head.len(),
            problem: HeadProblem::Unfinished,
        }),
        Err(e) => Err(locate(head, e, true)),
    }
}

/// The request head `data` begins with, when all of it is there and it parses; the bytes
/// after it (a body, the next request) are not looked at. `None` tells the caller to buffer
/// and decide as for a head that arrives in pieces, which also says what is wrong.
pub fn complete_request(data: &[u8]) -> Option<RequestHead> {
    match request(data) {
        Ok(Status::Complete(r)) => Some(r),
        _ => None,
    }
}

/// As [`complete_request`], for a response head.
pub fn complete_response(data: &[u8]) -> Option<ResponseHead> {
    match response(data) {
        Ok(Status::Complete(r)) => Some(r),
        _ => None,
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Says what is wrong with a request line, or nothing when httparse's complaint lies further on.
fn request_line_problem(line: &[u8]) -> Option<HeadProblem> {
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Some(HeadProblem::RequestLineExtraSpace);
    }
    if !parts[0].iter().all(|&b| is_token_byte(b)) {
        return Some(HeadProblem::MethodNotToken);
    }
    let is_version = |p: &[u8]| p.starts_with(b"HTTP/");
    match parts.len() {
        1 => Some(HeadProblem::RequestLineNoVersion),
        2 if is_version(parts[1]) => Some(HeadProblem::RequestLineNoTarget),
        2 => Some(HeadProblem::RequestLineNoVersion),
        3 => {
            if parts[1].iter().any(|&b| b < 0x21 || b == 0x7f) {
                Some(HeadProblem::RequestTargetInvalidByte)
            } else if parts[2] != b"HTTP/1.1" && parts[2] != b"HTTP/1.0" {
                Some(HeadProblem::RequestVersionInvalid)
            } else {
                None
            }
        }
        _ if is_version(parts[parts.len() - 1]) => Some(HeadProblem::RequestTargetHasSpace),
        _ => Some(HeadProblem::RequestVersionInvalid),
    }
}

fn status_line_problem(line: &[u8]) -> Option<HeadProblem> {
    if !(line.starts_with(b"HTTP/1.1 ") || line.starts_with(b"HTTP/1.0 ")) {
        return Some(HeadProblem::StatusLineVersionInvalid);
    }
    let rest = &line[9..];
    let code_ok = rest.len() >= 3
        && rest[..3].iter().all(u8::is_ascii_digit)
        && (rest.len() == 3 || rest[3] == b' ');
    if !code_ok {
        return Some(HeadProblem::StatusCodeInvalid);
    }
    rest.iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        .then_some(HeadProblem::StatusLineInvalid)
}

/// Finds where a head that httparse rejected goes wrong, and names the problem.
fn locate(head: &[u8], e: httparse::Error, response: bool) -> HeadError {
    use httparse::Error as E;
    let first_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let first = &head[..first_end];
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let on_first_line = if response {
        status_line_problem(first)
    } else {
        request_line_problem(first)
    };
    if let Some(problem) = on_first_line {
        return HeadError { offset: 0, problem };
    }
    // Walk the header lines to find the first one that is not `name: value`.
    let mut offset = (first_end + 1).min(head.len());
    let mut count = 0;
    while offset < head.len() {
        let end = head[offset..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(head.len(), |p| offset + p);
        let line = &head[offset..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        count += 1;
        let fail = |problem| HeadError { offset, problem };
        if matches!(e, E::TooManyHeaders) && count > MAX_HEADERS {
            return fail(HeadProblem::TooManyHeaders);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return fail(HeadProblem::ObsFold);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return fail(HeadProblem::HeaderWithoutColon);
        };
        if colon == 0 || !line[..colon].iter().all(|&b| is_token_byte(b)) {
            return fail(HeadProblem::HeaderNameInvalid);
        }
        if let Some(bad) = line[colon + 1..]
            .iter()
            .position(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return HeadError {
                offset: offset + colon + 1 + bad,
                problem: HeadProblem::HeaderValueInvalid,
            };
        }
        offset = end + 1;
    }
    HeadError {
        offset: 0,
        problem: match e {
            E::TooManyHeaders => HeadProblem::TooManyHeaders,
            E::Status => HeadProblem::StatusCodeInvalid,
            E::Version if response => HeadProblem::StatusLineVersionInvalid,
            E::Version => HeadProblem::RequestVersionInvalid,
            E::HeaderName => HeadProblem::HeaderNameInvalid,
            E::HeaderValue => HeadProblem::HeaderValueInvalid,
            _ => HeadProblem::BareCr,
        },
    }
}

/// An escaped, bounded rendering of bytes for evidence: printable ASCII as is, the rest as
/// `\r`, `\n`, `\xNN`. Never longer than `max` characters of output plus an ellipsis.
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for &b in bytes {
        let piece = match b {
            b'\r' => "\\r".to_string(),
            b'\n' => "\\n".to_string(),
            b'\t' => "\\t".to_string(),
            b'\\' => "\\\\".to_string(),
            0x20..=0x7e => (b as char).to_string(),
            _ => format!("\\x{b:02x}"),
        };
        if out.len() + piece.len() > max {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_request_framing_and_alb_headers() {
        let head = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nALICLOUD-ALB-TRACE: a\r\nALICLOUD-ALB-TRACE: a\r\nExpect: 100-continue\r\n\r\n";
        let r = parse_request(head).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.framing.content_length, ContentLength::Valid(5));
        assert_eq!(r.alb_trace_headers, 2);
        assert!(r.alb_trace_repeated && r.expect_continue);
    }

    #[test]
    fn test_request_trace_ids_kept_bounded() {
        let r = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(r.trace_ids, TraceIds::default());
        let head = b"GET / HTTP/1.1\r\nx-request-id:  5f3c \r\nX-Amzn-Trace-Id: Root=1-67-ab\r\nX-Request-Id: second\r\n\r\n";
        let r = parse_request(head).unwrap();
        assert_eq!(r.trace_ids.request_id.as_deref(), Some("5f3c"));
        assert_eq!(r.trace_ids.amzn.as_deref(), Some("Root=1-67-ab"));
        assert!(r.forwarded);
        let long = format!(
            "GET / HTTP/1.1\r\nX-Request-Id: {}\r\n\r\n",
            "a".repeat(TRACE_ID_KEPT + 1)
        );
        let r = parse_request(long.as_bytes()).unwrap();
        assert_eq!(r.trace_ids.iter().count(), 0);
    }

    #[test]
    fn test_conflicting_and_invalid_content_length() {
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 12\r\n\r\n")
                .unwrap();
        assert!(matches!(
            r.framing.content_length,
            ContentLength::Conflicting(_)
        ));
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10, 10\r\n\r\n").unwrap();
        assert_eq!(r.framing.content_length, ContentLength::Valid(10));
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").unwrap();
        assert!(matches!(
            r.framing.content_length,
            ContentLength::Invalid(_)
        ));
        let r = parse_request(b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n")
            .unwrap();
        assert!(matches!(
            r.framing.content_length,
            ContentLength::Invalid(_)
        ));
    }

    #[test]
    fn test_chunked_is_the_final_coding() {
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap();
        assert!(r.framing.chunked);
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").unwrap();
        assert!(!r.framing.chunked && r.framing.transfer_encoding);
    }

    #[test]
    fn test_errors_point_at_the_line() {
        let e = parse_response(b"HTP/1.1 200 OK\r\n\r\n").unwrap_err();
        assert_eq!(e.offset, 0);
        let head = b"HTTP/1.1 200 OK\r\nA: b\r\nX-Broken header value\r\n\r\n";
        let e = parse_response(head).unwrap_err();
        assert_eq!(e.offset, 23, "{e:?}");
        assert_eq!(e.problem, HeadProblem::HeaderWithoutColon);
        let e = parse_request(b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
        assert_eq!(e.offset, 0);
    }

    #[test]
    fn test_each_forwarding_header_in_any_case() {
        for name in [
            "X-Forwarded-For",
            "x-forwarded-proto",
            "X-REAL-IP",
            "Via",
            "forwarded",
            "X-Amzn-Trace-Id",
        ] {
            let head = format!("GET / HTTP/1.1\r\n{name}: a\r\n\r\n");
            assert!(parse_request(head.as_bytes()).unwrap().forwarded, "{name}");
        }
        // Same lengths as framing and forwarding headers, none of them.
        let head = b"GET / HTTP/1.1\r\nUser-Agent: c\r\nContent-Type: a\r\nX-Forwarded-Fox: b\r\nX-Forwarded-Proxy: d\r\nAccept-Encoding: e\r\nVia-: f\r\n\r\n";
        let r = parse_request(head).unwrap();
        assert!(!r.forwarded && !r.upgrade && !r.expect_continue);
        assert!(!r.framing.connection_close && !r.framing.transfer_encoding);
        assert_eq!(r.framing.content_length, ContentLength::Absent);
    }

    #[test]
    fn test_name_comparison_is_eq_ignore_ascii_case() {
        let lowers: [&[u8]; 4] = [b"content-length", b"x-amzn-trace-id", b"via", b"a1-_~!"];
        for lower in lowers {
            for i in 0..lower.len() {
                for b in 0..=255u8 {
                    let mut name = lower.to_vec();
                    name[i] = b;
                    assert_eq!(
                        is(&name, lower),
                        name.eq_ignore_ascii_case(lower),
                        "{name:?}"
                    );
                }
            }
            assert!(!is(&lower[1..], lower));
        }
        for (value, close) in [
            (&b"keep-alive"[..], false),
            (b"Keep-Alive, CLOSE", true),
            (b" close ", true),
            (b"closed", false),
            (b"upgrade", false),
        ] {
            let mut scan = FramingScan::default();
            scan.connection(value);
            assert_eq!(scan.connection_close, close, "{value:?}");
        }
    }

    #[test]
    fn test_length_is_digits_up_to_i64_max() {
        assert_eq!(parse_length_bytes(b"0"), Some(0));
        assert_eq!(parse_length_bytes(b"0012"), Some(12));
        assert_eq!(
            parse_length_bytes(b"9223372036854775807"),
            Some(i64::MAX as u64)
        );
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b"1 2",
            b"0x10",
            b"9223372036854775808",
            b"18446744073709551616",
            b"\xd9\xa1",
        ] {
            assert_eq!(parse_length_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn test_complete_head_read_where_it_lies() {
        let data = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbodyGET";
        let r = complete_request(data).unwrap();
        assert_eq!(r.head_len, data.len() - 7);
        assert_eq!(r.framing.content_length, ContentLength::Valid(4));
        assert!(complete_request(&data[..r.head_len - 1]).is_none());
        assert!(complete_request(b"GET / HTTP/1.1\r\nbad header\r\n\r\n").is_none());
        let data = b"HTTP/1.1 503 Busy\r\nalb-qps-limited:  limited \r\n\r\nHTTP/1.1";
        let r = complete_response(data).unwrap();
        assert_eq!((r.head_len, r.qps_limited), (data.len() - 8, true));
        assert_eq!(r.reason, "Busy");
        assert!(complete_response(&data[..20]).is_none());
    }

    #[test]
    fn test_common_methods_compare_and_print_as_built() {
        for m in [
            "GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "G",
        ] {
            let method = Method::new(m);
            assert_eq!(method.as_str(), m);
            assert!(method == m);
            assert!(method != "GETX");
        }
    }

    #[test]
    fn test_excerpt_escapes_and_bounds() {
        assert_eq!(excerpt(b"a\r\n\x1b[", 100), "a\\r\\n\\x1b[");
        assert_eq!(excerpt(b"abcdef", 3), "abc…");
    }

    #[test]
    fn regression_request_line_reasons_name_the_real_problem() {
        let problem = |head: &[u8]| parse_request(head).unwrap_err().problem;
        assert_eq!(
            problem(b"POST  /  HTTP/1.0\r\n\r\n"),
            HeadProblem::RequestLineExtraSpace
        );
        assert_eq!(
            problem(b"OPTIONS HTTP/1.1\r\n\r\n"),
            HeadProblem::RequestLineNoTarget
        );
        assert_eq!(problem(b"GET /\r\n\r\n"), HeadProblem::RequestLineNoVersion);
        assert_eq!(
            problem(b"G@T / HTTP/1.1\r\n\r\n"),
            HeadProblem::MethodNotToken
        );
        assert_eq!(
            problem(b"GET / HTTP/2.0\r\n\r\n"),
            HeadProblem::RequestVersionInvalid
        );
        assert_eq!(
            problem(b"GET /a b HTTP/1.1\r\n\r\n"),
            HeadProblem::RequestTargetHasSpace
        );
    }

    #[test]
    fn regression_obs_fold_is_named() {
        let e = parse_response(b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n").unwrap_err();
        assert_eq!((e.offset, e.problem), (23, HeadProblem::ObsFold));
    }
}
