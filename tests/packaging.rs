//! Packaging: the README's no-root commands run as written, board previews on foreign
//! machines, shell completions and man pages, `make install` / `make uninstall`.

mod common;
use common::*;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use clap::CommandFactory;

/// A user with no rights to anything cgqos touches (as tests/daemon.rs).
const NOBODY: u32 = 54321;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `sh -c line` in the source tree, with `cargo run --release --` and a leading `cgqos` meaning
/// the binary under test, no CGQOS_* variables, and as an unprivileged user when we are root
/// (the README promises these need no root).
fn sh_as_written(line: &str) -> Run {
    let bin = env!("CARGO_BIN_EXE_cgqos");
    let mut line = line.replace("cargo run --release --", bin);
    if let Some(rest) = line.strip_prefix("cgqos ") {
        line = format!("{bin} {rest}");
    }
    let mut cmd = Command::new("sh");
    // pipefail where sh has it: a failing cgqos before `| jq` must fail the line.
    cmd.arg("-c")
        .arg(format!(
            "if (set -o pipefail) 2>/dev/null; then set -o pipefail; fi; {line}"
        ))
        .current_dir(manifest_dir());
    for (k, _) in std::env::vars() {
        if k.starts_with("CGQOS_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("CGQOS_SOCKET", "/nonexistent/cgqos-test.sock");
    if is_root() {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    run(&mut cmd)
}

/// The commands of the first ```sh block after `heading` in `file`: comments dropped,
/// backslash continuations joined.
fn sh_block(file: &str, heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(manifest_dir().join(file)).unwrap();
    let after = &text[text
        .find(heading)
        .unwrap_or_else(|| panic!("{file}: no {heading:?}"))..];
    let block = &after[after.find("```sh\n").expect("an sh block") + 6..];
    let block = &block[..block.find("```").unwrap()];
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in block.lines() {
        let code = line.split(" #").next().unwrap().trim_end();
        if let Some(head) = code.strip_suffix('\\') {
            cur.push_str(head);
            continue;
        }
        cur.push_str(code);
        let c = cur.split_whitespace().collect::<Vec<_>>().join(" ");
        if !c.is_empty() && !c.starts_with('#') {
            out.push(c);
        }
        cur.clear();
    }
    out
}

#[test]
fn readme_quick_start_runs_as_written_without_root() {
    let cmds = sh_block("README.md", "## Quick start");
    assert!(cmds.len() >= 4, "{cmds:?}");
    for c in &cmds {
        assert!(
            !c.contains("sudo"),
            "the first Quick start block needs no root: {c}"
        );
        let r = sh_as_written(c);
        assert_eq!(r.code, 0, "{c}\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
        assert!(!r.stdout.is_empty(), "{c} printed nothing");
    }
}

#[test]
fn cli_doc_examples_without_root_run_as_written() {
    let has_jq = Command::new("jq")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut ran = 0;
    for c in sh_block("docs/cli.md", "## EXAMPLES") {
        if c.contains("sudo") {
            continue;
        }
        if c.contains("| jq") && !has_jq {
            eprintln!("not run (no jq here): {c}");
            continue;
        }
        let r = sh_as_written(&c);
        assert_eq!(r.code, 0, "{c}\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
        assert!(!r.stdout.is_empty(), "{c} printed nothing");
        ran += 1;
    }
    assert!(ran > 0 || !has_jq, "no example ran");
}

fn plan_json(args: &[&str]) -> serde_json::Value {
    let r = run(cgqos().args(["plan", "--json"]).args(args));
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    json(&r)
}

#[test]
fn a_board_preview_on_a_foreign_machine_equals_the_plan_on_that_board() {
    for (board, native, foreign) in [
        ("trogdor", "trogdor", "homogeneous"),
        ("brya", "intel-hybrid", "single-cpu"),
    ] {
        let on_board = plan_json(&[
            "--board",
            board,
            "--sysfs-root",
            fixture(native).to_str().unwrap(),
        ]);
        assert_eq!(on_board["cpus"]["from"], "machine", "{board}: {on_board}");
        let preview = plan_json(&[
            "--board",
            board,
            "--sysfs-root",
            fixture(foreign).to_str().unwrap(),
        ]);
        assert_eq!(preview["cpus"]["from"], "board", "{board}: {preview}");
        assert_eq!(
            preview["cpus"]["file"],
            format!("<built-in>/boards/{board}/cpus.yaml")
        );
        // The description is the board's real topology: same derived values, same steps.
        assert_eq!(preview["derived"], on_board["derived"], "{board}");
        assert_eq!(preview["steps"], on_board["steps"], "{board}");
        // And the same as --cpus board anywhere.
        let forced = plan_json(&["--board", board, "--cpus", "board"]);
        assert_eq!(forced["steps"], on_board["steps"], "{board}");
    }
}

#[test]
fn a_board_preview_says_so_and_the_machine_can_still_be_asked() {
    let r = run(cgqos()
        .args(["plan", "--board", "trogdor", "--sysfs-root"])
        .arg(fixture("homogeneous")));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "# CPUs: the board's own (<built-in>/boards/trogdor/cpus.yaml), not this machine's \
             (this machine's possible CPUs are 0-3, the board's 0-7)"
        ),
        "{}",
        r.stdout
    );
    // --cpus machine: exactly setup's view, which refuses the board here.
    let r = run(cgqos()
        .args([
            "plan",
            "--cpus",
            "machine",
            "--board",
            "trogdor",
            "--sysfs-root",
        ])
        .arg(fixture("homogeneous")));
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr
            .contains("CPUs 4-5 are not possible on this machine"),
        "{}",
        r.stderr
    );
    // A board without a description plans against the machine, and cannot be forced.
    let r = run(cgqos()
        .args(["plan", "--board", "default", "--sysfs-root"])
        .arg(fixture("homogeneous")));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains("# CPUs:"), "{}", r.stdout);
    let r = run(cgqos().args(["plan", "--board", "default", "--cpus", "board"]));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("board \"default\" has no CPU description"),
        "{}",
        r.stderr
    );
}

