//! Who owns a socket. An RST is usually made in softirq or a timer, where
//! `current` is whoever the interrupt landed on. Nothing is tracked per
//! packet or per receive: only the moments that prove an owner and that
//! nothing read at RST time could replace. connect() (SYN_SENT) and
//! listen() (LISTEN) name the process before the peer's answer can reset
//! the socket; close() or shutdown() first (FIN_WAIT1) names it before the
//! socket is orphaned and its file, the only other way back to the process,
//! is gone, while the peer may still send: data after close is the orphan
//! RST users ask about. Closing second (LAST_ACK) is not recorded: the peer
//! has finished sending. Every other state change leaves at once.
//! tcp_abort() (`ss -K`) goes straight to CLOSE, so a killer is never taken
//! for the owner.

use core::mem::MaybeUninit;

use aya_ebpf::bindings::BPF_NOEXIST;
use rsttrace_ebpf::{
    abi::{ListenerKey, Owner, counter, peer_key},
    linux::tcp_state,
};

use crate::{
    LAST_CLOSE, LISTENERS, OWNERS,
    context::{self, Exec},
    count,
    current::Current,
    facts::{netns_of, read_sock_remote},
    history::record_close,
    read::Kmem,
};

const CLOSE: i32 = tcp_state::CLOSE as i32;
const LISTEN: i32 = tcp_state::LISTEN as i32;
const FIN_WAIT1: i32 = tcp_state::FIN_WAIT1 as i32;
const OWNER_PROVING_STATES: [i32; 3] = [
    tcp_state::SYN_SENT as i32,
    tcp_state::LISTEN as i32,
    tcp_state::FIN_WAIT1 as i32,
];

/// Whether a transition to `newstate` is one `on_set_state` acts on.
#[inline(always)]
pub(crate) fn wants(newstate: i32) -> bool {
    newstate == CLOSE || OWNER_PROVING_STATES.contains(&newstate)
}

/// `sock:inet_sock_set_state` of a TCP socket, to a state `wants` takes.
pub(crate) fn on_set_state<M: Kmem>(sk: u64, oldstate: i32, newstate: i32) {
    if newstate == CLOSE {
        if let Some(last) = LAST_CLOSE.get_ptr_mut(0) {
            // SAFETY: a per-CPU slot; no other writer on this CPU meanwhile.
            unsafe {
                (*last).sk = sk;
                (*last).word = oldstate as u64;
            }
        }
        record_close::<M>(sk as *const u8, oldstate);
    } else if newstate != FIN_WAIT1 {
        // connect() and listen() are syscalls: SYN_SENT and LISTEN are
        // only ever entered by a task.
        remember_owner::<M>(sk as *const u8, true, newstate == LISTEN);
    } else if context::current::<M>(sk as *const u8) != Exec::Interrupt {
        remember_owner::<M>(sk as *const u8, false, false);
    }
}

fn remember_owner<M: Kmem>(sk: *const u8, fresh: bool, listening: bool) {
    let peer = peer_of::<M>(sk);
    let current = Current::get::<M>();
    let pid_tgid = current.pid_tgid();
    // Look up first: entries are never deleted, and the slab hands a
    // freed socket's address to the next one, so even a new socket's
    // address is usually in the map already. An insert of a key that is
    // there takes a free LRU node, finds the key, gives the node back and
    // still needs the lookup.
    let known = OWNERS.get_ptr_mut(sk as u64);
    if let Some(known) = known
        && !fresh
        // SAFETY: map value, valid for this run of the program.
        && unsafe { (*known).peer == peer && (*known).pid == pid_tgid as u32 }
    {
        // connect() then close() by the same thread: nothing new.
        return;
    }
    // Field by field into place: `[0; 16]` for the comm alone is a `memset`
    // call, and zeroing all of it first (`zeroed!`) stores every word twice.
    // Owner has no padding, so every byte is written.
    let mut slot = MaybeUninit::<Owner>::uninit();
    let p = slot.as_mut_ptr();
    // SAFETY: writes to fields of `slot`, which lives for this function;
    // `comm_into` writes all 16 bytes of its aligned field.
    let owner = unsafe {
        (&raw mut (*p).tgid).write((pid_tgid >> 32) as u32);
        (&raw mut (*p).pid).write(pid_tgid as u32);
        (&raw mut (*p).uid).write(current.uid());
        (&raw mut (*p).listeners).write(0);
        (&raw mut (*p).cgroup).write(current.cgroup_id());
        (&raw mut (*p).peer).write(peer);
        current.comm_into(&raw mut (*p).comm);
        slot.assume_init()
    };
    if listening {
        remember_listener::<M>(sk, &owner);
    }
    if let Some(known) = known {
        // SAFETY: map value, valid for this run of the program.
        unsafe { *known = owner };
    } else if OWNERS.insert(sk as u64, owner, BPF_NOEXIST.into()).is_ok() {
        count(counter::OWNERS_ADDED);
    }
}

