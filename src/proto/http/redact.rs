//! Secrets never reach a report unless the user asks: reports are attached to support tickets.

/// Headers whose values are credentials or session state.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
];

/// Query parameter names that carry credentials (compared case-insensitively, by substring).
const SECRET_PARAMS: &[&str] = &[
    "token",
    "key",
    "password",
    "passwd",
    "secret",
    "signature",
    "sig",
    "session",
    "auth",
    "credential",
];

pub const REDACTED: &str = "[redacted]";

pub fn is_secret_header(name: &str) -> bool {
    SECRET_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Replaces the values of token-like query parameters in a request target.
pub fn redact_target(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}

fn is_secret_param(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|p| lower.contains(p))
}

/// Redacts secret header values inside raw head text (used for excerpts of bad heads).
pub fn redact_head_text(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| match line.split_once(':') {
            Some((name, rest)) if is_secret_header(name.trim()) => {
                let ending = if rest.ends_with("\r\n") {
                    "\r\n"
                } else if rest.ends_with('\n') {
                    "\n"
                } else {
                    ""
                };
                format!("{name}: {REDACTED}{ending}")
            }
            _ => {
                // The request line carries the target and its query string.
                let mut words = line.splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some(m), Some(t), Some(v)) if t.contains('?') => {
                        format!("{m} {} {v}", redact_target(t))
                    }
                    _ => line.to_string(),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_query_tokens_redacted_others_kept() {
        assert_eq!(
            redact_target("/a?id=7&access_token=abc&API_KEY=x"),
            "/a?id=7&access_token=[redacted]&API_KEY=[redacted]"
        );
        assert_eq!(redact_target("/plain"), "/plain");
    }

    #[test]
    fn test_head_text_redacts_cookie_and_authorization() {
        let head =
            "GET /?token=s HTTP/1.1\r\nCookie: a=b\r\nAuthorization: Bearer x\r\nHost: h\r\n";
        let out = redact_head_text(head);
        assert!(!out.contains("a=b") && !out.contains("Bearer") && !out.contains("token=s"));
        assert!(out.contains("Host: h"));
    }
}
