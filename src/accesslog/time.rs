//! Timestamps as access logs write them, each with the zone it names and the precision it has.
//! Parsed by hand: four shapes cover every format lbdiag reads, and none may panic on a hostile
//! line.

use crate::capture::{Duration, Timestamp};

/// A logged instant: where the second starts (UTC) and how much finer the truth may lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedTime {
    pub at: Timestamp,
    /// 1 s for `$time_local`; 1 ms for haproxy's accept date; 1 µs for RFC 3339 with microseconds.
    pub precision: Duration,
    /// The text named no zone (haproxy's accept date, a bare `YYYY-MM-DD HH:MM:SS`): read as UTC.
    pub zone_assumed: bool,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days from 1970-01-01 to a civil date (proleptic Gregorian), after Howard Hinnant's
/// `days_from_civil`; `None` for a date that does not exist.
fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) || !(1..=9999).contains(&y) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn digits(s: &str, n: usize) -> Option<u32> {
    let d = s.get(..n)?;
    if d.bytes().all(|b| b.is_ascii_digit()) {
        d.parse().ok()
    } else {
        None
    }
}

/// Seconds since the epoch for a civil time; `None` when a field is out of range.
fn civil(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d)? * 86_400 + (h * 3600 + mi * 60 + s) as i64)
}

/// A fraction of a second after the point: its nanoseconds and precision. At most 9 digits.
fn fraction(s: &str) -> Option<(i64, Duration, &str)> {
    let Some(rest) = s.strip_prefix('.').or_else(|| s.strip_prefix(',')) else {
        return Some((0, Duration::from_secs(1), s));
    };
    let n = rest.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 || n > 9 {
        return None;
    }
    let value: i64 = rest[..n].parse().ok()?;
    let scale = 10i64.pow(9 - n as u32);
    Some((value * scale, Duration(scale), &rest[n..]))
}

/// `Z`, `+HH:MM`, `+HHMM`, `+HH`, or nothing: seconds east of UTC, and whether a zone was named.
fn zone(s: &str) -> Option<(i64, bool)> {
    let s = s.trim();
    if s.is_empty() {
        return Some((0, false));
    }
    if s == "Z" || s == "z" || s.eq_ignore_ascii_case("UTC") || s.eq_ignore_ascii_case("GMT") {
        return Some((0, true));
    }
    let sign = match s.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let rest = &s[1..];
    let (h, m) = match rest.len() {
        2 => (digits(rest, 2)?, 0),
        4 => (digits(rest, 2)?, digits(&rest[2..], 2)?),
        5 if rest.as_bytes()[2] == b':' => (digits(rest, 2)?, digits(&rest[3..], 2)?),
        _ => return None,
    };
    if h > 23 || m > 59 {
        return None;
    }
    Some((sign * (h as i64 * 3600 + m as i64 * 60), true))
}

fn logged(secs: i64, nanos: i64, precision: Duration, east: i64, named: bool) -> LoggedTime {
    LoggedTime {
        at: Timestamp(
            (secs - east)
                .saturating_mul(Timestamp::NANOS_PER_SEC)
                .saturating_add(nanos),
        ),
        precision,
        zone_assumed: !named,
    }
}

/// RFC 3339 / ISO 8601 (`$time_iso8601`, AWS, balancer exports): `2024-05-01T10:42:07.118+08:00`,
/// also with a space for the `T` and without a zone (then UTC, and said so).
pub fn iso8601(s: &str) -> Option<LoggedTime> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let secs = civil(
        digits(s, 4)? as i64,
        digits(&s[5..], 2)?,
        digits(&s[8..], 2)?,
        digits(&s[11..], 2)?,
        digits(&s[14..], 2)?,
        digits(&s[17..], 2)?,
    )?;
    let (nanos, precision, rest) = fraction(s.get(19..)?)?;
    let (east, named) = zone(rest)?;
    Some(logged(secs, nanos, precision, east, named))
}

