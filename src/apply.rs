//! Converges a cgroup tree to a plan: reads before it writes, so a second run writes
//! nothing; reports what the kernel does not support instead of failing on it.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cgroupfs::{CgroupFs, FsError, Refusal, files, write_existing};
use crate::cpulist::CpuList;
use crate::plan::{Op, Step, Tree};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "lowercase")]
pub enum Outcome {
    /// Directory made or value written.
    Changed,
    /// Already as planned.
    Unchanged,
    /// The kernel lacks the feature; the reason says which.
    Unsupported(String),
    /// Not applicable here (e.g. uclamp on the hierarchy root, which has none).
    Skipped(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    #[serde(flatten)]
    pub step: Step,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub steps: Vec<StepReport>,
}

impl Report {
    pub fn changed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Changed))
    }

    pub fn unsupported(&self) -> impl Iterator<Item = &StepReport> {
        self.steps
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Unsupported(_)))
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.steps.iter().filter(|s| f(&s.outcome)).count()
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "step {index} ({step}) failed: {source}; the steps before it were applied, run setup again to converge"
)]
pub struct ApplyError {
    pub index: usize,
    pub step: Box<Step>,
    #[source]
    pub source: FsError,
}

/// Applies `steps` in order. `dry_run` reads the tree and reports what would change.
pub fn apply(
    steps: &[Step],
    cg: &CgroupFs,
    sysfs_root: &Path,
    dry_run: bool,
) -> Result<Report, ApplyError> {
    let mut report = Report {
        dry_run,
        steps: Vec::with_capacity(steps.len()),
    };
    // Groups a dry run would have created: everything inside them would change too.
    let mut pending: HashSet<String> = HashSet::new();
    if dry_run && !cg.root().exists() {
        pending.insert(String::new());
    }
    for (index, step) in steps.iter().enumerate() {
        let outcome = apply_one(step, cg, sysfs_root, dry_run, &mut pending).map_err(|source| {
            ApplyError {
                index: index + 1,
                step: Box::new(step.clone()),
                source,
            }
        })?;
        report.steps.push(StepReport {
            step: step.clone(),
            outcome,
        });
    }
    Ok(report)
}

fn apply_one(
    step: &Step,
    cg: &CgroupFs,
    sysfs_root: &Path,
    dry_run: bool,
    pending: &mut HashSet<String>,
) -> Result<Outcome, FsError> {
    if step.tree == Tree::Sysfs {
        return apply_sysfs(step, &sysfs_root.join(&step.path), dry_run);
    }
    if step.op == Op::Mkdir {
        if under(pending, &step.path) {
            return Ok(Outcome::Changed);
        }
        if cg.exists(&step.path) {
            return Ok(Outcome::Unchanged);
        }
        if dry_run {
            pending.insert(step.path.clone());
        } else {
            cg.mkdir(&step.path)?;
        }
        return Ok(Outcome::Changed);
    }
    let (group, file) = step.split();
    let value = step.value.as_deref().unwrap_or_default();
    if under(pending, group) {
        return Ok(Outcome::Changed);
    }
    match file {
        files::SUBTREE_CONTROL => enable_controllers(cg, group, value, dry_run),
        files::TYPE => {
            let current = cg.read(&step.path)?;
            if current.trim() == value {
                return Ok(Outcome::Unchanged);
            }
            if !dry_run {
                cg.write(&step.path, value)?;
            }
            Ok(Outcome::Changed)
        }
        _ => {
            if !cg.exists(&step.path) {
                if file == files::CPU_UCLAMP_MIN && cg.is_hierarchy_root(group) {
                    return Ok(Outcome::Skipped(
                        "the cgroup2 root has no cpu.uclamp.min; nothing above caps the groups"
                            .into(),
                    ));
                }
                return Ok(Outcome::Unsupported(missing_reason(file)));
            }
            let current = cg.read(&step.path)?;
            if same_value(file, &current, value) {
                return Ok(Outcome::Unchanged);
            }
            if !dry_run {
                cg.write(&step.path, value)?;
            }
            Ok(Outcome::Changed)
        }
    }
}

