//! Access logs: the balancer's own account of each request, read so each logged 4xx/5xx can be
//! joined to the packets behind it. One file per format; the format is told from the content.
//! A line that does not parse is counted with its number and reason, never a panic.
//! [`join`] matches lines to captured transactions.

mod alb;
mod balancer;
mod haproxy;
pub mod join;
mod nginx;
pub mod time;

pub use join::{Candidate, Candidates, Collector, LogIndex};

use crate::capture::{Duration, Timestamp};
use std::io::{BufRead, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Formats lbdiag reads, as `logs[].format` names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// The balancer's layer-7 log exported as JSON Lines.
    BalancerJson,
    /// The same exported as CSV with a header row.
    BalancerCsv,
    NginxCombined,
    /// An nginx `log_format` given with `--log-format`.
    Nginx(String),
    /// haproxy's `option httplog`.
    Haproxy,
    /// The AWS application load balancer's access log.
    AwsAlb,
}

impl LogFormat {
    pub fn name(&self) -> &'static str {
        match self {
            LogFormat::BalancerJson => "balancer_json",
            LogFormat::BalancerCsv => "balancer_csv",
            LogFormat::NginxCombined => "nginx_combined",
            LogFormat::Nginx(_) => "nginx_log_format",
            LogFormat::Haproxy => "haproxy_httplog",
            LogFormat::AwsAlb => "aws_alb",
        }
    }
}

/// What the logged time marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeIs {
    /// The request arrived (haproxy's accept date, AWS's request_creation_time).
    Start,
    /// The response was sent and the line written (nginx's `$time_local`, the balancer's `time`).
    End,
}

/// haproxy's timers in milliseconds (`-1`: that step was never reached).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HaproxyTimers {
    /// Time to receive the whole request head (`TR`, `Tq` before 1.8).
    pub tr_request: i64,
    /// Time in queues.
    pub tw: i64,
    /// Time to connect to the server.
    pub tc: i64,
    /// Time for the server to send the response head (`Tr`): -1 when it never did.
    pub tr_response: i64,
    /// Total active time.
    pub ta: i64,
}

/// One request as the log tells it.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    /// 1-based, as an editor numbers it.
    pub line: u64,
    pub time: Timestamp,
    pub time_is: TimeIs,
    /// How much later than `time` the logged moment may have been (a second for `$time_local`).
    pub precision: Duration,
    pub client_ip: Option<IpAddr>,
    pub client_port: Option<u16>,
    pub method: Option<String>,
    /// The request target as sent (origin form), query included.
    pub target: Option<String>,
    pub status: u16,
    /// As logged: `502`, `502, 504` when the balancer retried, `-` when no backend answered;
    /// `None` when the format has no such field.
    pub upstream_status: Option<String>,
    pub upstream_addr: Option<String>,
    pub request_time: Option<Duration>,
    pub upstream_response_time: Option<String>,
    pub trace_id: Option<String>,
    /// haproxy's termination state (`SH--`): itself evidence.
    pub termination: Option<String>,
    pub timers: Option<HaproxyTimers>,
    /// AWS's error_reason.
    pub error_reason: Option<String>,
    /// Its time named no zone and was read as UTC.
    pub zone_assumed: bool,
}

impl LogLine {
    fn new(line: u64, time: time::LoggedTime, time_is: TimeIs, status: u16) -> LogLine {
        LogLine {
            line,
            time: time.at,
            time_is,
            precision: time.precision,
            client_ip: None,
            client_port: None,
            method: None,
            target: None,
            status,
            upstream_status: None,
            upstream_addr: None,
            request_time: None,
            upstream_response_time: None,
            trace_id: None,
            termination: None,
            timers: None,
            error_reason: None,
            zone_assumed: time.zone_assumed,
        }
    }

    pub fn client(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.client_ip?, self.client_port?))
    }

    /// The request as a report shows it.
    pub fn request(&self) -> Option<String> {
        Some(format!(
            "{} {}",
            self.method.as_deref()?,
            self.target.as_deref()?
        ))
    }

    /// Each backend tried, with the status it gave (`None`: it did not answer), in order.
    pub fn upstreams(&self) -> Vec<(Option<SocketAddr>, Option<u16>)> {
        let addrs: Vec<&str> = self
            .upstream_addr
            .as_deref()
            .map(split_list)
            .unwrap_or_default();
        let statuses: Vec<&str> = self
            .upstream_status
            .as_deref()
            .map(split_list)
            .unwrap_or_default();
        let n = addrs.len().max(statuses.len());
        (0..n)
            .map(|i| {
                (
                    addrs.get(i).and_then(|a| a.parse().ok()),
                    statuses.get(i).and_then(|s| s.parse().ok()),
                )
            })
            .collect()
    }

    /// How the page reads the line: status against upstream_status.
    pub fn class(&self) -> Option<LineClass> {
        if let Some(t) = &self.termination {
            return haproxy::class(self.status, t, self.timers);
        }
        let logged = self.upstream_status.as_deref()?;
        let last = split_list(logged).last().copied().unwrap_or("");
        Some(match last.parse::<u16>() {
            Ok(s) if s == self.status => LineClass::PassedThrough,
            Ok(_) => LineClass::Changed,
            Err(_) => LineClass::NoResponse,
        })
    }

    /// The logged moment's midpoint: the truth lies within `precision` after `time`.
    pub fn mid(&self) -> Timestamp {
        self.time.saturating_add(Duration(self.precision.0 / 2))
    }
}

