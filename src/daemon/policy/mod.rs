//! Who may do what: the daemon's configuration (`<config-dir>/daemon.yaml`) and the pure
//! decision function. Root may do anything. Others may place only their own processes (real
//! uid of the target == effective uid of the caller, the resourced rule) unless named in
//! `any-target`, never into a group or class reserved to someone else, and may change groups
//! (vm_add, vm_remove, restrict) only where a reservation or `admin` names them. A thread
//! class's task attributes go only as far as the caller could go itself with
//! `sched_setattr` (`beyond_own`), unless a `grants` entry gives the class to the caller.
//!
//! Files: `config.rs` reads `daemon.yaml` into a [`Config`]; this file decides requests
//! against it; `attrs.rs` is the rule for a thread class's task attributes.

mod attrs;
mod config;

use std::collections::BTreeSet;

pub use attrs::{Limits, Sched, beyond_own, beyond_reach, beyond_task};
pub use config::{CONFIG_FILE, load, parse, parse_with_classes};

/// A set of users and groups, resolved to ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principals {
    pub uids: BTreeSet<u32>,
    pub gids: BTreeSet<u32>,
}

impl Principals {
    pub fn contains(&self, caller: &Caller) -> bool {
        self.uids.contains(&caller.uid) || caller.gids.iter().any(|g| self.gids.contains(g))
    }
}

/// A group pattern (`chrome/background`, `vms/*`, an alias) or a class (`class:urgent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Group(GroupGlob),
    Class(String),
}

/// A group pattern, compiled once when the configuration is read (not per check).
#[derive(Debug, Clone)]
pub struct GroupGlob {
    source: String,
    compiled: crate::matcher::Wildcard,
}

impl GroupGlob {
    pub fn new(pattern: impl Into<String>) -> GroupGlob {
        let source = pattern.into();
        let compiled = crate::matcher::Wildcard::new(&source, crate::matcher::Mode::Path);
        GroupGlob { source, compiled }
    }

    /// `*` matches any run of characters except `/`; everything else literally.
    pub fn matches(&self, group: &str) -> bool {
        self.compiled.matches(group)
    }
}

impl PartialEq for GroupGlob {
    fn eq(&self, other: &GroupGlob) -> bool {
        self.source == other.source
    }
}

impl Eq for GroupGlob {}

impl std::fmt::Display for GroupGlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl Pattern {
    fn matches_group(&self, group: &str) -> bool {
        match self {
            Pattern::Group(p) => p.matches(group),
            Pattern::Class(_) => false,
        }
    }

    fn matches_class(&self, class: &str) -> bool {
        matches!(self, Pattern::Class(c) if c == class)
    }
}

/// `*` matches any run of characters except `/`; everything else literally. Linear in the
/// group name, which a caller chooses (`crate::matcher`).
#[cfg(test)]
fn glob(pattern: &str, text: &str) -> bool {
    GroupGlob::new(pattern).matches(text)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub pattern: Pattern,
    pub principals: Principals,
    /// `file:line` of the entry, for denial messages.
    pub at: String,
}

/// A thread class (or every class) given to principals beyond their own limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Canonical class names; `None`: every class (`class: "*"`).
    pub classes: Option<BTreeSet<String>>,
    pub principals: Principals,
    /// `file:line` of the entry.
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub socket_mode: u32,
    pub socket_gid: Option<u32>,
    pub max_connections: usize,
    /// Connections one non-root uid may hold at once (default: a quarter of max_connections).
    pub max_connections_per_user: usize,
    pub idle_timeout_secs: u64,
    pub any_target: Principals,
    pub admin: Principals,
    pub reserved: Vec<Reservation>,
    pub grants: Vec<Grant>,
    /// Also serve the D-Bus interfaces on the system bus (`dbus: true`, or `--dbus`).
    pub dbus: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket_mode: 0o660,
            socket_gid: None,
            max_connections: 64,
            max_connections_per_user: 16,
            idle_timeout_secs: 60,
            any_target: Principals::default(),
            admin: Principals::default(),
            reserved: Vec::new(),
            grants: Vec::new(),
            dbus: false,
        }
    }
}

/// The identity of a connection, from SO_PEERCRED (and the caller's supplementary groups),
/// or of a D-Bus sender, from the bus daemon's credentials for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gids: Vec<u32>,
    pub pid: Option<u32>,
    /// The sender's unique bus name (`:1.42`) of a D-Bus call; `None` on the socket.
    pub bus: Option<String>,
}

impl Caller {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Who asked, as `why` records name it.
    pub fn describe(&self) -> String {
        let pid = self.pid.unwrap_or(0);
        match &self.bus {
            Some(name) => format!("dbus {name} uid {} pid {pid}", self.uid),
            None => format!("request from uid {} (pid {pid})", self.uid),
        }
    }
}

