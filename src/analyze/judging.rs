//! The judging half of a capture's analysis: the detectors, and what the report counts about
//! connections as they are finalized. It sees every shard's output in capture order.

use super::shard::{Judge, Moment};
use super::{Listing, Options, context};
use crate::decode::TooBig;
use crate::detect::Detectors;
use crate::flow::{ConnRef, Connection, Seen};
use crate::proto::App;
use crate::proto::http::HttpEvent;

/// Connections whose TLS stopped parsing that are named in the warnings, at most.
const MAX_NOT_TLS_LISTED: usize = 20;

pub(crate) struct Judging<'a> {
    pub name: &'a str,
    pub options: &'a Options,
    pub detectors: Detectors,
    pub resynced_connections: u64,
    /// Connections whose TLS stopped parsing: (first frame, why), for the capture's warnings.
    pub not_tls: Vec<(u64, String)>,
    /// Retransmissions carrying different bytes than the original: count and first frame.
    pub conflicts: (u64, Option<u64>),
    /// With `--transactions`.
    pub listing: Option<Listing>,
    pub http_transactions: u64,
}

impl<'a> Judging<'a> {
    pub fn new(name: &'a str, options: &'a Options) -> Judging<'a> {
        Judging {
            name,
            options,
            detectors: Detectors::new(options.max_findings_per_group, &options.balancers),
            resynced_connections: 0,
            not_tls: Vec::new(),
            conflicts: (0, None),
            listing: options.transactions.then(Listing::default),
            http_transactions: 0,
        }
    }
}

/// What the detectors that serve joins across captures and logs hand out once the capture is
/// judged.
pub(crate) struct Collected {
    /// With access logs: the transactions log lines could be.
    pub log_candidates: crate::accesslog::Candidates,
    /// With `--same-traffic`: the requests the captures are aligned by.
    pub host_samples: crate::hosts::Samples,
}

impl Judging<'_> {
    /// Adds the detectors the options ask for that collect for joins after the analysis.
    pub fn add_collectors(&mut self) -> Collected {
        let collected = Collected {
            log_candidates: Default::default(),
            host_samples: Default::default(),
        };
        if let Some(index) = &self.options.access_logs {
            let collector =
                crate::accesslog::Collector::new(index.clone(), collected.log_candidates.clone());
            self.detectors.add(Box::new(collector));
        }
        if self.options.same_traffic.is_some() {
            let sampler = crate::hosts::Sampler::new(collected.host_samples.clone());
            self.detectors.add(Box::new(sampler));
        }
        collected
    }
}

impl Judge for Judging<'_> {
    fn http(&mut self, conn: ConnRef, event: HttpEvent<'_>, at: Moment) {
        if let (HttpEvent::Done(t), Some(l)) = (&event, self.listing.as_mut()) {
            l.add(conn.serial, t);
        }
        let ctx = context(self.name, self.options, at.now, at.at_end);
        self.detectors.on_http(&conn, event, &ctx);
    }

    fn finalized(&mut self, conn: Connection, app: Option<App>, at: Moment) {
        let ctx = context(self.name, self.options, at.now, at.at_end);
        let http = app.as_ref().and_then(App::http);
        for side in [&conn.to_server, &conn.to_client] {
            if side.stream.conflicts > 0 {
                self.conflicts.0 += side.stream.conflicts as u64;
                self.conflicts.1 = self.conflicts.1.or(side.stream.first_conflict_frame);
            }
        }
        self.detectors
            .on_connection(&conn, http, app.as_ref().and_then(App::tls), &ctx);
        if let Some(tls) = app.as_ref().and_then(App::tls)
            && let Some(why) = &tls.not_tls
            && self.not_tls.len() < MAX_NOT_TLS_LISTED
        {
            self.not_tls.push((conn.first.frame, why.clone()));
        }
        if let Some(h) = http {
            self.http_transactions += h.transactions;
            if h.resyncs() > 0 {
                self.resynced_connections += 1;
            }
        }
        if let Some(listing) = &mut self.listing {
            for t in http.into_iter().flat_map(|h| h.open()) {
                listing.add(conn.serial, t);
            }
            listing.close(&conn);
        }
    }

    fn unmatched_too_big(&mut self, msg: &TooBig, at: Seen, moment: Moment) {
        let ctx = context(self.name, self.options, moment.now, moment.at_end);
        self.detectors.on_unmatched_too_big(msg, at, &ctx);
    }
}
