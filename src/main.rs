//! The command line: parse flags, call the library, print, set the exit code.

use clap::{Parser, Subcommand, ValueEnum};
use lbdiag::capture::Duration;
use lbdiag::detect::Thresholds;
use lbdiag::flow::FlowLimits;
use lbdiag::proto::http::HttpLimits;
use lbdiag::render::text::Style;
use lbdiag::{FailOn, Options, Severity};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "lbdiag",
    version,
    about = "Explain load-balancer errors (400-504) from a tcpdump capture"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyze pcap/pcapng files (optionally gzip-compressed; `-` reads stdin) or directories of
    /// them.
    Analyze(AnalyzeArgs),
    /// Merge the shard reports of one capture (`analyze --shard I/N`, one for each I) into the
    /// report one run over the whole capture gives.
    Merge(MergeArgs),
}

/// How the report is written, and the exit code.
#[derive(clap::Args)]
struct ReportArgs {
    /// Report format [default: from the --output file's extension, else text].
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Write the report to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Colour in the text report: only on a terminal by default.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// Exit with 1 when a finding of this severity or worse is found.
    #[arg(long, value_enum, default_value_t = FailOnArg::Error)]
    fail_on: FailOnArg,
    /// List every finding in the text report, even on a large capture (which otherwise shows a
    /// ranked table and a few examples per group).
    #[arg(long)]
    all: bool,
    /// Keep only the findings that explain this status (repeatable), with what explains them.
    #[arg(long = "status", value_name = "CODE")]
    statuses: Vec<u16>,
}

/// Access logs joined to the captures.
#[derive(clap::Args)]
struct LogArgs {
    /// An access log (repeatable; gzip or not) whose 4xx/5xx lines are joined to the captures'
    /// transactions: the balancer's JSON Lines or CSV export, nginx, haproxy httplog, AWS ALB.
    #[arg(long = "access-log", value_name = "LOG")]
    access_logs: Vec<PathBuf>,
    /// The nginx log_format the logs were written with, in nginx's variable names (else the
    /// format is told from the content).
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Join every log line, not only 4xx/5xx.
    #[arg(long)]
    all_lines: bool,
    /// Seconds a log's clock may be off from a capture's (and, with --same-traffic, one
    /// capture's from another's).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    max_clock_offset: u32,
}

