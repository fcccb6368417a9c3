//! Requests over the capture's time, counted by what answered them, for the HTML report's
//! timeline. It judges nothing: it counts each HTTP transaction as it completes (or is still
//! open when its connection ends) into a fixed number of time buckets, so a capture of any
//! length costs the same few kilobytes.

use super::{Context, Detector, Event, Findings};
use crate::capture::Timestamp;
use crate::proto::http::{HttpEvent, Transaction};
use crate::report::{Timeline, TimelineBucket};

/// Buckets kept at most; when the capture outgrows them, neighbours are merged in pairs.
const MAX_BUCKETS: usize = 512;
/// The finest bucket: a short capture still shows its requests apart.
const FIRST_WIDTH: i64 = 1_000_000;
/// The widest bucket (about 37 hours, so 512 of them span two years): a request further from
/// the others than that has a clock gone wrong and is only counted as outside.
const MAX_WIDTH: i64 = FIRST_WIDTH << 27;

/// What answered a request, as the timeline colours it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// A final status below 400.
    Ok,
    ClientError,
    ServerError,
    NoResponse,
}

impl Class {
    fn of(status: Option<u16>) -> Class {
        match status {
            None => Class::NoResponse,
            Some(s) if s >= 500 => Class::ServerError,
            Some(s) if s >= 400 => Class::ClientError,
            Some(_) => Class::Ok,
        }
    }
}

/// Counts per bucket, in the order of [`Class`].
type Counts = [u64; 4];

/// The histogram being filled: bucket `i` covers `origin + i * width` up to the next one.
#[derive(Debug)]
pub struct Histogram {
    /// Nanoseconds, wider than a timestamp: hostile timestamps near the ends of its range
    /// move the origin past them.
    origin: i128,
    width: i64,
    counts: Vec<Counts>,
    outside: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            origin: 0,
            width: FIRST_WIDTH,
            counts: Vec::new(),
            outside: 0,
        }
    }
}

impl Histogram {
    fn add_transaction(&mut self, t: &Transaction) {
        // The request's time when it was captured; an answer without a request at its own.
        if let Some(at) = t.request.or(t.response) {
            self.add(at.ts, Class::of(t.status));
        }
    }

    fn add(&mut self, ts: Timestamp, class: Class) {
        let t = ts.0;
        if self.counts.is_empty() {
            self.origin = (t as i128).div_euclid(self.width as i128) * self.width as i128;
        }
        loop {
            // A 128-bit division costs more than the rest of a transaction's counting: it is
            // taken only when the distance to the origin does not fit 64 bits.
            let from_origin = t as i128 - self.origin;
            let idx = match i64::try_from(from_origin) {
                Ok(d) => d.div_euclid(self.width) as i128,
                Err(_) => from_origin.div_euclid(self.width as i128),
            };
            if (0..MAX_BUCKETS as i128).contains(&idx) {
                let idx = idx as usize;
                if idx >= self.counts.len() {
                    self.counts.resize(idx + 1, [0; 4]);
                }
                self.counts[idx][class as usize] += 1;
                return;
            }
            // Earlier than the first bucket (timestamps arrive nearly, not strictly, in order):
            // room is made in front when the span still fits.
            if idx < 0 && (self.counts.len() as i128 - idx) <= MAX_BUCKETS as i128 {
                let n = (-idx) as usize;
                self.counts.splice(0..0, std::iter::repeat_n([0; 4], n));
                self.origin -= n as i128 * self.width as i128;
                continue;
            }
            if self.width >= MAX_WIDTH {
                self.outside += 1;
                return;
            }
            self.fold();
        }
    }

    /// Doubles the bucket width, merging each pair of neighbours.
    fn fold(&mut self) {
        let merged: Vec<Counts> = self
            .counts
            .chunks(2)
            .map(|pair| {
                let mut sum = pair[0];
                if let Some(b) = pair.get(1) {
                    for (s, n) in sum.iter_mut().zip(b) {
                        *s += n;
                    }
                }
                sum
            })
            .collect();
        self.counts = merged;
        self.width *= 2;
    }

