//! Event → cause. Pure: every branch is unit-tested from crafted events.
//!
//! Two sources of truth, used together:
//! - the kernel's `sk_rst_reason` (6.10+), which is precise for some paths and
//!   misleading for others (SO_LINGER 0 says TCP_STATE, a full accept queue
//!   says INVALID_SYN: see ../shared/docs/rst-causes.md);
//! - the socket and trigger-packet facts, which are the only evidence on
//!   kernels without a reason and confirm (or contradict) the reason elsewhere.
//!
//! `certain` requires the reason and the facts to agree; inference alone is
//! `likely`. An event that fits nothing is `unknown` with its raw facts.

use rsttrace_ebpf::linux::errno::{
    EACCES, ECONNABORTED, ECONNREFUSED, ECONNRESET, EHOSTDOWN, EHOSTUNREACH, EMSGSIZE, ENETDOWN,
    ENETUNREACH, ENOPROTOOPT, EPIPE, EPROTO, ETIMEDOUT,
};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::model::cause::{Cause, CauseId, Confidence};
use crate::model::event::{
    Direction, Event, ExecContext, PriorClose, PriorKind, Task, TcpFlags, TcpState,
};

const SOFTIRQ_TIMER: u8 = rsttrace_ebpf::linux::softirq::TIMER;
/// RCV_SHUTDOWN | SEND_SHUTDOWN.
const SHUTDOWN_MASK: u8 = 3;

/// An event on its own, as if nothing else were known about it: a received
/// RST is then never `certain` (nothing corroborates its sender).
pub fn classify(ev: &Event) -> Cause {
    classify_with(ev, &Context::default())
}

/// An event with what other events and the host say about it (`correlate`).
pub fn classify_with(ev: &Event, ctx: &Context) -> Cause {
    let mut v = Verdict::new(ev);
    let id = match ev.direction {
        Direction::Received => received(ev, ctx, &mut v),
        Direction::Abort => abort(ev, &mut v),
        Direction::Sent => {
            if let Some(f) = &ctx.folded_reset {
                v.fact("folded_receive", folded_json(f));
            }
            let id = match ev.reason() {
                Some(reason) if reason != "NOT_SPECIFIED" => sent_with_reason(ev, reason, &mut v),
                _ => sent_without_reason(ev, &mut v),
            };
            previous_connection(id, ctx, &mut v)
        }
    };
    v.finish(id)
}

/// What other events and the host say about one event: filled by
/// `correlate` (pure data here, so every rule is unit-tested).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Context {
    /// Received RSTs: who sent it, as far as this host can tell.
    pub sender: Sender,
    /// Sent RSTs: the tcp_reset() the kernel ran on this same socket just
    /// before sending (data after shutdown in FIN_WAIT), folded in here
    /// because no RST was received.
    pub folded_reset: Option<Folded>,
    /// How this side's previous connection on the same 4-tuple ended, when
    /// an earlier event showed it ended abnormally (killed, aborted).
    pub previous: Option<Previous>,
    /// TTLs of the other RSTs received on this flow lately.
    pub flow_rst_ttls: Vec<u8>,
    /// This host's conntrack timeout for established flows, when
    /// conntrack is loaded (a local NAT or firewall forgets idle flows).
    pub conntrack_timeout: Option<Duration>,
}

/// Who sent a received RST.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Sender {
    /// Not looked at (an event classified on its own).
    #[default]
    NotJudged,
    /// A TCP stack on this host sent it: its send event.
    Paired(PeerEvent),
    /// The sender's address is on this host, yet no TCP stack there sent
    /// a matching RST: a firewall's reject or an injected segment made it.
    LocalSentNone { netns: Option<u32> },
    /// The sender's address is on this host, but rsttrace does not see
    /// every RST sent here (a filter other than ports, a send hook blind
    /// to socketless RSTs, or events lost lately): its absence says nothing.
    LocalUnseen { why: &'static str },
    /// The sender is not on this host: nothing here corroborates it.
    NotLocal,
}

/// The send event a received RST pairs with.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerEvent {
    pub cause: CauseId,
    /// Received minus sent time (negative: the receive was seen first).
    pub delta_us: i64,
    pub netns: Option<u32>,
    pub process: Option<Task>,
    /// The RST's sequence number was compared with what the sender sent.
    pub seq_matched: bool,
}

/// A tcp_reset() folded into the RST the same socket then sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Folded {
    pub hook: &'static str,
    pub state: TcpState,
    pub delta_us: u64,
}

/// How the previous connection on a 4-tuple ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Previous {
    pub cause: CauseId,
    pub ago: Duration,
}

fn folded_json(f: &Folded) -> Value {
    json!({
        "hook": f.hook,
        "state": f.state.name(),
        "before_us": f.delta_us,
        "why": "the kernel ran tcp_reset() on this socket, then sent this RST; nothing was received",
    })
}

/// Accumulates evidence and the confidence while a rule decides.
struct Verdict {
    evidence: Map<String, Value>,
    confidence: Confidence,
}