#[derive(clap::Args)]
struct MergeArgs {
    /// The shard reports, in any order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    report: ReportArgs,
    #[command(flatten)]
    logs: LogArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Format {
    Text,
    Json,
    /// GitHub-flavoured Markdown, to paste into a ticket.
    Markdown,
    /// One self-contained HTML file to attach.
    Html,
    /// One JSON object per line (capture, finding, story), for loading into a database.
    Jsonl,
    /// JUnit XML, for CI systems.
    Junit,
}

#[derive(Clone, Copy, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, ValueEnum)]
enum FailOnArg {
    Error,
    Warning,
    Info,
    Never,
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// Capture files, or directories searched recursively for captures; `-` reads standard
    /// input.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Captures analyzed at once [default: the number of cores]. Each has its own memory
    /// limits (--max-ooo-total, --max-protocol-buffers).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Threads analyzing each capture [default: the cores left to each of the captures analyzed
    /// at once, less two for the reader and the merge; one when fewer than four are left]. The
    /// report is the same for any number; the limits on connections, out-of-order bytes and
    /// protocol buffers are shared out among them.
    #[arg(long, short = 't', value_name = "N")]
    threads: Option<usize>,
    /// Analyze all the files given as one capture, in the order of their first frames (as
    /// tcpdump's rotated files x.pcap, x.pcap1, ... are without this flag).
    #[arg(long)]
    join: bool,
    /// No progress bar on standard error (it is only shown on a terminal anyway).
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Seconds of capture time without packets after which a connection is finalized.
    #[arg(long, default_value_t = 300)]
    idle_timeout: u32,
    /// Live connections held at once (about 1.2 KB each); beyond this the one due soonest is
    /// finalized early.
    #[arg(long, default_value_t = 500_000)]
    max_connections: usize,
    /// Out-of-order bytes held per connection before a hole is given up as a gap.
    #[arg(long, default_value_t = 1 << 20)]
    max_ooo_per_conn: usize,
    /// Out-of-order bytes held across all connections.
    #[arg(long, default_value_t = 256 << 20)]
    max_ooo_total: usize,
    /// Path MTU in bytes: IP packets larger than this are reported as oversize.
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// Percent of a direction's data segments retransmitted before packet loss is reported.
    #[arg(long, default_value_t = 3.0)]
    loss_threshold: f64,
    /// Handshake round-trip time in milliseconds before it is reported as high.
    #[arg(long, default_value_t = 300)]
    rtt_threshold: u32,
    /// Longest zero-window stall in milliseconds before it is reported.
    #[arg(long, default_value_t = 1000)]
    zero_window_threshold: u32,
    /// Seconds from the end of a request to the first response byte before it is slow.
    #[arg(long, default_value_t = 60)]
    response_timeout: u32,
    /// Largest request head in bytes before it is too large (the balancer's limit).
    #[arg(long, default_value_t = 32 * 1024)]
    max_header: usize,
    /// Longest request target in bytes before it is too long (the balancer's limit).
    #[arg(long, default_value_t = 32 * 1024)]
    max_uri: usize,
    /// Include every connection's HTTP transactions in the JSON report.
    #[arg(long)]
    transactions: bool,
    /// Show Authorization, Cookie, Set-Cookie and token-like query values instead of redacting them.
    #[arg(long)]
    show_secrets: bool,
    /// An address that is a balancer or proxy in the capture (repeatable); others are found from
    /// the traffic: an address that serves requests and forwards the same ones to a backend.
    #[arg(long = "balancer", value_name = "ADDR")]
    balancers: Vec<std::net::IpAddr>,
    /// Bytes of HTTP heads and TLS handshake messages buffered across all connections.
    #[arg(long, default_value_t = 256 << 20)]
    max_protocol_buffers: usize,
    /// Findings listed per kind and server; further ones are only counted.
    #[arg(long, default_value_t = 100)]
    max_findings: u32,
    /// The captures show the same traffic taken on different hosts (a client's and a
    /// backend's), each with its own clock: find their clock offset from the requests seen on
    /// both, tell which shows the front leg and which the back, and link the balancer's failed
    /// answers on one to what the backend did on the other. Without an access log (with one,
    /// each capture is aligned with the log instead).
    #[arg(long, conflicts_with = "access_logs")]
    same_traffic: bool,
    /// Analyze only the connections of shard I of N (I from 1) and write a shard report for
    /// `lbdiag merge`, which combines the N of them into the report of one full run: one huge
    /// capture split over machines that each read the file.
    #[arg(long, value_name = "I/N")]
    shard: Option<lbdiag::analyze::ShardSpec>,
    #[command(flatten)]
    report: ReportArgs,
    #[command(flatten)]
    logs: LogArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e)
            if e.downcast_ref::<io::Error>().map(|e| e.kind())
                == Some(io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lbdiag: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Analyze(args) => analyze(args),
        Command::Merge(args) => merge(args),
    }
}

fn analyze(args: AnalyzeArgs) -> anyhow::Result<u8> {
    let access_logs = load_logs(&args.logs)?;
    let mut options = Options {
        limits: FlowLimits {
            idle_timeout: Duration::from_secs(args.idle_timeout as i64),
            max_connections: args.max_connections.max(1),
            max_ooo_per_connection: args.max_ooo_per_conn,
            max_ooo_total: args.max_ooo_total,
            ..FlowLimits::default()
        },
        thresholds: Thresholds {
            mtu: args.mtu,
            loss_rate: args.loss_threshold / 100.0,
            rtt: Duration::from_millis(args.rtt_threshold as i64),
            zero_window: Duration::from_millis(args.zero_window_threshold as i64),
            response_timeout: Duration::from_secs(args.response_timeout as i64),
            max_header: args.max_header,
            max_uri: args.max_uri,
            ..Thresholds::default()
        },
        http: HttpLimits {
            // Buffer enough to see that a head is over the limit, and a margin beyond it.
            max_head: args
                .max_header
                .max(args.max_uri)
                .saturating_mul(2)
                .max(4096),
            show_secrets: args.show_secrets,
        },
        transactions: args.transactions,
        max_protocol_buffers: args.max_protocol_buffers,
        max_findings_per_group: args.max_findings.max(1),
        balancers: args.balancers,
        progress: None,
        threads: 1,
        access_logs,
        same_traffic: args
            .same_traffic
            .then(|| Duration::from_secs(args.logs.max_clock_offset as i64)),
    };
    // Created before the analysis, so a bad path fails at once rather than after a long run.
    let output = create_output(&args.report)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = args.jobs.unwrap_or(cores).max(1);
    let mut inputs = lbdiag::analyze::collect_inputs(&args.files);
    if args.join {
        inputs.join_all();
    }
    let at_once = jobs.min(inputs.entries.len()).max(1);
    options.threads = args
        .threads
        .unwrap_or_else(|| default_threads(cores / at_once))
        .clamp(1, lbdiag::analyze::MAX_THREADS);
    if let Some(spec) = args.shard {
        return write_shard(&inputs, &options, spec, &args.report, output);
    }
    let format = report_format(&args.report)?;
    let bar = (!args.quiet && io::stderr().is_terminal()).then(|| progress_bar(&inputs));
    let report = lbdiag::analyze::analyze_inputs(&inputs, &options, jobs, |p| {
        if let Some(bar) = &bar {
            bar.update(p);
        }
    });
    if let Some(bar) = bar {
        bar.finish();
    }
    emit(report, format, &args.report, output)
}

