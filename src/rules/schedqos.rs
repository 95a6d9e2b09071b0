//! schedqos's own files, read as schedqos reads them: app configs
//! (`{"app": {"version", "period", "qos", "thread_qos"}}`), `qos_mappings.json` (the task
//! attributes of each `QOS_*` tag) and `sched_profiles.json` (accepted, not used: cgqos has
//! no scheduler profiles). A `schedqos: DIR` key in daemon.yaml names an installation read in
//! place (`DIR/app_configs/*.json`, `DIR/qos_mappings.json`).

use std::path::{Path, PathBuf};

use super::{CgroupClass, ClassDef, Glob, Matcher, Rule, RuleSet, default_classes};
use crate::config_read::{self, Trust};
use crate::sched::{self, TaskAttrs};
use crate::yaml::schema::{self, map};
use crate::yaml::{self, Node, YamlError};

pub const QOS_MAPPINGS: &str = "qos_mappings.json";
pub const SCHED_PROFILES: &str = "sched_profiles.json";
pub const APP_CONFIGS: &str = "app_configs";

/// What a `.json` file in `rules.d/` (or a schedqos directory) is, by its name.
pub enum JsonKind {
    AppConfig,
    QosMappings,
    SchedProfiles,
}

pub fn kind(file: &str) -> JsonKind {
    match file.rsplit('/').next().unwrap_or(file) {
        QOS_MAPPINGS => JsonKind::QosMappings,
        SCHED_PROFILES => JsonKind::SchedProfiles,
        _ => JsonKind::AppConfig,
    }
}

/// schedqos's tags: each one's cgqos class (whose cgroup class the tag keeps) and the
/// policy schedqos compiles in for it (qos_tagging.c).
const TAGS: [(&str, &str, u32); 5] = [
    ("QOS_USER_INTERACTIVE", "urgent-bursty", sched::SCHED_OTHER),
    ("QOS_USER_INITIATED", "balanced", sched::SCHED_OTHER),
    ("QOS_UTILITY", "utility", sched::SCHED_BATCH),
    ("QOS_BACKGROUND", "background", sched::SCHED_BATCH),
    ("QOS_DEFAULT", "balanced", sched::SCHED_BATCH),
];

/// A tag's canonical name: `QOS_INTERACTIVE` (as schedqos's author writes it) is
/// `QOS_USER_INTERACTIVE`.
pub fn canonical_tag(name: &str) -> Option<&'static str> {
    let name = if name == "QOS_INTERACTIVE" {
        "QOS_USER_INTERACTIVE"
    } else {
        name
    };
    TAGS.iter().find(|t| t.0 == name).map(|t| t.0)
}

const TAG_LIST: &str = "QOS_USER_INTERACTIVE, QOS_INTERACTIVE, QOS_USER_INITIATED, QOS_UTILITY, QOS_BACKGROUND or QOS_DEFAULT";

/// Every key schedqos's parser knows (configs_parser.c, qos_tagging.c).
const MAPPING_KEYS: [&str; 8] = [
    "sched_policy",
    "sched_nice",
    "sched_priority",
    "sched_runtime",
    "sched_deadline",
    "sched_period",
    "sched_util_min",
    "sched_util_max",
];

const POLICIES: [(&str, u32); 6] = [
    ("SCHED_NORMAL", sched::SCHED_OTHER),
    ("SCHED_OTHER", sched::SCHED_OTHER),
    ("SCHED_BATCH", sched::SCHED_BATCH),
    ("SCHED_IDLE", sched::SCHED_IDLE),
    ("SCHED_FIFO", sched::SCHED_FIFO),
    ("SCHED_RR", sched::SCHED_RR),
];

