//! A socketless RST (or one from a TIME_WAIT socket) names no process. The
//! last close of its 4-tuple does: who gave up on a connect, which listener
//! left the port, which connection was aborted with what error. Kept in an
//! LRU map, so the memory is bounded (`MAX_HISTORY`).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
};
use rsttrace_ebpf::{
    abi::{History, HistoryKey, RstEvent, counter, history, peer_key},
    linux::tcp_state,
};

use crate::{
    HISTORY,
    context::{self, Exec},
    count,
    facts::{Tuple, netns_of, read_sock_tuple, soft_error},
    owners::{forget_listener, owner_at},
    read::Kmem,
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
    let mut tuple = Tuple::default();
    read_sock_tuple::<M>(sk, &mut tuple);
    tuple.netns = netns_of::<M>(sk, core::ptr::null());
    let mut key = history_key(&tuple);
    if kind == history::LISTENER_CLOSED {
        listener_key(&mut key);
        forget_listener(tuple.netns, tuple.local_port);
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
    let owner = owner_at(sk, peer_key(tuple.remote_port, &tuple.remote_addr));
    if !owner.is_null() {
        // SAFETY: map value, valid for this run of the program.
        let o = unsafe { &*owner };
        entry.tgid = o.tgid;
        entry.pid = o.pid;
        entry.comm = o.comm;
    } else if task() {
        let pid_tgid = bpf_get_current_pid_tgid();
        entry.tgid = (pid_tgid >> 32) as u32;
        entry.pid = pid_tgid as u32;
        entry.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    // A 4-tuple is nearly always new: insert first, one hash walk.
    if HISTORY.insert(&key, &entry, BPF_NOEXIST.into()).is_ok() {
        count(counter::HISTORY_ADDED);
    } else if let Some(known) = HISTORY.get_ptr_mut(&key) {
        // SAFETY: map value, valid for this run of the program.
        unsafe { *known = entry };
    }
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
    let found = HISTORY.get_ptr(&key);
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
