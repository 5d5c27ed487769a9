//! The shared event path: every hook ends here with (sk, skb, reason), and
//! one `RstEvent` is reserved, filled and submitted to the sink.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_ktime_get_ns;
use rsttrace_ebpf::{
    abi::{ABI_VERSION, ABSENT, RstEvent, counter, direction, flag, kind, peer_key},
    linux::{tcp_flag, tcp_state},
};

use crate::{
    LAST_RST,
    aborts::echo_now,
    context::{self, Exec},
    count,
    current::Current,
    facts::{
        Packet, Tuple, ifindex_of, netns_of, read_packet, read_sock, read_sock_tuple,
        sock_cgroup_id,
    },
    filter::passes_filter,
    history::read_history,
    owners::{listener_owner, owner_at, owner_of},
    read::{Kmem, copy_comm, zero},
    sink,
    stacks::capture_stacks,
};

/// What the hook saw, passed by reference (BPF calls take at most 5 arguments).
pub(crate) struct Origin {
    /// The program's context, for the stack helpers.
    pub(crate) ctx: *mut c_void,
    pub(crate) sk: *const u8,
    pub(crate) skb: *const u8,
    /// `enum sk_rst_reason`, or ABSENT.
    pub(crate) reason: u32,
    pub(crate) hook: u8,
    pub(crate) direction: u8,
    /// `RstEvent::nf_hook` (netfilter's RSTs), 0 otherwise.
    pub(crate) nf_hook: u8,
}

impl Origin {
    /// An RST the TCP stack sends.
    #[inline(always)]
    fn sent(ctx: *mut c_void, sk: *const u8, skb: *const u8, reason: u32, hook: u8) -> Origin {
        Origin {
            ctx,
            sk,
            skb,
            reason,
            hook,
            direction: direction::SENT,
            nf_hook: 0,
        }
    }
}

/// A passive RST answers the trigger `skb`; an active one (skb NULL) comes
/// from close(), a timer or tcp_abort(). `sk` may be NULL (no socket),
/// a timewait or request sock, or a full socket.
#[inline(always)]
pub(crate) fn on_send_reset<M: Kmem>(
    ctx: *mut c_void,
    sk: *const u8,
    skb: *const u8,
    reason: u32,
    hook: u8,
) {
    on_socket_event::<M>(&Origin::sent(ctx, sk, skb, reason, hook));
}

/// `tcp_v{4,6}_send_reset` entry: the function returns without sending when
/// the trigger is itself an RST, so those calls are not RSTs sent. The
/// trigger read for that test is the event's.
#[inline(always)]
pub(crate) fn on_passive_reset_call<M: Kmem>(
    ctx: *mut c_void,
    sk: *const u8,
    skb: *const u8,
    hook: u8,
) {
    zeroed!(tuple: Tuple);
    zeroed!(pkt: Packet);
    let has_packet = !skb.is_null() && read_packet::<M>(skb, pkt, tuple);
    if has_packet && pkt.flags & tcp_flag::RST != 0 {
        return;
    }
    let origin = Origin::sent(ctx, sk, skb, ABSENT, hook);
    let now = stamp(&origin);
    socket_event_with::<M>(&origin, tuple, has_packet.then_some(&*pkt), now);
}

/// `skb`, when the hook has it, is the received RST: its TTL and window are
/// evidence of who forged it.
#[inline(always)]
pub(crate) fn on_receive_reset<M: Kmem>(ctx: *mut c_void, sk: *const u8, skb: *const u8, hook: u8) {
    on_socket_event::<M>(&Origin {
        ctx,
        sk,
        skb,
        reason: ABSENT,
        hook,
        direction: direction::RECEIVED,
        nf_hook: 0,
    });
}

/// An RST netfilter made: `rejected` is the segment it answers, as for
/// the TCP stack's passive RSTs.
pub(crate) fn on_firewall_reset<M: Kmem>(
    ctx: *mut c_void,
    rejected: *const u8,
    nf_hook: u8,
    hook: u8,
) {
    on_socket_event::<M>(&Origin {
        ctx,
        sk: core::ptr::null(),
        skb: rejected,
        reason: ABSENT,
        hook,
        direction: direction::SENT,
        nf_hook,
    });
}

