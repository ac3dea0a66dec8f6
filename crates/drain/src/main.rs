//! `keelson-drain`: run by init during an ordered shutdown (`drain`) and
//! after a boot that follows one (`uncordon`). Reads the request (node name
//! and Kubernetes access, JSON) from the file given, prints progress as
//! JSON lines on stdout (the last is the report), logs on stderr. Exit 0
//! when the run did its job, 1 when it timed out or was skipped, 2 on bad
//! usage or an unreadable request.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use drain::protocol::{Outcome, Progress, Request};

#[derive(Debug, Parser)]
#[command(
    name = "keelson-drain",
    version,
    about = "Cordon, drain and uncordon this node"
)]
struct Cli {
    /// The request file (JSON: node, kubeconfig | endpoint + caCert + token).
    #[arg(long)]
    request: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Cordon the node and evict its pods, within a deadline.
    Drain {
        /// The whole drain, e.g. `5m`, `90s`.
        #[arg(long, value_parser = parse_duration)]
        timeout: Duration,
        /// How long an unreachable API server is waited for before the drain
        /// is skipped (at most the timeout).
        #[arg(long, value_parser = parse_duration, default_value = "15s")]
        api_wait: Duration,
    },
    /// Wait for the node to be Ready, then undo Keelson's own cordon.
    Uncordon {
        /// How long to wait for the node to be Ready.
        #[arg(long, value_parser = parse_duration, default_value = "10m")]
        wait: Duration,
    },
}

/// `90s`, `5m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 5m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{s:?}: unit must be s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

fn emit(p: &Progress) {
    if let Ok(line) = serde_json::to_string(p) {
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (init gave up) must not stop the drain itself.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
}

fn read_request(path: &PathBuf) -> Result<Request, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let request = match read_request(&cli.request) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keelson-drain: error: drain request {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keelson-drain: error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = runtime.block_on(async {
        let mut out = |p: &Progress| emit(p);
        match cli.command {
            Command::Drain { timeout, api_wait } => {
                let mut opts = drain::drain::Options::with_timeout(timeout);
                opts.api_wait = api_wait.min(timeout);
                drain::drain::drain(&request, opts, &mut out).await
            }
            Command::Uncordon { wait } => drain::drain::uncordon(&request, wait, &mut out).await,
        }
    });
    let ok = report.outcome == Outcome::Done;
    emit(&Progress::Done(report));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
