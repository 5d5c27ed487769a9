use super::*;
use crate::enrich::hostnet::Local;
use crate::model::cause::Confidence;
use crate::model::event::{ExecContext, Owner, Packet, Socket, Task, TcpState};

/// A host whose only addresses are the ones listed (plus loopback).
struct FakeHost(Vec<IpAddr>);

impl Locate for FakeHost {
    fn locate(&mut self, addr: IpAddr, _: Instant) -> Option<Local> {
        (addr.is_loopback() || self.0.contains(&addr)).then_some(Local { netns: Some(7) })
    }
}

fn at(us: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1000) + Duration::from_micros(us)
}

fn event(direction: Direction, local: &str, remote: &str, us: u64) -> Event {
    Event {
        time: at(us),
        direction,
        hook: "test",
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        state: TcpState::ESTABLISHED,
        kernel_reason: None,
        packet: None,
        // Each side's own socket.
        socket: Some(sock(match direction {
            Direction::Sent => 0xa000,
            _ => 0xc000,
        })),
        context: ExecContext::Task,
        actor: Task {
            pid: 1,
            tid: 1,
            comm: "app".into(),
        },
        exit_signal: None,
        process: Some(Task {
            pid: 1,
            tid: 1,
            comm: "app".into(),
        }),
        owner: Owner::Actor,
        netns: Some(1),
        prior: None,
        kernel_stack_id: None,
        user_stack_id: None,
        stack_skipped: false,
        device: None,
        netfilter_hook: None,
        listener_group: None,
    }
}

fn sock(addr: u64) -> Socket {
    crate::record::fixtures::full_socket(addr)
}

fn pkt(flags: u8, seq: u32, ack: u32, ttl: u8) -> Packet {
    Packet {
        flags: TcpFlags(flags),
        seq,
        ack,
        len: 0,
        window: 0,
        ttl,
        ip_id: 0,
    }
}

const SERVER: &str = "127.0.0.1:80";
const CLIENT: &str = "127.0.0.1:40000";

type Out = Vec<Ready<()>>;

fn run(c: &mut Correlator<FakeHost, ()>, events: Vec<Event>) -> Out {
    let now = Instant::now();
    let mut out = Vec::new();
    for ev in events {
        c.push(ev, (), now, &mut out);
    }
    c.flush(now + HOLD, &mut out);
    out
}

fn received(out: &Out) -> Vec<&Cause> {
    out.iter()
        .filter(|(e, _, _)| e.direction == Direction::Received)
        .map(|(_, _, c)| c)
        .collect()
}

fn host() -> Correlator<FakeHost, ()> {
    Correlator::new(FakeHost(vec![]), None, None)
}

#[test]
fn a_received_rst_pairs_with_its_local_sender_either_order() {
    for sent_first in [true, false] {
        let mut c = host();
        let sent = event(Direction::Sent, SERVER, CLIENT, 10);
        let recv = event(Direction::Received, CLIENT, SERVER, 30);
        let events = if sent_first {
            vec![sent, recv]
        } else {
            vec![recv, sent]
        };
        let out = run(&mut c, events);
        let r = received(&out);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].id, r[0].confidence),
            (CauseId::PeerReset, Confidence::Certain)
        );
        assert_eq!(r[0].evidence["peer_event"]["delta_us"], 20);
        assert_eq!(r[0].evidence["peer_event"]["comm"], "app");
    }
}

/// A socketless RST on a device (`--firewall`), sent by no socket.
fn device_rst(us: u64) -> Event {
    Event {
        hook: crate::model::schema::FIREWALL_DEVICE_HOOK,
        socket: None,
        process: None,
        owner: Owner::NoSocket,
        device: Some(2),
        ..event(Direction::Sent, SERVER, CLIENT, us)
    }
}

