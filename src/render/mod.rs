//! Renderers only format a [`Report`]; they decide nothing.

mod group;
pub mod html;
pub mod json;
pub mod jsonl;
pub mod junit;
pub mod markdown;
pub mod text;

pub use html::render as render_html;
pub use json::render as render_json;
pub use jsonl::render as render_jsonl;
pub use junit::render as render_junit;
pub use markdown::render as render_markdown;
pub use text::render as render_text;

/// Replaces control characters so nothing taken from a packet or a file name can drive the
/// terminal (escape sequences, carriage returns that overwrite a line).
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() && c != '\n' {
            out.push_str(&c.escape_default().to_string());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_terminal_safe_escapes_escape_sequences() {
        assert_eq!(super::terminal_safe("a\x1b[31mb\r"), "a\\u{1b}[31mb\\r");
        assert_eq!(super::terminal_safe("plain"), "plain");
    }
}
