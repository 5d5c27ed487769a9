//! Loads the embedded eBPF object into the running kernel and attaches the
//! hooks of the chosen plan. The only module that talks to aya's program API.

use anyhow::{Context, Result, anyhow, bail};
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf, StackTraceMap};
use aya::{Ebpf, EbpfLoader};
use log::{debug, info, warn};
use rsttrace_ebpf::abi::{
    self, Filter, KfreeSkb, ListenerKey, Owner, OwnerTracepoints, Tuning, program,
};

use crate::collect::attach::{
    attach_aborts, attach_btf, attach_firewall, attach_hook, attach_late_firewall,
    attach_owner_tracking, attach_role, explain_bpf_error, load_fentry, require_kernel_btf, undo,
};
use crate::collect::counters::CounterReader;
pub(crate) use crate::collect::counters::Counters;
pub(crate) use crate::collect::facts::KernelInfo;
use crate::collect::facts::kfree_skb;
use crate::collect::perfbuf::PerfBuffers;
use crate::collect::probes::{self, HookMode, KernelFacts, Plan, Role};
use crate::collect::source::Buffers;
use crate::collect::transport::{self, Transport};
use crate::kernel::{btf::Btf, btf_source, helpers, offsets, tracefs};

/// The objects built by `cargo xtask build-ebpf`, embedded by build.rs: the
/// same programs writing to a ring buffer, or to a perf event array.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rsttrace-ebpf.o"));
static EBPF_PERF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rsttrace-ebpf-perf.o"));

pub(crate) struct Options {
    pub(crate) hooks: HookMode,
    pub(crate) transport: Transport,
    pub(crate) filter: Filter,
    pub(crate) ring_buffer_bytes: u32,
    pub(crate) wakeup_bytes: u64,
    /// The perf transport: bytes per CPU, and its wake-up threshold.
    pub(crate) perf_bytes: usize,
    pub(crate) perf_wakeup_bytes: u64,
    /// Capture the RST segments themselves (for pcapng exports).
    pub(crate) capture_packets: bool,
    /// `--stack`: capture kernel and user stacks.
    pub(crate) stacks: bool,
    /// `--stack-budget`: events per second per CPU that take stacks (0: all).
    pub(crate) stack_budget: u32,
    /// `--firewall`: where netfilter's functions cannot be hooked, check
    /// every packet sent for its RSTs.
    pub(crate) firewall: bool,
}

impl Options {
    /// Events with a user stack wake the reader at once, paced
    /// (`Tuning::wakeup_gap_ns`), and the reader drains again soon after
    /// a batch that had one (`Source::follow_up`): `--stack` on the ring
    /// buffer, whose records choose their own wake-ups.
    pub(crate) fn paced(&self) -> bool {
        self.stacks && self.transport == Transport::Ring
    }
}

/// Loaded and attached programs; dropping it detaches everything.
pub(crate) struct Session {
    pub(crate) ebpf: Ebpf,
    pub(crate) plan: Plan,
    pub(crate) transport: Transport,
    /// Taken by the reader (`take_buffers`).
    buffers: Option<Buffers>,
    counters: CounterReader,
    /// nf_send_reset{,6} while their module is not loaded, and how many
    /// reject modules were there at the last look (`recheck_firewall`).
    firewall_pending: Vec<&'static str>,
    firewall_modules: usize,
    firewall_checked: std::time::Instant,
}

impl Session {
    /// Lends ports that were listening before the programs were attached
    /// their owners (`enrich::listeners`); an owner the kernel side has
    /// recorded meanwhile is kept. Returns how many were written.
    pub(crate) fn seed_listeners(&mut self, owners: &[(ListenerKey, Owner)]) -> Result<usize> {
        let map = self
            .ebpf
            .map_mut(abi::LISTENERS_MAP)
            .ok_or_else(|| anyhow!("no {} map in the eBPF object", abi::LISTENERS_MAP))?;
        // aya's HashMap also handles the LRU kind.
        let mut listeners: BpfHashMap<&mut MapData, ListenerKey, Owner> =
            BpfHashMap::try_from(map)?;
        let mut written = 0;
        for (key, owner) in owners {
            // BPF_NOEXIST: a listen() the kernel saw meanwhile is newer.
            if listeners.insert(key, owner, 1).is_ok() {
                written += 1;
            }
        }
        Ok(written)
    }

