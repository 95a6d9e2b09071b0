//! What the daemon listens to besides its socket: process exits (pidfds), configuration
//! changes (inotify on the configuration directory, and SIGHUP), CPU hotplug (kernel
//! uevents), and systemd's readiness socket.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType};
use tokio::io::Interest;

use serde_json::Value;

use super::core::Shared;
use super::engine::{Engine, LoadError, Paths};
use super::policy::Caller;
use super::protocol::Reply;
use crate::error::Kind;
use crate::sys::async_fd;

/// pidfd_open(2): a file descriptor that becomes readable when the process exits.
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    crate::procfs::Pidfd::process(pid).map(OwnedFd::from)
}

/// Forgets `pid` (and its threads) in the state once it exits, so the daemon's memory and
/// state file follow the live processes, not every process it ever moved.
pub fn exit_watch(shared: Arc<Shared>, pid: u32, starttime: u64) {
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(_) => {
            // Already gone.
            let _ = shared.exits.send(pid);
            return;
        }
    };
    // The pidfd must name the process we moved, not a successor with the same id.
    if !shared
        .proc
        .stat(pid)
        .is_ok_and(|s| s.starttime == starttime)
    {
        let _ = shared.exits.send(pid);
        return;
    }
    tokio::spawn(async move {
        if let Ok(afd) = async_fd(fd, Interest::READABLE) {
            let _ = afd.readable().await;
        }
        let _ = shared.exits.send(pid);
    });
}

/// One task forgets exited processes, a batch per engine call: a thousand processes exiting
/// at once cost one state save, not a thousand blocking threads.
pub fn forget_exits(shared: Arc<Shared>, mut rx: tokio::sync::mpsc::UnboundedReceiver<u32>) {
    tokio::spawn(async move {
        while let Some(pid) = rx.recv().await {
            let mut batch = vec![pid];
            while let Ok(p) = rx.try_recv() {
                batch.push(p);
            }
            shared
                .with_engine(move |e| e.processes_exited(&batch))
                .await;
        }
    });
}

/// One reload at a time, from reading to swapping, so an older reading never replaces a
/// newer one.
static RELOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reloads configuration: reads and plans without holding the engine (files may be slow or
/// hostile; requests keep being served meanwhile), then swaps and converges under it. A
/// failed load keeps the old configuration.
pub async fn reload(
    shared: &Arc<Shared>,
    paths: Paths,
    why: &'static str,
) -> Result<usize, (Kind, LoadError)> {
    let _one = RELOADING.lock().await;
    let loaded = tokio::task::spawn_blocking(move || Engine::load(&paths))
        .await
        .expect("loading does not panic");
    shared.with_engine(move |e| e.install(loaded, why)).await
}

/// A reload triggered by the daemon itself (inotify, SIGHUP): failures are logged by
/// `Engine::install`.
async fn reload_quietly(shared: &Arc<Shared>, why: &'static str) {
    let paths = shared.with_engine(|e| e.paths.clone()).await;
    let _ = reload(shared, paths, why).await;
}

/// The `reload` request: authorized with the engine, then [`reload`]. The caller is told
/// only what it could read itself (`LoadError::for_caller`).
pub async fn reload_request(shared: &Arc<Shared>, caller: &Caller, id: Value) -> Reply {
    let c = caller.clone();
    let paths = match shared.with_engine(move |e| e.reload_paths(&c)).await {
        Ok(p) => p,
        Err(e) => return Reply::err(id, e.code(), e.message),
    };
    match reload(shared, paths, "request").await {
        Ok(steps) => Reply::ok(id, serde_json::json!({"reloaded": true, "steps": steps})),
        Err((kind, e)) => Reply::err(id, kind.code(), e.for_caller(caller)),
    }
}

/// Reloads when a file in the configuration directory is written, renamed into place,
/// created or removed (editors replace files by rename), after a short quiet period.
pub fn config_watch(shared: Arc<Shared>, dir: &Path) {
    let Some(ino) = watch_config_dir(dir) else {
        return;
    };
    // Rules live one level down; a rules.d created later is picked up when it appears.
    let rules_dir = dir.join(crate::rules::load::RULES_DIR);
    if rules_dir.is_dir() {
        watch_rules_dir(&mut ino.watches(), &rules_dir);
    }
    tracing::info!("watching {} for configuration changes", dir.display());
    let watches = ino.watches();
    tokio::spawn(config_events(shared, ino, watches, rules_dir));
}

/// The inotify events that can change the configuration.
fn config_mask() -> inotify::WatchMask {
    use inotify::WatchMask;
    WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::CREATE
        | WatchMask::DELETE
}

/// An inotify instance watching `dir`; `None` (logged) when there is none: changes then
/// need SIGHUP.
fn watch_config_dir(dir: &Path) -> Option<inotify::Inotify> {
    let ino = match inotify::Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("inotify unavailable ({e}): configuration changes need SIGHUP");
            return None;
        }
    };
    if let Err(e) = ino.watches().add(dir, config_mask()) {
        tracing::warn!(
            "cannot watch {} ({e}): configuration changes need SIGHUP",
            dir.display()
        );
        return None;
    }
    Some(ino)
}

/// Adds the rules directory to the watch; a failure is logged (rule changes then need
/// SIGHUP).
fn watch_rules_dir(watches: &mut inotify::Watches, rules_dir: &Path) {
    if let Err(e) = watches.add(rules_dir, config_mask()) {
        tracing::warn!(
            "cannot watch {} ({e}): rule changes need SIGHUP",
            rules_dir.display()
        );
    }
}

