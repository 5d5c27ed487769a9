//! Which kernel hooks to use, decided from what the running kernel offers.
//!
//! `HOOKS` (in table.rs) is the declarative table: every way rsttrace knows
//! to see RSTs sent or received and connections that die without one, the
//! programs it attaches, what it needs from the kernel and what it provides. `choose` ranks the hooks whose needs the probed
//! `KernelFacts` meet; it is pure and unit-tested per kernel shape. Support is
//! detected by probing (BTF types, tracefs formats, the kprobe PMU, symbols in
//! /proc/kallsyms, a trial fentry load), never by kernel version numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::{Result, bail};
use rsttrace_ebpf::abi::PreemptCount;

mod table;
pub(crate) use table::HOOKS;
use table::{FIREWALL_DEVICE, FIREWALL_KPROBE};

/// `--hooks`: let rsttrace choose, or force one family of hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HookMode {
    Auto,
    #[value(name = "tp_btf", alias = "tp-btf")]
    TpBtf,
    Tracepoint,
    Fentry,
    Kprobe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Family {
    // Declaration order is the preference among hooks that provide the same:
    // typed arguments, then the cheapest function hook, then offsets from tracefs.
    TpBtf,
    Fentry,
    Kprobe,
    Tracepoint,
}

impl Family {
    fn allowed_by(self, mode: HookMode) -> bool {
        matches!(
            (mode, self),
            (HookMode::Auto, _)
                | (HookMode::TpBtf, Family::TpBtf)
                | (HookMode::Tracepoint, Family::Tracepoint)
                | (HookMode::Fentry, Family::Fentry)
                | (HookMode::Kprobe, Family::Kprobe)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Send,
    Receive,
    /// Added to a send hook that misses RSTs sent without a socket.
    SendNoSocket,
    /// netfilter's RSTs (`choose_firewall`), which no TCP hook sees.
    Firewall,
    /// Connections that die without an RST (the kernel's socket error
    /// report): one hook whatever `--hooks` says, as the events are the
    /// same from either.
    Abort,
}

/// How one program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attach {
    TpBtf {
        program: &'static str,
        tracepoint: &'static str,
    },
    Tracepoint {
        program: &'static str,
        category: &'static str,
        name: &'static str,
    },
    /// `optional`: skipped when the function is missing (tcp_v6_send_reset
    /// lives in the ipv6 module on some kernels).
    Kprobe {
        program: &'static str,
        function: &'static str,
        optional: bool,
    },
    Fentry {
        program: &'static str,
        function: &'static str,
        optional: bool,
    },
}

/// What a hook needs from the kernel; each is checked against `KernelFacts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    Btf,
    /// The BTF typedef `btf_trace_<name>` with exactly this many parameters
    /// (the first is the tracing context).
    BtfTracepointArgs(&'static str, usize),
    Tracepoint(&'static str, &'static str),
    KprobePmu,
    /// A traceable kernel function (in /proc/kallsyms, possibly with a
    /// compiler suffix such as `.isra.0`).
    Function(&'static str),
    /// The BTF FUNC `name` with at least this many parameters.
    BtfFunctionArgs(&'static str, usize),
    /// A trial fentry load succeeded.
    FentryPermitted,
    /// `skb:kfree_skb` has a reason field and BTF names SKB_DROP_REASON_NO_SOCKET.
    KfreeSkbNoSocket,
}

/// What a hook tells about each RST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provides {
    Fixed {
        /// The kernel's `sk_rst_reason`.
        reason: bool,
        /// RSTs sent without a socket (closed port, TIME_WAIT).
        no_socket: bool,
        /// The received RST's packet (TTL, window).
        packet: bool,
    },
    /// Read from the `tcp:tcp_send_reset` format: a `reason` field, and a
    /// layout that also fires without a socket.
    SendTracepointFormat,
}

pub(crate) struct Hook {
    pub(crate) name: &'static str,
    pub(crate) role: Role,
    pub(crate) family: Family,
    pub(crate) attach: &'static [Attach],
    pub(crate) needs: &'static [Need],
    pub(crate) provides: Provides,
}

/// netfilter's RSTs: how they are seen, or why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Firewall {
    /// In nf_send_reset{,6}: runs only on a reject, so always on. `loaded`:
    /// whether a reject module was there to attach to (else attached when
    /// one loads).
    Kernel { hook: &'static Hook, loaded: bool },
    /// `--firewall`: an RST leaving a device with no socket. Runs on every
    /// packet the host sends.
    Device { hook: &'static Hook },
    /// Not seen, but `--firewall` would attach `Device`.
    OptIn,
    /// Not seen; why.
    Off(&'static str),
}

/// What the device hook costs healthy traffic, as `cargo xtask bench`
/// measured it (its --firewall rows), for `rsttrace check` and the ready line.
pub(crate) const FIREWALL_DEVICE_COST: &str = "a program run on every packet sent, ~110 ns each on \
     Linux 6.18 (2 per 1-byte request/response: ~2 % of TCP_RR, above the 1 % budget; \
     `cargo xtask bench` measures it here)";

/// The kernel hook wherever kprobes work; else, with `--firewall`, the
/// device hook; else off. The reject modules need not be loaded yet.
pub(crate) fn choose_firewall(opt_in: bool, k: &KernelFacts) -> Firewall {
    let hook = |name: &str| HOOKS.iter().find(|h| h.name == name).expect("in HOOKS");
    let kernel = hook(FIREWALL_KPROBE);
    if kernel.availability(k).is_ok() {
        let loaded = firewall_functions(kernel).any(|f| k.functions.contains_key(f));
        return Firewall::Kernel {
            hook: kernel,
            loaded,
        };
    }
    let device = hook(FIREWALL_DEVICE);
    match (opt_in, device.availability(k)) {
        (true, Ok(())) => Firewall::Device { hook: device },
        (false, Ok(())) => Firewall::OptIn,
        (_, Err(_)) => Firewall::Off("no kprobes, and no tp_btf net_dev_queue"),
    }
}

/// The functions a firewall hook attaches to.
pub(crate) fn firewall_functions(hook: &Hook) -> impl Iterator<Item = &'static str> + '_ {
    hook.attach.iter().filter_map(|a| match a {
        Attach::Kprobe { function, .. } => Some(*function),
        _ => None,
    })
}

impl fmt::Display for Firewall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Firewall::Kernel { hook, loaded: true } => f.write_str(hook.name),
            Firewall::Kernel {
                hook,
                loaded: false,
            } => write!(f, "{}(when nf_reject loads)", hook.name),
            Firewall::Device { hook } => write!(f, "{}(per packet)", hook.name),
            Firewall::OptIn => f.write_str("off(--firewall)"),
            Firewall::Off(_) => f.write_str("off"),
        }
    }
}

/// Kernel functions the table may hook (for the /proc/kallsyms scan).
pub(crate) fn wanted_functions() -> BTreeSet<&'static str> {
    HOOKS
        .iter()
        .flat_map(|h| h.attach)
        .filter_map(|a| match a {
            Attach::Kprobe { function, .. } | Attach::Fentry { function, .. } => Some(*function),
            _ => None,
        })
        .collect()
}