    /// Loads and attaches. Takes the parsed BTF out of `kernel` and drops it
    /// once the offsets are resolved: aya parses vmlinux BTF again (for
    /// tp_btf and fentry), and two parsed copies alive at once were most of
    /// rsttrace's peak memory.
    pub(crate) fn load(kernel: &mut KernelInfo, opts: &Options) -> Result<Session> {
        check_privileges()?;
        let btf = kernel.btf.take().ok_or_else(|| {
            anyhow!(
                "no kernel BTF ({}): rsttrace needs it to find socket fields on this kernel. \
                 On a kernel built without CONFIG_DEBUG_INFO_BTF pass a BTF file for it with \
                 --btf FILE (or {}=FILE), e.g. from BTFHub",
                kernel.btf_error.as_deref().unwrap_or("not found"),
                btf_source::ENV_VAR
            )
        })?;
        let mut facts = kernel.facts.clone();
        // Probed once (a test program's load): the echo clock and the
        // peer idle time both need it.
        let jiffies = helpers::available(&helpers::JIFFIES64);
        let mut tuning = Tuning {
            wakeup_bytes: opts.wakeup_bytes,
            // The reader drains again within the gap (`Source`).
            wakeup_gap_ns: if opts.paced() {
                crate::collect::source::PACED_GAP.as_nanos() as u64
            } else {
                0
            },
            stacks: if opts.stacks {
                abi::stacks::KERNEL | abi::stacks::USER
            } else {
                0
            },
            stacks_per_window: stacks_per_window(opts.stack_budget),
            echo_clock: if jiffies {
                abi::echo_clock::JIFFIES
            } else {
                abi::echo_clock::KTIME
            },
            ..Tuning::DEFAULT
        };
        if let Ok(preempt) = facts.preempt_count {
            tuning.context = abi::context::source::PREEMPT_COUNT;
            tuning.preempt = preempt;
        }
        match kernel.tracefs.as_deref().map(tracefs::tcp_layout) {
            Some(Ok(layout)) => tuning.tp = layout,
            Some(Err(e)) => {
                warn!("tcp tracepoint layout unusable, tracepoint hooks disabled: {e:#}");
                facts.tracepoints.retain(|tp| !tp.starts_with("tcp:"));
            }
            None => {}
        }
        let kfree =
            kfree_skb(Some(&btf), kernel.tracefs.as_deref()).unwrap_or(KfreeSkb::UNRESOLVED);
        let owner_tp = match kernel.tracefs.as_deref().map(tracefs::owner_layout) {
            Some(Ok(layout)) => Some(layout),
            Some(Err(e)) => {
                warn!(
                    "socket owners cannot be tracked ({e:#}): RSTs made in softirq will show no process"
                );
                None
            }
            None => None,
        };
        let offsets = resolve_offsets(&btf, jiffies)?;
        drop(btf);
        let typed_task = helpers::available(&helpers::CURRENT_TASK_BTF)
            && offsets.current_task_fields().iter().all(|f| f.is_present());
        if typed_task {
            tuning.current_task = abi::current_task::TYPED;
        }
        debug!(
            "the current task is read {}",
            if typed_task {
                "by typed loads"
            } else {
                "by helpers"
            }
        );
        let mut ebpf = load_object(
            opts.transport,
            &offsets,
            &opts.filter,
            &tuning,
            &kfree,
            &owner_tp.unwrap_or(OwnerTracepoints::UNRESOLVED),
            opts.ring_buffer_bytes,
        )?;
        // Before any program is attached: a perf event array slot without
        // its CPU's buffer fails every record written on that CPU. A ring
        // buffer keeps its records until they are read, and is mapped when
        // the reader takes it: its mapping counts twice its size in the
        // resident set, which need not add to start-up's peak (the parsed
        // BTF) below.
        let buffers = match opts.transport {
            Transport::Perf => Some(open_perf_buffers(&mut ebpf, opts)?),
            Transport::Ring => None,
        };
        let aya_btf = btf_source::parse_for_aya()?;
        if matches!(opts.hooks, HookMode::Auto | HookMode::Fentry) {
            facts.fentry = Some(try_fentry(&mut ebpf, &aya_btf, &facts));
        }
        probes::choose(opts.hooks, &facts)?;

        let send = attach_role(&mut ebpf, Role::Send, opts.hooks, &facts, &aya_btf)?;
        let receive = attach_role(&mut ebpf, Role::Receive, opts.hooks, &facts, &aya_btf)?;
        let mut extra = Plan::no_socket_hook_for(opts.hooks, send, &facts);
        if let Some(hook) = extra
            && let Err(e) = attach_hook(&mut ebpf, hook, &facts, &aya_btf)
        {
            undo(&mut ebpf, hook);
            warn!(
                "{} failed ({e:#}): RSTs sent without a socket will not be seen",
                hook.name
            );
            extra = None;
        }
        let mut plan = Plan::new(send, receive, extra, &facts);
        if let Err(e) = attach_owner_tracking(&mut ebpf, &facts, owner_tp.is_some(), &aya_btf) {
            warn!(
                "socket owners cannot be tracked ({e:#}): RSTs made in softirq will show no process"
            );
        }
        match attach_aborts(&mut ebpf, &facts, &aya_btf) {
            Ok(hook) => {
                info!("aborts: {}", hook.name);
                plan.aborts = Some(hook);
            }
            Err(e) => {
                plan.aborts = None;
                warn!(
                    "connections that die without an RST (retransmission timeouts, ICMP \
                     errors) will not be seen: {e:#}"
                );
            }
        }
        if opts.capture_packets {
            let attached = require_kernel_btf(&facts)
                .and_then(|()| attach_btf(&mut ebpf, program::PACKET_TX, "net_dev_queue", &aya_btf))
                .and_then(|()| {
                    attach_btf(&mut ebpf, program::PACKET_RX, "netif_receive_skb", &aya_btf)
                });
            match attached {
                Ok(()) => plan.packets = true,
                Err(e) => warn!(
                    "RST segments cannot be captured ({e:#}): the pcapng export will \
                     hold headers synthesised from the events"
                ),
            }
        }
        let (firewall, firewall_pending) = attach_firewall(
            &mut ebpf,
            probes::choose_firewall(opts.firewall, &facts),
            &facts,
            &aya_btf,
        );
        plan.firewall = firewall;
        info!("hooks: {plan} transport={}", opts.transport.name());
        Ok(Session {
            ebpf,
            plan,
            transport: opts.transport,
            buffers,
            counters: CounterReader::default(),
            firewall_pending,
            firewall_modules: 0,
            firewall_checked: std::time::Instant::now(),
        })
    }

