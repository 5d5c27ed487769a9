//! BTF-typed raw tracepoints: arguments are typed kernel pointers.

use aya_ebpf::{EbpfContext, macros::btf_tracepoint, programs::BtfTracePointContext};
use rsttrace_ebpf::{
    abi::{ABSENT, hook},
    linux::IPPROTO_TCP,
};

use crate::{
    aborts::on_error_report,
    event::{on_receive_reset, on_send_reset},
    owners,
    packets::{on_dev_queue, on_receive_skb},
    read::{Btf, Kmem},
};

/// `tcp_send_reset(sk, skb[, reason])`: one body, two programs, because the
/// verifier rejects reading an argument the kernel's prototype lacks.
macro_rules! btf_send_reset {
    ($(#[$doc:meta])* $name:ident, |$ctx:ident| $reason:expr) => {
        $(#[$doc])*
        #[btf_tracepoint(function = "tcp_send_reset")]
        #[inline(always)]
        pub fn $name($ctx: BtfTracePointContext) -> i32 {
            let sk: *const u8 = $ctx.arg(0);
            let skb: *const u8 = $ctx.arg(1);
            on_send_reset::<Btf>($ctx.as_ptr(), sk, skb, $reason, hook::BTF_SEND_RESET);
            0
        }
    };
}

btf_send_reset!(
    /// 6.10+: with the kernel's `enum sk_rst_reason`.
    btf_tcp_send_reset,
    |ctx| ctx.arg(2)
);
btf_send_reset!(
    /// Kernels before 6.10 have no reason argument.
    btf_tcp_send_reset_no_reason,
    |ctx| ABSENT
);

#[btf_tracepoint(function = "tcp_receive_reset")]
#[inline(always)]
pub fn btf_tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    on_receive_reset::<Btf>(ctx.as_ptr(), sk, core::ptr::null(), hook::BTF_RECEIVE_RESET);
    0
}

#[btf_tracepoint(function = "inet_sk_error_report")]
#[inline(always)]
pub fn btf_inet_sk_error_report(ctx: BtfTracePointContext) -> i32 {
    on_error_report::<Btf>(ctx.as_ptr(), ctx.arg(0), hook::BTF_ERROR_REPORT);
    0
}

/// `inet_sock_set_state(sk, oldstate, newstate)`: every state change of
/// every inet socket on the host passes here, so the new state is tested
/// before anything is read from the socket.
#[btf_tracepoint(function = "inet_sock_set_state")]
#[inline(always)]
pub fn btf_owner_set_state(ctx: BtfTracePointContext) -> i32 {
    let newstate: i32 = ctx.arg(2);
    if !owners::wants(newstate) {
        return 0;
    }
    let sk: *const u8 = ctx.arg(0);
    if Btf::load(sk, off!(sk_protocol)) == Some(IPPROTO_TCP as u64) {
        owners::on_set_state::<Btf>(sk as u64, ctx.arg(1), newstate);
    }
    0
}

#[btf_tracepoint(function = "net_dev_queue")]
#[inline(always)]
pub fn pkt_net_dev_queue(ctx: BtfTracePointContext) -> i32 {
    on_dev_queue(ctx.as_ptr(), ctx.arg(0));
    0
}

#[btf_tracepoint(function = "netif_receive_skb")]
#[inline(always)]
pub fn pkt_netif_receive_skb(ctx: BtfTracePointContext) -> i32 {
    on_receive_skb(ctx.as_ptr(), ctx.arg(0));
    0
}