/// nginx separates the upstreams of one request with `, ` and upstream groups with ` : `.
fn split_list(s: &str) -> Vec<&str> {
    s.split(" : ")
        .flat_map(|group| group.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

pub use crate::report::LineClass;

/// Why a line was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub line: u64,
    pub reason: String,
}

/// A log read whole: the lines kept (4xx/5xx unless all are asked for) and what was skipped.
#[derive(Clone, Debug)]
pub struct Log {
    pub path: String,
    pub format: LogFormat,
    pub lines_read: u64,
    pub lines: Vec<LogLine>,
    /// The first [`MAX_SKIPPED_LISTED`] skipped lines; `skipped_count` counts them all.
    pub skipped: Vec<Skipped>,
    pub skipped_count: u64,
    /// Lines kept beyond [`MAX_LINES_KEPT`] that were counted but not joined.
    pub not_kept: u64,
    /// Earliest and latest logged times of every parsed line.
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
    pub zone_assumed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: cannot read the access log: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no line parses as an access log{detail}")]
    Empty { path: String, detail: String },
    #[error("--log-format: {0}")]
    Format(String),
}

/// Longest line read; beyond it a line is skipped, so memory does not follow a hostile file.
pub const MAX_LINE: usize = 64 * 1024;
/// Lines joined per log; the rest are counted.
pub const MAX_LINES_KEPT: usize = 200_000;
pub const MAX_SKIPPED_LISTED: usize = 20;

/// How to read logs.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// An nginx `log_format` (`--log-format`); else the format is told from the content.
    pub log_format: Option<String>,
    /// Keep every line, not only 4xx/5xx (`--all-lines`).
    pub all_lines: bool,
}

/// Reads a log file (gzip or not) whole.
pub fn read_path(path: &Path, options: &ReadOptions) -> Result<Log, LogError> {
    let name = path.display().to_string();
    let io = |source| LogError::Io {
        path: name.clone(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(io)?;
    drop(file);
    let file = std::fs::File::open(path).map_err(io)?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    read(&name, std::io::BufReader::new(reader), options)
}

/// Reads one line into `buf`, at most [`MAX_LINE`] bytes of it; `Ok(None)` at the end, else
/// whether the line was longer (the rest is read and dropped).
fn read_line_capped(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(any.then_some(too_long));
        }
        any = true;
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        let room = MAX_LINE.saturating_sub(buf.len());
        if take > room {
            too_long = true;
        }
        buf.extend_from_slice(&chunk[..take.min(room)]);
        r.consume(take + usize::from(done));
        if done {
            return Ok(Some(too_long));
        }
    }
}

