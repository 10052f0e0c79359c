//! The TUN devices' queue-steering program: the core's steering rule ([`crate::steer::Steering`]) as a
//! few dozen eBPF instructions, loaded with `bpf(2)` and attached with `TUNSETSTEERINGEBPF`.
//!
//! Owns: a tiny eBPF assembler (the instructions this program needs, forward jumps to labels), the
//! program for each side ([`program`]), loading it ([`Program::load`]), attaching it to a multi-queue
//! TUN device ([`attach`]) and running it in the kernel on a test packet ([`Program::test_run`], which
//! is how the tests check it against the core rule). Must not: decide anything the core's rule does
//! not (the program is generated from [`Steering`] and checked against [`Steering::owner`]), or touch a
//! device other than the one it is given.
//!
//! Why eBPF: with `IFF_MULTI_QUEUE` the kernel picks the queue each packet is read from by its own flow
//! hash, and moves a flow to the queue the last packet of it was *written* on ("tx follows rx",
//! `tun_automq_select_queue`). Neither knows which engine holds the flow, and a flow that moves between
//! queues while packets of it wait in the old one is reordered (what made a Rust TUN gateway go back to
//! one thread). A steering program replaces that choice whole (`tun_select_queue` calls it instead):
//! the queue is a pure function of fields every packet of a flow carries, the same one the engines are
//! built around, so every packet of a flow is read by the worker that owns it, always from the same
//! queue. The kernel takes the program's return value modulo the number of queues.
//!
//! The program, instruction by instruction (`r6` holds the packet; `LD_ABS`/`LD_IND` read bytes at a
//! fixed or register-relative offset from the IPv4 header, big-endian, and end the program with 0 when
//! the packet is too short, which the core rule mirrors):
//!
//! ```text
//!     r6 = r1                        the packet (socket buffer), as LD_ABS/LD_IND need
//!     r0 = byte[0]; r7 = r0 >> 4     version
//!     LAN side: if r7 == 6 goto v6   IPv6 (NAT64)
//!     if r7 != 4 goto ret0           not IPv4: queue 0
//!     r7 = (r0 & 0xf) << 2           header length in bytes
//!     if r7 < 20 goto ret0
//!     r8 = byte[9]                   protocol
//!     r9 = word[12]                  source address
//! LAN side:
//!     r0 = word[16]; if r0 is in no range of the pool's addresses goto not_public
//!     r0 = half[6] & 0x3fff; if r0 != 0 goto fragment      hairpinned fragment
//!     if r8 is not 6 or 17 goto host_src
//!     r0 = half[r7 + 2]              destination port
//!     for each forward: if r8 == proto && r0 == port goto host_src     opens a hairpin flow
//!     goto slice                     a hairpin flow's reply: where its public port is
//! not_public:
//!     if r8 != 1 goto host_src
//!     r0 = byte[r7]; if r0 is not an ICMP error type (3,4,5,11,12) goto host_src
//!     r0 = word[r7 + 24]; goto host  the quoted datagram's destination: the inside host reported on
//! host_src:
//!     r0 = r9
//!     goto host
//! v6:                                an IPv6 host's /64 (steer::host6_worker)
//!     if byte[6] == 58 && byte[40] <= 127: r0 = word[72] ^ word[76]; goto hash   ICMPv6 error:
//!                                    the /64 its quoted packet was sent to
//!     r0 = word[8] ^ word[12]        the source's /64
//! host (r0 = an inside address):     deterministic NAT only: for each inside prefix, if r0 is in it:
//!     r0 = (r0 - FIRST + START) / ADDRS % N; exit     its block's worker (steer::DetRule)
//!     goto hash
//! hash:                              host_worker: ((r0 * 0x9E3779B1 mod 2^32) >> 16) * N >> 16
//!     r0 *= 0x9E3779B1; r0 >>= 16; r0 *= N; r0 >>= 16; exit
//! WAN side:
//!     r0 = half[6] & 0x3fff; if r0 != 0 goto fragment
//!     if r8 is 6 or 17: r0 = half[r7 + 2]; goto by_port     destination port
//!     if r8 != 1 goto ret0
//!     r0 = byte[r7]
//!     if r0 is 0 or 8: r0 = half[r7 + 4]; goto by_port      echo identifier
//!     if r0 is not an ICMP error type goto ret0
//!     r7 += 8                        the quoted datagram
//!     r9 = (byte[r7] & 0xf) << 2; r8 = byte[r7 + 9]; r7 += r9
//!     if r8 is 6 or 17: r0 = half[r7]; goto by_port         its source port: our public port
//!     if r8 == 1: r0 = half[r7 + 4]; goto by_port           its echo identifier
//!     goto ret0
//! by_port (r8 = protocol, r0 = port):
//!     for each forward: if r8 == proto && r0 == port: r0 = its host's worker; exit
//! slice (r0 = port):                 deterministic NAT: in the layout's blocks, (r0 - LO) / SIZE % N
//!                                    slice_of
//!     if r0 < LO or r0 > HI: r0 %= N; exit
//!     r0 -= LO; r0 *= N; r0 /= HI - LO + 1; exit
//! fragment:                          frag_worker: hash of source ^ destination ^ identification
//!     r7 = r9 ^ word[16]; r0 = half[4] ^ r7; goto hash
//! ret0:
//!     r0 = 0; exit
//! ```
//!
//! All arithmetic on packet values is 32-bit (`BPF_ALU`, `BPF_JMP32`), as in the core rule.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::flow::Side;
use crate::steer::{Steering, HASH_MULTIPLIER, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

/// `linux/bpf.h` opcodes (only what the program uses).
mod op {
    pub const LD: u8 = 0x00;
    pub const ALU: u8 = 0x04;
    pub const JMP: u8 = 0x05;
    pub const JMP32: u8 = 0x06;
    pub const ALU64: u8 = 0x07;
    pub const W: u8 = 0x00;
    pub const H: u8 = 0x08;
    pub const B: u8 = 0x10;
    pub const ABS: u8 = 0x20;
    pub const IND: u8 = 0x40;
    pub const K: u8 = 0x00;
    pub const X: u8 = 0x08;
    pub const ADD: u8 = 0x00;
    pub const SUB: u8 = 0x10;
    pub const MUL: u8 = 0x20;
    pub const DIV: u8 = 0x30;
    pub const AND: u8 = 0x50;
    pub const LSH: u8 = 0x60;
    pub const RSH: u8 = 0x70;
    pub const MOD: u8 = 0x90;
    pub const XOR: u8 = 0xa0;
    pub const MOV: u8 = 0xb0;
    pub const JA: u8 = 0x00;
    pub const JEQ: u8 = 0x10;
    pub const JGT: u8 = 0x20;
    pub const JNE: u8 = 0x50;
    pub const JLT: u8 = 0xa0;
    pub const EXIT: u8 = 0x90;
}

/// One eBPF instruction (`struct bpf_insn`, 8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    /// dst register in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

/// A register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct R(u8);
const R0: R = R(0);
const R1: R = R(1);
const R6: R = R(6);
const R7: R = R(7);
const R8: R = R(8);
const R9: R = R(9);

/// A jump target, resolved when the program is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Label(usize);

/// Builds a program with forward jumps to labels (the verifier refuses backward ones anyway).
#[derive(Debug, Default)]
struct Asm {
    insns: Vec<Insn>,
    /// Per label, where it was placed.
    placed: Vec<Option<usize>>,
    /// Instructions whose offset is a label's.
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    fn emit(&mut self, code: u8, dst: R, src: R, off: i16, imm: i32) {
        self.insns.push(Insn { code, regs: dst.0 | (src.0 << 4), off, imm });
    }
    fn label(&mut self) -> Label {
        self.placed.push(None);
        Label(self.placed.len() - 1)
    }
    fn place(&mut self, l: Label) {
        self.placed[l.0] = Some(self.insns.len());
    }
    /// `r0 = *(size *)(packet + off)`, big-endian.
    fn ld_abs(&mut self, size: u8, off: i32) {
        self.emit(op::LD | op::ABS | size, R0, R0, 0, off);
    }
    /// `r0 = *(size *)(packet + src + off)`, big-endian.
    fn ld_ind(&mut self, size: u8, src: R, off: i32) {
        self.emit(op::LD | op::IND | size, R0, src, 0, off);
    }
    fn alu32_k(&mut self, o: u8, dst: R, imm: i32) {
        self.emit(op::ALU | o | op::K, dst, R0, 0, imm);
    }
    fn alu32_x(&mut self, o: u8, dst: R, src: R) {
        self.emit(op::ALU | o | op::X, dst, src, 0, 0);
    }
    fn mov64(&mut self, dst: R, src: R) {
        self.emit(op::ALU64 | op::MOV | op::X, dst, src, 0, 0);
    }
    fn add64_k(&mut self, dst: R, imm: i32) {
        self.emit(op::ALU64 | op::ADD | op::K, dst, R0, 0, imm);
    }
    fn add64_x(&mut self, dst: R, src: R) {
        self.emit(op::ALU64 | op::ADD | op::X, dst, src, 0, 0);
    }
    /// `if (u32)dst <o> imm goto l`.
    fn jmp32_k(&mut self, o: u8, dst: R, imm: u32, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.emit(op::JMP32 | o | op::K, dst, R0, 0, imm as i32);
    }
    fn ja(&mut self, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.emit(op::JMP | op::JA, R0, R0, 0, 0);
    }
    fn ret_k(&mut self, v: u32) {
        self.alu32_k(op::MOV, R0, v as i32);
        self.exit();
    }
    fn exit(&mut self) {
        self.emit(op::JMP | op::EXIT, R0, R0, 0, 0);
    }
    fn finish(mut self) -> Vec<Insn> {
        for &(at, l) in &self.fixups {
            let to = self.placed[l.0].expect("every label used is placed");
            debug_assert!(to > at, "forward jumps only");
            self.insns[at].off = i16::try_from(to - at - 1).expect("program shorter than 32K instructions");
        }
        self.insns
    }
}

/// Jumps to `yes` if (u32)`r` is one of `values`.
fn jump_if_any(a: &mut Asm, r: R, values: &[u32], yes: Label) {
    for &v in values {
        a.jmp32_k(op::JEQ, r, v, yes);
    }
}

const ICMP_ERRORS: [u32; 5] = [3, 4, 5, 11, 12];

/// Jumps on the protocol in r8: TCP or UDP to `ports`, ICMP to `icmp`, anything else to `other`.
fn by_proto(a: &mut Asm, ports: Label, icmp: Label, other: Label) {
    jump_if_any(a, R8, &[u32::from(PROTO_TCP), u32::from(PROTO_UDP)], ports);
    a.jmp32_k(op::JEQ, R8, u32::from(PROTO_ICMP), icmp);
    a.ja(other);
}

/// The steering program of the device on `side` (see the module header for its listing).
pub fn program(s: &Steering, side: Side) -> Vec<Insn> {
    let n = u32::from(s.workers());
    let mut a = Asm::default();
    let (ret0, hash, slice, fragment, host) = (a.label(), a.label(), a.label(), a.label(), a.label());
    a.mov64(R6, R1);
    a.ld_abs(op::B, 0);
    a.mov64(R7, R0);
    a.alu32_k(op::RSH, R7, 4);
    let v6 = a.label();
    if side == Side::Inside {
        a.jmp32_k(op::JEQ, R7, 6, v6);
    }
    a.jmp32_k(op::JNE, R7, 4, ret0);
    a.alu32_k(op::AND, R0, 0xf);
    a.alu32_k(op::LSH, R0, 2);
    a.mov64(R7, R0);
    a.jmp32_k(op::JLT, R7, 20, ret0);
    a.ld_abs(op::B, 9);
    a.mov64(R8, R0);
    a.ld_abs(op::W, 12);
    a.mov64(R9, R0);
    match side {
        Side::Inside => {
            let (not_public, host_src, ports, public) = (a.label(), a.label(), a.label(), a.label());
            a.ld_abs(op::W, 16);
            // One of the pool's addresses (ranges of them: a --public-pool prefix is two comparisons).
            for &(lo, hi) in s.pool() {
                if lo == hi {
                    a.jmp32_k(op::JEQ, R0, lo, public);
                } else {
                    let next = a.label();
                    a.jmp32_k(op::JLT, R0, lo, next);
                    a.jmp32_k(op::JGT, R0, hi, next);
                    a.ja(public);
                    a.place(next);
                }
            }
            a.ja(not_public);
            a.place(public);
            a.ld_abs(op::H, 6);
            a.alu32_k(op::AND, R0, 0x3fff);
            a.jmp32_k(op::JNE, R0, 0, fragment);
            jump_if_any(&mut a, R8, &[u32::from(PROTO_TCP), u32::from(PROTO_UDP)], ports);
            a.ja(host_src);
            a.place(ports);
            a.ld_ind(op::H, R7, 2);
            for f in s.forwards() {
                let next = a.label();
                a.jmp32_k(op::JNE, R8, u32::from(f.proto), next);
                a.jmp32_k(op::JEQ, R0, u32::from(f.public_port), host_src);
                a.place(next);
            }
            a.ja(slice);
            a.place(not_public);
            a.jmp32_k(op::JNE, R8, u32::from(PROTO_ICMP), host_src);
            a.ld_ind(op::B, R7, 0);
            let error = a.label();
            jump_if_any(&mut a, R0, &ICMP_ERRORS, error);
            a.ja(host_src);
            a.place(error);
            a.ld_ind(op::W, R7, 8 + 16);
            a.ja(host);
            a.place(host_src);
            a.mov64(R0, R9);
            a.ja(host);
            // IPv6 (NAT64): the /64 of the source, or of an ICMPv6 error's quoted destination.
            let (v6_src, v6_hash) = (a.label(), a.label());
            a.place(v6);
            a.ld_abs(op::B, 6);
            a.jmp32_k(op::JNE, R0, u32::from(PROTO_ICMPV6), v6_src);
            a.ld_abs(op::B, 40);
            a.jmp32_k(op::JGT, R0, 127, v6_src);
            a.ld_abs(op::W, 72);
            a.mov64(R9, R0);
            a.ld_abs(op::W, 76);
            a.ja(v6_hash);
            a.place(v6_src);
            a.ld_abs(op::W, 8);
            a.mov64(R9, R0);
            a.ld_abs(op::W, 12);
            a.place(v6_hash);
            a.alu32_x(op::XOR, R0, R9);
            a.ja(hash);
        }
        Side::Outside => {
            a.place(v6); // never jumped to: IPv6 goes to worker 0 on the WAN side
            let (by_port, ports, icmp, echo, error, quoted_ports, quoted_echo) =
                (a.label(), a.label(), a.label(), a.label(), a.label(), a.label(), a.label());
            a.ld_abs(op::H, 6);
            a.alu32_k(op::AND, R0, 0x3fff);
            a.jmp32_k(op::JNE, R0, 0, fragment);
            by_proto(&mut a, ports, icmp, ret0);
            a.place(ports);
            a.ld_ind(op::H, R7, 2);
            a.ja(by_port);
            a.place(icmp);
            a.ld_ind(op::B, R7, 0);
            jump_if_any(&mut a, R0, &[0, 8], echo);
            jump_if_any(&mut a, R0, &ICMP_ERRORS, error);
            a.ja(ret0);
            a.place(echo);
            a.ld_ind(op::H, R7, 4);
            a.ja(by_port);
            a.place(error);
            a.add64_k(R7, 8);
            a.ld_ind(op::B, R7, 0);
            a.alu32_k(op::AND, R0, 0xf);
            a.alu32_k(op::LSH, R0, 2);
            a.mov64(R9, R0);
            a.ld_ind(op::B, R7, 9);
            a.mov64(R8, R0);
            a.add64_x(R7, R9);
            by_proto(&mut a, quoted_ports, quoted_echo, ret0);
            a.place(quoted_ports);
            a.ld_ind(op::H, R7, 0);
            a.ja(by_port);
            a.place(quoted_echo);
            a.ld_ind(op::H, R7, 4);
            a.place(by_port);
            for f in s.forwards() {
                let next = a.label();
                a.jmp32_k(op::JNE, R8, u32::from(f.proto), next);
                a.jmp32_k(op::JNE, R0, u32::from(f.public_port), next);
                a.ret_k(u32::from(f.worker));
                a.place(next);
            }
            a.ja(slice);
        }
    }
    // slice_of: the port range cut into N contiguous slices; outside it, port % N. Deterministic
    // NAT: a port of the layout's blocks is its block's worker's.
    let (lo, hi) = (u32::from(*s.range().start()), u32::from(*s.range().end()));
    let outside = a.label();
    a.place(slice);
    if let Some(d) = s.det() {
        let plain = a.label();
        a.jmp32_k(op::JLT, R0, d.lo, plain);
        a.jmp32_k(op::JGT, R0, d.last, plain);
        a.alu32_k(op::SUB, R0, d.lo as i32);
        a.alu32_k(op::DIV, R0, d.size as i32);
        a.alu32_k(op::MOD, R0, n as i32);
        a.exit();
        a.place(plain);
    }
    a.jmp32_k(op::JLT, R0, lo, outside);
    a.jmp32_k(op::JGT, R0, hi, outside);
    a.alu32_k(op::SUB, R0, lo as i32);
    a.alu32_k(op::MUL, R0, n as i32);
    a.alu32_k(op::DIV, R0, (hi - lo + 1) as i32);
    a.exit();
    a.place(outside);
    a.alu32_k(op::MOD, R0, n as i32);
    a.exit();
    // An inside host (r0 = its address, LAN side): a hash of it, or in deterministic mode its block's
    // worker. (The verifier refuses unreachable instructions: none of this on the WAN side.)
    if side == Side::Inside {
        a.place(host);
    }
    if let (Some(d), Side::Inside) = (s.det(), side) {
        let block = a.label();
        for &(first, last, start) in &d.prefixes {
            let next = a.label();
            a.jmp32_k(op::JLT, R0, first, next);
            a.jmp32_k(op::JGT, R0, last, next);
            a.alu32_k(op::SUB, R0, first as i32);
            a.alu32_k(op::ADD, R0, start as i32);
            a.ja(block);
            a.place(next);
        }
        a.ja(hash);
        a.place(block);
        a.alu32_k(op::DIV, R0, d.addrs as i32);
        a.alu32_k(op::MOD, R0, n as i32);
        a.exit();
    } else if side == Side::Inside {
        a.ja(hash);
    }
    // frag_worker: all fragments of a datagram meet at one worker.
    a.place(fragment);
    a.ld_abs(op::W, 16);
    a.alu32_x(op::XOR, R0, R9);
    a.mov64(R7, R0);
    a.ld_abs(op::H, 4);
    a.alu32_x(op::XOR, R0, R7);
    a.place(hash);
    a.alu32_k(op::MUL, R0, HASH_MULTIPLIER as i32);
    a.alu32_k(op::RSH, R0, 16);
    a.alu32_k(op::MUL, R0, n as i32);
    a.alu32_k(op::RSH, R0, 16);
    a.exit();
    a.place(ret0);
    a.ret_k(0);
    a.finish()
}

/// `bpf(2)` commands and the program type used.
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_TEST_RUN: libc::c_int = 10;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `_IOR('T', 224, int)`: attach (a program descriptor) or detach (-1) a steering program.
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;

/// The `BPF_PROG_LOAD` member of `union bpf_attr` (zeros after it, as the kernel requires of the rest).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u64; 8],
}

