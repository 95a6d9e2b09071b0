//! The kernel's process events connector (netlink `CN_IDX_PROC`): fork, exec, comm and exit
//! of every task, so rules apply to new processes and threads, to execs and to renames.
//!
//! Every event is handled on its own (an exec right after the fork of the same pid is a
//! second, separate classification, not a duplicate to drop). A task that exits before it is
//! handled is a normal event. When the kernel reports lost events (ENOBUFS: the receive
//! buffer overflowed), the daemon rescans /proc, so nothing stays unclassified.
//!
//! Two sockets, each with a filter that the kernel runs before queueing. The waking one
//! passes execs, renames, new threads, and the new processes of [`Creators`] (the tasks cgqos
//! has a record of, in an eBPF map its eBPF filter looks up), and wakes the thread. The quiet
//! one (classic BPF) passes exits (they only drop records, whose every use checks the task's
//! start time anyway) and every new process (most exec at once, and their exec classifies
//! them); it is read, after the waking one, whenever the thread wakes, and watched too once
//! the waking one has been still for [`QUIET_LAG`]; the events of both are put back in the
//! kernel's order by their timestamps, and a new process that came on both counts once. So a
//! process that starts, execs and exits costs one wake-up when processes start often, not
//! three; a recorded creator's child forked without exec is classified on its fork event;
//! events of no use (uid, gid, sid, ptrace, coredump) cost nothing.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};

use super::core::Shared;
use crate::procfs::{ProcessId, ThreadId};
use crate::sys::SockFilter;

mod filter;
use filter::{quiet_filter, waking_filter_every_fork, waking_program};

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;

const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_COMM: u32 = 0x0000_0200;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;

// What the engine reacts to: defined with it, so the engine needs nothing of this module.
pub use super::engine::Event;
use super::engine::{RECHECK_AFTER, Recheck};

/// How long the quiet socket's events may wait after the last wake-up: then the thread
/// watches that socket too (one timer wake-up after a burst of activity; none when idle).
/// A process forked without an exec by a creator without a record is classified within it.
pub const QUIET_LAG: Duration = Duration::from_millis(16);
/// Rechecks are due on this grid, so that processes started a few ms apart share a wake-up.
const RECHECK_GRID: Duration = Duration::from_millis(16);

/// An event and its kernel timestamp (`proc_event.timestamp_ns`, CLOCK_MONOTONIC): events
/// of the two sockets are put back in order by it.
type Timed = (u64, Event);

/// Decodes every event in one datagram (one or more netlink messages).
pub fn parse(buf: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    parse_timed(buf, &mut out);
    out.into_iter().map(|(_, e)| e).collect()
}

/// [`parse`], keeping each event's timestamp; appends to `out`.
fn parse_timed(mut buf: &[u8], out: &mut Vec<Timed>) {
    let u32_at = |b: &[u8], o: usize| -> Option<u32> {
        b.get(o..o + 4)
            .map(|s| u32::from_ne_bytes(s.try_into().expect("4 bytes")))
    };
    while buf.len() >= NLMSG_HDRLEN {
        let Some(len) = u32_at(buf, 0).map(|l| l as usize) else {
            break;
        };
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        let msg = &buf[NLMSG_HDRLEN..len];
        // cn_msg: id.idx, id.val, seq, ack, len (u16), flags (u16); then proc_event.
        if msg.len() >= CN_MSG_LEN && u32_at(msg, 0) == Some(CN_IDX_PROC) {
            let ev = &msg[CN_MSG_LEN..];
            // proc_event: what, cpu, timestamp_ns (u64), then the union at offset 16.
            let at = ev
                .get(8..16)
                .map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")));
            out.extend(decode(u32_at(ev, 0), |i| u32_at(ev, 16 + 4 * i)).map(|e| (at, e)));
        }
        // Messages are 4-byte aligned.
        let next = (len + 3) & !3;
        if next >= buf.len() {
            break;
        }
        buf = &buf[next..];
    }
}

