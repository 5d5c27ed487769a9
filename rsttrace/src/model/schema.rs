//! The closed sets of the export schema: every hook name, TCP state,
//! execution context and container runtime rsttrace can write. The JSON
//! writer takes its names from here, the reader (`rsttrace read`) accepts
//! exactly these, and docs/schema.md lists them from the same tables (a test
//! in explain.rs keeps it in sync), so the three cannot drift apart again.

use rsttrace_ebpf::abi::hook;

/// Kernel hook ids (ABI) and their export names.
pub const HOOKS: &[(u8, &str)] = &[
    (hook::BTF_SEND_RESET, "tp_btf:tcp_send_reset"),
    (hook::BTF_RECEIVE_RESET, "tp_btf:tcp_receive_reset"),
    (hook::TP_SEND_RESET, "tracepoint:tcp:tcp_send_reset"),
    (hook::TP_RECEIVE_RESET, "tracepoint:tcp:tcp_receive_reset"),
    (hook::KPROBE_SEND_RESET, "kprobe:tcp_send_reset_functions"),
    (hook::KPROBE_RECEIVE_RESET, "kprobe:tcp_reset"),
    (hook::FENTRY_SEND_RESET, "fentry:tcp_send_reset_functions"),
    (hook::FENTRY_RECEIVE_RESET, "fentry:tcp_reset"),
    (hook::TP_KFREE_SKB_NO_SOCKET, "tracepoint:skb:kfree_skb"),
    (hook::BTF_ERROR_REPORT, "tp_btf:inet_sk_error_report"),
    (hook::KPROBE_ERROR_REPORT, "kprobe:sock_def_error_report"),
    (hook::KPROBE_NF_SEND_RESET, FIREWALL_KERNEL_HOOK),
    (hook::BTF_SOCKETLESS_RST, FIREWALL_DEVICE_HOOK),
];

/// netfilter's RSTs, seen in the function that makes them.
pub const FIREWALL_KERNEL_HOOK: &str = "kprobe:nf_send_reset";
/// An RST leaving a device without a socket (`--firewall`).
pub const FIREWALL_DEVICE_HOOK: &str = "tp_btf:net_dev_queue";

/// What an id or a name outside the tables becomes (a newer kernel side,
/// or a file written by another version).
pub const UNKNOWN: &str = "unknown";

/// The export name of a kernel hook id.
pub(crate) fn hook_name(id: u8) -> &'static str {
    HOOKS
        .iter()
        .find(|(h, _)| *h == id)
        .map_or(UNKNOWN, |(_, name)| name)
}

/// A hook name read from a file, as the `&'static str` the event holds.
pub(crate) fn hook_from_name(name: &str) -> &'static str {
    HOOKS
        .iter()
        .find(|(_, n)| *n == name)
        .map_or(UNKNOWN, |(_, n)| n)
}

/// Linux TCP states by value (include/net/tcp_states.h; 0 is "no socket").
pub(crate) const TCP_STATES: [&str; 13] = [
    "NONE",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

/// The name of a state value outside the table.
pub(crate) const INVALID_STATE: &str = "INVALID";

pub(crate) fn state_name(value: u8) -> &'static str {
    TCP_STATES
        .get(usize::from(value))
        .copied()
        .unwrap_or(INVALID_STATE)
}

/// The value of a state name; None for names outside the table.
pub(crate) fn state_from_name(name: &str) -> Option<u8> {
    TCP_STATES
        .iter()
        .position(|s| *s == name)
        .and_then(|i| u8::try_from(i).ok())
}

/// Softirq vectors by number (include/linux/interrupt.h; stable since
/// 2.6), as `actor.context` names them after `softirq:`.
pub(crate) const SOFTIRQS: [&str; 10] = [
    "softirq:HI",
    "softirq:TIMER",
    "softirq:NET_TX",
    "softirq:NET_RX",
    "softirq:BLOCK",
    "softirq:IRQ_POLL",
    "softirq:TASKLET",
    "softirq:SCHED",
    "softirq:HRTIMER",
    "softirq:RCU",
];

/// A vector beyond the table.
pub(crate) const SOFTIRQ_OTHER: &str = "softirq:OTHER";

/// `owner.source`: how the owner is known (`model::event::Owner`).
pub const OWNER_SOURCES: &[&str] = &["tracked", "listener", "actor", "prior"];

/// `container.runtime`: where the cgroup path says the process runs.
/// `kubernetes` is a pod whose runtime the path does not name; `systemd`
/// a service unit, not a container.
pub const RUNTIMES: &[&str] = &[
    "docker",
    "containerd",
    "cri-o",
    "podman",
    "kubernetes",
    "systemd",
];

/// A runtime name read from a file, as the `&'static str` the record holds.
pub(crate) fn runtime_from_name(name: &str) -> Option<&'static str> {
    RUNTIMES.iter().copied().find(|r| *r == name)
}

/// `direction`.
pub const DIRECTIONS: &[&str] = &["sent", "received", "abort"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_one_to_one() {
        for &(id, name) in HOOKS {
            assert_eq!(hook_name(id), name);
            assert_eq!(hook_from_name(name), name);
        }
        assert_eq!(hook_name(0), UNKNOWN);
        assert_eq!(hook_from_name("kprobe:made_up"), UNKNOWN);
        for (value, name) in TCP_STATES.iter().enumerate() {
            assert_eq!(state_from_name(name), Some(value as u8));
            assert_eq!(state_name(value as u8), *name);
        }
        assert_eq!(state_name(200), INVALID_STATE);
        assert_eq!(state_from_name(INVALID_STATE), None);
        for r in RUNTIMES {
            assert_eq!(runtime_from_name(r), Some(*r));
        }
    }

    #[test]
    fn every_hook_id_of_the_abi_has_a_name() {
        // The ABI numbers its hooks from 1 without holes.
        let max = HOOKS.iter().map(|(id, _)| *id).max().unwrap_or(0);
        for id in 1..=max {
            assert_ne!(hook_name(id), UNKNOWN, "hook id {id}");
        }
    }
}