#[test]
fn a_firewall_reject_labels_the_rst_it_sent_as_received() {
    for kernel in [true, false] {
        let mut c = host();
        let mut sent = device_rst(10);
        if kernel {
            sent.hook = crate::model::schema::FIREWALL_KERNEL_HOOK;
        }
        let recv = event(Direction::Received, CLIENT, SERVER, 30);
        let out = run(&mut c, vec![sent, recv]);
        let confidence = if kernel {
            Confidence::Certain
        } else {
            Confidence::Likely
        };
        assert_eq!(
            (out[0].2.id, out[0].2.confidence),
            (CauseId::FirewallReject, confidence)
        );
        let r = received(&out);
        assert_eq!(
            (r[0].id, r[0].confidence),
            (CauseId::FirewallReject, confidence)
        );
        assert_eq!(r[0].evidence["peer_event"]["cause"], "firewall_reject");
    }
}

#[test]
fn a_socketless_rst_a_tcp_hook_reported_is_not_a_firewalls() {
    // The TCP stack's IPv6 RSTs leave without a socket too.
    let mut c = host();
    let tcp = Event {
        socket: None,
        ..event(Direction::Sent, SERVER, CLIENT, 10)
    };
    let recv = event(Direction::Received, CLIENT, SERVER, 40);
    let out = run(&mut c, vec![tcp, device_rst(12), recv]);
    assert_eq!(c.claimed, 1);
    assert!(
        out.iter()
            .all(|(_, _, cause)| cause.id != CauseId::FirewallReject)
    );
    assert_eq!(received(&out)[0].id, CauseId::PeerReset);
    // Another flow's is not claimed.
    let mut other = device_rst(14);
    other.remote = "127.0.0.1:40001".parse().unwrap();
    let out = run(&mut c, vec![other]);
    assert_eq!(out[0].2.id, CauseId::FirewallReject);
}

#[test]
fn a_local_sender_that_sent_nothing_is_a_firewall_suspect() {
    let mut c = host();
    let out = run(&mut c, vec![event(Direction::Received, CLIENT, SERVER, 30)]);
    let r = received(&out);
    assert_eq!(
        (r[0].id, r[0].confidence),
        (CauseId::MiddleboxSuspect, Confidence::Likely)
    );
    assert_eq!(r[0].evidence["unpaired"], "sender on this host sent no RST");
    assert_eq!(r[0].evidence["suspect"], "firewall_reject");
    assert_eq!(r[0].evidence["sender_netns"], 7);
}

#[test]
fn a_local_sender_is_not_accused_when_sends_may_go_unseen() {
    let mut c = Correlator::new(FakeHost(vec![]), None, Some("a pid filter"));
    let out = run(&mut c, vec![event(Direction::Received, CLIENT, SERVER, 30)]);
    assert_eq!(received(&out)[0].id, CauseId::PeerReset);
    let mut c = host();
    c.note_loss(Instant::now());
    let out = run(&mut c, vec![event(Direction::Received, CLIENT, SERVER, 30)]);
    let r = received(&out);
    assert_eq!(r[0].id, CauseId::PeerReset);
    assert_eq!(
        r[0].evidence["unpaired"],
        "sender on this host, not all its sends seen: events were lost"
    );
}

#[test]
fn a_remote_sender_is_likely_the_peer() {
    let mut c = host();
    let out = run(
        &mut c,
        vec![event(
            Direction::Received,
            "10.0.0.1:40000",
            "192.0.2.9:443",
            30,
        )],
    );
    let r = received(&out);
    assert_eq!(
        (r[0].id, r[0].confidence),
        (CauseId::PeerReset, Confidence::Likely)
    );
    assert_eq!(r[0].evidence["unpaired"], "sender not on this host");
}

