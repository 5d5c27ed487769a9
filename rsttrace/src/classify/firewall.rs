//! RSTs netfilter made (`reject with tcp reset`): no TCP socket sent them.

use super::evidence::Verdict;
use crate::model::cause::CauseId;
use crate::model::event::Event;
use crate::model::schema;

pub(super) fn is_firewall_hook(hook: &str) -> bool {
    hook == schema::FIREWALL_KERNEL_HOOK || hook == schema::FIREWALL_DEVICE_HOOK
}

/// An RST netfilter made. Seen in nf_send_reset() it is certain; seen
/// leaving a device with no socket and no TCP send event claiming it
/// (`correlate` drops those a TCP hook claims), it is likely: any other
/// socketless sender (a BPF program, a raw socket) looks the same there.
pub(super) fn firewall_reject(ev: &Event, v: &mut Verdict) -> CauseId {
    if let Some(device) = ev.device {
        v.fact("device", device);
    }
    if ev.hook == schema::FIREWALL_KERNEL_HOOK {
        if let Some(hook) = ev.netfilter_hook {
            v.fact("netfilter_hook", hook.name());
        }
        v.certain();
    } else {
        v.fact(
            "why",
            "an RST left this device with no socket, and no TCP send event claims it: \
             netfilter's reject (or another socketless sender)",
        );
    }
    CauseId::FirewallReject
}