/// Reads a log from any reader; `name` is how messages name it.
pub fn read(name: &str, mut r: impl BufRead, options: &ReadOptions) -> Result<Log, LogError> {
    let custom = match &options.log_format {
        Some(f) => Some(nginx::Format::compile(f).map_err(LogError::Format)?),
        None => None,
    };
    let mut log = Log {
        path: name.to_string(),
        format: LogFormat::NginxCombined,
        lines_read: 0,
        lines: Vec::new(),
        skipped: Vec::new(),
        skipped_count: 0,
        not_kept: 0,
        first: None,
        last: None,
        zone_assumed: false,
    };
    let mut parser: Option<Parser> = custom.map(Parser::Nginx);
    if let Some(f) = &options.log_format {
        log.format = LogFormat::Nginx(f.clone());
    }
    let mut buf = Vec::new();
    let mut number = 0u64;
    loop {
        let too_long = match read_line_capped(&mut r, &mut buf) {
            Ok(Some(t)) => t,
            Ok(None) => break,
            Err(source) => {
                return Err(LogError::Io {
                    path: name.to_string(),
                    source,
                });
            }
        };
        number += 1;
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() {
            continue;
        }
        log.lines_read += 1;
        if too_long {
            skip(&mut log, number, format!("longer than {MAX_LINE} bytes"));
            continue;
        }
        let p = match &mut parser {
            Some(p) => p,
            None => match Parser::detect(text) {
                Some((p, format)) => {
                    log.format = format;
                    parser = Some(p);
                    // A CSV header row is the format, not a request.
                    if matches!(parser, Some(Parser::Csv(_))) {
                        log.lines_read -= 1;
                        continue;
                    }
                    parser.as_mut().expect("just set")
                }
                None => {
                    skip(
                        &mut log,
                        number,
                        "not a line of any access-log format lbdiag reads".into(),
                    );
                    continue;
                }
            },
        };
        match p.parse(number, text) {
            Ok(line) => keep(&mut log, line, options.all_lines),
            Err(reason) => skip(&mut log, number, reason),
        }
    }
    if log.first.is_none() {
        let detail = log
            .skipped
            .first()
            .map(|s| format!(" (line {}: {})", s.line, s.reason))
            .unwrap_or_else(|| " (it is empty)".into());
        return Err(LogError::Empty {
            path: name.to_string(),
            detail,
        });
    }
    Ok(log)
}

fn skip(log: &mut Log, line: u64, reason: String) {
    log.skipped_count += 1;
    if log.skipped.len() < MAX_SKIPPED_LISTED {
        log.skipped.push(Skipped { line, reason });
    }
}

fn keep(log: &mut Log, line: LogLine, all: bool) {
    log.first = Some(log.first.map_or(line.time, |t| t.min(line.time)));
    log.last = Some(log.last.map_or(line.time, |t| t.max(line.time)));
    log.zone_assumed |= line.zone_assumed;
    if !all && line.status < 400 {
        return;
    }
    if log.lines.len() >= MAX_LINES_KEPT {
        log.not_kept += 1;
        return;
    }
    log.lines.push(line);
}

/// The parser a log was found to need.
enum Parser {
    Json,
    Csv(balancer::CsvHeader),
    Nginx(nginx::Format),
    Haproxy,
    Alb,
}

impl Parser {
    /// The format of a log from its first non-empty line.
    fn detect(first: &str) -> Option<(Parser, LogFormat)> {
        let t = first.trim_start();
        if t.starts_with('{') {
            return Some((Parser::Json, LogFormat::BalancerJson));
        }
        if alb::looks_like(t) {
            return Some((Parser::Alb, LogFormat::AwsAlb));
        }
        if haproxy::looks_like(t) {
            return Some((Parser::Haproxy, LogFormat::Haproxy));
        }
        if let Some(h) = balancer::CsvHeader::detect(t) {
            return Some((Parser::Csv(h), LogFormat::BalancerCsv));
        }
        let combined = nginx::Format::combined();
        if combined.parse(0, t).is_ok() {
            return Some((Parser::Nginx(combined), LogFormat::NginxCombined));
        }
        None
    }

    fn parse(&mut self, number: u64, text: &str) -> Result<LogLine, String> {
        match self {
            Parser::Json => balancer::json(number, text),
            Parser::Csv(h) => h.parse(number, text),
            Parser::Nginx(f) => f.parse(number, text),
            Parser::Haproxy => haproxy::parse(number, text),
            Parser::Alb => alb::parse(number, text),
        }
    }
}

/// Splits `METHOD target HTTP/x` into method and target; the target of an absolute-form
/// request (AWS logs `http://host:80/path`) keeps only its path and query, as the wire has it
/// after the balancer.
pub(crate) fn split_request(request: &str) -> (Option<String>, Option<String>) {
    let mut parts = request.split(' ').filter(|p| !p.is_empty());
    let method = parts
        .next()
        .filter(|m| m.bytes().all(|b| b.is_ascii_alphabetic()));
    let target = parts.next().map(origin_form);
    match (method, target) {
        (Some(m), Some(t)) => (Some(m.to_string()), Some(t)),
        _ => (None, None),
    }
}

fn origin_form(target: &str) -> String {
    for scheme in [
        "http://", "https://", "ws://", "wss://", "grpc://", "grpcs://",
    ] {
        if target.len() > scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &target[scheme.len()..];
            return match rest.find('/') {
                Some(i) => rest[i..].to_string(),
                None => "/".to_string(),
            };
        }
    }
    target.to_string()
}

/// A status as logged: three digits (haproxy logs -1 when it sent nothing: that is 0 here).
pub(crate) fn status(s: &str) -> Result<u16, String> {
    let s = s.trim().trim_matches('"');
    if s == "-1" || s == "-" || s == "000" {
        return Ok(0);
    }
    match s.parse::<u16>() {
        Ok(v) if (100..=999).contains(&v) => Ok(v),
        _ => Err(format!(
            "status {:?} is not a number from 100 to 999",
            cut(s)
        )),
    }
}