/// What the kernel offers, probed from BTF, tracefs, sysfs and kallsyms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KernelFacts {
    /// Kernel BTF parsed (from sysfs, or a `--btf` file): offsets and prototypes.
    pub(crate) btf: bool,
    /// The kernel's own BTF (`/sys/kernel/btf/vmlinux`), which tp_btf and
    /// fentry programs are verified against.
    pub(crate) kernel_btf: bool,
    /// `btf_trace_<tracepoint>` → parameter count.
    pub(crate) btf_tracepoint_args: BTreeMap<String, usize>,
    /// BTF FUNC → parameter count (absent when inlined away).
    pub(crate) btf_function_args: BTreeMap<String, usize>,
    /// Classic tracepoints present in tracefs, as "category:name".
    pub(crate) tracepoints: BTreeSet<String>,
    /// `tcp:tcp_send_reset` has a `reason` field.
    pub(crate) tp_send_reset_reason: bool,
    /// `tcp:tcp_send_reset` records addresses as sockaddr_in6 (28 bytes), the
    /// layout of the version that also fires when there is no socket.
    pub(crate) tp_send_reset_no_socket: bool,
    /// `/sys/bus/event_source/devices/kprobe`.
    pub(crate) kprobe_pmu: bool,
    /// Function name → the symbol to attach to (it may carry a suffix).
    pub(crate) functions: BTreeMap<String, String>,
    /// Trial fentry load: None when not tried, Some(Err(why)) when refused.
    pub(crate) fentry: Option<Result<(), String>>,
    /// `skb:kfree_skb` can single out NO_SOCKET drops.
    pub(crate) kfree_skb_no_socket: bool,
    /// Where the preempt count lives (`kernel::preempt`), or why unknown.
    pub(crate) preempt_count: Result<PreemptCount, String>,
}

impl Default for KernelFacts {
    fn default() -> KernelFacts {
        KernelFacts {
            btf: false,
            kernel_btf: false,
            btf_tracepoint_args: BTreeMap::new(),
            btf_function_args: BTreeMap::new(),
            tracepoints: BTreeSet::new(),
            tp_send_reset_reason: false,
            tp_send_reset_no_socket: false,
            kprobe_pmu: false,
            functions: BTreeMap::new(),
            fentry: None,
            kfree_skb_no_socket: false,
            preempt_count: Err("not probed".into()),
        }
    }
}