/// A listening port's owner also owns the connections it accepts until
/// they prove their own: a server's connection reset before its first
/// close() still names the server, and `--pid`/`--container` keep it.
fn remember_listener<M: Kmem>(sk: *const u8, owner: &Owner) {
    let key = ListenerKey {
        netns: netns_of::<M>(sk, core::ptr::null()),
        port: M::load(sk, off!(skc_num)).unwrap_or(0) as u16,
        _pad: 0,
    };
    // listen() without bind() picks its port after this transition.
    if key.port == 0 {
        return;
    }
    // SO_REUSEPORT: another process listening on the port makes a group.
    // SAFETY: map value, copied at once.
    let before = unsafe { LISTENERS.get(&key) }.map(|o| (o.tgid, o.listeners.max(1)));
    let listeners = match before {
        Some((tgid, n)) if tgid != owner.tgid => n.saturating_add(1),
        Some((_, n)) => n,
        None => 1,
    };
    let _ = LISTENERS.insert(
        &key,
        &Owner {
            listeners,
            ..*owner
        },
        0,
    );
}

/// A closed listener's port may next be some client's ephemeral port.
pub(crate) fn forget_listener(netns: u32, port: u16) {
    let key = ListenerKey {
        netns,
        port,
        _pad: 0,
    };
    let _ = LISTENERS.remove(&key);
}

/// The owner of the listener on this local port, for a socket with no
/// owner of its own (null when none was seen listening).
#[inline(always)]
pub(crate) fn listener_owner(netns: u32, local_port: u16) -> *const Owner {
    let key = ListenerKey {
        netns,
        port: local_port,
        _pad: 0,
    };
    LISTENERS.get_ptr(&key).unwrap_or(core::ptr::null())
}

/// The socket's remembered owner, or null. Entries outlive their sockets
/// (no hook runs per destroyed socket); one made for an earlier socket at
/// this address had another remote end, and is not this socket's.
#[inline(always)]
pub(crate) fn owner_of<M: Kmem>(sk: *const u8) -> *const Owner {
    if sk.is_null() {
        return core::ptr::null();
    }
    owner_at(sk, peer_of::<M>(sk))
}

/// `owner_of` for a caller that has read the remote end already.
#[inline(always)]
pub(crate) fn owner_at(sk: *const u8, peer: u64) -> *const Owner {
    match OWNERS.get_ptr(sk as u64) {
        // SAFETY: map value, valid for this run of the program.
        Some(o) if unsafe { (*o).peer } == peer => o,
        _ => core::ptr::null(),
    }
}

/// The socket's remote end as `Owner::peer`; zero for a listener.
#[inline(always)]
fn peer_of<M: Kmem>(sk: *const u8) -> u64 {
    let family = M::load(sk, off!(skc_family)).unwrap_or(0) as u16;
    let mut port = 0;
    zeroed!(addr: [u8; 16]);
    read_sock_remote::<M>(sk, family, &mut port, addr);
    peer_key(port, addr)
}