/// A value quoted in a reason, cut so a hostile line cannot make the report huge.
pub(crate) fn cut(s: &str) -> String {
    let mut end = s.len().min(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// `-` and empty mean nothing was logged.
pub(crate) fn present(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty() && s != "-").then(|| s.to_string())
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    fn read_str(s: &str, options: &ReadOptions) -> Result<Log, LogError> {
        read("test.log", s.as_bytes(), options)
    }

    #[test]
    fn test_upstream_lists_split_per_attempt() {
        let mut l = LogLine::new(
            1,
            time::any("2024-05-01T10:42:07Z").unwrap(),
            TimeIs::End,
            502,
        );
        l.upstream_status = Some("502, 504 : -".into());
        l.upstream_addr = Some("10.0.3.7:8080, 10.0.3.8:8080 : 10.0.4.1:80".into());
        let u = l.upstreams();
        assert_eq!(u.len(), 3);
        assert_eq!(u[0], (Some("10.0.3.7:8080".parse().unwrap()), Some(502)));
        assert_eq!(u[2], (Some("10.0.4.1:80".parse().unwrap()), None));
        assert_eq!(l.class(), Some(LineClass::NoResponse));
        l.upstream_status = Some("502".into());
        assert_eq!(l.class(), Some(LineClass::PassedThrough));
        l.upstream_status = Some("504".into());
        assert_eq!(l.class(), Some(LineClass::Changed));
    }

    #[test]
    fn test_read_skips_bad_lines_by_number() {
        let log = read_str(
            "{\"time\":\"2024-05-01T10:42:07Z\",\"status\":502,\"upstream_status\":\"-\"}\n\
             {\"time\":\"yesterday\",\"status\":502}\n\
             \n\
             {\"time\":\"2024-05-01T10:42:08Z\",\"status\":200}\n",
            &ReadOptions::default(),
        )
        .unwrap();
        assert_eq!(log.format, LogFormat::BalancerJson);
        assert_eq!(log.lines_read, 3);
        assert_eq!(log.lines.len(), 1);
        assert_eq!(log.skipped[0].line, 2);
        assert!(log.skipped[0].reason.contains("time"), "{:?}", log.skipped);
    }

    #[test]
    fn test_read_without_a_parsable_line_is_an_error_naming_the_file() {
        let e = read_str("hello\nworld\n", &ReadOptions::default()).unwrap_err();
        assert!(e.to_string().starts_with("test.log: no line parses"), "{e}");
        let e = read_str("", &ReadOptions::default()).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn test_read_gzip_like_a_compressed_capture() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log.gz");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        gz.write_all(b"10.0.0.1 - - [10/Oct/2023:13:55:36 +0000] \"GET /a HTTP/1.1\" 502 157 \"-\" \"curl/8.0\"\n").unwrap();
        gz.finish().unwrap();
        let log = read_path(&path, &ReadOptions::default()).unwrap();
        assert_eq!(log.format, LogFormat::NginxCombined);
        assert_eq!(log.lines[0].status, 502);
    }

    #[test]
    fn test_read_long_line_is_skipped_not_kept() {
        let mut s = String::from("{\"time\":\"2024-05-01T10:42:07Z\",\"status\":502}\n");
        s.push_str(&"x".repeat(MAX_LINE + 10));
        s.push('\n');
        let log = read_str(&s, &ReadOptions::default()).unwrap();
        assert_eq!(log.skipped[0].line, 2);
        assert_eq!(log.lines.len(), 1);
    }

    proptest! {
        #[test]
        fn test_read_hostile_input_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            prefix in prop_oneof![
                Just(""),
                Just("{\"time\":"),
                Just("10.0.0.1 - - [10/Oct/2023:13:55:36 +0000] \""),
                Just("haproxy[1]: 10.0.0.1:4000 [06/Feb/2009:12:14:14.655] f b/s "),
                Just("http 2018-07-02T22:23:00.186641Z app/x 1.2.3.4:5 "),
                Just("time,status,upstream_status\n"),
            ],
            format in prop_oneof![Just(None), Just(Some("$remote_addr:$remote_port [$time_local] \"$request\" $status $upstream_status".to_string()))],
        ) {
            let mut input = prefix.as_bytes().to_vec();
            input.extend_from_slice(&bytes);
            let options = ReadOptions { log_format: format, all_lines: true };
            let _ = read("fuzz", &input[..], &options);
        }
    }
}
