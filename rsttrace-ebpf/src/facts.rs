//! What an RST's socket, trigger packet and task say about it: the reads
//! that fill the event's facts, at offsets resolved from BTF.

use core::mem::MaybeUninit;

use aya_ebpf::helpers::{bpf_jiffies64, generated::bpf_probe_read_kernel};
use rsttrace_ebpf::{
    abi::{RstEvent, counter, flag},
    linux::{af, tcp_state},
};

use crate::{
    LAST_CLOSE, count,
    read::{FieldRef, Kmem, load},
};

/// The connection's ends from this host's view, and its namespace.
#[derive(Default)]
pub(crate) struct Tuple {
    pub(crate) netns: u32,
    pub(crate) family: u16,
    pub(crate) local_port: u16,
    pub(crate) remote_port: u16,
    pub(crate) local_addr: [u8; 16],
    pub(crate) remote_addr: [u8; 16],
}

/// The trigger segment's headers.
#[derive(Default)]
pub(crate) struct Packet {
    /// IP protocol (IPv6: the first next-header).
    pub(crate) protocol: u8,
    pub(crate) flags: u8,
    pub(crate) ttl: u8,
    /// IPv4 identification (IPv6: meaningless, see `read_packet`).
    pub(crate) ip_id: u16,
    pub(crate) window: u16,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) len: u32,
}

/// Parses the trigger skb's IP and TCP headers; the RST goes back to its source,
/// so the packet's destination is the local end.
#[inline(always)]
pub(crate) fn read_packet<M: Kmem>(skb: *const u8, pkt: &mut Packet, tuple: &mut Tuple) -> bool {
    // `head` is a plain number even where the skb is typed (a pointer
    // to bytes, not to a struct): the headers are read with the helper.
    let (Some(head), Some(nh), Some(th)) = (
        M::load(skb, off!(skb_head)),
        M::load(skb, off!(skb_network_header)),
        M::load(skb, off!(skb_transport_header)),
    ) else {
        return false;
    };
    let mut headers = MaybeUninit::<Headers>::uninit();
    if !read_headers(head as *const u8, nh, th, &mut headers) {
        count(counter::READ_ERRORS);
        return false;
    }
    // SAFETY: every byte was written (`read_headers`).
    let Headers { ip, tcp } = unsafe { headers.assume_init_ref() };
    let doff = ((tcp[12] >> 4) as u32) * 4;
    tuple.remote_port = u16::from_be_bytes([tcp[0], tcp[1]]);
    tuple.local_port = u16::from_be_bytes([tcp[2], tcp[3]]);
    pkt.seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    pkt.ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    pkt.flags = tcp[13];
    pkt.window = u16::from_be_bytes([tcp[14], tcp[15]]);
    // IPv4's identification; in IPv6 these bytes are the payload length,
    // which userspace ignores. Read for both: one value on both paths
    // keeps the verifier's states prunable (set in the IPv4 branch only,
    // tcp_send_reset's programs grew by a quarter to a third).
    pkt.ip_id = u16::from_be_bytes([ip[4], ip[5]]);
    match ip[0] >> 4 {
        4 => {
            let ihl = ((ip[0] & 0x0f) as u32) * 4;
            let total = u16::from_be_bytes([ip[2], ip[3]]) as u32;
            pkt.len = total.saturating_sub(ihl + doff);
            pkt.ttl = ip[8];
            pkt.protocol = ip[9];
            tuple.family = af::INET;
            tuple.remote_addr[..4].copy_from_slice(&ip[12..16]);
            tuple.local_addr[..4].copy_from_slice(&ip[16..20]);
        }
        6 => {
            let payload = u16::from_be_bytes([ip[4], ip[5]]) as u32;
            pkt.len = payload.saturating_sub(doff);
            pkt.ttl = ip[7];
            pkt.protocol = ip[6];
            tuple.family = af::INET6;
            tuple.remote_addr.copy_from_slice(&ip[8..24]);
            tuple.local_addr.copy_from_slice(&ip[24..40]);
        }
        _ => return false,
    }
    true
}

/// A segment's IP header (an IPv4 one in the first 20 bytes and whatever
/// follows it in the rest) and its TCP header, 4-aligned for word copies.
#[repr(C, align(4))]
struct Headers {
    ip: [u8; 40],
    tcp: [u8; 20],
}

