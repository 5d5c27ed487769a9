//! Loads the embedded eBPF object into the running kernel and attaches the
//! hooks of the chosen plan. The only module that talks to aya's program API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf, StackTraceMap};
use aya::programs::{BtfTracePoint, FEntry, KProbe, ProgramError, TracePoint};
use aya::{Ebpf, EbpfLoader};
use log::{debug, info, warn};
use rsttrace_ebpf::abi::{
    self, Filter, KfreeSkb, ListenerKey, Owner, OwnerTracepoints, Tuning, program,
};

use crate::collect::counters::CounterReader;
pub use crate::collect::counters::Counters;
use crate::collect::probes::{self, Attach, Hook, HookMode, KernelFacts, Need, Plan, Role};
use crate::kernel::{btf::Btf, btf_source, kallsyms, offsets, preempt, tracefs};

/// The object built by `cargo xtask build-ebpf`, embedded by build.rs.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rsttrace-ebpf.o"));

pub struct Options {
    pub hooks: HookMode,
    pub filter: Filter,
    pub ring_buffer_bytes: u32,
    pub wakeup_bytes: u64,
    /// Capture the RST segments themselves (for pcapng exports).
    pub capture_packets: bool,
    /// `--stack`: capture kernel and user stacks.
    pub stacks: bool,
}

/// Everything the kernel side needs, probed once at start-up.
pub struct KernelInfo {
    pub btf: Option<Btf>,
    /// Why BTF is missing, when it is.
    pub btf_error: Option<String>,
    pub tracefs: Option<PathBuf>,
    pub facts: KernelFacts,
    /// `enum sk_rst_reason` value → name, from BTF.
    pub reasons: HashMap<u32, String>,
}

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

impl KernelInfo {
    pub fn probe() -> KernelInfo {
        let (btf, btf_error) = match btf_source::parse() {
            Ok(b) => (Some(b), None),
            Err(e) => {
                warn!("kernel BTF unavailable ({e:#}); tp_btf and fentry hooks disabled");
                (None, Some(format!("{e:#}")))
            }
        };
        let tracefs = match tracefs::ensure_mounted() {
            Ok(p) => Some(p),
            Err(e) => {
                warn!("{e:#}");
                None
            }
        };
        let facts = probe_facts(btf.as_ref(), tracefs.as_deref());
        let reasons = btf
            .as_ref()
            .map(|b| offsets::rst_reason_names(b).into_iter().collect())
            .unwrap_or_default();
        KernelInfo {
            btf,
            btf_error,
            tracefs,
            facts,
            reasons,
        }
    }
}

/// Everything the hook table asks about, except the fentry trial load
/// (that needs the object loaded, see `Session::load` and `try_fentry`).
fn probe_facts(btf: Option<&Btf>, tracefs: Option<&Path>) -> KernelFacts {
    let mut facts = KernelFacts {
        btf: btf.is_some(),
        kernel_btf: btf_source::kernel_has_btf(),
        kprobe_pmu: Path::new(KPROBE_PMU).exists(),
        ..KernelFacts::default()
    };
    let mut tracepoints = vec![("sock", "inet_sock_set_state")];
    for need in probes::HOOKS.iter().flat_map(|h| h.needs) {
        match *need {
            Need::BtfTracepointArgs(tp, _) => {
                if let Some(n) =
                    btf.and_then(|b| b.func_proto_param_count(&format!("btf_trace_{tp}")))
                {
                    facts.btf_tracepoint_args.insert(tp.to_string(), n);
                }
            }
            Need::Tracepoint(cat, name) => tracepoints.push((cat, name)),
            _ => {}
        }
    }
    if let Some(root) = tracefs {
        for (cat, name) in tracepoints {
            if tracefs::tracepoint_exists(root, cat, name) {
                facts.tracepoints.insert(format!("{cat}:{name}"));
            }
        }
        facts.kfree_skb_no_socket = kfree_skb(btf, Some(root)).is_some();
        if let Ok(fields) = tracefs::read_format(root, "tcp", "tcp_send_reset") {
            facts.tp_send_reset_reason = fields.iter().any(|f| f.name == "reason");
            // The version that fires without a socket stores sockaddr_in6 (28 bytes).
            facts.tp_send_reset_no_socket =
                fields.iter().any(|f| f.name == "saddr" && f.size == 28);
        }
    }
    let wanted = probes::wanted_functions();
    if let Some(b) = btf {
        for f in &wanted {
            if let Some(n) = b.func_param_count(f) {
                facts.btf_function_args.insert(f.to_string(), n);
            }
        }
    }
    match std::fs::read_to_string("/proc/kallsyms") {
        Ok(text) => {
            facts.functions = kallsyms::find_functions(&text, &wanted);
            facts.preempt_count = preempt::locate(&text, btf);
        }
        Err(e) => {
            debug!("cannot read /proc/kallsyms: {e}");
            facts.preempt_count = Err(format!("cannot read /proc/kallsyms: {e}"));
        }
    }
    facts
}

