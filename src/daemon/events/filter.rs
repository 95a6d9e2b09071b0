//! The proc connector sockets' filters: which events wake the events thread, and which wait
//! for it on the quiet socket (see the parent module's note). Classic BPF, and one eBPF
//! program for the waking socket that looks the creator of a new process up in a set.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::PROC_EVENT_FORK;
use super::{CN_MSG_LEN, NLMSG_HDRLEN, PROC_EVENT_COMM, PROC_EVENT_EXEC, PROC_EVENT_EXIT};
use crate::sys::{BpfInsn, SockFilter};

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
/// the cn_msg header; a fork's union is parent_pid (the creating thread), parent_tgid,
/// child_pid, child_tgid.
const WHAT_AT: usize = NLMSG_HDRLEN + CN_MSG_LEN;
const PARENT_PID_AT: usize = WHAT_AT + 16;
const PARENT_TGID_AT: usize = WHAT_AT + 16 + 4;
const CHILD_PID_AT: usize = WHAT_AT + 16 + 8;
const CHILD_TGID_AT: usize = WHAT_AT + 16 + 12;

/// The waking socket's filter when the creators' set cannot be used: execs, renames and
/// every fork (a message too short for a load is dropped by the kernel).
pub(super) fn waking_filter_every_fork() -> Vec<SockFilter> {
    use bpf::*;
    vec![
        load(WHAT_AT),
        jeq(PROC_EVENT_EXEC, 3, 0),
        jeq(PROC_EVENT_COMM, 2, 0),
        jeq(PROC_EVENT_FORK, 1, 0),
        drop(),
        pass(),
    ]
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

/// eBPF, the few instructions the waking program uses, and jumps to its two ends.
mod ebpf {
    use crate::sys::BpfInsn;

    #[derive(Clone, Copy)]
    pub enum To {
        Pass,
        Drop,
    }

    pub const R0: u8 = 0;
    pub const R1: u8 = 1;
    pub const R2: u8 = 2;
    pub const R6: u8 = 6;
    pub const R7: u8 = 7;
    pub const R10: u8 = 10;

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
        BpfInsn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        }
    }

    /// A program being written: its instructions and the jumps still to aim.
    #[derive(Default)]
    pub struct Program {
        insns: Vec<BpfInsn>,
        jumps: Vec<(usize, To)>,
    }

    impl Program {
        /// dst = src (64 bits).
        pub fn mov(&mut self, dst: u8, src: u8) {
            self.insns.push(insn(0xbf, dst, src, 0, 0));
        }
        /// dst += imm (64 bits).
        pub fn add(&mut self, dst: u8, imm: i32) {
            self.insns.push(insn(0x07, dst, 0, 0, imm));
        }
        /// r0 = the 32-bit word at `at` of the packet, as the kernel wrote it (an absolute
        /// load reads big-endian: the byte swap after it undoes that on a little-endian
        /// machine and does nothing on a big-endian one). Needs the context in r6; clobbers
        /// r1 to r5; a packet too short ends the program, dropping it.
        pub fn load(&mut self, at: usize) {
            self.insns.push(insn(0x20, 0, 0, 0, at as i32)); // BPF_LD | BPF_ABS | BPF_W
            self.insns.push(insn(0xdc, R0, 0, 0, 32)); // BPF_ALU | BPF_END | BPF_TO_BE
        }
        /// *(u32 *)(dst + off) = src.
        pub fn store(&mut self, dst: u8, off: i16, src: u8) {
            self.insns.push(insn(0x63, dst, src, off, 0));
        }
        /// dst = the map whose descriptor is `fd` (a two-slot load the kernel resolves).
        pub fn load_map(&mut self, dst: u8, fd: i32) {
            self.insns.push(insn(0x18, dst, 1, 0, fd)); // BPF_PSEUDO_MAP_FD
            self.insns.push(insn(0, 0, 0, 0, 0));
        }
        /// r0 = bpf_map_lookup_elem(r1, r2): the value's address, or 0.
        pub fn lookup(&mut self) {
            self.insns.push(insn(0x85, 0, 0, 0, 1));
        }
        /// Jumps to `to` if dst == imm.
        pub fn jeq(&mut self, dst: u8, imm: u32, to: To) {
            self.jump(0x15, dst, 0, imm as i32, to);
        }
        /// Jumps to `to` if dst != imm.
        pub fn jne(&mut self, dst: u8, imm: u32, to: To) {
            self.jump(0x55, dst, 0, imm as i32, to);
        }
        /// Jumps to `to` if dst != src.
        pub fn jne_reg(&mut self, dst: u8, src: u8, to: To) {
            self.jump(0x5d, dst, src, 0, to);
        }
        fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: To) {
            self.jumps.push((self.insns.len(), to));
            self.insns.push(insn(code, dst, src, 0, imm));
        }
        /// The program: these instructions, then "drop" (return 0) and "pass" (return the
        /// whole packet), with every jump aimed.
        pub fn finish(mut self) -> Vec<BpfInsn> {
            let drop = self.insns.len();
            self.insns.push(insn(0xb7, R0, 0, 0, 0)); // r0 = 0
            self.insns.push(insn(0x95, 0, 0, 0, 0)); // exit
            let pass = self.insns.len();
            self.insns.push(insn(0xb7, R0, 0, 0, -1)); // r0 = all of it
            self.insns.push(insn(0x95, 0, 0, 0, 0));
            for (at, to) in self.jumps {
                let target = match to {
                    To::Pass => pass,
                    To::Drop => drop,
                };
                // Relative to the next instruction; the program is a few dozen long.
                self.insns[at].off = (target - at - 1) as i16;
            }
            self.insns
        }
    }
}

/// The waking socket's eBPF program: execs, renames and new threads, and the new processes
/// whose creating thread or creator's process is in `creators` (a set of task ids,
/// `crate::sys::BpfSet`: the tasks cgqos has a record of, whose children it classifies on
/// their fork event). Every other new process waits on the quiet socket.
pub(super) fn waking_program(creators: BorrowedFd<'_>) -> Vec<BpfInsn> {
    use ebpf::*;
    let map = creators.as_raw_fd();
    let mut p = Program::default();
    p.mov(R6, R1); // the packet, for the loads
    p.load(WHAT_AT);
    p.jeq(R0, PROC_EVENT_EXEC, To::Pass);
    p.jeq(R0, PROC_EVENT_COMM, To::Pass);
    p.jne(R0, PROC_EVENT_FORK, To::Drop);
    p.load(CHILD_PID_AT);
    p.mov(R7, R0);
    p.load(CHILD_TGID_AT);
    p.jne_reg(R0, R7, To::Pass); // a new thread
    // The creating thread and its process, as two keys on the stack.
    p.load(PARENT_PID_AT);
    p.store(R10, -4, R0);
    p.load(PARENT_TGID_AT);
    p.store(R10, -8, R0);
    for key in [-4, -8] {
        p.load_map(R1, map);
        p.mov(R2, R10);
        p.add(R2, key);
        p.lookup();
        p.jne(R0, 0, To::Pass);
    }
    p.finish()
}
