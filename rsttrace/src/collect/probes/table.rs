//! `HOOKS`, the declarative table: every way rsttrace knows to see RSTs
//! (and connections that die without one), the programs each attaches,
//! what it needs from the kernel and what it provides. The types are
//! `probes`'; the choice among the rows is `probes::ranked`.

use rsttrace_ebpf::abi::program;

use super::{Attach, Family, Hook, Need, Provides, Role};

pub(crate) static HOOKS: &[Hook] = &[
    Hook {
        name: "tp_btf:tcp_send_reset(sk,skb,reason)",
        role: Role::Send,
        family: Family::TpBtf,
        attach: &[Attach::TpBtf {
            program: program::BTF_SEND_RESET,
            tracepoint: "tcp_send_reset",
        }],
        needs: &[Need::Btf, Need::BtfTracepointArgs("tcp_send_reset", 4)],
        provides: Provides::Fixed {
            reason: true,
            no_socket: true,
            packet: false,
        },
    },
    Hook {
        name: "fentry:tcp_v4_send_reset+tcp_v6_send_reset+tcp_send_active_reset",
        role: Role::Send,
        family: Family::Fentry,
        attach: &[
            Attach::Fentry {
                program: program::FENTRY_V4_SEND_RESET,
                function: "tcp_v4_send_reset",
                optional: false,
            },
            Attach::Fentry {
                program: program::FENTRY_V6_SEND_RESET,
                function: "tcp_v6_send_reset",
                optional: true,
            },
            Attach::Fentry {
                program: program::FENTRY_SEND_ACTIVE_RESET,
                function: "tcp_send_active_reset",
                optional: false,
            },
        ],
        needs: &[
            Need::Btf,
            Need::BtfFunctionArgs("tcp_v4_send_reset", 2),
            Need::BtfFunctionArgs("tcp_send_active_reset", 1),
            Need::FentryPermitted,
        ],
        provides: Provides::Fixed {
            reason: false,
            no_socket: true,
            packet: false,
        },
    },
    Hook {
        name: "kprobe:tcp_v4_send_reset+tcp_v6_send_reset+tcp_send_active_reset",
        role: Role::Send,
        family: Family::Kprobe,
        attach: &[
            Attach::Kprobe {
                program: program::KPROBE_SEND_RESET,
                function: "tcp_v4_send_reset",
                optional: false,
            },
            Attach::Kprobe {
                program: program::KPROBE_SEND_RESET,
                function: "tcp_v6_send_reset",
                optional: true,
            },
            Attach::Kprobe {
                program: program::KPROBE_SEND_ACTIVE_RESET,
                function: "tcp_send_active_reset",
                optional: false,
            },
        ],
        needs: &[
            Need::KprobePmu,
            Need::Function("tcp_v4_send_reset"),
            Need::Function("tcp_send_active_reset"),
        ],
        provides: Provides::Fixed {
            reason: false,
            no_socket: true,
            packet: false,
        },
    },
    Hook {
        name: "tp_btf:tcp_send_reset(sk,skb)",
        role: Role::Send,
        family: Family::TpBtf,
        attach: &[Attach::TpBtf {
            program: program::BTF_SEND_RESET_NO_REASON,
            tracepoint: "tcp_send_reset",
        }],
        needs: &[Need::Btf, Need::BtfTracepointArgs("tcp_send_reset", 3)],
        // Same kernel event as the tracepoint: it fires without a socket
        // where the tracepoint's format says so.
        provides: Provides::SendTracepointFormat,
    },
    Hook {
        name: "tracepoint:tcp:tcp_send_reset",
        role: Role::Send,
        family: Family::Tracepoint,
        attach: &[Attach::Tracepoint {
            program: program::TP_SEND_RESET,
            category: "tcp",
            name: "tcp_send_reset",
        }],
        needs: &[Need::Tracepoint("tcp", "tcp_send_reset")],
        provides: Provides::SendTracepointFormat,
    },
    Hook {
        name: "tracepoint:skb:kfree_skb(NO_SOCKET)",
        role: Role::SendNoSocket,
        family: Family::Tracepoint,
        attach: &[Attach::Tracepoint {
            program: program::TP_KFREE_SKB,
            category: "skb",
            name: "kfree_skb",
        }],
        needs: &[Need::Tracepoint("skb", "kfree_skb"), Need::KfreeSkbNoSocket],
        provides: Provides::Fixed {
            reason: false,
            no_socket: true,
            packet: false,
        },
    },
    Hook {
        name: "tp_btf:tcp_receive_reset",
        role: Role::Receive,
        family: Family::TpBtf,
        attach: &[Attach::TpBtf {
            program: program::BTF_RECEIVE_RESET,
            tracepoint: "tcp_receive_reset",
        }],
        needs: &[Need::Btf, Need::BtfTracepointArgs("tcp_receive_reset", 2)],
        provides: Provides::Fixed {
            reason: false,
            no_socket: false,
            packet: false,
        },
    },
    Hook {
        name: "fentry:tcp_reset(sk,skb)",
        role: Role::Receive,
        family: Family::Fentry,
        attach: &[Attach::Fentry {
            program: program::FENTRY_TCP_RESET,
            function: "tcp_reset",
            optional: false,
        }],
        needs: &[
            Need::Btf,
            Need::BtfFunctionArgs("tcp_reset", 2),
            Need::FentryPermitted,
        ],
        provides: Provides::Fixed {
            reason: false,
            no_socket: false,
            packet: true,
        },
    },
    Hook {
        name: "kprobe:tcp_reset(sk,skb)",
        role: Role::Receive,
        family: Family::Kprobe,
        attach: &[Attach::Kprobe {
            program: program::KPROBE_TCP_RESET,
            function: "tcp_reset",
            optional: false,
        }],
        // BTF tells whether tcp_reset takes the skb (it did not before 5.16).
        needs: &[
            Need::KprobePmu,
            Need::Function("tcp_reset"),
            Need::BtfFunctionArgs("tcp_reset", 2),
        ],
        provides: Provides::Fixed {
            reason: false,
            no_socket: false,
            packet: true,
        },
    },
    Hook {
        name: "tracepoint:tcp:tcp_receive_reset",
        role: Role::Receive,
        family: Family::Tracepoint,
        attach: &[Attach::Tracepoint {
            program: program::TP_RECEIVE_RESET,
            category: "tcp",
            name: "tcp_receive_reset",
        }],
        needs: &[Need::Tracepoint("tcp", "tcp_receive_reset")],
        provides: Provides::Fixed {
            reason: false,
            no_socket: false,
            packet: false,
        },
    },
    Hook {
        name: "tp_btf:inet_sk_error_report",
        role: Role::Abort,
        family: Family::TpBtf,
        attach: &[Attach::TpBtf {
            program: program::BTF_ERROR_REPORT,
            tracepoint: "inet_sk_error_report",
        }],
        // sock:inet_sk_error_report(sk) came in 5.14.
        needs: &[
            Need::Btf,
            Need::BtfTracepointArgs("inet_sk_error_report", 2),
        ],
        provides: Provides::Fixed {
            reason: false,
            no_socket: false,
            packet: false,
        },
    },
    Hook {
        name: "kprobe:sock_def_error_report",
        role: Role::Abort,
        family: Family::Kprobe,
        // What every TCP socket's sk->sk_error_report points at, and so
        // what the tracepoint reports, before it existed. Static, but its
        // address is taken, so it is never inlined away.
        attach: &[Attach::Kprobe {
            program: program::KPROBE_ERROR_REPORT,
            function: "sock_def_error_report",
            optional: false,
        }],
        needs: &[Need::KprobePmu, Need::Function("sock_def_error_report")],
        provides: Provides::Fixed {
            reason: false,
            no_socket: false,
            packet: false,
        },
    },
    Hook {
        name: FIREWALL_KPROBE,
        role: Role::Firewall,
        family: Family::Kprobe,
        // In the modules nf_reject_ipv4/ipv6, which load with the first
        // reject rule: both optional, attached late (`Session::recheck_firewall`).
        attach: &[
            Attach::Kprobe {
                program: program::KPROBE_NF_SEND_RESET,
                function: "nf_send_reset",
                optional: true,
            },
            Attach::Kprobe {
                program: program::KPROBE_NF_SEND_RESET,
                function: "nf_send_reset6",
                optional: true,
            },
        ],
        needs: &[Need::KprobePmu],
        provides: NOTHING_ELSE,
    },
    Hook {
        name: FIREWALL_DEVICE,
        role: Role::Firewall,
        family: Family::TpBtf,
        attach: &[Attach::TpBtf {
            program: program::BTF_SOCKETLESS_RST,
            tracepoint: "net_dev_queue",
        }],
        needs: &[Need::Btf, Need::BtfTracepointArgs("net_dev_queue", 2)],
        provides: NOTHING_ELSE,
    },
];

/// The firewall hooks add a cause, not a capability of the RST hooks.
const NOTHING_ELSE: Provides = Provides::Fixed {
    reason: false,
    no_socket: false,
    packet: false,
};

pub(super) const FIREWALL_KPROBE: &str = "kprobe:nf_send_reset+nf_send_reset6";
pub(super) const FIREWALL_DEVICE: &str = "tp_btf:net_dev_queue(socketless RST)";