/// The `BPF_PROG_TEST_RUN` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
    _rest: [u64; 4],
}

fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised `union bpf_attr` member of the size given, which the
    // kernel reads (and for some commands writes) only during the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// A loaded steering program (the kernel keeps it while a descriptor or an attachment holds it).
#[derive(Debug)]
pub struct Program {
    fd: OwnedFd,
}

impl Program {
    /// Loads `insns` as a socket-filter program (the type `TUNSETSTEERINGEBPF` takes). The error
    /// carries the verifier's log when it refused the program.
    pub fn load(insns: &[Insn], name: &str) -> io::Result<Program> {
        let license = c"MIT OR Apache-2.0";
        let mut log = vec![0u8; 64 * 1024];
        let mut prog_name = [0u8; 16];
        for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
            *d = s;
        }
        let mut attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
            insn_cnt: u32::try_from(insns.len()).map_err(|_| io::Error::other("program too long"))?,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 1,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            prog_name,
            ..ProgLoad::default()
        };
        match sys_bpf(BPF_PROG_LOAD, &mut attr) {
            // SAFETY: BPF_PROG_LOAD returns a new descriptor that nobody else owns.
            Ok(fd) => Ok(Program { fd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) } }),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(0);
                let text = String::from_utf8_lossy(&log[..end]);
                let last: Vec<&str> = text.lines().rev().take(3).collect();
                Err(io::Error::new(e.kind(), format!("{e}; verifier: {}", last.join(" / "))))
            }
        }
    }

    /// Runs the program in the kernel on `packet` (an IPv4 datagram) and returns what it returned:
    /// `BPF_PROG_TEST_RUN` builds a socket buffer from an Ethernet frame and, for this program type,
    /// starts the program at the network header, as a TUN device does. (The kernel refuses an IPv4
    /// frame shorter than an IPv4 header; such a packet is framed under an experimental EtherType,
    /// which the program never reads.)
    pub fn test_run(&self, packet: &[u8]) -> io::Result<u32> {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(if packet.len() >= 20 { &[0x08, 0x00] } else { &[0x88, 0xb5] });
        frame.extend_from_slice(packet);
        let mut attr = TestRun {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat: 1,
            ..TestRun::default()
        };
        sys_bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        Ok(attr.retval)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Attaches `prog` as the queue-steering program of the TUN device `tun_fd` is a queue of (replacing
/// any earlier one; the device keeps it until it goes or another replaces it).
pub fn attach(tun_fd: RawFd, prog: &Program) -> io::Result<()> {
    let fd: libc::c_int = prog.raw_fd();
    // SAFETY: the ioctl reads one int from a valid pointer during the call.
    if unsafe { libc::ioctl(tun_fd, TUNSETSTEERINGEBPF as _, &fd) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Loads the steering program for `side` and attaches it to the device `tun_fd` is a queue of.
pub fn steer(tun_fd: RawFd, s: &Steering, side: Side) -> io::Result<Program> {
    let name = match side {
        Side::Inside => "ftpnat_lan",
        Side::Outside => "ftpnat_wan",
    };
    let prog = Program::load(&program(s, side), name)?;
    attach(tun_fd, &prog)?;
    Ok(prog)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::steer::Owner;
    use std::net::Ipv4Addr;

    #[test]
    fn labels_resolve_to_forward_offsets() {
        let mut a = Asm::default();
        let l = a.label();
        a.jmp32_k(op::JEQ, R0, 1, l);
        a.ret_k(7);
        a.place(l);
        a.ret_k(9);
        let p = a.finish();
        assert_eq!(p[0].off, 2, "over the two instructions of the first return");
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(p[0].code, 0x16, "JMP32 | JEQ | K");
    }

    #[test]
    fn programs_grow_with_forwards_only() {
        let mut c = Config::new(vec!["10.0.0.0/24".parse().unwrap()], Ipv4Addr::new(198, 51, 100, 1));
        let base = program(&Steering::new(&c, 2), Side::Outside).len();
        c.forwards.push("tcp:2121=10.0.0.7:21".parse().unwrap());
        assert_eq!(program(&Steering::new(&c, 2), Side::Outside).len(), base + 4);
        assert!(base < 100, "{base} instructions");
    }

    /// Whether the kernel lets us load programs here; SKIP (or, under CI=true, FAIL) otherwise.
    fn kernel(test: &str) -> bool {
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("{test}: needs root to load eBPF programs, and CI=true forbids skipping");
        }
        eprintln!("SKIP (needs root to load eBPF programs): {test}");
        false
    }

    /// A deterministic stream of packets that reach every branch of the rule: TCP/UDP/ICMP/other,
    /// echo and errors quoting each protocol, fragments, forwarded and hairpinned ports, odd header
    /// lengths, and every length cut short.
    fn packets(seed: u64) -> Vec<Vec<u8>> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::new();
        // Inside hosts, pool addresses (a single one, the edges of a range and just past it), remotes.
        let addrs = [
            [10, 0, 0, 2],
            [10, 0, 0, 7],
            [198, 51, 100, 1],
            [203, 0, 113, 9],
            [10, 0, 0, 99],
            [198, 51, 100, 11],
            [198, 51, 100, 20],
            [198, 51, 100, 23],
            [198, 51, 100, 24],
            [10, 0, 1, 5],
        ];
        for i in 0..4000u64 {
            let r = next();
            let proto = [6u8, 17, 1, 47, 6, 1][(r % 6) as usize];
            let src = addrs[(r >> 8) as usize % addrs.len()];
            let dst = addrs[(r >> 12) as usize % addrs.len()];
            let ihl = if r >> 16 & 7 == 0 { 6 } else { 5 };
            let mut p = vec![0x40 | ihl, 0, 0, 0, (r >> 20) as u8, (r >> 28) as u8, 0, 0, 64, proto, 0, 0];
            if r >> 32 & 7 == 0 {
                p[6] = (r >> 36) as u8 & 0x3f;
                p[7] = (r >> 44) as u8;
            }
            p.extend_from_slice(&src);
            p.extend_from_slice(&dst);
            p.resize(usize::from(ihl) * 4, 0);
            let port = [21u16, 2121, 1024, 65535, 40000, 80, 999, 8080][(r >> 40) as usize % 8];
            match proto {
                1 => {
                    let t = [0u8, 8, 3, 11, 5, 13, 12, 4][(r >> 48) as usize % 8];
                    p.extend_from_slice(&[t, 0, 0, 0, (port >> 8) as u8, port as u8, 0, 1]);
                    // A quoted datagram of some protocol, with its ports.
                    let qp = [6u8, 17, 1, 50][(r >> 52) as usize % 4];
                    p.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0, 0, 64, qp, 0, 0]);
                    p.extend_from_slice(&dst);
                    p.extend_from_slice(&src);
                    if qp == 1 {
                        p.extend_from_slice(&[8, 0, 0, 0, (port >> 8) as u8, port as u8, 0, 1]);
                    } else {
                        p.extend_from_slice(&port.to_be_bytes());
                        p.extend_from_slice(&(port ^ 0x5a5a).to_be_bytes());
                    }
                }
                _ => {
                    p.extend_from_slice(&(port ^ 0x1111).to_be_bytes());
                    p.extend_from_slice(&port.to_be_bytes());
                    p.extend_from_slice(&[0; 16]);
                }
            }
            if i % 7 == 3 {
                // IPv6 (NAT64 on the LAN side): sources of three /64s, ICMPv6 errors quoting packets to
                // them, and other ICMPv6 types and next headers.
                let net = |k: u64| [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, [1u8, 2, 0xff][(k % 3) as usize]];
                let nh = [6u8, 17, 58, 58, 44][(r >> 8) as usize % 5];
                p = vec![0x60, 0, 0, 0, 0, 0, nh, 64];
                p.extend_from_slice(&net(r >> 12));
                p.extend_from_slice(&(r ^ 0x5555).to_be_bytes());
                p.extend_from_slice(&[0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 203, 0, 113, 9]);
                if nh == 58 {
                    let t = [1u8, 3, 128, 129, 2, 4, 127, 133][(r >> 16) as usize % 8];
                    p.extend_from_slice(&[t, 0, 0, 0, 0, 0, 0, 0]);
                    p.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, 17, 64]);
                    p.extend_from_slice(&[0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 203, 0, 113, 9]);
                    p.extend_from_slice(&net(r >> 20));
                    p.extend_from_slice(&(r >> 3).to_be_bytes());
                }
                p.extend_from_slice(&[0; 8]);
            }
            if i % 5 == 0 {
                let cut = (next() as usize) % (p.len() + 1);
                p.truncate(cut);
            }
            if i % 97 == 0 && !p.is_empty() {
                p[0] = 0x60;
            }
            out.push(p);
        }
        out
    }

    /// The kernel, running the generated program, picks exactly the worker the core rule names, for
    /// every packet and both sides, with and without forwards and for several worker counts and
    /// port ranges.
    #[test]
    fn the_kernel_program_is_the_core_rule() {
        if !kernel("the_kernel_program_is_the_core_rule") {
            return;
        }
        let mut c = Config::new(vec!["10.0.0.0/24".parse().unwrap()], Ipv4Addr::new(198, 51, 100, 1));
        let mut checked = 0;
        let a = |n: u8| Ipv4Addr::new(198, 51, 100, n);
        for (n, fwd, range, pool, det) in [
            (2u16, false, 1024..=65535u16, false, false),
            (2, true, 1024..=65535, false, false),
            (3, true, 1000..=2000, false, false),
            (7, true, 1..=65535, false, false),
            // An address pool (issue 16): hairpinning to any of its addresses.
            (2, true, 1024..=65535, true, false),
            (3, false, 1024..=65535, true, false),
            // Deterministic NAT (forwards below the layout's range), over a pool and without.
            (3, true, 3000..=65535, true, true),
            (2, false, 1024..=65535, false, true),
        ] {
            c.inside = vec!["10.0.0.0/24".parse().unwrap()];
            c.pool.allocation = crate::nat::Allocation::Dynamic;
            if det {
                c.inside.push("10.0.1.0/25".parse().unwrap());
                c.pool.allocation = crate::nat::Allocation::Deterministic { size: None };
            }
            c.forwards.clear();
            c.pool.addresses = vec![a(1)];
            if pool {
                c.pool.addresses.extend([a(11), a(20), a(21), a(22), a(23)]);
            }
            if fwd {
                c.forwards.push("tcp:2121=10.0.0.7:21".parse().unwrap());
                c.forwards.push("udp:1024=10.0.0.2:53".parse().unwrap());
                if pool {
                    c.forwards.push("tcp:198.51.100.11:8080=10.0.0.9:80".parse().unwrap());
                }
            }
            c.port_range = range;
            let s = Steering::new(&c, n);
            assert_eq!(s.det().is_some(), det);
            for side in [Side::Inside, Side::Outside] {
                let prog = Program::load(&program(&s, side), "ftpnat_test").unwrap();
                for p in
                    packets(u64::from(n) * 7919 + u64::from(fwd) + 2 * u64::from(pool) + 4 * u64::from(det))
                {
                    let want = match s.owner(side, &p) {
                        Owner::Worker(w) => w,
                        Owner::Fragment { frag_worker, .. } => frag_worker,
                    };
                    let got = prog.test_run(&p).unwrap_or_else(|e| panic!("{e}: {} bytes {p:02x?}", p.len()));
                    assert_eq!(
                        got,
                        u32::from(want),
                        "{side:?} n={n} fwd={fwd} pool={pool} det={det}: {p:02x?}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 60_000);
    }
}
