use rsttrace_ebpf::linux::errno::{ECONNREFUSED, ETIMEDOUT};
use std::net::SocketAddr;
use std::time::SystemTime;

use serde_json::json;

use super::evidence::signal_name;
use super::sent::{SHUTDOWN_MASK, SOFTIRQ_TIMER};
use super::*;
use crate::model::cause::Confidence;
use crate::model::event::{ExecContext, Packet, PriorClose, PriorKind, Socket, TcpFlags};
use crate::model::evidence::Fact;

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
        stack_skipped: false,
        device: None,
        netfilter_hook: None,
        listener_group: None,
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
            confidence: Confidence::Certain,
            rst_seq: None,
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
fn a_received_rsts_sequence_number_is_placed_against_rcv_nxt() {
    let at = |state: TcpState, seq: u32, ctx: &Context| {
        let mut ev = base(Direction::Received, state);
        ev.socket = Some(Socket {
            rcv_nxt: 1000,
            rcv_wnd: 500,
            ..sock()
        });
        ev.packet = Some(Packet {
            seq,
            ..pkt(TcpFlags::RST, 0)
        });
        classify_with(&ev, ctx).evidence["seq"].clone()
    };
    let none = Context::default();
    let exact = at(TcpState::ESTABLISHED, 1000, &none);
    assert_eq!(exact["position"], "exact");
    assert_eq!(exact["from"], "packet");
    assert_eq!(exact["rcv_wnd"], 500);
    assert_eq!(
        at(TcpState::CLOSE_WAIT, 999, &none)["position"],
        "after_fin"
    );
    assert_eq!(at(TcpState::ESTABLISHED, 999, &none)["position"], "outside");
    let in_window = at(TcpState::ESTABLISHED, 1200, &none);
    assert_eq!(
        (&in_window["position"], &in_window["offset"]),
        (&Fact::from("in_window"), &Fact::from(200))
    );
    assert_eq!(
        at(TcpState::ESTABLISHED, 1500, &none)["position"],
        "outside"
    );
    assert_eq!(at(TcpState::SYN_SENT, 7, &none)["position"], "not_checked");
    // Without the packet, the paired sender's event knows the number.
    let mut ev = base(Direction::Received, TcpState::ESTABLISHED);
    ev.socket = Some(Socket {
        rcv_nxt: 1000,
        ..sock()
    });
    let mut ctx = paired();
    let Sender::Paired(p) = &mut ctx.sender else {
        unreachable!()
    };
    p.rst_seq = Some(1000);
    let seq = &classify_with(&ev, &ctx).evidence["seq"];
    assert_eq!(
        (&seq["position"], &seq["from"]),
        (&Fact::from("exact"), &Fact::from("sender"))
    );
    assert!(classify_with(&ev, &paired()).evidence.get("seq").is_none());
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
