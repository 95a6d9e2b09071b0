//! Issue 8, the socket: no user can take it from the others. A client that pipelines
//! requests and never reads its replies is closed after the idle timeout, one uid holds at
//! most `limits.max-connections-per-user` connections (root exempt), duplicate keys are
//! refused, `id` comes back as sent or not at all, and the socket's directory must be
//! writable by root (or the daemon's user) only.
//!
//! The daemon tests need root and the real cgroup2 mount (skipped with the reason otherwise);
//! unprivileged callers are this test binary run again as real uids.

mod common;
use common::daemon::*;
use common::*;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const OTHER_UID: u32 = 54322;

/// max-connections 8, so the per-user default is 2; a short idle timeout so that the test
/// sees stalled connections closed.
const LIMITED: &str =
    "socket:\n  mode: \"0666\"\nlimits:\n  max-connections: 8\n  idle-timeout-secs: 2\n";

/// Runs one of the `#[ignore]`d client helpers below as `uid`.
fn helper(name: &str, uid: u32, socket: &Path) -> Command {
    let mut c = child_test_command(&std::env::current_exe().unwrap(), name);
    c.env("CGQOS_TEST_SOCKET", socket).uid(uid).gid(uid);
    c
}

/// A value printed by a helper as `TAG value` on its own line.
fn field(out: &str, tag: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{tag} ")))
        .unwrap_or_else(|| panic!("no {tag} in {out}"))
        .to_string()
}

