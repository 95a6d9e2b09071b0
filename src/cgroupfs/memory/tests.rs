//! The model's rules, each as the kernel answers it (checked on a real cgroup2).

use super::super::Refusal;
use super::*;

fn kernel() -> MemKernel {
    // The cgqos root is the hierarchy root here: every rule is visible from it.
    MemKernel::new("/m", "/m", &["cpu", "cpuset"])
}

fn attach(k: &MemKernel, file: &str, id: u32) -> Result<(), Refusal> {
    k.attach(&k.path(file), id).map_err(|e| e.refusal())
}

#[test]
fn types_follow_threaded_writes() {
    let k = kernel();
    for g in ["p", "p/t", "p/d", "p/t/c"] {
        k.mkdir(g).unwrap();
    }
    k.write("p/t/cgroup.type", "threaded").unwrap();
    let kind = |g: &str| k.read(&format!("{g}/cgroup.type")).unwrap();
    assert_eq!(kind("p"), "domain threaded\n");
    assert_eq!(kind("p/t"), "threaded\n");
    assert_eq!(kind("p/d"), "domain invalid\n");
    assert_eq!(kind("p/t/c"), "domain invalid\n");
    // Threaded is for good; writing it again is fine.
    k.write("p/t/cgroup.type", "threaded").unwrap();
    let e = k.write("p/t/cgroup.type", "domain").unwrap_err();
    assert_eq!(e.refusal(), Refusal::Invalid);
    assert!(!k.exists("cgroup.type"), "the root has no type");
}

#[test]
fn threads_move_only_inside_their_domain_processes_anywhere_valid() {
    let k = kernel();
    for g in ["p", "p/t", "p/d", "q"] {
        k.mkdir(g).unwrap();
    }
    k.write("p/t/cgroup.type", "threaded").unwrap();
    k.spawn(10, 1, "a", Path::new("/m"));
    k.spawn_thread(10, 11, "b");
    assert_eq!(
        attach(&k, "q/cgroup.threads", 11),
        Err(Refusal::NotSupported)
    );
    // A process write moves every thread, also into a threaded group.
    attach(&k, "p/t/cgroup.procs", 11).unwrap();
    assert_eq!(k.cgroup_of(10).unwrap(), "/p/t");
    assert_eq!(k.cgroup_of(11).unwrap(), "/p/t");
    attach(&k, "p/cgroup.threads", 11).unwrap();
    assert_eq!(k.cgroup_of(11).unwrap(), "/p");
    assert_eq!(k.read("p/cgroup.procs").unwrap(), "10\n");
    assert_eq!(k.read("p/cgroup.threads").unwrap(), "11\n");
    assert_eq!(
        k.read("p/t/cgroup.procs").unwrap_err().refusal(),
        Refusal::NotSupported
    );
    assert_eq!(
        attach(&k, "p/d/cgroup.procs", 10),
        Err(Refusal::NotSupported)
    );
    assert_eq!(attach(&k, "q/cgroup.procs", 999), Err(Refusal::Gone));
    assert_eq!(attach(&k, "q/cgroup.threads", 999), Err(Refusal::Gone));
}

#[test]
fn the_no_internal_process_rule_and_busy_groups() {
    let k = kernel();
    k.write("cgroup.subtree_control", "+cpu").unwrap();
    k.mkdir("a").unwrap();
    k.mkdir("a/b").unwrap();
    k.spawn(10, 1, "a", Path::new("/m/a"));
    let e = k.write("a/cgroup.subtree_control", "+cpu").unwrap_err();
    assert_eq!(e.refusal(), Refusal::Busy);
    assert!(e.to_string().contains("\"+cpu\""), "{e}");
    attach(&k, "a/b/cgroup.procs", 10).unwrap();
    k.write("a/cgroup.subtree_control", "+cpu").unwrap();
    assert_eq!(attach(&k, "a/cgroup.procs", 10), Err(Refusal::Busy));
    assert_eq!(k.rmdir("a/b").unwrap_err().refusal(), Refusal::Busy);
    assert_eq!(k.rmdir("a").unwrap_err().refusal(), Refusal::Busy);
    attach(&k, "cgroup.procs", 10).unwrap();
    k.rmdir("a/b").unwrap();
    k.rmdir("a/b").unwrap();
}

#[test]
fn a_group_has_the_files_of_the_controllers_its_parent_enabled() {
    let k = kernel();
    k.mkdir("a").unwrap();
    assert!(!k.exists("a/cpu.weight"));
    let e = k.write("a/cpu.weight", "50").unwrap_err();
    assert_eq!(e.refusal(), Refusal::Missing);
    assert_eq!(e.op, "open");
    k.write("cgroup.subtree_control", "+cpu").unwrap();
    assert_eq!(k.read("a/cgroup.controllers").unwrap(), "cpu\n");
    k.write("a/cpu.weight", "50").unwrap();
    assert_eq!(k.read("a/cpu.weight").unwrap(), "50\n");
    assert_eq!(
        k.write("a/cpu.weight", "0").unwrap_err().refusal(),
        Refusal::Invalid
    );
    assert!(!k.exists("a/cpuset.cpus") && !k.exists("a/cpu.uclamp.min"));
    assert!(!k.exists("cpu.weight"), "the root has no controller files");
    let e = k.write("a/cgroup.subtree_control", "+io").unwrap_err();
    assert_eq!(e.refusal(), Refusal::Missing);
    let k = kernel().with_uclamp();
    k.write("cgroup.subtree_control", "+cpu").unwrap();
    k.mkdir("a").unwrap();
    k.write("a/cpu.uclamp.min", "20").unwrap();
    assert_eq!(k.read("a/cpu.uclamp.min").unwrap(), "20.00\n");
}
