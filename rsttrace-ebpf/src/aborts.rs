//! Connections that died without an RST. `sk_error_report()` on an inet
//! socket: a hard error ends the connection. Errors that an RST caused
//! (received, or sent by tcp_abort() or the keepalive timer) were events
//! already; the others (ETIMEDOUT, EHOSTUNREACH, an ICMP reject's
//! ECONNREFUSED) are reported as direction ABORT.

use core::ffi::c_void;

use rsttrace_ebpf::{
    abi::{ABSENT, direction, hook},
    linux::IPPROTO_TCP,
};

use crate::{
    LAST_RST_SK,
    event::{Origin, on_socket_event},
    read::load,
};

pub(crate) fn on_error_report(ctx: *mut c_void, sk: *const u8) {
    if sk.is_null() || load(sk, off!(sk_protocol)) != Some(IPPROTO_TCP as u64) {
        return;
    }
    if let Some(last) = LAST_RST_SK.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; no other writer on this CPU meanwhile.
        unsafe {
            if *last == sk as u64 {
                *last = 0;
                return;
            }
        }
    }
    if load(sk, off!(sk_err)).unwrap_or(0) == 0 {
        return;
    }
    on_socket_event(&Origin {
        ctx,
        sk,
        skb: core::ptr::null(),
        reason: ABSENT,
        hook: hook::BTF_ERROR_REPORT,
        direction: direction::ABORT,
    });
}