impl Verdict {
    fn new(ev: &Event) -> Verdict {
        // The state and the kernel reason are top-level fields of every
        // event; evidence holds the facts that decided between causes.
        let mut evidence = Map::new();
        if let Some(p) = ev.packet {
            evidence.insert("trigger_flags".into(), json!(p.flags.tcpdump()));
            if p.len > 0 {
                evidence.insert("trigger_payload".into(), json!(p.len));
            }
        }
        if ev.socket.is_none() && ev.direction == Direction::Sent {
            evidence.insert("socket".into(), json!("none"));
        }
        if let Some(prior) = &ev.prior {
            evidence.insert("prior".into(), prior_json(prior));
        }
        // Not a cause of its own: whatever the cause, the process was dying
        // (killed, crashed, or exiting) when its socket was reset.
        if let Some(signal) = ev.exit_signal
            && ev.direction == Direction::Sent
        {
            evidence.insert("process_exit".into(), json!(signal_name(signal)));
        }
        Verdict {
            evidence,
            confidence: Confidence::Likely,
        }
    }

    fn fact(&mut self, key: &str, value: impl Into<Value>) {
        self.evidence.insert(key.into(), value.into());
    }

    /// The kernel reason and the facts agree.
    fn certain(&mut self) {
        self.confidence = Confidence::Certain;
    }

    /// The kernel reason names this path, but the facts disagree: keep the
    /// cause, say so, and do not claim certainty.
    fn disagree(&mut self, what: &str) {
        self.confidence = Confidence::Likely;
        self.fact("disagreement", what);
    }

    fn finish(self, id: CauseId) -> Cause {
        let confidence = if id == CauseId::Unknown {
            Confidence::Likely
        } else {
            self.confidence
        };
        Cause {
            id,
            confidence,
            evidence: self.evidence,
        }
    }
}

/// What the 4-tuple went through before, for the evidence.
fn prior_json(p: &PriorClose) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), json!(p.kind.as_str()));
    m.insert("ago_ms".into(), json!(p.ago.as_millis() as u64));
    m.insert("state".into(), json!(p.state.name()));
    if let Some(err) = p.error {
        m.insert("errno".into(), json!(errno_name(err)));
    }
    if let Some(t) = &p.process {
        m.insert("pid".into(), json!(t.pid));
        m.insert("comm".into(), json!(t.comm));
    }
    Value::Object(m)
}

