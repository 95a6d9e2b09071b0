//! The kernel's process events connector (netlink `CN_IDX_PROC`): fork, exec, comm and exit
//! of every task, so rules apply to new processes and threads, to execs and to renames.
//!
//! Every event is handled on its own (an exec right after the fork of the same pid is a
//! second, separate classification, not a duplicate to drop). A task that exits before it is
//! handled is a normal event. When the kernel reports lost events (ENOBUFS: the receive
//! buffer overflowed), the daemon rescans /proc, so nothing stays unclassified.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};

use super::core::Shared;
use crate::procfs::{ProcessId, ThreadId};

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

/// Decodes every event in one datagram (one or more netlink messages).
pub fn parse(mut buf: &[u8]) -> Vec<Event> {
    let u32_at = |b: &[u8], o: usize| -> Option<u32> {
        b.get(o..o + 4)
            .map(|s| u32::from_ne_bytes(s.try_into().expect("4 bytes")))
    };
    let mut out = Vec::new();
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
            let what = u32_at(ev, 0);
            let field = |i: usize| u32_at(ev, 16 + 4 * i);
            let e = match what {
                // fork_proc_event: parent_pid, parent_tgid, child_pid, child_tgid.
                Some(PROC_EVENT_FORK) => {
                    field(0)
                        .zip(field(2))
                        .zip(field(3))
                        .map(|((parent, tid), pid)| Event::Fork {
                            tid: ThreadId::new(tid),
                            pid: ProcessId::new(pid),
                            parent: ThreadId::new(parent),
                        })
                }
                Some(PROC_EVENT_EXEC) => field(0).zip(field(1)).map(|(tid, pid)| Event::Exec {
                    tid: ThreadId::new(tid),
                    pid: ProcessId::new(pid),
                }),
                Some(PROC_EVENT_COMM) => field(0).zip(field(1)).map(|(tid, pid)| Event::Comm {
                    tid: ThreadId::new(tid),
                    pid: ProcessId::new(pid),
                }),
                Some(PROC_EVENT_EXIT) => field(0).zip(field(1)).map(|(tid, pid)| Event::Exit {
                    tid: ThreadId::new(tid),
                    pid: ProcessId::new(pid),
                }),
                _ => None,
            };
            out.extend(e);
        }
        // Messages are 4-byte aligned.
        let next = (len + 3) & !3;
        if next >= buf.len() {
            break;
        }
        buf = &buf[next..];
    }
    out
}

/// Opens the connector and subscribes. `rcvbuf` bytes of receive buffer (root may exceed
/// rmem_max with SO_RCVBUFFORCE).
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

/// Listens on a dedicated thread: events are read in batches and applied under one engine
/// lock per batch; ENOBUFS triggers a full rescan. Tasks a batch classified are classified
/// again after each of `RECHECK_AFTER` (`Rechecks`), between batches.
pub fn listen(shared: Arc<Shared>, rcvbuf: usize) {
    let fd = match open(rcvbuf) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(
                "process events connector unavailable ({e}): rules apply only at start and on reload"
            );
            return;
        }
    };
    tracing::info!("listening to process events (receive buffer {rcvbuf} bytes)");
    std::thread::Builder::new()
        .name("cgqos-events".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut rechecks = Rechecks::default();
            loop {
                if !wait_readable(&fd, rechecks.next_due()) {
                    let due = rechecks.take_due(Instant::now());
                    let _ = super::core::run_caught(&shared.engine, |e| e.recheck(&due));
                    continue;
                }
                let Some((events, lost)) = read_batch(&fd, &mut buf) else {
                    return;
                };
                if lost {
                    tracing::warn!(
                        "process events were lost (receive buffer overflow): rescanning /proc"
                    );
                }
                // A panic in one batch is logged (by `run_caught`) and the thread goes on: rules
                // keep applying to what starts next.
                let classified = super::core::run_caught(&shared.engine, |e| {
                    if lost {
                        e.rescan();
                        Vec::new()
                    } else {
                        e.events(&events)
                    }
                });
                if let Ok(tasks) = classified {
                    rechecks.add(Instant::now(), &tasks);
                }
            }
        })
        .expect("spawn the events thread");
}

/// Waits until the socket is readable (true) or `until` has come (false). Without `until`,
/// returns at once: the blocking read waits.
fn wait_readable(fd: &OwnedFd, until: Option<Instant>) -> bool {
    let Some(until) = until else { return true };
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut pfd = [PollFd::new(fd, PollFlags::IN)];
        let wait = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        match rustix::event::poll(&mut pfd, Some(&wait)) {
            Ok(0) => return false,
            Err(Errno::INTR) => continue,
            // Readable, or an error the read will report.
            _ => return true,
        }
    }
}

/// Reads one batch: blocks for the first datagram, then drains what is queued (at most
/// 4096 events). `lost`: the kernel dropped events meanwhile. `None`: the socket failed.
fn read_batch(fd: &OwnedFd, buf: &mut [u8]) -> Option<(Vec<Event>, bool)> {
    let mut events = Vec::new();
    let mut lost = false;
    let mut flags = RecvFlags::empty();
    loop {
        let n = match rustix::net::recv(fd, &mut buf[..], flags) {
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
        events.extend(parse(&buf[..n]));
        flags = RecvFlags::DONTWAIT;
        if events.len() >= 4096 {
            break;
        }
    }
    Some((events, lost))
}

/// Tasks to classify again, each after every delay of `RECHECK_AFTER`. The delays are
/// constant, so each queue stays in time order. Bounded: in a fork storm, tasks beyond
/// `MAX_RECHECKS` per queue are not rechecked (their events classified them already).
#[derive(Default)]
struct Rechecks {
    queues: [VecDeque<(Instant, Recheck)>; RECHECK_AFTER.len()],
}

const MAX_RECHECKS: usize = 16 * 1024;

impl Rechecks {
    fn add(&mut self, now: Instant, tasks: &[Recheck]) {
        for (queue, delay) in self.queues.iter_mut().zip(RECHECK_AFTER) {
            let room = MAX_RECHECKS.saturating_sub(queue.len());
            queue.extend(tasks.iter().take(room).map(|&t| (now + delay, t)));
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
        let mut r = Rechecks::default();
        assert_eq!(r.next_due(), None);
        r.add(t0, &[a, b, a]);
        assert_eq!(r.next_due(), Some(t0 + RECHECK_AFTER[0]));
        assert!(r.take_due(t0).is_empty());
        assert_eq!(r.take_due(t0 + RECHECK_AFTER[0]), vec![b, a], "once each");
        assert_eq!(r.next_due(), Some(t0 + RECHECK_AFTER[1]));
        assert_eq!(r.take_due(t0 + RECHECK_AFTER[1]), vec![b, a]);
        assert_eq!(r.next_due(), None);
        let many = vec![a; MAX_RECHECKS + 10];
        r.add(t0, &many);
        r.add(t0, &many);
        assert!(r.queues.iter().all(|q| q.len() == MAX_RECHECKS));
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
