//! Received RSTs: the state they hit says what was refused; who sent them
//! (the peer, seen or not, a middlebox, a firewall) says whose it is.

use std::time::Duration;

use serde_json::json;

use super::evidence::Verdict;
use super::{Context, Sender};
use crate::model::cause::{CauseId, Confidence};
use crate::model::event::{Event, TcpFlags, TcpState};
use crate::model::evidence::Evidence;

pub(super) fn received(ev: &Event, ctx: &Context, v: &mut Verdict) -> CauseId {
    if let Some(sock) = ev.socket {
        if sock.unacked > 0 {
            v.fact("unacked", sock.unacked);
        }
        if sock.unread > 0 {
            v.fact("unread", sock.unread);
        }
    }
    if let Some(p) = ev.packet {
        v.fact("ttl", p.ttl);
        v.fact("window", p.window);
        if ev.local.is_ipv4() && p.ip_id != 0 {
            v.fact("ip_id", p.ip_id);
        }
        if !p.flags.has(TcpFlags::RST) {
            // tcp_reset() ran on a data segment (data after shutdown in
            // FIN_WAIT): this host is about to send the RST, none came in.
            // Normally folded into that sent event; here it was not seen.
            v.fact(
                "not_an_rst",
                "tcp_reset() on a data segment; the RST this socket sent was not seen",
            );
            return CauseId::DataAfterClose;
        }
    }
    let paired = sender_evidence(ctx, v);
    seq_evidence(ev, ctx, v);
    if let Sender::Paired(p) = &ctx.sender
        && p.cause == CauseId::FirewallReject
    {
        v.fact("errno", received_errno(ev.state));
        if p.confidence == Confidence::Certain {
            v.certain();
        }
        return CauseId::FirewallReject;
    }
    // The kernel accepted this RST (tcp_reset()), so it matched the
    // connection exactly: the state it hit says what was refused. Who sent
    // it is certain only when its sender's TCP stack is seen sending it.
    let mut middlebox = Vec::new();
    if matches!(ctx.sender, Sender::LocalSentNone { .. }) {
        middlebox.push("local_sender_sent_no_rst");
        v.fact("suspect", "firewall_reject");
    }
    if ev.state == TcpState::SYN_SENT {
        v.fact("errno", "ECONNREFUSED");
        if paired {
            v.certain();
        } else if !middlebox.is_empty() {
            v.fact("middlebox", json!(middlebox));
            return CauseId::MiddleboxSuspect;
        }
        return CauseId::PeerRefused;
    }
    v.fact(
        "errno",
        if ev.state == TcpState::CLOSE_WAIT {
            "EPIPE"
        } else {
            "ECONNRESET"
        },
    );
    let idle = ev.socket.and_then(|s| s.peer_idle);
    if let Some(idle) = idle {
        v.fact("peer_idle_s", idle.as_secs());
    }
    // A connection silent for minutes and then reset: NAT gateways, load
    // balancers and firewalls drop idle flows (AWS NLB 350 s, Azure 240 s)
    // and answer the next segment with an RST the peer never sent.
    if idle.is_some_and(|d| d >= MIDDLEBOX_IDLE) {
        middlebox.push("idle_past_lb_timeout");
    }
    if let (Some(idle), Some(limit)) = (idle, ctx.conntrack_timeout)
        && idle >= limit
    {
        v.fact("conntrack_timeout_s", limit.as_secs());
        middlebox.push("idle_past_conntrack_timeout");
    }
    // Several RSTs for one flow with different TTLs: the injection pattern
    // (each forger sits at its own hop distance, or guesses).
    if let Some(p) = ev.packet
        && ctx.flow_rst_ttls.iter().any(|&t| t != p.ttl)
    {
        v.fact("flow_rst_ttls", json!(ctx.flow_rst_ttls));
        middlebox.push("rst_ttls_differ");
    }
    if paired {
        v.certain();
        return CauseId::PeerReset;
    }
    if !middlebox.is_empty() {
        v.fact("middlebox", json!(middlebox));
        return CauseId::MiddleboxSuspect;
    }
    CauseId::PeerReset
}

/// Where the received RST's sequence number fell against what this socket
/// expected. tcp_validate_incoming() (RFC 5961) lets an RST reach
/// tcp_reset() in a synchronized state only when it is exactly `rcv_nxt`
/// (or `rcv_nxt - 1` after the peer's FIN, or the right edge of the
/// highest SACK block); one merely in the window gets a challenge ACK, one
/// outside it is dropped. So `exact` proves the sender tracked the flow to
/// the byte: the peer or a box on the path, not a blind off-path guess;
/// it cannot tell the peer from an on-path middlebox. In SYN_SENT the ACK
/// number is checked instead.
fn seq_evidence(ev: &Event, ctx: &Context, v: &mut Verdict) {
    let Some(sock) = ev.socket.filter(|s| s.full) else {
        return;
    };
    let sender_seq = match &ctx.sender {
        Sender::Paired(p) => p.rst_seq,
        _ => None,
    };
    let (seq, from) = match (ev.packet.map(|p| p.seq), sender_seq) {
        (Some(seq), _) => (seq, "packet"),
        (None, Some(seq)) => (seq, "sender"),
        (None, None) => return,
    };
    let offset = seq.wrapping_sub(sock.rcv_nxt) as i32;
    let position = match offset {
        _ if ev.state == TcpState::SYN_SENT => "not_checked",
        0 => "exact",
        -1 if matches!(
            ev.state,
            TcpState::CLOSE_WAIT | TcpState::LAST_ACK | TcpState::CLOSING
        ) =>
        {
            "after_fin"
        }
        d if d > 0 && (d as u32) < sock.rcv_wnd => "in_window",
        _ => "outside",
    };
    v.fact(
        "seq",
        Evidence::new()
            .with("position", position)
            .with("offset", offset)
            .with("rcv_nxt", sock.rcv_nxt)
            .with("rcv_wnd", sock.rcv_wnd)
            .with("from", from),
    );
}

fn received_errno(state: TcpState) -> &'static str {
    match state {
        TcpState::SYN_SENT => "ECONNREFUSED",
        TcpState::CLOSE_WAIT => "EPIPE",
        _ => "ECONNRESET",
    }
}

/// Evidence about a received RST's sender; true when its send was seen.
fn sender_evidence(ctx: &Context, v: &mut Verdict) -> bool {
    match &ctx.sender {
        Sender::Paired(p) => {
            let mut m = Evidence::new()
                .with("cause", p.cause.id())
                .with("delta_us", p.delta_us)
                .with("seq_matched", p.seq_matched);
            if let Some(ns) = p.netns {
                m = m.with("netns", ns);
            }
            if let Some(t) = &p.process {
                m = m.with("pid", t.pid).with("comm", t.comm.clone());
            }
            v.fact("peer_event", m);
            true
        }
        Sender::LocalSentNone { netns } => {
            v.fact("unpaired", "sender on this host sent no RST");
            if let Some(ns) = netns {
                v.fact("sender_netns", *ns);
            }
            false
        }
        Sender::LocalUnseen { why } => {
            v.fact(
                "unpaired",
                format!("sender on this host, not all its sends seen: {why}"),
            );
            false
        }
        Sender::NotLocal => {
            v.fact("unpaired", "sender not on this host");
            false
        }
        Sender::NotJudged => {
            v.fact("unpaired", "sender not looked for");
            false
        }
    }
}

/// The shortest idle timeout of common middleboxes (Azure's load balancer).
const MIDDLEBOX_IDLE: Duration = Duration::from_secs(240);