#[test]
fn pairing_needs_the_mirrored_tuple_time_and_seq() {
    // Another port, too late, or a sequence number the sender did not send.
    let mut late = event(Direction::Received, CLIENT, SERVER, 0);
    late.time = at(10) + PAIR_WINDOW + Duration::from_millis(1);
    let mut wrong_seq = event(Direction::Received, CLIENT, SERVER, 30);
    wrong_seq.packet = Some(pkt(TcpFlags::RST, 99, 0, 64));
    for recv in [
        event(Direction::Received, "127.0.0.1:40001", SERVER, 30),
        late,
        wrong_seq,
    ] {
        let mut c = host();
        let mut sent = event(Direction::Sent, SERVER, CLIENT, 10);
        sent.packet = Some(pkt(TcpFlags::ACK | TcpFlags::PSH, 5, 1234, 64));
        let out = run(&mut c, vec![sent, recv]);
        assert_ne!(received(&out)[0].confidence, Confidence::Certain);
    }
    // The same with the right sequence number pairs, and says so.
    let mut c = host();
    let mut sent = event(Direction::Sent, SERVER, CLIENT, 10);
    sent.packet = Some(pkt(TcpFlags::ACK | TcpFlags::PSH, 5, 1234, 64));
    let mut recv = event(Direction::Received, CLIENT, SERVER, 30);
    recv.packet = Some(pkt(TcpFlags::RST, 1234, 0, 64));
    let out = run(&mut c, vec![sent, recv]);
    let r = received(&out);
    assert_eq!(r[0].confidence, Confidence::Certain);
    assert_eq!(r[0].evidence["peer_event"]["seq_matched"], true);
    assert_eq!(r[0].evidence["ttl"], 64);
}

#[test]
fn one_send_pairs_with_one_receive() {
    let mut c = host();
    let out = run(
        &mut c,
        vec![
            event(Direction::Sent, SERVER, CLIENT, 10),
            event(Direction::Received, CLIENT, SERVER, 30),
            event(Direction::Received, CLIENT, SERVER, 40),
        ],
    );
    let certain = received(&out)
        .iter()
        .filter(|c| c.confidence == Confidence::Certain)
        .count();
    assert_eq!(certain, 1);
}

#[test]
fn tcp_reset_before_the_sockets_own_rst_is_folded() {
    let mut c = host();
    let mut recv = event(Direction::Received, SERVER, CLIENT, 10);
    recv.state = TcpState::FIN_WAIT2;
    recv.socket = Some(sock(0xa000));
    let mut sent = event(Direction::Sent, SERVER, CLIENT, 12);
    sent.state = TcpState::CLOSE;
    sent.kernel_reason = Some((1, "TCP_ABORT_ON_DATA".into()));
    sent.packet = Some(pkt(TcpFlags::ACK | TcpFlags::PSH, 5, 6, 64));
    let out = run(&mut c, vec![recv, sent]);
    assert_eq!(out.len(), 1, "{out:?}");
    let (ev, _, cause) = &out[0];
    assert_eq!(ev.direction, Direction::Sent);
    assert_eq!(cause.id, CauseId::DataAfterClose);
    assert_eq!(cause.evidence["folded_receive"]["state"], "FIN_WAIT2");
    assert_eq!(cause.evidence["folded_receive"]["before_us"], 2);
    assert_eq!(c.folded, 1);
    // Another socket, or an RST segment, is not folded.
    let mut c = host();
    let recv = event(Direction::Received, SERVER, CLIENT, 10);
    let mut sent = event(Direction::Sent, SERVER, CLIENT, 12);
    sent.packet = Some(pkt(TcpFlags::ACK, 5, 6, 64));
    assert_eq!(run(&mut c, vec![recv, sent]).len(), 2);
}

/// A virtual CPU preempted between tcp_reset() and the send: the segment
/// both hooks read holds the fold together; time alone does not.
#[test]
fn the_same_segment_folds_a_reset_across_a_stalled_softirq() {
    let fold = |recv_packet: Option<Packet>, sent_us: u64| {
        let mut c = host();
        let mut recv = event(Direction::Received, SERVER, CLIENT, 10);
        recv.state = TcpState::FIN_WAIT2;
        recv.socket = Some(sock(0xa000));
        recv.packet = recv_packet;
        let mut sent = event(Direction::Sent, SERVER, CLIENT, sent_us);
        sent.state = TcpState::CLOSE;
        sent.packet = Some(pkt(TcpFlags::ACK | TcpFlags::PSH, 5, 6, 64));
        let out = run(&mut c, vec![recv, sent]);
        (c.folded, out.len())
    };
    let segment = pkt(TcpFlags::ACK | TcpFlags::PSH, 5, 6, 64);
    assert_eq!(fold(Some(segment), 40_010), (1, 1));
    assert_eq!(fold(None, 12), (1, 1));
    assert_eq!(fold(None, 40_010), (0, 2));
    let other = pkt(TcpFlags::ACK | TcpFlags::PSH, 7, 6, 64);
    assert_eq!(fold(Some(other), 12), (0, 2));
    // Beyond pairing distance even the same segment is another story.
    assert_eq!(fold(Some(segment), 600_010), (0, 2));
}

