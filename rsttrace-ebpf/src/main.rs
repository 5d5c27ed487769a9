//! rsttrace kernel programs: one event per TCP RST sent or received.
//!
//! Hooks (userspace picks per kernel, see `rsttrace/src/probes.rs`):
//! - `tp_btf/tcp_send_reset` (sk, skb, reason) on 6.10+, or (sk, skb) before;
//! - `tp_btf/tcp_receive_reset` (sk);
//! - the classic `tcp:tcp_send_reset` / `tcp:tcp_receive_reset` tracepoints as
//!   a fallback, reading `skaddr`/`skbaddr`/`reason` at offsets parsed from tracefs;
//! - kprobe or fentry on the reset functions themselves (`tcp_v4_send_reset`,
//!   `tcp_v6_send_reset`, `tcp_send_active_reset`, `tcp_reset`) where the kernel
//!   has them: they also see RSTs sent without a socket, which 6.1's
//!   tracepoint misses, and `tcp_reset`'s skb is the received RST itself;
//! - `irq:softirq_entry/exit`, to know whether an RST is made in softirq
//!   (where `current` is unrelated to the socket) or by a task.
//!
//! Rust eBPF has no CO-RE: every kernel struct field is read at an offset that
//! userspace resolved from the running kernel's BTF (`OFFSETS`).
#![no_std]
#![no_main]

use core::ffi::c_void;
use core::ptr::{addr_of, addr_of_mut, read_volatile};

use aya_ebpf::{
    EbpfContext, Global,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_task_btf, bpf_get_current_uid_gid, bpf_get_stackid,
        bpf_jiffies64, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
        bpf_task_pt_regs, generated,
    },
    macros::{btf_tracepoint, fentry, kprobe, map, tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, TracePointContext},
};
use rsttrace_ebpf::abi::{
    ABSENT, EventHeader, Field, Filter, History, HistoryKey, KfreeSkb, MAX_HISTORY, MAX_OWNERS,
    MAX_STACKS, Offsets, Owner, OwnerTracepoints, PACKET_BYTES, PacketRecord, RstEvent, Tuning,
    USER_STACK_TOP_WORDS, context, counter, direction, flag, history, hook, kind, packet_dir,
    stacks,
};

#[unsafe(no_mangle)]
static OFFSETS: Global<Offsets> = Global::new(Offsets::UNRESOLVED);
#[unsafe(no_mangle)]
static FILTER: Global<Filter> = Global::new(Filter::ALL);
#[unsafe(no_mangle)]
static TUNING: Global<Tuning> = Global::new(Tuning::DEFAULT);
#[unsafe(no_mangle)]
static KFREE_SKB: Global<KfreeSkb> = Global::new(KfreeSkb::UNRESOLVED);

/// Default 4 MiB; userspace resizes it (`--ring-buffer`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);
/// Socket address → the process proven to own it (see `owner_set_state`).
#[map]
static OWNERS: LruHashMap<u64, Owner> = LruHashMap::with_max_entries(MAX_OWNERS, 0);
#[unsafe(no_mangle)]
static OWNER_TP: Global<OwnerTracepoints> = Global::new(OwnerTracepoints::UNRESOLVED);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
/// 4-tuple or listening port → its last close (see `record_history`).
#[map]
static HISTORY: LruHashMap<HistoryKey, History> = LruHashMap::with_max_entries(MAX_HISTORY, 0);
/// `--stack`: kernel and user stacks, by id.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(MAX_STACKS, 0);
/// Per CPU: the socket of the last RST, so that the error report the same
/// reset raises a moment later (tcp_reset, tcp_abort, keepalive) is not
/// reported a second time as an abort.
#[map]
static LAST_RST_SK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
/// Per CPU: [socket, old state] of the last transition to CLOSE, so that
/// the RST sent right after it (same call) says which state it left.
#[map]
static LAST_CLOSE: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);
/// Per CPU: 0 outside softirq, vector + 1 inside.
#[map]
static SOFTIRQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

// The globals are read field by field through these pointers rather than
// with `Global::load`, which would copy a whole struct onto the 512-byte
// stack. Reads are volatile: the loader rewrites the values after compilation.
// `Global<T>` is `repr(transparent)` over an initialised `T`.
fn offsets() -> *const Offsets {
    (&OFFSETS as *const Global<Offsets>).cast()
}
fn filter() -> *const Filter {
    (&FILTER as *const Global<Filter>).cast()
}
fn owner_tp() -> *const OwnerTracepoints {
    (&OWNER_TP as *const Global<OwnerTracepoints>).cast()
}
fn tuning() -> *const Tuning {
    (&TUNING as *const Global<Tuning>).cast()
}

macro_rules! off {
    ($field:ident) => {
        // SAFETY: see `offsets()`.
        unsafe { read_volatile(addr_of!((*offsets()).$field)) }
    };
}
macro_rules! tuning {
    ($field:ident) => {
        // SAFETY: see `offsets()`.
        unsafe { read_volatile(addr_of!((*tuning()).$field)) }
    };
}

// ---------------------------------------------------------------- programs

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn btf_tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let skb: *const u8 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    on_send_reset(ctx.as_ptr(), sk, skb, reason, hook::BTF_SEND_RESET);
    0
}