    /// Attaches netfilter's functions once their module loads; looks at
    /// most every 2 s (two stat() calls), and not at all once attached.
    pub(crate) fn recheck_firewall(&mut self) {
        if self.firewall_pending.is_empty()
            || self.firewall_checked.elapsed() < std::time::Duration::from_secs(2)
        {
            return;
        }
        self.firewall_checked = std::time::Instant::now();
        attach_late_firewall(
            &mut self.ebpf,
            &mut self.firewall_pending,
            &mut self.firewall_modules,
        );
    }

    /// The loaded programs: name in the object, and the kernel's program id.
    pub(crate) fn program_ids(&self) -> Vec<(String, u32)> {
        let mut ids: Vec<(String, u32)> = self
            .ebpf
            .programs()
            .filter_map(|(name, program)| Some((name.to_owned(), program.info().ok()?.id())))
            .collect();
        ids.sort();
        ids
    }

    /// Each loaded program and the instructions the verifier processed for
    /// it ("processed N insns"); None where the kernel does not report it
    /// (bpf_prog_info.verified_insns is 5.16+).
    pub(crate) fn verified_instructions(&self) -> Vec<(String, Option<u32>)> {
        let mut counts: Vec<(String, Option<u32>)> = self
            .ebpf
            .programs()
            .filter(|(_, prog)| prog.fd().is_ok())
            .map(|(name, prog)| {
                let count = prog
                    .info()
                    .ok()
                    .and_then(|info| info.verified_instruction_count());
                (name.to_string(), count)
            })
            .collect();
        counts.sort();
        counts
    }