/// Reads the IP header at `head + nh` and the TCP header at `head + th`
/// into `out`; false when a read fails. The TCP header follows the IP
/// header in the same linear buffer, 20 bytes on for IPv4 without options
/// and 40 for IPv6 without extension headers: one read of both, with the
/// first's TCP header moved into place, instead of a helper call each
/// (tens of ns apiece). The area after the headers holds the skb's shared
/// info, so reading past a short segment reads mapped memory.
#[inline(always)]
fn read_headers(head: *const u8, nh: u64, th: u64, out: &mut MaybeUninit<Headers>) -> bool {
    let all = out
        .as_mut_ptr()
        .cast::<MaybeUninit<[u8; size_of::<Headers>()]>>();
    // SAFETY: `Headers` is exactly those bytes (repr(C), no padding).
    if !read_header(head.wrapping_add(nh as usize), unsafe { &mut *all }) {
        return false;
    }
    match th.wrapping_sub(nh) {
        40 => true,
        20 => {
            let words = out.as_mut_ptr().cast::<u32>();
            for i in 0..5 {
                // SAFETY: words 5..10 (bytes 20..40) to words 10..15 (the
                // TCP header), inside `out` and aligned (align(4)). Volatile,
                // or LLVM makes it a call of the byte-loop `memmove` builtin.
                unsafe {
                    words
                        .add(10 + i)
                        .write_volatile(words.add(5 + i).read_volatile())
                };
            }
            true
        }
        // SAFETY: the TCP header's field of `out`.
        _ => read_header(head.wrapping_add(th as usize), unsafe {
            &mut *(&raw mut (*out.as_mut_ptr()).tcp).cast::<MaybeUninit<[u8; 20]>>()
        }),
    }
}

/// Reads `N` bytes of a packet header at `at` into `out`; false when the
/// read fails. `out` starts uninitialised: `[0; N]` would be a `memset`
/// byte loop for bytes the read overwrites anyway. Either way the helper
/// writes all of them (the header, or zeroes when it fails).
#[inline(always)]
pub(crate) fn read_header<const N: usize>(at: *const u8, out: &mut MaybeUninit<[u8; N]>) -> bool {
    // SAFETY: the helper checks the source and writes N bytes to `out`.
    unsafe { bpf_probe_read_kernel(out.as_mut_ptr().cast(), N as u32, at.cast()) == 0 }
}

/// The 4-tuple from `struct sock_common`, valid for full, request and timewait sockets.
#[inline(always)]
pub(crate) fn read_sock_tuple<M: Kmem>(sk: *const u8, tuple: &mut Tuple) {
    tuple.family = M::load(sk, off!(skc_family)).unwrap_or(0) as u16;
    read_sock_remote::<M>(
        sk,
        tuple.family,
        &mut tuple.remote_port,
        &mut tuple.remote_addr,
    );
    tuple.local_port = M::load(sk, off!(skc_num)).unwrap_or(0) as u16;
    // tcp_set_state(CLOSE) unhashes the socket and zeroes skc_num; a full
    // socket still has its port in inet_sport (timewait/request socks do not).
    if tuple.local_port == 0 {
        let full = M::full(sk);
        if !full.is_null() {
            let state = M::load(full, off!(skc_state)).unwrap_or(0) as u8;
            if state != tcp_state::TIME_WAIT && state != tcp_state::NEW_SYN_RECV {
                tuple.local_port =
                    u16::from_be(M::load(full, off!(inet_sport)).unwrap_or(0) as u16);
            }
        }
    }
    if tuple.family == af::INET6 {
        M::bytes(sk, off!(skc_v6_rcv_saddr), &mut tuple.local_addr);
    } else {
        let local = M::load(sk, off!(skc_rcv_saddr)).unwrap_or(0) as u32;
        // The kernel stores it in network order; keep the bytes as they are.
        tuple.local_addr[..4].copy_from_slice(&local.to_ne_bytes());
    }
}

/// The socket's remote end as `read_sock_tuple` stores it: the owner
/// identity (`owners::peer_of`) must read it in the same form.
#[inline(always)]
pub(crate) fn read_sock_remote<M: Kmem>(
    sk: *const u8,
    family: u16,
    port: &mut u16,
    addr: &mut [u8; 16],
) {
    *port = u16::from_be(M::load(sk, off!(skc_dport)).unwrap_or(0) as u16);
    if family == af::INET6 {
        M::bytes(sk, off!(skc_v6_daddr), addr);
    } else {
        let remote = M::load(sk, off!(skc_daddr)).unwrap_or(0) as u32;
        addr[..4].copy_from_slice(&remote.to_ne_bytes());
    }
}

/// The network namespace inode of the socket, else of the device the
/// trigger packet came in on; 0 when unknown.
#[inline(always)]
pub(crate) fn netns_of<M: Kmem>(sk: *const u8, skb: *const u8) -> u32 {
    if !sk.is_null() {
        return match M::load(sk, off!(skc_net)) {
            Some(net) if net != 0 => M::load(net as *const u8, off!(net_inum)).unwrap_or(0) as u32,
            _ => 0,
        };
    }
    let net = if !skb.is_null() {
        M::load(skb, off!(skb_dev))
            .filter(|dev| *dev != 0)
            .and_then(|dev| M::load(dev as *const u8, off!(netdev_net)))
    } else {
        None
    };
    match net {
        Some(net) if net != 0 => M::load(net as *const u8, off!(net_inum)).unwrap_or(0) as u32,
        _ => 0,
    }
}

