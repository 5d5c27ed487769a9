//! The cause taxonomy: stable ids, explanations and remediation hints.
//!
//! Ids are part of the output schema: add new ones, never rename.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseId {
    PortNotOpen,
    ConnectTimeout,
    CloseUnreadData,
    DataAfterClose,
    LingerZero,
    Linger2Abort,
    KeepaliveTimeout,
    TimeWait,
    InvalidPacket,
    HalfOpen,
    BacklogOverflow,
    MemoryPressure,
    Disconnect,
    SocketKilled,
    ListenerClosed,
    PeerRefused,
    PeerReset,
    MiddleboxSuspect,
    FirewallReject,
    RetransmitTimeout,
    Unreachable,
    Unknown,
}

impl CauseId {
    pub const ALL: &'static [CauseId] = &[
        CauseId::PortNotOpen,
        CauseId::ConnectTimeout,
        CauseId::CloseUnreadData,
        CauseId::DataAfterClose,
        CauseId::LingerZero,
        CauseId::Linger2Abort,
        CauseId::KeepaliveTimeout,
        CauseId::TimeWait,
        CauseId::InvalidPacket,
        CauseId::HalfOpen,
        CauseId::BacklogOverflow,
        CauseId::MemoryPressure,
        CauseId::Disconnect,
        CauseId::SocketKilled,
        CauseId::ListenerClosed,
        CauseId::PeerRefused,
        CauseId::PeerReset,
        CauseId::MiddleboxSuspect,
        CauseId::FirewallReject,
        CauseId::RetransmitTimeout,
        CauseId::Unreachable,
        CauseId::Unknown,
    ];

    pub fn id(self) -> &'static str {
        match self {
            CauseId::PortNotOpen => "port_not_open",
            CauseId::ConnectTimeout => "connect_timeout",
            CauseId::CloseUnreadData => "close_unread_data",
            CauseId::DataAfterClose => "data_after_close",
            CauseId::LingerZero => "linger_zero",
            CauseId::Linger2Abort => "linger2_abort",
            CauseId::KeepaliveTimeout => "keepalive_timeout",
            CauseId::TimeWait => "time_wait",
            CauseId::InvalidPacket => "invalid_packet",
            CauseId::HalfOpen => "half_open",
            CauseId::BacklogOverflow => "backlog_overflow",
            CauseId::MemoryPressure => "memory_pressure",
            CauseId::Disconnect => "disconnect",
            CauseId::SocketKilled => "socket_killed",
            CauseId::ListenerClosed => "listener_closed",
            CauseId::PeerRefused => "peer_refused",
            CauseId::PeerReset => "peer_reset",
            CauseId::MiddleboxSuspect => "middlebox_suspect",
            CauseId::FirewallReject => "firewall_reject",
            CauseId::RetransmitTimeout => "retransmit_timeout",
            CauseId::Unreachable => "unreachable",
            CauseId::Unknown => "unknown",
        }
    }

    pub fn from_id(id: &str) -> Option<CauseId> {
        CauseId::ALL.iter().copied().find(|c| c.id() == id)
    }

    /// One line: what happened.
    pub fn explanation(self) -> &'static str {
        match self {
            CauseId::PortNotOpen => "a SYN arrived for a port with no listening socket",
            CauseId::ConnectTimeout => {
                "a SYN-ACK arrived for a connection the local side had already given up on"
            }
            CauseId::CloseUnreadData => {
                "the application closed the socket while received data was still unread"
            }
            CauseId::DataAfterClose => "the peer sent data after this side closed the socket",
            CauseId::LingerZero => "the application closed the socket with SO_LINGER {on, 0}",
            CauseId::KeepaliveTimeout => "keepalive probes went unanswered",
            CauseId::Linger2Abort => {
                "close() in FIN_WAIT2 with TCP_LINGER2 < 0 aborts instead of waiting for the peer's FIN"
            }
            CauseId::TimeWait => {
                "a new connection hit a TIME_WAIT socket (or PAWS) on the same 4-tuple"
            }
            CauseId::InvalidPacket => {
                "a segment the TCP state machine rejects (bad ACK, invalid SYN, PAWS)"
            }
            CauseId::HalfOpen => {
                "a segment for a connection this host no longer has (half-open after crash, reboot or expiry)"
            }
            CauseId::BacklogOverflow => {
                "the listen queue was full and tcp_abort_on_overflow=1 resets the handshake"
            }
            CauseId::MemoryPressure => {
                "too many orphaned sockets or tcp_mem pressure made the kernel abort the connection"
            }
            CauseId::Disconnect => {
                "the application called connect(AF_UNSPEC) (tcp_disconnect) on a live connection"
            }
            CauseId::SocketKilled => {
                "the connection was destroyed from outside (ss -K, tcp_abort, BPF sock_destroy)"
            }
            CauseId::ListenerClosed => {
                "a listening socket was closed with connections still waiting in its accept queue"
            }
            CauseId::PeerReset => "the peer reset an established connection",
            CauseId::PeerRefused => "the peer refused the connection (RST in reply to our SYN)",
            CauseId::MiddleboxSuspect => {
                "a received RST that a NAT, load balancer or firewall on the path likely forged"
            }
            CauseId::FirewallReject => {
                "a firewall rule on this host answered the segment with its own RST (reject with tcp reset)"
            }
            CauseId::RetransmitTimeout => {
                "no RST: the peer stopped acknowledging and the kernel gave up retransmitting"
            }
            CauseId::Unreachable => {
                "no RST: an ICMP error (host or network unreachable, rejected) ended the connection"
            }
            CauseId::Unknown => "the kernel facts do not match a known cause",
        }
    }

    /// One line: what to change.
    pub fn remedy(self) -> &'static str {
        match self {
            CauseId::PortNotOpen => {
                "check that the service is running and listening on this port and address"
            }
            CauseId::ConnectTimeout => {
                "raise the client's connect timeout or find why the server answers slowly"
            }
            CauseId::CloseUnreadData => {
                "read the request/response completely (or shutdown(SHUT_WR) and drain) before close()"
            }
            CauseId::DataAfterClose => {
                "agree on who closes first; the peer should stop writing once it sees EOF"
            }
            CauseId::LingerZero => {
                "remove SO_LINGER 0 unless aborting is intended; it discards unsent data"
            }
            CauseId::KeepaliveTimeout => {
                "the peer or the path is gone; check NAT/LB idle timeouts and the peer's health"
            }
            CauseId::Linger2Abort => {
                "set TCP_LINGER2 >= 0 unless aborting in FIN_WAIT2 is intended"
            }
            CauseId::TimeWait => {
                "let the client pick ephemeral ports (no fixed source port), or enable timestamps"
            }
            CauseId::InvalidPacket => {
                "look for stale peers, NAT rewriting or broken TCP stacks on the path"
            }
            CauseId::HalfOpen => {
                "the peer holds a dead connection: enable keepalive on it and retry on ECONNRESET"
            }
            CauseId::BacklogOverflow => {
                "accept() faster, raise the listen backlog and net.core.somaxconn"
            }
            CauseId::MemoryPressure => {
                "raise net.ipv4.tcp_max_orphans / tcp_mem, or close sockets less abruptly"
            }
            CauseId::Disconnect => {
                "the reset is deliberate; check why the application disconnects with data in flight"
            }
            CauseId::SocketKilled => {
                "find the killer process (actor) and why it destroyed the socket"
            }
            CauseId::ListenerClosed => {
                "drain the accept queue (or stop accepting gracefully) before closing the listener"
            }
            CauseId::PeerReset => "look at the peer: its rsttrace/logs say why it reset",
            CauseId::PeerRefused => "the remote port is closed or a firewall rejects it",
            CauseId::MiddleboxSuspect => {
                "compare the idle gap with NAT/LB idle timeouts; enable keepalive below them"
            }
            CauseId::FirewallReject => {
                "look at the nftables/iptables rules of the namespace named (nft list ruleset); \
                 the application never saw the segment"
            }
            CauseId::RetransmitTimeout => {
                "check the path and the peer (packet loss, a dead host, a firewall dropping); \
                 tune TCP_USER_TIMEOUT / tcp_retries2 / tcp_syn_retries"
            }
            CauseId::Unreachable => {
                "check routes and firewalls between the hosts; the ICMP error names the hop"
            }
            CauseId::Unknown => "report the event's evidence; it may be a new cause",
        }
    }
}

/// How sure the classifier is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// The kernel's own reason and the socket/packet facts agree.
    Certain,
    /// Inferred from facts; the kernel did not say (or said something misleading).
    Likely,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Certain => "certain",
            Confidence::Likely => "likely",
        }
    }
}

/// The classifier's verdict for one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    pub id: CauseId,
    pub confidence: Confidence,
    /// The facts that led to the verdict, by name.
    pub evidence: serde_json::Map<String, serde_json::Value>,
}
