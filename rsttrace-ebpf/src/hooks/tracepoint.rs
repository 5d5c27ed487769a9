//! Classic tracepoints: the record is read at offsets parsed from tracefs
//! `format` files (layouts differ between kernels), handed over in globals.

use aya_ebpf::{EbpfContext, macros::tracepoint, programs::TracePointContext};
use rsttrace_ebpf::{
    abi::{ABSENT, hook},
    linux::{IPPROTO_TCP, tcp_flag},
};

use crate::{
    event::{on_receive_reset, on_send_reset},
    facts::{Packet, Tuple, read_packet},
    owners,
    read::{Probe, read_ctx},
};

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
#[inline(always)]
pub fn tp_tcp_send_reset(ctx: TracePointContext) -> u32 {
    let tp = global!(tuning.tp);
    let (Some(sk), Some(skb)) = (
        read_ctx::<u64>(&ctx, tp.send_skaddr),
        read_ctx::<u64>(&ctx, tp.send_skbaddr),
    ) else {
        return 0;
    };
    // ABSENT rather than an Option: a None's payload is an uninitialised
    // register, and 6.1's verifier rejects the program for copying it.
    let reason = read_ctx::<u32>(&ctx, tp.send_reason).unwrap_or(ABSENT);
    on_send_reset::<Probe>(
        ctx.as_ptr(),
        sk as *const u8,
        skb as *const u8,
        reason,
        hook::TP_SEND_RESET,
    );
    0
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
#[inline(always)]
pub fn tp_tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let Some(sk) = read_ctx::<u64>(&ctx, global!(tuning.tp).recv_skaddr) else {
        return 0;
    };
    on_receive_reset::<Probe>(
        ctx.as_ptr(),
        sk as *const u8,
        core::ptr::null(),
        hook::TP_RECEIVE_RESET,
    );
    0
}

/// `skb:kfree_skb` with reason NO_SOCKET: `tcp_v{4,6}_rcv` found no socket,
/// answered with an RST (unless the segment was itself an RST) and dropped
/// the segment. Attached only where the send hook misses socketless RSTs.
#[tracepoint(category = "skb", name = "kfree_skb")]
#[inline(always)]
pub fn tp_kfree_skb(ctx: TracePointContext) -> u32 {
    let no_socket = global!(kfree_skb.no_socket);
    // Every dropped packet of the host passes here: leave fast.
    if no_socket == ABSENT || read_ctx::<u32>(&ctx, global!(kfree_skb.reason)) != Some(no_socket) {
        return 0;
    }
    let Some(skb) = read_ctx::<u64>(&ctx, global!(kfree_skb.skbaddr)) else {
        return 0;
    };
    let skb = skb as *const u8;
    let mut tuple = Tuple::default();
    let mut pkt = Packet::default();
    // UDP and others drop with NO_SOCKET too; an RST gets no RST back.
    if !read_packet::<Probe>(skb, &mut pkt, &mut tuple)
        || pkt.protocol != IPPROTO_TCP
        || pkt.flags & tcp_flag::RST != 0
    {
        return 0;
    }
    on_send_reset::<Probe>(
        ctx.as_ptr(),
        core::ptr::null(),
        skb,
        ABSENT,
        hook::TP_KFREE_SKB_NO_SOCKET,
    );
    0
}

/// Where the kernel's own BTF is missing (a `--btf` file): the classic
/// tracepoint, its record read at offsets from tracefs.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
#[inline(always)]
pub fn owner_set_state(ctx: TracePointContext) -> u32 {
    let Some(newstate) = read_ctx::<i32>(&ctx, global!(owner_tp.set_state_newstate)) else {
        return 0;
    };
    if !owners::wants(newstate) {
        return 0;
    }
    let (Some(protocol), Some(oldstate), Some(sk)) = (
        read_ctx::<u16>(&ctx, global!(owner_tp.set_state_protocol)),
        read_ctx::<i32>(&ctx, global!(owner_tp.set_state_oldstate)),
        read_ctx::<u64>(&ctx, global!(owner_tp.set_state_skaddr)),
    ) else {
        return 0;
    };
    if protocol == IPPROTO_TCP as u16 {
        owners::on_set_state::<Probe>(sk, oldstate, newstate);
    }
    0
}
