//! `cgqos rules check`: validate `<config-dir>/rules.d` and show what it defines.

use clap::Subcommand;

use super::Ctx;
use crate::error::CliResult;
use crate::rules::RuleSet;

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Validate every rules file (file, line and field on error; exit 2)
    Check,
}

pub fn run(ctx: &Ctx, cmd: RulesCommand) -> CliResult<()> {
    match cmd {
        RulesCommand::Check => {
            let set = ctx.rules()?;
            ctx.output(&set, text);
            Ok(())
        }
    }
}

fn text(set: &RuleSet) -> String {
    let mut s = format!(
        "ok: {} rule(s) from {} file(s)\n",
        set.rules.len(),
        set.files.len()
    );
    s.push_str("classes:\n");
    for c in &set.classes.0 {
        s.push_str(&format!(
            "  {:<14} {:<10} {:<58} {}\n",
            c.name,
            c.cgroup_class.name(),
            serde_json::to_string(&c.attrs).unwrap_or_default(),
            c.at
        ));
    }
    if !set.rules.is_empty() {
        s.push_str("rules (first match wins):\n");
    }
    for r in &set.rules {
        s.push_str(&format!(
            "  {} ({}): match {}{}{}{}\n",
            r.name,
            r.at,
            serde_json::to_string(&r.matcher).unwrap_or_default(),
            r.group
                .as_ref()
                .map(|g| format!(", group {g}"))
                .unwrap_or_default(),
            r.class
                .as_ref()
                .map(|c| format!(", class {c}"))
                .unwrap_or_default(),
            if r.threads.is_empty() {
                String::new()
            } else {
                format!(
                    ", threads {}",
                    r.threads
                        .iter()
                        .map(|(g, c)| format!("{}={c}", g.as_str()))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        ));
    }
    s
}