/// Where `skb:kfree_skb` keeps the skb and the reason, and NO_SOCKET's value.
fn kfree_skb(btf: Option<&Btf>, tracefs: Option<&Path>) -> Option<KfreeSkb> {
    let (skbaddr, reason) = tracefs::kfree_skb_layout(tracefs?).ok()?;
    Some(KfreeSkb {
        skbaddr,
        reason,
        no_socket: offsets::drop_reason_no_socket(btf?)?,
        _pad: 0,
    })
}

/// Loaded and attached programs; dropping it detaches everything.
pub struct Session {
    pub ebpf: Ebpf,
    pub plan: Plan,
    counters: CounterReader,
}

impl Session {
    /// Lends ports that were listening before the programs were attached
    /// their owners (`enrich::listeners`); an owner the kernel side has
    /// recorded meanwhile is kept. Returns how many were written.
    pub fn seed_listeners(&mut self, owners: &[(ListenerKey, Owner)]) -> Result<usize> {
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
    pub fn load(kernel: &mut KernelInfo, opts: &Options) -> Result<Session> {
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
        let mut tuning = Tuning {
            wakeup_bytes: opts.wakeup_bytes,
            stacks: if opts.stacks {
                abi::stacks::KERNEL | abi::stacks::USER
            } else {
                0
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
        let offsets = resolve_offsets(&btf)?;
        drop(btf);
        let mut ebpf = load_object(
            &offsets,
            &opts.filter,
            &tuning,
            &kfree,
            &owner_tp.unwrap_or(OwnerTracepoints::UNRESOLVED),
            opts.ring_buffer_bytes,
        )?;
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
        match require_kernel_btf(&facts).and_then(|()| {
            attach_btf(
                &mut ebpf,
                program::BTF_ERROR_REPORT,
                "inet_sk_error_report",
                &aya_btf,
            )
        }) {
            Ok(()) => plan.aborts = true,
            Err(e) => warn!(
                "connections that die without an RST (retransmission timeouts, ICMP errors) \
                 will not be seen: {e:#}"
            ),
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
        info!("hooks: {plan}");
        Ok(Session {
            ebpf,
            plan,
            counters: CounterReader::default(),
        })
    }

    /// The loaded programs: name in the object, and the kernel's program id.
    pub fn program_ids(&self) -> Vec<(String, u32)> {
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
    pub fn verified_instructions(&self) -> Vec<(String, Option<u32>)> {
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

    pub fn take_ring_buffer(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(abi::EVENTS_MAP)
            .ok_or_else(|| anyhow!("eBPF object has no {} map", abi::EVENTS_MAP))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// The `--stack` map (stacks are read by id as events arrive).
    pub fn take_stack_map(&mut self) -> Result<StackTraceMap<MapData>> {
        let map = self
            .ebpf
            .take_map(abi::STACKS_MAP)
            .ok_or_else(|| anyhow!("eBPF object has no {} map", abi::STACKS_MAP))?;
        Ok(StackTraceMap::try_from(map)?)
    }

    /// The kernel's counters; `exact` recounts the LRU maps (at exit).
    pub fn counters(&self, exact: bool) -> Result<Counters> {
        self.counters.read(&self.ebpf, exact)
    }
}

/// Struct member offsets for the eBPF programs, checked for sanity.
fn resolve_offsets(btf: &Btf) -> Result<abi::Offsets> {
    let (offsets, missing) = offsets::resolve(btf).context("resolving kernel struct offsets")?;
    offsets::sanity_check(&offsets).context("kernel struct offsets look wrong")?;
    if !missing.is_empty() {
        warn!(
            "fields missing on this kernel (their facts will read 0): {}",
            missing.join(", ")
        );
    }
    Ok(offsets)
}

fn load_object(
    offsets: &abi::Offsets,
    filter: &Filter,
    tuning: &Tuning,
    kfree: &KfreeSkb,
    owner_tp: &OwnerTracepoints,
    ring_bytes: u32,
) -> Result<Ebpf> {
    if EBPF_OBJECT.is_empty() {
        bail!(
            "this rsttrace binary was built without its eBPF object; \
             build it with `cargo xtask build` (or run `cargo xtask run -- ...`)"
        );
    }
    raise_memlock_limit();
    let mut loader = EbpfLoader::new();
    loader
        .override_global(abi::OFFSETS_GLOBAL, offsets, true)
        .override_global(abi::FILTER_GLOBAL, filter, true)
        .override_global(abi::TUNING_GLOBAL, tuning, true)
        .override_global(abi::KFREE_SKB_GLOBAL, kfree, true)
        .override_global(abi::OWNER_TP_GLOBAL, owner_tp, true)
        .map_max_entries(abi::EVENTS_MAP, ring_bytes);
    if tuning.stacks == 0 {
        // The kernel preallocates every slot (~1 KiB each, 16 MiB in all):
        // without --stack one is enough.
        loader.map_max_entries(abi::STACKS_MAP, 1);
    }
    loader
        .load(EBPF_OBJECT)
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
pub fn probe_fentry(kernel: &KernelInfo) -> Option<Result<(), String>> {
    let btf = kernel.btf.as_ref()?;
    check_privileges().ok()?;
    let offsets = match resolve_offsets(btf) {
        Ok(o) => o,
        Err(e) => return Some(Err(format!("{e:#}"))),
    };
    let mut ebpf = match load_object(
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

/// Attaches the best hook for `role`; in auto mode a hook that fails to
/// attach is undone and the next one tried.
fn attach_role(
    ebpf: &mut Ebpf,
    role: Role,
    mode: HookMode,
    facts: &KernelFacts,
    btf: &aya::Btf,
) -> Result<&'static Hook> {
    let candidates = probes::ranked(mode, role, facts);
    let mut errors = Vec::new();
    for hook in &candidates {
        match attach_hook(ebpf, hook, facts, btf) {
            Ok(()) => return Ok(hook),
            Err(e) => {
                undo(ebpf, hook);
                if mode != HookMode::Auto {
                    return Err(e);
                }
                warn!("{} failed ({e:#}); trying the next hook", hook.name);
                errors.push(format!("{}: {e:#}", hook.name));
            }
        }
    }
    bail!(
        "no {role:?} hook could be attached:\n  {}",
        errors.join("\n  ")
    )
}

fn attach_hook(ebpf: &mut Ebpf, hook: &Hook, facts: &KernelFacts, btf: &aya::Btf) -> Result<()> {
    for attach in hook.attach {
        match *attach {
            Attach::TpBtf {
                program,
                tracepoint,
            } => attach_btf(ebpf, program, tracepoint, btf)?,
            Attach::Tracepoint {
                program,
                category,
                name,
            } => attach_tracepoint(ebpf, program, category, name)?,
            Attach::Kprobe {
                program,
                function,
                optional,
            } => match facts.functions.get(function) {
                Some(symbol) => attach_kprobe(ebpf, program, symbol)?,
                None if optional => debug!("{function} not found; {program} not attached to it"),
                None => bail!("{function} not in /proc/kallsyms"),
            },
            Attach::Fentry {
                program,
                function,
                optional,
            } => {
                if optional && !facts.btf_function_args.contains_key(function) {
                    debug!("no BTF function {function}; {program} not attached");
                    continue;
                }
                load_fentry(ebpf, program, function, btf)?;
                let prog: &mut FEntry = program_mut(ebpf, program)?;
                prog.attach()
                    .with_context(|| format!("attaching fentry/{function}"))?;
            }
        }
    }
    Ok(())
}

/// Unloads (and so detaches) what a failed hook managed to attach.
fn undo(ebpf: &mut Ebpf, hook: &Hook) {
    for attach in hook.attach {
        // Unloading detaches the program's links; errors mean "was not loaded".
        let _ = match *attach {
            Attach::TpBtf { program, .. } => {
                program_mut::<BtfTracePoint>(ebpf, program).map(|p| p.unload())
            }
            Attach::Tracepoint { program, .. } => {
                program_mut::<TracePoint>(ebpf, program).map(|p| p.unload())
            }
            Attach::Kprobe { program, .. } => {
                program_mut::<KProbe>(ebpf, program).map(|p| p.unload())
            }
            Attach::Fentry { program, .. } => {
                program_mut::<FEntry>(ebpf, program).map(|p| p.unload())
            }
        };
    }
    debug!("undid {}", hook.name);
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("eBPF object has no program {name}"))?;
    Ok(prog.try_into()?)
}

/// Loads an fentry program unless already loaded (by the trial load).
fn load_fentry(ebpf: &mut Ebpf, program: &str, function: &str, btf: &aya::Btf) -> Result<()> {
    let prog: &mut FEntry = program_mut(ebpf, program)?;
    match prog.load(function, btf) {
        Ok(()) | Err(ProgramError::AlreadyLoaded) => Ok(()),
        Err(e) => Err(explain_bpf_error(anyhow::Error::new(e)))
            .with_context(|| format!("loading {program} (fentry/{function})")),
    }
}

fn attach_kprobe(ebpf: &mut Ebpf, program: &str, symbol: &str) -> Result<()> {
    let prog: &mut KProbe = program_mut(ebpf, program)?;
    match prog.load() {
        Ok(()) | Err(ProgramError::AlreadyLoaded) => {}
        Err(e) => {
            return Err(explain_bpf_error(anyhow::Error::new(e)))
                .with_context(|| format!("loading {program} (kprobe)"));
        }
    }
    prog.attach(symbol, 0)
        .with_context(|| format!("attaching kprobe/{symbol}"))?;
    Ok(())
}

/// The program that remembers which process owns each socket: tp_btf,
/// whose typed arguments let it leave after one comparison on the state
/// changes it ignores; the classic tracepoint where the kernel has no BTF.
fn attach_owner_tracking(
    ebpf: &mut Ebpf,
    facts: &KernelFacts,
    tracepoint_layout: bool,
    btf: &aya::Btf,
) -> Result<()> {
    let typed = require_kernel_btf(facts).and_then(|()| {
        attach_btf(
            ebpf,
            program::BTF_OWNER_SET_STATE,
            "inet_sock_set_state",
            btf,
        )
    });
    match typed {
        Ok(()) => Ok(()),
        Err(e) if tracepoint_layout => {
            debug!("tp_btf owner tracking unavailable ({e:#}); using the classic tracepoint");
            attach_tracepoint(
                ebpf,
                program::OWNER_SET_STATE,
                "sock",
                "inet_sock_set_state",
            )
        }
        Err(e) => Err(e),
    }
}

/// tp_btf programs are checked against the kernel's own BTF, which a
/// `--btf` file cannot stand in for.
fn require_kernel_btf(facts: &KernelFacts) -> Result<()> {
    probes::KernelFacts::check(facts, &Need::Btf).map_err(|why| anyhow!(why))
}

fn attach_btf(ebpf: &mut Ebpf, program: &str, tracepoint: &str, btf: &aya::Btf) -> Result<()> {
    let prog: &mut BtfTracePoint = program_mut(ebpf, program)?;
    prog.load(tracepoint, btf)
        .map_err(|e| explain_bpf_error(anyhow::Error::new(e)))
        .with_context(|| format!("loading {program} (tp_btf/{tracepoint})"))?;
    prog.attach()
        .with_context(|| format!("attaching tp_btf/{tracepoint}"))?;
    Ok(())
}

fn attach_tracepoint(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<()> {
    let prog: &mut TracePoint = program_mut(ebpf, program)?;
    prog.load()
        .map_err(|e| explain_bpf_error(anyhow::Error::new(e)))
        .with_context(|| format!("loading {program} (tracepoint {category}:{name})"))?;
    prog.attach(category, name)
        .with_context(|| format!("attaching tracepoint {category}:{name}"))?;
    Ok(())
}

/// The verifier log is long; keep it for `-v`, and put a hint first.
fn explain_bpf_error(e: anyhow::Error) -> anyhow::Error {
    // The chain only: `{:?}` would also render (and symbolise) a captured
    // backtrace when RUST_BACKTRACE is set, costing tens of MiB and ~0.4 s.
    let text = format!("{e:#}");
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        return e.context(
            "the kernel refused to load BPF: run rsttrace as root (sudo), or grant \
             CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE",
        );
    }
    e
}

/// CAP_BPF (39) + CAP_PERFMON (38), or CAP_SYS_ADMIN (21), in the effective set.
pub fn check_privileges() -> Result<()> {
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