/// Whether `group` is, or is below, a group a dry run would have created.
fn under(pending: &HashSet<String>, group: &str) -> bool {
    pending
        .iter()
        .any(|p| p.is_empty() || group == p || group.starts_with(&format!("{p}/")))
}

/// Enables the requested controllers that are available and not yet enabled, one write.
fn enable_controllers(
    cg: &CgroupFs,
    group: &str,
    request: &str,
    dry_run: bool,
) -> Result<Outcome, FsError> {
    let available = cg.read(&crate::plan::join(group, files::CONTROLLERS))?;
    let enabled = cg.read(&crate::plan::join(group, files::SUBTREE_CONTROL))?;
    let available: Vec<&str> = available.split_whitespace().collect();
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let mut missing = Vec::new();
    let mut to_enable = Vec::new();
    for c in request
        .split_whitespace()
        .filter_map(|c| c.strip_prefix('+'))
    {
        if enabled.contains(&c) {
            continue;
        }
        if available.contains(&c) {
            to_enable.push(format!("+{c}"));
        } else {
            missing.push(c);
        }
    }
    if !to_enable.is_empty() && !dry_run {
        cg.write(
            &crate::plan::join(group, files::SUBTREE_CONTROL),
            &to_enable.join(" "),
        )?;
    }
    match (to_enable.is_empty(), missing.is_empty()) {
        (_, false) => Ok(Outcome::Unsupported(format!(
            "controller {} not available here (cgroup.controllers: {:?}){}",
            missing.join(", "),
            available.join(" "),
            if to_enable.is_empty() {
                String::new()
            } else {
                format!("; enabled {}", to_enable.join(" "))
            }
        ))),
        (true, true) => Ok(Outcome::Unchanged),
        (false, true) => Ok(Outcome::Changed),
    }
}

fn missing_reason(file: &str) -> String {
    match file {
        files::CPU_UCLAMP_MIN => "no cpu.uclamp.min: kernel without CONFIG_UCLAMP_TASK_GROUP, or the cpu controller is not enabled here".into(),
        files::CPU_WEIGHT | files::CPU_MAX => "no cpu controller here (not available in this cgroup2 hierarchy)".into(),
        files::CPUSET_CPUS => "no cpuset controller here (not available in this cgroup2 hierarchy)".into(),
        other => format!("the kernel offers no {other} here"),
    }
}

/// Compares as the kernel means the value, not as text (`20` == `20.00`, `0-1` == `0,1`).
pub fn same_value(file: &str, current: &str, wanted: &str) -> bool {
    let (c, w) = (current.trim(), wanted.trim());
    match file {
        files::CPUSET_CPUS => c.parse::<CpuList>().ok() == w.parse::<CpuList>().ok(),
        files::CPU_UCLAMP_MIN => match (percent_of(c), percent_of(w)) {
            (Some(a), Some(b)) => (a - b).abs() < 0.005,
            _ => c == w,
        },
        _ => c == w,
    }
}

fn percent_of(s: &str) -> Option<f64> {
    if s == "max" {
        Some(100.0)
    } else {
        s.parse().ok()
    }
}

fn apply_sysfs(step: &Step, path: &PathBuf, dry_run: bool) -> Result<Outcome, FsError> {
    let value = step.value.as_deref().unwrap_or_default();
    match fs::read_to_string(path) {
        Ok(current) if current.trim() == value => Ok(Outcome::Unchanged),
        Ok(_) => {
            if !dry_run {
                write_existing(path, value)?;
            }
            Ok(Outcome::Changed)
        }
        Err(e) if Refusal::of(&e) == Refusal::Missing => Ok(Outcome::Unsupported(format!(
            "{} does not exist (only ChromeOS kernels have the cpu_boost module)",
            path.display()
        ))),
        Err(source) => Err(FsError {
            op: "read",
            path: path.clone(),
            value: None,
            source,
        }),
    }
}