/// Kernels before 6.10 have no reason argument; the verifier rejects reading it.
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn btf_tcp_send_reset_no_reason(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let skb: *const u8 = ctx.arg(1);
    on_send_reset(ctx.as_ptr(), sk, skb, ABSENT, hook::BTF_SEND_RESET);
    0
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn btf_tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    on_receive_reset(ctx.as_ptr(), sk, core::ptr::null(), hook::BTF_RECEIVE_RESET);
    0
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tp_tcp_send_reset(ctx: TracePointContext) -> u32 {
    let tp = tuning!(tp);
    let (Some(sk), Some(skb)) = (
        read_ctx::<u64>(&ctx, tp.send_skaddr),
        read_ctx::<u64>(&ctx, tp.send_skbaddr),
    ) else {
        count(counter::READ_ERRORS);
        return 0;
    };
    // ABSENT rather than an Option: a None's payload is an uninitialised
    // register, and 6.1's verifier rejects the program for copying it.
    let reason = read_ctx::<u32>(&ctx, tp.send_reason).unwrap_or(ABSENT);
    on_send_reset(
        ctx.as_ptr(),
        sk as *const u8,
        skb as *const u8,
        reason,
        hook::TP_SEND_RESET,
    );
    0
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tp_tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let tp = tuning!(tp);
    let Some(sk) = read_ctx::<u64>(&ctx, tp.recv_skaddr) else {
        count(counter::READ_ERRORS);
        return 0;
    };
    on_receive_reset(
        ctx.as_ptr(),
        sk as *const u8,
        core::ptr::null(),
        hook::TP_RECEIVE_RESET,
    );
    0
}

// Function hooks. `tcp_v{4,6}_send_reset(sk, skb, ...)` runs for every passive
// RST, including those without a socket; `tcp_send_active_reset(sk, ...)` for
// active ones; `tcp_reset(sk, skb)` when an RST is accepted. Only the first
// two arguments are read: they have kept their place on every kernel, and
// userspace attaches `tcp_reset` only where BTF shows it takes the skb.
// The kprobe ones attach by symbol name at run time (userspace finds the
// name, which may carry a compiler suffix, in /proc/kallsyms).

#[kprobe]
pub fn kp_send_reset(ctx: ProbeContext) -> u32 {
    let sk: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    let skb: *const u8 = ctx.arg(1).unwrap_or(core::ptr::null());
    on_passive_reset_call(ctx.as_ptr(), sk, skb, hook::KPROBE_SEND_RESET);
    0
}

#[kprobe]
pub fn kp_send_active_reset(ctx: ProbeContext) -> u32 {
    let sk: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    on_send_reset(
        ctx.as_ptr(),
        sk,
        core::ptr::null(),
        ABSENT,
        hook::KPROBE_SEND_RESET,
    );
    0
}

#[kprobe]
pub fn kp_tcp_reset(ctx: ProbeContext) -> u32 {
    let sk: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    let skb: *const u8 = ctx.arg(1).unwrap_or(core::ptr::null());
    on_receive_reset(ctx.as_ptr(), sk, skb, hook::KPROBE_RECEIVE_RESET);
    0
}

#[fentry(function = "tcp_v4_send_reset")]
pub fn fe_tcp_v4_send_reset(ctx: FEntryContext) -> i32 {
    on_passive_reset_call(
        ctx.as_ptr(),
        ctx.arg(0),
        ctx.arg(1),
        hook::FENTRY_SEND_RESET,
    );
    0
}

#[fentry(function = "tcp_v6_send_reset")]
pub fn fe_tcp_v6_send_reset(ctx: FEntryContext) -> i32 {
    on_passive_reset_call(
        ctx.as_ptr(),
        ctx.arg(0),
        ctx.arg(1),
        hook::FENTRY_SEND_RESET,
    );
    0
}

#[fentry(function = "tcp_send_active_reset")]
pub fn fe_tcp_send_active_reset(ctx: FEntryContext) -> i32 {
    on_send_reset(
        ctx.as_ptr(),
        ctx.arg(0),
        core::ptr::null(),
        ABSENT,
        hook::FENTRY_SEND_RESET,
    );
    0
}

#[fentry(function = "tcp_reset")]
pub fn fe_tcp_reset(ctx: FEntryContext) -> i32 {
    on_receive_reset(
        ctx.as_ptr(),
        ctx.arg(0),
        ctx.arg(1),
        hook::FENTRY_RECEIVE_RESET,
    );
    0
}

/// `skb:kfree_skb` with reason NO_SOCKET: `tcp_v{4,6}_rcv` found no socket,
/// answered with an RST (unless the segment was itself an RST) and dropped
/// the segment. Attached only where the send hook misses socketless RSTs.
#[tracepoint(category = "skb", name = "kfree_skb")]
pub fn tp_kfree_skb(ctx: TracePointContext) -> u32 {
    let k: *const KfreeSkb = (&KFREE_SKB as *const Global<KfreeSkb>).cast();
    // SAFETY: see `offsets()`.
    let (skbaddr, reason_at, no_socket) = unsafe {
        (
            read_volatile(addr_of!((*k).skbaddr)),
            read_volatile(addr_of!((*k).reason)),
            read_volatile(addr_of!((*k).no_socket)),
        )
    };
    // Every dropped packet of the host passes here: leave fast.
    if no_socket == ABSENT || read_ctx::<u32>(&ctx, reason_at) != Some(no_socket) {
        return 0;
    }
    let Some(skb) = read_ctx::<u64>(&ctx, skbaddr) else {
        return 0;
    };
    let skb = skb as *const u8;
    let mut tuple = Tuple::default();
    let mut pkt = Packet::default();
    // UDP and others drop with NO_SOCKET too; an RST gets no RST back.
    if !read_packet(skb, &mut pkt, &mut tuple)
        || pkt.protocol != IPPROTO_TCP
        || pkt.flags & TCP_FLAG_RST != 0
    {
        return 0;
    }
    on_send_reset(
        ctx.as_ptr(),
        core::ptr::null(),
        skb,
        ABSENT,
        hook::TP_KFREE_SKB_NO_SOCKET,
    );
    0
}

/// `irq:softirq_entry`: `unsigned int vec` follows the 8-byte common header.
#[tracepoint(category = "irq", name = "softirq_entry")]
pub fn softirq_entry(ctx: TracePointContext) -> u32 {
    // SAFETY: offset 8 is `vec` in every kernel's format for this event.
    let vec = unsafe { ctx.read_at::<u32>(8) }.unwrap_or(0xff);
    if let Some(slot) = SOFTIRQ.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot = vec.wrapping_add(1) };
    }
    0
}

