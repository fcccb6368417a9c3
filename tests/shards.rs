//! `analyze --shard I/N` over each share of a capture, then `merge` of the shard reports, gives
//! the report of one run over the whole capture, byte for byte: on every shipped capture, on a
//! synthetic one busy enough that connections expire and fail while other shards' packets
//! arrive, with the shards on several threads, and with an access log joined at the merge.
//! Shard reports that do not make a whole (one missing, given twice, cut short, of another
//! capture) are a clear error naming the file.

mod common;

use common::busy::busy_capture;
use lbdiag::Options;
use lbdiag::analyze::{
    Input, ShardSpec, analyze_joined, analyze_paths, collect_inputs, merge_shard_reports,
    write_shard_report,
};
use lbdiag::capture::Duration;
use lbdiag::render::json;
use std::path::{Path, PathBuf};

fn json_of(report: &lbdiag::report::Report) -> String {
    let mut out = Vec::new();
    json::render(report, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// Writes the `count` shard reports of the capture made of `parts` into `dir`.
fn shard_reports(parts: &[PathBuf], options: &Options, count: u32, dir: &Path) -> Vec<PathBuf> {
    (0..count)
        .map(|index| {
            let path = dir.join(format!("shard-{index}-of-{count}.jsonl"));
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            write_shard_report(parts, options, ShardSpec { index, count }, &mut out)
                .unwrap_or_else(|e| panic!("{parts:?} shard {index}/{count}: {e}"));
            path
        })
        .collect()
}

fn merged(parts: &[PathBuf], options: &Options, count: u32) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut reports = shard_reports(parts, options, count, dir.path());
    // The order they are given in does not matter.
    reports.reverse();
    json_of(&merge_shard_reports(&reports, None).unwrap())
}

#[test]
fn test_merged_shards_equal_one_run_on_shipped_captures() {
    let captures = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
    let inputs = collect_inputs(&[&captures]);
    assert!(inputs.entries.len() > 50, "the shipped captures are found");
    for (threads, transactions) in [(1, false), (2, true)] {
        let options = Options {
            threads,
            transactions,
            ..Options::default()
        };
        for input in &inputs.entries {
            let (parts, one) = match input {
                Input::File { path, .. } => (
                    vec![path.clone()],
                    json_of(&analyze_paths(&[path], &options)),
                ),
                Input::Joined { parts, .. } => {
                    let a = analyze_joined(parts, &options);
                    let report =
                        lbdiag::report::Report::new(vec![a.summary], a.findings, a.suppressed);
                    (parts.clone(), json_of(&report))
                }
                Input::Unlistable { path, .. } => panic!("{}: unlistable", path.display()),
            };
            for count in [2, 3] {
                assert!(
                    one == merged(&parts, &options, count),
                    "{parts:?}: {count} shards merged differ from one run (threads {threads})"
                );
            }
        }
    }
}

#[test]
fn test_merged_shards_equal_one_run_on_a_busy_capture() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("busy.pcap");
    std::fs::write(&capture, busy_capture()).unwrap();
    let parts = vec![capture.clone()];
    let mut options = Options {
        transactions: true,
        ..Options::default()
    };
    options.limits.idle_timeout = Duration::from_secs(2);
    let one = json_of(&analyze_paths(&[&capture], &options));
    for kind in [
        "handshake_refused",
        "syn_unanswered",
        "connection_reset",
        "error_status",
    ] {
        assert!(one.contains(&format!("\"kind\": \"{kind}\"")), "{kind}");
    }
    for (threads, count) in [(1, 2), (1, 5), (3, 2), (2, 7)] {
        let options = Options {
            threads,
            ..options.clone()
        };
        assert!(
            one == merged(&parts, &options, count),
            "{count} shards on {threads} thread(s) merged differ from one run"
        );
    }
}

fn lbdiag(dir: &Path, args: &[&str]) -> std::process::Output {
    assert_cmd::Command::cargo_bin("lbdiag")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn test_cli_merge_with_an_access_log_and_gzip_equals_one_run() {
    let logs = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/access-logs");
    let tmp = tempfile::tempdir().unwrap();
    let out = |name: &str| tmp.path().join(name).display().to_string();
    let one = lbdiag(
        &logs,
        &[
            "analyze",
            "--fail-on=never",
            "--format=json",
            "--access-log",
            "balancer.jsonl",
            "nginx.pcap",
        ],
    );
    assert_eq!(one.status.code(), Some(0), "{}", stderr(&one));
    let (a, b) = (out("a.jsonl.gz"), out("b.jsonl"));
    for (spec, to) in [("1/2", &a), ("2/2", &b)] {
        let run = lbdiag(
            &logs,
            &[
                "analyze",
                "--shard",
                spec,
                "-t",
                "2",
                "nginx.pcap",
                "-o",
                to,
            ],
        );
        assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    }
    let gz = std::fs::read(&a).unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "-o NAME.gz writes gzip");
    let merge = lbdiag(
        &logs,
        &[
            "merge",
            "--fail-on=never",
            "--format=json",
            "--access-log",
            "balancer.jsonl",
            &b,
            &a,
        ],
    );
    assert_eq!(merge.status.code(), Some(0), "{}", stderr(&merge));
    assert!(String::from_utf8_lossy(&one.stdout).contains("\"log_matches\""));
    assert!(
        one.stdout == merge.stdout,
        "merged report differs from one run"
    );
    // The exit code follows the merged findings, as it does the run's.
    let failing = lbdiag(&logs, &["merge", "--format=json", &a, &b]);
    let run = lbdiag(&logs, &["analyze", "--format=json", "nginx.pcap"]);
    assert_eq!(failing.status.code(), run.status.code());
}