/// An RST seen leaving a device without a socket: `tuple` is read from
/// the RST itself (`hooks/firewall.rs`), `rst` is that skb.
pub(crate) fn on_socketless_rst<M: Kmem>(
    ctx: *mut c_void,
    rst: *const u8,
    tuple: &Tuple,
    hook: u8,
) {
    let origin = Origin {
        ctx,
        sk: core::ptr::null(),
        skb: rst,
        reason: ABSENT,
        hook,
        direction: direction::SENT,
        nf_hook: 0,
    };
    // SAFETY: the helper has no preconditions.
    emit::<M>(&origin, tuple, None, unsafe { bpf_ktime_get_ns() });
}

#[inline(always)]
pub(crate) fn on_socket_event<M: Kmem>(origin: &Origin) {
    // The clock first: with it after the packet read, 6.1's verifier
    // walks the send programs' paths through the read far longer.
    let now = stamp(origin);
    zeroed!(tuple: Tuple);
    zeroed!(pkt: Packet);
    let has_packet = !origin.skb.is_null() && read_packet::<M>(origin.skb, pkt, tuple);
    socket_event_with::<M>(origin, tuple, has_packet.then_some(&*pkt), now);
}

/// The event's time; an RST's socket goes in the echo slot, with the
/// time on the slot's clock (`echo_now`: this one, if it is the slot's).
#[inline(always)]
fn stamp(origin: &Origin) -> u64 {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if origin.direction != direction::ABORT
        && !origin.sk.is_null()
        && let Some(last) = LAST_RST.get_ptr_mut(0)
    {
        // SAFETY: a per-CPU slot.
        unsafe {
            (*last).sk = origin.sk as u64;
            (*last).word = echo_now(|| now);
        }
    }
    now
}

/// The event of `origin`, whose trigger packet (`pkt`, when there is one)
/// has been read into `pkt` and `tuple`, at `now` (`stamp`).
#[inline(always)]
fn socket_event_with<M: Kmem>(origin: &Origin, tuple: &mut Tuple, pkt: Option<&Packet>, now: u64) {
    if pkt.is_none() && !origin.sk.is_null() {
        read_sock_tuple::<M>(origin.sk, tuple);
    }
    tuple.netns = netns_of::<M>(origin.sk, origin.skb);
    emit::<M>(origin, tuple, pkt, now);
}

