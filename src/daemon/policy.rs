//! Who may do what: the daemon's configuration (`<config-dir>/daemon.yaml`) and the pure
//! decision function. Root may do anything. Others may place only their own processes (real
//! uid of the target == effective uid of the caller, the resourced rule) unless named in
//! `any-target`, never into a group or class reserved to someone else, and may change groups
//! (vm_add, vm_remove, restrict) only where a reservation or `admin` names them. A thread
//! class's task attributes go only as far as the caller could go itself with
//! `sched_setattr` (`beyond_own`), unless a `grants` entry gives the class to the caller.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::board::yaml::{self, Node, Value, YamlError};
use crate::layout::Target;
use crate::rules::Classes;
use crate::sched::{TaskAttrs, is_realtime};

pub const CONFIG_FILE: &str = "daemon.yaml";

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
    Group(String),
    Class(String),
}

impl Pattern {
    fn matches_group(&self, group: &str) -> bool {
        match self {
            Pattern::Group(p) => glob(p, group),
            Pattern::Class(_) => false,
        }
    }

    fn matches_class(&self, class: &str) -> bool {
        matches!(self, Pattern::Class(c) if c == class)
    }
}

/// `*` matches any run of characters except `/`; everything else literally. Linear in the
/// group name, which a caller chooses (`crate::matcher`).
fn glob(pattern: &str, text: &str) -> bool {
    use crate::matcher::{Mode, Wildcard};
    Wildcard::new(pattern, Mode::Path).matches(text)
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
        }
    }
}

/// The identity of a connection, from SO_PEERCRED (and the caller's supplementary groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gids: Vec<u32>,
    pub pid: Option<u32>,
}