#[test]
fn a_killed_connection_makes_the_next_syn_sent_reset_half_open() {
    let mut c = host();
    let mut killed = event(Direction::Sent, CLIENT, SERVER, 10);
    killed.kernel_reason = Some((1, "TCP_STATE".into()));
    let mut again = event(Direction::Sent, CLIENT, SERVER, 2_000_000);
    again.state = TcpState::SYN_SENT;
    again.kernel_reason = Some((2, "TCP_INVALID_ACK_SEQUENCE".into()));
    again.packet = Some(pkt(TcpFlags::ACK, 5, 6, 64));
    let out = run(&mut c, vec![killed, again.clone()]);
    assert_eq!(out[0].2.id, CauseId::SocketKilled);
    let cause = &out[1].2;
    assert_eq!(cause.id, CauseId::HalfOpen, "{cause:?}");
    assert_eq!(
        cause.evidence["previous_connection"]["ended"],
        "socket_killed"
    );
    assert_eq!(cause.evidence["previous_connection"]["ago_ms"], 1999);
    // No record of an abnormal end: TIME_WAIT stays.
    let out = run(&mut host(), vec![again]);
    assert_eq!(out[0].2.id, CauseId::TimeWait);
}

#[test]
fn rsts_with_different_ttls_on_one_flow_suspect_injection() {
    let mut c = Correlator::new(FakeHost(vec![]), None, None);
    let remote = "192.0.2.9:443";
    let mut a = event(Direction::Received, "10.0.0.1:40000", remote, 10);
    a.packet = Some(pkt(TcpFlags::RST, 1, 0, 52));
    let mut b = a.clone();
    b.time = at(20);
    b.packet = Some(pkt(TcpFlags::RST, 1, 0, 61));
    let out = run(&mut c, vec![a, b]);
    let r = received(&out);
    assert_eq!(r[0].id, CauseId::PeerReset);
    assert_eq!(r[1].id, CauseId::MiddleboxSuspect);
    assert_eq!(r[1].evidence["flow_rst_ttls"], json(vec![52]));
    assert_eq!(r[1].evidence["middlebox"], json(vec!["rst_ttls_differ"]));
}

fn json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn idle_past_the_hosts_conntrack_timeout_suspects_a_middlebox() {
    let mut c = Correlator::new(FakeHost(vec![]), Some(Duration::from_secs(30)), None);
    let mut ev = event(Direction::Received, "10.0.0.1:40000", "192.0.2.9:443", 10);
    let mut s = sock(1);
    s.peer_idle = Some(Duration::from_secs(45));
    ev.socket = Some(s);
    let out = run(&mut c, vec![ev]);
    let r = received(&out);
    assert_eq!(r[0].id, CauseId::MiddleboxSuspect);
    assert_eq!(r[0].evidence["conntrack_timeout_s"], 30);
    assert_eq!(
        r[0].evidence["middlebox"],
        json(vec!["idle_past_conntrack_timeout"])
    );
}

#[test]
fn waiting_is_bounded_in_entries_and_time() {
    let mut c = host();
    let now = Instant::now();
    let mut out = Vec::new();
    for i in 0..(MAX_HELD as u64 + 10) {
        c.push(
            event(Direction::Received, CLIENT, SERVER, i),
            (),
            now,
            &mut out,
        );
    }
    assert_eq!(c.held.len(), MAX_HELD);
    assert_eq!(out.len(), 10);
    assert_eq!(c.released_early, 10);
    c.expire(now + HOLD - Duration::from_millis(1), &mut out);
    assert_eq!(out.len(), 10);
    c.expire(now + HOLD, &mut out);
    assert!(c.held.is_empty());
    assert_eq!(out.len(), MAX_HELD + 10);
}
