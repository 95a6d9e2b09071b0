//! `cgqos status`: the hierarchy as the kernel has it, next to what the plan asks for.

use clap::Args;
use serde::Serialize;

use super::Ctx;
use crate::apply::same_value;
use crate::cgroupfs::{CgroupFs, files};
use crate::error::CliResult;
use crate::layout;
use crate::plan::{Op, Tree, join, vm_steps};

#[derive(Args, Debug)]
pub struct StatusArgs {}

#[derive(Serialize)]
struct Setting {
    file: String,
    requested: String,
    current: Option<String>,
    /// `ok`, `differs`, `unsupported` (the kernel has no such file), or `missing` (the
    /// group does not exist: run setup)
    state: &'static str,
}

#[derive(Serialize)]
struct Group {
    path: String,
    exists: bool,
    #[serde(rename = "type")]
    kind: Option<String>,
    cpus_effective: Option<String>,
    threads: Option<usize>,
    settings: Vec<Setting>,
}

#[derive(Serialize)]
struct StatusOut {
    root: String,
    board: String,
    in_sync: bool,
    unsupported: Vec<String>,
    groups: Vec<Group>,
}

pub fn run(ctx: &Ctx, _args: StatusArgs) -> CliResult<()> {
    let (_topo, board, plan) = ctx.plan()?;
    let cg = ctx.cgroupfs()?;
    let mut steps: Vec<_> = plan
        .steps
        .iter()
        .filter(|s| s.tree == Tree::Cgroup)
        .cloned()
        .collect();
    // VM groups added at run time are part of the tree too.
    for vm in cg.children(layout::VMS) {
        if vm != layout::ARCVM || !board.cgqos.arcvm.value {
            steps.extend(vm_steps(&vm, board.cgqos.vm_cpu_weight.value, None));
        }
    }
    let mut groups: Vec<Group> = Vec::new();
    for step in &steps {
        match step.op {
            Op::Mkdir => groups.push(group(&cg, &step.path)),
            Op::Write => {
                let (dir, file) = step.split();
                if groups.iter().all(|g| g.path != dir) {
                    groups.push(group(&cg, dir));
                }
                let g = groups
                    .iter_mut()
                    .find(|g| g.path == dir)
                    .expect("pushed above");
                let requested = step.value.clone().unwrap_or_default();
                let current = cg.read(&step.path).ok().map(|v| v.trim().to_string());
                let state = match (&current, g.exists) {
                    (_, false) => "missing",
                    (None, true) if file == files::CPU_UCLAMP_MIN && cg.is_hierarchy_root(dir) => {
                        continue;
                    }
                    (None, true) => "unsupported",
                    (Some(c), true) if file == files::SUBTREE_CONTROL => {
                        let available = cg.read(&join(dir, files::CONTROLLERS)).unwrap_or_default();
                        let wanted: Vec<&str> = requested
                            .split_whitespace()
                            .map(|c| c.trim_start_matches('+'))
                            .collect();
                        if wanted.iter().all(|w| c.split_whitespace().any(|x| x == *w)) {
                            "ok"
                        } else if wanted
                            .iter()
                            .any(|w| !available.split_whitespace().any(|x| x == *w))
                        {
                            "unsupported"
                        } else {
                            "differs"
                        }
                    }
                    (Some(c), true) if same_value(file, c, &requested) => "ok",
                    (Some(_), true) => "differs",
                };
                g.settings.push(Setting {
                    file: file.to_string(),
                    requested,
                    current,
                    state,
                });
            }
        }
    }
    let unsupported: Vec<String> = groups
        .iter()
        .flat_map(|g| {
            g.settings
                .iter()
                .filter(|s| s.state == "unsupported")
                .map(move |s| join(&g.path, &s.file))
        })
        .collect();
    let in_sync = groups.iter().all(|g| {
        g.exists
            && g.settings
                .iter()
                .all(|s| s.state == "ok" || s.state == "unsupported")
    });
    let out = StatusOut {
        root: cg.root().display().to_string(),
        board: board.name.clone(),
        in_sync,
        unsupported,
        groups,
    };
    ctx.output(&out, text);
    Ok(())
}

fn group(cg: &CgroupFs, rel: &str) -> Group {
    let exists = cg.exists(rel);
    let read = |f: &str| cg.read(&join(rel, f)).ok().map(|v| v.trim().to_string());
    Group {
        path: rel.to_string(),
        exists,
        kind: read(files::TYPE),
        cpus_effective: read(files::CPUSET_CPUS_EFFECTIVE),
        threads: cg.members(rel, files::THREADS).ok().map(|m| m.len()),
        settings: Vec::new(),
    }
}

fn text(o: &StatusOut) -> String {
    let mut s = format!(
        "root {} (board {:?}): {}\n",
        o.root,
        o.board,
        if o.in_sync {
            "in sync with the plan"
        } else {
            "NOT in sync with the plan: run `cgqos setup`"
        }
    );
    for g in &o.groups {
        let name = if g.path.is_empty() {
            "."
        } else {
            g.path.as_str()
        };
        if !g.exists {
            s.push_str(&format!("{name:<28} missing\n"));
            continue;
        }
        s.push_str(&format!(
            "{name:<28} {:<16} threads {:<5} cpus.effective {}\n",
            g.kind.as_deref().unwrap_or("root"),
            g.threads.map_or("-".into(), |n| n.to_string()),
            g.cpus_effective.as_deref().unwrap_or("-"),
        ));
        for st in &g.settings {
            s.push_str(&format!(
                "    {:<24} {:<12} {}\n",
                st.file,
                st.requested,
                match st.state {
                    "ok" => "ok".to_string(),
                    "differs" => format!("differs: {}", st.current.as_deref().unwrap_or("")),
                    other => other.to_string(),
                }
            ));
        }
    }
    if !o.unsupported.is_empty() {
        s.push_str(&format!(
            "unsupported by this kernel: {}\n",
            o.unsupported.join(", ")
        ));
    }
    s
}