/// How the exiting task ended: the signal that killed it, or `exit`.
pub fn signal_name(signal: u8) -> String {
    let name = match signal {
        0 => "exit",
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

/// Names of the errnos a TCP connection can die with (asm-generic/errno.h).
pub fn errno_name(err: u32) -> String {
    let name = match err {
        EACCES => "EACCES",
        EPIPE => "EPIPE",
        EPROTO => "EPROTO",
        EMSGSIZE => "EMSGSIZE",
        ENOPROTOOPT => "ENOPROTOOPT",
        ENETDOWN => "ENETDOWN",
        ENETUNREACH => "ENETUNREACH",
        ECONNABORTED => "ECONNABORTED",
        ECONNRESET => "ECONNRESET",
        ETIMEDOUT => "ETIMEDOUT",
        ECONNREFUSED => "ECONNREFUSED",
        EHOSTDOWN => "EHOSTDOWN",
        EHOSTUNREACH => "EHOSTUNREACH",
        _ => return format!("errno {err}"),
    };
    name.to_string()
}

/// A connection the kernel ended without an RST, from its socket error.
fn abort(ev: &Event, v: &mut Verdict) -> CauseId {
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

fn received(ev: &Event, ctx: &Context, v: &mut Verdict) -> CauseId {
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

/// Evidence about a received RST's sender; true when its send was seen.
fn sender_evidence(ctx: &Context, v: &mut Verdict) -> bool {
    match &ctx.sender {
        Sender::Paired(p) => {
            let mut m = Map::new();
            m.insert("cause".into(), json!(p.cause.id()));
            m.insert("delta_us".into(), json!(p.delta_us));
            if let Some(ns) = p.netns {
                m.insert("netns".into(), json!(ns));
            }
            if let Some(t) = &p.process {
                m.insert("pid".into(), json!(t.pid));
                m.insert("comm".into(), json!(t.comm));
            }
            m.insert("seq_matched".into(), json!(p.seq_matched));
            v.fact("peer_event", Value::Object(m));
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

/// A new connection's SYN answered by a stale socket at the peer: after
/// our previous connection on this 4-tuple was killed or aborted (its RST
/// lost, or none sent), the peer still holds it — half-open, not TIME_WAIT.
/// No record of such an end leaves the TIME_WAIT reading.
fn previous_connection(id: CauseId, ctx: &Context, v: &mut Verdict) -> CauseId {
    let Some(prev) = &ctx.previous else {
        return id;
    };
    if id != CauseId::TimeWait {
        return id;
    }
    v.fact(
        "previous_connection",
        json!({"ended": prev.cause.id(), "ago_ms": prev.ago.as_millis() as u64}),
    );
    v.confidence = Confidence::Likely;
    CauseId::HalfOpen
}

/// The shortest idle timeout of common middleboxes (Azure's load balancer).
const MIDDLEBOX_IDLE: Duration = Duration::from_secs(240);

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
fn sent_with_reason(ev: &Event, reason: &str, v: &mut Verdict) -> CauseId {
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
            v.fact("unmapped_reason", reason);
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
fn sent_without_reason(ev: &Event, v: &mut Verdict) -> CauseId {
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::SystemTime;

    use super::*;
    use crate::model::event::{Packet, Socket, Task};

    fn base(direction: Direction, state: TcpState) -> Event {
        Event {
            time: SystemTime::UNIX_EPOCH,
            direction,
            hook: "test",
            local: "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
            remote: "127.0.0.1:40000".parse::<SocketAddr>().unwrap(),
            state,
            kernel_reason: None,
            packet: None,
            socket: None,
            context: ExecContext::Task,
            actor: Task {
                pid: 42,
                tid: 42,
                comm: "app".into(),
            },
            exit_signal: None,
            process: None,
            owner: crate::model::event::Owner::NotSeen,
            netns: None,
            prior: None,
            kernel_stack_id: None,
            user_stack_id: None,
        }
    }

    fn sock() -> Socket {
        crate::record::fixtures::full_socket(0xffff_0000)
    }

    /// A socket as close() leaves it before the RST: SHUTDOWN_MASK set.
    fn closed() -> Socket {
        Socket {
            shutdown: SHUTDOWN_MASK,
            ..sock()
        }
    }

    fn prior(kind: PriorKind, ago_ms: u64, error: Option<u32>) -> Option<PriorClose> {
        Some(PriorClose {
            kind,
            ago: std::time::Duration::from_millis(ago_ms),
            state: TcpState::SYN_SENT,
            error,
            process: Some(Task {
                pid: 4242,
                tid: 4242,
                comm: "nginx".into(),
            }),
        })
    }

    fn pkt(flags: u8, len: u32) -> Packet {
        Packet {
            flags: TcpFlags(flags),
            seq: 1,
            ack: 2,
            len,
            window: 512,
            ttl: 64,
            ip_id: 0,
        }
    }

    fn with_reason(mut ev: Event, name: &str) -> Event {
        ev.kernel_reason = Some((99, name.into()));
        ev
    }

    const S: u8 = TcpFlags::SYN;
    const SA: u8 = TcpFlags::SYN | TcpFlags::ACK;
    const A: u8 = TcpFlags::ACK;
    const PA: u8 = TcpFlags::PSH | TcpFlags::ACK;

    fn check(ev: &Event, id: CauseId, confidence: Confidence) -> Cause {
        let c = classify(ev);
        assert_eq!(
            (c.id, c.confidence),
            (id, confidence),
            "evidence: {:?}",
            c.evidence
        );
        let directions = c.id.info().directions;
        assert!(directions.contains(&ev.direction), "CAUSES: {directions:?}");
        c
    }

    #[test]
    fn every_deciding_reason_is_one_classify_knows() {
        for cause in crate::model::cause::CAUSES {
            for name in cause.kernel_reasons {
                let mut ev = with_reason(base(Direction::Sent, TcpState::CLOSE), name);
                ev.packet = Some(pkt(A, 0));
                let c = classify(&ev);
                assert!(
                    c.evidence.get("unmapped_reason").is_none(),
                    "{name} (listed for {}) is not mapped by sent_with_reason",
                    cause.name
                );
            }
        }
    }

    // ---- 6.18-shaped events (with a kernel reason)

    #[test]
    fn syn_to_closed_port() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::NONE), "NO_SOCKET");
        ev.packet = Some(pkt(S, 0));
        check(&ev, CauseId::PortNotOpen, Confidence::Certain);
        ev.kernel_reason = None;
        check(&ev, CauseId::PortNotOpen, Confidence::Likely);
    }

    #[test]
    fn late_syn_ack_is_connect_timeout() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::NONE), "NO_SOCKET");
        ev.packet = Some(pkt(SA, 0));
        check(&ev, CauseId::ConnectTimeout, Confidence::Likely);
    }

    #[test]
    fn data_without_socket_is_half_open() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::NONE), "NO_SOCKET");
        ev.packet = Some(pkt(PA, 10));
        check(&ev, CauseId::HalfOpen, Confidence::Likely);
    }

    #[test]
    fn close_with_unread_data() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::CLOSE), "TCP_ABORT_ON_CLOSE");
        ev.socket = Some(Socket {
            unread: 100,
            ..closed()
        });
        let c = check(&ev, CauseId::CloseUnreadData, Confidence::Certain);
        assert_eq!(c.evidence["unread_bytes_lost"], 100);
        // A received FIN counts as one unread sequence number, not data.
        ev.socket = Some(Socket {
            unread: 1,
            peer_fin: true,
            ..closed()
        });
        check(&ev, CauseId::CloseUnreadData, Confidence::Likely);
        // Without a reason the facts alone decide, as on 6.1.
        ev.kernel_reason = None;
        ev.socket = Some(Socket {
            unread: 5,
            ..closed()
        });
        check(&ev, CauseId::CloseUnreadData, Confidence::Likely);
    }

    #[test]
    fn linger_zero_reported_as_tcp_state() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::CLOSE), "TCP_STATE");
        ev.socket = Some(Socket {
            linger: Some(0),
            ..closed()
        });
        check(&ev, CauseId::LingerZero, Confidence::Certain);
        ev.kernel_reason = None;
        check(&ev, CauseId::LingerZero, Confidence::Likely);
    }

    #[test]
    fn unread_data_wins_over_linger_zero() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::CLOSE), "TCP_ABORT_ON_CLOSE");
        ev.socket = Some(Socket {
            linger: Some(0),
            unread: 10,
            ..sock()
        });
        check(&ev, CauseId::CloseUnreadData, Confidence::Certain);
    }

    #[test]
    fn data_after_close_timewait_and_abort_on_data() {
        let mut ev = with_reason(
            base(Direction::Sent, TcpState::TIME_WAIT),
            "TCP_TIMEWAIT_SOCKET",
        );
        ev.packet = Some(pkt(PA, 5));
        ev.socket = Some(Socket {
            full: false,
            tw_substate: Some(TcpState::FIN_WAIT2),
            cgroup_id: None,
            ..sock()
        });
        let c = check(&ev, CauseId::DataAfterClose, Confidence::Certain);
        assert_eq!(c.evidence["tw_substate"], "FIN_WAIT2");
        // 6.1 shape (kprobe/fentry see the timewait RST, no reason): likely.
        ev.kernel_reason = None;
        check(&ev, CauseId::DataAfterClose, Confidence::Likely);

        let mut ev = with_reason(base(Direction::Sent, TcpState::CLOSE), "TCP_ABORT_ON_DATA");
        ev.packet = Some(pkt(PA, 5));
        ev.socket = Some(sock());
        check(&ev, CauseId::DataAfterClose, Confidence::Certain);
        ev.kernel_reason = None;
        check(&ev, CauseId::DataAfterClose, Confidence::Likely);
    }

    #[test]
    fn keepalive_timeout() {
        let mut ev = with_reason(
            base(Direction::Sent, TcpState::ESTABLISHED),
            "TCP_KEEPALIVE_TIMEOUT",
        );
        ev.context = ExecContext::Softirq(SOFTIRQ_TIMER);
        ev.socket = Some(Socket {
            keepalive: true,
            probes_out: 3,
            ..sock()
        });
        check(&ev, CauseId::KeepaliveTimeout, Confidence::Certain);
        ev.kernel_reason = None;
        check(&ev, CauseId::KeepaliveTimeout, Confidence::Likely);
    }

    #[test]
    fn invalid_syn_with_pure_ack_is_backlog_overflow() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::LISTEN), "INVALID_SYN");
        ev.socket = Some(sock());
        ev.packet = Some(pkt(A, 0));
        check(&ev, CauseId::BacklogOverflow, Confidence::Likely);
        ev.packet = Some(pkt(S, 0));
        check(&ev, CauseId::InvalidPacket, Confidence::Certain);
    }

    #[test]
    fn ss_kill_is_tcp_state_in_original_state() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::ESTABLISHED), "TCP_STATE");
        ev.socket = Some(sock());
        ev.actor.comm = "ss".into();
        check(&ev, CauseId::SocketKilled, Confidence::Likely);
    }

    #[test]
    fn connecting_into_time_wait() {
        let mut ev = with_reason(
            base(Direction::Sent, TcpState::SYN_SENT),
            "TCP_INVALID_ACK_SEQUENCE",
        );
        ev.socket = Some(sock());
        ev.packet = Some(pkt(A, 0));
        check(&ev, CauseId::TimeWait, Confidence::Likely);
    }

    #[test]
    fn other_reasons_map_to_their_causes() {
        for (reason, id) in [
            ("TCP_ABORT_ON_LINGER", CauseId::Linger2Abort),
            ("TCP_ABORT_ON_MEMORY", CauseId::MemoryPressure),
            ("TCP_DISCONNECT_WITH_DATA", CauseId::Disconnect),
            ("TCP_FLAGS", CauseId::InvalidPacket),
        ] {
            let mut ev = with_reason(base(Direction::Sent, TcpState::CLOSE), reason);
            ev.socket = Some(sock());
            check(&ev, id, Confidence::Certain);
        }
    }

    #[test]
    fn tcp_state_is_split_by_socket_facts() {
        // TCP_STATE covers several causes: none of them is `certain` except
        // SO_LINGER 0, where the socket fact names the cause outright.
        let mut ev = with_reason(base(Direction::Sent, TcpState::CLOSE), "TCP_STATE");
        ev.socket = Some(Socket {
            dead: true,
            ..sock()
        });
        check(&ev, CauseId::ListenerClosed, Confidence::Likely);
        ev.socket = Some(Socket {
            unsent: 3,
            ..sock()
        });
        let c = check(&ev, CauseId::Disconnect, Confidence::Likely);
        assert_eq!(c.evidence["unsent"], 3);
        let mut ev = with_reason(base(Direction::Sent, TcpState::FIN_WAIT2), "TCP_STATE");
        ev.socket = Some(sock());
        ev.context = ExecContext::Softirq(SOFTIRQ_TIMER);
        check(&ev, CauseId::Linger2Abort, Confidence::Likely);
        // No socket facts at all: nothing to split on.
        ev.socket = None;
        check(&ev, CauseId::Unknown, Confidence::Likely);
    }

    // ---- 6.1-shaped events (no reason): the facts decide, never `certain`

    #[test]
    fn without_reason_no_socket_paths() {
        let mut ev = base(Direction::Sent, TcpState::NONE);
        for (flags, len, id) in [
            (SA, 0, CauseId::ConnectTimeout),
            (PA, 10, CauseId::HalfOpen),
            (A, 0, CauseId::HalfOpen),
        ] {
            ev.packet = Some(pkt(flags, len));
            check(&ev, id, Confidence::Likely);
        }
    }

    #[test]
    fn without_reason_active_resets() {
        // An orphan in CLOSE with nothing unread and no linger 0: the kernel
        // aborted it for orphan/memory limits.
        let mut ev = base(Direction::Sent, TcpState::CLOSE);
        ev.socket = Some(Socket {
            dead: true,
            ..sock()
        });
        check(&ev, CauseId::MemoryPressure, Confidence::Likely);
        // A live socket reset from task context in its own state: killed.
        let mut ev = base(Direction::Sent, TcpState::ESTABLISHED);
        ev.socket = Some(sock());
        check(&ev, CauseId::SocketKilled, Confidence::Likely);
        // Keepalive facts but not from the timer: not a keepalive timeout.
        ev.socket = Some(Socket {
            keepalive: true,
            probes_out: 2,
            ..sock()
        });
        ev.context = ExecContext::Softirq(3);
        check(&ev, CauseId::Unknown, Confidence::Likely);
    }

    #[test]
    fn without_reason_segment_driven_resets() {
        let mut ev = base(Direction::Sent, TcpState::LISTEN);
        ev.socket = Some(sock());
        ev.packet = Some(pkt(A, 0));
        check(&ev, CauseId::InvalidPacket, Confidence::Likely);
        let mut ev = base(Direction::Sent, TcpState::SYN_SENT);
        ev.socket = Some(sock());
        ev.packet = Some(pkt(A, 0));
        check(&ev, CauseId::TimeWait, Confidence::Likely);
        // A timewait socket answering a bare ACK: the facts disagree with
        // data_after_close, so it must not be `certain`.
        let mut ev = base(Direction::Sent, TcpState::TIME_WAIT);
        ev.socket = Some(Socket {
            full: false,
            tw_substate: Some(TcpState::TIME_WAIT),
            cgroup_id: None,
            ..sock()
        });
        ev.packet = Some(pkt(A, 0));
        let c = check(&ev, CauseId::DataAfterClose, Confidence::Likely);
        assert!(c.evidence.contains_key("disagreement"));
    }

    #[test]
    fn not_specified_is_treated_as_no_reason() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::CLOSE), "NOT_SPECIFIED");
        ev.socket = Some(Socket {
            unread: 9,
            ..closed()
        });
        check(&ev, CauseId::CloseUnreadData, Confidence::Likely);
    }

    // ---- history joins, aborts, accept queue, disconnect

    #[test]
    fn connect_timeout_is_certain_only_with_the_abandoned_connect() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::NONE), "NO_SOCKET");
        ev.packet = Some(pkt(SA, 0));
        check(&ev, CauseId::ConnectTimeout, Confidence::Likely);
        ev.prior = prior(PriorKind::ConnectAbandoned, 1500, None);
        let c = check(&ev, CauseId::ConnectTimeout, Confidence::Certain);
        assert_eq!(c.evidence["syn_ack_late_ms"], 1500);
        assert_eq!(c.evidence["prior"]["pid"], 4242);
        assert_eq!(c.evidence["prior"]["kind"], "connect_abandoned");
        // 6.1: the same join, but no reason to agree with.
        ev.kernel_reason = None;
        check(&ev, CauseId::ConnectTimeout, Confidence::Likely);
    }

    #[test]
    fn port_not_open_names_the_last_listener() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::NONE), "NO_SOCKET");
        ev.packet = Some(pkt(S, 0));
        ev.prior = prior(PriorKind::ListenerClosed, 3000, None);
        let c = check(&ev, CauseId::PortNotOpen, Confidence::Certain);
        assert_eq!(c.evidence["listener_closed_ago_ms"], 3000);
        assert_eq!(c.evidence["prior"]["comm"], "nginx");
    }

    #[test]
    fn half_open_links_the_abort_it_follows() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::NONE), "NO_SOCKET");
        ev.packet = Some(pkt(PA, 10));
        ev.prior = prior(PriorKind::Closed, 800, Some(ETIMEDOUT));
        let c = check(&ev, CauseId::HalfOpen, Confidence::Likely);
        assert_eq!(c.evidence["follows_abort"], "ETIMEDOUT");
        assert_eq!(c.evidence["prior"]["errno"], "ETIMEDOUT");
    }

    fn aborted(state: TcpState, sk_err: u32) -> Event {
        let mut ev = base(Direction::Abort, state);
        ev.context = ExecContext::Softirq(SOFTIRQ_TIMER);
        ev.socket = Some(Socket { sk_err, ..sock() });
        ev
    }

    #[test]
    fn aborts_without_an_rst() {
        let c = check(
            &aborted(TcpState::ESTABLISHED, ETIMEDOUT),
            CauseId::RetransmitTimeout,
            Confidence::Certain,
        );
        assert_eq!(c.evidence["errno"], "ETIMEDOUT");
        let c = check(
            &aborted(TcpState::SYN_SENT, ETIMEDOUT),
            CauseId::RetransmitTimeout,
            Confidence::Certain,
        );
        assert!(c.evidence["phase"].as_str().unwrap().contains("SYN"));
        let c = check(
            &aborted(TcpState::SYN_SENT, 113),
            CauseId::Unreachable,
            Confidence::Certain,
        );
        assert_eq!(c.evidence["errno"], "EHOSTUNREACH");
        let c = check(
            &aborted(TcpState::SYN_SENT, ECONNREFUSED),
            CauseId::Unreachable,
            Confidence::Certain,
        );
        assert!(c.evidence["icmp"].as_str().unwrap().contains("reject"));
        let c = check(
            &aborted(TcpState::ESTABLISHED, 5),
            CauseId::Unknown,
            Confidence::Likely,
        );
        assert_eq!(c.evidence["errno"], "errno 5");
        // Keepalive probes out with nothing unacknowledged.
        let mut ev = aborted(TcpState::ESTABLISHED, ETIMEDOUT);
        ev.socket = Some(Socket {
            keepalive: true,
            probes_out: 3,
            sk_err: ETIMEDOUT,
            ..sock()
        });
        check(&ev, CauseId::KeepaliveTimeout, Confidence::Likely);
    }

    #[test]
    fn accept_queue_overflow_is_told_from_a_bad_ack() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::LISTEN), "INVALID_SYN");
        ev.packet = Some(pkt(A, 0));
        ev.socket = Some(Socket {
            accept_queue_full: true,
            ..sock()
        });
        let c = check(&ev, CauseId::BacklogOverflow, Confidence::Certain);
        assert_eq!(c.evidence["accept_queue"], "full");
        // 6.1: no reason; the full queue alone tells it from a bad ACK.
        ev.kernel_reason = None;
        check(&ev, CauseId::BacklogOverflow, Confidence::Likely);
        ev.socket = Some(sock());
        check(&ev, CauseId::InvalidPacket, Confidence::Likely);
    }

    #[test]
    fn children_of_a_closing_listener() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::CLOSE), "TCP_STATE");
        ev.socket = Some(sock());
        ev.prior = prior(PriorKind::ListenerClosed, 0, None);
        check(&ev, CauseId::ListenerClosed, Confidence::Certain);
        ev.kernel_reason = None;
        check(&ev, CauseId::ListenerClosed, Confidence::Likely);
        // A listener closed long ago says nothing about this reset.
        ev.prior = prior(PriorKind::ListenerClosed, 5000, None);
        check(&ev, CauseId::Disconnect, Confidence::Likely);
    }

    #[test]
    fn linger2_abort_without_a_reason_from_the_state_it_left() {
        let mut ev = base(Direction::Sent, TcpState::CLOSE);
        ev.socket = Some(Socket {
            dead: true,
            closed_from: Some(TcpState::FIN_WAIT2),
            ..closed()
        });
        check(&ev, CauseId::Linger2Abort, Confidence::Likely);
        ev.socket = Some(Socket {
            dead: true,
            closed_from: Some(TcpState::FIN_WAIT1),
            ..closed()
        });
        check(&ev, CauseId::MemoryPressure, Confidence::Likely);
    }

    #[test]
    fn a_dying_process_is_an_annotation_not_a_cause() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::CLOSE), "TCP_ABORT_ON_CLOSE");
        ev.socket = Some(Socket {
            unread: 10,
            ..closed()
        });
        ev.exit_signal = Some(9);
        let c = check(&ev, CauseId::CloseUnreadData, Confidence::Certain);
        assert_eq!(c.evidence["process_exit"], "SIGKILL");
        ev.exit_signal = Some(0);
        assert_eq!(classify(&ev).evidence["process_exit"], "exit");
        assert_eq!(signal_name(64), "signal 64");
    }

    #[test]
    fn disconnect_is_told_from_close_by_sk_shutdown() {
        let mut ev = base(Direction::Sent, TcpState::CLOSE);
        ev.socket = Some(Socket {
            unread: 5,
            unsent: 7,
            ..sock()
        });
        let c = check(&ev, CauseId::Disconnect, Confidence::Likely);
        assert_eq!(c.evidence["unsent"], 7);
        ev.socket = Some(Socket {
            unread: 5,
            ..closed()
        });
        check(&ev, CauseId::CloseUnreadData, Confidence::Likely);
    }

    // ---- received

    fn paired() -> Context {
        Context {
            sender: Sender::Paired(PeerEvent {
                cause: CauseId::CloseUnreadData,
                delta_us: 40,
                netns: Some(5),
                process: Some(Task {
                    pid: 7,
                    tid: 7,
                    comm: "peer".into(),
                }),
                seq_matched: false,
            }),
            ..Context::default()
        }
    }

    fn with_sender(sender: Sender) -> Context {
        Context {
            sender,
            ..Context::default()
        }
    }

    fn check_with(ev: &Event, ctx: &Context, id: CauseId, confidence: Confidence) -> Cause {
        let c = classify_with(ev, ctx);
        assert_eq!(
            (c.id, c.confidence),
            (id, confidence),
            "evidence: {:?}",
            c.evidence
        );
        c
    }

    #[test]
    fn a_reset_after_minutes_of_silence_suspects_a_middlebox() {
        let mut ev = base(Direction::Received, TcpState::ESTABLISHED);
        ev.socket = Some(Socket {
            peer_idle: Some(Duration::from_secs(600)),
            unacked: 20,
            ..sock()
        });
        let c = check_with(
            &ev,
            &with_sender(Sender::NotLocal),
            CauseId::MiddleboxSuspect,
            Confidence::Likely,
        );
        assert_eq!(c.evidence["peer_idle_s"], 600);
        assert_eq!(c.evidence["unacked"], 20);
        assert_eq!(c.evidence["middlebox"], json!(["idle_past_lb_timeout"]));
        // A lively connection reset by a remote peer: the peer's doing,
        // but nothing here corroborates it.
        ev.socket = Some(Socket {
            peer_idle: Some(Duration::from_secs(2)),
            ..sock()
        });
        let c = check_with(
            &ev,
            &with_sender(Sender::NotLocal),
            CauseId::PeerReset,
            Confidence::Likely,
        );
        assert_eq!(c.evidence["peer_idle_s"], 2);
        assert_eq!(c.evidence["unpaired"], "sender not on this host");
    }

    #[test]
    fn idle_past_the_conntrack_timeout_suspects_a_middlebox() {
        let mut ev = base(Direction::Received, TcpState::ESTABLISHED);
        ev.socket = Some(Socket {
            peer_idle: Some(Duration::from_secs(100)),
            ..sock()
        });
        let ctx = Context {
            sender: Sender::NotLocal,
            conntrack_timeout: Some(Duration::from_secs(60)),
            ..Context::default()
        };
        let c = check_with(&ev, &ctx, CauseId::MiddleboxSuspect, Confidence::Likely);
        assert_eq!(c.evidence["conntrack_timeout_s"], 60);
        assert_eq!(
            c.evidence["middlebox"],
            json!(["idle_past_conntrack_timeout"])
        );
    }

    #[test]
    fn a_paired_rst_is_the_peers_even_after_silence() {
        let mut ev = base(Direction::Received, TcpState::ESTABLISHED);
        ev.socket = Some(Socket {
            peer_idle: Some(Duration::from_secs(600)),
            ..sock()
        });
        let c = check_with(&ev, &paired(), CauseId::PeerReset, Confidence::Certain);
        assert_eq!(c.evidence["peer_event"]["cause"], "close_unread_data");
        assert_eq!(c.evidence["peer_event"]["pid"], 7);
        assert_eq!(c.evidence["peer_event"]["netns"], 5);
    }

    #[test]
    fn a_local_sender_whose_stack_sent_nothing_is_a_firewall_suspect() {
        for state in [TcpState::ESTABLISHED, TcpState::SYN_SENT] {
            let mut ev = base(Direction::Received, state);
            ev.socket = Some(sock());
            let c = check_with(
                &ev,
                &with_sender(Sender::LocalSentNone { netns: Some(9) }),
                CauseId::MiddleboxSuspect,
                Confidence::Likely,
            );
            assert_eq!(c.evidence["unpaired"], "sender on this host sent no RST");
            assert_eq!(c.evidence["sender_netns"], 9);
            assert_eq!(c.evidence["suspect"], "firewall_reject");
            assert_eq!(c.evidence["middlebox"], json!(["local_sender_sent_no_rst"]));
        }
    }

    #[test]
    fn a_local_sender_whose_sends_are_not_all_seen_is_not_accused() {
        let mut ev = base(Direction::Received, TcpState::SYN_SENT);
        ev.socket = Some(sock());
        let c = check_with(
            &ev,
            &with_sender(Sender::LocalUnseen {
                why: "a pid filter",
            }),
            CauseId::PeerRefused,
            Confidence::Likely,
        );
        assert_eq!(
            c.evidence["unpaired"],
            "sender on this host, not all its sends seen: a pid filter"
        );
        assert!(c.evidence.get("suspect").is_none());
    }

    #[test]
    fn rsts_with_other_ttls_on_the_flow_suspect_injection() {
        let mut ev = base(Direction::Received, TcpState::ESTABLISHED);
        ev.socket = Some(sock());
        ev.packet = Some(pkt(TcpFlags::RST, 0));
        let ctx = Context {
            sender: Sender::NotLocal,
            flow_rst_ttls: vec![64],
            ..Context::default()
        };
        check_with(&ev, &ctx, CauseId::PeerReset, Confidence::Likely);
        ev.packet = Some(Packet {
            ttl: 50,
            ..pkt(TcpFlags::RST, 0)
        });
        let c = check_with(&ev, &ctx, CauseId::MiddleboxSuspect, Confidence::Likely);
        assert_eq!(c.evidence["ttl"], 50);
        assert_eq!(c.evidence["flow_rst_ttls"], json!([64]));
    }

    #[test]
    fn a_receive_hook_on_a_data_segment_is_not_a_received_rst() {
        let mut ev = base(Direction::Received, TcpState::FIN_WAIT2);
        ev.socket = Some(sock());
        ev.packet = Some(pkt(PA, 10));
        let c = check(&ev, CauseId::DataAfterClose, Confidence::Likely);
        assert!(c.evidence.contains_key("not_an_rst"));
    }

    #[test]
    fn received_rst_in_syn_sent_is_refused() {
        let mut ev = base(Direction::Received, TcpState::SYN_SENT);
        ev.socket = Some(sock());
        let c = check_with(&ev, &paired(), CauseId::PeerRefused, Confidence::Certain);
        assert_eq!(c.evidence["errno"], "ECONNREFUSED");
        // Alone, or from a remote host: likely.
        check(&ev, CauseId::PeerRefused, Confidence::Likely);
        check_with(
            &ev,
            &with_sender(Sender::NotLocal),
            CauseId::PeerRefused,
            Confidence::Likely,
        );
    }

    #[test]
    fn received_rst_on_established_is_peer_reset() {
        let mut ev = base(Direction::Received, TcpState::ESTABLISHED);
        ev.socket = Some(Socket {
            unacked: 7,
            ..sock()
        });
        let c = check_with(&ev, &paired(), CauseId::PeerReset, Confidence::Certain);
        assert_eq!(c.evidence["unacked"], 7);
        let c = check(&ev, CauseId::PeerReset, Confidence::Likely);
        assert_eq!(c.evidence["unpaired"], "sender not looked for");
        ev.state = TcpState::CLOSE_WAIT;
        assert_eq!(classify(&ev).evidence["errno"], "EPIPE");
    }

    #[test]
    fn a_stale_peer_after_our_kill_is_half_open_not_time_wait() {
        let mut ev = with_reason(
            base(Direction::Sent, TcpState::SYN_SENT),
            "TCP_INVALID_ACK_SEQUENCE",
        );
        ev.socket = Some(sock());
        ev.packet = Some(pkt(A, 0));
        let ctx = Context {
            previous: Some(Previous {
                cause: CauseId::SocketKilled,
                ago: Duration::from_millis(300),
            }),
            ..Context::default()
        };
        let c = check_with(&ev, &ctx, CauseId::HalfOpen, Confidence::Likely);
        assert_eq!(c.evidence["previous_connection"]["ended"], "socket_killed");
        assert_eq!(c.evidence["previous_connection"]["ago_ms"], 300);
        // The record changes only a TIME_WAIT reading.
        let mut other = with_reason(base(Direction::Sent, TcpState::CLOSE), "TCP_STATE");
        other.socket = Some(Socket {
            linger: Some(0),
            ..closed()
        });
        check_with(&other, &ctx, CauseId::LingerZero, Confidence::Certain);
    }

    #[test]
    fn a_folded_tcp_reset_is_evidence_on_the_sent_rst() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::CLOSE), "TCP_ABORT_ON_DATA");
        ev.socket = Some(sock());
        ev.packet = Some(pkt(PA, 5));
        let ctx = Context {
            folded_reset: Some(Folded {
                hook: "tp_btf:tcp_receive_reset",
                state: TcpState::FIN_WAIT2,
                delta_us: 3,
            }),
            ..Context::default()
        };
        let c = check_with(&ev, &ctx, CauseId::DataAfterClose, Confidence::Certain);
        assert_eq!(c.evidence["folded_receive"]["state"], "FIN_WAIT2");
    }

    // ---- 6.1: the two active resets named only by 6.10+'s reason

    #[test]
    fn disconnect_with_data_is_inferred_without_a_reason() {
        // connect(AF_UNSPEC) in LAST_ACK with 1.5 MB unsent: shutdown is 3.
        let mut ev = base(Direction::Sent, TcpState::CLOSE);
        ev.socket = Some(Socket {
            unsent: 1_500_000,
            ..closed()
        });
        let c = check(&ev, CauseId::Disconnect, Confidence::Likely);
        assert_eq!(c.evidence["unsent"], 1_500_000);
        assert_eq!(c.evidence["inferred_reason"], "TCP_DISCONNECT_WITH_DATA");
        // An orphan (close() ran) is not a disconnect.
        ev.socket = Some(Socket {
            unsent: 1_500_000,
            dead: true,
            ..closed()
        });
        check(&ev, CauseId::MemoryPressure, Confidence::Likely);
        // The kernel's reason, where it exists, agrees.
        let mut ev = with_reason(
            base(Direction::Sent, TcpState::CLOSE),
            "TCP_DISCONNECT_WITH_DATA",
        );
        ev.socket = Some(Socket {
            unsent: 1_500_000,
            ..closed()
        });
        check(&ev, CauseId::Disconnect, Confidence::Certain);
    }

    #[test]
    fn orphans_killed_by_the_timer_are_memory_pressure_without_a_reason() {
        let mut ev = base(Direction::Sent, TcpState::FIN_WAIT1);
        ev.context = ExecContext::Softirq(SOFTIRQ_TIMER);
        ev.socket = Some(Socket {
            dead: true,
            unacked: 100,
            ..closed()
        });
        let c = check(&ev, CauseId::MemoryPressure, Confidence::Likely);
        assert_eq!(c.evidence["orphan"], "FIN_WAIT1");
        assert_eq!(c.evidence["inferred_reason"], "TCP_ABORT_ON_MEMORY");
        // A dead FIN_WAIT2 on the timer is TCP_LINGER2's abort.
        ev.state = TcpState::FIN_WAIT2;
        check(&ev, CauseId::Linger2Abort, Confidence::Likely);
        // Not dead, or not the timer: not an orphan kill.
        ev.state = TcpState::FIN_WAIT1;
        ev.socket = Some(closed());
        check(&ev, CauseId::Unknown, Confidence::Likely);
        ev.socket = Some(Socket {
            dead: true,
            ..closed()
        });
        ev.context = ExecContext::Softirq(3);
        check(&ev, CauseId::Unknown, Confidence::Likely);
    }

    #[test]
    fn unexplained_is_unknown_never_certain() {
        let mut ev = with_reason(base(Direction::Sent, TcpState::NONE), "NO_SOCKET");
        ev.packet = None;
        check(&ev, CauseId::Unknown, Confidence::Likely);
        let mut ev = base(Direction::Sent, TcpState::ESTABLISHED);
        ev.socket = Some(sock());
        ev.context = ExecContext::Softirq(3);
        check(&ev, CauseId::Unknown, Confidence::Likely);
    }
}
