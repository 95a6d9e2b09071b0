//! Placement and setup cost against a raw `write()` of a pid to `cgroup.procs`, measured in
//! the same run on the real cgroup2 mount (root only). `cargo bench --bench placement`.
//!
//! Rows: setup of a fresh tree, a no-op setup, `move` of a 1-thread and of a 200-thread
//! process through the library (what a daemon pays) and through the `cgqos` binary (what a
//! shell caller pays), each as median and p99 over many rounds, and as a ratio to the raw
//! write's median.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cgqos::apply::apply;
use cgqos::board::BoardSource;
use cgqos::cgroupfs::CgroupFs;
use cgqos::layout::Target;
use cgqos::place::{CgroupMap, Placer};
use cgqos::plan::Plan;
use cgqos::procfs::{ProcessId, Procfs};
use cgqos::state::State;
use cgqos::topology::Topology;
use common::{Stats, measure, raw_write};

const CHILD: &str = "CGQOS_BENCH_CHILD_THREADS";

fn row(name: &str, s: &Stats, base: Duration) {
    println!(
        "{name:<44} p50 {:>10.1} us   p99 {:>10.1} us   x{:>7.1} raw",
        s.p50.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6,
        s.p50.as_secs_f64() / base.as_secs_f64()
    );
}

fn main() {
    if let Ok(n) = std::env::var(CHILD) {
        common::ready_child(n.parse().unwrap());
    }
    let Some((mountinfo, mount)) =
        common::start("placement", "it writes to the real cgroup2 mount")
    else {
        return;
    };
    let root: PathBuf = mount
        .dir
        .join(format!("cgqos-bench-{}", std::process::id()));
    let topo = Topology::detect(Path::new("/sys")).unwrap();
    let board = BoardSource::default().load().unwrap();
    let plan = Plan::build(&topo, &board).unwrap();
    let cg = CgroupFs::new(&root);
    let sysfs = Path::new("/sys");
    println!(
        "cgqos placement benchmark: kernel {}, cgroup2 at {}, controllers {:?}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        mount.dir.display(),
        std::fs::read_to_string(mount.dir.join("cgroup.controllers"))
            .unwrap_or_default()
            .trim()
    );

    // Baseline: one raw write of a 1-thread process's pid, alternating between two groups.
    std::fs::create_dir(&root).unwrap();
    apply(&plan.steps, &cg, sysfs, false).unwrap();
    let mut one = common::spawn_ready(CHILD, 1);
    let pid1 = one.id();
    let fg = root.join("chrome/foreground/cgroup.procs");
    let bg = root.join("chrome/background/cgroup.procs");
    let raw = measure(2000, |i| {
        raw_write(if i % 2 == 0 { &fg } else { &bg }, pid1)
    });
    row("raw write(pid) to cgroup.procs (baseline)", &raw, raw.p50);

    let map = CgroupMap::new(&root, &mountinfo);
    let proc = Procfs::new("/proc");
    let targets = [
        Target::parse("foreground").unwrap(),
        Target::parse("background").unwrap(),
    ];
    let mut state = State::default();
    let mut placer = Placer::new(&cg, &map, &proc);
    let s = measure(2000, |i| {
        placer
            .move_process(ProcessId::new(pid1), &targets[i % 2], None, &mut state)
            .unwrap();
    });
    row("move 1-thread process (library)", &s, raw.p50);

    let mut big = common::spawn_ready(CHILD, 200);
    let pid200 = big.id();
    let raw200 = measure(200, |i| {
        raw_write(if i % 2 == 0 { &fg } else { &bg }, pid200)
    });
    row("raw write(pid) of a 200-thread process", &raw200, raw.p50);
    // Give 50 threads a class so the move has per-thread work to do.
    let tids = proc.threads(ProcessId::new(pid200)).unwrap();
    placer
        .move_process(ProcessId::new(pid200), &targets[0], None, &mut state)
        .unwrap();
    for t in tids.iter().skip(1).take(50) {
        placer
            .move_thread(*t, Some("non-urgent"), None, &mut state)
            .unwrap();
    }
    let s = measure(200, |i| {
        placer
            .move_process(
                ProcessId::new(pid200),
                &targets[(i + 1) % 2],
                None,
                &mut state,
            )
            .unwrap();
    });
    row("move 200-thread process, 50 classed (library)", &s, raw.p50);

    let exe = env!("CARGO_BIN_EXE_cgqos");
    let state_dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let st = Command::new(exe)
            .args(args)
            .arg("--cgroup-root")
            .arg(&root)
            .arg("--state-dir")
            .arg(state_dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{args:?}");
    };
    let s = measure(200, |_| {
        assert!(Command::new("/bin/true").status().unwrap().success());
    });
    row("spawn /bin/true (process start, for scale)", &s, raw.p50);
    let p1 = pid1.to_string();
    let s = measure(200, |i| {
        cli(&[
            "move",
            &p1,
            if i % 2 == 0 {
                "foreground"
            } else {
                "background"
            },
        ])
    });
    row("move 1-thread process (cgqos binary)", &s, raw.p50);

    let s = measure(200, |_| {
        apply(&plan.steps, &cg, sysfs, false).unwrap();
    });
    row("setup, no-op (library)", &s, raw.p50);
    let s = measure(100, |_| cli(&["setup"]));
    row("setup, no-op (cgqos binary)", &s, raw.p50);

    for c in [&mut one, &mut big] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let mut fresh_root = root.clone();
    fresh_root.set_file_name(format!("cgqos-bench-fresh-{}", std::process::id()));
    let fresh_cg = CgroupFs::new(&fresh_root);
    let s = measure(50, |_| {
        std::fs::create_dir(&fresh_root).unwrap();
        apply(&plan.steps, &fresh_cg, sysfs, false).unwrap();
        let map = CgroupMap::new(&fresh_root, &mountinfo);
        let mut p = Placer::new(&fresh_cg, &map, &proc);
        let mut r = cgqos::place::TeardownReport::default();
        for sub in ["chrome", "vms"] {
            p.evacuate(sub, &State::default(), &mut r);
        }
        std::fs::remove_dir(&fresh_root).unwrap();
    });
    row("setup fresh + teardown (library)", &s, raw.p50);

    cli(&["teardown"]);
    let mut p = Placer::new(&cg, &map, &proc);
    let mut r = cgqos::place::TeardownReport::default();
    for sub in ["chrome", "vms"] {
        p.evacuate(sub, &State::default(), &mut r);
    }
    let _ = std::fs::remove_dir(&root);
}
