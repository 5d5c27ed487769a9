//! A socketless RST (or one from a TIME_WAIT socket) names no process. The
//! last close of its 4-tuple does: who gave up on a connect, which listener
//! left the port, which connection was aborted with what error.
//!
//! Every active close of a healthy connection writes one (TIME_WAIT
//! follows it), so the table is a plain array of sets, `HISTORY_WAYS`
//! slots each, that a key's hash picks: a write replaces the set's oldest
//! close, and costs a hash and a few compares. An LRU hash map's insert
//! took a free element from its lists, a quarter of the set-state
//! program's time under connection churn. Two CPUs writing the same slot
//! in the same instant could mix two closes; a lookup checks the whole key,
//! so at worst a close is reported with another close's details.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use rsttrace_ebpf::{
    abi::{HISTORY_WAYS, History, HistoryKey, MAX_HISTORY, RstEvent, counter, history, peer_key},
    linux::tcp_state,
};

use crate::{
    HISTORY,
    context::{self, Exec},
    count,
    current::Current,
    facts::{Tuple, netns_of, read_sock_tuple, soft_error},
    owners::{forget_listener, owner_at},
    read::{Kmem, copy_comm},
};

const LISTEN: i32 = tcp_state::LISTEN as i32;
const SYN_SENT: i32 = tcp_state::SYN_SENT as i32;
const LAST_ACK: i32 = tcp_state::LAST_ACK as i32;

/// A socket's transition to CLOSE from `oldstate`.
pub(crate) fn record_close<M: Kmem>(sk: *const u8, oldstate: i32) {
    let err = M::load(sk, off!(sk_err)).unwrap_or(0) as u8;
    // Read only where it decides: this runs on every connection's close.
    let task = || context::current::<M>(sk) != Exec::Interrupt;
    // The passive closer's last ACK: the healthy end of most connections,
    // which nothing will ask about (no TIME_WAIT follows it).
    if oldstate == LAST_ACK && err == 0 && !task() {
        return;
    }
    let kind = match oldstate {
        LISTEN => history::LISTENER_CLOSED,
        // Only the application closing the socket itself, with no error
        // (a refused or unreachable connect closes it with one).
        // An ICMP error that arrived while connect() held the socket lock
        // stays soft (sk_err_soft); an application that read it with
        // SO_ERROR cleared it, and its close looks abandoned.
        SYN_SENT if err == 0 && task() && soft_error::<M>(sk) == 0 => history::CONNECT_ABANDONED,
        SYN_SENT => return,
        _ => history::CLOSED,
    };
    write_close::<M>(sk, oldstate, kind, err);
}

/// `record_close`'s record. Not inlined: its records stay off the stack
/// of the set-state program, whose other call (`remember_owner`) needs
/// its own, and the 512 bytes the verifier allows are shared by both
/// frames of a call.
#[inline(never)]
fn write_close<M: Kmem>(sk: *const u8, oldstate: i32, kind: u8, err: u8) {
    zeroed!(tuple: Tuple);
    read_sock_tuple::<M>(sk, tuple);
    tuple.netns = netns_of::<M>(sk, core::ptr::null());
    let mut key = history_key(tuple);
    if kind == history::LISTENER_CLOSED {
        listener_key(&mut key);
        forget_listener(tuple.netns, tuple.local_port);
    }
    zeroed!(entry: History);
    // SAFETY: the helper has no preconditions.
    entry.ts_ns = unsafe { bpf_ktime_get_ns() };
    entry.kind = kind;
    entry.state = oldstate as u8;
    entry.err = err;
    // The owner where it is known; else the task closing it, which in its
    // own context is the application (an abandoned connect, a close()).
    let owner = owner_at(sk, peer_key(tuple.remote_port, &tuple.remote_addr));
    if !owner.is_null() {
        // SAFETY: map value, valid for this run of the program.
        let o = unsafe { &*owner };
        entry.tgid = o.tgid;
        entry.pid = o.pid;
        // SAFETY: comm fields of a History and an Owner.
        unsafe { copy_comm(&mut entry.comm, &o.comm) };
    } else if context::current::<M>(sk) != Exec::Interrupt {
        let current = Current::get::<M>();
        let pid_tgid = current.pid_tgid();
        entry.tgid = (pid_tgid >> 32) as u32;
        entry.pid = pid_tgid as u32;
        // SAFETY: History's comm field is aligned (`comm_into`).
        unsafe { current.comm_into(&mut entry.comm) };
    }
    store(&key, entry);
}