    /// The report's form: only buckets that hold a request are listed.
    fn report(&self) -> Option<Timeline> {
        if self.counts.is_empty() {
            return None;
        }
        let origin = Timestamp(self.origin.clamp(i64::MIN as i128, i64::MAX as i128) as i64);
        Some(Timeline {
            start: origin.rfc3339(),
            origin,
            bucket_us: (self.width / 1000) as u64,
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, c)| c.iter().any(|n| *n > 0))
                .map(|(i, c)| TimelineBucket {
                    index: i as u32,
                    ok: c[Class::Ok as usize],
                    client_error: c[Class::ClientError as usize],
                    server_error: c[Class::ServerError as usize],
                    no_response: c[Class::NoResponse as usize],
                })
                .collect(),
            outside: self.outside,
        })
    }
}

impl Detector for Histogram {
    fn on_event(&mut self, event: &Event<'_>, _ctx: &Context<'_>, _out: &mut Findings) {
        match event {
            Event::Http {
                event: HttpEvent::Done(t),
                ..
            } => self.add_transaction(t),
            // Still open at the end: unanswered, or answered in part. A one-sided capture holds
            // requests whose answers it cannot see, so they are not called unanswered.
            Event::ConnectionFinalized {
                conn,
                http: Some(h),
                ..
            } if !conn.one_sided() => {
                for t in h.open() {
                    self.add_transaction(t);
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, _ctx: &Context<'_>, out: &mut Findings) {
        out.timeline = self.report();
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn ms(n: i64) -> Timestamp {
        Timestamp(1_700_000_000_000_000_000 + n * 1_000_000)
    }

    fn total(h: &Histogram) -> u64 {
        h.counts.iter().flatten().sum::<u64>() + h.outside
    }

    #[test]
    fn test_histogram_counts_by_class() {
        let mut h = Histogram::default();
        h.add(ms(0), Class::of(Some(200)));
        h.add(ms(0), Class::of(Some(404)));
        h.add(ms(3), Class::of(Some(502)));
        h.add(ms(3), Class::of(None));
        let r = h.report().unwrap();
        assert_eq!(r.bucket_us, 1000);
        assert_eq!(r.origin, ms(0));
        assert_eq!(r.buckets.len(), 2);
        assert_eq!((r.buckets[0].ok, r.buckets[0].client_error), (1, 1));
        assert_eq!(r.buckets[1].index, 3);
        assert_eq!(
            (r.buckets[1].server_error, r.buckets[1].no_response),
            (1, 1)
        );
    }

    #[test]
    fn test_histogram_long_capture_folds_into_fixed_buckets() {
        let mut h = Histogram::default();
        // An hour of one request every 100 ms.
        for i in 0..36_000 {
            h.add(ms(i * 100), Class::Ok);
        }
        assert!(h.counts.len() <= MAX_BUCKETS);
        assert_eq!(total(&h), 36_000);
        assert!(h.width > FIRST_WIDTH);
        assert_eq!(h.origin, ms(0).0 as i128);
    }

    #[test]
    fn test_histogram_out_of_order_request_extends_the_front() {
        let mut h = Histogram::default();
        h.add(ms(10), Class::Ok);
        h.add(ms(7), Class::ServerError);
        assert_eq!(h.origin, ms(7).0 as i128);
        assert_eq!(h.counts.len(), 4);
        assert_eq!(h.counts[0][Class::ServerError as usize], 1);
        // Far earlier than the buckets can reach at this width: they fold instead.
        h.add(ms(-10_000), Class::Ok);
        assert!(h.counts.len() <= MAX_BUCKETS);
        assert_eq!(total(&h), 3);
        assert_eq!(h.outside, 0);
    }

    #[test]
    fn test_histogram_absurd_timestamps_are_counted_outside() {
        let mut h = Histogram::default();
        h.add(ms(0), Class::Ok);
        for t in [i64::MAX, i64::MIN, 0, -1] {
            h.add(Timestamp(t), Class::Ok);
        }
        assert!(h.counts.len() <= MAX_BUCKETS);
        assert!(h.width <= MAX_WIDTH);
        assert_eq!(total(&h), 5);
        assert!(h.outside >= 2);
        // The extremes first, then ordinary times: still bounded, nothing lost.
        let mut h = Histogram::default();
        for t in [i64::MIN, i64::MAX, ms(0).0, ms(5).0] {
            h.add(Timestamp(t), Class::NoResponse);
        }
        assert!(h.counts.len() <= MAX_BUCKETS);
        assert_eq!(total(&h), 4);
        assert!(h.report().is_some());
    }

    #[test]
    fn test_histogram_empty_reports_nothing() {
        assert!(Histogram::default().report().is_none());
    }
}
