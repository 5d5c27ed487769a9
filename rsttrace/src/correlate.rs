//! Joins events that tell one story, then classifies them: what one event
//! cannot prove on its own, the events around it (and the host) can.
//!
//! - A received RST pairs with the send event of its sender when that
//!   sender is on this host (loopback, or another network namespace):
//!   mirrored 4-tuple, close in time, matching sequence number where both
//!   sides carry one. Only a paired RST is `certain` to be the peer's.
//!   Unpaired, the evidence says why: the sender is not on this host, or
//!   it is and its TCP stack sent no such RST (a firewall, an injection).
//! - When data reaches a FIN_WAIT socket after shutdown(), the kernel runs
//!   tcp_reset() on it and then sends the RST itself: the receive hook
//!   fires though nothing was received. That receive is folded into the
//!   sent event that follows on the same socket, never reported.
//! - How this side's last connection on a 4-tuple ended (killed, aborted),
//!   for telling half-open peers from TIME_WAIT.
//!
//! The ring buffer orders records by reservation, and CPUs reserve
//! concurrently: a received event waits up to `HOLD` for a send event that
//! was reserved after it. Everything is bounded in entries and time; under
//! a storm the oldest waiting event is released early, judged on what is
//! known by then.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use crate::classify::{Context, Folded, PeerEvent, Previous, Sender, classify_with};
use crate::enrich::hostnet::Locate;
use crate::model::cause::{Cause, CauseId, Confidence};
use crate::model::event::{Direction, Event, TcpFlags};

/// How long a received event waits for its sender's event.
pub const HOLD: Duration = Duration::from_millis(50);
/// A send and the receive it caused are this close in time (loopback and
/// veth deliver in microseconds; allows for a busy softirq).
const PAIR_WINDOW: Duration = Duration::from_millis(500);
/// A TCP hook's send and the same RST leaving a device.
const CLAIM_WINDOW: Duration = Duration::from_millis(5);
/// tcp_reset() and the RST the same socket sends right after.
const FOLD_WINDOW: Duration = Duration::from_millis(5);
/// Received events waiting at once.
const MAX_HELD: usize = 1024;
/// Recent send events kept for pairing.
const MAX_SENT: usize = 4096;
/// 4-tuples whose abnormal end is remembered, and for how long.
const MAX_ENDED: usize = 4096;
const ENDED_FOR: Duration = Duration::from_secs(600);
/// Received RST TTLs remembered per flow.
const MAX_FLOWS: usize = 1024;
const FLOW_FOR: Duration = Duration::from_secs(60);
/// After events were lost, how long an unpaired local sender is not accused.
const LOSS_BLINDS: Duration = Duration::from_secs(10);

struct Held<X> {
    ev: Event,
    /// What the caller keeps with the event (the raw record, for stacks).
    extra: X,
    ctx: Context,
    since: Instant,
}

/// A send event, as a received one is matched against it.
struct Sent {
    netns: Option<u32>,
    local: SocketAddr,
    remote: SocketAddr,
    time: SystemTime,
    /// The RST's sequence number, when the trigger says it: an RST
    /// answering a segment with an ACK carries that ACK number.
    rst_seq: Option<u32>,
    cause: CauseId,
    confidence: Confidence,
    process: Option<crate::model::event::Task>,
    paired: bool,
}

struct Ended {
    netns: Option<u32>,
    local: SocketAddr,
    remote: SocketAddr,
    cause: CauseId,
    time: SystemTime,
}

struct FlowTtls {
    netns: Option<u32>,
    local: SocketAddr,
    remote: SocketAddr,
    ttls: Vec<u8>,
    time: SystemTime,
}

/// An event ready to be written: classified, with what came with it.
pub type Ready<X> = (Event, X, Cause);

