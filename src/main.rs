use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

fn main() -> ExitCode {
    let cli = cgqos::cli::Cli::parse();
    let daemon = matches!(cli.command, cgqos::cli::Command::Daemon(_));
    let filter = EnvFilter::try_from_env("CGQOS_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(if daemon { "info" } else { "warn" }));
    // The daemon logs to journald where there is one; everything else (and the daemon
    // elsewhere: upstart captures stderr) to stderr.
    let journald = (daemon && std::path::Path::new(JOURNALD_SOCKET).exists())
        .then(|| tracing_journald::layer().ok())
        .flatten();
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    tracing_subscriber::registry()
        .with(journald.with_filter(filter.clone()))
        .with(stderr.with_filter(filter))
        .init();
    match cgqos::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("cgqos: {}", e.message);
            }
            ExitCode::from(e.exit as u8)
        }
    }
}
