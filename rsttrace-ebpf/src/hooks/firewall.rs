//! RSTs that netfilter makes (nftables `reject with tcp reset`, iptables
//! `REJECT --reject-with tcp-reset`): no TCP socket sends them, so the
//! TCP hooks never see them.
//!
//! - `kp_nf_send_reset`: a kprobe on `nf_send_reset`/`nf_send_reset6`
//!   (modules nf_reject_ipv4/ipv6). Runs only on a reject.
//! - `btf_socketless_rst`: where those cannot be hooked (no kprobes), every
//!   packet queued on a device passes `net_dev_queue`; the TCP stack's
//!   segments carry their socket (IPv4's RSTs the per-CPU control socket),
//!   so the first load, `skb->sk`, sends almost every packet away. A packet
//!   without one that came in on no device (`skb_iif`, else it is
//!   forwarded) and is a TCP RST was made here without a socket: netfilter's,
//!   unless a TCP hook claims it (userspace pairs them).

use core::mem::MaybeUninit;

use aya_ebpf::{
    EbpfContext,
    macros::{btf_tracepoint, kprobe},
    programs::{BtfTracePointContext, ProbeContext},
};
use rsttrace_ebpf::{
    abi::hook,
    linux::{IPPROTO_TCP, af, tcp_flag},
};

use crate::{
    event::{on_firewall_reset, on_socketless_rst},
    facts::{Packet, Tuple, netns_of, read_header, read_packet},
    read::{Btf, Kmem, Probe},
};

/// Kernel addresses start far above any `enum nf_inet_hooks` value.
const MAX_NF_HOOK: u64 = 8;

/// `nf_send_reset{,6}(net, sk, oldskb, hook)` since 5.11, `(net, oldskb,
/// hook)` before: the third argument is a small hook number on the old
/// prototype and the skb pointer on the new one.
#[kprobe]
#[inline(always)]
pub fn kp_nf_send_reset(ctx: ProbeContext) -> u32 {
    let arg1: u64 = ctx.arg(1).unwrap_or(0);
    let arg2: u64 = ctx.arg(2).unwrap_or(0);
    let (rejected, nf_hook) = if arg2 < MAX_NF_HOOK {
        (arg1, arg2)
    } else {
        (arg2, ctx.arg::<u64>(3).unwrap_or(u64::MAX))
    };
    if rejected == 0 {
        return 0;
    }
    let rejected = rejected as *const u8;
    // nf_send_reset returns without an RST for an RST (and for a segment
    // that is not TCP).
    zeroed!(tuple: Tuple);
    zeroed!(pkt: Packet);
    if !read_packet::<Probe>(rejected, pkt, tuple)
        || pkt.protocol != IPPROTO_TCP
        || pkt.flags & tcp_flag::RST != 0
    {
        return 0;
    }
    let nf_hook = if nf_hook < MAX_NF_HOOK {
        nf_hook as u8 + 1
    } else {
        0
    };
    on_firewall_reset::<Probe>(ctx.as_ptr(), rejected, nf_hook, hook::KPROBE_NF_SEND_RESET);
    0
}

#[btf_tracepoint(function = "net_dev_queue")]
#[inline(always)]
pub fn btf_socketless_rst(ctx: BtfTracePointContext) -> i32 {
    let skb: *const u8 = ctx.arg(0);
    // Every packet the host sends passes here: one load for almost all,
    // typed (an instruction, where a probe read is a helper call).
    if Btf::load(skb, off!(skb_sk)) != Some(0) || Btf::load(skb, off!(skb_iif)) != Some(0) {
        return 0;
    }
    zeroed!(tuple: Tuple);
    if !read_outgoing_rst(skb, tuple) {
        return 0;
    }
    tuple.netns = netns_of::<Probe>(core::ptr::null(), skb);
    on_socketless_rst::<Probe>(ctx.as_ptr(), skb, &tuple, hook::BTF_SOCKETLESS_RST);
    0
}

/// Whether the packet being queued is a TCP RST; fills `tuple` from it,
/// the source being the local end. Read from the network header: on this
/// path the transport header offset need not point at TCP (6.18 has it
/// equal to the network header for netfilter's RSTs). A socketless RST
/// carries no IP options or IPv6 extension headers.
fn read_outgoing_rst(skb: *const u8, tuple: &mut Tuple) -> bool {
    let (Some(head), Some(nh)) = (
        Btf::load(skb, off!(skb_head)),
        Btf::load(skb, off!(skb_network_header)),
    ) else {
        return false;
    };
    let mut hdr = MaybeUninit::<[u8; 60]>::uninit();
    if !read_header((head + nh) as *const u8, &mut hdr) {
        return false;
    }
    // SAFETY: written by the read.
    let hdr = unsafe { hdr.assume_init_ref() };
    let tcp = match hdr[0] {
        // IPv4 without options.
        0x45 if hdr[9] == IPPROTO_TCP => {
            tuple.family = af::INET;
            tuple.local_addr[..4].copy_from_slice(&hdr[12..16]);
            tuple.remote_addr[..4].copy_from_slice(&hdr[16..20]);
            20
        }
        b if b >> 4 == 6 && hdr[6] == IPPROTO_TCP => {
            tuple.family = af::INET6;
            tuple.local_addr.copy_from_slice(&hdr[8..24]);
            tuple.remote_addr.copy_from_slice(&hdr[24..40]);
            40
        }
        _ => return false,
    };
    if hdr[tcp + 13] & tcp_flag::RST == 0 {
        return false;
    }
    tuple.local_port = u16::from_be_bytes([hdr[tcp], hdr[tcp + 1]]);
    tuple.remote_port = u16::from_be_bytes([hdr[tcp + 2], hdr[tcp + 3]]);
    true
}
