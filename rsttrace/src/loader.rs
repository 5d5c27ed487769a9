//! Loads the embedded eBPF object into the running kernel and attaches the
//! hooks of the chosen plan. The only module that talks to aya's program API.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use log::{debug, info, warn};
use rsttrace_ebpf::abi::{self, Filter, Offsets, Tuning, counter, program};

use crate::kernel::{btf::Btf, offsets, tracefs};
use crate::probes::{self, HookMode, KernelFacts, Plan, ReceiveHook, SendHook};

/// The object built by `cargo xtask build-ebpf`, embedded by build.rs.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rsttrace-ebpf.o"));

pub struct Options {
    pub hooks: HookMode,
    pub filter: Filter,
    pub ring_buffer_bytes: u32,
    pub wakeup_bytes: u64,
}

/// Everything the kernel side needs, probed once at start-up.
pub struct KernelInfo {
    pub btf: Option<Btf>,
    pub tracefs: Option<PathBuf>,
    pub facts: KernelFacts,
    /// `enum sk_rst_reason` value → name, from BTF.
    pub reasons: HashMap<u32, String>,
}

impl KernelInfo {
    pub fn probe() -> KernelInfo {
        let btf = match Btf::from_sys_fs() {
            Ok(b) => Some(b),
            Err(e) => {
                warn!("kernel BTF unavailable ({e}); tp_btf hooks disabled");
                None
            }
        };
        let tracefs = match tracefs::ensure_mounted() {
            Ok(p) => Some(p),
            Err(e) => {
                warn!("{e:#}");
                None
            }
        };
        let tp = |cat: &str, name: &str| {
            tracefs
                .as_deref()
                .is_some_and(|root| tracefs::tracepoint_exists(root, cat, name))
        };
        let tp_send_reset_reason = tracefs
            .as_deref()
            .and_then(|root| tracefs::read_format(root, "tcp", "tcp_send_reset").ok())
            .is_some_and(|fields| fields.iter().any(|f| f.name == "reason"));
        let facts = KernelFacts {
            btf: btf.is_some(),
            btf_send_reset_reason: btf.as_ref().and_then(offsets::send_reset_has_reason),
            btf_receive_reset: btf
                .as_ref()
                .is_some_and(|b| b.has_type("btf_trace_tcp_receive_reset")),
            tp_send_reset: tp("tcp", "tcp_send_reset"),
            tp_send_reset_reason,
            tp_receive_reset: tp("tcp", "tcp_receive_reset"),
            tp_softirq: tp("irq", "softirq_entry") && tp("irq", "softirq_exit"),
        };
        let reasons = btf
            .as_ref()
            .map(|b| offsets::rst_reason_names(b).into_iter().collect())
            .unwrap_or_default();
        KernelInfo {
            btf,
            tracefs,
            facts,
            reasons,
        }
    }
}

/// Loaded and attached programs; dropping it detaches everything.
pub struct Session {
    pub ebpf: Ebpf,
    pub plan: Plan,
}

impl Session {
    pub fn load(kernel: &KernelInfo, opts: &Options) -> Result<Session> {
        check_privileges()?;
        if EBPF_OBJECT.is_empty() {
            bail!(
                "this rsttrace binary was built without its eBPF object; \
                 build it with `cargo xtask build` (or run `cargo xtask run -- ...`)"
            );
        }
        let btf = kernel.btf.as_ref().ok_or_else(|| {
            anyhow!(
                "this kernel exposes no BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF); \
                 rsttrace needs it to find socket fields on this kernel"
            )
        })?;
        let (offsets, missing) =
            offsets::resolve(btf).context("resolving kernel struct offsets")?;
        offsets::sanity_check(&offsets).context("kernel struct offsets look wrong")?;
        if !missing.is_empty() {
            warn!(
                "fields missing on this kernel (their facts will read 0): {}",
                missing.join(", ")
            );
        }
        let mut plan = probes::choose(opts.hooks, &kernel.facts)?;
        let mut tuning = Tuning {
            wakeup_bytes: opts.wakeup_bytes,
            ..Tuning::DEFAULT
        };
        if let Some(root) = &kernel.tracefs
            && (plan.send == SendHook::Tracepoint
                || plan.receive == ReceiveHook::Tracepoint
                || opts.hooks == HookMode::Auto)
        {
            // Parsed even in tp_btf mode, so a tp_btf failure can fall back.
            match tracefs::tcp_layout(root) {
                Ok(layout) => tuning.tp = layout,
                Err(e) if plan.send == SendHook::Tracepoint => return Err(e),
                Err(e) => debug!("tracepoint layout unavailable: {e:#}"),
            }
        }

        let mut ebpf = load_object(&offsets, &opts.filter, &tuning, opts.ring_buffer_bytes)?;
        let aya_btf = aya::Btf::from_sys_fs().context("reading /sys/kernel/btf/vmlinux")?;

        plan.send = attach_send(&mut ebpf, plan.send, &aya_btf, opts.hooks, &kernel.facts)?;
        if plan.send == SendHook::Tracepoint {
            plan.reason = tuning.tp.send_reason != abi::ABSENT;
        }
        plan.receive =
            attach_receive(&mut ebpf, plan.receive, &aya_btf, opts.hooks, &kernel.facts)?;
        if plan.softirq
            && let Err(e) = attach_softirq_tracking(&mut ebpf)
        {
            warn!("softirq tracking unavailable ({e:#}): the context of each RST will be unknown");
            plan.softirq = false;
        }
        info!("hooks: {plan}");
        Ok(Session { ebpf, plan })
    }

