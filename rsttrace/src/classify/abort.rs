//! A connection the kernel ended without an RST: the abort hook's events.

use rsttrace_ebpf::linux::errno::{
    EACCES, ECONNREFUSED, EHOSTDOWN, EHOSTUNREACH, ENETDOWN, ENETUNREACH, ENOPROTOOPT, ETIMEDOUT,
};

use super::evidence::{Verdict, errno_name};
use crate::model::cause::CauseId;
use crate::model::event::{Event, TcpState};

/// A connection the kernel ended without an RST, from its socket error.
pub(super) fn abort(ev: &Event, v: &mut Verdict) -> CauseId {
    let Some(sock) = ev.socket else {
        return CauseId::Unknown;
    };
    v.fact("errno", errno_name(sock.sk_err));
    if sock.unacked > 0 {
        v.fact("unacked", sock.unacked);
    }
    // Newer kernels close the socket before they report the error.
    let state = sock.closed_from.unwrap_or(ev.state);
    v.fact("state_before", state.name());
    match sock.sk_err {
        ETIMEDOUT => {
            if state == TcpState::SYN_SENT {
                v.fact(
                    "phase",
                    "SYN retransmissions (tcp_syn_retries or TCP_USER_TIMEOUT)",
                );
            } else if sock.keepalive && sock.probes_out > 0 && sock.unacked == 0 {
                // The keepalive timer's own abort sends an RST (an event
                // already); this one had no data outstanding but probes.
                v.fact("probes_out", sock.probes_out);
                return CauseId::KeepaliveTimeout;
            } else if sock.probes_out > 0 {
                v.fact("zero_window_probes", sock.probes_out);
            }
            v.certain();
            CauseId::RetransmitTimeout
        }
        // ICMP errors: tcp_v{4,6}_err() maps net/host/port unreachable and
        // "administratively prohibited" (a firewall's reject) to these.
        EACCES | ENOPROTOOPT | ENETDOWN | ENETUNREACH | ECONNREFUSED | EHOSTDOWN | EHOSTUNREACH => {
            if sock.sk_err == ECONNREFUSED {
                v.fact("icmp", "port unreachable (a firewall's reject)");
            }
            v.certain();
            CauseId::Unreachable
        }
        _ => CauseId::Unknown,
    }
}