/// The watch's task: reads events, watches a rules directory that appears, and reloads
/// after a burst of relevant events. Ends when the descriptor fails.
async fn config_events(
    shared: Arc<Shared>,
    ino: inotify::Inotify,
    mut watches: inotify::Watches,
    rules_dir: std::path::PathBuf,
) {
    let Ok(mut afd) = async_fd(ino, Interest::READABLE) else {
        return;
    };
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok(mut guard) = afd.readable_mut().await else {
            return;
        };
        let seen = match guard.get_inner_mut().read_events(&mut buf) {
            Ok(events) => {
                let seen =
                    Seen::of(events.map(|ev| ev.name.and_then(|n| n.to_str()).unwrap_or("")));
                guard.clear_ready();
                seen
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                guard.clear_ready();
                continue;
            }
            Err(e) => {
                tracing::warn!("inotify: {e}");
                return;
            }
        };
        if seen.new_rules_dir && rules_dir.is_dir() {
            watch_rules_dir(&mut watches, &rules_dir);
        }
        if seen.relevant {
            // Coalesce a burst (write + rename) into one reload.
            tokio::time::sleep(Duration::from_millis(100)).await;
            while afd
                .get_mut()
                .read_events(&mut buf)
                .is_ok_and(|mut e| e.next().is_some())
            {}
            reload_quietly(&shared, "configuration changed").await;
        }
    }
}

/// What a batch of inotify events names.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    /// A configuration file, or the rules directory: worth a reload.
    relevant: bool,
    /// The rules directory itself (created or renamed into place): to be watched.
    new_rules_dir: bool,
}

impl Seen {
    fn of<'a>(names: impl Iterator<Item = &'a str>) -> Seen {
        let mut seen = Seen::default();
        for name in names {
            if name == crate::rules::load::RULES_DIR {
                seen.new_rules_dir = true;
                seen.relevant = true;
            }
            // Editors' temporary files (.swp, ~, .#x) are not configuration.
            if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json") {
                seen.relevant = true;
            }
        }
        seen
    }
}

/// Reloads on SIGHUP.
pub fn sighup(shared: Arc<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reload_quietly(&shared, "SIGHUP").await;
        }
    });
}

/// A netlink datagram socket of `protocol`, bound to the multicast `groups`.
pub fn netlink_socket(
    protocol: rustix::net::Protocol,
    groups: u32,
    nonblocking: bool,
) -> io::Result<OwnedFd> {
    let flags = if nonblocking {
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK
    } else {
        SocketFlags::CLOEXEC
    };
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        flags,
        Some(protocol),
    )?;
    rustix::net::bind(&fd, &SocketAddrNetlink::new(0, groups))?;
    Ok(fd)
}

/// Re-detects CPUs when one goes online or offline (kernel uevents, SUBSYSTEM=cpu).
pub fn hotplug(shared: Arc<Shared>) {
    // Group 1 is the kernel's uevent broadcast.
    let fd = match netlink_socket(netlink::KOBJECT_UEVENT, 1, true) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("no uevent socket ({e}): CPU hotplug needs SIGHUP");
            return;
        }
    };
    tokio::spawn(async move {
        let Ok(afd) = async_fd(fd, Interest::READABLE) else {
            return;
        };
        let mut buf = vec![0u8; 8192];
        loop {
            let Ok(mut guard) = afd.readable().await else {
                return;
            };
            let mut cpu_event = false;
            loop {
                let n = match rustix::net::recv(afd.get_ref(), &mut buf[..], RecvFlags::empty()) {
                    Ok((n, _)) if n > 0 => n,
                    _ => break,
                };
                let msg = &buf[..n];
                let is_cpu = msg.split(|&b| b == 0).any(|f| f == b"SUBSYSTEM=cpu");
                let action = msg
                    .split(|&b| b == 0)
                    .any(|f| f == b"ACTION=online" || f == b"ACTION=offline");
                cpu_event |= is_cpu && action;
            }
            guard.clear_ready();
            if cpu_event {
                tokio::time::sleep(Duration::from_millis(200)).await;
                shared.with_engine(|e| e.redetect()).await;
            }
        }
    });
}

/// Tells systemd (Type=notify) that the daemon is ready, when NOTIFY_SOCKET is set.
pub fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let bytes = path.as_encoded_bytes();
    let r = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(b"READY=1", &a))
    } else {
        sock.send_to(b"READY=1", Path::new(&path))
    };
    if let Err(e) = r {
        tracing::warn!("sd_notify: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::Seen;

    #[test]
    fn configuration_files_and_rules_d_are_relevant_editor_files_are_not() {
        let of = |names: &[&str]| Seen::of(names.iter().copied());
        let none = Seen::default();
        assert_eq!(of(&[".model.yaml.swp", "model.yaml~", ".#model", ""]), none);
        for name in ["model.yaml", "x.yml", "qos_mappings.json"] {
            let want = Seen {
                relevant: true,
                new_rules_dir: false,
            };
            assert_eq!(of(&[".x.swp", name]), want, "{name}");
        }
        let rules = Seen {
            relevant: true,
            new_rules_dir: true,
        };
        assert_eq!(of(&[crate::rules::load::RULES_DIR, "model.yaml"]), rules);
    }
}
