//! Task or interrupt: what ran the code when a hook fired. In an interrupt
//! `current` is whatever task it landed on, unrelated to the socket. Decided
//! at RST time, so that nothing runs per softirq (`Tuning::context`):
//! - from this CPU's preempt count, where kallsyms gives its address;
//! - else from the socket lock: a full socket's RST, close or state change
//!   made while a task owns the lock (`sk_lock.owned`) runs in that task
//!   (its syscall, or the backlog it processes in release_sock()); the
//!   softirq paths (packet receive, the TCP timers) run on unowned sockets,
//!   and defer their work while a task owns one. Sockets without that lock
//!   (timewait, request) and socketless RSTs come from packet receive.
//!
//! Which softirq it was, the call path says: an active reset (no trigger
//! segment) made in softirq comes from a TCP timer (keepalive,
//! retransmission, FIN_WAIT2), anything else from packet receive.

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_probe_read_kernel};
use rsttrace_ebpf::{
    abi::{context, counter},
    linux::{PREEMPT_INTERRUPT_MASK, softirq, tcp_state},
};

use crate::{count, read::Kmem};

/// What ran the code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exec {
    Task,
    Interrupt,
    Unknown,
}

/// The context of a hook that fired for `sk` (null: no socket).
pub(crate) fn current<M: Kmem>(sk: *const u8) -> Exec {
    let state = if sk.is_null() {
        0
    } else {
        M::load(sk, off!(skc_state)).unwrap_or(0) as u8
    };
    current_in::<M>(sk, state)
}

/// `current` for a caller that has read the socket's state already.
#[inline(always)]
pub(crate) fn current_in<M: Kmem>(sk: *const u8, state: u8) -> Exec {
    if global!(tuning.context) == context::source::PREEMPT_COUNT {
        from_preempt_count()
    } else if sk.is_null() {
        Exec::Interrupt
    } else {
        from_socket_lock::<M>(sk, state)
    }
}

/// The event's (context, softirq vector).
#[inline(always)]
pub(crate) fn for_event(exec: Exec, active_reset: bool) -> (u8, u8) {
    match exec {
        Exec::Task => (context::TASK, 0),
        Exec::Interrupt if active_reset => (context::SOFTIRQ, softirq::TIMER),
        Exec::Interrupt => (context::SOFTIRQ, softirq::NET_RX),
        Exec::Unknown => (context::UNKNOWN, 0),
    }
}

fn from_preempt_count() -> Exec {
    let preempt = global!(tuning.preempt);
    // SAFETY: the helper has no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    // SAFETY: bpf_probe_read_kernel checks the addresses; a bad one is Err.
    let value = unsafe {
        bpf_probe_read_kernel((preempt.per_cpu_offset + cpu * 8) as *const u64)
            .and_then(|base| bpf_probe_read_kernel(base.wrapping_add(preempt.count) as *const u32))
    };
    match value {
        Ok(pc) if pc & PREEMPT_INTERRUPT_MASK != 0 => Exec::Interrupt,
        Ok(_) => Exec::Task,
        Err(_) => {
            count(counter::READ_ERRORS);
            Exec::Unknown
        }
    }
}

#[inline(always)]
fn from_socket_lock<M: Kmem>(sk: *const u8, state: u8) -> Exec {
    if state == tcp_state::TIME_WAIT || state == tcp_state::NEW_SYN_RECV {
        return Exec::Interrupt;
    }
    match M::load(sk, off!(sk_lock_owned)) {
        Some(0) => Exec::Interrupt,
        Some(_) => Exec::Task,
        None => Exec::Unknown,
    }
}
