//! Reports on captures with more findings than are listed.

mod common;

use lbdiag::Options;
use lbdiag::analyze::analyze_reader;
use lbdiag::capture::CaptureReader;
use lbdiag::report::Kind;
use std::io::Cursor;

/// A capture with many 502s from each server, listed at most `max` per group.
fn report(max: u32) -> lbdiag::Report {
    let bytes = common::busy::busy_capture();
    let reader =
        CaptureReader::from_read("busy.pcap".into(), Box::new(Cursor::new(bytes))).unwrap();
    let options = Options {
        max_findings_per_group: max,
        ..Options::default()
    };
    let a = analyze_reader(reader, &options);
    lbdiag::Report::new(vec![a.summary], a.findings, a.suppressed)
}

fn text(report: &lbdiag::Report) -> String {
    let mut out = Vec::new();
    let style = lbdiag::render::text::Style {
        color: false,
        all: false,
    };
    lbdiag::render::text::render(report, style, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn regression_findings_past_the_cap_still_count_in_the_ranked_table_and_verdict() {
    let full = report(100_000);
    let capped = report(3);
    let count = |r: &lbdiag::Report, server: &str| {
        r.findings
            .iter()
            .filter(|f| f.kind == Kind::ErrorStatus && f.flow.server == server)
            .count() as u64
            + r.captures[0]
                .unlisted
                .iter()
                .filter(|u| u.kind == Kind::ErrorStatus && u.server == server)
                .map(|u| u.count)
                .sum::<u64>()
    };
    let server = full
        .findings
        .iter()
        .find(|f| f.kind == Kind::ErrorStatus)
        .map(|f| f.flow.server.clone())
        .unwrap();
    let all = count(&full, &server);
    assert!(all > 3, "the capture has many 502s from {server}: {all}");
    assert!(full.captures[0].unlisted.is_empty());
    // Listed or counted, the total is the same.
    assert_eq!(count(&capped, &server), all);
    let listed = capped
        .findings
        .iter()
        .filter(|f| f.kind == Kind::ErrorStatus && f.flow.server == server)
        .count();
    assert_eq!(listed, 3);
    // The verdict and the ranked table say how many there were, not how many are listed.
    let t = text(&capped);
    assert!(
        t.contains(&format!(
            "502 error_status on {server}: {all} findings (3 listed"
        )),
        "{t}"
    );
    let verdict = &capped.captures[0].verdict;
    let told = verdict
        .split(". ")
        .find_map(|s| {
            let (who, rest) = s.split_once(" itself answered ")?;
            let n: u64 = rest.split(' ').next()?.parse().ok()?;
            Some((who.to_string(), n))
        })
        .expect("the verdict names a server's error statuses");
    assert_eq!(told.1, count(&full, &told.0), "{verdict}");
    assert!(told.1 > 3, "{verdict}");
}

/// Thousands of clients asking the same URLs of five servers, some of whose connections fail
/// at the moment another server answers 502: no address there forwards anything.
#[test]
fn regression_busy_servers_asked_the_same_urls_are_not_balancers() {
    let r = report(100);
    assert!(
        r.captures[0].balancers.is_empty(),
        "{:?}",
        r.captures[0].balancers
    );
    // A server's restart may explain its own resets; nothing is put on a balancer's legs.
    assert!(r.findings.iter().all(|f| f.leg.is_none()));
    assert!(
        !r.captures[0].verdict.contains("The balancer"),
        "{}",
        r.captures[0].verdict
    );
}
