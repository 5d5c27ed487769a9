//! The verdict a rule fills (evidence and confidence) and the names its
//! facts are written with.

use std::borrow::Cow;

use rsttrace_ebpf::linux::errno::{
    EACCES, ECONNABORTED, ECONNREFUSED, ECONNRESET, EHOSTDOWN, EHOSTUNREACH, EMSGSIZE, ENETDOWN,
    ENETUNREACH, ENOPROTOOPT, EPIPE, EPROTO, ETIMEDOUT,
};
use serde_json::json;

use super::Folded;
use crate::model::cause::{Cause, CauseId, Confidence};
use crate::model::event::{Direction, Event, PriorClose};
use crate::model::evidence::{Evidence, Fact};

pub(super) fn folded_facts(f: &Folded) -> Evidence {
    Evidence::new()
        .with("hook", f.hook)
        .with("state", f.state.name())
        .with("before_us", f.delta_us)
        .with(
            "why",
            "the kernel ran tcp_reset() on this socket, then sent this RST; nothing was received",
        )
}

/// Accumulates evidence and the confidence while a rule decides.
pub(super) struct Verdict {
    pub(super) evidence: Evidence,
    pub(super) confidence: Confidence,
}

impl Verdict {
    pub(super) fn new(ev: &Event) -> Verdict {
        // The state and the kernel reason are top-level fields of every
        // event; evidence holds the facts that decided between causes.
        let mut evidence = Evidence::new();
        if let Some(p) = ev.packet {
            evidence.insert("trigger_flags".into(), p.flags.tcpdump());
            if p.len > 0 {
                evidence.insert("trigger_payload".into(), p.len);
            }
        }
        if ev.socket.is_none() && ev.direction == Direction::Sent {
            evidence.insert("socket".into(), "none");
        }
        if let Some(prior) = &ev.prior {
            evidence.insert("prior".into(), prior_facts(prior));
        }
        // The owner lent by the listener is an inference already; in an
        // SO_REUSEPORT group it is only the last of several to listen.
        if let Some(group) = &ev.listener_group {
            evidence.insert(
                "owner_group".into(),
                Evidence::new()
                    .with(
                        "processes",
                        json!(
                            group
                                .iter()
                                .map(|t| json!({"pid": t.pid, "comm": t.comm}))
                                .collect::<Vec<_>>()
                        ),
                    )
                    .with(
                        "why",
                        "SO_REUSEPORT: several processes listen on this port and the kernel \
                         queued the connection to one of them; the owner shown is the last \
                         to listen",
                    ),
            );
        }
        // Not a cause of its own: whatever the cause, the process was dying
        // (killed, crashed, or exiting) when its socket was reset.
        if let Some(signal) = ev.exit_signal
            && ev.direction == Direction::Sent
        {
            evidence.insert("process_exit".into(), signal_name(signal));
        }
        Verdict {
            evidence,
            confidence: Confidence::Likely,
        }
    }

    pub(super) fn fact(&mut self, key: &'static str, value: impl Into<Fact>) {
        self.evidence.insert(Cow::Borrowed(key), value);
    }

    /// The kernel reason and the facts agree.
    pub(super) fn certain(&mut self) {
        self.confidence = Confidence::Certain;
    }

    /// The kernel reason names this path, but the facts disagree: keep the
    /// cause, say so, and do not claim certainty.
    pub(super) fn disagree(&mut self, what: &'static str) {
        self.confidence = Confidence::Likely;
        self.fact("disagreement", what);
    }

    pub(super) fn finish(self, id: CauseId) -> Cause {
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
fn prior_facts(p: &PriorClose) -> Evidence {
    let mut m = Evidence::new()
        .with("kind", p.kind.as_str())
        .with("ago_ms", p.ago.as_millis() as u64)
        .with("state", p.state.name());
    if let Some(err) = p.error {
        m = m.with("errno", errno_name(err));
    }
    if let Some(t) = &p.process {
        m = m.with("pid", t.pid).with("comm", t.comm.clone());
    }
    m
}

/// How the exiting task ended: the signal that killed it, or `exit`.
pub(super) fn signal_name(signal: u8) -> Cow<'static, str> {
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
        _ => return format!("signal {signal}").into(),
    };
    name.into()
}

/// Names of the errnos a TCP connection can die with (asm-generic/errno.h).
pub(super) fn errno_name(err: u32) -> Cow<'static, str> {
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
        _ => return format!("errno {err}").into(),
    };
    name.into()
}
