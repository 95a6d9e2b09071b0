//! The socket side: bind safely, authenticate each connection, bound everything, and hand
//! requests to the engine one at a time.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::engine::Engine;
use super::policy::Caller;
use super::protocol::{self, Code, MAX_LINE, Reply, Request};
use super::watch;

pub struct Shared {
    pub engine: Mutex<Engine>,
    pub connections: Arc<Semaphore>,
    pub idle_timeout: Duration,
    /// For checks that need /proc but not the engine.
    pub proc: crate::procfs::Procfs,
    /// Exited processes, forgotten in batches by one task (see `watch::forget_exits`).
    pub exits: tokio::sync::mpsc::UnboundedSender<u32>,
}

impl Shared {
    /// Runs `f` on the engine off the async workers (file I/O and fsync inside).
    pub async fn with_engine<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Engine) -> T + Send + 'static,
    ) -> T {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut e = me.engine.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut e)
        })
        .await
        .expect("engine task does not panic")
    }
}

/// Creates the listening socket, refusing paths that are not ours: a parent directory owned
/// by someone else or writable by others, a non-socket, a socket owned by another user, or a
/// socket another daemon still answers on.
pub fn bind(
    path: &Path,
    mode: u32,
    gid: Option<u32>,
) -> io::Result<std::os::unix::net::UnixListener> {
    check(path)?;
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    let finish = || -> io::Result<()> {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| io::Error::new(e.kind(), format!("chmod {mode:o}: {e}")))?;
        if let Some(g) = gid {
            std::os::unix::fs::chown(path, None, Some(g))
                .map_err(|e| io::Error::new(e.kind(), format!("chown to group {g}: {e}")))?;
        }
        listener.set_nonblocking(true)
    };
    if let Err(e) = finish() {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(listener)
}

/// The checks of `bind`, without binding; removes a stale socket of ours.
pub fn check(path: &Path) -> io::Result<()> {
    let refuse = |msg: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, msg));
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let dm = fs::metadata(dir)?;
    if dm.uid() != euid {
        return refuse(format!(
            "{} is owned by uid {}, not by the daemon (uid {euid})",
            dir.display(),
            dm.uid()
        ));
    }
    if dm.mode() & 0o022 != 0 {
        return refuse(format!(
            "{} is writable by group or others (mode {:o})",
            dir.display(),
            dm.mode() & 0o777
        ));
    }
    match fs::symlink_metadata(path) {
        Ok(m) => {
            if !m.file_type().is_socket() {
                return refuse(format!("{} exists and is not a socket", path.display()));
            }
            if m.uid() != euid {
                return refuse(format!("{} is owned by uid {}", path.display(), m.uid()));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return refuse(format!("another daemon is serving {}", path.display()));
            }
            fs::remove_file(path)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Accepts connections until `shutdown` resolves.
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    match shared.connections.clone().try_acquire_owned() {
                        Ok(permit) => {
                            tokio::spawn(async move {
                                connection(shared, stream).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            tokio::spawn(async move {
                                let mut s = stream;
                                let r = Reply::err(serde_json::Value::Null, Code::Busy, "too many connections; try again");
                                let _ = s.write_all(r.to_line().as_bytes()).await;
                            });
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

enum Line {
    Read,
    TooLong,
    Eof,
}

/// Reads one line into `buf` (without the newline), never holding more than MAX_LINE bytes;
/// the rest of an oversized line is discarded.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<Line> {
    let mut too_long = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if buf.is_empty() {
                Line::Eof
            } else {
                Line::Read
            });
        }
        let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], Some(i + 1)),
            None => (avail, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > MAX_LINE {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(avail.len());
        r.consume(used);
        if done.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Read });
        }
    }
}

fn caller_of(stream: &UnixStream, shared: &Shared) -> io::Result<Caller> {
    let cred = stream.peer_cred()?;
    let pid = cred.pid().map(|p| p as u32);
    let mut gids = vec![cred.gid()];
    if let Some(p) = pid {
        let proc = shared
            .engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .session
            .proc
            .clone();
        if let Ok(g) = proc.groups(p) {
            gids.extend(g);
        }
    }
    Ok(Caller {
        uid: cred.uid(),
        gids,
        pid,
    })
}

