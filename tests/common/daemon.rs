//! A daemon on a temporary socket, state and configuration, and a unique sub-root of the
//! real cgroup2 mount, torn down on drop.
#![allow(dead_code)]

use super::*;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const UNPRIV_UID: u32 = 54321;

pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub model: Option<PathBuf>,
    pub sleepers: Vec<Child>,
    pub env: Vec<(String, String)>,
}

pub fn usable(tag: &str) -> Option<PathBuf> {
    real_subroot(&format!("d{tag}"))
}

impl Daemon {
    pub fn new(tag: &str, config: &str, model: Option<&str>) -> Option<Daemon> {
        Daemon::with(tag, config, model, &[], &[])
    }

    /// A daemon with extra files in its configuration directory and extra environment.
    pub fn with(
        tag: &str,
        config: &str,
        model: Option<&str>,
        files: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Option<Daemon> {
        let root = usable(tag)?;
        let dir = tempfile::tempdir().unwrap();
        // The socket's directory must be traversable by the unprivileged client.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("conf/daemon.yaml"), config).unwrap();
        let model_path = model.map(|m| {
            let p = dir.path().join("conf/model.yaml");
            std::fs::write(&p, m).unwrap();
            p
        });
        for (name, text) in files {
            let p = dir.path().join("conf").join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let mut d = Daemon {
            child: None,
            dir,
            root,
            model: model_path,
            sleepers: Vec::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.start();
        Some(d)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/cgqos.sock")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        let mut c = cgqos();
        c.arg("daemon")
            .arg("--cgroup-root")
            .arg(&self.root)
            .arg("--state-dir")
            .arg(self.state())
            .arg("--socket")
            .arg(self.socket())
            .arg("--config-dir")
            .arg(self.dir.path().join("conf"))
            .env("CGQOS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(m) = &self.model {
            c.arg("--model").arg(m);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        self.child = Some(c.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = UnixStream::connect(self.socket()) {
                if request(&mut s, r#"{"v":1,"op":"ping"}"#).contains("pong") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn signal(&mut self, sig: i32) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
            c.wait().unwrap();
        }
    }

    pub fn cli(&self, args: &[&str]) -> Run {
        run(cgqos().args(args).arg("--socket").arg(self.socket()))
    }

    pub fn connect(&self) -> UnixStream {
        UnixStream::connect(self.socket()).unwrap()
    }

    pub fn sleeper(&mut self) -> u32 {
        let c = Command::new("sleep").arg("60").spawn().unwrap();
        let pid = c.id();
        self.sleepers.push(c);
        pid
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        for s in &mut self.sleepers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = run(cgqos()
            .args(["teardown", "--direct", "--cgroup-root"])
            .arg(&self.root)
            .arg("--state-dir")
            .arg(self.state()));
        if self.root.exists() {
            super::remove_tree(&self.root);
        }
    }
}

/// One request line, one reply line.
pub fn request(s: &mut UnixStream, line: &str) -> String {
    s.write_all(line.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut out = String::new();
    r.read_line(&mut out).unwrap();
    out
}

/// The cgroup2 path of a process's main thread.
pub fn cgroup_of(pid: u32) -> String {
    cgroup_of_task(pid, pid)
}

pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
