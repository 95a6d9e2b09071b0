//! `org.chromium.ResourceManager`: resourced's `SetProcessState` and `SetThreadState`, as
//! Chrome and ChromeOS's VM services call them, meaning what `states.rs` says.

use std::sync::Arc;

use zbus::message::Header;

use super::{BusError, execute, single_target, states};
use crate::daemon::core::Shared;
use crate::daemon::protocol::{Code, Request, TaskRef};
use crate::layout::{self, Target};
use crate::procfs::{ProcError, ProcessId, ThreadId};

pub const NAME: &str = "org.chromium.ResourceManager";
pub const PATH: &str = "/org/chromium/ResourceManager";
const INTERFACE: &str = NAME;

pub struct ResourceManager {
    shared: Arc<Shared>,
}

impl ResourceManager {
    pub fn new(shared: &Arc<Shared>) -> ResourceManager {
        ResourceManager {
            shared: shared.clone(),
        }
    }

    /// resourced's checks before a thread state: the thread is one of the process's, and a
    /// real-time class is not given to a thread of a background process.
    async fn check_thread(&self, pid: u32, tid: u32, class: &'static str) -> Result<(), BusError> {
        let err = |name: &str, m: String| BusError::new(INTERFACE, name, m);
        match self.shared.proc.tgid(tid) {
            Ok(tgid) if tgid == pid => {}
            Ok(tgid) => {
                return Err(err(
                    "NoSuchThread",
                    format!("thread {tid} is not a thread of process {pid} (it is of {tgid})"),
                ));
            }
            Err(ProcError::Gone(_)) => {
                return Err(err("NoSuchThread", format!("no such thread {tid}")));
            }
            Err(e) => return Err(BusError::of(INTERFACE, Code::Internal, e.to_string())),
        }
        let background = Target::parse(states::PROCESS_GROUPS[1])
            .map(|t| t.path())
            .unwrap_or_default();
        let in_background = self
            .shared
            .with_engine(move |e| {
                let real_time = e
                    .loaded
                    .rules
                    .classes
                    .get(class)
                    .is_some_and(states::real_time);
                let group = || {
                    let cgroup = e
                        .session
                        .proc
                        .cgroup(ProcessId::new(pid), ThreadId::new(pid))
                        .ok()?;
                    let rel = e.session.map.relative(&cgroup)?;
                    layout::classify(&rel).map(|p| p.group)
                };
                real_time && group().is_some_and(|g| g == background)
            })
            .await;
        if in_background {
            return Err(err(
                "RealTimeRefused",
                format!(
                    "class {class} is real-time and process {pid} is in the background: \
                     as resourced, cgqos gives a background process's threads no real-time policy"
                ),
            ));
        }
        Ok(())
    }
}

fn invalid_state(what: &str, value: u8, expected: &str) -> BusError {
    BusError::new(
        INTERFACE,
        "InvalidState",
        format!("unknown {what} {value} (expected {expected})"),
    )
}

#[zbus::interface(name = "org.chromium.ResourceManager")]
impl ResourceManager {
    /// 0 Normal: `chrome/foreground`; 1 Background: `chrome/background`. The process's
    /// threads keep their classes.
    async fn set_process_state(
        &self,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
        process_id: u32,
        process_state: u8,
    ) -> Result<(), BusError> {
        let group = states::process_group(process_state).ok_or_else(|| {
            invalid_state("process state", process_state, "0 Normal or 1 Background")
        })?;
        let req = Request::Move {
            group: group.to_string(),
            targets: vec![TaskRef {
                id: process_id,
                starttime: None,
            }],
        };
        let result = execute(&self.shared, connection, &header, INTERFACE, req).await?;
        single_target(&result).map_err(|(code, m)| BusError::of(INTERFACE, code, m))
    }

    /// The thread goes to the class of the state's name in its process's group.
    async fn set_thread_state(
        &self,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
        process_id: u32,
        thread_id: u32,
        thread_state: u8,
    ) -> Result<(), BusError> {
        let class = states::thread_class(thread_state).ok_or_else(|| {
            invalid_state(
                "thread state",
                thread_state,
                "0 UrgentBursty, 1 Urgent, 2 Balanced, 3 Eco, 4 Utility, 5 Background, \
                 6 UrgentBurstyServer or 7 UrgentBurstyClient",
            )
        })?;
        self.check_thread(process_id, thread_id, class).await?;
        let req = Request::MoveThreads {
            class: class.to_string(),
            targets: vec![TaskRef {
                id: thread_id,
                starttime: None,
            }],
        };
        let result = execute(&self.shared, connection, &header, INTERFACE, req).await?;
        single_target(&result).map_err(|(code, m)| BusError::of(INTERFACE, code, m))
    }
}
