//! Who owns a socket. An RST is usually made in softirq or a timer, where
//! `current` is whoever the interrupt landed on. The owner is remembered
//! earlier, from moments that prove it: the socket's own process running
//! connect() (SYN_SENT), listen() (LISTEN), close()/shutdown() (FIN_WAIT1,
//! LAST_ACK) or recv() (accepted sockets), always in task context.
//! tcp_abort() (`ss -K`) goes straight to CLOSE, so a killer is never
//! mistaken for the owner.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_uid_gid, bpf_ktime_get_ns,
};
use rsttrace_ebpf::{abi::Owner, linux::tcp_state};

use crate::{LAST_CLOSE, OWNERS, history::record_close, in_softirq};

/// How long a destroyed socket's owner is still trusted (see `owner_of`).
const OWNER_AFTER_DESTROY_NS: u64 = 1_000_000_000;

const ESTABLISHED: i32 = tcp_state::ESTABLISHED as i32;
const SYN_RECV: i32 = tcp_state::SYN_RECV as i32;
const CLOSE: i32 = tcp_state::CLOSE as i32;
const OWNER_PROVING_STATES: [i32; 4] = [
    tcp_state::SYN_SENT as i32,
    tcp_state::LISTEN as i32,
    tcp_state::FIN_WAIT1 as i32,
    tcp_state::LAST_ACK as i32,
];

/// `sock:inet_sock_set_state` of a TCP socket.
pub(crate) fn on_set_state(sk: u64, oldstate: i32, newstate: i32) {
    if newstate == CLOSE {
        if let (Some(s), Some(o)) = (LAST_CLOSE.get_ptr_mut(0), LAST_CLOSE.get_ptr_mut(1)) {
            // SAFETY: per-CPU slots; no other writer on this CPU meanwhile.
            unsafe {
                *s = sk;
                *o = oldstate as u64;
            }
        }
        record_close(sk as *const u8, oldstate);
    }
    if in_softirq() {
        // A child socket completing its handshake is new: whatever an
        // earlier socket at this address left behind is stale.
        if oldstate == SYN_RECV && newstate == ESTABLISHED {
            let _ = OWNERS.remove(sk);
        }
        return;
    }
    if OWNER_PROVING_STATES.contains(&newstate) {
        remember_owner(sk);
    }
}

/// tcp_rcv_space_adjust() runs in tcp_recvmsg(): the reader owns the socket.
pub(crate) fn on_receive(sk: u64) {
    if !in_softirq() && OWNERS.get_ptr(sk).is_none() {
        remember_owner(sk);
    }
}

/// `tcp:tcp_destroy_sock`: the owner stays a moment for the orphan's RST.
pub(crate) fn on_destroy(sk: u64) {
    if let Some(owner) = OWNERS.get_ptr_mut(sk) {
        // SAFETY: map value, valid for this run of the program.
        unsafe { (*owner).destroyed_ns = bpf_ktime_get_ns() };
    }
}

fn remember_owner(sk: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let owner = Owner {
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        uid: bpf_get_current_uid_gid() as u32,
        _pad: 0,
        // SAFETY: the helper has no preconditions.
        cgroup: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        destroyed_ns: 0,
    };
    let _ = OWNERS.insert(sk, owner, 0);
}

/// The socket's remembered owner, or null. A destroyed socket's owner is
/// trusted only for the RST that immediately follows its destruction, not
/// for another socket that reuses the address.
pub(crate) fn owner_of(sk: *const u8) -> *const Owner {
    if sk.is_null() {
        return core::ptr::null();
    }
    let Some(o) = OWNERS.get_ptr(sk as u64) else {
        return core::ptr::null();
    };
    // SAFETY: map value, valid for this run of the program; the clock helper
    // has no preconditions.
    let (destroyed, now) = unsafe { ((*o).destroyed_ns, bpf_ktime_get_ns()) };
    if destroyed != 0 && now.saturating_sub(destroyed) >= OWNER_AFTER_DESTROY_NS {
        return core::ptr::null();
    }
    o
}
