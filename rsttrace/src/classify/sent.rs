//! Sent RSTs: by the kernel's `sk_rst_reason` where it gives one, else
//! from the socket and trigger-packet facts; then what the previous
//! connection on the 4-tuple says.

use super::Context;
use super::evidence::{Verdict, errno_name};
use crate::model::cause::{CauseId, Confidence};
use crate::model::event::{Event, ExecContext, PriorKind, TcpFlags, TcpState};
use crate::model::evidence::Evidence;

pub(super) const SOFTIRQ_TIMER: u8 = rsttrace_ebpf::linux::softirq::TIMER;
/// RCV_SHUTDOWN | SEND_SHUTDOWN.
pub(super) const SHUTDOWN_MASK: u8 = 3;

/// A new connection's SYN answered by a stale socket at the peer: after
/// our previous connection on this 4-tuple was killed or aborted (its RST
/// lost, or none sent), the peer still holds it — half-open, not TIME_WAIT.
/// No record of such an end leaves the TIME_WAIT reading.
pub(super) fn previous_connection(id: CauseId, ctx: &Context, v: &mut Verdict) -> CauseId {
    let Some(prev) = &ctx.previous else {
        return id;
    };
    if id != CauseId::TimeWait {
        return id;
    }
    v.fact(
        "previous_connection",
        Evidence::new()
            .with("ended", prev.cause.id())
            .with("ago_ms", prev.ago.as_millis() as u64),
    );
    v.confidence = Confidence::Likely;
    CauseId::HalfOpen
}

fn trigger(ev: &Event) -> TcpFlags {
    ev.packet.map(|p| p.flags).unwrap_or_default()
}

fn is_syn(f: TcpFlags) -> bool {
    f.has(TcpFlags::SYN) && !f.has(TcpFlags::ACK)
}

fn is_syn_ack(f: TcpFlags) -> bool {
    f.has(TcpFlags::SYN) && f.has(TcpFlags::ACK)
}

/// Unread bytes beyond a received FIN (which counts as one sequence number).
/// `sk_shutdown` cannot tell: close() sets it to SHUTDOWN_MASK before the RST.
fn unread_data(ev: &Event) -> u32 {
    ev.socket
        .map(|s| s.unread.saturating_sub(u32::from(s.peer_fin)))
        .unwrap_or(0)
}

fn accept_queue_full(ev: &Event) -> bool {
    ev.socket.is_some_and(|s| s.accept_queue_full)
}

/// An unowned child reset in CLOSE right after the listener on its port
/// closed (the kernel attaches the listener's close to such resets).
fn listener_just_closed(ev: &Event) -> bool {
    ev.prior.as_ref().is_some_and(|p| {
        p.kind == PriorKind::ListenerClosed && p.ago < std::time::Duration::from_secs(1)
    })
}

fn linger_zero(ev: &Event) -> bool {
    ev.socket.is_some_and(|s| s.linger == Some(0))
}

/// The kernel reasons a cause lists (`CauseInfo::kernel_reasons`) map
/// here (a test checks each).
pub(super) fn sent_with_reason(ev: &Event, reason: &str, v: &mut Verdict) -> CauseId {
    let flags = trigger(ev);
    match reason {
        "NO_SOCKET" => {
            v.certain();
            no_socket(ev, flags, v)
        }
        "TCP_ABORT_ON_CLOSE" => {
            let unread = unread_data(ev);
            v.fact("unread_bytes_lost", unread);
            if unread > 0 {
                v.certain();
            } else {
                v.disagree("ABORT_ON_CLOSE but no unread bytes were seen");
            }
            CauseId::CloseUnreadData
        }
        "TCP_ABORT_ON_DATA" => {
            // Data (or a FIN) arrived on a socket whose application already
            // shut down reading or closed it.
            if let Some(p) = ev.packet {
                v.fact("peer_sent_bytes", p.len);
            }
            v.certain();
            CauseId::DataAfterClose
        }
        "TCP_TIMEWAIT_SOCKET" => timewait_socket(ev, flags, v),
        "TCP_STATE" => tcp_state(ev, v),
        "TCP_KEEPALIVE_TIMEOUT" => {
            if let Some(s) = ev.socket {
                v.fact("probes_out", s.probes_out);
            }
            v.certain();
            CauseId::KeepaliveTimeout
        }
        "TCP_ABORT_ON_LINGER" => {
            v.certain();
            CauseId::Linger2Abort
        }
        "TCP_ABORT_ON_MEMORY" => {
            v.certain();
            CauseId::MemoryPressure
        }
        "TCP_DISCONNECT_WITH_DATA" => {
            if let Some(s) = ev.socket {
                v.fact("unsent", s.unsent);
            }
            v.certain();
            CauseId::Disconnect
        }
        "INVALID_SYN" => {
            // tcp_check_req() says INVALID_SYN both for a duplicate SYN and
            // for a full accept queue at the third ACK (abort_on_overflow).
            if flags.has(TcpFlags::ACK) && !flags.has(TcpFlags::SYN) {
                v.fact(
                    "misleading_reason",
                    "INVALID_SYN for an ACK: accept queue overflow",
                );
                if accept_queue_full(ev) {
                    v.fact("accept_queue", "full");
                    v.certain();
                }
                CauseId::BacklogOverflow
            } else {
                v.fact("invalid", "duplicate SYN to a request socket");
                v.certain();
                CauseId::InvalidPacket
            }
        }
        "TCP_INVALID_ACK_SEQUENCE" | "TCP_RFC7323_PAWS" if ev.state == TcpState::SYN_SENT => {
            // Our SYN got an ACK for something else: a TIME_WAIT (or stale)
            // socket at the peer answered it.
            v.fact("invalid", reason.to_ascii_lowercase());
            CauseId::TimeWait
        }
        "TCP_INVALID_ACK_SEQUENCE"
        | "TCP_RFC7323_PAWS"
        | "TCP_TOO_OLD_ACK"
        | "TCP_ACK_UNSENT_DATA"
        | "TCP_FLAGS"
        | "TCP_OLD_ACK" => {
            v.fact("invalid", reason.to_ascii_lowercase());
            v.certain();
            CauseId::InvalidPacket
        }
        _ => {
            v.fact("unmapped_reason", reason.to_string());
            sent_without_reason(ev, v)
        }
    }
}

