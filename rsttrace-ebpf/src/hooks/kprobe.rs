//! kprobes on the reset functions, attached by symbol name at run time
//! (userspace finds the name, which may carry a compiler suffix, in
//! /proc/kallsyms). `tcp_v{4,6}_send_reset(sk, skb, ...)` runs for every
//! passive RST, including those without a socket; `tcp_send_active_reset(sk,
//! ...)` for active ones; `tcp_reset(sk, skb)` when an RST is accepted;
//! `sock_def_error_report(sk)` for aborts where the kernel has no
//! `inet_sk_error_report` tracepoint (before 5.14).

use aya_ebpf::{EbpfContext, macros::kprobe, programs::ProbeContext};
use rsttrace_ebpf::abi::{ABSENT, hook};

use crate::{
    aborts::on_error_report,
    event::{on_passive_reset_call, on_receive_reset, on_send_reset},
    read::Probe,
};

#[kprobe]
#[inline(always)]
pub fn kp_send_reset(ctx: ProbeContext) -> u32 {
    let sk: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    let skb: *const u8 = ctx.arg(1).unwrap_or(core::ptr::null());
    on_passive_reset_call::<Probe>(ctx.as_ptr(), sk, skb, hook::KPROBE_SEND_RESET);
    0
}

#[kprobe]
#[inline(always)]
pub fn kp_send_active_reset(ctx: ProbeContext) -> u32 {
    let sk: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    on_send_reset::<Probe>(
        ctx.as_ptr(),
        sk,
        core::ptr::null(),
        ABSENT,
        hook::KPROBE_SEND_RESET,
    );
    0
}

#[kprobe]
#[inline(always)]
pub fn kp_tcp_reset(ctx: ProbeContext) -> u32 {
    let sk: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    let skb: *const u8 = ctx.arg(1).unwrap_or(core::ptr::null());
    on_receive_reset::<Probe>(ctx.as_ptr(), sk, skb, hook::KPROBE_RECEIVE_RESET);
    0
}

#[kprobe]
#[inline(always)]
pub fn kp_error_report(ctx: ProbeContext) -> u32 {
    let sk: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    on_error_report::<Probe>(ctx.as_ptr(), sk, hook::KPROBE_ERROR_REPORT);
    0
}
