//! The AWS application load balancer's access log: space-separated fields, some quoted.
//! `type time elb client:port target:port request_processing_time target_processing_time
//! response_processing_time elb_status_code target_status_code received_bytes sent_bytes
//! "request" "user_agent" ssl_cipher ssl_protocol target_group_arn "trace_id" "domain_name"
//! "chosen_cert_arn" matched_rule_priority request_creation_time "actions_executed"
//! "redirect_url" "error_reason" ...`. `time` is when the response was sent;
//! `request_creation_time` when the request arrived, which is what is matched when present.

use super::{LogLine, TimeIs, present, split_request, status, time};
use crate::capture::Duration;
use std::net::SocketAddr;

const TYPES: [&str; 6] = ["http", "https", "h2", "grpcs", "ws", "wss"];

/// Fields split at spaces outside double quotes; quotes removed, `\"` kept as `"`.
fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

pub fn looks_like(line: &str) -> bool {
    let mut t = line.split(' ');
    t.next().is_some_and(|k| TYPES.contains(&k))
        && t.next().and_then(time::iso8601).is_some()
        && t.next()
            .is_some_and(|elb| elb.starts_with("app/") || elb.contains('/'))
}

pub fn parse(number: u64, line: &str) -> Result<LogLine, String> {
    let f = fields(line)?;
    if f.len() < 13 {
        return Err(format!("{} fields, an ALB line has at least 13", f.len()));
    }
    let sent = time::iso8601(&f[1]).ok_or("its time does not parse")?;
    let created = f.get(21).and_then(|t| time::iso8601(t));
    let (when, is) = match created {
        Some(c) => (c, TimeIs::Start),
        None => (sent, TimeIs::End),
    };
    let mut l = LogLine::new(number, when, is, status(&f[8])?);
    let client: SocketAddr = f[3]
        .parse()
        .map_err(|_| format!("client {:?} is not ip:port", super::cut(&f[3])))?;
    l.client_ip = Some(client.ip());
    l.client_port = Some(client.port());
    l.upstream_addr = present(&f[4]);
    l.upstream_status = Some(f[9].clone());
    let times: Vec<Option<Duration>> = f[5..8].iter().map(|t| time::seconds(t)).collect();
    if let [Some(a), Some(b), Some(c)] = times[..] {
        l.request_time = Some(Duration(a.0 + b.0 + c.0));
    }
    l.upstream_response_time = present(&f[6]).filter(|t| t != "-1");
    (l.method, l.target) = split_request(&f[12]);
    l.trace_id = f.get(17).and_then(|t| present(t));
    l.error_reason = f.get(24).and_then(|t| present(t));
    if is == TimeIs::Start && l.request_time.is_none() {
        // Without the processing times the span from arrival to the answer is the two times.
        l.request_time = Some(sent.at.saturating_sub(when.at)).filter(|d| d.0 >= 0);
    }
    Ok(l)
}

#[cfg(test)]
mod test {
    use super::*;

    const LINE: &str = r#"http 2018-07-02T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 0.000 0.001 0.000 200 200 34 366 "GET http://www.example.com:80/ HTTP/1.1" "curl/7.46.0" - - arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 "Root=1-58337262-36d228ad5d99923122bbe354" "-" "-" 0 2018-07-02T22:22:48.364000Z "forward" "-" "-" "10.0.0.1:80" "200" "-" "-""#;

    #[test]
    fn test_alb_line_parses() {
        assert!(looks_like(LINE));
        let l = parse(1, LINE).unwrap();
        assert_eq!(l.client().unwrap().to_string(), "192.168.131.39:2817");
        assert_eq!(l.upstream_addr.as_deref(), Some("10.0.0.1:80"));
        assert_eq!(l.time.rfc3339(), "2018-07-02T22:22:48.364000Z");
        assert_eq!(l.time_is, TimeIs::Start);
        assert_eq!(l.target.as_deref(), Some("/"));
        assert_eq!(
            l.trace_id.as_deref(),
            Some("Root=1-58337262-36d228ad5d99923122bbe354")
        );
        assert_eq!(l.class(), Some(super::super::LineClass::PassedThrough));
    }

    #[test]
    fn test_alb_target_unreachable_is_no_response() {
        let t = LINE
            .replace("0.000 0.001 0.000 200 200", "0.000 -1 -1 502 -")
            .replace(
                "\"forward\" \"-\" \"-\"",
                "\"forward\" \"-\" \"TargetConnectionErrorRefused\"",
            );
        let l = parse(1, &t).unwrap();
        assert_eq!(l.status, 502);
        assert_eq!(l.class(), Some(super::super::LineClass::NoResponse));
        assert_eq!(
            l.error_reason.as_deref(),
            Some("TargetConnectionErrorRefused")
        );
        assert!(parse(1, "http 2018-07-02T22:23:00Z app/x \"open").is_err());
        assert!(parse(1, "http 2018-07-02T22:23:00Z app/x 1 2 3").is_err());
    }
}