/// One `proc_event` of type `what`, its union's fields by index.
fn decode(what: Option<u32>, field: impl Fn(usize) -> Option<u32>) -> Option<Event> {
    match what? {
        // fork_proc_event: parent_pid, parent_tgid, child_pid, child_tgid.
        PROC_EVENT_FORK => field(0)
            .zip(field(2))
            .zip(field(3))
            .map(|((parent, tid), pid)| Event::Fork {
                tid: ThreadId::new(tid),
                pid: ProcessId::new(pid),
                parent: ThreadId::new(parent),
            }),
        PROC_EVENT_EXEC => field(0).zip(field(1)).map(|(tid, pid)| Event::Exec {
            tid: ThreadId::new(tid),
            pid: ProcessId::new(pid),
        }),
        PROC_EVENT_COMM => field(0).zip(field(1)).map(|(tid, pid)| Event::Comm {
            tid: ThreadId::new(tid),
            pid: ProcessId::new(pid),
        }),
        PROC_EVENT_EXIT => field(0).zip(field(1)).map(|(tid, pid)| Event::Exit {
            tid: ThreadId::new(tid),
            pid: ProcessId::new(pid),
        }),
        _ => None,
    }
}

/// Opens the connector and subscribes to every event. `rcvbuf` bytes of receive buffer (root
/// may exceed rmem_max with SO_RCVBUFFORCE).
pub fn open(rcvbuf: usize) -> io::Result<OwnedFd> {
    let fd = super::watch::netlink_socket(rustix::net::netlink::CONNECTOR, CN_IDX_PROC, false)?;
    if let Err(e) = rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, rcvbuf) {
        tracing::warn!(
            "process events: cannot set a {rcvbuf}-byte receive buffer ({}); bursts may be lost (and then rescanned)",
            io::Error::from(e)
        );
    }
    // nlmsghdr + cn_msg + PROC_CN_MCAST_LISTEN.
    let total = NLMSG_HDRLEN + CN_MSG_LEN + 4;
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&std::process::id().to_ne_bytes());
    msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&4u16.to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes());
    msg.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    rustix::net::send(&fd, &msg, SendFlags::empty())?;
    Ok(fd)
}

/// [`open`], passing only the events `filter` passes (the others are dropped by the kernel,
/// before they are queued). Events queued before the filter is attached may be of any type:
/// the reader copes.
fn open_filtered(rcvbuf: usize, filter: &[SockFilter]) -> io::Result<OwnedFd> {
    let fd = open(rcvbuf)?;
    crate::sys::attach_socket_filter(fd.as_fd(), filter)?;
    Ok(fd)
}

/// The two sockets: one that wakes the thread, one read when it wakes (module's note).
struct Sockets {
    waking: Arc<OwnedFd>,
    quiet: OwnedFd,
}

impl Sockets {
    /// The sockets, and the set of creators whose new processes wake the thread.
    fn open(rcvbuf: usize) -> io::Result<(Sockets, Creators)> {
        let waking = Arc::new(open(rcvbuf)?);
        let creators = Creators::attach(waking.clone())?;
        let quiet = open_filtered(rcvbuf, &quiet_filter())?;
        Ok((Sockets { waking, quiet }, creators))
    }
}

/// The most creators the kernel's set holds; past that, every fork wakes the thread.
const MAX_CREATORS: u32 = 1 << 16;

/// The creators whose new processes wake the events thread at once: every task cgqos has a
/// record of (its children start with what cgqos gave it, and a rule that matched it
/// matches them on their fork event). Kept in step by the engine at each save
/// (`Session::watch_records`). Another process's new child waits on the quiet socket: it
/// execs at once, or carries the names of a creator no rule matched.
///
/// Without the set (a kernel without eBPF socket filters, or a full set), the waking socket
/// passes every fork: the same order of events, one wake-up more per new process.
pub struct Creators {
    set: Option<crate::sys::BpfSet>,
    /// The ids in `set`: a record that changes (a task moved again) costs no system call.
    ids: std::collections::HashSet<u32>,
    waking: Arc<OwnedFd>,
}

impl Creators {
    /// Attaches the waking socket's filter: the creators' program, or every fork.
    fn attach(waking: Arc<OwnedFd>) -> io::Result<Creators> {
        let set = crate::sys::BpfSet::new(MAX_CREATORS).and_then(|set| {
            let program = crate::sys::load_socket_filter(&waking_program(set.fd()))?;
            crate::sys::attach_socket_bpf(waking.as_fd(), program.as_fd())?;
            Ok(set)
        });
        let mut creators = Creators {
            set: None,
            ids: Default::default(),
            waking,
        };
        match set {
            Ok(set) => {
                tracing::info!(
                    "process events: new processes of tasks cgqos has a record of wake the events thread (an eBPF set of at most {MAX_CREATORS})"
                );
                creators.set = Some(set);
            }
            Err(e) => creators.every_fork(&e)?,
        }
        Ok(creators)
    }