impl Caller {
    pub fn is_root(&self) -> bool {
        self.uid == 0
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
    pub fn may_touch(&self, caller: &Caller, owner: u32) -> Result<(), String> {
        if caller.is_root() || owner == caller.uid || self.any_target.contains(caller) {
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

/// Soft resource limits that bound what an unprivileged task may ask of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// RLIMIT_NICE: a nice value n may be reached when `20 - n <= nice`.
    pub nice: u64,
    /// RLIMIT_RTPRIO: the highest real-time priority; 0 forbids real-time policies.
    pub rtprio: u64,
}

impl Limits {
    /// No limit at all: what a caller whose limits cannot be read gets.
    pub const NONE: Limits = Limits { nice: 0, rtprio: 0 };

    /// Reads the soft limits from a `/proc/<pid>/limits` text (`unlimited`: `u64::MAX`).
    pub fn parse(text: &str) -> Option<Limits> {
        let soft = |name: &str| -> Option<u64> {
            let rest = text.lines().find_map(|l| l.strip_prefix(name))?;
            match rest.split_whitespace().next()? {
                "unlimited" => Some(u64::MAX),
                v => v.parse().ok(),
            }
        };
        Some(Limits {
            nice: soft("Max nice priority")?,
            rtprio: soft("Max realtime priority")?,
        })
    }

    /// The lower of each limit.
    pub fn min(self, other: Limits) -> Limits {
        Limits {
            nice: self.nice.min(other.nice),
            rtprio: self.rtprio.min(other.rtprio),
        }
    }

    fn nice_allowed(&self, nice: i32) -> bool {
        // The kernel's is_nice_reduction: nice 19..-20 is rlimit style 1..40.
        (20 - i64::from(nice)) as u64 <= self.nice
    }

    fn describe_nice(&self) -> String {
        match self.nice {
            0 => "RLIMIT_NICE 0 allows no lowering".to_string(),
            n if n >= 40 => format!("RLIMIT_NICE {n} allows any nice"),
            n => format!("RLIMIT_NICE {n} allows down to {}", 20 - n as i64),
        }
    }
}

/// The scheduling attributes of a task, as `sched_getattr` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sched {
    pub policy: u32,
    pub priority: u32,
    pub nice: i32,
    pub uclamp_min: u32,
    pub uclamp_max: u32,
    /// The fair slice (`sched_runtime`); 0 where the kernel reports none (before 6.12).
    pub slice_ns: u64,
}

impl Sched {
    pub fn of(a: &crate::sched::SchedAttr) -> Sched {
        Sched {
            policy: a.sched_policy,
            priority: a.sched_priority,
            nice: a.sched_nice,
            uclamp_min: a.sched_util_min,
            uclamp_max: a.sched_util_max,
            slice_ns: a.sched_runtime,
        }
    }

    /// A recorded full set of attributes (`state.attrs` originals); `None` if incomplete.
    pub fn recorded(a: &TaskAttrs) -> Option<Sched> {
        Some(Sched {
            policy: a.policy?,
            priority: a.priority?,
            nice: a.nice?,
            uclamp_min: a.uclamp_min?,
            uclamp_max: a.uclamp_max?,
            slice_ns: a.runtime_ns?,
        })
    }

    /// What the task has after `class` is applied over it, as `sched::apply` computes it.
    pub fn with(&self, class: &TaskAttrs) -> Sched {
        let policy = class.policy.unwrap_or(self.policy);
        Sched {
            policy,
            priority: if is_realtime(policy) {
                class.priority.unwrap_or(self.priority).clamp(1, 99)
            } else {
                0
            },
            nice: class.nice.map_or(self.nice, |n| n.clamp(-20, 19)),
            uclamp_min: class.uclamp_min.map_or(self.uclamp_min, |v| v.min(1024)),
            uclamp_max: class.uclamp_max.map_or(self.uclamp_max, |v| v.min(1024)),
            slice_ns: class.runtime_ns.unwrap_or(self.slice_ns),
        }
    }
}

fn policy_name(p: u32) -> &'static str {
    match p {
        crate::sched::SCHED_OTHER => "other",
        crate::sched::SCHED_FIFO => "fifo",
        crate::sched::SCHED_RR => "rr",
        crate::sched::SCHED_BATCH => "batch",
        crate::sched::SCHED_IDLE => "idle",
        _ => "deadline",
    }
}

/// Whether a task that has `task` may be given `new` by an unprivileged owner with `limits`:
/// the kernel's rule for `sched_setattr` without CAP_SYS_NICE (user_check_sched_setscheduler
/// in kernel/sched/syscalls.c), plus the boosts the kernel leaves unchecked for an owner,
/// which cgqos treats as privileges: a higher uclamp.min or uclamp.max (`uclamp`: the kernel
/// has per-task uclamp) and a shorter fair slice. `Err` names the first attribute beyond.
pub fn beyond_task(new: &Sched, task: &Sched, limits: Limits, uclamp: bool) -> Result<(), String> {
    use crate::sched::{SCHED_BATCH, SCHED_IDLE, SCHED_OTHER};
    let fair = |p: u32| p == SCHED_OTHER || p == SCHED_BATCH;
    if fair(new.policy) && new.nice < task.nice && !limits.nice_allowed(new.nice) {
        return Err(format!(
            "nice {} (the thread has {}; {})",
            new.nice,
            task.nice,
            limits.describe_nice()
        ));
    }
    if is_realtime(new.policy) {
        if new.policy != task.policy && limits.rtprio == 0 {
            return Err(format!(
                "policy {} (the thread is {}; RLIMIT_RTPRIO 0 allows no real-time policy)",
                policy_name(new.policy),
                policy_name(task.policy)
            ));
        }
        if new.priority > task.priority && u64::from(new.priority) > limits.rtprio {
            return Err(format!(
                "priority {} (the thread has {}; RLIMIT_RTPRIO {} allows up to {})",
                new.priority, task.priority, limits.rtprio, limits.rtprio
            ));
        }
    }
    if task.policy == SCHED_IDLE && new.policy != SCHED_IDLE && !limits.nice_allowed(task.nice) {
        return Err(format!(
            "policy {} (the thread is idle, which counts as nice 20; leaving it for nice {} needs RLIMIT_NICE {})",
            policy_name(new.policy),
            task.nice,
            20 - i64::from(task.nice)
        ));
    }
    if uclamp {
        for (name, n, t) in [
            ("uclamp-min", new.uclamp_min, task.uclamp_min),
            ("uclamp-max", new.uclamp_max, task.uclamp_max),
        ] {
            if n > t {
                return Err(format!(
                    "{name} {n} (the thread has {t}; raising a utilization clamp is a boost)"
                ));
            }
        }
    }
    if fair(new.policy) && task.slice_ns != 0 && new.slice_ns < task.slice_ns {
        return Err(format!(
            "slice-us {} (the thread has {}; a shorter slice is a latency boost)",
            new.slice_ns / 1000,
            task.slice_ns / 1000
        ));
    }
    Ok(())
}

/// Whether applying class attributes `class` to a task that has `now` (and had `original`
/// before cgqos first changed it) stays within what its unprivileged owner could do itself:
/// checked against the task as it is, and else against the task as it was, so going back
/// to the original values is always allowed. `Err` names the attribute beyond.
pub fn beyond_own(
    class: &TaskAttrs,
    now: &Sched,
    original: Option<&Sched>,
    limits: Limits,
    uclamp: bool,
) -> Result<(), String> {
    beyond_reach(&now.with(class), now, original, limits, uclamp)
}

/// `beyond_own` for attributes `new` computed elsewhere (from what `sched_getattr`
/// reports, which for a real-time task is not the nice the kernel keeps in `now`).
pub fn beyond_reach(
    new: &Sched,
    now: &Sched,
    original: Option<&Sched>,
    limits: Limits,
    uclamp: bool,
) -> Result<(), String> {
    beyond_task(new, now, limits, uclamp).or_else(|why| match original {
        Some(o) if beyond_task(new, o, limits, uclamp).is_ok() => Ok(()),
        _ => Err(why),
    })
}

fn describe(p: &Pattern) -> String {
    match p {
        Pattern::Group(g) => format!("group {g}"),
        Pattern::Class(c) => format!("class {c}"),
    }
}

/// Loads `<dir>/daemon.yaml`; an absent file is the default configuration. Class names
/// resolve against `classes` (the shipped ones and those of `rules.d/`).
pub fn load(dir: &Path, etc: &Path, classes: &Classes) -> Result<Config, YamlError> {
    let path = dir.join(CONFIG_FILE);
    crate::rules::load::trusted(dir)?;
    crate::rules::load::trusted(&path)?;
    // A regular file of at most 1 MiB, checked on the opened file (never blocks on a FIFO).
    let text = match crate::config_read::read_optional(&path, crate::config_read::Trust::Owner) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(Config::default()),
        Err(e) => return Err(crate::rules::load::read_error(&e)),
    };
    parse_with_classes(&path.display().to_string(), &text, etc, classes)
}

