//! A streaming decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1): chunk-size lines with
//! extensions, chunk data, the CRLF after each chunk, and trailer fields. It counts body bytes
//! and never buffers more than one size or trailer line.

/// Longest chunk-size or trailer line accepted; longer ones are malformed, not buffered.
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChunkError {
    BadSize(String),
    SizeOverflow,
    MissingCrlf,
    LineTooLong,
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkError::BadSize(line) => write!(f, "invalid chunk size line {line:?}"),
            ChunkError::SizeOverflow => f.write_str("chunk size does not fit in 63 bits"),
            ChunkError::MissingCrlf => f.write_str("chunk data not followed by CRLF"),
            ChunkError::LineTooLong => {
                write!(f, "chunk size or trailer line longer than {MAX_LINE} bytes")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum State {
    Size(Vec<u8>),
    Data(u64),
    /// After chunk data: how many bytes of the CRLF were seen.
    DataEnd(u8),
    /// In the trailer section: length of the current line so far.
    Trailer(usize),
    Done,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Chunked {
    state: State,
    pub body_bytes: u64,
    pub chunks: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size(Vec::new()),
            body_bytes: 0,
            chunks: 0,
        }
    }
}

/// Outcome of feeding bytes: how many were consumed and whether the body ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    NeedMore,
    /// The body ended after `consumed` bytes; the rest belongs to the next message.
    Done {
        consumed: usize,
    },
    /// Invalid framing at byte `at` of the input.
    Error {
        at: usize,
        error: ChunkError,
    },
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes counted so far could be skipped: a capture gap inside chunk data keeps the
    /// framing; anywhere else it does not.
    pub fn skip_data(&mut self, len: u64) -> bool {
        match &mut self.state {
            State::Data(left) if *left >= len => {
                *left -= len;
                self.body_bytes += len;
                if *left == 0 {
                    self.state = State::DataEnd(0);
                }
                true
            }
            _ => false,
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> Fed {
        let mut i = 0;
        while i < data.len() {
            match &mut self.state {
                State::Done => return Fed::Done { consumed: i },
                State::Size(line) => {
                    let b = data[i];
                    i += 1;
                    if b == b'\n' {
                        let text = std::mem::take(line);
                        match parse_size(&text) {
                            Ok(0) => self.state = State::Trailer(0),
                            Ok(n) => {
                                self.chunks += 1;
                                self.state = State::Data(n);
                            }
                            Err(e) => {
                                return Fed::Error {
                                    at: i - 1,
                                    error: e,
                                };
                            }
                        }
                    } else if line.len() >= MAX_LINE {
                        return Fed::Error {
                            at: i - 1,
                            error: ChunkError::LineTooLong,
                        };
                    } else {
                        line.push(b);
                    }
                }
                State::Data(left) => {
                    let take = (*left).min((data.len() - i) as u64);
                    *left -= take;
                    self.body_bytes += take;
                    i += take as usize;
                    if *left == 0 {
                        self.state = State::DataEnd(0);
                    }
                }
                State::DataEnd(seen) => {
                    let b = data[i];
                    match (*seen, b) {
                        (0, b'\r') => *seen = 1,
                        (0, b'\n') | (1, b'\n') => self.state = State::Size(Vec::new()),
                        _ => {
                            return Fed::Error {
                                at: i,
                                error: ChunkError::MissingCrlf,
                            };
                        }
                    }
                    i += 1;
                }
                State::Trailer(len) => {
                    let b = data[i];
                    i += 1;
                    if b == b'\n' {
                        if *len == 0 {
                            self.state = State::Done;
                            return Fed::Done { consumed: i };
                        }
                        *len = 0;
                    } else if b != b'\r' || *len > 0 {
                        *len += 1;
                        if *len > MAX_LINE {
                            return Fed::Error {
                                at: i - 1,
                                error: ChunkError::LineTooLong,
                            };
                        }
                    }
                }
            }
        }
        if self.state == State::Done {
            Fed::Done { consumed: i }
        } else {
            Fed::NeedMore
        }
    }
}

/// RFC 9112 §7.1: `chunk-size = 1*HEXDIG`, then optional BWS (spaces or tabs) before an
/// extension's `;` or the line end. Nothing is trimmed before the digits: a leading space, CR or
/// form feed is exactly the kind of difference two parsers disagree on (request smuggling), so
/// it is malformed. The line's own CR before LF is stripped once; any other CR is bare.
fn parse_size(line: &[u8]) -> Result<u64, ChunkError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let bad =
        || ChunkError::BadSize(String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned());
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let digits = &line[..digits_end];
    let rest = &line[digits_end..];
    let after_bws = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .map_or(&rest[rest.len()..], |p| &rest[p..]);
    let rest_ok = after_bws.is_empty()
        || (after_bws[0] == b';'
            && !after_bws
                .iter()
                .any(|&b| b == b'\r' || (b < 0x20 && b != b'\t')));
    if digits.is_empty() || !rest_ok {
        return Err(bad());
    }
    let significant = digits
        .iter()
        .position(|&b| b != b'0')
        .map_or(&digits[digits.len()..], |p| &digits[p..]);
    if significant.len() > 15 {
        return Err(ChunkError::SizeOverflow);
    }
    let text = std::str::from_utf8(digits).map_err(|_| ChunkError::SizeOverflow)?;
    u64::from_str_radix(text, 16).map_err(|_| ChunkError::SizeOverflow)
}

#[cfg(test)]
mod test {
    use super::*;

    fn decode_in_pieces(body: &[u8], piece: usize) -> (Fed, u64) {
        let mut c = Chunked::default();
        let mut offset = 0;
        for part in body.chunks(piece.max(1)) {
            match c.feed(part) {
                Fed::NeedMore => offset += part.len(),
                Fed::Done { consumed } => {
                    return (
                        Fed::Done {
                            consumed: offset + consumed,
                        },
                        c.body_bytes,
                    );
                }
                Fed::Error { at, error } => {
                    return (
                        Fed::Error {
                            at: offset + at,
                            error,
                        },
                        c.body_bytes,
                    );
                }
            }
        }
        (Fed::NeedMore, c.body_bytes)
    }

    #[test]
    fn test_chunks_extensions_and_trailers_any_split() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\nNEXT";
        for piece in 1..body.len() {
            let (fed, bytes) = decode_in_pieces(body, piece);
            assert_eq!(
                fed,
                Fed::Done {
                    consumed: body.len() - 4
                },
                "piece {piece}"
            );
            assert_eq!(bytes, 11);
        }
    }

    #[test]
    fn test_bad_size_line() {
        let (fed, _) = decode_in_pieces(b"zz\r\nabc", 100);
        assert!(
            matches!(
                fed,
                Fed::Error {
                    at: 3,
                    error: ChunkError::BadSize(_)
                }
            ),
            "{fed:?}"
        );
    }

    #[test]
    fn test_size_overflow_2_pow_64() {
        let (fed, _) = decode_in_pieces(b"10000000000000000\r\n", 100);
        assert!(
            matches!(
                fed,
                Fed::Error {
                    error: ChunkError::SizeOverflow,
                    ..
                }
            ),
            "{fed:?}"
        );
    }

    #[test]
    fn test_missing_crlf_after_data() {
        let (fed, _) = decode_in_pieces(b"3\r\nabcX\r\n", 100);
        assert_eq!(
            fed,
            Fed::Error {
                at: 6,
                error: ChunkError::MissingCrlf
            }
        );
    }

    #[test]
    fn test_gap_inside_chunk_data_keeps_framing() {
        let mut c = Chunked::default();
        assert_eq!(c.feed(b"a\r\nab"), Fed::NeedMore);
        assert!(c.skip_data(6));
        assert_eq!(c.feed(b"cd\r\n0\r\n\r\n"), Fed::Done { consumed: 9 });
        assert_eq!(c.body_bytes, 10);
        assert!(!Chunked::default().skip_data(1));
    }

    #[test]
    fn regression_chunk_size_line_whitespace_rules() {
        for bad in [
            &b" 5\r\nhello\r\n0\r\n\r\n"[..],
            b"\x0c5\r\nhello\r\n0\r\n\r\n",
            b"5\r\r\nhello\r\n0\r\n\r\n",
            b"\r5\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
        ] {
            let r = Chunked::default().feed(bad);
            assert!(
                matches!(r, Fed::Error { .. }),
                "{:?} gave {r:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [
            &b"5 ;ext=1\r\nhello\r\n0\r\n\r\n"[..],
            b"5\t;a\r\nhello\r\n0\r\n\r\n",
            b"5  \r\nhello\r\n0\r\n\r\n",
            b"5\nhello\n0\n\n",
        ] {
            let r = Chunked::default().feed(good);
            assert_eq!(
                r,
                Fed::Done {
                    consumed: good.len()
                },
                "{:?}",
                String::from_utf8_lossy(good)
            );
        }
    }
}