fn no_socket(ev: &Event, flags: TcpFlags, v: &mut Verdict) -> CauseId {
    let prior = ev.prior.as_ref();
    if is_syn(flags) {
        if let Some(p) = prior.filter(|p| p.kind == PriorKind::ListenerClosed) {
            v.fact("listener_closed_ago_ms", p.ago.as_millis() as u64);
        }
        return CauseId::PortNotOpen;
    }
    if is_syn_ack(flags) {
        // Our connect() gave up (timeout, close()) before the SYN-ACK came.
        // Certain only when its close of the SYN_SENT socket was seen too.
        match prior.filter(|p| p.kind == PriorKind::ConnectAbandoned) {
            Some(p) => v.fact("syn_ack_late_ms", p.ago.as_millis() as u64),
            None => v.confidence = Confidence::Likely,
        }
        return CauseId::ConnectTimeout;
    }
    if ev.packet.is_some() && !flags.has(TcpFlags::RST) {
        v.confidence = Confidence::Likely;
        if let Some(p) = prior.filter(|p| p.kind == PriorKind::Closed) {
            // The peer still talks to a connection we closed: with an error,
            // ours was aborted (e.g. a retransmission timeout) and the peer
            // never learnt of it.
            if let Some(err) = p.error {
                v.fact("follows_abort", errno_name(err));
            }
        }
        return CauseId::HalfOpen;
    }
    v.confidence = Confidence::Likely;
    CauseId::Unknown
}

fn timewait_socket(ev: &Event, flags: TcpFlags, v: &mut Verdict) -> CauseId {
    let sub = ev.socket.and_then(|s| s.tw_substate);
    if let Some(sub) = sub {
        v.fact("tw_substate", sub.name());
    }
    // An orphan in FIN_WAIT2 became a timewait socket; the peer's data (or
    // its late FIN with data) got TCP_TW_RST: the peer wrote after our close.
    // Certain only when the kernel said so too (6.10+).
    let data = ev.packet.is_some_and(|p| p.len > 0) || flags.has(TcpFlags::FIN);
    if !data {
        v.disagree("timewait RST without payload in the trigger");
    } else if ev.reason() == Some("TCP_TIMEWAIT_SOCKET") {
        v.certain();
    }
    CauseId::DataAfterClose
}

/// TCP_STATE covers SO_LINGER 0, tcp_abort (ss -K), closing a listener with
/// pending children, connect(AF_UNSPEC), and dead FIN_WAIT2 timers.
fn tcp_state(ev: &Event, v: &mut Verdict) -> CauseId {
    let Some(sock) = ev.socket else {
        return CauseId::Unknown;
    };
    if ev.state != TcpState::CLOSE {
        // tcp_abort() resets in the original state; the timer path for a
        // dead FIN_WAIT2 with linger2 < 0 also lands here.
        if matches!(ev.context, ExecContext::Softirq(SOFTIRQ_TIMER)) {
            v.fact("timer", "FIN_WAIT2 expiry with TCP_LINGER2 < 0");
            return CauseId::Linger2Abort;
        }
        v.fact("actor", ev.actor.comm.clone());
        return CauseId::SocketKilled;
    }
    if sock.linger == Some(0) {
        v.fact("so_linger", "on, 0");
        v.certain();
        return CauseId::LingerZero;
    }
    if listener_just_closed(ev) {
        // Children of a closing listener are reset from inet_csk_listen_stop.
        v.certain();
        return CauseId::ListenerClosed;
    }
    if sock.dead && ev.process.is_none() {
        return CauseId::ListenerClosed;
    }
    if ev.context == ExecContext::Task {
        v.fact("unsent", sock.unsent);
        return CauseId::Disconnect;
    }
    CauseId::Unknown
}

