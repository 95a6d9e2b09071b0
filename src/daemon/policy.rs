//! Who may do what: the daemon's configuration (`<config-dir>/daemon.yaml`) and the pure
//! decision function. Root may do anything. Others may place only their own processes (real
//! uid of the target == effective uid of the caller, the resourced rule) unless named in
//! `any-target`, never into a group or class reserved to someone else, and may change groups
//! (vm_add, vm_remove, restrict) only where a reservation or `admin` names them.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::board::yaml::{self, Node, Value, YamlError};
use crate::layout::Target;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub socket_mode: u32,
    pub socket_gid: Option<u32>,
    pub max_connections: usize,
    pub idle_timeout_secs: u64,
    pub any_target: Principals,
    pub admin: Principals,
    pub reserved: Vec<Reservation>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket_mode: 0o660,
            socket_gid: None,
            max_connections: 64,
            idle_timeout_secs: 60,
            any_target: Principals::default(),
            admin: Principals::default(),
            reserved: Vec::new(),
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

fn describe(p: &Pattern) -> String {
    match p {
        Pattern::Group(g) => format!("group {g}"),
        Pattern::Class(c) => format!("class {c}"),
    }
}

/// Loads `<dir>/daemon.yaml`; an absent file is the default configuration.
pub fn load(dir: &Path, etc: &Path) -> Result<Config, YamlError> {
    let path = dir.join(CONFIG_FILE);
    crate::rules::load::trusted(dir)?;
    crate::rules::load::trusted(&path)?;
    // A regular file of at most 1 MiB, checked on the opened file (never blocks on a FIFO).
    let text = match crate::config_read::read_optional(&path, crate::config_read::Trust::Owner) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(Config::default()),
        Err(e) => return Err(crate::rules::load::read_error(&e)),
    };
    parse(&path.display().to_string(), &text, etc)
}

/// Parses a daemon.yaml text; `etc` is where passwd and group files are read for names.
pub fn parse(file: &str, text: &str, etc: &Path) -> Result<Config, YamlError> {
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
        check_keys(m, "limits", &["max-connections", "idle-timeout-secs"])?;
        if let Some(n) = find(m, "max-connections") {
            cfg.max_connections = int(n, "limits.max-connections", 1, 4096)? as usize;
        }
        if let Some(n) = find(m, "idle-timeout-secs") {
            cfg.idle_timeout_secs = int(n, "limits.idle-timeout-secs", 1, 86400)?;
        }
    }
    if let Some(policy) = find(top, "policy") {
        let m = map_of(policy, "policy")?;
        check_keys(m, "policy", &["any-target", "admin", "reserved"])?;
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
                    Some(c) if crate::layout::parse_class(c).is_ok() => {
                        Pattern::Class(if c == "nonurgent" { "non-urgent" } else { c }.to_string())
                    }
                    // A thread class, by its own name whatever alias the file uses.
                    Some(c) if crate::rules::Classes::default().get(c).is_some() => Pattern::Class(
                        crate::rules::Classes::default()
                            .get(c)
                            .expect("checked")
                            .name
                            .clone(),
                    ),
                    Some(c) => {
                        return Err(t.error(format!("policy.reserved.target: unknown class {c:?}")));
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
    }
    Ok(cfg)
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
            if key == "policy.reserved" {
                continue; // `target` sits beside them
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
            "d.yaml:3:15: policy.reserved.target: unknown class \"sideways\""
        );
        assert!(
            err("limits:\n  max-connections: 0\n")
                .starts_with("d.yaml:2:20: limits.max-connections: expected an integer 1-4096")
        );
        assert!(err("polcy: {}\n").contains("unknown key `polcy`"));
    }

    #[test]
    fn globs_do_not_cross_slashes() {
        assert!(glob("vms/*", "vms/arcvm"));
        assert!(!glob("vms/*", "vms/arcvm/vcpu"));
        assert!(glob("vms/*/vcpu", "vms/arcvm/vcpu"));
        assert!(!glob("chrome/*", "vms/x"));
    }
}
