//! With a pcapng export, the RST segments themselves: every packet of the
//! host passes these two hooks, so anything that is not a TCP RST leaves
//! after three loads. Attached only when a capture is being written.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_buf};
use rsttrace_ebpf::{
    abi::{ABI_VERSION, EventHeader, PACKET_BYTES, PacketRecord, counter, kind, packet_dir},
    linux::{IPPROTO_TCP, tcp_flag},
};

use crate::{
    facts::Tuple,
    facts::netns_of,
    filter::passes_packet_filter,
    read::{Probe, load, zero},
    sink,
};

/// `net_dev_queue`: locally built packets have their network header set;
/// skb->data is still at the link-layer header.
pub(crate) fn on_dev_queue(ctx: *mut c_void, skb: *const u8) {
    if let Some(nh) = load(skb, off!(skb_network_header))
        && let Some(head) = load(skb, off!(skb_head))
    {
        capture_rst(ctx, skb, (head + nh) as *const u8, packet_dir::TX);
    }
}

/// `netif_receive_skb`: the link-layer header is pulled, skb->data is the
/// IP header (the network header offset is not reset yet on this path).
pub(crate) fn on_receive_skb(ctx: *mut c_void, skb: *const u8) {
    if let Some(data) = load(skb, off!(skb_data)) {
        capture_rst(ctx, skb, data as *const u8, packet_dir::RX);
    }
}

fn capture_rst(ctx: *mut c_void, skb: *const u8, ip: *const u8, dir: u8) {
    let mut hdr = [0u8; 40];
    // SAFETY: checked read of kernel memory.
    if unsafe { bpf_probe_read_kernel_buf(ip, &mut hdr) }.is_err() {
        return;
    }
    let (ihl, total, protocol) = match hdr[0] >> 4 {
        4 => (
            ((hdr[0] & 0x0f) as usize) * 4,
            u16::from_be_bytes([hdr[2], hdr[3]]) as u32,
            hdr[9],
        ),
        // Without extension headers, which RSTs do not carry.
        6 => (40, 40 + u16::from_be_bytes([hdr[4], hdr[5]]) as u32, hdr[6]),
        _ => return,
    };
    if protocol != IPPROTO_TCP || !(20..=60).contains(&ihl) {
        return;
    }
    let mut tcp = [0u8; 14];
    // SAFETY: as above.
    if unsafe { bpf_probe_read_kernel_buf(ip.add(ihl), &mut tcp) }.is_err()
        || tcp[13] & tcp_flag::RST == 0
    {
        return;
    }
    let mut tuple = Tuple {
        local_port: u16::from_be_bytes([tcp[0], tcp[1]]),
        remote_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        ..Tuple::default()
    };
    let ifindex = match load(skb, off!(skb_dev)) {
        Some(dev) if dev != 0 => load(dev as *const u8, off!(netdev_ifindex)).unwrap_or(0) as u32,
        _ => 0,
    };
    tuple.netns = netns_of::<Probe>(core::ptr::null(), skb);
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
        rec.header = EventHeader {
            version: ABI_VERSION,
            size: core::mem::size_of::<PacketRecord>() as u16,
            kind: kind::PACKET,
            _pad: [0; 3],
        };
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
    entry.submit();
}
