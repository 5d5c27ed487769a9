//! `rsttrace check`: what this kernel offers, which hooks rsttrace would
//! use, and which causes it can tell apart here. The report is built by a
//! pure function from the probed facts, so each kernel shape is unit-tested.

use std::fmt::Write as _;

use anyhow::{Result, bail};

use crate::cli::VerifyTransport;
use crate::collect::loader::{self, KernelInfo};
use crate::collect::probes::{self, Firewall, HOOKS, HookMode, KernelFacts, Plan, Role};
use crate::collect::transport::{self, Transport, TransportMode};
use crate::kernel::{btf_source, helpers};
use crate::model::cause::{CAUSES, CauseId};
use crate::model::event::Direction;

pub fn run(mode: HookMode, verify: bool, verify_transport: VerifyTransport) -> Result<()> {
    let mut kernel = KernelInfo::probe();
    if matches!(mode, HookMode::Auto | HookMode::Fentry) {
        kernel.facts.fentry = loader::probe_fentry(&kernel);
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let header = Header {
        release,
        btf_error: kernel.btf_error.clone(),
        tracefs: kernel.tracefs.as_ref().map(|p| p.display().to_string()),
        btf_source: btf_source::describe(),
        reason_names: kernel.reasons.values().cloned().collect(),
        root: loader::check_privileges().is_ok(),
        ring_buffer: kernel.ring_buffer.clone(),
        stack_unsupported: helpers::stack_unsupported(),
    };
    let (text, usable) = report(&header, mode, &kernel.facts);
    // `rsttrace check | head`: a closed pipe is not an error worth a panic.
    // What a container (deploy/kubernetes/) must grant is the same list.
    let text = format!(
        "{text}capabilities:
{}",
        crate::cmd::needs::report(crate::cmd::needs::effective())
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    if !usable {
        bail!("no usable RST hook on this kernel (see above)");
    }
    if verify {
        let auto = transport::choose(TransportMode::Auto, &kernel.ring_buffer)?;
        let transports = match verify_transport {
            VerifyTransport::Auto => vec![auto],
            VerifyTransport::Ring => vec![Transport::Ring],
            VerifyTransport::Perf => vec![Transport::Perf],
            VerifyTransport::All if kernel.ring_buffer == Ok(false) => vec![Transport::Perf],
            VerifyTransport::All => vec![Transport::Ring, Transport::Perf],
        };
        for transport in transports {
            print!("{}", verify_families(&kernel.facts, transport)?);
        }
    }
    Ok(())
}

/// Loads and attaches the plan of every usable hook family, with packet
/// capture (every program a default trace or `-w x.pcapng` loads; `--stack`
/// needs helpers of 5.11 and 5.15, so it is left out), and lists the
/// instructions the verifier processed for each program: how far each is
/// from the verifier's limits on this kernel. Per transport: the two
/// objects differ where records are written.
fn verify_families(facts: &KernelFacts, transport: Transport) -> Result<String> {
    use std::collections::BTreeMap;
    let mut counts: BTreeMap<String, (Option<u32>, Vec<&str>)> = BTreeMap::new();
    let mut out = format!(
        "\nverified programs, transport {} (instructions the verifier processed):\n",
        transport.name()
    );
    for mode in [
        HookMode::TpBtf,
        HookMode::Fentry,
        HookMode::Kprobe,
        HookMode::Tracepoint,
    ] {
        if probes::choose(mode, facts).is_err() {
            continue;
        }
        let name = probes::mode_name(mode);
        let mut kernel = KernelInfo::probe();
        let opts = loader::Options {
            hooks: mode,
            transport,
            filter: rsttrace_ebpf::abi::Filter::ALL,
            ring_buffer_bytes: 1 << 16,
            wakeup_bytes: 0,
            perf_bytes: 1 << 12,
            perf_wakeup_bytes: 0,
            capture_packets: true,
            stacks: false,
            stack_budget: 0,
            firewall: true,
        };
        match loader::Session::load(&mut kernel, &opts) {
            Ok(session) => {
                for (program, n) in session.verified_instructions() {
                    let entry = counts.entry(program).or_insert((n, Vec::new()));
                    entry.0 = entry.0.max(n);
                    entry.1.push(name);
                }
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "  --hooks {name}: FAILED to load: {}",
                    verifier_summary(&format!("{e:#}"))
                );
            }
        }
    }
    for (program, (n, families)) in &counts {
        let n = n.map_or_else(
            || "loaded (count not reported before Linux 5.16)".to_string(),
            |n| n.to_string(),
        );
        let _ = writeln!(out, "  {program:<34} {n:>8}  ({})", families.join(","));
    }
    Ok(out)
}

/// A load error without the verifier's whole log (tens of thousands of
/// lines): its first line, and the log's verdict lines.
fn verifier_summary(error: &str) -> String {
    let mut lines = error.lines();
    let first = lines.next().unwrap_or_default();
    let verdict: Vec<&str> = lines
        .filter(|l| l.contains("processed ") || l.contains("too large") || l.contains("(os error"))
        .collect();
    if verdict.is_empty() {
        return first.to_string();
    }
    format!("{first} ... {}", verdict.join(" "))
}

pub(crate) struct Header {
    pub(crate) release: String,
    pub(crate) btf_error: Option<String>,
    /// Where BTF was read from (sysfs or a --btf file).
    pub(crate) btf_source: String,
    pub(crate) tracefs: Option<String>,
    /// This kernel's `enum sk_rst_reason` names (without the prefix).
    pub(crate) reason_names: Vec<String>,
    pub(crate) root: bool,
    /// Whether a BPF ring buffer can be created (Err: the probe failed).
    pub(crate) ring_buffer: Result<bool, String>,
    /// Why `--stack` cannot work here, if it cannot.
    pub(crate) stack_unsupported: Option<String>,
}

/// The oldest kernel the programs can load on, and why not older: the
/// newest helper they call unconditionally. (jiffies64, 5.9 for tracing
/// programs, and the `--stack` helpers are called only where present; the
/// perf transport stands in for the 5.8 ring buffer; global data is 5.2,
/// bounded loops 5.3.)
pub(crate) const OLDEST_KERNEL: &str = "Linux 5.5: the programs read kernel memory with \
     bpf_probe_read_kernel (5.5); before 5.8 events go through the perf transport; \
     tested on 5.10, 6.1, 6.12 and 6.18";

/// The report text, and whether a plan exists.
pub(crate) fn report(h: &Header, mode: HookMode, k: &KernelFacts) -> (String, bool) {
    let mut out = String::new();
    let yn = |b: bool| if b { "yes" } else { "no" };
    if !h.root {
        let _ = writeln!(
            out,
            "note:        not root: tracefs and the fentry trial may be out of reach, so \
             hooks can look missing; run `sudo rsttrace check` for the real picture"
        );
    }
    let _ = writeln!(out, "kernel:      {}", h.release);
    match &h.btf_error {
        None => {
            let _ = writeln!(out, "BTF:         yes ({})", h.btf_source);
            if !k.kernel_btf {
                let _ = writeln!(
                    out,
                    "             the kernel has none of its own (/sys/kernel/btf/vmlinux): \
                     tp_btf and fentry are unavailable, tracepoints and kprobes are used"
                );
            }
        }
        Some(e) => {
            let _ = writeln!(
                out,
                "BTF:         no ({e})\n             Without BTF rsttrace cannot locate socket fields (no CO-RE in Rust \
                 eBPF), so it does not trace. Fix: pass a BTF file for this kernel with \
                 --btf FILE (or RSTTRACE_BTF=FILE), e.g. from BTFHub or extracted from a \
                 vmlinux with debug info (`objcopy -O binary --only-section=.BTF vmlinux \
                 vmlinux.btf`), or use a kernel built with CONFIG_DEBUG_INFO_BTF=y."
            );
        }
    }
    let _ = writeln!(
        out,
        "tracefs:     {}",
        h.tracefs.as_deref().unwrap_or("not mounted")
    );
    let _ = writeln!(out, "kprobes:     {}", yn(k.kprobe_pmu));
    let fentry = match &k.fentry {
        Some(Ok(())) => "permitted (trial load succeeded)".to_string(),
        Some(Err(why)) => format!("not usable: {why}"),
        None if !h.root => "not tried (run as root to try)".to_string(),
        None => "not tried".to_string(),
    };
    let _ = writeln!(out, "fentry:      {fentry}");
    let transport = match transport::choose(TransportMode::Auto, &h.ring_buffer) {
        Ok(Transport::Ring) => "ring (BPF ring buffer; --transport perf works too)".to_string(),
        Ok(Transport::Perf) => {
            "perf (perf event array: this kernel has no BPF ring buffer, 5.8+)".to_string()
        }
        Err(e) => format!("{e:#}"),
    };
    let _ = writeln!(out, "transport:   {transport}");
    let _ = writeln!(
        out,
        "--stack:     {}",
        h.stack_unsupported.as_deref().unwrap_or("yes")
    );
    let _ = writeln!(out, "oldest:      {OLDEST_KERNEL}");

    let plan = probes::choose(mode, k).ok();
    let _ = writeln!(out, "\nhooks (--hooks {}):", probes::mode_name(mode));
    let firewall = probes::choose_firewall(false, k);
    for role in [
        Role::Send,
        Role::SendNoSocket,
        Role::Receive,
        Role::Firewall,
        Role::Abort,
    ] {
        let ranked = match role {
            Role::Abort => probes::abort_hooks(k),
            _ => probes::ranked(mode, role, k),
        };
        for hook in HOOKS.iter().filter(|h| h.role == role) {
            let chosen = plan.is_some_and(|p| {
                p.send == hook
                    || p.receive == hook
                    || p.no_socket_hook == Some(hook)
                    || p.aborts == Some(hook)
            }) || matches!(firewall, Firewall::Kernel { hook: h, .. } if h == hook);
            let status = match hook.availability(k) {
                Err(why) => format!("unavailable: {}", why.join("; ")),
                Ok(()) if chosen => "CHOSEN".to_string(),
                Ok(()) if role == Role::Firewall => match firewall {
                    Firewall::Kernel { .. } => "available (the kprobe is chosen)".to_string(),
                    _ => format!("opt-in with --firewall: {}", probes::FIREWALL_DEVICE_COST),
                },
                Ok(()) if role == Role::SendNoSocket && ranked.contains(&hook) => {
                    "available (not needed: the send hook sees these RSTs)".to_string()
                }
                Ok(()) if ranked.contains(&hook) => {
                    "available (a better hook is chosen)".to_string()
                }
                Ok(()) => format!(
                    "available (not allowed by --hooks {})",
                    probes::mode_name(mode)
                ),
            };
            let c = hook.capabilities(k);
            let provides = match role {
                Role::Abort => "connections that die without an RST (direction abort)".into(),
                _ => format!(
                    "reason={} no_socket={} rx_packet={}",
                    yn(c.reason),
                    yn(c.no_socket),
                    yn(c.packet)
                ),
            };
            let _ = writeln!(
                out,
                "  {:<7} {:<66} {}\n          provides: {provides}",
                match role {
                    Role::Send => "send",
                    Role::SendNoSocket => "send+",
                    Role::Receive => "receive",
                    Role::Firewall => "fw",
                    Role::Abort => "abort",
                },
                hook.name,
                status,
            );
        }
    }
    let _ = writeln!(
        out,
        "  context {:<66} {}",
        k.context_source().name(),
        match &k.preempt_count {
            Ok(_) => "exact: this CPU's preempt count, read at RST time".to_string(),
            Err(why) => format!(
                "inferred: a task owns the socket lock, or the call path ({why}, so the \
                 preempt count cannot be read)"
            ),
        }
    );

    let Some(plan) = plan else {
        let _ = writeln!(out, "\nplan: none; rsttrace cannot trace on this kernel");
        return (out, false);
    };
    if h.btf_error.is_some() {
        let _ = writeln!(
            out,
            "\nplan: {plan}\n      but without BTF rsttrace cannot read socket fields: it does not trace here"
        );
        return (out, false);
    }
    let _ = writeln!(out, "\nplan: {plan}");
    let _ = writeln!(
        out,
        "firewall:    {}",
        match firewall {
            Firewall::Kernel { loaded: true, .. } => {
                "netfilter's RSTs seen in nf_send_reset/nf_send_reset6 (certain); runs only \
                 on a reject"
                    .to_string()
            }
            Firewall::Kernel { loaded: false, .. } => {
                "nf_reject_ipv4/ipv6 not loaded yet: attached when the first reject rule \
                 loads them (rechecked every 2 s); runs only on a reject"
                    .to_string()
            }
            Firewall::Device { .. } | Firewall::OptIn => format!(
                "off by default (no kprobes). --firewall sees them as RSTs leaving a device \
                 with no socket (likely); cost: {}",
                probes::FIREWALL_DEVICE_COST
            ),
            Firewall::Off(why) => format!("not seen: {why}"),
        }
    );
    let _ = writeln!(
        out,
        "reason:      {}",
        if plan.reason {
            format!(
                "the kernel's sk_rst_reason ({} names from BTF); per cause below, \
                 where this kernel's set lacks a cause's names, inference decides it",
                h.reason_names.len()
            )
        } else {
            "none on this kernel: causes are inferred from socket and packet facts".to_string()
        }
    );
    let _ = writeln!(out, "\ncauses on this kernel:");
    for (cause, seen) in causes(&plan, &h.reason_names) {
        let _ = writeln!(out, "  {:<20} {seen}", cause.id());
    }
    (out, true)
}

/// Whether each cause can be told apart with this plan, and what decides
/// it: the kernel's reason (by name, from this kernel's BTF) or inference.
pub(crate) fn causes(plan: &Plan, reason_names: &[String]) -> Vec<(CauseId, String)> {
    CAUSES
        .iter()
        .filter(|c| c.id != CauseId::Unknown)
        .map(|info| {
            let c = info.id;
            if let Some(how) = info.without_reason.filter(|_| !plan.reason) {
                return (c, format!("yes (inferred: {how})"));
            }
            let seen = match c {
                // Sent with no socket (what NO_SOCKET names): invisible to
                // 6.1's tracepoint.
                _ if info.kernel_reasons == ["NO_SOCKET"] && !plan.no_socket => {
                    "NO: the send hook does not fire for RSTs sent without a socket".to_string()
                }
                // The receiving side has no reason; the sender's own send
                // event, when it is on this host, corroborates it.
                CauseId::PeerRefused | CauseId::PeerReset if plan.packet => {
                    "yes (certain when paired with its sender's RST on this host; \
                     with the received RST's TTL and window)"
                        .to_string()
                }
                CauseId::PeerRefused | CauseId::PeerReset => {
                    "yes (certain when paired with its sender's RST on this host)".to_string()
                }
                CauseId::FirewallReject => match plan.firewall {
                    Firewall::Kernel { .. } => {
                        "yes (certain: seen in nf_send_reset; the victim's RST pairs with it)"
                            .to_string()
                    }
                    Firewall::Device { .. } | Firewall::OptIn => {
                        "with --firewall only (likely: a socketless RST on a device; it \
                         checks every packet sent)"
                            .to_string()
                    }
                    Firewall::Off(why) => format!("NO: {why}"),
                },
                // Causes CAUSES gives only the abort direction: a
                // connection's death without an RST tells them.
                _ if info.directions == [Direction::Abort] => match plan.aborts {
                    Some(hook) => format!("yes (the socket error {} reports)", hook.name),
                    None => "NO: no hook sees connections that die without an RST".to_string(),
                },
                _ => decided_by(info.kernel_reasons, plan.reason, reason_names),
            };
            (c, seen)
        })
        .collect()
}

/// "kernel reason NAME + facts", or inference and why.
fn decided_by(names: &[&str], reason: bool, reason_names: &[String]) -> String {
    if names.is_empty() {
        return "yes (inferred from facts; no kernel reason names it)".to_string();
    }
    if !reason {
        return "yes (inferred from facts)".to_string();
    }
    let present: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| reason_names.iter().any(|r| r == n))
        .collect();
    if present.is_empty() {
        format!(
            "yes (inferred from facts: this kernel's sk_rst_reason has no {})",
            names.join("/")
        )
    } else {
        format!("yes (kernel reason {} + facts)", present.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::probes::tests::{linux_6_1, linux_6_18};

    fn header() -> Header {
        Header {
            release: "test".into(),
            btf_error: None,
            btf_source: "/sys/kernel/btf/vmlinux".into(),
            tracefs: Some("/sys/kernel/tracing".into()),
            reason_names: [
                "NO_SOCKET",
                "TCP_STATE",
                "TCP_ABORT_ON_CLOSE",
                "TCP_ABORT_ON_DATA",
            ]
            .map(String::from)
            .to_vec(),
            ring_buffer: Ok(true),
            stack_unsupported: None,
            root: true,
        }
    }

    #[test]
    fn on_6_18_everything_with_the_kernel_reason() {
        let (text, ok) = report(&header(), HookMode::Auto, &linux_6_18());
        assert!(ok);
        assert!(
            text.contains("tp_btf:tcp_send_reset(sk,skb,reason)"),
            "{text}"
        );
        assert!(text.contains("unavailable: no kprobe PMU"), "{text}");
        assert!(!text.contains("NO:"), "{text}");
    }

    #[test]
    fn the_abort_hook_trace_would_attach_is_reported() {
        // This machine (6.18): the tracepoint, whatever --hooks says.
        for mode in [HookMode::Auto, HookMode::Tracepoint] {
            let (text, ok) = report(&header(), mode, &linux_6_18());
            assert!(ok);
            let line = text
                .lines()
                .find(|l| l.starts_with("  abort   tp_btf:inet_sk_error_report"))
                .unwrap_or_else(|| panic!("{text}"));
            assert!(line.ends_with("CHOSEN"), "{line}");
            assert!(text.contains("unavailable: no kprobe PMU"), "{text}");
            assert!(
                text.contains(" aborts=tp_btf:inet_sk_error_report"),
                "{text}"
            );
            assert!(
                text.contains(
                    "retransmit_timeout   yes (the socket error \
                     tp_btf:inet_sk_error_report reports)"
                ),
                "{text}"
            );
        }
        // 5.10 has no inet_sk_error_report: the kprobe.
        let mut k = linux_6_1();
        k.btf_tracepoint_args.remove("inet_sk_error_report");
        let (text, _) = report(&header(), HookMode::Auto, &k);
        assert!(
            text.contains(" aborts=kprobe:sock_def_error_report"),
            "{text}"
        );
        // Neither: the causes only aborts tell are not seen.
        k.kprobe_pmu = false;
        let (text, ok) = report(&header(), HookMode::Auto, &k);
        assert!(ok, "{text}");
        assert!(text.contains(" aborts=no"), "{text}");
        assert!(
            text.contains("unreachable          NO: no hook sees connections"),
            "{text}"
        );
    }

    #[test]
    fn a_failed_load_keeps_the_verdict_not_the_log() {
        let error = "loading tp_tcp_send_reset: the BPF_PROG_LOAD syscall returned \
                     Argument list too long\nUnrecognized arg#0 type PTR\n0: (bf) r6 = r1\n\
                     BPF program is too large. Processed 1000001 insn\n\
                     processed 1000001 insns (limit 1000000) max_states_per_insn 38\n\
                     : Argument list too long (os error 7)";
        let s = verifier_summary(error);
        assert!(s.starts_with("loading tp_tcp_send_reset"), "{s}");
        assert!(s.contains("processed 1000001 insns (limit 1000000)"), "{s}");
        assert!(!s.contains("r6 = r1"), "{s}");
        assert_eq!(verifier_summary("EPERM"), "EPERM");
    }

    #[test]
    fn the_transport_stack_support_and_oldest_kernel_are_named() {
        let (text, _) = report(&header(), HookMode::Auto, &linux_6_18());
        assert!(text.contains("transport:   ring"), "{text}");
        assert!(text.contains("--stack:     yes"), "{text}");
        assert!(text.contains("oldest:      Linux 5.5"), "{text}");
        let old = Header {
            ring_buffer: Ok(false),
            stack_unsupported: Some("--stack needs BPF helpers this kernel lacks".into()),
            ..header()
        };
        let (text, _) = report(&old, HookMode::Auto, &linux_6_1());
        assert!(text.contains("transport:   perf"), "{text}");
        assert!(text.contains("--stack:     --stack needs"), "{text}");
    }

    #[test]
    fn forced_tp_btf_on_6_1_cannot_see_port_not_open() {
        let k = linux_6_1();
        let plan = probes::choose(HookMode::TpBtf, &k).unwrap();
        let c = causes(&plan, &[]);
        let port = c.iter().find(|(c, _)| *c == CauseId::PortNotOpen).unwrap();
        assert!(port.1.starts_with("NO"), "{port:?}");
        let auto = probes::choose(HookMode::Auto, &k).unwrap();
        let port = causes(&auto, &[])
            .into_iter()
            .find(|(c, _)| *c == CauseId::PortNotOpen)
            .unwrap();
        assert!(port.1.starts_with("yes"), "{port:?}");
    }

    #[test]
    fn without_a_reason_the_facts_say_how() {
        let plan = probes::choose(HookMode::Auto, &linux_6_1()).unwrap();
        let c = causes(&plan, &[]);
        let seen = |id| c.iter().find(|(c, _)| *c == id).unwrap().1.clone();
        assert!(
            seen(CauseId::BacklogOverflow).contains("accept queue"),
            "{c:?}"
        );
        assert!(seen(CauseId::CloseUnreadData).starts_with("yes"));
        assert!(seen(CauseId::MemoryPressure).contains("timer"), "{c:?}");
        assert!(seen(CauseId::Disconnect).contains("unsent"), "{c:?}");
        assert!(seen(CauseId::PeerReset).contains("paired"), "{c:?}");
    }

    #[test]
    fn no_hooks_is_not_usable_and_no_btf_is_explained() {
        let h = Header {
            btf_error: Some("not found".into()),
            ..header()
        };
        let (text, ok) = report(&h, HookMode::Auto, &KernelFacts::default());
        assert!(!ok);
        assert!(text.contains("CONFIG_DEBUG_INFO_BTF"), "{text}");
        assert!(text.contains("--btf FILE"), "{text}");
        assert!(text.contains("plan: none"), "{text}");
    }

    #[test]
    fn a_partial_reason_set_is_decided_per_name() {
        // 6.12: the reason argument exists, the active-reset names do not.
        let plan = probes::choose(HookMode::Auto, &linux_6_18()).unwrap();
        let names = [
            "NOT_SPECIFIED",
            "NO_SOCKET",
            "TCP_ABORT_ON_DATA",
            "INVALID_SYN",
        ]
        .map(String::from);
        let c = causes(&plan, &names);
        let seen = |id| c.iter().find(|(c, _)| *c == id).unwrap().1.clone();
        assert_eq!(
            seen(CauseId::PortNotOpen),
            "yes (kernel reason NO_SOCKET + facts)"
        );
        assert_eq!(
            seen(CauseId::CloseUnreadData),
            "yes (inferred from facts: this kernel's sk_rst_reason has no TCP_ABORT_ON_CLOSE)"
        );
        assert!(
            seen(CauseId::LingerZero).contains("has no TCP_STATE"),
            "{c:?}"
        );
        assert!(seen(CauseId::DataAfterClose).contains("kernel reason TCP_ABORT_ON_DATA"));
        let (text, _) = report(
            &Header {
                reason_names: names.to_vec(),
                ..header()
            },
            HookMode::Auto,
            &linux_6_18(),
        );
        assert!(text.contains("4 names from BTF"), "{text}");
    }

    #[test]
    fn a_btf_file_without_kernel_btf_uses_tracepoints() {
        let mut k = linux_6_18();
        k.kernel_btf = false;
        let h = Header {
            btf_source: "/tmp/k.btf (--btf)".into(),
            ..header()
        };
        let (text, ok) = report(&h, HookMode::Auto, &k);
        assert!(ok, "{text}");
        assert!(
            text.contains("BTF:         yes (/tmp/k.btf (--btf))"),
            "{text}"
        );
        assert!(
            text.contains("plan: send=tracepoint:tcp:tcp_send_reset"),
            "{text}"
        );
        assert!(text.contains("tp_btf and fentry need"), "{text}");
    }
}