/// nginx's `$time_local` and Apache's: `10/Oct/2000:13:55:36 -0700`; haproxy's accept date is the
/// same with milliseconds and no zone: `06/Feb/2009:12:14:14.655`.
pub fn clf(s: &str) -> Option<LoggedTime> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    let b = s.as_bytes();
    if b.len() < 20 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[14] != b':' {
        return None;
    }
    if b[17] != b':' {
        return None;
    }
    let month = MONTHS.iter().position(|m| s.get(3..6) == Some(*m))? as u32 + 1;
    let secs = civil(
        digits(&s[7..], 4)? as i64,
        month,
        digits(s, 2)?,
        digits(&s[12..], 2)?,
        digits(&s[15..], 2)?,
        digits(&s[18..], 2)?,
    )?;
    let (nanos, precision, rest) = fraction(s.get(20..)?)?;
    let (east, named) = zone(rest)?;
    Some(logged(secs, nanos, precision, east, named))
}

/// Seconds since the epoch with a fraction (`$msec`: `1700000000.123`).
pub fn epoch(s: &str) -> Option<LoggedTime> {
    let s = s.trim();
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    // Ten digits reach 2286; fewer than nine would be 1973 at the latest: not a log of today.
    if !(9..=10).contains(&n) {
        return None;
    }
    let secs: i64 = s[..n].parse().ok()?;
    let (nanos, precision, rest) = fraction(&s[n..])?;
    if !rest.is_empty() {
        return None;
    }
    Some(logged(secs, nanos, precision, 0, true))
}

/// Any of the shapes above.
pub fn any(s: &str) -> Option<LoggedTime> {
    iso8601(s).or_else(|| clf(s)).or_else(|| epoch(s))
}

/// A duration logged in seconds with a fraction (`$request_time`, `0.003`); `-` and negative
/// values (AWS writes `-1`) are absent.
pub fn seconds(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() || s.starts_with('-') || s.len() > 20 {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    (0.0..1e9)
        .contains(&v)
        .then_some(Duration((v * 1e9) as i64))
}

#[cfg(test)]
mod test {
    use super::*;

    fn at(s: &str) -> String {
        any(s).map(|t| t.at.rfc3339()).unwrap_or_default()
    }

    #[test]
    fn test_time_shapes_parse_with_their_zones() {
        assert_eq!(
            at("2024-05-01T10:42:07.118+08:00"),
            "2024-05-01T02:42:07.118000Z"
        );
        assert_eq!(
            at("2018-07-02T22:23:00.186641Z"),
            "2018-07-02T22:23:00.186641Z"
        );
        assert_eq!(
            at("10/Oct/2000:13:55:36 -0700"),
            "2000-10-10T20:55:36.000000Z"
        );
        assert_eq!(
            at("[06/Feb/2009:12:14:14.655]"),
            "2009-02-06T12:14:14.655000Z"
        );
        assert_eq!(at("1700000000.123"), "2023-11-14T22:13:20.123000Z");
        assert_eq!(at("2024-02-29 23:59:59"), "2024-02-29T23:59:59.000000Z");
        assert!(any("2024-02-29 23:59:59").unwrap().zone_assumed);
        assert_eq!(
            any("10/Oct/2000:13:55:36 +0000").unwrap().precision.0,
            1_000_000_000
        );
        assert_eq!(
            any("06/Feb/2009:12:14:14.655").unwrap().precision.0,
            1_000_000
        );
    }

    #[test]
    fn test_time_nonsense_is_none() {
        for s in [
            "",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "10/Foo/2000:13:55:36 -0700",
            "2024-05-01T10:42:07.1234567890Z",
            "2024-05-01T10:42:07+25:00",
            "12",
            "2024-05-01T10:42:0é",
        ] {
            assert!(any(s).is_none(), "{s}");
        }
        assert_eq!(seconds("0.003"), Some(Duration(3_000_000)));
        assert_eq!(seconds("-1"), None);
        assert_eq!(seconds("NaN"), None);
        assert_eq!(seconds("-"), None);
    }
}
