//! Loading the configuration (rules, policy, board, topology, plan): files only, all or
//! nothing, and errors that show a caller only what it could read itself.

use std::path::PathBuf;

use super::{Engine, Loaded, Paths};
use crate::daemon::policy::{self, Caller};
use crate::plan::Plan;
use crate::topology::Topology;

/// Why a configuration could not be loaded: the whole message (for root and the log) and the
/// files whose content it may quote, so a caller who could not read them is not shown it.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub message: String,
    /// `file:line:col`, when the error has one.
    pub at: Option<String>,
    /// Files whose content the message may quote.
    pub quotes: Vec<PathBuf>,
}

impl LoadError {
    fn yaml(e: crate::board::yaml::YamlError) -> LoadError {
        LoadError {
            message: e.to_string(),
            at: Some(e.at.to_string()),
            quotes: vec![PathBuf::from(&*e.at.file)],
        }
    }

    pub(super) fn quoting(e: impl std::fmt::Display, quotes: Vec<PathBuf>) -> LoadError {
        LoadError {
            message: e.to_string(),
            at: None,
            quotes,
        }
    }

    /// What `caller` is told: everything when it could read every file the message may
    /// quote; otherwise where, and that the details are in the daemon's log.
    pub fn for_caller(&self, caller: &Caller) -> String {
        let hidden: Vec<String> = self
            .quotes
            .iter()
            .filter(|f| !crate::config_read::readable_by(f, caller.uid, &caller.gids))
            .map(|f| f.display().to_string())
            .collect();
        if caller.is_root() || hidden.is_empty() {
            return self.message.clone();
        }
        format!(
            "{}invalid configuration; the message quotes {}, which uid {} may not read: see the daemon's log",
            self.at
                .as_ref()
                .map(|a| format!("{a}: "))
                .unwrap_or_default(),
            hidden.join(", "),
            caller.uid
        )
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<LoadError> for String {
    fn from(e: LoadError) -> String {
        e.message
    }
}

impl Engine {
    /// Reads configuration, board and topology, and plans: all or nothing. Reads files only:
    /// the daemon runs it without holding the engine (`watch::reload`).
    pub fn load(paths: &Paths) -> Result<Loaded, LoadError> {
        // The classes first: the policy may name any of them.
        let rules = crate::rules::load::load_dir(&paths.config_dir).map_err(LoadError::yaml)?;
        let config =
            policy::load(&paths.config_dir, &paths.etc, &rules.classes).map_err(LoadError::yaml)?;
        let board = paths.board.load().map_err(|e| match e {
            crate::board::BoardError::Yaml(y) => LoadError::yaml(y),
            e => LoadError::quoting(e.to_string(), paths.board.files()),
        })?;
        let vm_types =
            crate::vm_attach::VmTypes::load(&paths.config_dir).map_err(LoadError::yaml)?;
        let topology = Topology::detect(&paths.sysfs).map_err(|e| LoadError::quoting(e, vec![]))?;
        // Plan errors quote board values.
        let plan = Plan::build(&topology, &board)
            .map_err(|e| LoadError::quoting(e, paths.board.files()))?;
        Ok(Loaded {
            config,
            rules,
            board,
            topology,
            plan,
            vm_types,
        })
    }
}
