//! fentry on the reset functions (6.1 VM; EPERM on this host). Only the
//! first two arguments are read: they have kept their place on every kernel.

use aya_ebpf::{EbpfContext, macros::fentry, programs::FEntryContext};
use rsttrace_ebpf::abi::{ABSENT, hook};

use crate::{
    event::{on_passive_reset_call, on_receive_reset, on_send_reset},
    read::Btf,
};

/// `tcp_v{4,6}_send_reset(sk, skb, ...)`: one body; an fentry program is
/// bound to its function when it is loaded, so each needs its own program.
macro_rules! fentry_passive_reset {
    ($name:ident, $function:tt) => {
        #[fentry(function = $function)]
        #[inline(always)]
        pub fn $name(ctx: FEntryContext) -> i32 {
            on_passive_reset_call::<Btf>(
                ctx.as_ptr(),
                ctx.arg(0),
                ctx.arg(1),
                hook::FENTRY_SEND_RESET,
            );
            0
        }
    };
}

fentry_passive_reset!(fe_tcp_v4_send_reset, "tcp_v4_send_reset");
fentry_passive_reset!(fe_tcp_v6_send_reset, "tcp_v6_send_reset");

#[fentry(function = "tcp_send_active_reset")]
#[inline(always)]
pub fn fe_tcp_send_active_reset(ctx: FEntryContext) -> i32 {
    on_send_reset::<Btf>(
        ctx.as_ptr(),
        ctx.arg(0),
        core::ptr::null(),
        ABSENT,
        hook::FENTRY_SEND_RESET,
    );
    0
}

/// Attached only where BTF shows `tcp_reset` takes the skb (the received RST).
#[fentry(function = "tcp_reset")]
#[inline(always)]
pub fn fe_tcp_reset(ctx: FEntryContext) -> i32 {
    on_receive_reset::<Btf>(
        ctx.as_ptr(),
        ctx.arg(0),
        ctx.arg(1),
        hook::FENTRY_RECEIVE_RESET,
    );
    0
}