/// Workers for one capture with `cores` to itself. `-t N` keeps N + 2 threads busy (the reader
/// and the merge besides the workers) and costs 1.4-2x the CPU of one thread: on two or three
/// cores it was slower than one thread (docs/performance.md, "Threads").
fn default_threads(cores: usize) -> usize {
    if cores >= 4 { cores - 2 } else { 1 }
}

/// `analyze --shard`: the shard report of one capture, for `lbdiag merge`.
fn write_shard(
    inputs: &lbdiag::analyze::Inputs,
    options: &Options,
    spec: lbdiag::analyze::ShardSpec,
    args: &ReportArgs,
    output: Option<std::fs::File>,
) -> anyhow::Result<u8> {
    if options.same_traffic.is_some() {
        anyhow::bail!("--shard analyzes one capture: --same-traffic needs two");
    }
    if options.access_logs.is_some() {
        anyhow::bail!(
            "--shard: access logs are joined when the shards are merged: give --access-log to `lbdiag merge`"
        );
    }
    if args.format.is_some() || !args.statuses.is_empty() {
        anyhow::bail!(
            "--shard writes a shard report: give --format and --status to `lbdiag merge`"
        );
    }
    let parts = match inputs.entries.as_slice() {
        [lbdiag::analyze::Input::File { path, .. }] => vec![path.clone()],
        [lbdiag::analyze::Input::Joined { parts, .. }] => parts.clone(),
        [lbdiag::analyze::Input::Unlistable { path, error }] => {
            anyhow::bail!("{}: cannot list: {error}", path.display())
        }
        entries => anyhow::bail!(
            "--shard analyzes one capture (or the files of one, with --join), not {}",
            entries.len()
        ),
    };
    // Shard reports shrink to a fifth compressed, and `merge` reads them either way.
    let gzip = args
        .output
        .as_ref()
        .is_some_and(|p| p.to_string_lossy().ends_with(".gz"));
    let write =
        |out: &mut dyn Write| lbdiag::analyze::write_shard_report(&parts, options, spec, out);
    let written = match output {
        Some(file) if gzip => {
            let mut out = io::BufWriter::new(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::fast(),
            ));
            write(&mut out).and_then(|()| {
                out.into_inner()
                    .map_err(io::IntoInnerError::into_error)
                    .and_then(flate2::write::GzEncoder::finish)
                    .map(drop)
                    .map_err(lbdiag::analyze::ShardReportError::Write)
            })
        }
        Some(file) => write(&mut io::BufWriter::new(file)),
        None => write(&mut io::BufWriter::new(io::stdout().lock())),
    };
    match (written, &args.output) {
        (Err(lbdiag::analyze::ShardReportError::Write(e)), Some(path)) => {
            anyhow::bail!("{}: cannot write the shard report: {e}", path.display())
        }
        (Err(lbdiag::analyze::ShardReportError::Write(e)), None) => Err(e.into()),
        // The message already says what its source said: no chain after it.
        (Err(e), _) => anyhow::bail!("{e}"),
        (Ok(()), _) => Ok(0),
    }
}

fn merge(args: MergeArgs) -> anyhow::Result<u8> {
    let access_logs = load_logs(&args.logs)?;
    let format = report_format(&args.report)?;
    let output = create_output(&args.report)?;
    let report = lbdiag::analyze::merge_shard_reports(&args.files, access_logs)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    emit(report, format, &args.report, output)
}

fn load_logs(
    args: &LogArgs,
) -> anyhow::Result<Option<std::sync::Arc<lbdiag::accesslog::LogIndex>>> {
    if args.access_logs.is_empty() {
        return Ok(None);
    }
    let read = lbdiag::accesslog::ReadOptions {
        log_format: args.log_format.clone(),
        all_lines: args.all_lines,
    };
    let max_offset = Duration::from_secs(args.max_clock_offset as i64);
    // The message already says what its source said: no chain after it.
    let index = lbdiag::accesslog::LogIndex::load(&args.access_logs, &read, max_offset)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some(std::sync::Arc::new(index)))
}