/// Writes `close` as `key`'s: over its earlier close, else over the
/// oldest in its set (counted when that held another key's).
fn store(key: &HistoryKey, close: &History) {
    let Some(set) = HISTORY.get_ptr_mut(set_of(key)) else {
        return;
    };
    // SAFETY: map value, valid for this run of the program.
    let slots = unsafe { &mut (*set).slots };
    let mut victim = 0;
    let mut oldest = u64::MAX;
    for (i, slot) in slots.iter().enumerate() {
        if same_key(&slot.key, key) {
            victim = i;
            oldest = 0;
            break;
        }
        if slot.close.ts_ns < oldest {
            oldest = slot.close.ts_ns;
            victim = i;
        }
    }
    if oldest != 0 {
        count(counter::HISTORY_EVICTED);
    }
    if let Some(slot) = slots.get_mut(victim) {
        slot.key = *key;
        slot.close = *close;
    }
}

/// `key`'s last close, if its set still holds it.
fn find(key: &HistoryKey) -> Option<&'static History> {
    let set = HISTORY.get_ptr(set_of(key))?;
    // SAFETY: map value, valid for this run of the program.
    let slots = unsafe { &(*set).slots };
    slots
        .iter()
        .find(|slot| slot.close.ts_ns != 0 && same_key(&slot.key, key))
        .map(|slot| &slot.close)
}

const SETS: u32 = MAX_HISTORY / HISTORY_WAYS as u32;
const _: () = assert!(SETS.is_power_of_two());

/// The key's words: 44 bytes, 4-aligned, every byte set (no padding).
fn words(key: &HistoryKey) -> &[u32; 11] {
    const { assert!(size_of::<HistoryKey>() == 44 && align_of::<HistoryKey>() == 4) };
    // SAFETY: same size and alignment, and every bit pattern is a u32.
    unsafe { &*(key as *const HistoryKey).cast::<[u32; 11]>() }
}

/// Word by word, differences or-ed together: an array `==` becomes a
/// call of the memcmp builtin, a byte loop (a third of the set-state
/// program's samples under connection churn).
fn same_key(a: &HistoryKey, b: &HistoryKey) -> bool {
    let diff = words(a)
        .iter()
        .zip(words(b))
        .fold(0, |diff, (x, y)| diff | (x ^ y));
    diff == 0
}

/// A multiplicative hash of the key's words; its top bits pick the set.
fn set_of(key: &HistoryKey) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for w in words(key) {
        h = (h ^ w).wrapping_mul(0x9e37_79b1);
    }
    (h >> (32 - SETS.trailing_zeros())) & (SETS - 1)
}

/// The 4-tuple's last close, or with `listener` (a SYN, or a child reset
/// by its listener's close) the listening port's. Not inlined: as a call, its found/not-found paths
/// meet again at the return, instead of doubling the states the verifier
/// walks through the rest of the event (1.8 s → 0.6 s to load on 6.18, and
/// the classic tracepoint program within 6.1's 1M-instruction limit).
#[inline(never)]
pub(crate) fn read_history(tuple: &Tuple, listener: bool, ev: &mut RstEvent) {
    let mut key = history_key(tuple);
    // A SYN opens a new connection: what tells about it is whoever
    // listened on the port, not how an earlier connection of the 4-tuple
    // ended (and a lookup that misses costs two cache misses).
    if listener {
        listener_key(&mut key);
    }
    let Some(h) = find(&key) else {
        return;
    };
    ev.hist_ts_ns = h.ts_ns;
    ev.hist_tgid = h.tgid;
    ev.hist_pid = h.pid;
    // SAFETY: comm fields of an RstEvent and a History.
    unsafe { copy_comm(&mut ev.hist_comm, &h.comm) };
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
