//! The HTML report on real captures: escaped, well-formed, rendered by a real browser, and the
//! example under docs/examples/ kept current (`LBDIAG_BLESS=1` rewrites it).

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Renders with the capture named relative to the crate root, as the committed example shows it.
fn render(capture: &str) -> String {
    let report = lbdiag::analyze_paths(&[root().join(capture)], &lbdiag::Options::default());
    let mut out = Vec::new();
    lbdiag::render::render_html(&report, &mut out).unwrap();
    let html = String::from_utf8(out).expect("the report is UTF-8");
    // The report names the file as it was given; the example should not carry this machine's path.
    let prefix = format!("{}/", root().display());
    html.replace(&prefix, "")
}

const VOID: &[&str] = &["meta", "br", "hr", "img", "input", "link", "wbr"];

/// A strict, small well-formedness check: every `<` starts a tag, every tag is closed in order
/// (void elements and `/>` aside), attribute values are quoted and hold no `<`, and the text
/// of `<style>` holds no tag. An unescaped byte from a packet breaks one of these.
fn check_well_formed(html: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    let mut pos = 0;
    while let Some(i) = rest.find('<') {
        let at = pos + i;
        let tail = &rest[i..];
        if tail.starts_with("<!DOCTYPE html>") {
            let n = "<!DOCTYPE html>".len();
            pos = at + n;
            rest = &tail[n..];
            continue;
        }
        let end = tag_end(tail).ok_or(format!("unterminated tag at byte {at}"))?;
        let tag = &tail[1..end];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if name.is_empty() {
            return Err(format!(
                "a bare '<' at byte {at}: {:?}",
                &tail[..tail.len().min(40)]
            ));
        }
        let name = name.to_ascii_lowercase();
        if closing {
            match stack.pop() {
                Some(open) if open == name => {}
                other => return Err(format!("</{name}> at byte {at} closes {other:?}")),
            }
        } else if !(tag.ends_with('/') || VOID.contains(&name.as_str())) {
            stack.push(name.clone());
        }
        pos = at + end + 1;
        rest = &tail[end + 1..];
        if name == "style" && !closing {
            let close = rest.find("</style>").ok_or("unclosed <style>")?;
            if rest[..close].contains('<') {
                return Err("a tag inside <style>".into());
            }
            pos += close;
            rest = &rest[close..];
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed: {stack:?}"));
    }
    Ok(())
}

/// The index of the `>` that ends the tag at the start of `s`, skipping quoted values; `None`
/// when a value holds `<` or is unquoted, or the tag never ends.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut after_eq = false;
    for (i, c) in s.char_indices().skip(1) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) if c == '<' => return None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '>' => return Some(i),
                '<' => return None,
                '=' => {
                    after_eq = true;
                    continue;
                }
                c if after_eq && !c.is_whitespace() => return None,
                _ => {}
            },
        }
        after_eq = false;
    }
    None
}

#[test]
fn test_checker_rejects_broken_html() {
    assert!(check_well_formed("<p a=\"x\">ok</p>").is_ok());
    assert!(check_well_formed("<p>a < b</p>").is_err());
    assert!(check_well_formed("<p><b>x</p></b>").is_err());
    assert!(check_well_formed("<p a=x>y</p>").is_err());
    assert!(check_well_formed("<p a=\"<script>\">y</p>").is_err());
    assert!(check_well_formed("<p>").is_err());
}

#[test]
fn test_html_of_hostile_captures_is_escaped_and_well_formed() {
    for capture in [
        "captures/proxy-read-timeout.pcap",
        "captures/secret-header-without-colon.pcap",
    ] {
        let html = render(capture);
        assert!(
            !html.to_ascii_lowercase().contains("<script"),
            "{capture}: a <script in the HTML"
        );
        assert!(
            !html.contains("SECRET-TOKEN-H6"),
            "{capture}: the secret leaked"
        );
        if let Err(e) = check_well_formed(&html) {
            panic!("{capture}: {e}");
        }
    }
}

#[test]
fn test_html_renders_every_shipped_capture() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("captures"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "pcap" || x == "pcapng" || x == "gz")
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    for path in paths {
        let rel = path
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let html = render(&rel);
        assert!(!html.to_ascii_lowercase().contains("<script"), "{rel}");
        if let Err(e) = check_well_formed(&html) {
            panic!("{rel}: {e}");
        }
    }
}

#[test]
fn test_html_proxy_ladder_has_balancer_in_the_middle() {
    let html = render("captures/proxy-read-timeout.pcap");
    let client = html.find(">client</text>").expect("a client lane");
    let balancer = html.find(">balancer</text>").expect("a balancer lane");
    let backend = html.find(">backend</text>").expect("a backend lane");
    assert!(client < balancer && balancer < backend);
    assert!(html.contains("frame 12 · 504 Gateway Timeout"));
}

/// docs/examples/proxy-read-timeout.html is what lbdiag renders today (apart from its version).
#[test]
fn test_html_example_is_current() {
    let path = root().join("docs/examples/proxy-read-timeout.html");
    let fresh = render("captures/proxy-read-timeout.pcap");
    if std::env::var("LBDIAG_BLESS").is_ok() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let unversioned = |s: &str| {
        s.lines()
            .map(|l| {
                if l.contains("name=\"generator\"") || l.starts_with("<p class=\"meta\">") {
                    l.split(" · lbdiag").next().unwrap_or(l).to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        unversioned(&committed) == unversioned(&fresh),
        "docs/examples/proxy-read-timeout.html is out of date: run LBDIAG_BLESS=1 cargo test --test html"
    );
}

/// Opens the report in headless Chromium and checks it painted a page. Skips when Chromium is
/// not installed: the other tests check the HTML itself.
#[test]
fn test_html_opens_in_headless_chromium() {
    let chromium = Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        eprintln!("skipped: /usr/bin/chromium is not installed (apt-get install chromium)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, render("captures/proxy-read-timeout.pcap")).unwrap();
    let shot = std::env::var_os("LBDIAG_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("report.png"));
    let profile = dir.path().join("profile");
    let status = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1280,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("chromium runs");
    assert!(status.success(), "chromium failed: {status}");
    let png = std::fs::read(&shot).expect("a screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // A blank 1280x2000 page compresses to a few kilobytes; a rendered report is far larger.
    assert!(
        png.len() > 20_000,
        "the screenshot looks blank ({} bytes)",
        png.len()
    );
}
