//! The socket side: bind safely, authenticate each connection, bound everything, and hand
//! requests to the engine one at a time.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
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
    /// Open connections per non-root uid, and the most one uid may hold
    /// (`limits.max-connections-per-user`).
    pub per_user: Mutex<HashMap<u32, UserConnections>>,
    pub max_per_user: usize,
    /// How long a connection may go without a complete request line, and how long a reply
    /// may wait for the client to read it.
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

/// The socket's directory, opened once and checked on the descriptor: the checks, the bind,
/// the mode and group and the removal at shutdown all work relative to it, so renaming or
/// replacing a component of the path afterwards cannot redirect the daemon.
pub struct SocketDir {
    dir: OwnedFd,
    /// The directory as given, for messages.
    dir_path: PathBuf,
    /// The socket's file name in it.
    name: CString,
    /// (device, inode) of the socket this daemon bound, so that shutdown removes that one
    /// and nothing a later daemon put there.
    bound: Option<(u64, u64)>,
}

fn refuse<T>(msg: String) -> io::Result<T> {
    Err(io::Error::new(io::ErrorKind::PermissionDenied, msg))
}

impl SocketDir {
    /// `/proc/self/fd/<dir>/<name>`: the socket's path through the opened directory, for the
    /// calls that take a path (bind, connect).
    fn via_fd(&self) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()));
        p.push(std::ffi::OsStr::from_bytes(self.name.as_bytes()));
        p
    }

    /// The socket's entry, not following a symlink; `None` if there is none.
    fn entry(&self) -> io::Result<Option<Stat>> {
        match rustix::fs::statat(&self.dir, self.name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn unlink(&self) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(
            &self.dir,
            self.name.as_c_str(),
            AtFlags::empty(),
        )?)
    }

    fn socket_path(&self) -> PathBuf {
        self.dir_path
            .join(std::ffi::OsStr::from_bytes(self.name.as_bytes()))
    }
}

fn is_socket(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Socket
}