pub struct Correlator<L: Locate, X> {
    held: VecDeque<Held<X>>,
    sent: VecDeque<Sent>,
    ended: VecDeque<Ended>,
    flows: VecDeque<FlowTtls>,
    host: L,
    conntrack_timeout: Option<Duration>,
    /// Why a send on this host may go unseen (None: every one is seen).
    blind: Option<&'static str>,
    /// When the kernel last lost events: absence is no evidence for a while.
    last_loss: Option<Instant>,
    /// Received events released before `HOLD` because too many waited.
    pub released_early: u64,
    /// tcp_reset() runs folded into the RST their socket sent.
    pub folded: u64,
    /// Socketless RSTs seen on a device that a TCP hook had reported.
    pub claimed: u64,
}

impl<L: Locate, X> Correlator<L, X> {
    /// `blind`: why some RSTs sent on this host are not traced (a kernel
    /// filter on pids, cgroups or namespaces; a send hook that misses
    /// socketless RSTs), or None.
    pub fn new(host: L, conntrack_timeout: Option<Duration>, blind: Option<&'static str>) -> Self {
        Correlator {
            held: VecDeque::new(),
            sent: VecDeque::new(),
            ended: VecDeque::new(),
            flows: VecDeque::new(),
            host,
            conntrack_timeout,
            blind,
            last_loss: None,
            released_early: 0,
            folded: 0,
            claimed: 0,
        }
    }

    /// Takes one event; appends to `out` the events ready to be written,
    /// classified (this one now, or later for a received RST). Waiting
    /// events are released by `expire` between batches, never here: a
    /// slow event (a /proc scan) must not time out a receive whose send
    /// is the next record in the ring.
    pub fn push(&mut self, ev: Event, extra: X, now: Instant, out: &mut Vec<Ready<X>>) {
        match ev.direction {
            Direction::Received => self.received(ev, extra, now, out),
            Direction::Sent => self.sent(ev, extra, out),
            Direction::Abort => {
                let cause = self.classify(&ev, &Context::default());
                self.note_end(&ev, cause.id);
                out.push((ev, extra, cause));
            }
        }
    }

