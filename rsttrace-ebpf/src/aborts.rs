//! Connections that died without an RST. `sk_error_report()` on an inet
//! socket (its tracepoint, 5.14+; before, a kprobe on the function every
//! TCP socket's `sk->sk_error_report` points at): a hard error ends the
//! connection. Errors that an RST caused
//! (received, or sent by tcp_abort() or the keepalive timer) were events
//! already; the others (ETIMEDOUT, EHOSTUNREACH, an ICMP reject's
//! ECONNREFUSED) are reported as direction ABORT.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_ns};

use rsttrace_ebpf::{
    abi::{ABSENT, counter, direction, echo_clock},
    linux::{IPPROTO_TCP, af},
};

use crate::{
    LAST_RST, count,
    event::{Origin, on_socket_event},
    read::Kmem,
};

/// The echo comes in the same call as its RST (tcp_reset → tcp_done, the
/// keepalive timer, tcp_abort): microseconds, but a guest under emulation
/// on a loaded host can be descheduled between the two for more than
/// 10 ms. The slot is per CPU and cleared when used, so a wider window
/// cannot swallow a later abort of another socket.
const ECHO_WINDOW_NS: u64 = 100_000_000;
/// The same in ticks, whatever HZ is: 25 ms at 1000, 100 ms at 250,
/// 250 ms at 100.
const ECHO_WINDOW_JIFFIES: u64 = 25;

/// Now on the echo slot's clock (`Tuning::echo_clock`); `ns` is the
/// nanosecond clock, for a caller that has read it already.
#[inline(always)]
pub(crate) fn echo_now(ns: impl FnOnce() -> u64) -> u64 {
    if global!(tuning.echo_clock) == echo_clock::JIFFIES {
        // SAFETY: the helper has no preconditions.
        unsafe { bpf_jiffies64() }
    } else {
        ns()
    }
}

/// Whether an RST stamped `at` (`echo_now`) is recent enough for an
/// error report at `now` to be its echo.
#[inline(always)]
fn within_echo_window(now: u64, at: u64) -> bool {
    let window = if global!(tuning.echo_clock) == echo_clock::JIFFIES {
        ECHO_WINDOW_JIFFIES
    } else {
        ECHO_WINDOW_NS
    };
    now.wrapping_sub(at) < window
}

pub(crate) fn on_error_report<M: Kmem>(ctx: *mut c_void, sk: *const u8, hook: u8) {
    if sk.is_null() || M::load(sk, off!(sk_protocol)) != Some(IPPROTO_TCP as u64) {
        return;
    }
    // The tracepoint fires for inet sockets only; the kprobe for every
    // family, where protocol 6 can be something else (NETLINK_XFRM).
    let family = M::load(sk, off!(skc_family)).unwrap_or(0);
    if family != u64::from(af::INET) && family != u64::from(af::INET6) {
        return;
    }
    // No error, nothing to report (tcp_disconnect()'s wake-up after a
    // refused connect, for one): before the echo slot, which an error
    // report without an error leaves for the one that has it.
    if M::load(sk, off!(sk_err)).unwrap_or(0) == 0 {
        return;
    }
    if let Some(last) = LAST_RST.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot; the helper has no preconditions.
        unsafe {
            if (*last).sk == sk as u64 {
                // Once used, or once old, the slot must not swallow a later
                // abort of this socket (or of another at the same address).
                (*last).sk = 0;
                if within_echo_window(echo_now(|| bpf_ktime_get_ns()), (*last).word) {
                    count(counter::ABORTS_MERGED);
                    return;
                }
            }
        }
    }
    on_socket_event::<M>(&Origin {
        ctx,
        sk,
        skb: core::ptr::null(),
        reason: ABSENT,
        hook,
        direction: direction::ABORT,
        nf_hook: 0,
    });
}
