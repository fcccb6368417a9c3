//! The balancer's layer-7 access log as its log service exports it: JSON Lines, or CSV with a
//! header row. Fields by name (`time`, `client_ip`, `client_port`, `status`, `upstream_status`,
//! `upstream_addr`, `request_time`, `upstream_response_time`, `request_method`, `request_uri`,
//! ...); unknown fields are ignored and optional ones may be missing. Values may be strings or
//! numbers. `time` marks the end of the request, as nginx (which the balancer runs) logs it.

use super::{LogLine, TimeIs, present, split_request, status, time};

/// The fields lbdiag reads, by their names in the export.
fn fill(number: u64, get: &dyn Fn(&str) -> Option<String>) -> Result<LogLine, String> {
    let t = get("time").ok_or("no time field")?;
    let when = time::any(&t).ok_or_else(|| format!("time {:?} does not parse", super::cut(&t)))?;
    let code = status(&get("status").ok_or("no status field")?)?;
    let mut l = LogLine::new(number, when, TimeIs::End, code);
    l.client_ip = get("client_ip")
        .or_else(|| get("remote_addr"))
        .and_then(|a| a.trim().parse().ok());
    l.client_port = get("client_port")
        .or_else(|| get("remote_port"))
        .and_then(|p| p.trim().parse().ok());
    l.upstream_status = get("upstream_status").map(|s| s.trim().to_string());
    l.upstream_addr = get("upstream_addr").and_then(|s| present(&s));
    l.request_time = get("request_time").and_then(|s| time::seconds(&s));
    l.upstream_response_time = get("upstream_response_time").and_then(|s| present(&s));
    l.method = get("request_method").and_then(|s| present(&s));
    l.target = get("request_uri").and_then(|s| present(&s));
    if l.method.is_none()
        && let Some(r) = get("request")
    {
        (l.method, l.target) = split_request(&r);
    }
    l.trace_id = [
        "x_amzn_trace_id",
        "http_x_amzn_trace_id",
        "request_id",
        "x_request_id",
        "http_x_request_id",
    ]
    .iter()
    .find_map(|k| get(k).and_then(|s| present(&s)));
    Ok(l)
}

pub fn json(number: u64, text: &str) -> Result<LogLine, String> {
    let v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    fill(number, &|k| match v.get(k)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// One CSV record (RFC 4180 within a line: quoted fields, `""` for a quote).
fn record(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    out.push(cur);
    Ok(out)
}

#[derive(Clone, Debug)]
pub struct CsvHeader {
    names: Vec<String>,
}

impl CsvHeader {
    /// A header row naming at least `time` and `status`.
    pub fn detect(line: &str) -> Option<CsvHeader> {
        let names: Vec<String> = record(line)
            .ok()?
            .into_iter()
            .map(|n| n.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
            .collect();
        (names.iter().any(|n| n == "time") && names.iter().any(|n| n == "status"))
            .then_some(CsvHeader { names })
    }

    pub fn parse(&self, number: u64, text: &str) -> Result<LogLine, String> {
        let values = record(text)?;
        if values.len() != self.names.len() {
            return Err(format!(
                "{} fields where the header names {}",
                values.len(),
                self.names.len()
            ));
        }
        fill(number, &|k| {
            let i = self.names.iter().position(|n| n == k)?;
            values.get(i).cloned()
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::accesslog::LineClass;

    #[test]
    fn test_json_line_with_numbers_and_unknown_fields_parses() {
        let l = json(
            4,
            r#"{"time":"2024-05-01T10:42:07.118+08:00","client_ip":"10.71.0.1","client_port":"40312","status":502,"upstream_status":"-","upstream_addr":"10.0.3.7:8080","request_time":0.003,"upstream_response_time":"-","tcpinfo_rtt":120,"request_method":"POST","request_uri":"/cart?id=1","http_host":"shop","slb_vport":80,"vip_addr":"10.0.0.5","unknown":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(l.client().unwrap().to_string(), "10.71.0.1:40312");
        assert_eq!(l.time.rfc3339(), "2024-05-01T02:42:07.118000Z");
        assert_eq!(l.request().as_deref(), Some("POST /cart?id=1"));
        assert_eq!(l.class(), Some(LineClass::NoResponse));
        assert!(json(1, r#"{"status":502}"#).unwrap_err().contains("time"));
        assert!(json(1, "[1]").is_err());
    }

    #[test]
    fn test_csv_with_header_and_retried_upstreams_parses() {
        let h = CsvHeader::detect(
            "time,client_ip,status,upstream_status,upstream_addr,request_uri,request_method",
        )
        .unwrap();
        let l = h
            .parse(
                2,
                r#"2024-05-01T10:42:07+08:00,10.71.0.1,504,"502, 504","10.0.3.7:8080, 10.0.3.8:8080",/a,GET"#,
            )
            .unwrap();
        assert_eq!(l.upstream_status.as_deref(), Some("502, 504"));
        assert_eq!(l.client_port, None);
        assert_eq!(l.class(), Some(LineClass::PassedThrough));
        assert!(h.parse(3, "a,b").unwrap_err().contains("fields"));
        assert!(
            h.parse(3, "\"a,b,c,d,e,f,g")
                .unwrap_err()
                .contains("quoted")
        );
        assert!(CsvHeader::detect("a,b,c").is_none());
    }
}
