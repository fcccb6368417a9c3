//! haproxy's `option httplog` line, after any syslog prefix:
//! `CLIENT:PORT [ACCEPT_DATE] FRONTEND BACKEND/SERVER TR/Tw/Tc/Tr/Ta STATUS BYTES REQ_COOKIE
//! RES_COOKIE TERMINATION ACT/FE/BE/SRV/RETRIES SRVQ/BEQ [{HEADERS}] "REQUEST"`.
//! haproxy logs no upstream status: its timers and termination state say whether the server
//! answered (`Tr` is -1 when it never sent a response head).

use super::{HaproxyTimers, LineClass, LogLine, TimeIs, split_request, status, time};
use std::net::SocketAddr;

/// Where the httplog fields begin: the token that is `ip:port` followed by `[date]`.
fn start(tokens: &[&str]) -> Option<usize> {
    tokens.windows(2).position(|w| {
        client(w[0]).is_some()
            && w[1].starts_with('[')
            && w[1].ends_with(']')
            && time::clf(w[1]).is_some()
    })
}

/// haproxy writes IPv6 clients without brackets: the port follows the last colon.
fn client(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    let (ip, port) = s.rsplit_once(':')?;
    Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
}

pub fn looks_like(line: &str) -> bool {
    let tokens: Vec<&str> = line.split_ascii_whitespace().take(16).collect();
    start(&tokens).is_some_and(|i| tokens.get(i + 4).is_some_and(|t| t.split('/').count() == 5))
}

fn timer(s: &str) -> Result<i64, String> {
    let s = s.trim_start_matches('+');
    s.parse::<i64>()
        .ok()
        .filter(|v| *v >= -1)
        .ok_or_else(|| format!("timer {:?} is not a number", super::cut(s)))
}

pub fn parse(number: u64, text: &str) -> Result<LogLine, String> {
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    let i = start(&tokens).ok_or("no `client:port [date]` of an httplog line")?;
    let field = |k: usize, what: &str| {
        tokens
            .get(i + k)
            .copied()
            .ok_or_else(|| format!("ends before its {what}"))
    };
    let client = client(tokens[i]).ok_or("bad client address")?;
    let accepted = time::clf(tokens[i + 1]).ok_or("bad accept date")?;
    let timers: Vec<&str> = field(4, "timers")?.split('/').collect();
    if timers.len() != 5 {
        return Err("its timers are not TR/Tw/Tc/Tr/Ta".into());
    }
    let timers = HaproxyTimers {
        tr_request: timer(timers[0])?,
        tw: timer(timers[1])?,
        tc: timer(timers[2])?,
        tr_response: timer(timers[3])?,
        ta: timer(timers[4])?,
    };
    let code = status(field(5, "status")?)?;
    let termination = field(9, "termination state")?;
    if termination.len() < 2 || !termination.is_ascii() {
        return Err(format!(
            "termination state {:?} is not haproxy's",
            super::cut(termination)
        ));
    }
    let mut line = LogLine::new(number, accepted, TimeIs::Start, code);
    line.client_ip = Some(client.ip());
    line.client_port = Some(client.port());
    line.termination = Some(termination.to_string());
    line.timers = Some(timers);
    if timers.ta >= 0 {
        line.request_time = Some(crate::capture::Duration::from_millis(timers.ta));
    }
    if let (Some(open), Some(close)) = (text.find('"'), text.rfind('"'))
        && close > open
    {
        (line.method, line.target) = split_request(&text[open + 1..close]);
    }
    Ok(line)
}

/// A line read as the page reads `upstream_status`: the server sent a response head (`Tr` set)
/// that haproxy passed on, or one haproxy refused (`P`: the proxy blocked it, 502), or none.
pub fn class(_status: u16, termination: &str, timers: Option<HaproxyTimers>) -> Option<LineClass> {
    let answered = timers?.tr_response >= 0;
    Some(match (termination.as_bytes().first(), answered) {
        (Some(b'P' | b'I'), true) => LineClass::Changed,
        (_, true) => LineClass::PassedThrough,
        (_, false) => LineClass::NoResponse,
    })
}