    /// Releases the received events that waited `HOLD`: call between
    /// batches, once the ring buffer has been drained.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Ready<X>>) {
        while self
            .held
            .front()
            .is_some_and(|h| now.saturating_duration_since(h.since) >= HOLD)
        {
            let h = self.held.pop_front().expect("checked");
            self.release(h, now, out);
        }
    }

    /// The kernel lost events: for `LOSS_BLINDS`, a missing send proves nothing.
    pub fn note_loss(&mut self, now: Instant) {
        self.last_loss = Some(now);
    }

    /// Releases everything (at exit).
    pub fn flush(&mut self, now: Instant, out: &mut Vec<Ready<X>>) {
        while let Some(h) = self.held.pop_front() {
            self.release(h, now, out);
        }
    }

    fn classify(&self, ev: &Event, ctx: &Context) -> Cause {
        let mut ctx = ctx.clone();
        ctx.conntrack_timeout = self.conntrack_timeout;
        classify_with(ev, &ctx)
    }

    fn received(&mut self, ev: Event, extra: X, now: Instant, out: &mut Vec<Ready<X>>) {
        let mut ctx = Context::default();
        let rst_seq = ev.packet.map(|p| p.seq);
        if let Some(ttl) = ev.packet.map(|p| p.ttl) {
            ctx.flow_rst_ttls = self.note_ttl(&ev, ttl);
        }
        // Newest first: the send just before is the likely one, and under
        // a storm the match is near the back.
        if let Some(s) = self
            .sent
            .iter_mut()
            .rev()
            .find(|s| !s.paired && mirrors(s, &ev) && seq_fits(s.rst_seq, rst_seq))
        {
            s.paired = true;
            ctx.sender = Sender::Paired(peer_event(s, &ev));
            // Judged: it need not wait (nor be scanned by later sends).
            let cause = self.classify(&ev, &ctx);
            out.push((ev, extra, cause));
            return;
        }
        self.held.push_back(Held {
            ev,
            extra,
            ctx,
            since: now,
        });
        if self.held.len() > MAX_HELD {
            self.released_early += 1;
            let h = self.held.pop_front().expect("not empty");
            self.release(h, now, out);
        }
    }

    fn sent(&mut self, ev: Event, extra: X, out: &mut Vec<Ready<X>>) {
        if ev.hook == crate::model::schema::FIREWALL_DEVICE_HOOK && self.claimed(&ev) {
            self.claimed += 1;
            return;
        }
        let mut ctx = Context::default();
        if let Some(i) = self.held.iter().rposition(|h| folds_into(&h.ev, &ev)) {
            let h = self.held.remove(i).expect("found");
            self.folded += 1;
            ctx.folded_reset = Some(Folded {
                hook: h.ev.hook,
                state: h.ev.state,
                delta_us: micros(ev.time, h.ev.time).unsigned_abs(),
            });
        }
        ctx.previous = self.previous(&ev);
        let cause = self.classify(&ev, &ctx);
        self.note_end(&ev, cause.id);
        let rst_seq = ev
            .packet
            .filter(|p| p.flags.has(TcpFlags::ACK))
            .map(|p| p.ack);
        let mut sent = Sent {
            netns: ev.netns,
            local: ev.local,
            remote: ev.remote,
            time: ev.time,
            rst_seq,
            cause: cause.id,
            confidence: cause.confidence,
            process: ev.process.clone(),
            paired: false,
        };
        // A receive reserved before this send (the loopback softirq runs
        // inside the send; or another CPU) waited for it.
        let paired = self.held.iter().rposition(|h| {
            mirrors(&sent, &h.ev) && seq_fits(sent.rst_seq, h.ev.packet.map(|p| p.seq))
        });
        let paired = paired.and_then(|i| self.held.remove(i)).map(|mut h| {
            sent.paired = true;
            h.ctx.sender = Sender::Paired(peer_event(&sent, &h.ev));
            h
        });
        self.sent.push_back(sent);
        while self.sent.len() > MAX_SENT
            || self
                .sent
                .front()
                .is_some_and(|s| ev.time.duration_since(s.time).unwrap_or_default() > PAIR_WINDOW)
        {
            self.sent.pop_front();
        }
        out.push((ev, extra, cause));
        if let Some(h) = paired {
            let cause = self.classify(&h.ev, &h.ctx);
            out.push((h.ev, h.extra, cause));
        }
    }

    /// A socketless RST seen leaving a device that a TCP hook reported
    /// just before (the TCP stack's IPv6 RSTs may carry no socket): it is
    /// that RST, not netfilter's.
    fn claimed(&self, ev: &Event) -> bool {
        self.sent.iter().rev().any(|s| {
            s.cause != CauseId::FirewallReject
                && s.local == ev.local
                && s.remote == ev.remote
                && micros(ev.time, s.time).unsigned_abs() <= CLAIM_WINDOW.as_micros() as u64
        })
    }

    fn release(&mut self, mut h: Held<X>, now: Instant, out: &mut Vec<Ready<X>>) {
        if h.ctx.sender == Sender::NotJudged {
            let lost = self
                .last_loss
                .is_some_and(|at| now.saturating_duration_since(at) < LOSS_BLINDS);
            let blind = self.blind.or(lost.then_some("events were lost"));
            h.ctx.sender = match (self.host.locate(h.ev.remote.ip(), now), blind) {
                (Some(_), Some(why)) => Sender::LocalUnseen { why },
                // Loopback is the receiver's own namespace.
                (Some(local), None) => Sender::LocalSentNone {
                    netns: local.netns.or(h.ev.netns),
                },
                (None, _) => Sender::NotLocal,
            };
        }
        let cause = self.classify(&h.ev, &h.ctx);
        out.push((h.ev, h.extra, cause));
    }

    /// How the last connection on this 4-tuple ended, if abnormally.
    fn previous(&self, ev: &Event) -> Option<Previous> {
        self.ended
            .iter()
            .rev()
            .find(|e| e.netns == ev.netns && e.local == ev.local && e.remote == ev.remote)
            .map(|e| Previous {
                cause: e.cause,
                ago: ev.time.duration_since(e.time).unwrap_or_default(),
            })
            .filter(|p| p.ago <= ENDED_FOR)
    }

    /// Remembers connections this side ended abnormally: a peer may still
    /// hold them.
    fn note_end(&mut self, ev: &Event, cause: CauseId) {
        let abnormal = matches!(
            cause,
            CauseId::SocketKilled
                | CauseId::LingerZero
                | CauseId::CloseUnreadData
                | CauseId::Disconnect
                | CauseId::MemoryPressure
                | CauseId::KeepaliveTimeout
                | CauseId::RetransmitTimeout
                | CauseId::Linger2Abort
        );
        if !abnormal {
            return;
        }
        self.ended.push_back(Ended {
            netns: ev.netns,
            local: ev.local,
            remote: ev.remote,
            cause,
            time: ev.time,
        });
        while self.ended.len() > MAX_ENDED {
            self.ended.pop_front();
        }
    }

    /// Records a received RST's TTL on its flow; returns the others'.
    fn note_ttl(&mut self, ev: &Event, ttl: u8) -> Vec<u8> {
        while self.flows.len() >= MAX_FLOWS
            || self
                .flows
                .front()
                .is_some_and(|f| ev.time.duration_since(f.time).unwrap_or_default() > FLOW_FOR)
        {
            self.flows.pop_front();
        }
        match self
            .flows
            .iter_mut()
            .find(|f| f.netns == ev.netns && f.local == ev.local && f.remote == ev.remote)
        {
            Some(f) => {
                let before = f.ttls.clone();
                if !f.ttls.contains(&ttl) && f.ttls.len() < 8 {
                    f.ttls.push(ttl);
                }
                f.time = ev.time;
                before
            }
            None => {
                self.flows.push_back(FlowTtls {
                    netns: ev.netns,
                    local: ev.local,
                    remote: ev.remote,
                    ttls: vec![ttl],
                    time: ev.time,
                });
                Vec::new()
            }
        }
    }
}

