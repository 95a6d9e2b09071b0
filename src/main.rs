use std::io::Write;
use std::process::ExitCode;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    let daemon = matches!(cli.command, cgqos::cli::Command::Daemon(_));
    // -v / -q win over the environment, which wins over the command's default.
    let filter = match cli.global.log_level() {
        Some(level) => EnvFilter::new(level),
        None => std::env::var("CGQOS_LOG")
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or(())
            .and_then(|v| EnvFilter::try_new(v).map_err(drop))
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

/// Parses the command line and the CGQOS_* variables. An empty variable counts as unset, as
/// an EnvironmentFile line `CGQOS_SKU=` means: clap would otherwise take "" as the value and
/// refuse it (or, for paths, use ""). The environment itself is left alone.
fn parse_cli() -> Result<cgqos::cli::Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut matches = match without_empty_env(cgqos::cli::Cli::command()).try_get_matches() {
        Ok(m) => m,
        // Help names each variable (`[env: CGQOS_SKU=]`): render it from the unchanged
        // command, where an empty variable reads as it always did.
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            return Err(cgqos::cli::Cli::command()
                .try_get_matches()
                .err()
                .unwrap_or(e));
        }
        Err(e) => return Err(e),
    };
    cgqos::cli::Cli::from_arg_matches_mut(&mut matches)
        .map_err(|e| e.format(&mut cgqos::cli::Cli::command()))
}

/// `cmd` with every argument whose variable is set but empty read as if it were unset.
fn without_empty_env(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        let empty = a
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|v| v.is_empty());
        if empty {
            a.env(clap::builder::Resettable::Reset)
        } else {
            a
        }
    })
    .mut_subcommands(without_empty_env)
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