/// Parses a daemon.yaml text naming only the shipped classes; `etc` is where passwd and
/// group files are read for names.
pub fn parse(file: &str, text: &str, etc: &Path) -> Result<Config, YamlError> {
    parse_with_classes(file, text, etc, &Classes::default())
}

/// Parses a daemon.yaml text whose class names resolve against `classes`.
pub fn parse_with_classes(
    file: &str,
    text: &str,
    etc: &Path,
    classes: &Classes,
) -> Result<Config, YamlError> {
    let doc = yaml::parse(file, text)?;
    let ids = Ids::read(etc);
    let mut cfg = Config::default();
    let top = map_of(&doc, "daemon.yaml")?;
    check_keys(top, "", &["socket", "limits", "policy"])?;
    if let Some(socket) = find(top, "socket") {
        let m = map_of(socket, "socket")?;
        check_keys(m, "socket", &["mode", "group"])?;
        if let Some(n) = find(m, "mode") {
            let s = scalar(n, "socket.mode")?;
            cfg.socket_mode = u32::from_str_radix(s.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    n.error(format!(
                        "socket.mode: expected an octal mode such as \"0660\", found {s:?}"
                    ))
                })?;
        }
        if let Some(n) = find(m, "group") {
            cfg.socket_gid = Some(ids.gid(n, "socket.group")?);
        }
    }
    if let Some(limits) = find(top, "limits") {
        let m = map_of(limits, "limits")?;
        check_keys(
            m,
            "limits",
            &[
                "max-connections",
                "max-connections-per-user",
                "idle-timeout-secs",
            ],
        )?;
        if let Some(n) = find(m, "max-connections") {
            cfg.max_connections = int(n, "limits.max-connections", 1, 4096)? as usize;
            cfg.max_connections_per_user = (cfg.max_connections / 4).max(1);
        }
        if let Some(n) = find(m, "max-connections-per-user") {
            // A value above max-connections could never apply: refuse it rather than ignore it.
            cfg.max_connections_per_user = int(
                n,
                "limits.max-connections-per-user",
                1,
                cfg.max_connections as u64,
            )? as usize;
        }
        if let Some(n) = find(m, "idle-timeout-secs") {
            cfg.idle_timeout_secs = int(n, "limits.idle-timeout-secs", 1, 86400)?;
        }
    }
    if let Some(policy) = find(top, "policy") {
        let m = map_of(policy, "policy")?;
        check_keys(m, "policy", &["any-target", "admin", "reserved", "grants"])?;
        if let Some(n) = find(m, "any-target") {
            cfg.any_target = principals(n, "policy.any-target", &ids)?;
        }
        if let Some(n) = find(m, "admin") {
            cfg.admin = principals(n, "policy.admin", &ids)?;
        }
        if let Some(n) = find(m, "reserved") {
            let list = n.as_seq().ok_or_else(|| {
                n.error(format!(
                    "policy.reserved: expected a list, found {}",
                    n.kind()
                ))
            })?;
            for entry in list {
                let em = map_of(entry, "policy.reserved entry")?;
                check_keys(em, "policy.reserved", &["target", "users", "groups"])?;
                let t = find(em, "target")
                    .ok_or_else(|| entry.error("policy.reserved: entry has no `target`"))?;
                let ts = scalar(t, "policy.reserved.target")?;
                let pattern = match ts.strip_prefix("class:") {
                    // urgent, non-urgent, default, vcpu, io name where threads go.
                    Some(c) if crate::layout::canonical_class(c).is_some() => {
                        Pattern::Class(crate::layout::canonical_class(c).expect("checked").into())
                    }
                    // A thread class, by its own name whatever alias the file uses.
                    Some(c) if classes.get(c).is_some() => {
                        Pattern::Class(classes.get(c).expect("checked").name.clone())
                    }
                    Some(c) => {
                        return Err(t.error(format!(
                            "policy.reserved.target: unknown class {c:?} (classes: {})",
                            classes.names().join(", ")
                        )));
                    }
                    None if ts.contains('*') => Pattern::Group(ts.to_string()),
                    None => Pattern::Group(
                        Target::parse(ts)
                            .map_err(|e| t.error(format!("policy.reserved.target: {e}")))?
                            .path(),
                    ),
                };
                cfg.reserved.push(Reservation {
                    pattern,
                    principals: principals(entry, "policy.reserved", &ids)?,
                    at: format!("{}:{}", entry.at.file, entry.at.line),
                });
            }
        }
        if let Some(n) = find(m, "grants") {
            let list = n.as_seq().ok_or_else(|| {
                n.error(format!(
                    "policy.grants: expected a list, found {}",
                    n.kind()
                ))
            })?;
            for entry in list {
                cfg.grants.push(grant(entry, &ids, classes)?);
            }
        }
    }
    Ok(cfg)
}

