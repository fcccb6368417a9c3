//! nginx's access log, in `combined` or in any `log_format` written with nginx's variable names.
//! A format compiles to literals and variables; a line is matched against it with a bounded
//! backtracking search in which each variable's value must look like what nginx writes there
//! (a port is digits, `$upstream_status` a list of statuses), so `502, 504` followed by a space
//! is not cut at the first space.

use super::{LogLine, TimeIs, present, split_request, status, time};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(String),
}

#[derive(Clone, Debug)]
pub struct Format {
    pieces: Vec<Piece>,
}

pub const COMBINED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";

/// Matching attempts per line: a format with many adjacent variables cannot make one line cost
/// more than this.
const BUDGET: u32 = 4096;

impl Format {
    pub fn combined() -> Format {
        Format::compile(COMBINED).expect("the combined format compiles")
    }

    /// `$name` and `${name}` are variables, everything else literal.
    pub fn compile(f: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = f;
        while let Some(i) = rest.find('$') {
            lit.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            let (name, after) = if let Some(r) = rest.strip_prefix('{') {
                let end = r.find('}').ok_or("a ${ without its }")?;
                (&r[..end], &r[end + 1..])
            } else {
                let n = rest
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                (&rest[..n], &rest[n..])
            };
            if name.is_empty() {
                lit.push('$');
                rest = after;
                continue;
            }
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Var(name.to_ascii_lowercase()));
            rest = after;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        let vars: Vec<&str> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Var(v) => Some(v.as_str()),
                Piece::Lit(_) => None,
            })
            .collect();
        if !vars.contains(&"status") {
            return Err(format!("{f:?} has no $status: lines could not be judged"));
        }
        if !vars
            .iter()
            .any(|v| matches!(*v, "time_local" | "time_iso8601" | "msec"))
        {
            return Err(format!(
                "{f:?} has no $time_local, $time_iso8601 or $msec: lines could not be placed in time"
            ));
        }
        Ok(Format { pieces })
    }

    pub fn parse(&self, number: u64, text: &str) -> Result<LogLine, String> {
        let mut values = Vec::with_capacity(self.pieces.len());
        let mut budget = BUDGET;
        if !matches(&self.pieces, text, 0, &mut values, &mut budget) {
            return Err(if budget == 0 {
                "too ambiguous to match the log format".into()
            } else {
                "does not match the log format".into()
            });
        }
        let get = |name: &str| {
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v): &(&str, &str)| *v)
        };
        let when = if let Some(t) = get("msec").and_then(time::epoch) {
            t
        } else if let Some(t) = get("time_iso8601").and_then(time::iso8601) {
            t
        } else {
            get("time_local")
                .and_then(time::clf)
                .ok_or("its time does not parse")?
        };
        let mut line = LogLine::new(
            number,
            when,
            TimeIs::End,
            status(get("status").unwrap_or(""))?,
        );
        line.client_ip = get("remote_addr").and_then(|a| a.parse().ok());
        line.client_port = get("remote_port").and_then(|p| p.parse().ok());
        if let Some(r) = get("request") {
            (line.method, line.target) = split_request(r);
        }
        if let Some(m) = get("request_method").and_then(present) {
            line.method = Some(m);
        }
        if let Some(u) = get("request_uri").and_then(present) {
            line.target = Some(u);
        }
        line.upstream_status = get("upstream_status").map(|s| s.trim().to_string());
        line.upstream_addr = get("upstream_addr").and_then(present);
        line.request_time = get("request_time").and_then(time::seconds);
        line.upstream_response_time = get("upstream_response_time").and_then(present);
        line.trace_id = ["http_x_amzn_trace_id", "http_x_request_id", "request_id"]
            .iter()
            .find_map(|v| get(v).and_then(present));
        Ok(line)
    }
}

/// Whether `text[pos..]` matches `pieces`, recording each variable's value.
fn matches<'f, 't>(
    pieces: &'f [Piece],
    text: &'t str,
    pos: usize,
    values: &mut Vec<(&'f str, &'t str)>,
    budget: &mut u32,
) -> bool {
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    let Some(rest) = text.get(pos..) else {
        return false;
    };
    match pieces.split_first() {
        None => rest.is_empty(),
        Some((Piece::Lit(l), more)) => {
            rest.starts_with(l.as_str()) && matches(more, text, pos + l.len(), values, budget)
        }
        Some((Piece::Var(v), more)) => {
            let ends: Vec<usize> = match more.first() {
                None => vec![text.len()],
                Some(Piece::Lit(l)) => rest
                    .match_indices(l.as_str())
                    .map(|(i, _)| pos + i)
                    .collect(),
                // Two variables side by side: every split point, shortest first.
                Some(Piece::Var(_)) => (pos..=text.len())
                    .filter(|i| text.is_char_boundary(*i))
                    .collect(),
            };
            for end in ends {
                if *budget == 0 {
                    return false;
                }
                let value = &text[pos..end];
                if !plausible(v, value) {
                    continue;
                }
                values.push((v.as_str(), value));
                if matches(more, text, end, values, budget) {
                    return true;
                }
                values.pop();
            }
            false
        }
    }
}

