//! Reading `<config-dir>/daemon.yaml` into a [`Config`]: the socket, the connection limits,
//! and the policy's principals, reservations and grants, with user and group names resolved
//! from `<etc>/passwd` and `<etc>/group`.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use super::{Config, Grant, GroupGlob, Pattern, Principals, Reservation};
use crate::layout::Target;
use crate::rules::Classes;
use crate::yaml::schema::{self, Map, map_or_null, scalar};
use crate::yaml::{self, Node, YamlError};

pub const CONFIG_FILE: &str = "daemon.yaml";

/// Loads `<dir>/daemon.yaml`; an absent file is the default configuration. Class names
/// resolve against `classes` (the shipped ones and those of `rules.d/`).
pub fn load(dir: &Path, etc: &Path, classes: &Classes) -> Result<Config, YamlError> {
    let path = dir.join(CONFIG_FILE);
    schema::trusted(dir)?;
    schema::trusted(&path)?;
    // A regular file of at most 1 MiB, checked on the opened file (never blocks on a FIFO).
    let text = match crate::config_read::read_optional(&path, crate::config_read::Trust::Owner) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(Config::default()),
        Err(e) => return Err(schema::unreadable(&e)),
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
    let top = map_or_null(&doc, "daemon.yaml")?
        .only("", &["socket", "limits", "policy", "schedqos", "dbus"])?;
    // A schedqos installation read as rules (crate::rules::schedqos); checked here too.
    if let Some(n) = top.get("schedqos") {
        crate::rules::schedqos::dir_value(n)?;
    }
    if let Some(n) = top.get("dbus") {
        cfg.dbus = schema::plain_bool(n, "dbus")?;
    }
    if let Some(n) = top.get("socket") {
        socket(n, &ids, &mut cfg)?;
    }
    if let Some(n) = top.get("limits") {
        limits(n, &mut cfg)?;
    }
    if let Some(n) = top.get("policy") {
        policy(n, &ids, classes, &mut cfg)?;
    }
    Ok(cfg)
}

fn socket(n: &Node, ids: &Ids, cfg: &mut Config) -> Result<(), YamlError> {
    let m = map_or_null(n, "socket")?.only("socket", &["mode", "group"])?;
    if let Some(n) = m.get("mode") {
        let s = scalar(n, "socket.mode")?;
        cfg.socket_mode = u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                schema::expected(
                    n,
                    "socket.mode",
                    "an octal mode such as \"0660\"",
                    &format!("{s:?}"),
                )
            })?;
    }
    if let Some(n) = m.get("group") {
        cfg.socket_gid = Some(ids.gid(n, "socket.group")?);
    }
    Ok(())
}

const LIMIT_KEYS: [&str; 3] = [
    "max-connections",
    "max-connections-per-user",
    "idle-timeout-secs",
];

fn limits(n: &Node, cfg: &mut Config) -> Result<(), YamlError> {
    let m = map_or_null(n, "limits")?.only("limits", &LIMIT_KEYS)?;
    if let Some(n) = m.get("max-connections") {
        cfg.max_connections = int(n, "limits.max-connections", 1, 4096)? as usize;
        cfg.max_connections_per_user = (cfg.max_connections / 4).max(1);
    }
    if let Some(n) = m.get("max-connections-per-user") {
        // A value above max-connections could never apply: refuse it rather than ignore it.
        cfg.max_connections_per_user = int(
            n,
            "limits.max-connections-per-user",
            1,
            cfg.max_connections as u64,
        )? as usize;
    }
    if let Some(n) = m.get("idle-timeout-secs") {
        cfg.idle_timeout_secs = int(n, "limits.idle-timeout-secs", 1, 86400)?;
    }
    Ok(())
}

/// A whole number `lo..=hi` (a list or mapping is "expected a scalar").
fn int(n: &Node, key: &str, lo: u64, hi: u64) -> Result<u64, YamlError> {
    scalar(n, key)?;
    schema::int_in(n, key, lo, hi)
}