/// How the kernel programs tell task from interrupt context at RST time
/// (`context.rs` in rsttrace-ebpf); neither runs anything per softirq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContextSource {
    /// This CPU's preempt count: exact.
    PreemptCount,
    /// Whether a task owns the socket's lock, and the call path: inferred.
    SocketLock,
}

impl ContextSource {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ContextSource::PreemptCount => "preempt_count",
            ContextSource::SocketLock => "socket_lock",
        }
    }
}

impl KernelFacts {
    pub(crate) fn has_tracepoint(&self, category: &str, name: &str) -> bool {
        self.tracepoints.contains(&format!("{category}:{name}"))
    }

    pub(crate) fn context_source(&self) -> ContextSource {
        if self.preempt_count.is_ok() {
            ContextSource::PreemptCount
        } else {
            ContextSource::SocketLock
        }
    }

    /// Why `need` is not met, or Ok.
    pub(crate) fn check(&self, need: &Need) -> Result<(), String> {
        let ok = |met: bool, why: String| if met { Ok(()) } else { Err(why) };
        match *need {
            Need::Btf => ok(
                self.btf && self.kernel_btf,
                if self.btf {
                    "the kernel has no BTF of its own (/sys/kernel/btf/vmlinux), which tp_btf and \
                     fentry need; a --btf file gives offsets only"
                        .into()
                } else {
                    "no kernel BTF (/sys/kernel/btf/vmlinux; --btf FILE)".into()
                },
            ),
            Need::BtfTracepointArgs(tp, n) => match self.btf_tracepoint_args.get(tp) {
                Some(&have) if have == n => Ok(()),
                Some(&have) => Err(format!(
                    "BTF btf_trace_{tp} has {} arguments, this program reads {}",
                    have - 1,
                    n - 1
                )),
                None => Err(format!("no BTF type btf_trace_{tp}")),
            },
            Need::Tracepoint(cat, name) => ok(
                self.has_tracepoint(cat, name),
                format!("no tracepoint {cat}:{name} in tracefs"),
            ),
            Need::KprobePmu => ok(
                self.kprobe_pmu,
                "no kprobe PMU (/sys/bus/event_source/devices/kprobe): kernel without CONFIG_KPROBES"
                    .into(),
            ),
            Need::Function(f) => ok(
                self.functions.contains_key(f),
                format!("{f} not in /proc/kallsyms (inlined or renamed)"),
            ),
            Need::BtfFunctionArgs(f, n) => match self.btf_function_args.get(f) {
                Some(&have) if have >= n => Ok(()),
                Some(&have) => Err(format!("BTF {f} takes {have} arguments, need {n}")),
                None => Err(format!("no BTF function {f} (inlined or renamed)")),
            },
            Need::KfreeSkbNoSocket => ok(
                self.kfree_skb_no_socket,
                "skb:kfree_skb has no reason field, or BTF has no SKB_DROP_REASON_NO_SOCKET".into(),
            ),
            Need::FentryPermitted => match &self.fentry {
                Some(Ok(())) => Ok(()),
                Some(Err(why)) => Err(format!("fentry: {why}")),
                None => Err("fentry not tried (needs root and BTF)".into()),
            },
        }
    }
}

/// What a hook provides on this kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Capabilities {
    // Field order is the ranking: seeing more RSTs beats explaining them better.
    pub(crate) no_socket: bool,
    pub(crate) packet: bool,
    pub(crate) reason: bool,
}

impl Hook {
    pub(crate) fn capabilities(&self, k: &KernelFacts) -> Capabilities {
        match self.provides {
            Provides::Fixed {
                reason,
                no_socket,
                packet,
            } => Capabilities {
                no_socket,
                packet,
                reason,
            },
            Provides::SendTracepointFormat => Capabilities {
                no_socket: k.tp_send_reset_no_socket,
                packet: false,
                reason: k.tp_send_reset_reason && self.family == Family::Tracepoint,
            },
        }
    }

    /// Ok, or every unmet need.
    pub(crate) fn availability(&self, k: &KernelFacts) -> Result<(), Vec<String>> {
        let missing: Vec<String> = self.needs.iter().filter_map(|n| k.check(n).err()).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }
}