/// `qos_mappings.json`: each named tag becomes a class of its own name with schedqos's
/// compiled-in attributes for it overlaid by the file's keys (schedqos always sets both
/// clamps, 0 and 1024 unless given); its cgroup class is the one the tag had. Tags the file
/// does not name keep cgqos's classes. A tag defined twice (in two files) is an error.
pub fn qos_mappings(doc: &Node, set: &mut RuleSet) -> Result<(), YamlError> {
    let builtin = default_classes();
    for (tag, def) in map(doc, "qos_mappings")?.iter() {
        let written = schema::json_string(tag, "QoS tag")?;
        let name = canonical_tag(written).ok_or_else(|| {
            tag.error(format!("unknown QoS tag {written:?} (expected {TAG_LIST})"))
        })?;
        let &(_, class, policy) = TAGS.iter().find(|t| t.0 == name).expect("a known tag");
        let attrs = mapping_attrs(def, written, policy)?;
        if let Some(prev) = set.classes.0.iter().find(|c| c.name == name) {
            return Err(tag.error(format!(
                "{written}: {name} is already defined at {}",
                prev.at
            )));
        }
        let cgroup_class = builtin
            .iter()
            .find(|c| c.name == class)
            .map_or(CgroupClass::DEFAULT, |c| c.cgroup_class);
        set.classes.0.push(ClassDef {
            name: name.to_string(),
            cgroup_class,
            attrs,
            at: loc(tag),
        });
    }
    Ok(())
}

/// One tag's mapping `def` (written as `written`): the tag's compiled-in `policy`, nice 0
/// and both clamps, overlaid by the keys given. Checked in this order: policy, nice,
/// priority, runtime, deadline parameters, clamps.
fn mapping_attrs(def: &Node, written: &str, policy: u32) -> Result<TaskAttrs, YamlError> {
    let m = map(def, written)?.only(written, &MAPPING_KEYS)?;
    let key = |k: &str| format!("{written}.{k}");
    let mut attrs = TaskAttrs {
        policy: Some(policy),
        nice: Some(0),
        uclamp_min: Some(0),
        uclamp_max: Some(1024),
        ..TaskAttrs::default()
    };
    if let Some(n) = m.get("sched_policy") {
        attrs.policy = Some(sched_policy(n, &key("sched_policy"))?);
    }
    if let Some(n) = m.get("sched_nice") {
        attrs.nice = Some(schema::plain_int_in(n, &key("sched_nice"), -20, 19)?);
    }
    let rt = attrs.policy.is_some_and(sched::is_realtime);
    attrs.priority = sched_priority(def, m.get("sched_priority"), rt, written)?;
    if let Some(n) = m.get("sched_runtime") {
        attrs.runtime_ns = sched_runtime(n, &key("sched_runtime"))?;
    }
    // Deadline parameters: schedqos passes them on, the kernel reads them only for
    // SCHED_DEADLINE, which cgqos refuses above. Checked, no effect.
    for k in ["sched_deadline", "sched_period"] {
        if let Some(n) = m.get(k) {
            schema::plain_int_in(n, &key(k), 0u64, u64::MAX)?;
        }
    }
    if let Some(n) = m.get("sched_util_min") {
        attrs.uclamp_min = Some(schema::plain_int_in(n, &key("sched_util_min"), 0, 1024)?);
    }
    if let Some(n) = m.get("sched_util_max") {
        attrs.uclamp_max = Some(schema::plain_int_in(n, &key("sched_util_max"), 0, 1024)?);
    }
    if let (Some(lo), Some(hi)) = (attrs.uclamp_min, attrs.uclamp_max) {
        if lo > hi {
            return Err(def.error(format!(
                "{written}: sched_util_min {lo} is above sched_util_max {hi}"
            )));
        }
    }
    Ok(attrs)
}

