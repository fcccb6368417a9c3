//! The command line: parse flags, call the library, print, set the exit code.

use clap::{Parser, Subcommand, ValueEnum};
use lbdiag::capture::Duration;
use lbdiag::detect::Thresholds;
use lbdiag::flow::FlowLimits;
use lbdiag::proto::http::HttpLimits;
use lbdiag::render::text::Style;
use lbdiag::{FailOn, Options, Severity};
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
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
    /// Analyze one or more pcap/pcapng files (optionally gzip-compressed; `-` reads stdin).
    Analyze(AnalyzeArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
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
    /// Capture files; `-` reads standard input.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Colour in the text report: only on a terminal by default.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// Exit with 1 when a finding of this severity or worse is found.
    #[arg(long, value_enum, default_value_t = FailOnArg::Error)]
    fail_on: FailOnArg,
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
    /// Keep only the findings that explain this status (repeatable), with what explains them.
    #[arg(long = "status", value_name = "CODE")]
    statuses: Vec<u16>,
    /// Bytes of HTTP heads and TLS handshake messages buffered across all connections.
    #[arg(long, default_value_t = 256 << 20)]
    max_protocol_buffers: usize,
    /// Findings listed per kind and server; further ones are only counted.
    #[arg(long, default_value_t = 100)]
    max_findings: u32,
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
    let Command::Analyze(args) = cli.command;
    let options = Options {
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
    };
    let mut report = lbdiag::analyze_paths(&args.files, &options);
    report.keep_statuses(&args.statuses);
    for capture in &report.captures {
        if let Some(err) = &capture.error {
            eprintln!("lbdiag: {}", lbdiag::render::terminal_safe(err));
        }
    }
    let stdout = io::stdout();
    let color = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut out = io::BufWriter::new(stdout.lock());
    match args.format {
        Format::Text => lbdiag::render::render_text(&report, Style { color }, &mut out)?,
        Format::Json => lbdiag::render::render_json(&report, &mut out)?,
    }
    out.flush()?;
    let fail_on = match args.fail_on {
        FailOnArg::Error => FailOn::Severity(Severity::Error),
        FailOnArg::Warning => FailOn::Severity(Severity::Warning),
        FailOnArg::Info => FailOn::Severity(Severity::Info),
        FailOnArg::Never => FailOn::Never,
    };
    Ok(report.exit_code(fail_on) as u8)
}