fn report_format(args: &ReportArgs) -> anyhow::Result<Format> {
    Ok(match (args.format, &args.output) {
        (Some(f), _) => f,
        (None, Some(path)) => format_from_extension(path)?,
        (None, None) => Format::Text,
    })
}

fn create_output(args: &ReportArgs) -> anyhow::Result<Option<std::fs::File>> {
    args.output
        .as_ref()
        .map(|path| {
            std::fs::File::create(path)
                .map_err(|e| anyhow::anyhow!("{}: cannot create the report: {e}", path.display()))
        })
        .transpose()
}

/// Prints the report as asked and says what the exit code is.
fn emit(
    mut report: lbdiag::Report,
    format: Format,
    args: &ReportArgs,
    output: Option<std::fs::File>,
) -> anyhow::Result<u8> {
    report.keep_statuses(&args.statuses);
    for capture in &report.captures {
        if let Some(err) = &capture.error {
            eprintln!("lbdiag: {}", lbdiag::render::terminal_safe(err));
        }
    }
    let stdout = io::stdout();
    let to_terminal = output.is_none() && stdout.is_terminal();
    let color = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => to_terminal && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut out: io::BufWriter<Box<dyn Write>> = io::BufWriter::new(match output {
        Some(file) => Box::new(file),
        None => Box::new(stdout.lock()),
    });
    let fail_on = match args.fail_on {
        FailOnArg::Error => FailOn::Severity(Severity::Error),
        FailOnArg::Warning => FailOn::Severity(Severity::Warning),
        FailOnArg::Info => FailOn::Severity(Severity::Info),
        FailOnArg::Never => FailOn::Never,
    };
    let written = match format {
        Format::Text => lbdiag::render::render_text(
            &report,
            Style {
                color,
                all: args.all,
            },
            &mut out,
        ),
        Format::Json => lbdiag::render::render_json(&report, &mut out),
        Format::Markdown => lbdiag::render::render_markdown(&report, &mut out),
        Format::Html => lbdiag::render::render_html(&report, &mut out),
        Format::Jsonl => lbdiag::render::render_jsonl(&report, &mut out),
        Format::Junit => lbdiag::render::render_junit(&report, fail_on, &mut out),
    }
    .and_then(|()| out.flush());
    if let (Err(e), Some(path)) = (&written, &args.output) {
        anyhow::bail!("{}: cannot write the report: {e}", path.display());
    }
    written?;
    Ok(report.exit_code(fail_on) as u8)
}

/// The report format an `--output` file's name asks for. Names lbdiag cannot tell, or whose
/// format it does not render yet, are an error rather than a text report under a misleading
/// name.
fn format_from_extension(path: &Path) -> anyhow::Result<Format> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let format = match ext.as_str() {
        "txt" | "text" => Some(Format::Text),
        "json" => Some(Format::Json),
        "md" | "markdown" => Some(Format::Markdown),
        "html" | "htm" => Some(Format::Html),
        "jsonl" => Some(Format::Jsonl),
        "xml" | "junit" => Some(Format::Junit),
        _ => None,
    };
    format.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: cannot tell the report format from the file name; give --format",
            path.display()
        )
    })
}

/// The progress bar of a run: bytes read of the total, rate and time left, and files done of
/// the total when there are several. It waits a second before drawing, so short runs never show
/// it.
struct Bar {
    bar: indicatif::ProgressBar,
    started: std::time::Instant,
    files_total: usize,
    shown: std::cell::Cell<bool>,
}

const BAR_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

fn progress_bar(inputs: &lbdiag::analyze::Inputs) -> Bar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(inputs.total_bytes()),
        indicatif::ProgressDrawTarget::hidden(),
    );
    // The bar takes what width is left, so the line never wraps on a narrow terminal.
    let template = "{bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}{msg} {wide_bar}";
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    Bar {
        bar,
        started: std::time::Instant::now(),
        files_total: inputs.entries.len(),
        shown: std::cell::Cell::new(false),
    }
}

impl Bar {
    fn update(&self, p: lbdiag::analyze::Progress) {
        if !self.shown.get() && self.started.elapsed() >= BAR_DELAY {
            self.bar
                .set_draw_target(indicatif::ProgressDrawTarget::stderr());
            self.shown.set(true);
        }
        self.bar.set_position(p.bytes_done);
        if self.files_total > 1 {
            self.bar
                .set_message(format!(", {}/{} files", p.files_done, self.files_total));
        }
    }

    fn finish(self) {
        // The report follows on stdout, often the same terminal: leave no bar behind.
        self.bar.finish_and_clear();
    }
}