/// One `policy.grants` entry: `{class: NAME | [NAME, ...] | "*", users, groups}`.
fn grant(entry: &Node, ids: &Ids, classes: &Classes) -> Result<Grant, YamlError> {
    let em = map_of(entry, "policy.grants entry")?;
    check_keys(em, "policy.grants", &["class", "users", "groups"])?;
    let c = find(em, "class").ok_or_else(|| entry.error("policy.grants: entry has no `class`"))?;
    let names: Vec<&Node> = match c.as_seq() {
        Some(list) => list.iter().collect(),
        None => vec![c],
    };
    let mut set = BTreeSet::new();
    let mut every = false;
    for n in names {
        let name = scalar(n, "policy.grants.class")?;
        if name == "*" {
            every = true;
            continue;
        }
        let class = classes.get(name).ok_or_else(|| {
            n.error(format!(
                "policy.grants.class: unknown class {name:?} (classes: {}; or \"*\" for every class)",
                classes.names().join(", ")
            ))
        })?;
        set.insert(class.name.clone());
    }
    let principals = principals(entry, "policy.grants", ids)?;
    if principals == Principals::default() {
        return Err(entry.error("policy.grants: entry names no `users` or `groups`"));
    }
    Ok(Grant {
        classes: if every { None } else { Some(set) },
        principals,
        at: format!("{}:{}", entry.at.file, entry.at.line),
    })
}