fn policy(n: &Node, ids: &Ids, classes: &Classes, cfg: &mut Config) -> Result<(), YamlError> {
    let m =
        map_or_null(n, "policy")?.only("policy", &["any-target", "admin", "reserved", "grants"])?;
    if let Some(n) = m.get("any-target") {
        cfg.any_target = principals(n, "policy.any-target", ids)?;
    }
    if let Some(n) = m.get("admin") {
        cfg.admin = principals(n, "policy.admin", ids)?;
    }
    if let Some(n) = m.get("reserved") {
        for entry in schema::list(n, "policy.reserved")? {
            cfg.reserved.push(reservation(entry, ids, classes)?);
        }
    }
    if let Some(n) = m.get("grants") {
        for entry in schema::list(n, "policy.grants")? {
            cfg.grants.push(grant(entry, ids, classes)?);
        }
    }
    Ok(())
}

/// One `policy.reserved` entry: `{target: GROUP | "class:"CLASS, users, groups}`.
fn reservation(entry: &Node, ids: &Ids, classes: &Classes) -> Result<Reservation, YamlError> {
    let em = map_or_null(entry, "policy.reserved entry")?
        .only("policy.reserved", &["target", "users", "groups"])?;
    let t = em
        .get("target")
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
        None if ts.contains('*') => Pattern::Group(GroupGlob::new(ts)),
        None => Pattern::Group(GroupGlob::new(
            Target::parse(ts)
                .map_err(|e| t.error(format!("policy.reserved.target: {e}")))?
                .path(),
        )),
    };
    Ok(Reservation {
        pattern,
        principals: principals(entry, "policy.reserved", ids)?,
        at: format!("{}:{}", entry.at.file, entry.at.line),
    })
}

/// One `policy.grants` entry: `{class: NAME | [NAME, ...] | "*", users, groups}`.
fn grant(entry: &Node, ids: &Ids, classes: &Classes) -> Result<Grant, YamlError> {
    let em = map_or_null(entry, "policy.grants entry")?
        .only("policy.grants", &["class", "users", "groups"])?;
    let c = em
        .get("class")
        .ok_or_else(|| entry.error("policy.grants: entry has no `class`"))?;
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

/// The `users` and `groups` of `n`; in a reservation or a grant they sit beside `target` or
/// `class`, which `principals` skips (the entry's own key check already ran).
fn principals(n: &Node, key: &str, ids: &Ids) -> Result<Principals, YamlError> {
    let m: Map = map_or_null(n, key)?;
    let mut p = Principals::default();
    for (k, v) in m.iter() {
        let which = k.as_str().unwrap_or_default();
        if which != "users" && which != "groups" {
            if key == "policy.reserved" || key == "policy.grants" {
                continue; // `target` or `class` sits beside them
            }
            return Err(k.error(format!(
                "{key}: unknown key `{which}` (expected users, groups)"
            )));
        }
        for item in schema::list(v, &format!("{key}.{which}"))? {
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
    use super::super::tests::etc;
    use super::*;

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
            "d.yaml:3:15: policy.reserved.target: unknown class \"sideways\" (classes: urgent-bursty, urgent, balanced, eco, utility, background, urgent-bursty-server, urgent-bursty-client)"
        );
        assert!(
            err("limits:\n  max-connections: 0\n")
                .starts_with("d.yaml:2:20: limits.max-connections: expected an integer 1-4096")
        );
        assert!(err("polcy: {}\n").contains("unknown key `polcy`"));
        assert_eq!(
            err("dbus: yes\n"),
            "d.yaml:1:7: dbus: expected true or false, found \"yes\""
        );
        assert!(parse("d.yaml", "dbus: true\n", e.path()).unwrap().dbus);
        assert!(!parse("d.yaml", "{}\n", e.path()).unwrap().dbus);
    }
}