    /// Where the records arrive (once).
    pub(crate) fn take_buffers(&mut self) -> Result<Buffers> {
        if let Some(perf) = self.buffers.take() {
            return Ok(perf);
        }
        let map = self
            .ebpf
            .take_map(abi::EVENTS_MAP)
            .ok_or_else(|| anyhow!("the event buffers were taken already"))?;
        Ok(Buffers::Ring(RingBuf::try_from(map)?))
    }

    /// The `--stack` map (stacks are read by id as events arrive).
    pub(crate) fn take_stack_map(&mut self) -> Result<StackTraceMap<MapData>> {
        let map = self
            .ebpf
            .take_map(abi::STACKS_MAP)
            .ok_or_else(|| anyhow!("eBPF object has no {} map", abi::STACKS_MAP))?;
        Ok(StackTraceMap::try_from(map)?)
    }

    /// The kernel's counters; `exact` recounts the LRU maps (at exit).
    pub(crate) fn counters(&self, exact: bool) -> Result<Counters> {
        self.counters.read(&self.ebpf, exact)
    }
}

/// The `EVENTS` perf event array as the reader's buffers: `perf_bytes`
/// per CPU, waking the reader at `perf_wakeup_bytes`.
fn open_perf_buffers(ebpf: &mut Ebpf, opts: &Options) -> Result<Buffers> {
    let map = ebpf
        .take_map(abi::EVENTS_MAP)
        .ok_or_else(|| anyhow!("eBPF object has no {} map", abi::EVENTS_MAP))?;
    let aya::maps::Map::PerfEventArray(data) = map else {
        bail!("{} is not a perf event array", abi::EVENTS_MAP);
    };
    Ok(Buffers::Perf(
        PerfBuffers::open(data, opts.perf_bytes, opts.perf_wakeup_bytes)
            .context("opening the perf buffers")?,
    ))
}

/// `--stack-budget` (per second per CPU) as the kernel's per-window
/// budget: rounded up, so that a budget never becomes 0, which is none.
fn stacks_per_window(per_second: u32) -> u32 {
    const WINDOWS_PER_SECOND: u64 = 1_000_000_000 / abi::STACK_BUDGET_WINDOW_NS;
    u64::from(per_second)
        .div_ceil(WINDOWS_PER_SECOND)
        .try_into()
        .unwrap_or(u32::MAX)
}

/// Struct member offsets for the eBPF programs, checked for sanity;
/// `jiffies`: whether tracing programs may call `bpf_jiffies64`.
fn resolve_offsets(btf: &Btf, jiffies: bool) -> Result<abi::Offsets> {
    let (mut offsets, missing) =
        offsets::resolve(btf).context("resolving kernel struct offsets")?;
    // The idle time's read is what calls the helper: without the field the
    // verifier never reaches the call.
    if !jiffies {
        warn!(
            "no {} for tracing programs before Linux {}: peer idle times are unknown",
            helpers::JIFFIES64.name,
            helpers::JIFFIES64.since
        );
        offsets.rcv_tstamp = abi::Field::ABSENT;
    }
    if !missing.is_empty() {
        warn!(
            "fields missing on this kernel (their facts will read 0): {}",
            missing.join(", ")
        );
    }
    Ok(offsets)
}

fn load_object(
    transport: Transport,
    offsets: &abi::Offsets,
    filter: &Filter,
    tuning: &Tuning,
    kfree: &KfreeSkb,
    owner_tp: &OwnerTracepoints,
    ring_bytes: u32,
) -> Result<Ebpf> {
    let object = match transport {
        Transport::Ring => EBPF_OBJECT,
        Transport::Perf => EBPF_PERF_OBJECT,
    };
    if object.is_empty() {
        bail!(
            "this rsttrace binary was built without its eBPF object; \
             build it with `cargo xtask build` (or run `cargo xtask run -- ...`)"
        );
    }
    raise_memlock_limit();
    let mut loader = EbpfLoader::new();
    // The programs read kernel structs at offsets this loader resolved
    // and wrote into OFFSETS: the object has no CO-RE relocations, and
    // the kernel BTF that EbpfLoader::new() parsed for them (its biggest
    // allocation) is dropped unused. Attaching parses it once, later.
    loader
        .btf(None)
        .override_global(abi::OFFSETS_GLOBAL, offsets, true)
        .override_global(abi::FILTER_GLOBAL, filter, true)
        .override_global(abi::TUNING_GLOBAL, tuning, true)
        .override_global(abi::KFREE_SKB_GLOBAL, kfree, true)
        .override_global(abi::OWNER_TP_GLOBAL, owner_tp, true);
    // A perf event array has one slot per CPU, which aya sizes itself.
    if transport == Transport::Ring {
        loader.map_max_entries(abi::EVENTS_MAP, ring_bytes);
    }
    if tuning.stacks == 0 {
        // The kernel preallocates every slot (~1 KiB each, 16 MiB in all):
        // without --stack one is enough.
        loader.map_max_entries(abi::STACKS_MAP, 1);
    }
    loader
        .load(object)
        .map_err(|e| explain_bpf_error(anyhow::Error::new(e)))
        .context("loading the eBPF object")
}