/// The send event's 4-tuple is the receive's, mirrored, and close in time.
/// A loopback address only pairs within one namespace.
fn mirrors(s: &Sent, r: &Event) -> bool {
    if s.local != r.remote || s.remote != r.local {
        return false;
    }
    if loopback(r.local.ip()) && s.netns.is_some() && r.netns.is_some() && s.netns != r.netns {
        return false;
    }
    micros(r.time, s.time).unsigned_abs() <= PAIR_WINDOW.as_micros() as u64
}

fn loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

/// Sequence numbers disagree only when both sides carry one.
fn seq_fits(sent: Option<u32>, received: Option<u32>) -> bool {
    match (sent, received) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

fn peer_event(s: &Sent, r: &Event) -> PeerEvent {
    PeerEvent {
        cause: s.cause,
        delta_us: micros(r.time, s.time),
        netns: s.netns,
        process: s.process.clone(),
        seq_matched: s.rst_seq.is_some() && r.packet.is_some(),
        confidence: s.confidence,
        rst_seq: s.rst_seq,
    }
}

/// The receive hook fired for a tcp_reset() the kernel ran on a socket
/// that then sent the RST itself: same socket, sent right after, and the
/// segment involved is data, not an RST.
fn folds_into(r: &Event, s: &Event) -> bool {
    let (Some(rs), Some(ss)) = (r.socket, s.socket) else {
        return false;
    };
    let not_rst =
        |p: Option<crate::model::event::Packet>| p.is_some_and(|p| !p.flags.has(TcpFlags::RST));
    rs.addr != 0
        && rs.addr == ss.addr
        && r.netns == s.netns
        && (0..=FOLD_WINDOW.as_micros() as i64).contains(&micros(s.time, r.time))
        && not_rst(s.packet)
        && (r.packet.is_none() || not_rst(r.packet))
}

/// `a - b` in microseconds.
fn micros(a: SystemTime, b: SystemTime) -> i64 {
    match a.duration_since(b) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

/// This host's conntrack timeout for established TCP flows (None without
/// conntrack). /proc/sys is the kernel's; the read is bounded.
pub fn conntrack_established_timeout() -> Option<Duration> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established")
        .ok()?;
    let mut text = String::new();
    file.by_ref().take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
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
}
