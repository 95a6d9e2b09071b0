//! Serving connections: admit each within the limits, authenticate it, read bounded request
//! lines, hand each request to the engine and log what came of it.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::core::Shared;
use super::policy::Caller;
use super::protocol::{self, Code, MAX_LINE, Reply, Request};
use super::watch;

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
    // Not through the engine: its lock may be held by a long request. The groups count only
    // while the peer pid still runs as the connecting user (it may have exited and its id
    // been reused since connect).
    if let Some(Ok(Some(g))) = pid.map(|p| shared.proc.groups_of_euid(p, cred.uid())) {
        gids.extend(g);
    }
    Ok(Caller {
        uid: cred.uid(),
        gids,
        pid,
        bus: None,
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

pub(super) async fn handle(
    shared: &Arc<Shared>,
    caller: &Caller,
    id: serde_json::Value,
    req: Request,
) -> Reply {
    let c = caller.clone();
    let op = req.op();
    // Shared with the engine call, for the log line after it (summarised only if logged).
    let req = Arc::new(req);
    // A reload reads files: not with the engine held.
    let (reply, watch) = if matches!(*req, Request::Reload) {
        (watch::reload_request(shared, &c, id).await, Vec::new())
    } else {
        // A panic inside is logged by `try_with_engine`; the caller learns no more.
        let reply_id = id.clone();
        let asked = req.clone();
        let call = move |e: &mut super::engine::Engine| e.handle(&c, id, &asked);
        // Moves, pings and `where` are short: on this task. What writes groups or reads many
        // files (status, vm, restrict, reset) goes to the blocking pool.
        let short = matches!(op, "move" | "move_threads" | "ping" | "where");
        let done = if short {
            shared.try_with_engine_here(call).await
        } else {
            shared.try_with_engine(call).await
        };
        done.unwrap_or_else(|_| {
            let r = Reply::err(
                reply_id,
                Code::Internal,
                "internal error (see the daemon's log)",
            );
            (r, Vec::new())
        })
    };
    log_reply(caller, op, &req, &reply);
    for (pid, starttime) in watch {
        watch::exit_watch(shared.clone(), pid, starttime);
    }
    reply
}

/// Logs what came of a request: refusals by the policy and moves applied in part as
/// warnings, failures and changes at info level; reads and moves applied in full at debug
/// level (a line per placement is a formatted write per request). A disabled level builds
/// no summary: tracing evaluates the arguments of enabled events only.
fn log_reply(caller: &Caller, op: &str, req: &Request, reply: &Reply) {
    let (uid, pid) = (caller.uid, caller.pid.unwrap_or(0));
    match (&reply.error, &reply.result) {
        (Some(err), _) if err.code == Code::Denied => {
            tracing::warn!(uid, pid, op, "denied: {}: {}", summarize(req), err.message)
        }
        (Some(err), _) => tracing::info!(
            uid, pid, op, code = ?err.code, "failed: {}: {}", summarize(req), err.message
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
                tracing::debug!(uid, pid, op, "applied: {}", summarize(req));
            } else {
                tracing::warn!(
                    uid,
                    pid,
                    op,
                    "applied in part: {}; not moved: {}",
                    summarize(req),
                    refused.join(", ")
                );
            }
        }
        _ if op == "ping" || op == "status" || op == "where" => {
            tracing::debug!(uid, pid, op, "{}", summarize(req))
        }
        _ => tracing::info!(uid, pid, op, "applied: {}", summarize(req)),
    }
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
        Request::VmAttach { name, pid, .. } => format!("vm attach {name} {pid}"),
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