#[test]
fn test_cli_shard_reports_that_do_not_make_a_whole_are_errors_naming_the_file() {
    let captures = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let shard = |capture: &str, spec: &str, to: &str| {
        let c = captures.join(capture).display().to_string();
        let run = lbdiag(dir, &["analyze", "--shard", spec, &c, "-o", to]);
        assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    };
    shard("backend-keepalive-race.pcap", "1/3", "a1.jsonl");
    shard("backend-keepalive-race.pcap", "2/3", "a2.jsonl");
    shard("backend-keepalive-race.pcap", "3/3", "a3.jsonl");
    shard("proxy-two-balancers.pcap", "2/3", "b2.jsonl");
    let whole = std::fs::read(dir.join("a2.jsonl")).unwrap();
    std::fs::write(dir.join("cut.jsonl"), &whole[..whole.len() / 2]).unwrap();
    std::fs::write(dir.join("report.json"), b"{\"tool\": {}}\n").unwrap();
    // Still valid JSON of the right shape, but not what the run wrote.
    let altered = String::from_utf8(whole.clone()).unwrap().replacen(
        "\"at_end\":false",
        "\"at_end\":true",
        1,
    );
    assert!(altered.as_bytes() != whole.as_slice());
    std::fs::write(dir.join("altered.jsonl"), altered).unwrap();
    std::fs::write(dir.join("binary.jsonl"), [0xffu8, 0xfe, 0, 1]).unwrap();
    for (args, says) in [
        (vec!["a1.jsonl", "a3.jsonl"], "missing shard report(s) 2/3"),
        (
            vec!["a1.jsonl", "a1.jsonl", "a2.jsonl"],
            "a1.jsonl: shard 1/3 is given twice",
        ),
        (
            vec!["a1.jsonl", "cut.jsonl", "a3.jsonl"],
            "cut.jsonl: ends in the middle of line",
        ),
        (
            vec!["a1.jsonl", "altered.jsonl", "a3.jsonl"],
            "altered.jsonl: line",
        ),
        (
            vec!["a1.jsonl", "b2.jsonl", "a3.jsonl"],
            "b2.jsonl: is a report of another capture",
        ),
        (vec!["report.json"], "report.json: not a shard report"),
        (vec!["binary.jsonl"], "binary.jsonl: not a shard report"),
        (vec!["nowhere.jsonl"], "nowhere.jsonl: cannot read"),
    ] {
        let run = lbdiag(dir, &[&["merge"], args.as_slice()].concat());
        assert_eq!(run.status.code(), Some(2), "{args:?}");
        assert!(stderr(&run).contains(says), "{args:?}: {}", stderr(&run));
    }
    let c = captures
        .join("backend-keepalive-race.pcap")
        .display()
        .to_string();
    let other = captures
        .join("proxy-two-balancers.pcap")
        .display()
        .to_string();
    for (args, says) in [
        (vec!["--shard", "0/2", &c], "give the shard as I/N"),
        (vec!["--shard", "3/2", &c], "give the shard as I/N"),
        (
            vec!["--shard", "1/2", &c, &other],
            "--shard analyzes one capture",
        ),
        (
            vec!["--shard", "1/2", "--format", "text", &c],
            "give --format and --status to `lbdiag merge`",
        ),
    ] {
        let run = lbdiag(dir, &[&["analyze"], args.as_slice()].concat());
        assert_eq!(run.status.code(), Some(2), "{args:?}");
        assert!(stderr(&run).contains(says), "{args:?}: {}", stderr(&run));
    }
}

#[test]
fn regression_shard_errors_say_their_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = lbdiag(dir, &["analyze", "--shard", "1/2", "missing.pcap"]);
    assert_eq!(run.status.code(), Some(2));
    assert_eq!(
        stderr(&run).matches("No such file or directory").count(),
        1,
        "{}",
        stderr(&run)
    );
    let run = lbdiag(
        dir,
        &["analyze", "--access-log", "missing.log", "missing.pcap"],
    );
    assert_eq!(run.status.code(), Some(2));
    assert_eq!(
        stderr(&run).matches("No such file or directory").count(),
        1,
        "{}",
        stderr(&run)
    );
    let run = lbdiag(dir, &["merge", "missing.jsonl"]);
    assert_eq!(run.status.code(), Some(2));
    assert_eq!(
        stderr(&run).matches("No such file or directory").count(),
        1,
        "{}",
        stderr(&run)
    );
}
