//! Capture time. Every clock in lbdiag is the capture's own: findings, idle timeouts and
//! certificate validity are judged against these values, never the machine's clock, so the
//! same file gives the same report on any day.

use std::fmt;

/// Nanoseconds since the Unix epoch, UTC, as recorded by the capturing host.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const NANOS_PER_SEC: i64 = 1_000_000_000;

    /// Builds a timestamp from whole seconds and a fraction counted in `units_per_sec`.
    /// Saturates instead of overflowing: a hostile header can claim any value.
    pub fn from_parts(secs: i64, frac: u64, units_per_sec: u64) -> Timestamp {
        let units = units_per_sec.max(1) as u128;
        let frac_nanos = (frac as u128 * Self::NANOS_PER_SEC as u128 / units).min(i64::MAX as u128);
        Timestamp(
            secs.saturating_mul(Self::NANOS_PER_SEC)
                .saturating_add(frac_nanos as i64),
        )
    }

    pub fn from_secs_f64(secs: f64) -> Timestamp {
        Timestamp((secs * Self::NANOS_PER_SEC as f64) as i64)
    }

    pub fn saturating_sub(self, other: Timestamp) -> Duration {
        Duration(self.0.saturating_sub(other.0))
    }

    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }

    /// RFC 3339 with microseconds in UTC, e.g. `2024-05-01T12:00:00.123456Z`.
    pub fn rfc3339(self) -> String {
        let dt = time::OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        dt.format(&format)
            .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".to_string())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

/// A span of capture time in nanoseconds; negative when the capture's clock went backwards.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Duration(pub i64);

impl Duration {
    pub const fn from_secs(s: i64) -> Duration {
        Duration(s * Timestamp::NANOS_PER_SEC)
    }
    pub const fn from_millis(ms: i64) -> Duration {
        Duration(ms * 1_000_000)
    }
    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

impl fmt::Display for Duration {
    /// Human scale: `850 µs`, `12.3 ms`, `4.20 s`, `3 min 5 s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.unsigned_abs();
        let sign = if self.0 < 0 { "-" } else { "" };
        if ns < 1_000_000 {
            write!(f, "{sign}{} µs", ns / 1000)
        } else if ns < 1_000_000_000 {
            write!(f, "{sign}{:.1} ms", ns as f64 / 1e6)
        } else if ns < 120_000_000_000 {
            write!(f, "{sign}{:.2} s", ns as f64 / 1e9)
        } else {
            let s = ns / 1_000_000_000;
            write!(f, "{sign}{} min {} s", s / 60, s % 60)
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_rfc3339_has_microseconds_and_z() {
        let ts = Timestamp::from_parts(1_700_000_000, 123_456, 1_000_000);
        assert_eq!(ts.rfc3339(), "2023-11-14T22:13:20.123456Z");
    }

    #[test]
    fn test_from_parts_nanosecond_and_binary_resolutions() {
        assert_eq!(Timestamp::from_parts(1, 5, 1_000_000_000).0, 1_000_000_005);
        // 2^-10 s units (pcapng if_tsresol 0x8a)
        assert_eq!(Timestamp::from_parts(0, 512, 1024).0, 500_000_000);
    }

    #[test]
    fn test_from_parts_saturates_on_hostile_values() {
        let ts = Timestamp::from_parts(i64::MAX, u64::MAX, 1);
        assert_eq!(ts.0, i64::MAX);
        // an out-of-range fraction (>= 1 s) still yields a usable, later time
        let ts = Timestamp::from_parts(10, 1_500_000_000, 1_000_000_000);
        assert_eq!(ts.0, 11_500_000_000);
    }

    #[test]
    fn test_duration_display_scales() {
        assert_eq!(Duration(850_000).to_string(), "850 µs");
        assert_eq!(Duration::from_millis(12).to_string(), "12.0 ms");
        assert_eq!(Duration::from_millis(4200).to_string(), "4.20 s");
        assert_eq!(Duration::from_secs(185).to_string(), "3 min 5 s");
    }
}
