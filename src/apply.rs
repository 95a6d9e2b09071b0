//! Converges a cgroup tree to a plan: reads before it writes, so a second run writes
//! nothing; reports what the kernel does not support instead of failing on it.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cgroupfs::{CgroupBackend, FsError, Refusal, files, parent_of, write_existing};
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

/// Applies `steps` in order. `dry_run` reads the tree and reports what would change,
/// predicting for groups it would create which files the kernel would give them. `cg` is
/// the real `CgroupFs`, or a model in tests.
pub fn apply<B: CgroupBackend>(
    steps: &[Step],
    cg: &B,
    sysfs_root: &Path,
    dry_run: bool,
) -> Result<Report, ApplyError> {
    let mut c = Converger {
        cg,
        dry_run,
        pending: HashMap::new(),
        enabled: HashMap::new(),
        uclamp: None,
    };
    if dry_run && !cg.exists("") {
        // A root setup would create: its controllers are what its parent enables.
        let parent = cg.root().parent().map(|p| p.join(files::SUBTREE_CONTROL));
        let avail = parent
            .and_then(|p| cg.read_path(&p).ok())
            .unwrap_or_default();
        c.pending.insert(String::new(), words(&avail));
    }
    let mut report = Report {
        dry_run,
        steps: Vec::with_capacity(steps.len()),
    };
    for (index, step) in steps.iter().enumerate() {
        let outcome = if step.tree == Tree::Sysfs {
            apply_sysfs(step, &sysfs_root.join(&step.path), dry_run)
        } else {
            c.step(step)
        }
        .map_err(|source| ApplyError {
            index: index + 1,
            step: Box::new(step.clone()),
            source,
        })?;
        report.steps.push(StepReport {
            step: step.clone(),
            outcome,
        });
    }
    Ok(report)
}

struct Converger<'a, B: CgroupBackend> {
    cg: &'a B,
    dry_run: bool,
    /// Groups a dry run would create, with the controllers they would have.
    pending: HashMap<String, Vec<String>>,
    /// Controllers a dry run would have enabled in `cgroup.subtree_control`.
    enabled: HashMap<String, Vec<String>>,
    uclamp: Option<bool>,
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