/// Whether a value could be what nginx writes for this variable.
fn plausible(var: &str, v: &str) -> bool {
    let list = |ok: &dyn Fn(&str) -> bool| {
        v == "-"
            || v.split(" : ")
                .flat_map(|g| g.split(", "))
                .all(|x| ok(x.trim()))
    };
    match var {
        "status" => v.len() == 3 && v.bytes().all(|b| b.is_ascii_digit()),
        "remote_port" | "server_port" | "body_bytes_sent" | "bytes_sent" | "request_length"
        | "connection" => !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
        "remote_addr" | "server_addr" => v.parse::<std::net::IpAddr>().is_ok(),
        "upstream_status" => {
            list(&|x| x == "-" || (x.len() == 3 && x.bytes().all(|b| b.is_ascii_digit())))
        }
        "upstream_addr" => list(&|x| !x.is_empty() && !x.contains(' ')),
        "request_time" | "msec" => v.parse::<f64>().is_ok(),
        "upstream_response_time" | "upstream_connect_time" | "upstream_header_time" => {
            list(&|x| x == "-" || x.parse::<f64>().is_ok())
        }
        "time_local" => time::clf(v).is_some(),
        "time_iso8601" => time::iso8601(v).is_some(),
        "request" => !v.contains('"'),
        _ => !v.contains('"'),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const UP: &str = "$remote_addr:$remote_port [$time_local] \"$request\" $status $body_bytes_sent up=$upstream_addr ups=$upstream_status rt=$request_time urt=$upstream_response_time";

    #[test]
    fn test_combined_line_parses() {
        let l = Format::combined()
            .parse(
                7,
                r#"10.71.0.1 - - [01/May/2024:10:42:07 +0200] "GET /search?q=chair HTTP/1.1" 504 167 "-" "curl/7.88.1""#,
            )
            .unwrap();
        assert_eq!(l.line, 7);
        assert_eq!(l.status, 504);
        assert_eq!(l.method.as_deref(), Some("GET"));
        assert_eq!(l.target.as_deref(), Some("/search?q=chair"));
        assert_eq!(l.time.rfc3339(), "2024-05-01T08:42:07.000000Z");
        assert_eq!(l.upstream_status, None);
        assert_eq!(l.class(), None);
    }

    #[test]
    fn test_log_format_with_upstream_lists_parses() {
        let f = Format::compile(UP).unwrap();
        let l = f
            .parse(
                1,
                r#"10.71.0.1:40312 [01/May/2024:10:42:07 +0000] "POST /cart HTTP/1.1" 502 157 up=10.71.2.3:9001, 10.71.2.4:9001 ups=502, 502 rt=0.004 urt=0.001, 0.002"#,
            )
            .unwrap();
        assert_eq!(l.client().unwrap().to_string(), "10.71.0.1:40312");
        assert_eq!(l.upstream_status.as_deref(), Some("502, 502"));
        assert_eq!(
            l.upstream_addr.as_deref(),
            Some("10.71.2.3:9001, 10.71.2.4:9001")
        );
        assert_eq!(l.request_time.unwrap().0, 4_000_000);
        assert_eq!(l.class(), Some(super::super::LineClass::PassedThrough));
    }

    #[test]
    fn test_log_format_space_separated_backtracks() {
        let f = Format::compile("$time_iso8601 $status $upstream_status $request_time").unwrap();
        let l = f
            .parse(1, "2024-05-01T10:42:07+00:00 502 502, - 0.010")
            .unwrap();
        assert_eq!(l.upstream_status.as_deref(), Some("502, -"));
        assert_eq!(l.request_time.unwrap().0, 10_000_000);
    }

    #[test]
    fn test_log_format_errors() {
        assert!(
            Format::compile("$remote_addr $time_local")
                .unwrap_err()
                .contains("$status")
        );
        assert!(
            Format::compile("$status")
                .unwrap_err()
                .contains("$time_local")
        );
        assert!(Format::compile("${status").is_err());
        let f = Format::compile(UP).unwrap();
        assert!(f.parse(1, "garbage").is_err());
        // Many adjacent variables cannot make a line cost more than the budget.
        let f = Format::compile("$a$b$c$d$e$f$g$h $status $time_local").unwrap();
        assert!(f.parse(1, &"x".repeat(500)).is_err());
    }
}
