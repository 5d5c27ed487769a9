//! With a pcapng export, the RST segments themselves: every packet of the
//! host passes these two hooks, so anything that is not a TCP RST leaves
//! after two loads from the typed skb and one read of its headers.
//! Attached only when a capture is being written.

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_buf};
use rsttrace_ebpf::{
    abi::{ABI_VERSION, PACKET_BYTES, PacketRecord, counter, kind, packet_dir},
    linux::{IPPROTO_TCP, tcp_flag},
};

use crate::{
    facts::{Tuple, ifindex_of, netns_of, read_header},
    filter::passes_packet_filter,
    read::{Btf, Kmem, zero},
    sink,
};

/// `net_dev_queue`: locally built packets have their network header set;
/// skb->data is still at the link-layer header.
pub(crate) fn on_dev_queue(ctx: *mut c_void, skb: *const u8) {
    if let Some(nh) = Btf::load(skb, off!(skb_network_header))
        && let Some(head) = Btf::load(skb, off!(skb_head))
    {
        capture_rst(ctx, skb, (head + nh) as *const u8, packet_dir::TX);
    }
}

/// `netif_receive_skb`: the link-layer header is pulled, skb->data is the
/// IP header (the network header offset is not reset yet on this path).
pub(crate) fn on_receive_skb(ctx: *mut c_void, skb: *const u8) {
    if let Some(data) = Btf::load(skb, off!(skb_data)) {
        capture_rst(ctx, skb, data as *const u8, packet_dir::RX);
    }
}

/// `skb`'s packet, whose IP header is at `ip`, if it is a TCP RST.
fn capture_rst(ctx: *mut c_void, skb: *const u8, ip: *const u8, dir: u8) {
    // The IP header and the start of the TCP header in one read: 60 bytes
    // hold both for IPv4 without options and for IPv6 (RSTs carry no
    // extension headers).
    let mut hdr = MaybeUninit::<[u8; 60]>::uninit();
    if !read_header(ip, &mut hdr) {
        return;
    }
    // SAFETY: written by the read.
    let hdr = unsafe { hdr.assume_init_ref() };
    // (IP total length, TCP source port, destination port, flags): the
    // TCP bytes at constant places, or read again after IPv4 options.
    let (total, sport, dport, flags) = match hdr[0] >> 4 {
        4 if hdr[9] != IPPROTO_TCP => return,
        4 if hdr[0] & 0x0f == 5 => (
            u16::from_be_bytes([hdr[2], hdr[3]]) as u32,
            [hdr[20], hdr[21]],
            [hdr[22], hdr[23]],
            hdr[33],
        ),
        4 => {
            let ihl = ((hdr[0] & 0x0f) as usize) * 4;
            if !(20..=60).contains(&ihl) {
                return;
            }
            let mut tcp = MaybeUninit::<[u8; 14]>::uninit();
            if !read_header(ip.wrapping_add(ihl), &mut tcp) {
                return;
            }
            // SAFETY: written by the read.
            let tcp = unsafe { tcp.assume_init_ref() };
            (
                u16::from_be_bytes([hdr[2], hdr[3]]) as u32,
                [tcp[0], tcp[1]],
                [tcp[2], tcp[3]],
                tcp[13],
            )
        }
        6 if hdr[6] == IPPROTO_TCP => (
            40 + u16::from_be_bytes([hdr[4], hdr[5]]) as u32,
            [hdr[40], hdr[41]],
            [hdr[42], hdr[43]],
            hdr[53],
        ),
        _ => return,
    };
    if flags & tcp_flag::RST == 0 {
        return;
    }
    zeroed!(tuple: Tuple);
    tuple.local_port = u16::from_be_bytes(sport);
    tuple.remote_port = u16::from_be_bytes(dport);
    let ifindex = ifindex_of::<Btf>(skb);
    tuple.netns = netns_of::<Btf>(core::ptr::null(), skb);
    if !passes_packet_filter(&tuple) {
        return;
    }
    let Some(mut entry) = sink::reserve::<PacketRecord>(ctx, counter::PACKETS_LOST) else {
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: a reserved, exclusively owned slot, zeroed then filled.
    unsafe {
        zero(rec);
        let rec = &mut *rec;
        // Field by field: the literal's zero padding is a `memset` call.
        rec.header.version = ABI_VERSION;
        rec.header.size = core::mem::size_of::<PacketRecord>() as u16;
        rec.header.kind = kind::PACKET;
        rec.ts_ns = bpf_ktime_get_ns();
        rec.netns = tuple.netns;
        rec.direction = dir;
        rec.len = total;
        rec.caplen = total.min(PACKET_BYTES as u32) as u16;
        rec.ifindex = ifindex;
        if bpf_probe_read_kernel_buf(ip, &mut rec.data).is_err() {
            rec.caplen = 0;
        }
    }
    entry.submit(false);
}
