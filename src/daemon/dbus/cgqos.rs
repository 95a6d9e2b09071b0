//! `org.cgqos.Daemon1`: cgqos's own operations for desktop clients that prefer D-Bus to the
//! socket. Each method is the socket request of the same name (docs/protocol.md) and
//! returns its `result` as JSON text; a failed request is the error `org.cgqos.Daemon1.Error.
//! <Name>` of its code. A move's targets fail one by one, in the result, as on the socket.

use std::sync::Arc;

use serde_json::{Value, json};
use zbus::message::Header;

use super::{BusError, caller, execute};
use crate::daemon::core::Shared;
use crate::daemon::policy::Action;
use crate::daemon::protocol::{Code, MAX_TARGETS, Request, TaskRef};

pub const NAME: &str = "org.cgqos.Daemon1";
pub const PATH: &str = "/org/cgqos/Daemon1";
const INTERFACE: &str = NAME;

pub struct Daemon1 {
    shared: Arc<Shared>,
}

impl Daemon1 {
    pub fn new(shared: &Arc<Shared>) -> Daemon1 {
        Daemon1 {
            shared: shared.clone(),
        }
    }

    async fn run(
        &self,
        connection: &zbus::Connection,
        header: &Header<'_>,
        req: Request,
    ) -> Result<String, BusError> {
        let v = execute(&self.shared, connection, header, INTERFACE, req).await?;
        Ok(v.to_string())
    }
}

/// Ids as a move's targets; more than the socket takes is refused as there.
fn targets(ids: Vec<u32>) -> Result<Vec<TaskRef>, BusError> {
    if ids.len() > MAX_TARGETS {
        return Err(BusError::of(
            INTERFACE,
            Code::TooLarge,
            format!("{} targets; at most {MAX_TARGETS} in one call", ids.len()),
        ));
    }
    Ok(ids
        .into_iter()
        .map(|id| TaskRef {
            id,
            starttime: None,
        })
        .collect())
}

#[zbus::interface(name = "org.cgqos.Daemon1")]
impl Daemon1 {
    /// `{"pong": true, "version": ...}`.
    async fn ping(
        &self,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, BusError> {
        self.run(connection, &header, Request::Ping).await
    }

    /// The tree compared with the plan, as `cgqos status --json`.
    async fn status(
        &self,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, BusError> {
        self.run(connection, &header, Request::Status).await
    }

    /// Where a process and its threads are.
    async fn r#where(
        &self,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
        pid: u32,
    ) -> Result<String, BusError> {
        self.run(connection, &header, Request::Where { pid }).await
    }

    /// Whole processes to a group (a path or an alias); their threads keep their classes.
    #[zbus(name = "Move")]
    async fn move_processes(
        &self,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
        group: String,
        pids: Vec<u32>,
    ) -> Result<String, BusError> {
        let targets = targets(pids)?;
        let req = Request::Move { group, targets };
        self.run(connection, &header, req).await
    }

    /// Threads to a class of their process's group.
    async fn move_threads(
        &self,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
        class: String,
        tids: Vec<u32>,
    ) -> Result<String, BusError> {
        let targets = targets(tids)?;
        let req = Request::MoveThreads { class, targets };
        self.run(connection, &header, req).await
    }

    async fn vm_add(
        &self,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
        name: String,
    ) -> Result<String, BusError> {
        self.run(connection, &header, Request::VmAdd { name }).await
    }

    async fn vm_remove(
        &self,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
        name: String,
    ) -> Result<String, BusError> {
        self.run(connection, &header, Request::VmRemove { name })
            .await
    }

    /// The newest record of who put a task where it is (the thread's own, else its
    /// process's), as `cgqos why` reads it: `{"id", "pid", "why"}`, `why` null if none.
    async fn why(
        &self,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
        id: u32,
    ) -> Result<String, BusError> {
        let caller = caller(connection, &header, &self.shared)
            .await
            .map_err(|e| BusError::of(INTERFACE, Code::Internal, e))?;
        let found = self
            .shared
            .with_engine(move |e| why_of(e, &caller, id))
            .await;
        found
            .map(|v| v.to_string())
            .map_err(|(code, m)| BusError::of(INTERFACE, code, m))
    }
}

fn why_of(
    e: &crate::daemon::engine::Engine,
    caller: &crate::daemon::policy::Caller,
    id: u32,
) -> Result<Value, (Code, String)> {
    e.loaded
        .config
        .authorize(caller, &Action::Read)
        .map_err(|m| (Code::Denied, m))?;
    let gone = |e: crate::procfs::ProcError| (Code::NoSuchProcess, e.to_string());
    let proc = &e.session.proc;
    let start = proc.stat(id).map_err(gone)?.start();
    let pid = proc.tgid(id).map_err(gone)?;
    let state = &e.session.state;
    // A record counts only for the task it was made for (same start time).
    let why = state
        .why
        .get(&id)
        .filter(|w| w.starttime == start)
        .or_else(|| {
            let w = state.why.get(&pid)?;
            let same = proc.stat(pid).is_ok_and(|s| s.start() == w.starttime);
            same.then_some(w)
        });
    Ok(json!({"id": id, "pid": pid, "why": why}))
}