/// `sched_policy` (named `what` in errors): one of schedqos's policy names but
/// SCHED_DEADLINE, which cgqos refuses.
fn sched_policy(n: &Node, what: &str) -> Result<u32, YamlError> {
    let s = schema::json_string(n, what)?;
    if s == "SCHED_DEADLINE" {
        return Err(n.error(format!(
            "{what}: SCHED_DEADLINE is not supported by cgqos (use SCHED_NORMAL, SCHED_BATCH, SCHED_IDLE, SCHED_FIFO or SCHED_RR)"
        )));
    }
    schema::keyword(
        n,
        what,
        "SCHED_NORMAL, SCHED_OTHER, SCHED_BATCH, SCHED_IDLE, SCHED_FIFO or SCHED_RR",
        &POLICIES,
    )
}

/// `sched_priority`: 1-99 exactly when the policy is realtime (`rt`), which needs one; a 0
/// for a fair policy is accepted and means none.
fn sched_priority(
    def: &Node,
    given: Option<&Node>,
    rt: bool,
    written: &str,
) -> Result<Option<u32>, YamlError> {
    let key = |k: &str| format!("{written}.{k}");
    match given {
        Some(n) => {
            let p = schema::plain_int_in(n, &key("sched_priority"), 0u32, 99)?;
            match (rt, p) {
                (true, 0) | (false, 1..) => Err(n.error(format!(
                    "{}: a priority 1-99 goes with SCHED_FIFO or SCHED_RR, and only with them",
                    key("sched_priority")
                ))),
                (true, p) => Ok(Some(p)),
                (false, _) => Ok(None),
            }
        }
        None if rt => Err(def.error(format!(
            "{}: SCHED_FIFO and SCHED_RR need a sched_priority 1-99",
            key("sched_policy")
        ))),
        None => Ok(None),
    }
}

/// `sched_runtime` (named `what` in errors): a fair task's slice request; 0 keeps the
/// kernel's default slice (none). EEVDF takes 0.1 ms to 100 ms.
fn sched_runtime(n: &Node, what: &str) -> Result<Option<u64>, YamlError> {
    let r = schema::plain_int_in(n, what, 0u64, 100_000_000)?;
    if r != 0 && r < 100_000 {
        return Err(schema::expected(
            n,
            what,
            "0 or nanoseconds 100000-100000000",
            &r.to_string(),
        ));
    }
    Ok((r != 0).then_some(r))
}

/// `sched_profiles.json`: schedqos's debugfs and cpufreq profiles. cgqos sets neither; the
/// file is accepted when it is a JSON object and otherwise not used.
pub fn sched_profiles(doc: &Node) -> Result<(), YamlError> {
    map(doc, "sched_profiles").map(|_| ())
}

fn loc(n: &Node) -> String {
    format!("{}:{}", n.at.file, n.at.line)
}

fn glob(n: &Node, what: &str) -> Result<Glob, YamlError> {
    Glob::new(schema::string(n, what)?).map_err(|e| n.error(format!("{what}: {e}")))
}

/// One QoS name (a JSON string), remembered for the check once all files are read.
fn qos_name(n: &Node, what: &str, refs: &mut Vec<(Node, String)>) -> Result<String, YamlError> {
    let q = schema::json_string(n, what)?.to_string();
    refs.push((n.clone(), q.clone()));
    Ok(q)
}