async fn connection(shared: Arc<Shared>, stream: UnixStream) {
    let caller = match caller_of(&stream, &shared) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("connection without peer credentials refused: {e}");
            return;
        }
    };
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        let line = match tokio::time::timeout(shared.idle_timeout, read_line(&mut reader, &mut buf))
            .await
        {
            Err(_) => {
                tracing::debug!(uid = caller.uid, "idle connection closed");
                break;
            }
            Ok(Err(_)) | Ok(Ok(Line::Eof)) => break,
            Ok(Ok(l)) => l,
        };
        let reply = match line {
            Line::TooLong => Reply::err(
                serde_json::Value::Null,
                Code::TooLarge,
                format!("request longer than {MAX_LINE} bytes"),
            ),
            _ if buf.iter().all(u8::is_ascii_whitespace) => continue,
            _ => match protocol::parse(&buf) {
                Err(reply) => reply,
                Ok((id, req)) => handle(&shared, &caller, id, req).await,
            },
        };
        if let Some(e) = &reply.error {
            if e.code == Code::BadRequest
                || e.code == Code::TooLarge
                || e.code == Code::UnsupportedVersion
            {
                tracing::warn!(uid = caller.uid, pid = caller.pid.unwrap_or(0), code = ?e.code, "refused request: {}", e.message);
            }
        }
        if w.write_all(reply.to_line().as_bytes()).await.is_err() {
            break;
        }
    }
}

async fn handle(
    shared: &Arc<Shared>,
    caller: &Caller,
    id: serde_json::Value,
    req: Request,
) -> Reply {
    let c = caller.clone();
    let op = req.op();
    let summary = summarize(&req);
    // A reload reads files: not with the engine held.
    let (reply, watch) = if matches!(req, Request::Reload) {
        (watch::reload_request(shared, &c, id).await, Vec::new())
    } else {
        shared.with_engine(move |e| e.handle(&c, id, &req)).await
    };
    match (&reply.error, &reply.result) {
        (Some(err), _) if err.code == Code::Denied => tracing::warn!(
            uid = caller.uid,
            pid = caller.pid.unwrap_or(0),
            op,
            "denied: {summary}: {}",
            err.message
        ),
        (Some(err), _) => tracing::info!(
            uid = caller.uid, pid = caller.pid.unwrap_or(0), op, code = ?err.code, "failed: {summary}: {}", err.message
        ),
        (None, Some(result)) if op == "move" || op == "move_threads" => {
            let refused: Vec<String> = result
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["ok"] == false)
                .map(|m| format!("{} ({})", m["id"], m["error"].as_str().unwrap_or("")))
                .collect();
            if refused.is_empty() {
                tracing::info!(
                    uid = caller.uid,
                    pid = caller.pid.unwrap_or(0),
                    op,
                    "applied: {summary}"
                );
            } else {
                tracing::warn!(
                    uid = caller.uid,
                    pid = caller.pid.unwrap_or(0),
                    op,
                    "applied in part: {summary}; not moved: {}",
                    refused.join(", ")
                );
            }
        }
        _ if op == "ping" || op == "status" || op == "where" => {
            tracing::debug!(
                uid = caller.uid,
                pid = caller.pid.unwrap_or(0),
                op,
                "{summary}"
            )
        }
        _ => tracing::info!(
            uid = caller.uid,
            pid = caller.pid.unwrap_or(0),
            op,
            "applied: {summary}"
        ),
    }
    for (pid, starttime) in watch {
        watch::exit_watch(shared.clone(), pid, starttime);
    }
    reply
}

fn summarize(req: &Request) -> String {
    let ids = |t: &[protocol::TaskRef]| {
        t.iter()
            .map(|t| t.id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    match req {
        Request::Move { group, targets } => format!("{} -> {group}", ids(targets)),
        Request::MoveThreads { class, targets } => format!("threads {} -> {class}", ids(targets)),
        Request::Where { pid } => format!("where {pid}"),
        Request::VmAdd { name } => format!("vm add {name}"),
        Request::VmRemove { name } => format!("vm remove {name}"),
        Request::Restrict {
            group,
            state,
            quota_percent,
        } => {
            format!("restrict {group} {state:?} quota {quota_percent:?}")
        }
        other => other.op().to_string(),
    }
}

/// Removes the socket on shutdown (only if it is still ours).
pub fn unbind(path: &PathBuf) {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = fs::remove_file(path);
    }
}
