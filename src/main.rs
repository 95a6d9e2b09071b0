use std::io::Write;
use std::process::ExitCode;

use tracing_subscriber::filter::LevelFilter;
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
    init_logging(&cli.global, daemon);
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

/// The log filter: -v / -q win over the environment, which wins over the command's default.
/// A plain level needs no directive parsing (a command's start-up is part of what it costs:
/// docs/performance.md, "The CLI's start-up"); `None`: log nothing.
fn log_filter(global: &cgqos::cli::Global, daemon: bool) -> Option<EnvFilterOrLevel> {
    let from_env = || {
        ["CGQOS_LOG", "RUST_LOG"]
            .into_iter()
            .filter_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
            .find_map(|v| EnvFilter::try_new(v).ok())
    };
    let filter = match global.log_level() {
        Some(level) => EnvFilterOrLevel::Level(level.parse().ok()?),
        None => match from_env() {
            Some(f) => EnvFilterOrLevel::Env(Box::new(f)),
            None if daemon => EnvFilterOrLevel::Level(LevelFilter::INFO),
            None => EnvFilterOrLevel::Level(LevelFilter::WARN),
        },
    };
    match filter {
        EnvFilterOrLevel::Level(LevelFilter::OFF) => None,
        f => Some(f),
    }
}

enum EnvFilterOrLevel {
    Env(Box<EnvFilter>),
    Level(LevelFilter),
}

fn init_logging(global: &cgqos::cli::Global, daemon: bool) {
    let Some(filter) = log_filter(global, daemon) else {
        return; // -qq: no subscriber, every event is dropped at its call site
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if !daemon {
        // A command's warnings are read right away: no times.
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .event_format(CommandLine);
        match filter {
            EnvFilterOrLevel::Env(f) => tracing_subscriber::registry()
                .with(layer.with_filter(*f))
                .init(),
            EnvFilterOrLevel::Level(l) => tracing_subscriber::registry()
                .with(layer.with_filter(l))
                .init(),
        }
        return;
    }
    let filter = match filter {
        EnvFilterOrLevel::Env(f) => *f,
        EnvFilterOrLevel::Level(l) => EnvFilter::new(l.to_string()),
    };
    // The daemon logs to journald where there is one, else to stderr (upstart captures it)
    // with times: its lines are read long after.
    let journald = std::path::Path::new(JOURNALD_SOCKET)
        .exists()
        .then(|| tracing_journald::layer().ok())
        .flatten();
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(ansi)
    });
    tracing_subscriber::registry()
        .with(journald.with_filter(filter.clone()))
        .with(stderr.with_filter(filter))
        .init();
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
    // Rewriting the whole command tree costs start-up time: only when there is something to
    // rewrite.
    let command = if any_empty_cgqos_var() {
        without_empty_env(cgqos::cli::Cli::command())
    } else {
        cgqos::cli::Cli::command()
    };
    let mut matches = match command.try_get_matches() {
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

/// Whether a `CGQOS_*` variable is set but empty (every option's variable has that prefix: a
/// test in src/cli/mod.rs checks it).
fn any_empty_cgqos_var() -> bool {
    std::env::vars_os().any(|(k, v)| v.is_empty() && k.as_encoded_bytes().starts_with(b"CGQOS_"))
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
