//! The proc connector sockets' classic BPF filters: which events wake the events thread,
//! and which wait for it on the quiet socket (see the parent module's note).

use super::PROC_EVENT_FORK;
use super::{CN_MSG_LEN, NLMSG_HDRLEN, PROC_EVENT_COMM, PROC_EVENT_EXEC, PROC_EVENT_EXIT};
use crate::sys::SockFilter;

/// Classic BPF, the few instructions the filters use.
mod bpf {
    use crate::sys::SockFilter;

    /// A = the 32-bit word at `at` (an absolute load reads big-endian).
    pub fn load(at: usize) -> SockFilter {
        op(0x20, 0, 0, at as u32) // BPF_LD | BPF_W | BPF_ABS
    }
    /// X = A.
    pub fn tax() -> SockFilter {
        op(0x07, 0, 0, 0) // BPF_MISC | BPF_TAX
    }
    /// Skips `yes` instructions if A == `k` (as the kernel wrote it), else `no`.
    pub fn jeq(k: u32, yes: u8, no: u8) -> SockFilter {
        op(0x15, yes, no, u32::from_be_bytes(k.to_ne_bytes())) // BPF_JMP | BPF_JEQ | BPF_K
    }
    /// Skips `yes` instructions if A == X, else `no`.
    pub fn jeq_x(yes: u8, no: u8) -> SockFilter {
        op(0x1d, yes, no, 0) // BPF_JMP | BPF_JEQ | BPF_X
    }
    pub fn drop() -> SockFilter {
        op(0x06, 0, 0, 0) // BPF_RET | BPF_K
    }
    pub fn pass() -> SockFilter {
        op(0x06, 0, 0, u32::MAX)
    }
    fn op(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
        SockFilter { code, jt, jf, k }
    }
}

/// Where the filters look: the datagram starts at the netlink header, `proc_event` follows
/// the cn_msg header; a fork's child_pid and child_tgid are its union's third and fourth.
const WHAT_AT: usize = NLMSG_HDRLEN + CN_MSG_LEN;
const CHILD_PID_AT: usize = WHAT_AT + 16 + 8;
const CHILD_TGID_AT: usize = WHAT_AT + 16 + 12;

/// The waking socket's filter: execs, renames and new threads (a message too short for a
/// load is dropped by the kernel).
pub(super) fn waking_filter() -> Vec<SockFilter> {
    use bpf::*;
    let mut program = vec![
        load(WHAT_AT),
        jeq(PROC_EVENT_EXEC, 7, 0),
        jeq(PROC_EVENT_COMM, 6, 0),
        jeq(PROC_EVENT_FORK, 0, 4),
    ];
    // A new process is the quiet socket's: dropped here, a new thread passed.
    program.extend(if_new_process(0, 1));
    program.extend([drop(), pass()]);
    program
}

/// The quiet socket's filter: exits and new processes.
pub(super) fn quiet_filter() -> Vec<SockFilter> {
    use bpf::*;
    let mut program = vec![
        load(WHAT_AT),
        jeq(PROC_EVENT_EXIT, 6, 0),
        jeq(PROC_EVENT_FORK, 0, 4),
    ];
    program.extend(if_new_process(1, 0));
    program.extend([drop(), pass()]);
    program
}

/// For a fork event: skips `yes` instructions after these four if the child is a new
/// process (child_pid == child_tgid), `no` if it is a new thread.
fn if_new_process(yes: u8, no: u8) -> [SockFilter; 4] {
    use bpf::*;
    [
        load(CHILD_PID_AT),
        tax(),
        load(CHILD_TGID_AT),
        jeq_x(yes, no),
    ]
}