#[tracepoint(category = "irq", name = "softirq_exit")]
pub fn softirq_exit(_ctx: TracePointContext) -> u32 {
    if let Some(slot) = SOFTIRQ.get_ptr_mut(0) {
        // SAFETY: as above.
        unsafe { *slot = 0 };
    }
    0
}

// ---------------------------------------------------------------- socket owners
//
// An RST is usually made in softirq or a timer, where `current` is whoever
// the interrupt landed on. The owner is remembered earlier, from moments that
// prove it: the socket's own process running connect() (SYN_SENT), listen()
// (LISTEN), close()/shutdown() (FIN_WAIT1, LAST_ACK) or recv() (accepted
// sockets), always in task context. tcp_abort() (`ss -K`) goes straight to
// CLOSE, so a killer is never mistaken for the owner.

macro_rules! owner_tp {
    ($field:ident) => {
        // SAFETY: see `offsets()`.
        unsafe { read_volatile(addr_of!((*owner_tp()).$field)) }
    };
}

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;
const OWNER_AFTER_DESTROY_NS: u64 = 1_000_000_000;

const OWNER_PROVING_STATES: [i32; 4] = [
    2,  /* SYN_SENT */
    10, /* LISTEN */
    4,  /* FIN_WAIT1 */
    9,  /* LAST_ACK */
];

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn owner_set_state(ctx: TracePointContext) -> u32 {
    let (Some(protocol), Some(oldstate), Some(newstate), Some(sk)) = (
        read_ctx::<u16>(&ctx, owner_tp!(set_state_protocol)),
        read_ctx::<i32>(&ctx, owner_tp!(set_state_oldstate)),
        read_ctx::<i32>(&ctx, owner_tp!(set_state_newstate)),
        read_ctx::<u64>(&ctx, owner_tp!(set_state_skaddr)),
    ) else {
        return 0;
    };
    if protocol != IPPROTO_TCP as u16 {
        return 0;
    }
    if newstate == TCP_CLOSE {
        if let (Some(s), Some(o)) = (LAST_CLOSE.get_ptr_mut(0), LAST_CLOSE.get_ptr_mut(1)) {
            // SAFETY: per-CPU slots; no other writer on this CPU meanwhile.
            unsafe {
                *s = sk;
                *o = oldstate as u64;
            }
        }
        record_close(sk as *const u8, oldstate);
    }
    if in_softirq() {
        // A child socket completing its handshake is new: whatever an
        // earlier socket at this address left behind is stale.
        if oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED {
            let _ = OWNERS.remove(sk);
        }
        return 0;
    }
    if OWNER_PROVING_STATES.contains(&newstate) {
        remember_owner(sk);
    }
    0
}

/// tcp_rcv_space_adjust() runs in tcp_recvmsg(): the reader owns the socket.
#[tracepoint(category = "tcp", name = "tcp_rcv_space_adjust")]
pub fn owner_rcv_space(ctx: TracePointContext) -> u32 {
    if in_softirq() {
        return 0;
    }
    if let Some(sk) = read_ctx::<u64>(&ctx, owner_tp!(rcv_space_skaddr))
        && OWNERS.get_ptr(sk).is_none()
    {
        remember_owner(sk);
    }
    0
}

#[tracepoint(category = "tcp", name = "tcp_destroy_sock")]
pub fn owner_destroy_sock(ctx: TracePointContext) -> u32 {
    if let Some(sk) = read_ctx::<u64>(&ctx, owner_tp!(destroy_skaddr))
        && let Some(owner) = OWNERS.get_ptr_mut(sk)
    {
        // SAFETY: map value, valid for this run of the program.
        unsafe { (*owner).destroyed_ns = bpf_ktime_get_ns() };
    }
    0
}

// ---------------------------------------------------------------- packets
//
// With a pcapng export, the RST segments themselves: every packet of the
// host passes these two hooks, so anything that is not a TCP RST leaves
// after three loads. Attached only when a capture is being written.

#[btf_tracepoint(function = "net_dev_queue")]
pub fn pkt_net_dev_queue(ctx: BtfTracePointContext) -> i32 {
    let skb: *const u8 = ctx.arg(0);
    // Locally built packets have their network header set; skb->data is
    // still at the link-layer header.
    if let Some(nh) = load(skb, off!(skb_network_header))
        && let Some(head) = load(skb, off!(skb_head))
    {
        capture_rst(skb, (head + nh) as *const u8, packet_dir::TX);
    }
    0
}

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn pkt_netif_receive_skb(ctx: BtfTracePointContext) -> i32 {
    let skb: *const u8 = ctx.arg(0);
    // The link-layer header is pulled: skb->data is the IP header (the
    // network header offset is not reset yet on this path).
    if let Some(data) = load(skb, off!(skb_data)) {
        capture_rst(skb, data as *const u8, packet_dir::RX);
    }
    0
}

