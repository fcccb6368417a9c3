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

/// Redacts secret header values inside raw head text (used for excerpts of bad heads). Bad
/// heads are exactly where secrets hide in odd shapes, so a line counts as a secret header when
/// its first word names one whether or not a colon follows (`Authorization Bearer x`), and the
/// folded continuation lines (obs-fold: leading space or tab) of a secret header are secret too.
pub fn redact_head_text(text: &str) -> String {
    let mut in_secret = false;
    text.split_inclusive('\n')
        .map(|line| {
            let body = line.trim_end_matches(['\r', '\n']);
            let ending = &line[body.len()..];
            if line.starts_with([' ', '\t']) {
                if in_secret && !body.trim().is_empty() {
                    return format!(" {REDACTED}{ending}");
                }
                return line.to_string();
            }
            let name_end = body
                .find(|c: char| c == ':' || c.is_ascii_whitespace())
                .unwrap_or(body.len());
            let name = &body[..name_end];
            in_secret = is_secret_header(name);
            if in_secret {
                let sep = if body[name_end..].starts_with(':') {
                    ":"
                } else {
                    ""
                };
                return format!("{name}{sep} {REDACTED}{ending}");
            }
            // The request line carries the target and its query string.
            let mut words = line.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some(m), Some(t), Some(v)) if t.contains('?') => {
                    format!("{m} {} {v}", redact_target(t))
                }
                _ => line.to_string(),
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

    #[test]
    fn regression_secret_in_header_without_colon_is_redacted() {
        let out =
            redact_head_text("GET / HTTP/1.1\r\nAuthorization Bearer SECRET-1\r\nHost: h\r\n");
        assert!(!out.contains("SECRET-1"), "{out}");
        assert!(out.contains("Authorization [redacted]") && out.contains("Host: h"));
        let out = redact_head_text("GET / HTTP/1.1\r\ncookie\tSECRET-2\r\n");
        assert!(!out.contains("SECRET-2"), "{out}");
    }

    #[test]
    fn regression_folded_continuation_of_secret_header_is_redacted() {
        let out = redact_head_text(
            "GET / HTTP/1.1\r\nCookie: a=1\r\n  session=SECRET-FOLD\r\n\tmore=SECRET-TAB\r\nX-Other: v\r\n fold=kept\r\n",
        );
        assert!(!out.contains("SECRET"), "{out}");
        assert!(
            out.contains("X-Other: v") && out.contains(" fold=kept"),
            "{out}"
        );
    }
}