    /// Falls back to waking on every fork (the set failed with `why`).
    fn every_fork(&mut self, why: &io::Error) -> io::Result<()> {
        tracing::info!(
            "process events: no set of creators in the kernel ({why}); every new process wakes the events thread"
        );
        self.set = None;
        self.ids = Default::default();
        crate::sys::attach_socket_filter(self.waking.as_fd(), &waking_filter_every_fork())
    }

    fn change(&mut self, f: impl FnOnce(&crate::sys::BpfSet) -> io::Result<()>) {
        let Some(set) = &self.set else {
            return;
        };
        if let Err(e) = f(set).or_else(|e| self.every_fork(&e)) {
            tracing::error!("process events: cannot filter the waking socket: {e}");
        }
    }
}

impl crate::state::RecordsWatch for Creators {
    fn set(&mut self, id: u32, recorded: bool) {
        if self.set.is_none() {
            return;
        }
        match recorded {
            true if self.ids.insert(id) => self.change(|set| set.insert(id)),
            false if self.ids.remove(&id) => self.change(|set| set.remove(id)),
            _ => {}
        }
    }

    fn clear(&mut self) {
        self.ids.clear();
        self.change(crate::sys::BpfSet::clear);
    }
}

/// Listens on a dedicated thread: events are read in batches and applied under one engine
/// lock per batch, with the rechecks then due; ENOBUFS on either socket triggers a full
/// rescan (which also drops the records of tasks that exited). Tasks a batch classified are
/// classified again after each of `RECHECK_AFTER` (`Rechecks`).
pub fn listen(shared: Arc<Shared>, rcvbuf: usize) {
    let (sockets, creators) = match Sockets::open(rcvbuf) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "process events connector unavailable ({e}): rules apply only at start and on reload"
            );
            return;
        }
    };
    tracing::info!("listening to process events (receive buffer {rcvbuf} bytes)");
    let watch = |e: &mut super::engine::Engine| e.session.watch_records(Box::new(creators));
    if super::core::run_caught(&shared.engine, watch).is_err() {
        return;
    }
    std::thread::Builder::new()
        .name("cgqos-events".into())
        .spawn(move || listen_on(&shared, &sockets))
        .expect("spawn the events thread");
}

/// The events thread's loop; returns when a socket fails.
fn listen_on(shared: &Shared, sockets: &Sockets) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut rechecks = Rechecks::new(Instant::now());
    // The quiet socket is polled (`watch_quiet`) unless the waking one had events less than
    // `QUIET_LAG` ago (until `quiet_due`): a stream of processes then costs one wake-up
    // each, and a lone exit or zygote fork one, as before.
    let mut quiet_due = Instant::now();
    let mut watch_quiet = true;
    let mut both = OnBoth::default();
    loop {
        let lag_left = (!watch_quiet).then_some(quiet_due);
        let until = [rechecks.next_due(), lag_left].into_iter().flatten().min();
        wait_readable(sockets, watch_quiet, until);
        let now = Instant::now();
        let mut events = Vec::new();
        // The waking socket first: every event it gave happened before the quiet socket is
        // read, so the exits and forks that came before it are in this batch too. (Read the
        // other way round, an exit queued between the two reads would reach the engine a
        // batch after the exec of a new task that reused the id, and drop its record.)
        let Some(lost) = read_batch(&sockets.waking, &mut buf, &mut events) else {
            return;
        };
        let woken = !events.is_empty();
        let waking_end = events.len();
        let Some(quiet_lost) = read_batch(&sockets.quiet, &mut buf, &mut events) else {
            return;
        };
        // A new process of a recorded creator came on both sockets: once is enough.
        both.note(&events[..waking_end]);
        both.drop_seen(&mut events, waking_end);
        if woken {
            (watch_quiet, quiet_due) = (false, now + QUIET_LAG);
        } else if now >= quiet_due {
            watch_quiet = true;
        }
        // Stable: a datagram's events keep their order.
        events.sort_by_key(|&(at, _)| at);
        let events: Vec<Event> = events.into_iter().map(|(_, e)| e).collect();
        let due = rechecks.take_due(now);
        if events.is_empty() && due.is_empty() && !lost && !quiet_lost {
            continue;
        }
        if lost || quiet_lost {
            tracing::warn!("process events were lost (receive buffer overflow): rescanning /proc");
        }
        // A panic in one batch is logged (by `run_caught`) and the thread goes on: rules
        // keep applying to what starts next.
        let classified = super::core::run_caught(&shared.engine, |e| {
            if lost || quiet_lost {
                e.rescan();
                return Vec::new();
            }
            let classified = e.events(&events);
            e.recheck(&due);
            classified
        });
        if let Ok(tasks) = classified {
            rechecks.add(Instant::now(), &tasks);
        }
    }
}

