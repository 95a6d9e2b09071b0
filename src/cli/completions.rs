//! `cgqos completions SHELL` and `cgqos manpage [PAGE]`: shell completions and roff manual
//! pages generated from the same clap definitions as the parser, so they cannot drift.
//! Both only print to stdout: installing them is the Makefile's job (`make install`).

use std::io::{self, Write};

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;
use crate::error::{CliError, CliResult, Exit};

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to print completions for
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManpageArgs {
    /// The page to print: cgqos (the default, cgqos(8)) or one per subcommand, as
    /// cgqos-move or cgqos-vm-add
    #[arg(value_name = "PAGE", default_value = "cgqos")]
    pub page: String,

    /// Print the name of every page, one a line, instead of a page
    #[arg(long, conflicts_with = "page")]
    pub list: bool,
}

/// The command tree as the man pages see it: built (so subcommands carry display names such
/// as `cgqos-vm-add`) and without the implicit `help` subcommand.
fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Every visible command, depth first: cgqos, cgqos-detect, ..., cgqos-vm-add, ...
fn pages(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
    out.push(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(sub, out);
    }
}

fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

/// Writes `f`'s output to stdout; a closed pipe (`| head`) is not an error worth a message.
fn print(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> CliResult<()> {
    let stdout = io::stdout();
    let mut lock = stdout.lock();
    match f(&mut lock).and_then(|()| lock.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::new(
            Exit::Failure,
            format!("writing the output to stdout: {e}"),
        )),
    }
}

pub fn completions(args: CompletionsArgs) -> CliResult<()> {
    // Into memory first: clap_complete panics on a write error, e.g. a closed pipe.
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "cgqos", &mut buf);
    print(|w| w.write_all(&buf))
}

pub fn manpage(args: ManpageArgs) -> CliResult<()> {
    let mut all = Vec::new();
    pages(&command(), &mut all);
    if args.list {
        return print(|w| {
            for p in &all {
                writeln!(w, "{}", page_name(p))?;
            }
            Ok(())
        });
    }
    let Some(cmd) = all.into_iter().find(|p| page_name(p) == args.page) else {
        return Err(CliError::bad_input(format!(
            "no manual page {:?}: `cgqos manpage --list` names them (cgqos, cgqos-move, ...)",
            args.page
        )));
    };
    // .TH's date must not be empty (roff would shift the later fields): the version stands
    // in for it, which keeps the page reproducible.
    let man = clap_mangen::Man::new(cmd)
        .section("8")
        .date(env!("CARGO_PKG_VERSION"))
        .source("cgqos")
        .manual("System Administration");
    print(|w| man.render(w))
}
