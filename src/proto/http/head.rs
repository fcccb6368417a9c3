//! Request and response heads: parsed with httparse (which allocates nothing), then the headers
//! that decide framing and the balancer-specific ones are read. When httparse rejects a head,
//! we find the line it choked on so the report can point at the byte.

use httparse::{EMPTY_HEADER, Header, Status};

/// More header fields than this in one head is itself a malformed message.
const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentLength {
    Absent,
    Valid(u64),
    /// Several values that disagree.
    Conflicting(Vec<String>),
    /// A value that is not a plain decimal number (or does not fit in 63 bits).
    Invalid(String),
}

/// What the framing of a message depends on.
#[derive(Debug, Clone)]
pub struct Framing {
    pub content_length: ContentLength,
    pub transfer_encoding: bool,
    /// Transfer-Encoding whose final coding is chunked.
    pub chunked: bool,
    pub connection_close: bool,
}

#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    /// The target, cut to a length fit for a report (before redaction).
    pub target: String,
    pub target_len: usize,
    pub version: u8,
    pub head_len: usize,
    pub framing: Framing,
    pub expect_continue: bool,
    pub upgrade: bool,
    pub alb_trace_headers: usize,
    pub alb_trace_repeated: bool,
}

#[derive(Debug, Clone)]
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
    pub reason: String,
}

pub const TARGET_KEPT: usize = 256;

fn framing(headers: &[Header<'_>]) -> Framing {
    let mut lengths: Vec<String> = Vec::new();
    let mut te: Vec<String> = Vec::new();
    let mut connection_close = false;
    for h in headers {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths.extend(value.split(',').map(|v| v.trim().to_string()));
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te.extend(value.split(',').map(|v| v.trim().to_ascii_lowercase()));
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection_close |= value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("close"));
        }
    }
    let content_length = if lengths.is_empty() {
        ContentLength::Absent
    } else if let Some(bad) = lengths.iter().find(|v| parse_length(v).is_none()) {
        ContentLength::Invalid(bad.chars().take(40).collect())
    } else if lengths
        .iter()
        .any(|v| parse_length(v) != parse_length(&lengths[0]))
    {
        ContentLength::Conflicting(lengths.iter().take(8).cloned().collect())
    } else {
        ContentLength::Valid(parse_length(&lengths[0]).unwrap_or(0))
    };
    Framing {
        content_length,
        chunked: te.last().is_some_and(|c| c == "chunked"),
        transfer_encoding: !te.is_empty(),
        connection_close,
    }
}

/// RFC 9110 §8.6: one or more digits, nothing else. Values beyond 2^63 are treated as invalid.
fn parse_length(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u64>().ok().filter(|n| *n <= i64::MAX as u64)
}

pub fn parse_request(head: &[u8]) -> Result<RequestHead, HeadError> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(Status::Complete(head_len)) => {
            let target = req.path.unwrap_or("");
            let mut alb_values: Vec<&[u8]> = Vec::new();
            let mut expect_continue = false;
            let mut upgrade = false;
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("alicloud-alb-trace") {
                    alb_values.push(h.value);
                } else if h.name.eq_ignore_ascii_case("expect") {
                    expect_continue |= h.value.eq_ignore_ascii_case(b"100-continue");
                } else if h.name.eq_ignore_ascii_case("upgrade") {
                    upgrade = true;
                }
            }
            let mut sorted = alb_values.clone();
            sorted.sort_unstable();
            let repeated = sorted.windows(2).any(|w| w[0] == w[1]);
            Ok(RequestHead {
                method: req.method.unwrap_or("").chars().take(32).collect(),
                target: target.chars().take(TARGET_KEPT).collect(),
                target_len: target.len(),
                version: req.version.unwrap_or(1),
                head_len,
                framing: framing(req.headers),
                expect_continue,
                upgrade,
                alb_trace_headers: alb_values.len(),
                alb_trace_repeated: repeated,
            })
        }
        Ok(Status::Partial) => Err(HeadError {
            offset: head.len(),
            reason: "head ends before its blank line".into(),
        }),
        Err(e) => Err(locate(head, e, false)),
    }
}

pub fn parse_response(head: &[u8]) -> Result<ResponseHead, HeadError> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(Status::Complete(head_len)) => {
            let qps_limited = resp.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("alb-qps-limited")
                    && String::from_utf8_lossy(h.value)
                        .trim()
                        .eq_ignore_ascii_case("limited")
            });
            Ok(ResponseHead {
                status: resp.code.unwrap_or(0),
                reason: resp.reason.unwrap_or("").chars().take(80).collect(),
                version: resp.version.unwrap_or(1),
                head_len,
                framing: framing(resp.headers),
                qps_limited,
            })
        }
        Ok(Status::Partial) => Err(HeadError {
            offset: head.len(),
            reason: "head ends before its blank line".into(),
        }),
        Err(e) => Err(locate(head, e, true)),
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Finds where a head that httparse rejected goes wrong, and says why in plain words.
fn locate(head: &[u8], e: httparse::Error, response: bool) -> HeadError {
    use httparse::Error as E;
    let first_line = match e {
        E::Status => Some(if response {
            "the status line has no valid three-digit status code"
        } else {
            "invalid request line"
        }),
        E::Version => Some(if response {
            "the status line does not start with HTTP/1.0 or HTTP/1.1"
        } else {
            "the request line does not end with HTTP/1.0 or HTTP/1.1 (a space in the target?)"
        }),
        E::Token => Some(if response {
            "invalid status line"
        } else {
            "the method is not a valid token"
        }),
        _ => None,
    };
    if let Some(reason) = first_line {
        return HeadError {
            offset: 0,
            reason: reason.into(),
        };
    }
    // Walk the header lines to find the first one that is not `name: value`.
    let mut offset = head.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
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
        if matches!(e, E::TooManyHeaders) && count > MAX_HEADERS {
            return HeadError {
                offset,
                reason: format!("more than {MAX_HEADERS} header fields"),
            };
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return HeadError {
                offset,
                reason: "a header line has no colon".into(),
            };
        };
        if colon == 0 || !line[..colon].iter().all(|&b| is_token_byte(b)) {
            return HeadError {
                offset,
                reason: "invalid header name (space or a character a name may not hold)".into(),
            };
        }
        if let Some(bad) = line[colon + 1..]
            .iter()
            .position(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return HeadError {
                offset: offset + colon + 1 + bad,
                reason: "invalid byte in a header value (control character or bare CR)".into(),
            };
        }
        offset = end + 1;
    }
    HeadError {
        offset: 0,
        reason: match e {
            E::NewLine => "invalid line ending (bare CR)".into(),
            E::TooManyHeaders => format!("more than {MAX_HEADERS} header fields"),
            other => other.to_string(),
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
        assert!(e.reason.contains("colon"));
        let e = parse_request(b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
        assert_eq!(e.offset, 0);
    }

    #[test]
    fn test_excerpt_escapes_and_bounds() {
        assert_eq!(excerpt(b"a\r\n\x1b[", 100), "a\\r\\n\\x1b[");
        assert_eq!(excerpt(b"abcdef", 3), "abc…");
    }
}