/// What a termination state says, in words for the report.
pub fn termination_words(t: &str) -> String {
    let b = t.as_bytes();
    let who = match b.first() {
        Some(b'C') => "the client aborted",
        Some(b'S') => "the server aborted or refused",
        Some(b'P') => "haproxy itself aborted (a blocked or invalid message)",
        Some(b'c') => "the client timed out",
        Some(b's') => "the server timed out",
        Some(b'R') => "a haproxy resource ran out",
        Some(b'I') => "haproxy hit an internal error",
        Some(b'D') => "the server was marked down",
        Some(b'K') => "an administrator killed the session",
        Some(b'L') => "haproxy answered locally",
        _ => "the session ended normally",
    };
    let when = match b.get(1) {
        Some(b'R') => "while waiting for the request",
        Some(b'Q') => "while queued",
        Some(b'C') => "while connecting to the server",
        Some(b'H') => "while waiting for the response head",
        Some(b'D') => "during the data phase",
        Some(b'L') => "while sending the last data",
        Some(b'T') => "while tarpitted",
        _ => "",
    };
    format!("{t}: {who} {when}").trim_end().to_string()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_httplog_line_with_syslog_prefix_parses() {
        let t = r#"<134>Feb  6 12:14:14 localhost haproxy[14389]: 10.0.1.2:33317 [06/Feb/2009:12:14:14.655] http-in static/srv1 10/0/30/69/109 200 2750 - - ---- 1/1/1/1/0 0/0 {1wt.eu} {} "GET /index.html HTTP/1.1""#;
        assert!(looks_like(t));
        let l = parse(3, t).unwrap();
        assert_eq!(l.client().unwrap().to_string(), "10.0.1.2:33317");
        assert_eq!(l.time.rfc3339(), "2009-02-06T12:14:14.655000Z");
        assert_eq!(l.time_is, TimeIs::Start);
        assert_eq!(l.status, 200);
        assert_eq!(l.target.as_deref(), Some("/index.html"));
        assert_eq!(l.timers.unwrap().tr_response, 69);
        assert_eq!(l.class(), Some(LineClass::PassedThrough));
    }

    #[test]
    fn test_httplog_server_timeout_is_no_response() {
        let t = r#"10.71.0.1:51234 [01/May/2024:10:42:07.118] f8104 b9104/s1 0/0/1/-1/2003 504 198 - - sH-- 1/1/0/0/0 0/0 "GET /search?q=chair HTTP/1.1""#;
        let l = parse(1, t).unwrap();
        assert_eq!(l.status, 504);
        assert_eq!(l.termination.as_deref(), Some("sH--"));
        assert_eq!(l.class(), Some(LineClass::NoResponse));
        assert!(
            termination_words("sH--")
                .contains("server timed out while waiting for the response head")
        );
        let blocked = t
            .replace("0/0/1/-1/2003 504", "0/0/1/3/5 502")
            .replace("sH--", "PH--");
        assert_eq!(
            parse(1, &blocked).unwrap().class(),
            Some(LineClass::Changed)
        );
    }

    #[test]
    fn test_httplog_broken_lines_say_why() {
        let t = r#"10.71.0.1:51234 [01/May/2024:10:42:07.118] f8104 b9104/s1 0/0/x/-1/2003 504 198 - - sH-- 1/1/0/0/0 0/0 "GET / HTTP/1.1""#;
        assert!(parse(1, t).unwrap_err().contains("timer"));
        assert!(
            parse(1, "10.71.0.1:51234 [01/May/2024:10:42:07.118] f8104")
                .unwrap_err()
                .contains("ends before")
        );
        let ipv6 = t
            .replace("10.71.0.1:51234", "fd00::1:51234")
            .replace("0/0/x", "0/0/1");
        assert_eq!(
            parse(1, &ipv6).unwrap().client().unwrap().to_string(),
            "[fd00::1]:51234"
        );
    }
}
