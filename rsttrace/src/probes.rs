//! Which kernel hooks to use, decided from what the running kernel offers.
//! Pure: `choose` maps probed facts to a plan, and is unit-tested per kernel shape.

use std::fmt;

use anyhow::{Result, bail};

/// `--hooks`: let rsttrace choose, or force one family of hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HookMode {
    Auto,
    #[value(name = "tp_btf", alias = "tp-btf")]
    TpBtf,
    Tracepoint,
}

/// What the kernel offers, probed from BTF and tracefs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelFacts {
    /// `/sys/kernel/btf/vmlinux` parsed.
    pub btf: bool,
    /// BTF prototype of `tcp_send_reset`: Some(true) with a reason argument
    /// (6.10+), Some(false) without, None when the typedef is missing.
    pub btf_send_reset_reason: Option<bool>,
    pub btf_receive_reset: bool,
    /// Classic tracepoints in tracefs.
    pub tp_send_reset: bool,
    pub tp_send_reset_reason: bool,
    pub tp_receive_reset: bool,
    pub tp_softirq: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendHook {
    BtfWithReason,
    BtfNoReason,
    Tracepoint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiveHook {
    Btf,
    Tracepoint,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub send: SendHook,
    pub receive: ReceiveHook,
    /// Softirq tracking (task vs softirq context); without it context is unknown.
    pub softirq: bool,
    /// Whether sent RSTs carry the kernel's reason.
    pub reason: bool,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let send = match self.send {
            SendHook::BtfWithReason => "tp_btf:tcp_send_reset(sk,skb,reason)",
            SendHook::BtfNoReason => "tp_btf:tcp_send_reset(sk,skb)",
            SendHook::Tracepoint => "tracepoint:tcp:tcp_send_reset",
        };
        let receive = match self.receive {
            ReceiveHook::Btf => "tp_btf:tcp_receive_reset",
            ReceiveHook::Tracepoint => "tracepoint:tcp:tcp_receive_reset",
        };
        write!(
            f,
            "send={send} receive={receive} context={} reason={}",
            if self.softirq {
                "irq:softirq_entry/exit"
            } else {
                "unknown"
            },
            if self.reason { "kernel" } else { "inferred" }
        )
    }
}

pub fn choose(mode: HookMode, k: &KernelFacts) -> Result<Plan> {
    let btf_send = match (k.btf, k.btf_send_reset_reason) {
        (true, Some(true)) => Some(SendHook::BtfWithReason),
        (true, Some(false)) => Some(SendHook::BtfNoReason),
        _ => None,
    };
    let btf_receive = (k.btf && k.btf_receive_reset).then_some(ReceiveHook::Btf);
    let tp_send = k.tp_send_reset.then_some(SendHook::Tracepoint);
    let tp_receive = k.tp_receive_reset.then_some(ReceiveHook::Tracepoint);

    let (send, receive) = match mode {
        // Typed arguments beat offsets parsed from tracefs: prefer tp_btf.
        HookMode::Auto => (btf_send.or(tp_send), btf_receive.or(tp_receive)),
        HookMode::TpBtf => (btf_send, btf_receive),
        HookMode::Tracepoint => (tp_send, tp_receive),
    };
    let (Some(send), Some(receive)) = (send, receive) else {
        bail!(
            "no usable RST hook for --hooks {mode:?} on this kernel (BTF: {}, tcp:tcp_send_reset \
             tracepoint: {}, tcp:tcp_receive_reset tracepoint: {}); rsttrace needs Linux 4.16+ \
             with the tcp tracepoints, and tp_btf needs /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF=y)",
            yes_no(k.btf),
            yes_no(k.tp_send_reset),
            yes_no(k.tp_receive_reset),
        );
    };
    let reason = match send {
        SendHook::BtfWithReason => true,
        SendHook::BtfNoReason => false,
        SendHook::Tracepoint => k.tp_send_reset_reason,
    };
    Ok(Plan {
        send,
        receive,
        softirq: k.tp_softirq,
        reason,
    })
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux_6_18() -> KernelFacts {
        KernelFacts {
            btf: true,
            btf_send_reset_reason: Some(true),
            btf_receive_reset: true,
            tp_send_reset: true,
            tp_send_reset_reason: true,
            tp_receive_reset: true,
            tp_softirq: true,
        }
    }

    fn linux_6_1() -> KernelFacts {
        KernelFacts {
            btf_send_reset_reason: Some(false),
            tp_send_reset_reason: false,
            ..linux_6_18()
        }
    }

    #[test]
    fn prefers_tp_btf_with_reason_on_6_18() {
        let p = choose(HookMode::Auto, &linux_6_18()).unwrap();
        assert_eq!(p.send, SendHook::BtfWithReason);
        assert_eq!(p.receive, ReceiveHook::Btf);
        assert!(p.reason && p.softirq);
    }

    #[test]
    fn uses_the_two_argument_prototype_on_6_1() {
        let p = choose(HookMode::Auto, &linux_6_1()).unwrap();
        assert_eq!(p.send, SendHook::BtfNoReason);
        assert!(!p.reason);
    }

    #[test]
    fn falls_back_to_tracepoints_without_btf() {
        let k = KernelFacts {
            btf: false,
            ..linux_6_18()
        };
        let p = choose(HookMode::Auto, &k).unwrap();
        assert_eq!(p.send, SendHook::Tracepoint);
        assert_eq!(p.receive, ReceiveHook::Tracepoint);
        assert!(p.reason, "6.18's tracepoint has a reason field");
        assert!(choose(HookMode::TpBtf, &k).is_err());
    }

    #[test]
    fn forced_tracepoint_mode() {
        let p = choose(HookMode::Tracepoint, &linux_6_1()).unwrap();
        assert_eq!(p.send, SendHook::Tracepoint);
        assert!(!p.reason);
    }

    #[test]
    fn nothing_usable_is_an_error_naming_what_is_missing() {
        let err = choose(HookMode::Auto, &KernelFacts::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("tcp:tcp_send_reset"), "{err}");
    }
}
