//! `apid` binary: parses the command line, starts the gateway, prints the
//! startup line on stdout (the maintenance fingerprint line in maintenance
//! mode) and serves until SIGTERM or SIGINT. Exit status 1 when it cannot
//! start (init restarts it).

use std::io::Write as _;

use clap::Parser as _;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = apid::cli::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "apid cannot start");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: apid::cli::Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let started = apid::cli::start(&args).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", started.banner)?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(
        addr = %started.local_addr,
        mode = ?started.gateway.mode,
        upstream = %started.gateway.upstream.socket().display(),
        "{}",
        started.banner
    );
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "stop requested"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "stop requested"),
        }
    };
    apid::server::serve(started.listener, started.gateway, shutdown).await;
    tracing::info!("apid stopped");
    Ok(())
}