/// The new processes the waking socket passed lately (their creators are in the set), which
/// the quiet socket passes too: by their kernel timestamp and id, so that the quiet copy is
/// dropped, in the same batch or a later one.
#[derive(Default)]
struct OnBoth {
    seen: std::collections::HashSet<(u64, ThreadId)>,
    /// `seen`'s entries, oldest first (some may be gone from it already).
    order: VecDeque<(u64, ThreadId)>,
}

/// The quiet copy of a fork is queued within microseconds of the waking one: a few hundred
/// remembered are plenty.
const ON_BOTH_KEPT: usize = 512;

impl OnBoth {
    fn process_fork(&(at, ev): &Timed) -> Option<(u64, ThreadId)> {
        match ev {
            Event::Fork { tid, pid, .. } if tid == pid.main_thread() => Some((at, tid)),
            _ => None,
        }
    }

    /// Remembers the new processes among `events` (from the waking socket).
    fn note(&mut self, events: &[Timed]) {
        for key in events.iter().filter_map(Self::process_fork) {
            if self.order.len() == ON_BOTH_KEPT
                && let Some(old) = self.order.pop_front()
            {
                self.seen.remove(&old);
            }
            self.order.push_back(key);
            self.seen.insert(key);
        }
    }

    /// Drops from `events[from..]` (the quiet socket's) each new process already seen.
    fn drop_seen(&mut self, events: &mut Vec<Timed>, from: usize) {
        if self.seen.is_empty() {
            return;
        }
        let mut i = 0;
        events.retain(|e| {
            i += 1;
            i <= from || Self::process_fork(e).is_none_or(|key| !self.seen.remove(&key))
        });
    }
}

/// Waits until the waking socket (or, with `quiet`, the quiet one) is readable, or `until`
/// has come.
fn wait_readable(sockets: &Sockets, quiet: bool, until: Option<Instant>) {
    loop {
        let left = until.map(|u| u.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return;
        }
        let wait = left.map(|l| Timespec {
            tv_sec: l.as_secs() as i64,
            tv_nsec: i64::from(l.subsec_nanos()),
        });
        let mut pfd = [
            PollFd::new(&sockets.waking, PollFlags::IN),
            PollFd::new(&sockets.quiet, PollFlags::IN),
        ];
        let n = if quiet { 2 } else { 1 };
        match rustix::event::poll(&mut pfd[..n], wait.as_ref()) {
            Err(Errno::INTR) => continue,
            // Readable, timed out, or an error the read will report.
            _ => return,
        }
    }
}

/// Reads what is queued on `fd` without waiting (at most 4096 events), appending to
/// `events`. `Some(true)`: the kernel dropped events meanwhile. `None`: the socket failed.
fn read_batch(fd: &OwnedFd, buf: &mut [u8], events: &mut Vec<Timed>) -> Option<bool> {
    let mut lost = false;
    let start = events.len();
    while events.len() - start < 4096 {
        let n = match rustix::net::recv(fd, &mut buf[..], RecvFlags::DONTWAIT) {
            Ok((n, _)) => n,
            Err(Errno::NOBUFS) => {
                lost = true;
                continue;
            }
            Err(Errno::AGAIN) => break,
            Err(Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(
                    "process events: {}; rules now apply only on reload",
                    io::Error::from(e)
                );
                return None;
            }
        };
        parse_timed(&buf[..n], events);
    }
    Some(lost)
}

/// Tasks to classify again, each after every delay of `RECHECK_AFTER`, rounded up to
/// [`RECHECK_GRID`]. The delays are constant, so each queue stays in time order. Bounded: in
/// a fork storm, tasks beyond `MAX_RECHECKS` per queue are not rechecked (their events
/// classified them already).
struct Rechecks {
    /// The grid's origin.
    start: Instant,
    queues: [VecDeque<(Instant, Recheck)>; RECHECK_AFTER.len()],
}

const MAX_RECHECKS: usize = 16 * 1024;

