//! rsttrace kernel programs: one event per TCP RST sent or received.
//!
//! Hooks (userspace picks per kernel, see `rsttrace/src/probes.rs`), one
//! module per attach type, each a thin wrapper that reads its context and
//! hands (sk, skb, reason) to the shared event path (`event.rs`):
//! - `hooks/tp_btf.rs`: `tcp_send_reset` (sk, skb, reason) on 6.10+, or
//!   (sk, skb) before; `tcp_receive_reset` (sk); `inet_sk_error_report`
//!   (aborts); `net_dev_queue`/`netif_receive_skb` (pcapng segments);
//! - `hooks/tracepoint.rs`: the classic `tcp:tcp_send_reset` /
//!   `tcp:tcp_receive_reset` fallback (offsets parsed from tracefs),
//!   `skb:kfree_skb` and, without the kernel's BTF, the owner tracepoint;
//! - `hooks/kprobe.rs`, `hooks/fentry.rs`: the reset functions themselves
//!   (`tcp_v4_send_reset`, `tcp_v6_send_reset`, `tcp_send_active_reset`,
//!   `tcp_reset`) where the kernel has them: they also see RSTs sent without
//!   a socket, which 6.1's tracepoint misses, and `tcp_reset`'s skb is the
//!   received RST itself.
//!
//! The rest, by concern: `context.rs` (task or interrupt), `current.rs`
//! (the task that ran the hook), `owners.rs`
//! (who owns a socket), `history.rs` (a 4-tuple's last close), `aborts.rs`
//! (errors without an RST), `packets.rs` (RST segments for pcapng),
//! `facts.rs` (socket, packet and task reads),
//! `stacks.rs` (`--stack`), `filter.rs` (in-kernel filters), `read.rs`
//! (checked kernel reads), `sink.rs` (the `EVENTS` map: ring buffer, or
//! perf event array with the `perf` feature).
//!
//! The event path is inlined into each program (`#[inline(always)]`): a
//! BPF-to-BPF call costs a call, a frame and a return through the kernel's
//! return thunk, as a helper call does.
//!
//! Rust eBPF has no CO-RE: every kernel struct field is read at an offset that
//! userspace resolved from the running kernel's BTF (`OFFSETS`).
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::BPF_F_NO_COMMON_LRU,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, StackTrace},
};
use rsttrace_ebpf::abi::{
    Filter, HISTORY_WAYS, HistorySet, KfreeSkb, ListenerKey, MAX_HISTORY, MAX_LISTENERS,
    MAX_OWNERS, MAX_STACKS, Offsets, Owner, OwnerTracepoints, Tuning, counter,
};

#[unsafe(no_mangle)]
static OFFSETS: Global<Offsets> = Global::new(Offsets::UNRESOLVED);
#[unsafe(no_mangle)]
static FILTER: Global<Filter> = Global::new(Filter::ALL);
#[unsafe(no_mangle)]
static TUNING: Global<Tuning> = Global::new(Tuning::DEFAULT);
#[unsafe(no_mangle)]
static KFREE_SKB: Global<KfreeSkb> = Global::new(KfreeSkb::UNRESOLVED);
#[unsafe(no_mangle)]
static OWNER_TP: Global<OwnerTracepoints> = Global::new(OwnerTracepoints::UNRESOLVED);

/// Socket address → the process proven to own it (see `owners.rs`).
/// A new address takes an insert: per-CPU LRU lists keep those inserts
/// off a lock all CPUs share.
#[map]
static OWNERS: LruHashMap<u64, Owner> =
    LruHashMap::with_max_entries(MAX_OWNERS, BPF_F_NO_COMMON_LRU);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
/// Listening port → the process that called listen() on it: the owner
/// of its accepted connections until they prove their own (see `owners.rs`).
#[map]
static LISTENERS: LruHashMap<ListenerKey, Owner> = LruHashMap::with_max_entries(MAX_LISTENERS, 0);
/// 4-tuple or listening port → its last close (see `history.rs`).
#[map]
static HISTORY: Array<HistorySet> = Array::with_max_entries(MAX_HISTORY / HISTORY_WAYS as u32, 0);
/// `--stack`: kernel and user stacks, by id.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(MAX_STACKS, 0);
/// `--stack`, per CPU: [start of the budget window, stacks taken in it]
/// (see `stacks.rs`).
#[map]
static STACK_BUDGET: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);
/// Per CPU: the last RST's socket and time (`aborts::echo_now`), so that
/// the error report the same reset raises a moment later (tcp_reset,
/// tcp_abort, keepalive) is not reported a second time as an abort (see
/// `aborts.rs`).
#[map]
static LAST_RST: PerCpuArray<SockNote> = PerCpuArray::with_max_entries(1, 0);
/// Per CPU: the socket and old state of the last transition to CLOSE, so
/// that the RST sent right after it (same call) says which state it left.
#[map]
static LAST_CLOSE: PerCpuArray<SockNote> = PerCpuArray::with_max_entries(1, 0);

/// A socket and one word about it, in one map value: one lookup for both,
/// where two slots of an array took a lookup each.
#[repr(C)]
struct SockNote {
    sk: u64,
    word: u64,
}

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
fn kfree_skb() -> *const KfreeSkb {
    (&KFREE_SKB as *const Global<KfreeSkb>).cast()
}

/// Reads one field of a global through its pointer (see `offsets()`).
macro_rules! global {
    ($global:ident . $field:ident) => {
        // SAFETY: see `offsets()`.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*crate::$global()).$field)) }
    };
}
/// A kernel field's place (`Field`), resolved from BTF: a handle whose
/// members are read where used (`read::FieldRef`).
macro_rules! off {
    ($field:ident) => {
        crate::read::FieldRef::of(
            // SAFETY: see `offsets()`.
            unsafe { core::ptr::addr_of!((*crate::offsets()).$field) },
        )
    };
}

// First: its `zeroed!` is used by the modules below.
#[macro_use]
mod read;
mod aborts;
mod context;
mod current;
mod event;
mod facts;
mod filter;
mod history;
mod hooks;
mod owners;
mod packets;
mod sink;
mod stacks;

fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a valid, aligned per-CPU slot for this run. A softirq's
        // hook that interrupts a task's between this load and store on the
        // same CPU loses one increment. An atomic add (inline asm: core has
        // no read-modify-write atomics on this target) closes that, but it
        // kept the compiler from merging paths and pushed the send programs
        // past 6.1's verifier limit.
        unsafe { *slot += 1 };
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