/// An app config: `{"app": {"version", "period", "qos", "thread_qos": {"name": QOS or
/// [QOS, ...]}}}`. The app name matches the basename of argv[0]; no process group (schedqos
/// uses no cgroups). A list gives a thread name several tags one after the other, as
/// schedqos does, so the last one is in force. `version` is informational. `period` is what
/// schedqos puts in `sched_period` for QOS_USER_INTERACTIVE and QOS_USER_INITIATED tasks,
/// which the kernel reads only for SCHED_DEADLINE: checked, with no effect on fair tasks.
pub fn app_config(
    doc: &Node,
    set: &mut RuleSet,
    refs: &mut Vec<(Node, String)>,
) -> Result<(), YamlError> {
    for (app, cfg) in map(doc, "schedqos app config")?.iter() {
        let app_name = schema::string(app, "app name")?;
        let m = map(cfg, app_name)?.only(app_name, &["version", "period", "qos", "thread_qos"])?;
        let mut rule = Rule {
            name: app_name.to_string(),
            at: loc(app),
            matcher: Matcher {
                argv0: Some(glob(app, "app name")?),
                ..Matcher::default()
            },
            group: None,
            class: None,
            threads: Vec::new(),
        };
        let what = |k: &str| format!("{app_name}.{k}");
        for (k, v) in m.iter() {
            match k.as_str().unwrap_or_default() {
                "version" => {
                    schema::scalar(v, &what("version"))?;
                }
                "period" => {
                    schema::plain_int_in(v, &what("period"), 0u64, u64::MAX)?;
                }
                "qos" => rule.class = Some(qos_name(v, "qos", refs)?),
                _ => {
                    for (t, q) in map(v, "thread_qos")?.iter() {
                        let pattern = glob(t, "thread_qos")?;
                        let last = match schema::list(q, "thread_qos") {
                            Ok(items) => {
                                let mut last = None;
                                for item in items {
                                    last = Some(qos_name(item, "thread_qos", refs)?);
                                }
                                last.ok_or_else(|| {
                                    q.error(format!(
                                        "thread_qos.{}: an empty list names no QoS tag",
                                        pattern.as_str()
                                    ))
                                })?
                            }
                            Err(_) => qos_name(q, "thread_qos", refs)?,
                        };
                        rule.threads.push((pattern, last));
                    }
                }
            }
        }
        set.rules.push(rule);
    }
    Ok(())
}

/// The `schedqos` key of `<config_dir>/daemon.yaml`, if any: an absolute directory. The
/// rest of the file is daemon configuration, checked by the daemon's own reader.
pub fn setting(config_dir: &Path) -> Result<Option<PathBuf>, YamlError> {
    let path = config_dir.join("daemon.yaml");
    let text = match config_read::read_optional(&path, Trust::Owner) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(None),
        Err(e) => return Err(schema::unreadable(&e)),
    };
    let doc = yaml::parse(&path.display().to_string(), &text)?;
    let Some(top) = schema::Map::of(&doc) else {
        return Ok(None);
    };
    top.get("schedqos").map(dir_value).transpose()
}

/// A `schedqos:` value: an absolute path.
pub fn dir_value(n: &Node) -> Result<PathBuf, YamlError> {
    let s = schema::string(n, "schedqos")?;
    if !s.starts_with('/') {
        return Err(schema::expected(
            n,
            "schedqos",
            "an absolute directory such as /etc/schedqos",
            &format!("{s:?}"),
        ));
    }
    Ok(PathBuf::from(s))
}

/// The files of a schedqos installation, read in place with the same trust checks as
/// `rules.d/`: `DIR/app_configs/*.json` in name order, then `DIR/qos_mappings.json` if
/// present (`sched_profiles.json` is not read: cgqos has no profiles).
pub fn dir_files(dir: &Path) -> Result<Vec<(String, String)>, YamlError> {
    if !dir.is_dir() {
        return Err(schema::file_error(
            dir,
            "schedqos: not a directory (daemon.yaml names it as a schedqos installation)".into(),
        ));
    }
    schema::trusted(dir)?;
    let apps = dir.join(APP_CONFIGS);
    let mut out = Vec::new();
    let names = super::load::config_names(&apps, &[".json"])?.unwrap_or_default();
    if !names.is_empty() {
        schema::trusted(&apps)?;
    }
    for n in names {
        let path = apps.join(&n);
        let text = config_read::read(&path, Trust::Owner).map_err(|e| schema::unreadable(&e))?;
        out.push((path.display().to_string(), text));
    }
    let mappings = dir.join(QOS_MAPPINGS);
    if let Some(text) =
        config_read::read_optional(&mappings, Trust::Owner).map_err(|e| schema::unreadable(&e))?
    {
        out.push((mappings.display().to_string(), text));
    }
    Ok(out)
}