fn map_of<'a>(n: &'a Node, what: &str) -> Result<&'a [(Node, Node)], YamlError> {
    if n.is_null() {
        return Ok(&[]);
    }
    n.as_map()
        .ok_or_else(|| n.error(format!("{what}: expected a mapping, found {}", n.kind())))
}

fn find<'a>(m: &'a [(Node, Node)], key: &str) -> Option<&'a Node> {
    m.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn check_keys(m: &[(Node, Node)], section: &str, known: &[&str]) -> Result<(), YamlError> {
    for (k, _) in m {
        let key = k.as_str().unwrap_or_default();
        if !known.contains(&key) {
            let prefix = if section.is_empty() {
                String::new()
            } else {
                format!("{section}: ")
            };
            return Err(k.error(format!(
                "{prefix}unknown key `{key}` (expected one of: {})",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

fn scalar<'a>(n: &'a Node, key: &str) -> Result<&'a str, YamlError> {
    match &n.value {
        Value::Scalar { text, .. } => Ok(text),
        _ => Err(n.error(format!("{key}: expected a scalar, found {}", n.kind()))),
    }
}

fn int(n: &Node, key: &str, lo: u64, hi: u64) -> Result<u64, YamlError> {
    scalar(n, key)?
        .parse::<u64>()
        .ok()
        .filter(|v| (lo..=hi).contains(v))
        .ok_or_else(|| {
            n.error(format!(
                "{key}: expected an integer {lo}-{hi}, found {:?}",
                n.as_str().unwrap_or("")
            ))
        })
}

fn principals(n: &Node, key: &str, ids: &Ids) -> Result<Principals, YamlError> {
    let m = map_of(n, key)?;
    let mut p = Principals::default();
    for (k, v) in m {
        let which = k.as_str().unwrap_or_default();
        if which != "users" && which != "groups" {
            if key == "policy.reserved" || key == "policy.grants" {
                continue; // `target` or `class` sits beside them
            }
            return Err(k.error(format!(
                "{key}: unknown key `{which}` (expected users, groups)"
            )));
        }
        let list = v.as_seq().ok_or_else(|| {
            v.error(format!(
                "{key}.{which}: expected a list, found {}",
                v.kind()
            ))
        })?;
        for item in list {
            if which == "users" {
                p.uids.insert(ids.uid(item, &format!("{key}.users"))?);
            } else {
                p.gids.insert(ids.gid(item, &format!("{key}.groups"))?);
            }
        }
    }
    Ok(p)
}

/// User and group names from `<etc>/passwd` and `<etc>/group` (read directly: no NSS, so a
/// static binary resolves the same way).
struct Ids {
    users: Vec<(String, u32)>,
    groups: Vec<(String, u32)>,
}

impl Ids {
    fn read(etc: &Path) -> Ids {
        let table = |file: &str| -> Vec<(String, u32)> {
            fs::read_to_string(etc.join(file))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    Some((f.first()?.to_string(), f.get(2)?.parse().ok()?))
                })
                .collect()
        };
        Ids {
            users: table("passwd"),
            groups: table("group"),
        }
    }

    fn lookup(table: &[(String, u32)], n: &Node, key: &str, kind: &str) -> Result<u32, YamlError> {
        let s = scalar(n, key)?;
        if let Ok(id) = s.parse::<u32>() {
            return Ok(id);
        }
        table
            .iter()
            .find(|(name, _)| name == s)
            .map(|(_, id)| *id)
            .ok_or_else(|| n.error(format!("{key}: no {kind} named {s:?} on this system")))
    }

    fn uid(&self, n: &Node, key: &str) -> Result<u32, YamlError> {
        Self::lookup(&self.users, n, key, "user")
    }

    fn gid(&self, n: &Node, key: &str) -> Result<u32, YamlError> {
        Self::lookup(&self.groups, n, key, "group")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etc() -> tempfile::TempDir {
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
    fn bad_policy_files_name_file_line_and_key() {
        let e = etc();
        let err = |t: &str| parse("d.yaml", t, e.path()).unwrap_err().to_string();
        assert_eq!(
            err("socket:\n  mode: rw\n"),
            "d.yaml:2:9: socket.mode: expected an octal mode such as \"0660\", found \"rw\""
        );
        assert_eq!(
            err("socket:\n  group: nobodyhere\n"),
            "d.yaml:2:10: socket.group: no group named \"nobodyhere\" on this system"
        );
        assert_eq!(
            err("policy:\n  reserved:\n    - target: class:sideways\n"),
            "d.yaml:3:15: policy.reserved.target: unknown class \"sideways\" (classes: urgent-bursty, urgent, balanced, eco, utility, background)"
        );
        assert!(
            err("limits:\n  max-connections: 0\n")
                .starts_with("d.yaml:2:20: limits.max-connections: expected an integer 1-4096")
        );
        assert!(err("polcy: {}\n").contains("unknown key `polcy`"));
    }

    fn task(policy: u32, priority: u32, nice: i32) -> Sched {
        Sched {
            policy,
            priority,
            nice,
            uclamp_min: 0,
            uclamp_max: 1024,
            slice_ns: 3_000_000,
        }
    }

    fn class(f: impl FnOnce(&mut TaskAttrs)) -> TaskAttrs {
        let mut a = TaskAttrs::default();
        f(&mut a);
        a
    }

    #[test]
    fn own_reach_follows_the_kernels_rule_for_nice_and_real_time() {
        use crate::sched::{SCHED_BATCH, SCHED_FIFO, SCHED_IDLE, SCHED_OTHER, SCHED_RR};
        let none = Limits::NONE;
        let normal = task(SCHED_OTHER, 0, 0);
        let nice = |n| class(|a| a.nice = Some(n));
        // Raising nice is free; lowering it needs RLIMIT_NICE (20 - n <= limit).
        assert!(beyond_own(&nice(10), &normal, None, none, false).is_ok());
        let e = beyond_own(&nice(-8), &normal, None, none, false).unwrap_err();
        assert_eq!(
            e,
            "nice -8 (the thread has 0; RLIMIT_NICE 0 allows no lowering)"
        );
        let l25 = Limits {
            nice: 25,
            rtprio: 0,
        };
        assert!(beyond_own(&nice(-5), &normal, None, l25, false).is_ok());
        assert!(
            beyond_own(&nice(-6), &normal, None, l25, false)
                .unwrap_err()
                .contains("RLIMIT_NICE 25 allows down to -5")
        );
        // Back to the original value cgqos recorded, whatever the limit.
        let slowed = task(SCHED_OTHER, 0, 10);
        assert!(beyond_own(&nice(0), &slowed, Some(&normal), none, false).is_ok());
        assert!(beyond_own(&nice(-1), &slowed, Some(&normal), none, false).is_err());
        // Real time: entering needs RLIMIT_RTPRIO > 0, the priority at most the limit.
        let fifo = |p| {
            class(|a| {
                a.policy = Some(SCHED_FIFO);
                a.priority = Some(p)
            })
        };
        assert_eq!(
            beyond_own(&fifo(50), &normal, None, none, false).unwrap_err(),
            "policy fifo (the thread is other; RLIMIT_RTPRIO 0 allows no real-time policy)"
        );
        let rt10 = Limits {
            nice: 0,
            rtprio: 10,
        };
        assert!(beyond_own(&fifo(10), &normal, None, rt10, false).is_ok());
        assert_eq!(
            beyond_own(&fifo(50), &normal, None, rt10, false).unwrap_err(),
            "priority 50 (the thread has 0; RLIMIT_RTPRIO 10 allows up to 10)"
        );
        // A real-time task may lower its priority, not switch fifo <-> rr without a limit.
        let rt = task(SCHED_FIFO, 50, 0);
        assert!(beyond_own(&fifo(20), &rt, None, none, false).is_ok());
        let rr = class(|a| {
            a.policy = Some(SCHED_RR);
            a.priority = Some(20)
        });
        assert!(beyond_own(&rr, &rt, None, none, false).is_err());
        // Leaving real time for a fair policy at the nice it keeps is free.
        let other = class(|a| a.policy = Some(SCHED_OTHER));
        assert!(beyond_own(&other, &rt, None, none, false).is_ok());
        // sched_getattr reports nice 0 for a real-time task that keeps nice 10: leaving
        // real time then lowers it, as the kernel sees it.
        let reported = task(SCHED_FIFO, 50, 0);
        let kept = task(SCHED_FIFO, 50, 10);
        assert_eq!(
            beyond_reach(&reported.with(&other), &kept, None, none, false).unwrap_err(),
            "nice 0 (the thread has 10; RLIMIT_NICE 0 allows no lowering)"
        );
        // Batch and idle are slower: free. Leaving idle needs RLIMIT_NICE for its nice.
        let batch = class(|a| a.policy = Some(SCHED_BATCH));
        let idle = class(|a| a.policy = Some(SCHED_IDLE));
        assert!(beyond_own(&batch, &normal, None, none, false).is_ok());
        assert!(beyond_own(&idle, &normal, None, none, false).is_ok());
        let idling = task(SCHED_IDLE, 0, 0);
        assert!(
            beyond_own(&other, &idling, None, none, false)
                .unwrap_err()
                .contains("the thread is idle")
        );
        assert!(
            beyond_own(
                &other,
                &idling,
                None,
                Limits {
                    nice: 20,
                    rtprio: 0
                },
                false
            )
            .is_ok()
        );
        assert!(beyond_own(&other, &idling, Some(&normal), none, false).is_ok());
    }

    #[test]
    fn uclamp_and_slice_boosts_need_a_grant() {
        let normal = task(crate::sched::SCHED_OTHER, 0, 0);
        let none = Limits::NONE;
        let boost = class(|a| a.uclamp_min = Some(614));
        assert_eq!(
            beyond_own(&boost, &normal, None, none, true).unwrap_err(),
            "uclamp-min 614 (the thread has 0; raising a utilization clamp is a boost)"
        );
        // Without per-task uclamp the clamps are not applied, so they are no boost.
        assert!(beyond_own(&boost, &normal, None, none, false).is_ok());
        let capped = Sched {
            uclamp_max: 512,
            ..normal
        };
        let uncap = class(|a| a.uclamp_max = Some(1024));
        assert!(beyond_own(&uncap, &capped, None, none, true).is_err());
        assert!(beyond_own(&uncap, &capped, Some(&normal), none, true).is_ok());
        let cap = class(|a| a.uclamp_max = Some(256));
        assert!(beyond_own(&cap, &normal, None, none, true).is_ok());
        let short = class(|a| a.runtime_ns = Some(100_000));
        assert_eq!(
            beyond_own(&short, &normal, None, none, true).unwrap_err(),
            "slice-us 100 (the thread has 3000; a shorter slice is a latency boost)"
        );
        let long = class(|a| a.runtime_ns = Some(6_000_000));
        assert!(beyond_own(&long, &normal, None, none, true).is_ok());
        // A kernel that reports no slice ignores it.
        let old = Sched {
            slice_ns: 0,
            ..normal
        };
        assert!(beyond_own(&short, &old, None, none, true).is_ok());
        // The shipped slow-down classes are always within reach.
        for name in ["background", "utility", "eco", "balanced"] {
            let c = Classes::default();
            let attrs = c.get(name).unwrap().attrs;
            assert!(
                beyond_own(&attrs, &normal, None, none, true).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn limits_come_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max nice priority         25                   30                   \n\
                    Max realtime priority     unlimited            unlimited            \n";
        assert_eq!(
            Limits::parse(text),
            Some(Limits {
                nice: 25,
                rtprio: u64::MAX
            })
        );
        assert_eq!(Limits::parse("nothing"), None);
    }

    #[test]
    fn grants_name_any_class_and_refusals_name_the_grant() {
        let e = etc();
        let rules = crate::rules::load::load_texts(&[(
            "rt.yaml",
            "classes:\n  rt50: {cgroup-class: urgent, policy: fifo, priority: 50}\n",
        )])
        .unwrap();
        let text = "policy:\n  grants:\n    - class: [QOS_INTERACTIVE, rt50]\n      users: [chronos]\n    - class: \"*\"\n      groups: [crosvm]\n  reserved:\n    - target: class:rt50\n      users: [chronos]\n";
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
            err.starts_with("d.yaml:3:32: policy.grants.class: unknown class \"rt50\""),
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