/// Not a test: opens 8 connections and writes pings on each without reading, until the
/// socket takes no more; prints OPENED; on a line from stdin reads what each connection got
/// (up to its end) and tries one more connection.
#[test]
#[ignore = "helper process for the socket tests"]
fn stalling_client() {
    let Ok(socket) = std::env::var("CGQOS_TEST_SOCKET") else {
        return;
    };
    // libtest has printed "test NAME ... " without a newline.
    println!();
    // Many requests per write, so the daemon's replies (one write each) fill the socket
    // long before the requests run out.
    let chunk = r#"{"v":1,"op":"ping"}"#.to_string() + "\n";
    let chunk = chunk.repeat(60_000 / chunk.len());
    let mut conns = Vec::new();
    for _ in 0..8 {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_nonblocking(true).unwrap();
        // Stop when the socket is full (the daemon stopped reading) or closed (turned away).
        for _ in 0..64 {
            match s.write(chunk.as_bytes()) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // The daemon may still be reading: give it a moment, then try once more.
                    std::thread::sleep(Duration::from_millis(50));
                    if s.write(chunk.as_bytes()).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        conns.push(s);
    }
    println!("OPENED");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    for (i, s) in conns.iter_mut().enumerate() {
        s.set_nonblocking(false).unwrap();
        // Liveness bound only: a closed connection ends at once.
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        let end = loop {
            let mut buf = [0u8; 65536];
            match s.read(&mut buf) {
                Ok(0) => break "eof",
                Ok(n) => got.extend_from_slice(&buf[..n]),
                // Closed with our requests unread: the kernel reports a reset after the data.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break "eof",
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    break "open";
                }
                Err(_) => break "error",
            }
        };
        let text = String::from_utf8_lossy(&got);
        let first = text.lines().next().unwrap_or("");
        let kind = if first.contains("\"code\":\"busy\"") {
            "busy"
        } else if first.contains("pong") {
            "served"
        } else {
            "nothing"
        };
        println!("CONN{i} {kind} {end} {first}");
    }
    let mut s = UnixStream::connect(&socket).unwrap();
    println!(
        "AFTER {}",
        request(&mut s, r#"{"v":1,"id":"after","op":"ping"}"#).trim_end()
    );
}

/// Not a test: two connections at once, each pings.
#[test]
#[ignore = "helper process for the socket tests"]
fn polite_client() {
    let Ok(socket) = std::env::var("CGQOS_TEST_SOCKET") else {
        return;
    };
    // libtest has printed "test NAME ... " without a newline.
    println!();
    let mut a = UnixStream::connect(&socket).unwrap();
    let mut b = UnixStream::connect(&socket).unwrap();
    println!(
        "A {}",
        request(&mut a, r#"{"v":1,"id":"a","op":"ping"}"#).trim_end()
    );
    println!(
        "B {}",
        request(&mut b, r#"{"v":1,"id":"b","op":"ping"}"#).trim_end()
    );
}

/// The issue's reproduction: 8 connections (of max-connections 8) from one unprivileged uid
/// that pipeline requests and never read. Before the fix they kept every slot forever and
/// everyone got `busy`.
#[test]
fn one_user_cannot_take_the_socket_from_the_others() {
    let Some(d) = Daemon::new("h2slots", LIMITED, None) else {
        return;
    };
    let mut staller = helper("stalling_client", UNPRIV_UID, &d.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(staller.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("OPENED") {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "the stalling client ended early: {}",
            d.log()
        );
    }

    // Root is exempt from the per-user limit: three connections at once, all served.
    let mut mine: Vec<UnixStream> = (0..3).map(|_| d.connect()).collect();
    for (i, s) in mine.iter_mut().enumerate() {
        let r = request(s, &format!(r#"{{"v":1,"id":{i},"op":"ping"}}"#));
        assert!(r.contains("pong"), "root connection {i}: {r}{}", d.log());
    }
    // Another user gets its own two.
    let polite = helper("polite_client", OTHER_UID, &d.socket())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&polite.stdout).to_string();
    assert!(field(&text, "A").contains("pong"), "{text}{}", d.log());
    assert!(field(&text, "B").contains("pong"), "{text}{}", d.log());

    // The two connections the staller got are closed once their replies go unread for the
    // idle timeout (2 s; wait_for's 10 s is a liveness bound, not a timing assertion).
    wait_for("the stalled connections to be closed", || {
        d.log().matches("its replies were not read").count() == 2
    });
    staller.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = staller.wait().unwrap();
    let mut err = String::new();
    staller
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{rest}{err}");

    let conns: Vec<String> = (0..8).map(|i| field(&rest, &format!("CONN{i}"))).collect();
    // Its first two connections were served until it stopped reading, then closed.
    for c in &conns[..2] {
        assert!(c.starts_with("served eof"), "{conns:#?}");
    }
    // The other six were turned away at once, with the limit named.
    for c in &conns[2..] {
        assert!(c.starts_with("busy eof"), "{conns:#?}");
        assert!(
            c.contains(&format!(
                "too many connections from uid {UNPRIV_UID}: 2 open, limits.max-connections-per-user is 2"
            )),
            "{c}"
        );
    }
    // Its slots were given back: a new connection of the same uid is served.
    let after = field(&rest, "AFTER");
    assert!(
        after.contains(r#""id":"after""#) && after.contains("pong"),
        "{after}"
    );
    // One warning for the episode, not one per refused connection.
    let log = d.log();
    assert_eq!(
        log.matches(&format!("connection refused: uid {UNPRIV_UID}"))
            .count(),
        1,
        "{log}"
    );
    // And root still is.
    assert!(request(&mut d.connect(), r#"{"v":1,"op":"ping"}"#).contains("pong"));
}

/// Duplicate keys and `id`s over the real socket: refused with `bad_request`, nothing
/// applied, the connection still usable; integer ids come back digit for digit.
#[test]
fn duplicate_keys_and_ids_on_the_wire() {
    let Some(mut d) = Daemon::new("h2wire", "socket:\n  mode: \"0666\"\n", None) else {
        return;
    };
    let pid = d.sleeper();
    let before = cgroup_of(pid);
    let mut s = d.connect();
    // The reader that takes the first `group` would move it to ui, the one that takes the
    // last to background: the daemon does neither.
    for line in [
        format!(
            r#"{{"v":1,"id":1,"op":"move","group":"ui","group":"background","targets":[{{"id":{pid}}}]}}"#
        ),
        format!(r#"{{"v":1,"id":2,"op":"move","group":"ui","targets":[{{"id":1,"id":{pid}}}]}}"#),
        r#"{"v":1,"op":"ping","op":"reset"}"#.to_string(),
    ] {
        let r = request(&mut s, &line);
        assert!(
            r.contains(r#""code":"bad_request""#) && r.contains("duplicate key"),
            "{line} -> {r}"
        );
        assert!(
            !r.contains("\"id\""),
            "no id is echoed from a refused line: {r}"
        );
    }
    assert_eq!(cgroup_of(pid), before, "nothing was moved");
    for id in [
        "-0",
        "1e3",
        "1.0",
        "18446744073709551616",
        "{\"a\":1}",
        "[1]",
    ] {
        let r = request(&mut s, &format!(r#"{{"v":1,"id":{id},"op":"ping"}}"#));
        assert!(
            r.contains(r#""code":"bad_request""#) && r.contains("`id` must be"),
            "{id} -> {r}"
        );
    }
    for id in [
        "0",
        "-1",
        "18446744073709551615",
        "-9223372036854775808",
        "\"x\"",
        "true",
    ] {
        let r = request(&mut s, &format!(r#"{{"v":1,"id":{id},"op":"ping"}}"#));
        assert!(
            r.starts_with(&format!(r#"{{"v":1,"id":{id},"ok":true"#)),
            "{id} -> {r}"
        );
    }
}

/// A daemon refused at its socket's directory exits 2 with the reason, before it touches any
/// cgroup.
fn refused_at(dir: &Path, want: &str) {
    let Some(root) = usable("h2dir") else { return };
    let conf = tempfile::tempdir().unwrap();
    let r = run(cgqos()
        .arg("daemon")
        .arg("--cgroup-root")
        .arg(&root)
        .arg("--state-dir")
        .arg(conf.path().join("state"))
        .arg("--socket")
        .arg(dir.join("cgqos.sock"))
        .arg("--config-dir")
        .arg(conf.path()));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(want), "wanted {want:?}: {}", r.stderr);
    assert!(!root.exists(), "it refused before touching any cgroup");
}

#[test]
fn the_socket_directory_must_be_writable_by_root_only() {
    if usable("h2dir").is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let set_mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
    };
    // Another user's directory, even with a safe mode.
    let theirs = t.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(UNPRIV_UID), Some(UNPRIV_UID)).unwrap();
    refused_at(
        &theirs,
        &format!("is owned by uid {UNPRIV_UID}, not by root or the daemon (uid 0)"),
    );
    // Root's, but writable by group or by others; the sticky bit does not help.
    for mode in [0o775, 0o757, 0o1777] {
        let open = t.path().join(format!("open{mode:o}"));
        std::fs::create_dir(&open).unwrap();
        set_mode(&open, mode);
        refused_at(
            &open,
            &format!("is writable by group or others (mode {mode:o})"),
        );
    }
    // A symlink to a good directory: the link's target could change after the check.
    let good = t.path().join("good");
    std::fs::create_dir(&good).unwrap();
    set_mode(&good, 0o755);
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    refused_at(&link, "is a symbolic link");
    assert!(
        std::fs::read_dir(&good).unwrap().next().is_none(),
        "nothing was created through the link"
    );
}

/// The socket is made in the checked directory, with its mode, and removed at shutdown; a
/// socket someone else put there meanwhile is left alone.
#[test]
fn the_socket_is_bound_and_removed_in_its_directory() {
    let Some(mut d) = Daemon::new("h2bind", "socket:\n  mode: \"0640\"\n", None) else {
        return;
    };
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::symlink_metadata(d.socket()).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.mode() & 0o777, 0o640);
    d.signal(libc::SIGTERM);
    assert!(!d.socket().exists(), "removed at shutdown");

    // Started again, then its socket replaced by another one (as a newer daemon would):
    // shutdown leaves that one in place.
    d.start();
    std::fs::remove_file(d.socket()).unwrap();
    let other = std::os::unix::net::UnixListener::bind(d.socket()).unwrap();
    d.signal(libc::SIGTERM);
    assert!(d.socket().exists(), "not ours: kept");
    drop(other);

    // That socket is now stale (nobody answers on it, and it is root's): the next start
    // removes it and serves; a second daemon on the same socket is refused.
    d.start();
    let state = tempfile::tempdir().unwrap();
    let r = run(cgqos()
        .arg("daemon")
        .arg("--cgroup-root")
        .arg(&d.root)
        .arg("--state-dir")
        .arg(state.path())
        .arg("--socket")
        .arg(d.socket())
        .arg("--config-dir")
        .arg(d.dir.path().join("conf")));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("another daemon is serving"),
        "{}",
        r.stderr
    );
    assert!(request(&mut d.connect(), r#"{"v":1,"op":"ping"}"#).contains("pong"));
}

#[test]
fn the_per_user_limit_is_configured_and_checked() {
    use cgqos::daemon::policy::parse;
    let etc = tempfile::tempdir().unwrap();
    let limit = |text: &str| {
        parse("d.yaml", text, etc.path())
            .map(|c| (c.max_connections, c.max_connections_per_user))
            .map_err(|e| e.to_string())
    };
    assert_eq!(limit("limits: {}\n"), Ok((64, 16)));
    assert_eq!(limit("limits:\n  max-connections: 8\n"), Ok((8, 2)));
    assert_eq!(limit("limits:\n  max-connections: 3\n"), Ok((3, 1)));
    assert_eq!(
        limit("limits:\n  max-connections-per-user: 5\n  max-connections: 8\n"),
        Ok((8, 5))
    );
    assert_eq!(
        limit("limits:\n  max-connections: 8\n  max-connections-per-user: 8\n"),
        Ok((8, 8))
    );
    assert_eq!(
        limit("limits:\n  max-connections: 8\n  max-connections-per-user: 9\n"),
        Err(
            "d.yaml:3:29: limits.max-connections-per-user: expected an integer 1-8, found \"9\""
                .into()
        )
    );
    assert_eq!(
        limit("limits:\n  max-connections-per-user: 0\n"),
        Err(
            "d.yaml:2:29: limits.max-connections-per-user: expected an integer 1-64, found \"0\""
                .into()
        )
    );
}
