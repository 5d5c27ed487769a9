//! The in-kernel filters (`--port`, `--pid`, `--cgroup`/`--container`,
//! `--netns`): an empty list matches everything; lists are ORed within and
//! ANDed across.

use core::ptr::{addr_of, read_volatile};

use rsttrace_ebpf::abi::ABSENT;

use crate::facts::Tuple;

/// Packets know their ports and namespace, not their process: `--pid`,
/// `--cgroup` and `--container` leave them to the events they belong to.
pub(crate) fn passes_packet_filter(tuple: &Tuple) -> bool {
    passes_filter(tuple, 0, 0, 0, false)
}

/// `pid`/`cgroup` are the owner's, else the actor's where it ran the code,
/// else `ABSENT`/0; `sk_cgroup` is the socket's own (0: unknown).
#[inline(always)]
pub(crate) fn passes_filter(
    tuple: &Tuple,
    pid: u32,
    cgroup: u64,
    sk_cgroup: u64,
    by_process: bool,
) -> bool {
    let f = crate::filter();
    // SAFETY: see `offsets()`; the lists live in the same global.
    let (n_ports, n_pids, n_cgroups, n_netns) = unsafe {
        (
            read_volatile(addr_of!((*f).n_ports)),
            read_volatile(addr_of!((*f).n_pids)),
            read_volatile(addr_of!((*f).n_cgroups)),
            read_volatile(addr_of!((*f).n_netns)),
        )
    };
    // SAFETY: as above.
    let (ports, pids, cgroups, netns) = unsafe {
        (
            addr_of!((*f).ports),
            addr_of!((*f).pids),
            addr_of!((*f).cgroups),
            addr_of!((*f).netns),
        )
    };
    let port_ok = n_ports == 0
        || listed(ports, n_ports, tuple.local_port)
        || listed(ports, n_ports, tuple.remote_port);
    // Neither an owner nor a task that ran the code: no process to match.
    let process_ok = !by_process
        || ((n_pids == 0 || (pid != ABSENT && listed(pids, n_pids, pid)))
            && (n_cgroups == 0
                || (pid != ABSENT && listed(cgroups, n_cgroups, cgroup))
                || (sk_cgroup != 0 && listed(cgroups, n_cgroups, sk_cgroup))));
    port_ok && process_ok && (n_netns == 0 || listed(netns, n_netns, tuple.netns))
}

/// Whether `value` is among the first `n` entries of a filter list.
#[inline(always)]
fn listed<T: PartialEq + Copy, const N: usize>(list: *const [T; N], n: u32, value: T) -> bool {
    for i in 0..N {
        if i as u32 >= n {
            break;
        }
        // SAFETY: i < N, and `list` points into the FILTER global.
        if unsafe { read_volatile(addr_of!((*list)[i])) } == value {
            return true;
        }
    }
    false
}