/// The index of the skb's device, 0 when unknown.
#[inline(always)]
pub(crate) fn ifindex_of<M: Kmem>(skb: *const u8) -> u32 {
    match M::load(skb, off!(skb_dev)) {
        Some(dev) if dev != 0 => {
            M::load(dev as *const u8, off!(netdev_ifindex)).unwrap_or(0) as u32
        }
        _ => 0,
    }
}

/// Socket facts that explain why the RST was made.
#[inline(always)]
pub(crate) fn read_sock<M: Kmem>(sk: *const u8, ev: &mut RstEvent) {
    ev.flags |= flag::HAS_SOCK;
    ev.state = M::load(sk, off!(skc_state)).unwrap_or(0) as u8;
    ev.cookie = M::load(sk, off!(skc_cookie)).unwrap_or(0);
    if ev.state == tcp_state::TIME_WAIT {
        let tw = M::timewait(sk);
        if !tw.is_null() {
            ev.tw_substate = M::load(tw, off!(tw_substate)).unwrap_or(0) as u8;
        }
        return;
    }
    if ev.state == tcp_state::NEW_SYN_RECV {
        return;
    }
    if ev.state == tcp_state::LISTEN {
        let queued = M::load(sk, off!(sk_ack_backlog));
        let max = M::load(sk, off!(sk_max_ack_backlog));
        if let (Some(queued), Some(max)) = (queued, max)
            && queued > max
        {
            ev.flags |= flag::ACCEPT_QUEUE_FULL;
        }
    }
    ev.flags |= flag::FULL_SOCK;
    if ev.state == tcp_state::CLOSE
        && let Some(last) = LAST_CLOSE.get(0)
        && last.sk == sk as u64
    {
        ev.closed_from = last.word as u8;
    }
    // Members of inet_connection_sock and tcp_sock: read as a tcp_sock.
    let tp = M::full(sk);
    if tp.is_null() {
        return;
    }
    let sk_flags = M::load(tp, off!(sk_flags)).unwrap_or(0);
    let bit = |n: u32| n < 64 && sk_flags & (1u64 << n) != 0;
    if bit(global!(offsets.sock_dead_bit)) {
        ev.flags |= flag::SOCK_DEAD;
    }
    if bit(global!(offsets.sock_linger_bit)) {
        ev.flags |= flag::SOCK_LINGER;
    }
    if bit(global!(offsets.sock_keepopen_bit)) {
        ev.flags |= flag::SOCK_KEEPOPEN;
    }
    if bit(global!(offsets.sock_done_bit)) {
        ev.flags |= flag::PEER_FIN;
    }
    ev.shutdown = M::load(tp, off!(sk_shutdown)).unwrap_or(0) as u8;
    ev.lingertime = M::load(tp, off!(sk_lingertime))
        .unwrap_or(0)
        .min(u32::MAX as u64) as u32;
    ev.sk_err = M::load(tp, off!(sk_err)).unwrap_or(0) as u32;
    ev.probes_out = M::load(tp, off!(icsk_probes_out)).unwrap_or(0) as u8;
    let seq = |f: FieldRef| M::load(tp, f).unwrap_or(0) as u32;
    ev.unread = seq(off!(rcv_nxt)).wrapping_sub(seq(off!(copied_seq)));
    // A received RST's sequence number against these (RFC 5961).
    ev.rcv_nxt = seq(off!(rcv_nxt));
    ev.rcv_wnd = seq(off!(rcv_wnd));
    ev.unsent = seq(off!(write_seq)).wrapping_sub(seq(off!(snd_nxt)));
    ev.unacked = seq(off!(snd_nxt)).wrapping_sub(seq(off!(snd_una)));
    if let Some(rcv) = M::load(tp, off!(rcv_tstamp)) {
        // SAFETY: the helper has no preconditions. tcp_jiffies32 is the
        // low half of jiffies64.
        let now = unsafe { bpf_jiffies64() } as u32;
        ev.rcv_idle_jiffies = now.wrapping_sub(rcv as u32);
    }
}

/// `sk_err_soft`: an error the kernel noted without ending the connection.
pub(crate) fn soft_error<M: Kmem>(sk: *const u8) -> u64 {
    M::load(sk, off!(sk_err_soft)).unwrap_or(0)
}

/// The socket's cgroup v2 id, 0 when unknown. 5.10 keeps the cgroup
/// pointer in a union with net_cls/net_prio data, flagged by bit 0.
#[inline(always)]
pub(crate) fn sock_cgroup_id(sk: *const u8) -> u64 {
    let cgroup = load(sk, off!(sk_cgroup)).unwrap_or(0);
    if cgroup == 0 || cgroup & 1 != 0 {
        return 0;
    }
    load(cgroup as *const u8, off!(cgroup_kn))
        .filter(|kn| *kn != 0)
        .and_then(|kn| load(kn as *const u8, off!(kernfs_node_id)))
        .unwrap_or(0)
}