/// What a request wants to do, as far as the policy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// Read-only: ping, status, where.
    Read,
    /// Place tasks (of the given owners) into a group and/or class.
    Place {
        group: &'a str,
        class: Option<&'a str>,
    },
    /// Create, remove or restrict a group.
    ChangeGroup {
        group: &'a str,
    },
    Reload,
}

impl Config {
    /// Whether `caller` may do `action` (the targets' owners are checked by `may_touch`).
    pub fn authorize(&self, caller: &Caller, action: &Action) -> Result<(), String> {
        if caller.is_root() {
            return Ok(());
        }
        match action {
            Action::Read => Ok(()),
            Action::Reload => {
                if self.admin.contains(caller) {
                    Ok(())
                } else {
                    Err("reload and reset are for root and the policy's admin principals".into())
                }
            }
            Action::Place { group, class } => {
                for r in &self.reserved {
                    let hit = r.pattern.matches_group(group)
                        || class.is_some_and(|c| r.pattern.matches_class(c));
                    if hit && !r.principals.contains(caller) {
                        return Err(format!(
                            "{} is reserved by the policy ({}) to other users",
                            describe(&r.pattern),
                            r.at
                        ));
                    }
                }
                Ok(())
            }
            Action::ChangeGroup { group } => {
                if self.admin.contains(caller) {
                    return Ok(());
                }
                let mut named = false;
                for r in self
                    .reserved
                    .iter()
                    .filter(|r| r.pattern.matches_group(group))
                {
                    if !r.principals.contains(caller) {
                        return Err(format!(
                            "{} is reserved by the policy ({}) to other users",
                            describe(&r.pattern),
                            r.at
                        ));
                    }
                    named = true;
                }
                if named {
                    Ok(())
                } else {
                    Err(format!(
                        "changing {group} is for root, the policy's admin principals, or those a reservation of it names"
                    ))
                }
            }
        }
    }

    /// Whether `caller` may place a task whose process has real uid `owner`.
    /// Whether `caller` may touch every process (root, or named in `any-target`): then a
    /// target's owner need not be read.
    pub fn touches_any(&self, caller: &Caller) -> bool {
        caller.is_root() || self.any_target.contains(caller)
    }

    pub fn may_touch(&self, caller: &Caller, owner: u32) -> Result<(), String> {
        if owner == caller.uid || self.touches_any(caller) {
            Ok(())
        } else {
            Err(format!(
                "the process belongs to uid {owner}; uid {} may only place its own processes",
                caller.uid
            ))
        }
    }
}

impl Config {
    /// Whether a `grants` entry gives `class` (a canonical class name) to `caller`.
    pub fn grants_class(&self, caller: &Caller, class: &str) -> bool {
        self.grants.iter().any(|g| {
            g.classes.as_ref().is_none_or(|c| c.contains(class)) && g.principals.contains(caller)
        })
    }

    /// Whether `caller` may apply `class` to a thread, given what `beyond_own` found the
    /// class would do beyond the caller's own reach (`Ok`: nothing).
    pub fn authorize_class(
        &self,
        caller: &Caller,
        class: &str,
        beyond: Result<(), String>,
    ) -> Result<(), String> {
        match beyond {
            Ok(()) => Ok(()),
            Err(_) if caller.is_root() || self.grants_class(caller, class) => Ok(()),
            Err(why) => Err(format!(
                "class {class} goes beyond what uid {uid} may do to this thread itself: {why}; \
                 a grant in daemon.yaml allows it (policy.grants: [{{class: {class}, users: [{uid}]}}])",
                uid = caller.uid
            )),
        }
    }
}