fn capture_rst(skb: *const u8, ip: *const u8, dir: u8) {
    let mut hdr = [0u8; 40];
    // SAFETY: checked read of kernel memory.
    if unsafe { bpf_probe_read_kernel_buf(ip, &mut hdr) }.is_err() {
        return;
    }
    let (ihl, total, protocol) = match hdr[0] >> 4 {
        4 => (
            ((hdr[0] & 0x0f) as usize) * 4,
            u16::from_be_bytes([hdr[2], hdr[3]]) as u32,
            hdr[9],
        ),
        // Without extension headers, which RSTs do not carry.
        6 => (40, 40 + u16::from_be_bytes([hdr[4], hdr[5]]) as u32, hdr[6]),
        _ => return,
    };
    if protocol != IPPROTO_TCP || !(20..=60).contains(&ihl) {
        return;
    }
    let mut tcp = [0u8; 14];
    // SAFETY: as above.
    if unsafe { bpf_probe_read_kernel_buf(ip.add(ihl), &mut tcp) }.is_err()
        || tcp[13] & TCP_FLAG_RST == 0
    {
        return;
    }
    let mut tuple = Tuple {
        local_port: u16::from_be_bytes([tcp[0], tcp[1]]),
        remote_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        ..Tuple::default()
    };
    let ifindex = match load(skb, off!(skb_dev)) {
        Some(dev) if dev != 0 => load(dev as *const u8, off!(netdev_ifindex)).unwrap_or(0) as u32,
        _ => 0,
    };
    tuple.netns = netns_of(core::ptr::null(), skb);
    if !passes_packet_filter(&tuple) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<PacketRecord>(0) else {
        count(counter::PACKETS_LOST);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: a reserved, exclusively owned slot, zeroed then filled.
    unsafe {
        core::ptr::write_bytes(rec, 0, 1);
        let rec = &mut *rec;
        rec.header = EventHeader {
            version: rsttrace_ebpf::abi::ABI_VERSION,
            size: core::mem::size_of::<PacketRecord>() as u16,
            kind: kind::PACKET,
            _pad: [0; 3],
        };
        rec.ts_ns = bpf_ktime_get_ns();
        rec.netns = tuple.netns;
        rec.direction = dir;
        rec.len = total;
        rec.caplen = total.min(PACKET_BYTES as u32) as u16;
        rec.ifindex = ifindex;
        if bpf_probe_read_kernel_buf(ip, &mut rec.data).is_err() {
            rec.caplen = 0;
        }
    }
    entry.submit(0);
}

// ---------------------------------------------------------------- history
//
// A socketless RST (or one from a TIME_WAIT socket) names no process. The
// last close of its 4-tuple does: who gave up on a connect, which listener
// left the port, which connection was aborted with what error. Kept in an
// LRU map, so the memory is bounded (`MAX_HISTORY`).

fn record_close(sk: *const u8, oldstate: i32) {
    let err = load(sk, off!(sk_err)).unwrap_or(0) as u8;
    let task = !in_softirq();
    let kind = match oldstate {
        TCP_LISTEN => history::LISTENER_CLOSED,
        // Only the application closing the socket itself, with no error
        // (a refused or unreachable connect closes it with one).
        // An ICMP error that arrived while connect() held the socket lock
        // stays soft (sk_err_soft); an application that read it with
        // SO_ERROR cleared it, and its close looks abandoned.
        TCP_SYN_SENT if task && err == 0 && soft_error(sk) == 0 => history::CONNECT_ABANDONED,
        TCP_SYN_SENT => return,
        _ => history::CLOSED,
    };
    let mut tuple = Tuple::default();
    read_sock_tuple(sk, &mut tuple);
    tuple.netns = netns_of(sk, core::ptr::null());
    let mut key = history_key(&tuple);
    if kind == history::LISTENER_CLOSED {
        listener_key(&mut key);
    }
    let mut entry = History {
        // SAFETY: the helper has no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        tgid: 0,
        pid: 0,
        comm: [0; 16],
        kind,
        state: oldstate as u8,
        err,
        _pad: [0; 5],
    };
    // The owner where it is known; else the task closing it, which in its
    // own context is the application (an abandoned connect, a close()).
    let owner = owner_of(sk);
    if !owner.is_null() {
        // SAFETY: map value, valid for this run of the program.
        let o = unsafe { &*owner };
        entry.tgid = o.tgid;
        entry.pid = o.pid;
        entry.comm = o.comm;
    } else if task {
        let pid_tgid = bpf_get_current_pid_tgid();
        entry.tgid = (pid_tgid >> 32) as u32;
        entry.pid = pid_tgid as u32;
        entry.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    let _ = HISTORY.insert(&key, &entry, 0);
}

// ---------------------------------------------------------------- aborts

/// `sk_error_report()` on an inet socket: a hard error ends the connection.
/// Errors that an RST caused (received, or sent by tcp_abort() or the
/// keepalive timer) were events already; the others (ETIMEDOUT,
/// EHOSTUNREACH, an ICMP reject's ECONNREFUSED) are connections that died
/// without an RST, reported as direction ABORT.
#[btf_tracepoint(function = "inet_sk_error_report")]
pub fn btf_inet_sk_error_report(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    if sk.is_null() || load(sk, off!(sk_protocol)) != Some(IPPROTO_TCP as u64) {
        return 0;
    }
    if let Some(last) = LAST_RST_SK.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; no other writer on this CPU meanwhile.
        unsafe {
            if *last == sk as u64 {
                *last = 0;
                return 0;
            }
        }
    }
    if load(sk, off!(sk_err)).unwrap_or(0) == 0 {
        return 0;
    }
    on_socket_event(&Origin {
        ctx: ctx.as_ptr(),
        sk,
        skb: core::ptr::null(),
        reason: ABSENT,
        hook: hook::BTF_ERROR_REPORT,
        direction: direction::ABORT,
    });
    0
}

fn soft_error(sk: *const u8) -> u64 {
    load(sk, off!(sk_err_soft)).unwrap_or(0)
}

fn remember_owner(sk: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let owner = Owner {
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        uid: bpf_get_current_uid_gid() as u32,
        _pad: 0,
        // SAFETY: the helper has no preconditions.
        cgroup: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        destroyed_ns: 0,
    };
    let _ = OWNERS.insert(sk, owner, 0);
}

fn in_softirq() -> bool {
    SOFTIRQ.get(0).copied().unwrap_or(0) != 0
}

// ---------------------------------------------------------------- event building

fn read_ctx<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == ABSENT {
        return None;
    }
    // SAFETY: the offset comes from the tracepoint's own format file.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

/// What the hook saw, passed by reference (BPF calls take at most 5 arguments).
struct Origin {
    /// The program's context, for the stack helpers.
    ctx: *mut c_void,
    sk: *const u8,
    skb: *const u8,
    /// `enum sk_rst_reason`, or ABSENT.
    reason: u32,
    hook: u8,
    direction: u8,
}

/// A passive RST answers the trigger `skb`; an active one (skb NULL) comes
/// from close(), a timer or tcp_abort(). `sk` may be NULL (no socket),
/// a timewait or request sock, or a full socket.
fn on_send_reset(ctx: *mut c_void, sk: *const u8, skb: *const u8, reason: u32, hook: u8) {
    on_socket_event(&Origin {
        ctx,
        sk,
        skb,
        reason,
        hook,
        direction: direction::SENT,
    });
}

/// `tcp_v{4,6}_send_reset` entry: the function returns without sending when
/// the trigger is itself an RST, so those calls are not RSTs sent.
fn on_passive_reset_call(ctx: *mut c_void, sk: *const u8, skb: *const u8, hook: u8) {
    if !skb.is_null() {
        let mut tuple = Tuple::default();
        let mut pkt = Packet::default();
        if read_packet(skb, &mut pkt, &mut tuple) && pkt.flags & TCP_FLAG_RST != 0 {
            return;
        }
    }
    on_send_reset(ctx, sk, skb, ABSENT, hook);
}

/// `skb`, when the hook has it, is the received RST: its TTL and window are
/// evidence of who forged it.
fn on_receive_reset(ctx: *mut c_void, sk: *const u8, skb: *const u8, hook: u8) {
    on_socket_event(&Origin {
        ctx,
        sk,
        skb,
        reason: ABSENT,
        hook,
        direction: direction::RECEIVED,
    });
}

fn on_socket_event(origin: &Origin) {
    if origin.direction != direction::ABORT
        && !origin.sk.is_null()
        && let Some(last) = LAST_RST_SK.get_ptr_mut(0)
    {
        // SAFETY: per-CPU slot; no other writer on this CPU meanwhile.
        unsafe { *last = origin.sk as u64 };
    }
    let mut tuple = Tuple::default();
    let mut pkt = Packet::default();
    let has_packet = !origin.skb.is_null() && read_packet(origin.skb, &mut pkt, &mut tuple);
    if !has_packet && !origin.sk.is_null() {
        read_sock_tuple(origin.sk, &mut tuple);
    }
    tuple.netns = netns_of(origin.sk, origin.skb);
    emit(origin, &tuple, has_packet.then_some(&pkt));
}

#[derive(Default)]
struct Tuple {
    netns: u32,
    family: u16,
    local_port: u16,
    remote_port: u16,
    local_addr: [u8; 16],
    remote_addr: [u8; 16],
}

#[derive(Default)]
struct Packet {
    /// IP protocol (IPv6: the first next-header).
    protocol: u8,
    flags: u8,
    ttl: u8,
    window: u16,
    seq: u32,
    ack: u32,
    len: u32,
}

fn emit(origin: &Origin, tuple: &Tuple, pkt: Option<&Packet>) {
    let sk = origin.sk;
    let pid_tgid = bpf_get_current_pid_tgid();
    let in_softirq = SOFTIRQ.get(0).copied().unwrap_or(0);
    let owner = owner_of(sk);
    // --pid and --cgroup match the owner; the actor only where it ran the
    // code. (Plain values with sentinels, not Options: the verifier rejects
    // the uninitialised payload register of a None that LLVM copies around.)
    let (pid, cgroup) = if !owner.is_null() {
        // SAFETY: map value, valid for this run of the program.
        unsafe { ((*owner).tgid, (*owner).cgroup) }
    } else if in_softirq == 0 {
        // SAFETY: the helper has no preconditions.
        ((pid_tgid >> 32) as u32, unsafe {
            bpf_get_current_cgroup_id()
        })
    } else {
        (ABSENT, 0)
    };
    if !passes_filter(tuple, pid, cgroup, true) {
        count(counter::FILTERED);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<RstEvent>(0) else {
        count(counter::LOST);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned RstEvent-sized
    // slot; every field is written before submit (unread ones are zeroed).
    unsafe {
        core::ptr::write_bytes(ev, 0, 1);
        let ev = &mut *ev;
        ev.header = EventHeader {
            version: rsttrace_ebpf::abi::ABI_VERSION,
            size: core::mem::size_of::<RstEvent>() as u16,
            kind: kind::RST,
            _pad: [0; 3],
        };
        ev.ts_ns = bpf_ktime_get_ns();
        ev.sk = sk as u64;
        ev.skb = origin.skb as u64;
        ev.direction = origin.direction;
        ev.hook = origin.hook;
        ev.netns = tuple.netns;
        ev.family = tuple.family;
        ev.local_port = tuple.local_port;
        ev.remote_port = tuple.remote_port;
        ev.local_addr = tuple.local_addr;
        ev.remote_addr = tuple.remote_addr;
        if origin.reason != ABSENT {
            ev.reason = origin.reason;
            ev.flags |= flag::HAS_REASON;
        }
        if let Some(p) = pkt {
            ev.flags |= flag::HAS_PACKET;
            ev.pkt_flags = p.flags;
            ev.pkt_ttl = p.ttl;
            ev.pkt_window = p.window;
            ev.pkt_seq = p.seq;
            ev.pkt_ack = p.ack;
            ev.pkt_len = p.len;
        }
        if in_softirq != 0 {
            ev.context = context::SOFTIRQ;
            ev.softirq_vec = (in_softirq - 1) as u8;
        } else {
            ev.context = context::TASK;
        }
        ev.actor_pid = pid_tgid as u32;
        ev.actor_tgid = (pid_tgid >> 32) as u32;
        ev.actor_comm = bpf_get_current_comm().unwrap_or([0; 16]);
        read_task(ev);
        if !sk.is_null() {
            read_sock(sk, ev);
        }
        if !owner.is_null() {
            let o = &*owner;
            ev.flags |= flag::OWNER_KNOWN;
            ev.owner_tgid = o.tgid;
            ev.owner_pid = o.pid;
            ev.owner_uid = o.uid;
            ev.owner_cgroup = o.cgroup;
            ev.owner_comm = o.comm;
        }
        // Without a full socket, what happened to the 4-tuple before
        // explains the RST and names whoever owned it.
        if ev.direction == direction::SENT && ev.flags & flag::FULL_SOCK == 0 {
            let syn_only =
                pkt.is_some_and(|p| p.flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN);
            read_history(tuple, syn_only, false, ev);
        } else if ev.direction == direction::SENT
            && pkt.is_none()
            && owner.is_null()
            && ev.state == TCP_CLOSE as u8
        {
            // An unowned child reset in CLOSE: inet_csk_listen_stop() resets
            // the queued children right after their listener's close.
            read_history(tuple, false, true, ev);
        }
        capture_stacks(origin.ctx, owner, ev);
    }
    let wakeup_bytes = tuning!(wakeup_bytes);
    let wake = if wakeup_bytes == 0 {
        0
    } else if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= wakeup_bytes {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    };
    entry.submit(wake);
    count(counter::SUBMITTED);
}

/// The socket's remembered owner, or null. A destroyed socket's owner is
/// trusted only for the RST that immediately follows its destruction, not
/// for another socket that reuses the address.
fn owner_of(sk: *const u8) -> *const Owner {
    if sk.is_null() {
        return core::ptr::null();
    }
    let Some(o) = OWNERS.get_ptr(sk as u64) else {
        return core::ptr::null();
    };
    // SAFETY: map value, valid for this run of the program; the clock helper
    // has no preconditions.
    let (destroyed, now) = unsafe { ((*o).destroyed_ns, bpf_ktime_get_ns()) };
    if destroyed != 0 && now.saturating_sub(destroyed) >= OWNER_AFTER_DESTROY_NS {
        return core::ptr::null();
    }
    o
}

/// The 4-tuple's last close, or for a SYN (or `listener_only`) the
/// listening port's. Not inlined: as a call, its found/not-found paths
/// meet again at the return, instead of doubling the states the verifier
/// walks through the rest of the event (1.8 s → 0.6 s to load on 6.18, and
/// the classic tracepoint program within 6.1's 1M-instruction limit).
#[inline(never)]
fn read_history(tuple: &Tuple, syn_only: bool, listener_only: bool, ev: &mut RstEvent) {
    let mut key = history_key(tuple);
    let mut found = None;
    if !listener_only {
        found = HISTORY.get_ptr(&key);
    }
    if found.is_none() && (syn_only || listener_only) {
        listener_key(&mut key);
        found = HISTORY.get_ptr(&key);
    }
    let Some(h) = found else {
        return;
    };
    // SAFETY: map value, valid for this run of the program.
    let h = unsafe { &*h };
    ev.hist_ts_ns = h.ts_ns;
    ev.hist_tgid = h.tgid;
    ev.hist_pid = h.pid;
    ev.hist_comm = h.comm;
    ev.hist_kind = h.kind;
    ev.hist_state = h.state;
    ev.hist_err = h.err;
}

fn history_key(tuple: &Tuple) -> HistoryKey {
    HistoryKey {
        netns: tuple.netns,
        local_addr: tuple.local_addr,
        remote_addr: tuple.remote_addr,
        local_port: tuple.local_port,
        remote_port: tuple.remote_port,
        family: tuple.family,
        _pad: 0,
    }
}

/// A listener is keyed by namespace and port only: one bound to the
/// wildcard address serves every local address, v4 and v6.
fn listener_key(key: &mut HistoryKey) {
    key.local_addr = [0; 16];
    key.remote_addr = [0; 16];
    key.remote_port = 0;
    key.family = 0;
}

/// `--stack`: the kernel stack always; the user stack only where the
/// socket's own process ran the code (close(), shutdown(), setsockopt()),
/// which is where the application's decision lives.
fn capture_stacks(ctx: *mut c_void, owner: *const Owner, ev: &mut RstEvent) {
    ev.kernel_stack_id = -1;
    ev.user_stack_id = -1;
    let wanted = tuning!(stacks);
    if wanted == 0 {
        return;
    }
    let map = addr_of!(STACKS) as *mut c_void;
    if wanted & stacks::KERNEL != 0 {
        // SAFETY: ctx is the program's context, map the stack map.
        let id = unsafe { bpf_get_stackid(ctx, map, 0) };
        if id < 0 {
            count(counter::STACK_ERRORS);
        } else {
            ev.kernel_stack_id = id as i32;
        }
    }
    // SAFETY: map value, valid for this run of the program.
    let owner_ran_it = ev.context == context::TASK
        && (owner.is_null() || unsafe { (*owner).tgid } == ev.actor_tgid);
    if wanted & stacks::USER != 0 && owner_ran_it {
        // SAFETY: as above.
        let id = unsafe { bpf_get_stackid(ctx, map, BPF_F_USER_STACK) };
        if id < 0 {
            count(counter::STACK_ERRORS);
        } else {
            ev.user_stack_id = id as i32;
            read_user_stack_top(ev);
        }
    }
}

/// Copies the words at the user stack pointer saved on syscall entry. The
/// frame-pointer walk misses the caller of a frameless wrapper such as
/// libc's close(): its return address is on the stack, not behind a saved
/// frame pointer. Userspace finds it there with the wrapper's unwind info.
/// (Reached only with `--stack`, so older kernels without these helpers
/// still load the programs: the verifier prunes the branch.)
fn read_user_stack_top(ev: &mut RstEvent) {
    // Few branches on purpose: this runs inside every event path, and each
    // branch multiplies the states the verifier walks.
    let offset = off!(pt_regs_sp).offset;
    if offset == ABSENT {
        return;
    }
    // SAFETY: the helpers take the current task, whose user registers stay
    // valid while it runs this syscall; both reads are checked by the kernel
    // (a failed one zeroes its destination).
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        let mut sp = 0u64;
        generated::bpf_probe_read_kernel(
            addr_of_mut!(sp).cast(),
            8,
            regs.add(offset as usize).cast(),
        );
        generated::bpf_probe_read_user(
            addr_of_mut!(ev.user_stack_top).cast(),
            (8 * USER_STACK_TOP_WORDS) as u32,
            sp as *const c_void,
        );
    }
}

/// The network namespace inode of the socket, else of the device the
/// trigger packet came in on; 0 when unknown.
fn netns_of(sk: *const u8, skb: *const u8) -> u32 {
    let net = if !sk.is_null() {
        load(sk, off!(skc_net))
    } else if !skb.is_null() {
        load(skb, off!(skb_dev))
            .filter(|dev| *dev != 0)
            .and_then(|dev| load(dev as *const u8, off!(netdev_net)))
    } else {
        None
    };
    match net {
        Some(net) if net != 0 => load(net as *const u8, off!(net_inum)).unwrap_or(0) as u32,
        _ => 0,
    }
}

/// Packets know their ports and namespace, not their process: `--pid`,
/// `--cgroup` and `--container` leave them to the events they belong to.
fn passes_packet_filter(tuple: &Tuple) -> bool {
    passes_filter(tuple, 0, 0, false)
}

fn passes_filter(tuple: &Tuple, pid: u32, cgroup: u64, by_process: bool) -> bool {
    let f = filter();
    // SAFETY: see `offsets()`; the lists live in the same global.
    let (n_ports, n_pids, n_cgroups, n_netns) = unsafe {
        (
            read_volatile(addr_of!((*f).n_ports)),
            read_volatile(addr_of!((*f).n_pids)),
            read_volatile(addr_of!((*f).n_cgroups)),
            read_volatile(addr_of!((*f).n_netns)),
        )
    };
    // SAFETY: as above.
    let (ports, pids, cgroups, netns) = unsafe {
        (
            addr_of!((*f).ports),
            addr_of!((*f).pids),
            addr_of!((*f).cgroups),
            addr_of!((*f).netns),
        )
    };
    let port_ok = n_ports == 0
        || listed(ports, n_ports, tuple.local_port)
        || listed(ports, n_ports, tuple.remote_port);
    // Neither an owner nor a task that ran the code: no process to match.
    let process_ok = !by_process
        || ((n_pids == 0 || (pid != ABSENT && listed(pids, n_pids, pid)))
            && (n_cgroups == 0 || (pid != ABSENT && listed(cgroups, n_cgroups, cgroup))));
    port_ok && process_ok && (n_netns == 0 || listed(netns, n_netns, tuple.netns))
}

/// Whether `value` is among the first `n` entries of a filter list.
#[inline(always)]
fn listed<T: PartialEq + Copy, const N: usize>(list: *const [T; N], n: u32, value: T) -> bool {
    for i in 0..N {
        if i as u32 >= n {
            break;
        }
        // SAFETY: i < N, and `list` points into the FILTER global.
        if unsafe { read_volatile(addr_of!((*list)[i])) } == value {
            return true;
        }
    }
    false
}

fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; programs do not nest on one CPU for these hooks.
        unsafe { *slot += 1 };
    }
}