/// Whether this kernel lets us load fentry programs: some refuse (EPERM)
/// even to root. The program stays loaded, ready to attach if chosen.
fn try_fentry(ebpf: &mut Ebpf, btf: &aya::Btf, facts: &KernelFacts) -> Result<(), String> {
    const FUNCTION: &str = "tcp_send_active_reset";
    if !facts.btf_function_args.contains_key(FUNCTION) {
        return Err(format!("no BTF function {FUNCTION} to try it on"));
    }
    load_fentry(ebpf, program::FENTRY_SEND_ACTIVE_RESET, FUNCTION, btf).map_err(|e| {
        let text = format!("{e:#}");
        debug!("fentry trial load: {text}");
        if text.contains("Operation not permitted") || text.contains("EPERM") {
            "the kernel refused (EPERM)".to_string()
        } else {
            text
        }
    })
}

/// The fentry trial for `rsttrace check`; None when it cannot be tried
/// (no BTF, no privileges).
pub(crate) fn probe_fentry(kernel: &KernelInfo) -> Option<Result<(), String>> {
    let btf = kernel.btf.as_ref()?;
    check_privileges().ok()?;
    let offsets = match resolve_offsets(btf, helpers::available(&helpers::JIFFIES64)) {
        Ok(o) => o,
        Err(e) => return Some(Err(format!("{e:#}"))),
    };
    let transport = transport::choose(transport::TransportMode::Auto, &kernel.ring_buffer)
        .unwrap_or(Transport::Perf);
    let mut ebpf = match load_object(
        transport,
        &offsets,
        &Filter::ALL,
        &Tuning::DEFAULT,
        &KfreeSkb::UNRESOLVED,
        &OwnerTracepoints::UNRESOLVED,
        4096,
    ) {
        Ok(e) => e,
        Err(e) => return Some(Err(format!("{e:#}"))),
    };
    // After the load, whose loader parsed (and freed) a copy of its own.
    let aya_btf = btf_source::parse_for_aya().ok()?;
    Some(try_fentry(&mut ebpf, &aya_btf, &kernel.facts))
}

/// CAP_BPF (39) + CAP_PERFMON (38), or CAP_SYS_ADMIN (21), in the effective set.
pub(crate) fn check_privileges() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    if has(21) || (has(39) && has(38)) {
        return Ok(());
    }
    bail!(
        "rsttrace needs privileges to load eBPF programs: run it as root (`sudo rsttrace`), \
         or grant the binary CAP_BPF and CAP_PERFMON (`sudo setcap cap_bpf,cap_perfmon,cap_sys_resource+ep $(which rsttrace)`)"
    )
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        debug!("could not raise RLIMIT_MEMLOCK (fine on 5.11+)");
    }
}

#[cfg(test)]
mod tests {
    use super::stacks_per_window;

    #[test]
    fn a_stack_budget_is_granted_a_tenth_at_a_time_and_never_rounds_to_none() {
        assert_eq!(stacks_per_window(0), 0, "0 stays unlimited");
        assert_eq!(stacks_per_window(1), 1);
        assert_eq!(stacks_per_window(10), 1);
        assert_eq!(stacks_per_window(11), 2);
        assert_eq!(stacks_per_window(1000), 100);
        assert_eq!(stacks_per_window(u32::MAX), u32::MAX.div_ceil(10));
    }
}