fn describe(p: &Pattern) -> String {
    match p {
        Pattern::Group(g) => format!("group {g}"),
        Pattern::Class(c) => format!("class {c}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    pub(super) fn etc() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::write(
            d.path().join("passwd"),
            "root:x:0:0::/root:/bin/sh\nchronos:x:1000:1000::/home:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            d.path().join("group"),
            "root:x:0:\ncrosvm:x:299:\ncgqos:x:300:\n",
        )
        .unwrap();
        d
    }

    const SAMPLE: &str = "socket:\n  mode: \"0660\"\n  group: cgqos\npolicy:\n  any-target:\n    users: [chronos]\n  reserved:\n    - target: class:urgent\n      users: [chronos]\n    - target: \"vms/*\"\n      groups: [crosvm]\n";

    fn caller(uid: u32, gids: &[u32]) -> Caller {
        Caller {
            uid,
            gids: gids.to_vec(),
            pid: None,
            bus: None,
        }
    }

    #[test]
    fn the_sample_policy_reads_and_decides() {
        let e = etc();
        let c = parse("d.yaml", SAMPLE, e.path()).unwrap();
        assert_eq!((c.socket_mode, c.socket_gid), (0o660, Some(300)));
        let chronos = caller(1000, &[1000]);
        let launcher = caller(1200, &[299]);
        let other = caller(1300, &[1300]);
        let urgent = Action::Place {
            group: "chrome/ui",
            class: Some("urgent"),
        };
        assert!(c.authorize(&chronos, &urgent).is_ok());
        let e1 = c.authorize(&other, &urgent).unwrap_err();
        assert!(
            e1.contains("class urgent is reserved by the policy (d.yaml:8)"),
            "{e1}"
        );
        let vm = Action::Place {
            group: "vms/termina",
            class: None,
        };
        assert!(c.authorize(&launcher, &vm).is_ok());
        assert!(c.authorize(&chronos, &vm).is_err());
        assert!(
            c.authorize(
                &launcher,
                &Action::ChangeGroup {
                    group: "vms/termina"
                }
            )
            .is_ok()
        );
        assert!(
            c.authorize(
                &other,
                &Action::ChangeGroup {
                    group: "chrome/background"
                }
            )
            .is_err()
        );
        assert!(
            c.authorize(
                &other,
                &Action::Place {
                    group: "chrome/background",
                    class: None
                }
            )
            .is_ok()
        );
        assert!(c.authorize(&other, &Action::Reload).is_err());
        assert!(c.authorize(&caller(0, &[0]), &Action::Reload).is_ok());
        // Owners: the resourced rule, and any-target.
        assert!(c.may_touch(&other, 1300).is_ok());
        assert!(c.may_touch(&other, 1000).is_err());
        assert!(c.may_touch(&chronos, 1300).is_ok());
    }

    #[test]
    fn grants_name_any_class_and_refusals_name_the_grant() {
        let e = etc();
        let rules = crate::rules::load::load_texts(&[(
            "rt.yaml",
            "classes:\n  rt50: {cgroup-class: urgent, policy: fifo, priority: 50}\n",
        )])
        .unwrap();
        let text = "policy:\n  grants:\n    - class: [urgent, rt50]\n      users: [chronos]\n    - class: \"*\"\n      groups: [crosvm]\n  reserved:\n    - target: class:rt50\n      users: [chronos]\n";
        let c = parse_with_classes("d.yaml", text, e.path(), &rules.classes).unwrap();
        let chronos = caller(1000, &[1000]);
        let launcher = caller(1200, &[299]);
        let other = caller(1300, &[1300]);
        assert!(c.grants_class(&chronos, "urgent"));
        assert!(c.grants_class(&chronos, "rt50"));
        assert!(!c.grants_class(&chronos, "urgent-bursty"));
        assert!(c.grants_class(&launcher, "anything"));
        assert!(!c.grants_class(&other, "urgent"));
        assert_eq!(c.reserved[0].pattern, Pattern::Class("rt50".into()));
        let why =
            || Err("nice -8 (the thread has 0; RLIMIT_NICE 0 allows no lowering)".to_string());
        assert!(c.authorize_class(&chronos, "urgent", why()).is_ok());
        assert!(c.authorize_class(&caller(0, &[0]), "urgent", why()).is_ok());
        assert!(c.authorize_class(&other, "background", Ok(())).is_ok());
        assert_eq!(
            c.authorize_class(&other, "urgent", why()).unwrap_err(),
            "class urgent goes beyond what uid 1300 may do to this thread itself: nice -8 (the thread has 0; RLIMIT_NICE 0 allows no lowering); a grant in daemon.yaml allows it (policy.grants: [{class: urgent, users: [1300]}])"
        );
        // Without the rules.d classes, rt50 is unknown: file, line and column.
        let grants_only = text.split("  reserved:").next().unwrap();
        let err = parse("d.yaml", grants_only, e.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("d.yaml:3:23: policy.grants.class: unknown class \"rt50\""),
            "{err}"
        );
        let err = parse(
            "d.yaml",
            "policy:\n  reserved:\n    - target: class:rt50\n",
            e.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("d.yaml:3:15: policy.reserved.target: unknown class \"rt50\""),
            "{err}"
        );
        let err = parse(
            "d.yaml",
            "policy:\n  grants:\n    - class: urgent\n",
            e.path(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "d.yaml:3:7: policy.grants: entry names no `users` or `groups`"
        );
    }

    #[test]
    fn globs_do_not_cross_slashes() {
        assert!(glob("vms/*", "vms/arcvm"));
        assert!(!glob("vms/*", "vms/arcvm/vcpu"));
        assert!(glob("vms/*/vcpu", "vms/arcvm/vcpu"));
        assert!(!glob("chrome/*", "vms/x"));
    }
}