    pub fn take_ring_buffer(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(abi::EVENTS_MAP)
            .ok_or_else(|| anyhow!("eBPF object has no {} map", abi::EVENTS_MAP))?;
        Ok(RingBuf::try_from(map)?)
    }

    pub fn counters(&self) -> Result<Counters> {
        let map = self
            .ebpf
            .map(abi::COUNTERS_MAP)
            .ok_or_else(|| anyhow!("eBPF object has no {} map", abi::COUNTERS_MAP))?;
        let array = PerCpuArray::<_, u64>::try_from(map)?;
        let sum = |index: u32| -> Result<u64> { Ok(array.get(&index, 0)?.iter().copied().sum()) };
        Ok(Counters {
            lost: sum(counter::LOST)?,
            filtered: sum(counter::FILTERED)?,
            read_errors: sum(counter::READ_ERRORS)?,
            submitted: sum(counter::SUBMITTED)?,
        })
    }
}

/// Kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub lost: u64,
    pub filtered: u64,
    pub read_errors: u64,
    pub submitted: u64,
}

fn load_object(
    offsets: &Offsets,
    filter: &Filter,
    tuning: &Tuning,
    ring_bytes: u32,
) -> Result<Ebpf> {
    raise_memlock_limit();
    EbpfLoader::new()
        .override_global(abi::OFFSETS_GLOBAL, offsets, true)
        .override_global(abi::FILTER_GLOBAL, filter, true)
        .override_global(abi::TUNING_GLOBAL, tuning, true)
        .map_max_entries(abi::EVENTS_MAP, ring_bytes)
        .load(EBPF_OBJECT)
        .map_err(|e| explain_bpf_error(anyhow::Error::new(e)))
        .context("loading the eBPF object")
}

fn attach_send(
    ebpf: &mut Ebpf,
    hook: SendHook,
    btf: &aya::Btf,
    mode: HookMode,
    facts: &KernelFacts,
) -> Result<SendHook> {
    let name = match hook {
        SendHook::BtfWithReason => program::BTF_SEND_RESET,
        SendHook::BtfNoReason => program::BTF_SEND_RESET_NO_REASON,
        SendHook::Tracepoint => {
            attach_tracepoint(ebpf, program::TP_SEND_RESET, "tcp", "tcp_send_reset")?;
            return Ok(hook);
        }
    };
    match attach_btf(ebpf, name, "tcp_send_reset", btf) {
        Ok(()) => Ok(hook),
        Err(e) if mode == HookMode::Auto && facts.tp_send_reset => {
            warn!("tp_btf tcp_send_reset failed ({e:#}); falling back to the tracepoint");
            attach_tracepoint(ebpf, program::TP_SEND_RESET, "tcp", "tcp_send_reset")?;
            Ok(SendHook::Tracepoint)
        }
        Err(e) => Err(e),
    }
}

fn attach_receive(
    ebpf: &mut Ebpf,
    hook: ReceiveHook,
    btf: &aya::Btf,
    mode: HookMode,
    facts: &KernelFacts,
) -> Result<ReceiveHook> {
    if hook == ReceiveHook::Tracepoint {
        attach_tracepoint(ebpf, program::TP_RECEIVE_RESET, "tcp", "tcp_receive_reset")?;
        return Ok(hook);
    }
    match attach_btf(ebpf, program::BTF_RECEIVE_RESET, "tcp_receive_reset", btf) {
        Ok(()) => Ok(hook),
        Err(e) if mode == HookMode::Auto && facts.tp_receive_reset => {
            warn!("tp_btf tcp_receive_reset failed ({e:#}); falling back to the tracepoint");
            attach_tracepoint(ebpf, program::TP_RECEIVE_RESET, "tcp", "tcp_receive_reset")?;
            Ok(ReceiveHook::Tracepoint)
        }
        Err(e) => Err(e),
    }
}

fn attach_softirq_tracking(ebpf: &mut Ebpf) -> Result<()> {
    attach_tracepoint(ebpf, program::SOFTIRQ_ENTRY, "irq", "softirq_entry")?;
    attach_tracepoint(ebpf, program::SOFTIRQ_EXIT, "irq", "softirq_exit")
}

fn attach_btf(ebpf: &mut Ebpf, program: &str, tracepoint: &str, btf: &aya::Btf) -> Result<()> {
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("eBPF object has no program {program}"))?
        .try_into()?;
    prog.load(tracepoint, btf)
        .map_err(|e| explain_bpf_error(anyhow::Error::new(e)))
        .with_context(|| format!("loading {program} (tp_btf/{tracepoint})"))?;
    prog.attach()
        .with_context(|| format!("attaching tp_btf/{tracepoint}"))?;
    Ok(())
}

fn attach_tracepoint(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<()> {
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("eBPF object has no program {program}"))?
        .try_into()?;
    prog.load()
        .map_err(|e| explain_bpf_error(anyhow::Error::new(e)))
        .with_context(|| format!("loading {program} (tracepoint {category}:{name})"))?;
    prog.attach(category, name)
        .with_context(|| format!("attaching tracepoint {category}:{name}"))?;
    Ok(())
}

/// The verifier log is long; keep it for `-v`, and put a hint first.
fn explain_bpf_error(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:?}");
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        return e.context(
            "the kernel refused to load BPF: run rsttrace as root (sudo), or grant \
             CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE",
        );
    }
    e
}

/// CAP_BPF (39) + CAP_PERFMON (38), or CAP_SYS_ADMIN (21), in the effective set.
fn check_privileges() -> Result<()> {
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