/// `now`: the event's time (bpf_ktime_get_ns).
#[inline(always)]
fn emit<M: Kmem>(origin: &Origin, tuple: &Tuple, pkt: Option<&Packet>, now: u64) {
    let sk = origin.sk;
    let current = Current::get::<M>();
    let pid_tgid = current.pid_tgid();
    let state = if sk.is_null() {
        0
    } else {
        M::load(sk, off!(skc_state)).unwrap_or(0) as u8
    };
    let exec = context::current_in::<M>(sk, state);
    // Read from the socket, the tuple's remote end is the owner's identity
    // (from a packet it may differ in form: a v4-mapped socket's address).
    let own = if pkt.is_none() && !sk.is_null() {
        owner_at(sk, peer_key(tuple.remote_port, &tuple.remote_addr))
    } else {
        owner_of::<M>(sk)
    };
    // The listener's owner is an inference: a task that ran the code on
    // the socket itself is proof (and names the very thread). A timewait
    // socket's owner is the 4-tuple's last close (`read_history`), not
    // whoever listens on its port now.
    let from_listener =
        own.is_null() && !sk.is_null() && exec != Exec::Task && state != tcp_state::TIME_WAIT;
    let owner = if from_listener {
        listener_owner(tuple.netns, tuple.local_port)
    } else {
        own
    };
    // --pid and --cgroup match the owner; the actor only where it ran the
    // code. (Plain values with sentinels, not Options: the verifier rejects
    // the uninitialised payload register of a None that LLVM copies around.)
    let (pid, cgroup) = if !owner.is_null() {
        // SAFETY: map value, valid for this run of the program.
        unsafe { ((*owner).tgid, (*owner).cgroup) }
    } else if exec == Exec::Task {
        ((pid_tgid >> 32) as u32, current.cgroup_id())
    } else {
        (ABSENT, 0)
    };
    // Without an owner, a full socket's own cgroup still says whose it is.
    let sk_cgroup = if owner.is_null()
        && !sk.is_null()
        && state != tcp_state::TIME_WAIT
        && state != tcp_state::NEW_SYN_RECV
    {
        sock_cgroup_id(sk)
    } else {
        0
    };
    if !passes_filter(tuple, pid, cgroup, sk_cgroup, true) {
        count(counter::FILTERED);
        return;
    }
    let Some(mut entry) = sink::reserve::<RstEvent>(origin.ctx, counter::LOST) else {
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned RstEvent-sized
    // slot; every field is written before submit (unread ones are zeroed).
    // Whether it took a user stack, which is symbolized from its process's
    // maps: such an event is read soon (`submit`).
    let urgent = unsafe {
        zero(ev);
        let ev = &mut *ev;
        // Field by field: a struct literal's zero padding is a `memset` call.
        ev.header.version = ABI_VERSION;
        ev.header.size = core::mem::size_of::<RstEvent>() as u16;
        ev.header.kind = kind::RST;
        ev.ts_ns = now;
        ev.sk = sk as u64;
        ev.skb = origin.skb as u64;
        ev.direction = origin.direction;
        ev.hook = origin.hook;
        ev.netns = tuple.netns;
        ev.sk_cgroup = sk_cgroup;
        ev.family = tuple.family;
        ev.local_port = tuple.local_port;
        ev.remote_port = tuple.remote_port;
        ev.local_addr = tuple.local_addr;
        ev.remote_addr = tuple.remote_addr;
        ev.nf_hook = origin.nf_hook;
        if !origin.skb.is_null() {
            ev.ifindex = ifindex_of::<M>(origin.skb);
        }
        if origin.reason != ABSENT {
            ev.reason = origin.reason;
            ev.flags |= flag::HAS_REASON;
        }
        if let Some(p) = pkt {
            ev.flags |= flag::HAS_PACKET;
            ev.pkt_flags = p.flags;
            ev.pkt_ttl = p.ttl;
            ev.pkt_ip_id = p.ip_id;
            ev.pkt_window = p.window;
            ev.pkt_seq = p.seq;
            ev.pkt_ack = p.ack;
            ev.pkt_len = p.len;
        }
        let active_reset = origin.direction == direction::SENT && origin.skb.is_null();
        (ev.context, ev.softirq_vec) = context::for_event(exec, active_reset);
        ev.actor_pid = pid_tgid as u32;
        ev.actor_tgid = (pid_tgid >> 32) as u32;
        current.comm_into(&mut ev.actor_comm);
        // In an interrupt `current` is a bystander: whether it is exiting
        // says nothing about this RST.
        if exec == Exec::Task
            && let Some(signal) = current.exit_signal()
        {
            ev.flags |= flag::TASK_EXITING;
            ev.exit_signal = signal;
        }
        if !sk.is_null() {
            read_sock::<M>(sk, ev);
        }
        if !owner.is_null() {
            let o = &*owner;
            ev.flags |= flag::OWNER_KNOWN;
            if from_listener {
                ev.flags |= flag::OWNER_FROM_LISTENER;
                if o.listeners > 1 {
                    ev.flags |= flag::LISTENER_GROUP;
                }
            }
            ev.owner_tgid = o.tgid;
            ev.owner_pid = o.pid;
            ev.owner_uid = o.uid;
            ev.owner_cgroup = o.cgroup;
            // Comm fields of an RstEvent and an Owner (copy_comm's terms).
            copy_comm(&mut ev.owner_comm, &o.comm);
        }
        // Without a full socket, what happened to the 4-tuple before
        // explains the RST and names whoever owned it.
        if ev.direction == direction::SENT && ev.flags & flag::FULL_SOCK == 0 {
            let syn_only =
                pkt.is_some_and(|p| p.flags & (tcp_flag::SYN | tcp_flag::ACK) == tcp_flag::SYN);
            read_history(tuple, syn_only, ev);
        } else if ev.direction == direction::SENT
            && pkt.is_none()
            && own.is_null()
            && ev.state == tcp_state::CLOSE
        {
            // An unowned child reset in CLOSE: inet_csk_listen_stop() resets
            // the queued children right after their listener's close.
            read_history(tuple, true, ev);
        }
        capture_stacks(origin.ctx, owner, ev);
        ev.user_stack_id >= 0
    };
    if entry.submit(urgent) {
        count(counter::SUBMITTED);
    }
}
