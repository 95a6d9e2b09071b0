use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

fn main() -> ExitCode {
    drop_empty_cgqos_vars();
    let cli = match cgqos::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    let daemon = matches!(cli.command, cgqos::cli::Command::Daemon(_));
    // -v / -q win over the environment, which wins over the command's default.
    let filter = match cli.global.log_level() {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_env("CGQOS_LOG")
            .or_else(|_| EnvFilter::try_from_default_env())
            .unwrap_or_else(|_| EnvFilter::new(if daemon { "info" } else { "warn" })),
    };
    // The daemon logs to journald where there is one; everything else (and the daemon
    // elsewhere: upstart captures stderr) to stderr.
    let journald = (daemon && std::path::Path::new(JOURNALD_SOCKET).exists())
        .then(|| tracing_journald::layer().ok())
        .flatten();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A long-running daemon's lines need times; a command's warnings are read right away.
    let daemon_stderr = (journald.is_none() && daemon).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(ansi)
    });
    let command_stderr = (!daemon).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .event_format(CommandLine)
    });
    tracing_subscriber::registry()
        .with(journald.with_filter(filter.clone()))
        .with(daemon_stderr.with_filter(filter.clone()))
        .with(command_stderr.with_filter(filter))
        .init();
    match cgqos::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message.is_empty() {
                cgqos::cli::eprint_line(&e.message);
            }
            ExitCode::from(e.exit() as u8)
        }
    }
}

/// Log lines of a command: `cgqos: warning: <message> <fields>`, like its error line.
struct CommandLine;

impl<S, N> FormatEvent<S, N> for CommandLine
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        write!(writer, "cgqos: {level}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// An empty CGQOS_* variable counts as unset, as an EnvironmentFile line `CGQOS_SKU=` means.
/// clap would otherwise take "" as the value and refuse it (or, for paths, use "").
fn drop_empty_cgqos_vars() {
    let empty: Vec<_> = std::env::vars_os()
        .filter(|(k, v)| k.to_str().is_some_and(|k| k.starts_with("CGQOS_")) && v.is_empty())
        .map(|(k, _)| k)
        .collect();
    for k in empty {
        // SAFETY: called first thing in main, before any other thread exists, so nothing
        // reads the environment concurrently.
        unsafe { std::env::remove_var(k) };
    }
}

/// Ends the process for a command line clap refused, or for --help / --version: usage errors
/// are exit 2 (and, with --json, also a JSON error on stdout); help that cannot be written is
/// exit 1, or quiet on a closed stdout.
fn clap_exit(e: clap::Error) -> ExitCode {
    if !e.use_stderr() {
        let written = e.print().and_then(|()| std::io::stdout().lock().flush());
        return match written {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(err) => {
                cgqos::cli::eprint_line(&format!("writing the help to stdout: {err}"));
                ExitCode::from(cgqos::error::Exit::Failure as u8)
            }
        };
    }
    if std::env::args_os().any(|a| a == "--json") {
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or_default();
        let err = cgqos::error::CliError::bad_input(first.trim_start_matches("error: "));
        let _ = std::io::stdout()
            .lock()
            .write_all(cgqos::cli::json_error(&err).as_bytes());
    }
    let _ = e.print();
    ExitCode::from(cgqos::error::Exit::BadInput as u8)
}