impl<B: CgroupBackend> Converger<'_, B> {
    fn step(&mut self, step: &Step) -> Result<Outcome, FsError> {
        let cg = self.cg;
        if step.op == Op::Mkdir {
            if !self.pending.contains_key(&step.path) && cg.exists(&step.path) {
                return Ok(Outcome::Unchanged);
            }
            if self.dry_run {
                let avail = self.subtree_enabled(parent_of(&step.path))?;
                self.pending.insert(step.path.clone(), avail);
            } else {
                cg.mkdir(&step.path)?;
            }
            return Ok(Outcome::Changed);
        }
        let (group, file) = step.split();
        let value = step.value.as_deref().unwrap_or_default();
        if file == files::SUBTREE_CONTROL {
            return self.enable_controllers(group, value);
        }
        if let Some(avail) = self.pending.get(group).cloned() {
            // A group that does not exist yet: predict from its controllers.
            let controller = match file {
                files::TYPE => None,
                f if f.starts_with("cpuset.") => Some("cpuset"),
                f if f.starts_with("cpu.") => Some("cpu"),
                _ => None,
            };
            let has = controller.is_none_or(|c| avail.iter().any(|a| a == c));
            if !has || (file == files::CPU_UCLAMP_MIN && !self.uclamp_supported()) {
                return Ok(Outcome::Unsupported(missing_reason(file)));
            }
            return Ok(Outcome::Changed);
        }
        if file == files::TYPE {
            let current = cg.read(&step.path)?;
            if current.trim() == value {
                return Ok(Outcome::Unchanged);
            }
            if !self.dry_run {
                cg.write(&step.path, value)?;
            }
            return Ok(Outcome::Changed);
        }
        if !cg.exists(&step.path) {
            if file == files::CPU_UCLAMP_MIN && cg.is_hierarchy_root(group) {
                return Ok(Outcome::Skipped(
                    "the cgroup2 root has no cpu.uclamp.min; nothing above caps the groups".into(),
                ));
            }
            return Ok(Outcome::Unsupported(missing_reason(file)));
        }
        let current = cg.read(&step.path)?;
        if same_value(file, &current, value) {
            return Ok(Outcome::Unchanged);
        }
        if !self.dry_run {
            cg.write(&step.path, value)?;
        }
        Ok(Outcome::Changed)
    }

    /// Controllers enabled for the children of `group` (after simulated enables).
    fn subtree_enabled(&self, group: &str) -> Result<Vec<String>, FsError> {
        if let Some(e) = self.enabled.get(group) {
            return Ok(e.clone());
        }
        if self.pending.contains_key(group) {
            return Ok(Vec::new());
        }
        Ok(words(
            &self
                .cg
                .read(&crate::plan::join(group, files::SUBTREE_CONTROL))?,
        ))
    }

    /// Enables the requested controllers that are available and not yet enabled, one write.
    fn enable_controllers(&mut self, group: &str, request: &str) -> Result<Outcome, FsError> {
        let available = match self.pending.get(group) {
            Some(a) => a.clone(),
            None => words(
                &self
                    .cg
                    .read(&crate::plan::join(group, files::CONTROLLERS))?,
            ),
        };
        let mut enabled = self.subtree_enabled(group)?;
        let mut missing = Vec::new();
        let mut to_enable = Vec::new();
        for c in request
            .split_whitespace()
            .filter_map(|c| c.strip_prefix('+'))
        {
            if enabled.iter().any(|e| e == c) {
                continue;
            }
            if available.iter().any(|a| a == c) {
                to_enable.push(format!("+{c}"));
                enabled.push(c.to_string());
            } else {
                missing.push(c);
            }
        }
        if !to_enable.is_empty() {
            if self.dry_run {
                self.enabled.insert(group.to_string(), enabled);
            } else {
                self.cg.write(
                    &crate::plan::join(group, files::SUBTREE_CONTROL),
                    &to_enable.join(" "),
                )?;
            }
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

    /// Whether groups would get `cpu.uclamp.min`: an existing group with the cpu controller
    /// answers; otherwise the per-task uclamp probe (group uclamp needs task uclamp).
    fn uclamp_supported(&mut self) -> bool {
        *self.uclamp.get_or_insert_with(|| {
            let cg = self.cg;
            let file = |group: &str, name: &str| crate::plan::join(group, name);
            for group in std::iter::once(String::new()).chain(cg.children("")) {
                let cpu = cg
                    .read(&file(&group, files::CONTROLLERS))
                    .is_ok_and(|c| c.split_whitespace().any(|w| w == "cpu"));
                if cpu && cg.exists(&file(&group, files::TYPE)) {
                    return cg.exists(&file(&group, files::CPU_UCLAMP_MIN));
                }
            }
            crate::sched::Support::get().uclamp
        })
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

/// The current values of the sysfs files among `steps` (absolute path, trimmed value), read
/// before `apply` so the first value cgqos overwrote can be recorded for teardown.
pub fn sysfs_before(steps: &[Step], sysfs_root: &Path) -> Vec<(PathBuf, String)> {
    steps
        .iter()
        .filter(|s| s.tree == Tree::Sysfs && s.op == Op::Write)
        .filter_map(|s| {
            let path = sysfs_root.join(&s.path);
            let v = fs::read_to_string(&path).ok()?;
            Some((path, v.trim().to_string()))
        })
        .collect()
}

/// Records, for every sysfs file `report` changed, the value it had before (`before`, from
/// `sysfs_before`). An existing record wins: it holds the value before cgqos's first write.
pub fn remember_sysfs(
    report: &Report,
    sysfs_root: &Path,
    before: &[(PathBuf, String)],
    state: &mut crate::state::State,
) {
    if report.dry_run {
        return;
    }
    for s in report
        .steps
        .iter()
        .filter(|s| s.step.tree == Tree::Sysfs && s.outcome == Outcome::Changed)
    {
        let path = sysfs_root.join(&s.step.path);
        if let Some((_, v)) = before.iter().find(|(p, _)| *p == path) {
            state.sysfs.entry(path).or_insert_with(|| v.clone());
        }
    }
}

/// Writes back every recorded sysfs value (teardown). Restored files, and files that no
/// longer exist (the module was unloaded), are forgotten; failures stay recorded and are
/// returned, so a rerun can finish the job.
pub fn restore_sysfs(state: &mut crate::state::State) -> (Vec<String>, Vec<String>) {
    let (mut restored, mut errors) = (Vec::new(), Vec::new());
    let recorded = std::mem::take(&mut state.sysfs);
    for (path, value) in recorded {
        let current = match fs::read_to_string(&path) {
            Ok(c) => c,
            Err(e) if Refusal::of(&e) == Refusal::Missing => continue,
            Err(e) => {
                errors.push(format!("read {}: {e}", path.display()));
                state.sysfs.insert(path, value);
                continue;
            }
        };
        if current.trim() == value {
            continue;
        }
        match write_existing(&path, &value) {
            Ok(()) => restored.push(format!("{} = {value}", path.display())),
            Err(e) => {
                errors.push(e.to_string());
                state.sysfs.insert(path, value);
            }
        }
    }
    (restored, errors)
}

/// Records the groups `report` created (mkdir steps that changed something), so teardown
/// removes those and leaves groups that were there before alone.
pub fn remember_created(report: &Report, state: &mut crate::state::State) {
    if report.dry_run {
        return;
    }
    // `None`: a state file from before the record was kept, where every group counts.
    let Some(created) = state.created.as_mut() else {
        return;
    };
    for s in report
        .steps
        .iter()
        .filter(|s| s.step.tree == Tree::Cgroup && s.step.op == Op::Mkdir)
        .filter(|s| s.outcome == Outcome::Changed)
    {
        created.insert(s.step.path.clone());
    }
}

/// What `setup` did (or would do) about the board's `favor-dynmods`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MountReport {
    /// The cgroup2 mount point holding the cgqos root (empty when there is none).
    pub mount: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Turns `favordynmods` on for the cgroup2 mount holding `root` (docs/performance.md,
/// "favordynmods"). `mountinfo` is read by the caller before and, to check the kernel took
/// it, `reread` after the remount: outside the initial cgroup namespace the kernel accepts
/// the option and ignores it. `dry_run` only predicts. Never turns the option off.
pub fn favor_dynmods(
    root: &Path,
    mountinfo: &str,
    sysfs_root: &Path,
    dry_run: bool,
    reread: impl FnOnce() -> String,
) -> Result<MountReport, std::io::Error> {
    use crate::mounts;
    let Some(mount) = mounts::cgroup2_mount_of(mountinfo, root) else {
        return Ok(MountReport {
            mount: String::new(),
            outcome: Outcome::Skipped(format!(
                "{} is not under a cgroup2 mount in mountinfo",
                root.display()
            )),
        });
    };
    let report = |outcome| MountReport {
        mount: mount.dir.display().to_string(),
        outcome,
    };
    if mount.favordynmods() {
        return Ok(report(Outcome::Unchanged));
    }
    if !mounts::favordynmods_supported(sysfs_root) {
        return Ok(report(Outcome::Unsupported(format!(
            "no favordynmods in {} (Linux 6.0+)",
            sysfs_root.join("kernel/cgroup/features").display()
        ))));
    }
    if dry_run {
        return Ok(report(Outcome::Changed));
    }
    mounts::remount_favordynmods(&mount).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("remounting {} with favordynmods: {e}", mount.dir.display()),
        )
    })?;
    match mounts::cgroup2_mount_of(&reread(), root) {
        Some(m) if m.favordynmods() => Ok(report(Outcome::Changed)),
        _ => Ok(report(Outcome::Unsupported(
            "the kernel accepted favordynmods but ignored it (not in the initial cgroup namespace?)"
                .into(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
36 35 0:31 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n";

    /// A sysfs root whose features file lists `features`.
    fn sysfs(features: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("kernel/cgroup")).unwrap();
        fs::write(dir.path().join("kernel/cgroup/features"), features).unwrap();
        dir
    }

    fn predict(mountinfo: &str, root: &str, features: &str) -> MountReport {
        let sys = sysfs(features);
        let reread = || -> String { unreachable!("a dry run does not remount") };
        favor_dynmods(Path::new(root), mountinfo, sys.path(), true, reread).unwrap()
    }

    #[test]
    fn favor_dynmods_outcomes_without_touching_a_mount() {
        let root = "/sys/fs/cgroup/cgqos";
        let r = predict(MOUNTINFO, root, "nsdelegate\nfavordynmods\n");
        assert_eq!(r.mount, "/sys/fs/cgroup");
        assert_eq!(r.outcome, Outcome::Changed);
        let on = MOUNTINFO.replace("rw,nsdelegate", "rw,nsdelegate,favordynmods");
        assert_eq!(
            predict(&on, root, "favordynmods\n").outcome,
            Outcome::Unchanged
        );
        match predict(MOUNTINFO, root, "nsdelegate\n").outcome {
            Outcome::Unsupported(why) => {
                assert!(why.starts_with("no favordynmods in "), "{why}");
                assert!(
                    why.ends_with("kernel/cgroup/features (Linux 6.0+)"),
                    "{why}"
                );
            }
            other => panic!("expected unsupported, got {other:?}"),
        }
        let fake = predict(MOUNTINFO, "/tmp/fake", "favordynmods\n");
        assert_eq!(fake.mount, "");
        assert_eq!(
            fake.outcome,
            Outcome::Skipped("/tmp/fake is not under a cgroup2 mount in mountinfo".into())
        );
    }
}