/// A FIFO named cpus.yaml in a boards directory blocked `plan` in open(2).
#[test]
fn a_fifo_as_a_cpu_description_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("trogdor")).unwrap();
    let fifo = dir.path().join("trogdor/cpus.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let r = run(cgqos()
        .args(["plan", "--board", "trogdor", "--boards-dir"])
        .arg(dir.path()));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
}

#[test]
fn installed_cpu_descriptions_override_and_bad_ones_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("trogdor");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(
        b.join("cpus.yaml"),
        "possible: 0-7\nlittle: 0-3\nsource: cpu_capacity\ncpu_capacity: {0-3: 400, 4-7: 1024}\n",
    )
    .unwrap();
    let args = ["--board", "trogdor", "--cpus", "board", "--boards-dir"];
    // The installed model.yaml is absent: the built-in one is used, with the installed CPUs.
    let j = plan_json(&[&args[..], &[dir.path().to_str().unwrap()]].concat());
    assert_eq!(j["cpus"]["file"], b.join("cpus.yaml").display().to_string());
    assert_eq!(j["derived"]["all_cpus"], "0-7");
    assert_eq!(j["derived"]["boost_top_app"], 44, "400 * 100 / 1024 + 5");

    for (text, want) in [
        (
            "possible: 0-7\nlitle: 0-5\n",
            "cpus.yaml:2:1: unknown key `litle`",
        ),
        (
            "possible: 0-3\nlittle: 0-5\nsource: cpu_capacity\n",
            "cpus.yaml:2:9: little: CPUs 4-5 are not in possible (0-3)",
        ),
        (
            "possible: 0-7\nlittle: 0-5\nsource: magic\n",
            "cpus.yaml:3:9: source: expected",
        ),
        (
            "possible: 0-7\nlittle: 0-5\nsource: cpu_capacity\ncpu_capacity: {0-5: many}\n",
            "cpus.yaml:4:21: cpu_capacity: expected a positive whole number",
        ),
        (
            "possible: 0-99999\n",
            "cpus.yaml:1:11: possible: invalid CPU list",
        ),
        ("- 1\n", "a CPU description must be a mapping"),
    ] {
        std::fs::write(b.join("cpus.yaml"), text).unwrap();
        let r = run(cgqos().args(["plan"]).args(args).arg(dir.path()));
        assert_eq!(r.code, 2, "{text:?}: {}", r.stdout);
        assert!(
            r.stderr.contains(want),
            "{text:?}: want {want:?}, got {}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
}

fn subcommands() -> Vec<String> {
    cgqos::cli::Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect()
}

#[test]
fn bash_completions_parse_and_know_every_subcommand() {
    let r = run(cgqos().args(["completions", "bash"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cgqos.bash");
    std::fs::write(&f, &r.stdout).unwrap();
    let check = run(Command::new("bash").arg("-n").arg(&f));
    assert_eq!(check.code, 0, "bash -n: {}", check.stderr);
    // Sourcing it registers the completion function.
    let reg = run(Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p cgqos", f.display())));
    assert_eq!(reg.code, 0, "{}", reg.stderr);
    for sub in subcommands() {
        assert!(r.stdout.contains(&sub), "bash completions lack {sub}");
    }
    for (shell, marker) in [("zsh", "#compdef cgqos"), ("fish", "complete -c cgqos")] {
        let r = run(cgqos().args(["completions", shell]));
        assert_eq!(r.code, 0, "{shell}: {}", r.stderr);
        assert!(r.stdout.contains(marker), "{shell}: {}", r.stdout);
        for sub in subcommands() {
            assert!(r.stdout.contains(&sub), "{shell} completions lack {sub}");
        }
    }
    let r = run(cgqos().args(["completions", "tcsh"]));
    assert_eq!(r.code, 2, "{}", r.stdout);
}

#[test]
fn the_man_page_names_every_subcommand_and_each_has_its_own_page() {
    let r = run(cgqos().arg("manpage"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with(".ie \\n(.g .ds Aq \\(aq") || r.stdout.contains(".TH cgqos 8"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(".TH cgqos 8"), "{}", r.stdout);
    for sub in subcommands() {
        assert!(
            r.stdout.contains(&format!("cgqos\\-{sub}(8)")),
            "cgqos(8) lacks {sub}"
        );
    }
    let list = run(cgqos().args(["manpage", "--list"]));
    assert_eq!(list.code, 0, "{}", list.stderr);
    let pages: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(pages[0], "cgqos");
    for sub in subcommands() {
        let name = format!("cgqos-{sub}");
        assert!(pages.contains(&name.as_str()), "{pages:?} lacks {name}");
    }
    assert!(pages.contains(&"cgqos-vm-add"), "{pages:?}");
    for p in &pages {
        let r = run(cgqos().args(["manpage", p]));
        assert_eq!(r.code, 0, "{p}: {}", r.stderr);
        assert!(
            r.stdout.contains(&format!(".TH {p} 8")),
            "{p}: {}",
            r.stdout
        );
    }
    let r = run(cgqos().args(["manpage", "cgqos-nope"]));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("no manual page \"cgqos-nope\""),
        "{}",
        r.stderr
    );
}

#[test]
fn a_closed_pipe_is_not_a_panic() {
    for args in [&["completions", "bash"][..], &["manpage"], &["plan"]] {
        let mut child = cgqos()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn make_install_and_uninstall_into_a_destdir() {
    if Command::new("make").arg("--version").output().is_err() {
        eprintln!("not run: no make here");
        return;
    }
    let dest = tempfile::tempdir().unwrap();
    let make = |target: &str, extra: &[&str]| {
        run(Command::new("make")
            .arg("-s")
            .arg(target)
            .arg(format!("DESTDIR={}", dest.path().display()))
            .arg(format!("BIN={}", env!("CARGO_BIN_EXE_cgqos")))
            .args(extra)
            .current_dir(manifest_dir()))
    };
    let r = make("install", &["PREFIX=/opt/cgqos"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let files = files_below(dest.path());
    for want in [
        "opt/cgqos/bin/cgqos",
        "opt/cgqos/share/cgqos/boards/trogdor/model.yaml",
        "opt/cgqos/share/cgqos/boards/trogdor/cpus.yaml",
        "opt/cgqos/share/cgqos/boards/examples/trogdor-overlay.yaml",
        "opt/cgqos/share/man/man8/cgqos.8",
        "opt/cgqos/share/man/man8/cgqos-move.8",
        "opt/cgqos/share/man/man8/cgqos-vm-add.8",
        "opt/cgqos/share/bash-completion/completions/cgqos",
        "opt/cgqos/share/zsh/site-functions/_cgqos",
        "opt/cgqos/share/fish/vendor_completions.d/cgqos.fish",
        "opt/cgqos/share/doc/cgqos/deployment.md",
        "opt/cgqos/lib/systemd/system/cgqos.service",
        "opt/cgqos/lib/systemd/system/cgqos-daemon.service",
        "etc/init/cgqos.conf",
        "etc/init/cgqos-daemon.conf",
        "opt/cgqos/share/dbus-1/system.d/org.chromium.ResourceManager.conf",
        "opt/cgqos/share/dbus-1/system.d/org.cgqos.Daemon1.conf",
    ] {
        assert!(
            files.iter().any(|f| f == want),
            "{want} not installed: {files:?}"
        );
    }
    // The service files name the installed binary.
    let unit = std::fs::read_to_string(
        dest.path()
            .join("opt/cgqos/lib/systemd/system/cgqos.service"),
    )
    .unwrap();
    assert!(
        unit.contains("ExecStart=/opt/cgqos/bin/cgqos setup"),
        "{unit}"
    );
    assert!(!unit.contains("/usr/bin/cgqos"), "{unit}");
    let r = make("uninstall", &["PREFIX=/opt/cgqos"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(files_below(dest.path()), Vec::<String>::new());
}

/// `make` builds a statically linked binary for the host's triple (docs/deployment.md,
/// "Install"), and installs it from there; `STATIC=no` is the plain `cargo build --release`.
/// Checked with `make -n` (what it would run): a release build takes minutes.
#[test]
fn make_builds_a_static_binary_for_the_host_unless_told_otherwise() {
    if Command::new("make").arg("--version").output().is_err() {
        eprintln!("not run: no make here");
        return;
    }
    let rustc = run(Command::new("rustc").arg("-vV"));
    let host = rustc
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host");
    let dry_run = |extra: &[&str]| {
        let r = run(Command::new("make")
            .args(["-n", "install", "DESTDIR=/nonexistent/pkg"])
            .args(extra)
            .env("CARGO_TARGET_DIR", "/nonexistent/target")
            .env_remove("RUSTFLAGS")
            .current_dir(manifest_dir()));
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        r.stdout
    };
    let out = dry_run(&[]);
    let build = out
        .lines()
        .find(|l| l.contains(" build --release"))
        .unwrap_or_else(|| panic!("no cargo build: {out}"));
    assert!(build.contains("-C target-feature=+crt-static"), "{build}");
    assert!(build.contains(&format!("--target {host}")), "{build}");
    assert!(build.contains("--locked"), "{build}");
    assert!(
        out.contains(&format!(
            "0755 /nonexistent/target/{host}/release/cgqos /nonexistent/pkg/usr/bin/cgqos"
        )),
        "{out}"
    );
    let out = dry_run(&["STATIC=no"]);
    assert!(!out.contains("crt-static"), "{out}");
    assert!(!out.contains("--target"), "{out}");
    assert!(
        out.contains("0755 /nonexistent/target/release/cgqos /nonexistent/pkg/usr/bin/cgqos"),
        "{out}"
    );
}

#[test]
fn readme_root_block_runs_as_written_on_a_private_sub_root() {
    let Some(root) = real_subroot("readme") else {
        return;
    };
    let mut lines = sh_block("README.md", "As root, on a private sub-root");
    assert_eq!(lines.remove(0), "sudo -s", "the block starts a root shell");
    // `setup --cgroup-root EXPR`: the README's sub-root is in the same cgroup2 mount as the
    // test's; the script uses the test's own sub-root there, and every later command the
    // root that setup recorded (no CGQOS_CGROUP_ROOT in the environment).
    let setup = lines.remove(0);
    let expr = setup
        .strip_prefix("cgqos setup --cgroup-root ")
        .unwrap_or_else(|| panic!("the block's first command sets up a sub-root: {setup}"));
    let readme_root = run(Command::new("sh").arg("-c").arg(format!("echo {expr}")));
    assert_eq!(
        readme_root.stdout.trim(),
        root.parent().unwrap().join("cgqos-demo").to_str().unwrap(),
        "{}",
        readme_root.stderr
    );
    lines.insert(0, format!("cgqos setup --cgroup-root '{}'", root.display()));
    // The test's own sub-root and state directory instead of the README's names; `cgqos`
    // on PATH is the binary under test. On any failure: teardown, and no sleep left behind.
    let bin_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cgqos"), bin_dir.path().join("cgqos")).unwrap();
    let state = tempfile::tempdir().unwrap();
    let script = format!(
        // `set -e` holds inside the trap too: the clean-up must not fail the script when
        // the README's own `kill` already reaped the sleep.
        "set -e\ntrap 'set +e; kill \"$pid\" 2>/dev/null; cgqos teardown >/dev/null 2>&1; true' EXIT\n{}\n",
        lines.join("\n")
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&script)
        .current_dir(manifest_dir())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.path().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("CGQOS_CGROUP_ROOT")
        .env("CGQOS_STATE_DIR", state.path())
        .env("CGQOS_SOCKET", "/nonexistent/cgqos-test.sock");
    let r = run(&mut cmd);
    assert_eq!(
        r.code, 0,
        "{script}\nstdout: {}\nstderr: {}",
        r.stdout, r.stderr
    );
    assert!(r.stdout.contains("foreground"), "{}", r.stdout);
    assert!(r.stdout.contains("urgent"), "{}", r.stdout);
    assert!(!root.exists(), "teardown removed {}", root.display());
}