/// The usable hooks for `role` under `mode`, best first. The loader attaches
/// the first and, in auto mode, falls back along the list.
pub(crate) fn ranked(mode: HookMode, role: Role, k: &KernelFacts) -> Vec<&'static Hook> {
    let mut usable: Vec<&'static Hook> = HOOKS
        .iter()
        .filter(|h| h.role == role && h.family.allowed_by(mode))
        .filter(|h| h.availability(k).is_ok())
        .collect();
    // Stable sort: table order breaks the remaining ties.
    usable.sort_by_key(|h| (std::cmp::Reverse(h.capabilities(k)), h.family));
    usable
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) send: &'static Hook,
    pub(crate) receive: &'static Hook,
    /// Attached next to `send` when it misses RSTs sent without a socket.
    pub(crate) no_socket_hook: Option<&'static Hook>,
    /// How task and interrupt context are told apart.
    pub(crate) context: ContextSource,
    /// Whether sent RSTs carry the kernel's reason.
    pub(crate) reason: bool,
    /// Whether RSTs sent without a socket are seen.
    pub(crate) no_socket: bool,
    /// Whether received RSTs come with their packet.
    pub(crate) packet: bool,
    /// The hook that sees connections die without an RST (direction
    /// abort), if any: the first of `abort_hooks`; the loader clears it
    /// when none attaches.
    pub(crate) aborts: Option<&'static Hook>,
    /// Whether RST segments are captured for pcapng exports.
    pub(crate) packets: bool,
    /// How netfilter's RSTs are seen (set by the loader).
    pub(crate) firewall: Firewall,
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Hook {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Hook {}

impl Plan {
    pub(crate) fn new(
        send: &'static Hook,
        receive: &'static Hook,
        no_socket_hook: Option<&'static Hook>,
        k: &KernelFacts,
    ) -> Plan {
        let s = send.capabilities(k);
        let no_socket_hook = no_socket_hook.filter(|_| !s.no_socket);
        Plan {
            send,
            receive,
            no_socket_hook,
            context: k.context_source(),
            reason: s.reason,
            no_socket: s.no_socket || no_socket_hook.is_some(),
            packet: receive.capabilities(k).packet,
            aborts: abort_hooks(k).first().copied(),
            // Set by the loader once these hooks are attached.
            packets: false,
            firewall: choose_firewall(false, k),
        }
    }

    /// The supplementary hook `choose` would add to `send`, if any.
    pub(crate) fn no_socket_hook_for(
        mode: HookMode,
        send: &'static Hook,
        k: &KernelFacts,
    ) -> Option<&'static Hook> {
        if send.capabilities(k).no_socket {
            return None;
        }
        ranked(mode, Role::SendNoSocket, k).first().copied()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yn = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "send={} receive={} context={} reason={} no_socket={} rx_packet={} aborts={}",
            self.send.name,
            self.receive.name,
            self.context.name(),
            if self.reason { "kernel" } else { "inferred" },
            yn(self.no_socket),
            yn(self.packet),
            self.aborts.map_or("no", |h| h.name),
        )?;
        if let Some(extra) = self.no_socket_hook {
            write!(f, " extra={}", extra.name)?;
        }
        if self.packets {
            f.write_str(" capture=net_dev_queue+netif_receive_skb")?;
        }
        write!(f, " firewall={}", self.firewall)
    }
}

/// The usable hooks for aborts, best first: `--hooks` does not choose
/// among them (see `Role::Abort`).
pub(crate) fn abort_hooks(k: &KernelFacts) -> Vec<&'static Hook> {
    ranked(HookMode::Auto, Role::Abort, k)
}

/// Why no abort hook is usable: every abort hook's unmet needs.
pub(crate) fn why_no_abort_hook(k: &KernelFacts) -> String {
    unmet(k, |h| h.role == Role::Abort)
}

pub(crate) fn choose(mode: HookMode, k: &KernelFacts) -> Result<Plan> {
    let send = ranked(mode, Role::Send, k).first().copied();
    let receive = ranked(mode, Role::Receive, k).first().copied();
    let (Some(send), Some(receive)) = (send, receive) else {
        bail!(
            "no usable RST hook for --hooks {} on this kernel:\n{}\nrsttrace needs the tcp \
             tracepoints (Linux 4.16+), or kprobes/fentry on the reset functions; \
             `rsttrace check` shows what this kernel offers",
            mode_name(mode),
            unmet(k, |h| {
                matches!(h.role, Role::Send | Role::SendNoSocket | Role::Receive)
                    && h.family.allowed_by(mode)
            })
        );
    };
    let extra = Plan::no_socket_hook_for(mode, send, k);
    Ok(Plan::new(send, receive, extra, k))
}

pub(crate) fn mode_name(mode: HookMode) -> &'static str {
    match mode {
        HookMode::Auto => "auto",
        HookMode::TpBtf => "tp_btf",
        HookMode::Tracepoint => "tracepoint",
        HookMode::Fentry => "fentry",
        HookMode::Kprobe => "kprobe",
    }
}

/// The unmet needs of the hooks `which` selects, a line per hook.
fn unmet(k: &KernelFacts, which: impl Fn(&Hook) -> bool) -> String {
    HOOKS
        .iter()
        .filter(|h| which(h))
        .filter_map(|h| {
            h.availability(k)
                .err()
                .map(|why| format!("  {}: {}", h.name, why.join("; ")))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
pub(crate) mod tests;
