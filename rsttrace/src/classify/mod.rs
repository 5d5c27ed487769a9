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
//!
//! The rules by family: `sent` (with and without a kernel reason), `received`
//! (who sent it: the peer, a middlebox, a firewall), `firewall` (RSTs
//! netfilter made, no TCP socket involved), `abort` (ends without an RST);
//! `evidence` holds the verdict they fill and its JSON helpers.

mod abort;
mod evidence;
mod firewall;
mod received;
mod sent;

use std::time::Duration;

use crate::model::cause::{Cause, CauseId, Confidence};
use crate::model::event::{Direction, Event, Task, TcpState};

use abort::abort;
use evidence::{Verdict, folded_facts};
use firewall::{firewall_reject, is_firewall_hook};
use received::received;
use sent::{previous_connection, sent_with_reason, sent_without_reason};

/// An event on its own, as if nothing else were known about it: a received
/// RST is then never `certain` (nothing corroborates its sender). The
/// tests' form: `correlate` always has a context.
#[cfg(test)]
pub(crate) fn classify(ev: &Event) -> Cause {
    classify_with(ev, &Context::default())
}

/// An event with what other events and the host say about it (`correlate`).
pub(crate) fn classify_with(ev: &Event, ctx: &Context) -> Cause {
    let mut v = Verdict::new(ev);
    let id = match ev.direction {
        Direction::Received => received(ev, ctx, &mut v),
        Direction::Abort => abort(ev, &mut v),
        Direction::Sent if is_firewall_hook(ev.hook) => firewall_reject(ev, &mut v),
        Direction::Sent => {
            if let Some(f) = &ctx.folded_reset {
                v.fact("folded_receive", folded_facts(f));
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
pub(crate) struct Context {
    /// Received RSTs: who sent it, as far as this host can tell.
    pub(crate) sender: Sender,
    /// Sent RSTs: the tcp_reset() the kernel ran on this same socket just
    /// before sending (data after shutdown in FIN_WAIT), folded in here
    /// because no RST was received.
    pub(crate) folded_reset: Option<Folded>,
    /// How this side's previous connection on the same 4-tuple ended, when
    /// an earlier event showed it ended abnormally (killed, aborted).
    pub(crate) previous: Option<Previous>,
    /// TTLs of the other RSTs received on this flow lately.
    pub(crate) flow_rst_ttls: Vec<u8>,
    /// This host's conntrack timeout for established flows, when
    /// conntrack is loaded (a local NAT or firewall forgets idle flows).
    pub(crate) conntrack_timeout: Option<Duration>,
}

/// Who sent a received RST.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum Sender {
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
pub(crate) struct PeerEvent {
    pub(crate) cause: CauseId,
    /// Received minus sent time (negative: the receive was seen first).
    pub(crate) delta_us: i64,
    pub(crate) netns: Option<u32>,
    pub(crate) process: Option<Task>,
    /// The RST's sequence number was compared with what the sender sent.
    pub(crate) seq_matched: bool,
    /// How sure the sender's own cause is (a firewall's reject seen on
    /// a device without a socket is only likely).
    pub(crate) confidence: Confidence,
    /// The RST's sequence number as the sender's event knows it (the ACK
    /// of the segment it answered).
    pub(crate) rst_seq: Option<u32>,
}

/// A tcp_reset() folded into the RST the same socket then sent.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Folded {
    pub(crate) hook: &'static str,
    pub(crate) state: TcpState,
    pub(crate) delta_us: u64,
}

/// How the previous connection on a 4-tuple ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Previous {
    pub(crate) cause: CauseId,
    pub(crate) ago: Duration,
}

#[cfg(test)]
mod tests;
