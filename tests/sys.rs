//! The system layer seen from the binary: an empty CGQOS_* variable reads as unset without
//! cgqos touching its environment, and help looks the same either way.

mod common;

use common::{cgqos, run};

/// Every CGQOS_* variable cgqos reads through its flags, the daemon's own included.
const VARS: &[&str] = &[
    "CGQOS_SYSFS_ROOT",
    "CGQOS_PROC_ROOT",
    "CGQOS_CGROUP_ROOT",
    "CGQOS_STATE_DIR",
    "CGQOS_MODEL",
    "CGQOS_BOARD",
    "CGQOS_SKU",
    "CGQOS_BOARDS_DIR",
    "CGQOS_SOCKET",
    "CGQOS_DIRECT",
    "CGQOS_CONFIG_DIR",
    "CGQOS_ALLOW_NON_CGROUPFS",
    "CGQOS_RESET_ON_EXIT",
];

#[test]
fn help_is_the_same_whether_a_variable_is_empty_or_unset() {
    for args in [&["--help"][..], &["daemon", "--help"], &["move", "--help"]] {
        let unset = run(cgqos().args(args).env_remove("CGQOS_SOCKET"));
        let mut c = cgqos();
        for v in VARS {
            c.env(v, "");
        }
        let empty = run(c.args(args));
        assert_eq!(unset.code, 0, "{args:?}: {}", unset.stderr);
        assert_eq!(empty.code, 0, "{args:?}: {}", empty.stderr);
        assert_eq!(empty.stdout, unset.stdout, "{args:?}");
        assert!(unset.stdout.contains("[env: CGQOS_"), "{args:?}");
    }
}

#[test]
fn an_empty_switch_or_path_variable_is_no_value() {
    // Empty switches would be refused as "invalid value ''" if they reached clap; an empty
    // socket path falls back to the default (the command needs none here).
    let mut c = cgqos();
    for v in VARS {
        c.env(v, "");
    }
    let r = run(c
        .args(["plan", "--json", "--sysfs-root"])
        .arg(common::fixture("trogdor")));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("invalid value"), "{}", r.stderr);
}
