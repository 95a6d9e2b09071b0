//! `cgqos daemon`: the placement API over a Unix socket (and, with `--dbus`, on the system
//! bus: `dbus/`).
//!
//! At start it converges the hierarchy (as `setup`) and adopts the state file of earlier
//! runs; then it serves `--socket` until SIGTERM or SIGINT. Requests are authenticated by
//! SO_PEERCRED (D-Bus calls by the bus daemon's credentials of the sender) and checked
//! against the policy in `<config-dir>/daemon.yaml`.

pub mod client;
pub mod conn;
pub mod core;
pub mod dbus;
pub mod engine;
pub mod events;
pub mod policy;
pub mod protocol;
pub mod server;
pub mod watch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use self::core::Shared;
use crate::error::{CliError, CliResult, Exit};
use engine::{Engine, Paths};

pub const DEFAULT_SOCKET: &str = "/run/cgqos/cgqos.sock";
pub const DEFAULT_CONFIG_DIR: &str = "/etc/cgqos";

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(paths: Paths, socket: PathBuf, reset_on_exit: bool, dbus: bool) -> CliResult<()> {
    let config_dir = paths.config_dir.clone();
    // A socket path that is not ours stops the daemon before it touches cgroups; the socket
    // itself appears only once the tree has converged, so a client that connects is served.
    let socket_err = |e: std::io::Error| {
        CliError::new(Exit::BadInput, format!("socket {}: {e}", socket.display()))
    };
    let mut socket_dir = server::check(&socket).map_err(socket_err)?;
    let engine = Engine::start(paths)?;
    let cfg = engine.loaded.config.clone();
    let std_listener =
        server::bind(&mut socket_dir, cfg.socket_mode, cfg.socket_gid).map_err(socket_err)?;
    // One thread serves every connection and watch: requests never contend for the engine
    // among themselves, and one wake-up serves every ready connection. What may take long
    // (status, reload, reset, vm, restrict, exits, a busy engine) runs on the blocking pool.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(Exit::Failure, format!("tokio runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(std_listener)
            .map_err(|e| CliError::new(Exit::Failure, format!("socket: {e}")))?;
        let (exits, exits_rx) = tokio::sync::mpsc::unbounded_channel();
        let proc = engine.session.proc.clone();
        let shared = Arc::new(Shared {
            proc,
            exits,
            engine: Mutex::new(engine),
            connections: Arc::new(Semaphore::new(cfg.max_connections)),
            per_user: Mutex::new(std::collections::HashMap::new()),
            max_per_user: cfg.max_connections_per_user,
            idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
        });
        watch::forget_exits(shared.clone(), exits_rx);
        watch_adopted_exits(&shared).await;
        // Subscribe before the scan, so nothing that starts meanwhile is missed.
        events::listen(shared.clone(), events_rcvbuf());
        shared.with_engine(|e| e.rescan()).await;
        watch::config_watch(shared.clone(), &config_dir);
        watch::sighup(shared.clone());
        watch::hotplug(shared.clone());
        // Held until shutdown; the bus unreachable stops the daemon before it is ready.
        let _bus = match (dbus || cfg.dbus).then(|| dbus::serve(shared.clone())) {
            Some(connecting) => Some(
                connecting
                    .await
                    .inspect_err(|_| server::unbind(&socket_dir))?,
            ),
            None => None,
        };
        tracing::info!("serving {}", socket.display());
        watch::notify_ready();
        conn::accept_loop(shared.clone(), listener, shutdown()).await;
        server::unbind(&socket_dir);
        if reset_on_exit {
            reset_on_exit_now(&shared).await;
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Processes recorded by earlier runs get exit watches too.
async fn watch_adopted_exits(shared: &Arc<Shared>) {
    let adopted: Vec<(u32, u64)> = shared
        .with_engine(|e| {
            let list: Vec<(u32, u64)> = e
                .session
                .state
                .tasks
                .iter()
                .filter(|(_, r)| r.process)
                .map(|(&id, r)| (id, r.starttime.get()))
                .collect();
            e.watched.extend(list.iter().map(|(p, _)| *p));
            list
        })
        .await;
    for (pid, st) in adopted {
        watch::exit_watch(shared.clone(), pid, st);
    }
}

/// `--reset-on-exit`: every recorded change undone as the daemon stops.
async fn reset_on_exit_now(shared: &Arc<Shared>) {
    let r = shared
        .with_engine(|e| {
            let r = e.reset();
            let _ = e.session.save();
            r
        })
        .await;
    tracing::info!(
        "reset on exit: attributes of {} thread(s), cgroups of {} task(s) restored",
        r.attrs_restored,
        r.tasks.restored.len()
    );
}

/// Receive buffer of the process events socket: 4 MiB, or CGQOS_EVENTS_RCVBUF (tests make it
/// tiny to force lost events).
fn events_rcvbuf() -> usize {
    std::env::var("CGQOS_EVENTS_RCVBUF")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4 << 20)
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