impl Rechecks {
    fn new(start: Instant) -> Rechecks {
        Rechecks {
            start,
            queues: Default::default(),
        }
    }

    /// `t`, rounded up to the grid.
    fn on_grid(&self, t: Instant) -> Instant {
        let grid = RECHECK_GRID.as_nanos();
        let steps = t
            .saturating_duration_since(self.start)
            .as_nanos()
            .div_ceil(grid);
        self.start + Duration::from_nanos((steps * grid) as u64)
    }

    fn add(&mut self, now: Instant, tasks: &[Recheck]) {
        for (i, delay) in RECHECK_AFTER.into_iter().enumerate() {
            let due = self.on_grid(now + delay);
            let queue = &mut self.queues[i];
            let room = MAX_RECHECKS.saturating_sub(queue.len());
            queue.extend(tasks.iter().take(room).map(|&t| (due, t)));
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter_map(|q| q.front().map(|e| e.0))
            .min()
    }

    /// Removes and returns every task due at `now`, each once.
    fn take_due(&mut self, now: Instant) -> Vec<Recheck> {
        let mut due = Vec::new();
        for q in &mut self.queues {
            while q.front().is_some_and(|e| e.0 <= now) {
                due.extend(q.pop_front().map(|e| e.1));
            }
        }
        due.sort_unstable_by_key(|&(p, t)| (p.get(), t.map(ThreadId::get)));
        due.dedup();
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(what: u32, fields: &[u32]) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend_from_slice(&what.to_ne_bytes());
        ev.extend_from_slice(&0u32.to_ne_bytes());
        ev.extend_from_slice(&0u64.to_ne_bytes());
        for f in fields {
            ev.extend_from_slice(&f.to_ne_bytes());
        }
        let mut cn = Vec::new();
        for v in [CN_IDX_PROC, CN_VAL_PROC, 0, 0] {
            cn.extend_from_slice(&v.to_ne_bytes());
        }
        cn.extend_from_slice(&(ev.len() as u16).to_ne_bytes());
        cn.extend_from_slice(&0u16.to_ne_bytes());
        cn.extend(ev);
        let len = NLMSG_HDRLEN + cn.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend(cn);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn decodes_fork_exec_comm_exit_in_one_datagram() {
        let mut d = message(PROC_EVENT_FORK, &[10, 10, 11, 11]);
        d.extend(message(PROC_EVENT_EXEC, &[11, 11]));
        d.extend(message(PROC_EVENT_COMM, &[12, 11, 0x6c6c6568, 0x6f]));
        d.extend(message(PROC_EVENT_EXIT, &[11, 11, 0, 17]));
        assert_eq!(
            parse(&d),
            vec![
                Event::Fork {
                    tid: ThreadId::new(11),
                    pid: ProcessId::new(11),
                    parent: ThreadId::new(10),
                },
                Event::Exec {
                    tid: ThreadId::new(11),
                    pid: ProcessId::new(11),
                },
                Event::Comm {
                    tid: ThreadId::new(12),
                    pid: ProcessId::new(11),
                },
                Event::Exit {
                    tid: ThreadId::new(11),
                    pid: ProcessId::new(11),
                },
            ]
        );
    }

    #[test]
    fn rechecks_come_due_after_each_delay_once_and_stay_bounded() {
        use crate::procfs::ProcessId;
        let t0 = Instant::now();
        let a = (ProcessId::new(7), Some(ThreadId::new(8)));
        let b = (ProcessId::new(7), None);
        let mut r = Rechecks::new(t0);
        assert_eq!(r.next_due(), None);
        r.add(t0, &[a, b, a]);
        let [first, second] = RECHECK_AFTER.map(|d| r.on_grid(t0 + d));
        assert!(first >= t0 + RECHECK_AFTER[0] && first < t0 + RECHECK_AFTER[0] + RECHECK_GRID);
        assert_eq!(r.next_due(), Some(first));
        assert!(r.take_due(t0 + RECHECK_AFTER[0] / 2).is_empty());
        assert_eq!(r.take_due(first), vec![b, a], "once each");
        assert_eq!(r.next_due(), Some(second));
        assert_eq!(r.take_due(second), vec![b, a]);
        assert_eq!(r.next_due(), None);
        // Tasks classified a few ms apart share their rechecks' wake-ups.
        let later = t0 + Duration::from_millis(3);
        r.add(later, &[b]);
        r.add(later + Duration::from_millis(4), &[a]);
        assert_eq!(
            r.queues[0].front().map(|e| e.0),
            r.queues[0].back().map(|e| e.0)
        );
        r.queues.iter_mut().for_each(VecDeque::clear);
        let many = vec![a; MAX_RECHECKS + 10];
        r.add(t0, &many);
        r.add(t0, &many);
        assert!(r.queues.iter().all(|q| q.len() == MAX_RECHECKS));
    }

    /// Events of the real kernel, read from both sockets after `act` ran (50 ms later).
    fn after(sockets: &Sockets, act: impl FnOnce()) -> (Vec<Event>, Vec<Event>) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut drain = |fd: &OwnedFd| {
            let mut events = Vec::new();
            read_batch(fd, &mut buf, &mut events).expect("read");
            events.into_iter().map(|(_, e)| e).collect::<Vec<_>>()
        };
        // What was queued before (the filters' attachment included) may be of any type.
        drain(&sockets.waking);
        drain(&sockets.quiet);
        act();
        std::thread::sleep(Duration::from_millis(50));
        (drain(&sockets.waking), drain(&sockets.quiet))
    }

    /// The two sockets, or `None` (and a note) when not root: the connector needs it.
    fn sockets_as_root() -> Option<(Sockets, Creators)> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: the proc connector needs root");
            return None;
        }
        Some(Sockets::open(1 << 20).expect("open the connector"))
    }

    /// Runs `true` and returns its pid.
    fn run_true() -> ProcessId {
        let child = std::process::Command::new("true")
            .spawn()
            .expect("run true");
        let pid = ProcessId::new(child.id());
        assert!(child.wait_with_output().expect("wait").status.success());
        pid
    }

    fn process_fork(e: &Event) -> bool {
        matches!(*e, Event::Fork { tid, pid, .. } if tid == pid.main_thread())
    }

    /// Whether `list` has `want` (a fork whatever its creator).
    fn has(list: &[Event], want: Event) -> bool {
        list.iter().any(|e| match (*e, want) {
            (Event::Fork { tid, pid, .. }, Event::Fork { tid: t, pid: p, .. }) => {
                tid == t && pid == p
            }
            (a, b) => a == b,
        })
    }

    fn fork_of(pid: ProcessId) -> Event {
        Event::Fork {
            tid: pid.main_thread(),
            pid,
            parent: ThreadId::new(0),
        }
    }

    /// The filters on the real kernel: each socket gets only its events, those of a child
    /// process and of a thread of this one included; a new process wakes the thread only
    /// when its creating thread or its creator's process is in the set of creators.
    #[test]
    fn filtered_sockets_pass_only_their_events() {
        let Some((sockets, mut creators)) = sockets_as_root() else {
            return;
        };
        assert!(
            creators.set.is_some(),
            "this kernel runs eBPF socket filters, so the set of creators must be in use"
        );
        let me = ProcessId::new(std::process::id());
        let mut child = ProcessId::new(0);
        let mut thread = ThreadId::new(0);
        let (waking, quiet) = after(&sockets, || {
            child = run_true();
            let tid = std::thread::spawn(rustix::thread::gettid)
                .join()
                .expect("join");
            thread = ThreadId::new(tid.as_raw_nonzero().get() as u32);
        });
        for e in &waking {
            assert!(
                !process_fork(e) && !matches!(e, Event::Exit { .. }),
                "{e:?}"
            );
        }
        for e in &quiet {
            assert!(process_fork(e) || matches!(e, Event::Exit { .. }), "{e:?}");
        }
        assert!(has(&quiet, fork_of(child)), "{quiet:?}");
        let exec = Event::Exec {
            tid: child.main_thread(),
            pid: child,
        };
        assert!(has(&waking, exec), "{waking:?}");
        let exit = Event::Exit {
            tid: child.main_thread(),
            pid: child,
        };
        assert!(has(&quiet, exit), "{quiet:?}");
        let thread_fork = Event::Fork {
            tid: thread,
            pid: me,
            parent: ThreadId::new(0),
        };
        assert!(has(&waking, thread_fork), "{waking:?}");
        let thread_exit = Event::Exit {
            tid: thread,
            pid: me,
        };
        assert!(has(&quiet, thread_exit), "{quiet:?}");

        // This process in the set: its new process wakes the thread (and is on the quiet
        // socket too, as every new process is).
        use crate::state::RecordsWatch;
        creators.set(me.get(), true);
        let (waking, quiet) = after(&sockets, || child = run_true());
        assert!(has(&waking, fork_of(child)), "{waking:?}");
        assert!(has(&quiet, fork_of(child)), "{quiet:?}");

        // Only the creating thread in the set (not its process): the same.
        creators.set(me.get(), false);
        let (tx, rx) = std::sync::mpsc::channel();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let spawner = std::thread::spawn(move || {
            tx.send(rustix::thread::gettid().as_raw_nonzero().get() as u32)
                .expect("send");
            wait.recv().expect("go");
            run_true()
        });
        let spawner_tid = rx.recv().expect("the spawner's id");
        creators.set(spawner_tid, true);
        let (waking, _) = after(&sockets, || {
            go.send(()).expect("go");
            child = spawner.join().expect("join");
        });
        assert!(has(&waking, fork_of(child)), "{waking:?}");

        // Out of the set again, and after a clear: quiet only.
        creators.set(me.get(), true);
        creators.clear();
        let (waking, quiet) = after(&sockets, || child = run_true());
        assert!(!has(&waking, fork_of(child)), "{waking:?}");
        assert!(has(&quiet, fork_of(child)), "{quiet:?}");
    }

    /// Without the set, every fork wakes the thread.
    #[test]
    fn without_the_set_every_fork_wakes() {
        let Some((sockets, mut creators)) = sockets_as_root() else {
            return;
        };
        creators
            .every_fork(&io::Error::other("a test"))
            .expect("attach the classic filter");
        use crate::state::RecordsWatch;
        creators.set(1, true); // ignored now
        let mut child = ProcessId::new(0);
        let (waking, _) = after(&sockets, || child = run_true());
        assert!(has(&waking, fork_of(child)), "{waking:?}");
        for e in &waking {
            assert!(!matches!(e, Event::Exit { .. }), "{e:?}");
        }
    }

    /// A set that fills up gives way to waking on every fork, and no new process is missed.
    #[test]
    fn a_full_set_falls_back_to_every_fork() {
        let Some((sockets, mut creators)) = sockets_as_root() else {
            return;
        };
        let small = crate::sys::BpfSet::new(2).expect("a set of two");
        let program = crate::sys::load_socket_filter(&waking_program(small.fd())).expect("load");
        crate::sys::attach_socket_bpf(sockets.waking.as_fd(), program.as_fd()).expect("attach");
        creators.set = Some(small);
        creators.ids.clear();
        use crate::state::RecordsWatch;
        creators.set(1, true);
        creators.set(2, true);
        assert!(creators.set.is_some());
        creators.set(3, true); // E2BIG
        assert!(creators.set.is_none() && creators.ids.is_empty());
        let mut child = ProcessId::new(0);
        let (waking, _) = after(&sockets, || child = run_true());
        assert!(has(&waking, fork_of(child)), "{waking:?}");
    }

    /// A new process passed by both sockets reaches the engine once, whichever batch the
    /// quiet copy comes in.
    #[test]
    fn a_fork_on_both_sockets_is_handled_once() {
        let fork = |t: u64, pid: u32| {
            let p = ProcessId::new(pid);
            (t, fork_of(p))
        };
        let exec = (
            7,
            Event::Exec {
                tid: ThreadId::new(11),
                pid: ProcessId::new(11),
            },
        );
        let mut both = OnBoth::default();
        // Same batch: waking [fork 11, exec 11], quiet [fork 11, fork 12].
        let mut events = vec![fork(5, 11), exec, fork(5, 11), fork(6, 12)];
        both.note(&events[..2]);
        both.drop_seen(&mut events, 2);
        assert_eq!(events, vec![fork(5, 11), exec, fork(6, 12)]);
        // The quiet copy in the next batch.
        both.note(&[fork(9, 13)]);
        let mut events = vec![fork(9, 13)];
        both.drop_seen(&mut events, 0);
        assert!(events.is_empty());
        // A pid reused later is another fork (another timestamp).
        let mut events = vec![fork(20, 13)];
        both.drop_seen(&mut events, 0);
        assert_eq!(events, vec![fork(20, 13)]);
    }

    #[test]
    fn truncated_or_garbage_datagrams_decode_to_nothing() {
        let d = message(PROC_EVENT_FORK, &[10, 10, 11, 11]);
        for cut in 0..d.len() {
            let _ = parse(&d[..cut]);
        }
        assert!(parse(&[0xff; 64]).is_empty());
    }
}