/// Kernels before 6.10 give no reason: decide from the socket and packet facts
/// (decision procedure in ../shared/docs/rst-causes.md, section 3).
pub(super) fn sent_without_reason(ev: &Event, v: &mut Verdict) -> CauseId {
    let flags = trigger(ev);
    v.confidence = Confidence::Likely;
    let Some(sock) = ev.socket else {
        return no_socket(ev, flags, v);
    };
    if ev.packet.is_none() {
        // Active reset: close(), a timer, tcp_abort() or disconnect.
        if ev.state == TcpState::CLOSE {
            if listener_just_closed(ev) {
                return CauseId::ListenerClosed;
            }
            // close() sets sk_shutdown to SHUTDOWN_MASK before it resets;
            // tcp_disconnect() (connect(AF_UNSPEC)) leaves it alone.
            if sock.shutdown != SHUTDOWN_MASK && ev.context == ExecContext::Task && !sock.dead {
                v.fact("unsent", sock.unsent);
                return CauseId::Disconnect;
            }
            let unread = unread_data(ev);
            if unread > 0 {
                v.fact("unread_bytes_lost", unread);
                return CauseId::CloseUnreadData;
            }
            if linger_zero(ev) {
                v.fact("so_linger", "on, 0");
                return CauseId::LingerZero;
            }
            // connect(AF_UNSPEC) on a CLOSING/LAST_ACK socket with data
            // still unsent (shutdown is already 3 there): what 6.10+ names
            // TCP_DISCONNECT_WITH_DATA. close() orphans the socket first.
            if ev.context == ExecContext::Task && !sock.dead && sock.unsent > 0 {
                v.fact("unsent", sock.unsent);
                v.fact("inferred_reason", "TCP_DISCONNECT_WITH_DATA");
                return CauseId::Disconnect;
            }
            if sock.dead && sock.closed_from == Some(TcpState::FIN_WAIT2) {
                // close() in FIN_WAIT2 with TCP_LINGER2 < 0 aborts at once.
                v.fact("closed_from", "FIN_WAIT2");
                return CauseId::Linger2Abort;
            }
            if sock.dead {
                return CauseId::MemoryPressure;
            }
            return CauseId::Unknown;
        }
        let timer = matches!(ev.context, ExecContext::Softirq(SOFTIRQ_TIMER));
        // An orphan the retransmit timer kills because there are too many
        // orphans (tcp_out_of_resources): what 6.10+ names
        // TCP_ABORT_ON_MEMORY. A dead FIN_WAIT2 on the timer is TCP_LINGER2.
        if sock.dead && timer {
            if ev.state == TcpState::FIN_WAIT2 {
                v.fact("timer", "FIN_WAIT2 expiry with TCP_LINGER2 < 0");
                return CauseId::Linger2Abort;
            }
            if matches!(
                ev.state,
                TcpState::FIN_WAIT1 | TcpState::CLOSING | TcpState::LAST_ACK
            ) {
                v.fact("orphan", ev.state.name());
                v.fact("inferred_reason", "TCP_ABORT_ON_MEMORY");
                return CauseId::MemoryPressure;
            }
        }
        if sock.keepalive && sock.probes_out > 0 && timer {
            v.fact("probes_out", sock.probes_out);
            return CauseId::KeepaliveTimeout;
        }
        if ev.context == ExecContext::Task {
            return CauseId::SocketKilled;
        }
        return CauseId::Unknown;
    }
    match ev.state {
        TcpState::TIME_WAIT => timewait_socket(ev, flags, v),
        TcpState::CLOSE if ev.packet.is_some_and(|p| p.len > 0) || flags.has(TcpFlags::FIN) => {
            CauseId::DataAfterClose
        }
        TcpState::LISTEN if accept_queue_full(ev) => {
            v.fact("accept_queue", "full");
            CauseId::BacklogOverflow
        }
        TcpState::LISTEN => CauseId::InvalidPacket,
        TcpState::SYN_SENT => CauseId::TimeWait,
        _ => CauseId::Unknown,
    }
}