/// Creates the listening socket in the checked directory (see `check`).
pub fn bind(
    sd: &mut SocketDir,
    mode: u32,
    gid: Option<u32>,
) -> io::Result<std::os::unix::net::UnixListener> {
    let listener = std::os::unix::net::UnixListener::bind(sd.via_fd())?;
    // Nobody else can create or rename entries in the checked directory, so the name still
    // is the socket just bound.
    let finish = |sd: &mut SocketDir| -> io::Result<()> {
        rustix::fs::chmodat(
            &sd.dir,
            sd.name.as_c_str(),
            Mode::from_bits_retain(mode),
            AtFlags::empty(),
        )
        .map_err(|e| {
            let e = io::Error::from(e);
            io::Error::new(e.kind(), format!("chmod {mode:o}: {e}"))
        })?;
        if let Some(g) = gid {
            // No uid: the owner stays.
            rustix::fs::chownat(
                &sd.dir,
                sd.name.as_c_str(),
                None,
                Some(rustix::fs::Gid::from_raw(g)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| {
                let e = io::Error::from(e);
                io::Error::new(e.kind(), format!("chown to group {g}: {e}"))
            })?;
        }
        sd.bound = sd.entry()?.map(|st| (st.st_dev, st.st_ino));
        listener.set_nonblocking(true)
    };
    if let Err(e) = finish(sd) {
        let _ = sd.unlink();
        return Err(e);
    }
    Ok(listener)
}

/// Opens and checks the socket's directory, before the daemon touches anything: created
/// (mode 0755) if missing; a symlink, a directory owned by anyone but root or the daemon's
/// user, or one writable by group or others is refused (others could replace the socket).
/// An existing entry must be a socket of the daemon's user on which no daemon answers; such a
/// stale socket is removed.
pub fn check(path: &Path) -> io::Result<SocketDir> {
    let euid = rustix::process::geteuid().as_raw();
    let Some(name) = path.file_name() else {
        return refuse(format!("{} does not name a file", path.display()));
    };
    let name = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    let cdir = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(cdir.as_c_str(), flags, Mode::empty()).map_err(io::Error::from)
    {
        Ok(fd) => fd,
        // O_NOFOLLOW on a symlink: ELOOP, or ENOTDIR with O_DIRECTORY.
        Err(_) if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) => {
            return refuse(format!(
                "{} is a symbolic link; give the socket's real directory",
                dir.display()
            ));
        }
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    };
    let st = rustix::fs::fstat(&fd)?;
    if st.st_uid != 0 && st.st_uid != euid {
        return refuse(format!(
            "{} is owned by uid {}, not by root or the daemon (uid {euid})",
            dir.display(),
            st.st_uid
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return refuse(format!(
            "{} is writable by group or others (mode {:o}); the socket's directory must be \
             writable only by its owner",
            dir.display(),
            st.st_mode & 0o7777
        ));
    }
    let sd = SocketDir {
        dir: fd,
        dir_path: dir.to_path_buf(),
        name,
        bound: None,
    };
    if let Some(m) = sd.entry()? {
        if !is_socket(&m) {
            return refuse(format!("{} exists and is not a socket", path.display()));
        }
        if m.st_uid != euid {
            return refuse(format!("{} is owned by uid {}", path.display(), m.st_uid));
        }
        if std::os::unix::net::UnixStream::connect(sd.via_fd()).is_ok() {
            return refuse(format!("another daemon is serving {}", path.display()));
        }
        sd.unlink()?;
    }
    Ok(sd)
}

/// The connections of one uid.
#[derive(Debug, Default)]
pub struct UserConnections {
    open: usize,
    /// A refusal was logged since the last connection of this uid closed: one warning per
    /// episode, not one per attempt.
    warned: bool,
}

/// A connection slot of a non-root uid, given back on drop.
struct UserSlot {
    shared: Arc<Shared>,
    uid: u32,
}

impl UserSlot {
    /// Takes a slot for `uid`, or says how many it holds when it is at its limit.
    fn take(shared: &Arc<Shared>, uid: u32) -> Result<UserSlot, (usize, bool)> {
        let mut map = shared.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let u = map.entry(uid).or_default();
        if u.open >= shared.max_per_user {
            let first = !u.warned;
            u.warned = true;
            return Err((u.open, first));
        }
        u.open += 1;
        Ok(UserSlot {
            shared: shared.clone(),
            uid,
        })
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut map = self
            .shared
            .per_user
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(u) = map.get_mut(&self.uid) {
            u.open -= 1;
            u.warned = false;
            if u.open == 0 {
                map.remove(&self.uid);
            }
        }
    }
}

/// Answers `busy` to a connection that will not be served, and closes it. The request is
/// not read; a fresh connection's send buffer is empty, so the one short line is written at
/// once without waiting (and if not, the connection closes without it).
fn turn_away(stream: UnixStream, message: String) {
    let r = Reply::err(serde_json::Value::Null, Code::Busy, message);
    if let Ok(s) = stream.into_std() {
        let _ = (&s).write(r.to_line().as_bytes());
    }
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
                Ok((stream, _)) => admit(&shared, stream),
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Serves a new connection, or turns it away: a non-root uid at
/// `limits.max-connections-per-user`, or everyone at `limits.max-connections`. The per-user
/// limit is checked first, so a uid over it takes no slot from the others.
fn admit(shared: &Arc<Shared>, stream: UnixStream) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("connection without peer credentials refused: {e}");
            return;
        }
    };
    let uid = cred.uid();
    let slot = if uid == 0 {
        None
    } else {
        match UserSlot::take(shared, uid) {
            Ok(slot) => Some(slot),
            Err((open, first)) => {
                if first {
                    tracing::warn!(
                        uid,
                        pid = cred.pid().unwrap_or(0),
                        "connection refused: uid {uid} already has {open} \
                         (limits.max-connections-per-user); further refusals are not logged \
                         until one closes"
                    );
                }
                turn_away(
                    stream,
                    format!(
                        "too many connections from uid {uid}: {open} open, \
                         limits.max-connections-per-user is {}; close one and try again",
                        shared.max_per_user
                    ),
                );
                return;
            }
        }
    };
    let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
        turn_away(stream, "too many connections; try again".into());
        return;
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        connection(shared, stream).await;
        drop(permit);
        drop(slot);
    });
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
    // Not through the engine: its lock may be held by a long request.
    if let Some(Ok(g)) = pid.map(|p| shared.proc.groups(p)) {
        gids.extend(g);
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
        // A client that sends requests but does not read the replies would otherwise hold
        // its connection forever: the reply must be handed to the kernel within the idle
        // timeout (the socket's buffer full means the client has stopped reading).
        match tokio::time::timeout(shared.idle_timeout, w.write_all(reply.to_line().as_bytes()))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                tracing::warn!(
                    uid = caller.uid,
                    pid = caller.pid.unwrap_or(0),
                    "connection closed: its replies were not read for {} s",
                    shared.idle_timeout.as_secs()
                );
                break;
            }
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

/// Removes the socket on shutdown, if it is still the one this daemon bound.
pub fn unbind(sd: &SocketDir) {
    let ours = sd
        .entry()
        .ok()
        .flatten()
        .is_some_and(|st| is_socket(&st) && sd.bound == Some((st.st_dev, st.st_ino)));
    if ours {
        if let Err(e) = sd.unlink() {
            tracing::warn!("removing {}: {e}", sd.socket_path().display());
        }
    }
}