/// Loads `field` from `base`; `None` when the kernel lacks it or the read fails.
#[inline(always)]
fn load(base: *const u8, field: Field) -> Option<u64> {
    if field.offset == ABSENT {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one yields Err.
    let raw = unsafe {
        let p = base.add(field.offset as usize);
        match field.size {
            1 => bpf_probe_read_kernel(p).map(|v: u8| v as u64),
            2 => bpf_probe_read_kernel(p.cast::<u16>()).map(|v| v as u64),
            4 => bpf_probe_read_kernel(p.cast::<u32>()).map(|v| v as u64),
            8 => bpf_probe_read_kernel(p.cast::<u64>()),
            _ => Err(-1),
        }
    };
    match raw {
        Ok(v) if field.bit_width != 0 && field.bit_width < 64 => {
            Some((v >> field.bit_shift) & ((1u64 << field.bit_width) - 1))
        }
        Ok(v) => Some(v),
        Err(_) => {
            count(counter::READ_ERRORS);
            None
        }
    }
}

fn read_bytes<const N: usize>(base: *const u8, field: Field, out: &mut [u8; N]) {
    if field.offset == ABSENT {
        return;
    }
    // SAFETY: bpf_probe_read_kernel_buf checks the address.
    if unsafe { bpf_probe_read_kernel_buf(base.add(field.offset as usize), out) }.is_err() {
        count(counter::READ_ERRORS);
    }
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const TCP_TIME_WAIT: u8 = 6;
const TCP_NEW_SYN_RECV: u8 = 12;
const PF_EXITING: u64 = 0x4;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_RST: u8 = 0x04;
const TCP_FLAG_ACK: u8 = 0x10;
const BPF_F_USER_STACK: u64 = 1 << 8;
const IPPROTO_TCP: u8 = 6;

/// Parses the trigger skb's IP and TCP headers; the RST goes back to its source,
/// so the packet's destination is the local end.
fn read_packet(skb: *const u8, pkt: &mut Packet, tuple: &mut Tuple) -> bool {
    let (Some(head), Some(nh), Some(th)) = (
        load(skb, off!(skb_head)),
        load(skb, off!(skb_network_header)),
        load(skb, off!(skb_transport_header)),
    ) else {
        return false;
    };
    let head = head as *const u8;
    let mut tcp = [0u8; 20];
    // SAFETY: checked reads of kernel memory.
    if unsafe { bpf_probe_read_kernel_buf(head.add(th as usize), &mut tcp) }.is_err() {
        count(counter::READ_ERRORS);
        return false;
    }
    let mut ip = [0u8; 40];
    // SAFETY: as above; an IPv4 header may be shorter than 40 bytes but the
    // TCP header follows it in the same linear buffer.
    if unsafe { bpf_probe_read_kernel_buf(head.add(nh as usize), &mut ip) }.is_err() {
        count(counter::READ_ERRORS);
        return false;
    }
    let doff = ((tcp[12] >> 4) as u32) * 4;
    tuple.remote_port = u16::from_be_bytes([tcp[0], tcp[1]]);
    tuple.local_port = u16::from_be_bytes([tcp[2], tcp[3]]);
    pkt.seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    pkt.ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    pkt.flags = tcp[13];
    pkt.window = u16::from_be_bytes([tcp[14], tcp[15]]);
    match ip[0] >> 4 {
        4 => {
            let ihl = ((ip[0] & 0x0f) as u32) * 4;
            let total = u16::from_be_bytes([ip[2], ip[3]]) as u32;
            pkt.len = total.saturating_sub(ihl + doff);
            pkt.ttl = ip[8];
            pkt.protocol = ip[9];
            tuple.family = AF_INET;
            tuple.remote_addr[..4].copy_from_slice(&ip[12..16]);
            tuple.local_addr[..4].copy_from_slice(&ip[16..20]);
        }
        6 => {
            let payload = u16::from_be_bytes([ip[4], ip[5]]) as u32;
            pkt.len = payload.saturating_sub(doff);
            pkt.ttl = ip[7];
            pkt.protocol = ip[6];
            tuple.family = AF_INET6;
            tuple.remote_addr.copy_from_slice(&ip[8..24]);
            tuple.local_addr.copy_from_slice(&ip[24..40]);
        }
        _ => return false,
    }
    true
}

/// The 4-tuple from `struct sock_common`, valid for full, request and timewait sockets.
fn read_sock_tuple(sk: *const u8, tuple: &mut Tuple) {
    tuple.family = load(sk, off!(skc_family)).unwrap_or(0) as u16;
    tuple.remote_port = u16::from_be(load(sk, off!(skc_dport)).unwrap_or(0) as u16);
    tuple.local_port = load(sk, off!(skc_num)).unwrap_or(0) as u16;
    // tcp_set_state(CLOSE) unhashes the socket and zeroes skc_num; a full
    // socket still has its port in inet_sport (timewait/request socks do not).
    if tuple.local_port == 0 {
        let state = load(sk, off!(skc_state)).unwrap_or(0) as u8;
        if state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV {
            tuple.local_port = u16::from_be(load(sk, off!(inet_sport)).unwrap_or(0) as u16);
        }
    }
    if tuple.family == AF_INET6 {
        read_bytes(sk, off!(skc_v6_rcv_saddr), &mut tuple.local_addr);
        read_bytes(sk, off!(skc_v6_daddr), &mut tuple.remote_addr);
    } else {
        let local = load(sk, off!(skc_rcv_saddr)).unwrap_or(0) as u32;
        let remote = load(sk, off!(skc_daddr)).unwrap_or(0) as u32;
        // The kernel stores them in network order; keep the bytes as they are.
        tuple.local_addr[..4].copy_from_slice(&local.to_ne_bytes());
        tuple.remote_addr[..4].copy_from_slice(&remote.to_ne_bytes());
    }
}

/// Socket facts that explain why the RST was made.
fn read_sock(sk: *const u8, ev: &mut RstEvent) {
    ev.flags |= flag::HAS_SOCK;
    ev.state = load(sk, off!(skc_state)).unwrap_or(0) as u8;
    ev.cookie = load(sk, off!(skc_cookie)).unwrap_or(0);
    if ev.state == TCP_TIME_WAIT {
        ev.tw_substate = load(sk, off!(tw_substate)).unwrap_or(0) as u8;
        return;
    }
    if ev.state == TCP_NEW_SYN_RECV {
        return;
    }
    if ev.state == TCP_LISTEN as u8 {
        let queued = load(sk, off!(sk_ack_backlog));
        let max = load(sk, off!(sk_max_ack_backlog));
        if let (Some(queued), Some(max)) = (queued, max)
            && queued > max
        {
            ev.flags |= flag::ACCEPT_QUEUE_FULL;
        }
    }
    ev.flags |= flag::FULL_SOCK;
    if ev.state == TCP_CLOSE as u8
        && LAST_CLOSE.get(0).copied() == Some(sk as u64)
        && let Some(&old) = LAST_CLOSE.get(1)
    {
        ev.closed_from = old as u8;
    }
    let sk_flags = load(sk, off!(sk_flags)).unwrap_or(0);
    let bit = |n: u32| n < 64 && sk_flags & (1u64 << n) != 0;
    if bit(off!(sock_dead_bit)) {
        ev.flags |= flag::SOCK_DEAD;
    }
    if bit(off!(sock_linger_bit)) {
        ev.flags |= flag::SOCK_LINGER;
    }
    if bit(off!(sock_keepopen_bit)) {
        ev.flags |= flag::SOCK_KEEPOPEN;
    }
    if bit(off!(sock_done_bit)) {
        ev.flags |= flag::PEER_FIN;
    }
    ev.shutdown = load(sk, off!(sk_shutdown)).unwrap_or(0) as u8;
    ev.lingertime = load(sk, off!(sk_lingertime))
        .unwrap_or(0)
        .min(u32::MAX as u64) as u32;
    ev.sk_err = load(sk, off!(sk_err)).unwrap_or(0) as u32;
    ev.probes_out = load(sk, off!(icsk_probes_out)).unwrap_or(0) as u8;
    let seq = |f: Field| load(sk, f).unwrap_or(0) as u32;
    ev.unread = seq(off!(rcv_nxt)).wrapping_sub(seq(off!(copied_seq)));
    ev.unsent = seq(off!(write_seq)).wrapping_sub(seq(off!(snd_nxt)));
    ev.unacked = seq(off!(snd_nxt)).wrapping_sub(seq(off!(snd_una)));
    if let Some(rcv) = load(sk, off!(rcv_tstamp)) {
        // SAFETY: the helper has no preconditions. tcp_jiffies32 is the
        // low half of jiffies64.
        let now = unsafe { bpf_jiffies64() } as u32;
        ev.rcv_idle_jiffies = now.wrapping_sub(rcv as u32);
    }
}

/// Whether the current task is exiting, and with which signal.
fn read_task(ev: &mut RstEvent) {
    // SAFETY: the helper returns the current task pointer.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    if task.is_null() {
        return;
    }
    if load(task, off!(task_flags)).unwrap_or(0) & PF_EXITING != 0 {
        ev.flags |= flag::TASK_EXITING;
        ev.exit_signal = (load(task, off!(task_exit_code)).unwrap_or(0) & 0x7f) as u8;
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: eBPF programs cannot panic; the verifier rejects any reachable panic path.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
