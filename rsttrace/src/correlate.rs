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
//!   sent event that follows on the same socket (answering the same
//!   segment, where the receive hook read it), never reported.
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
pub(crate) const HOLD: Duration = Duration::from_millis(50);
/// A send and the receive it caused are this close in time (loopback and
/// veth deliver in microseconds; allows for a busy softirq).
const PAIR_WINDOW: Duration = Duration::from_millis(500);
/// A TCP hook's send and the same RST leaving a device.
const CLAIM_WINDOW: Duration = Duration::from_millis(5);
/// tcp_reset() and the RST the same socket sends right after.
const FOLD_WINDOW: Duration = Duration::from_millis(5);
/// The same, when both hooks read the segment and it is the same one: the
/// headers corroborate the fold, so a softirq stalled between the two hooks
/// (a preempted virtual CPU) does not split it.
const SAME_SEGMENT_FOLD_WINDOW: Duration = PAIR_WINDOW;
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
pub(crate) type Ready<X> = (Event, X, Cause);

pub(crate) struct Correlator<L: Locate, X> {
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
    pub(crate) released_early: u64,
    /// tcp_reset() runs folded into the RST their socket sent.
    pub(crate) folded: u64,
    /// Socketless RSTs seen on a device that a TCP hook had reported.
    pub(crate) claimed: u64,
}

impl<L: Locate, X> Correlator<L, X> {
    /// `blind`: why some RSTs sent on this host are not traced (a kernel
    /// filter on pids, cgroups or namespaces; a send hook that misses
    /// socketless RSTs), or None.
    pub(crate) fn new(
        host: L,
        conntrack_timeout: Option<Duration>,
        blind: Option<&'static str>,
    ) -> Self {
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
    pub(crate) fn push(&mut self, ev: Event, extra: X, now: Instant, out: &mut Vec<Ready<X>>) {
        match ev.direction {
            Direction::Received => self.received(ev, extra, now, out),
            Direction::Sent => self.sent(ev, extra, out),
            Direction::Abort => {
                let cause = self.classify(&ev, Context::default());
                self.note_end(&ev, cause.id);
                out.push((ev, extra, cause));
            }
        }
    }

    /// Releases the received events that waited `HOLD`: call between
    /// batches, once the ring buffer has been drained.
    pub(crate) fn expire(&mut self, now: Instant, out: &mut Vec<Ready<X>>) {
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
    pub(crate) fn note_loss(&mut self, now: Instant) {
        self.last_loss = Some(now);
    }

    /// Releases everything (at exit).
    pub(crate) fn flush(&mut self, now: Instant, out: &mut Vec<Ready<X>>) {
        while let Some(h) = self.held.pop_front() {
            self.release(h, now, out);
        }
    }

    fn classify(&self, ev: &Event, mut ctx: Context) -> Cause {
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
            let cause = self.classify(&ev, ctx);
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
        let cause = self.classify(&ev, ctx);
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
            let cause = self.classify(&h.ev, h.ctx);
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
        let cause = self.classify(&h.ev, h.ctx);
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
/// segment involved is data, not an RST. Where the receive hook read the
/// segment too, it must be the send's.
fn folds_into(r: &Event, s: &Event) -> bool {
    let (Some(rs), Some(ss)) = (r.socket, s.socket) else {
        return false;
    };
    let Some(sent_segment) = s.packet.filter(|p| !p.flags.has(TcpFlags::RST)) else {
        return false;
    };
    let window = match r.packet {
        None => FOLD_WINDOW,
        Some(p) if p == sent_segment => SAME_SEGMENT_FOLD_WINDOW,
        Some(_) => return false,
    };
    rs.addr != 0
        && rs.addr == ss.addr
        && r.netns == s.netns
        && (0..=window.as_micros() as i64).contains(&micros(s.time, r.time))
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
pub(crate) fn conntrack_established_timeout() -> Option<Duration> {
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
mod tests;
