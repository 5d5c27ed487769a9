//! Attaching the programs of a plan: each hook family's load and attach,
//! the fallbacks between them, and undoing what a failed hook attached.

use anyhow::{Context, Result, anyhow, bail};
use aya::Ebpf;
use aya::programs::{BtfTracePoint, FEntry, KProbe, ProgramError, TracePoint};
use log::{debug, warn};
use rsttrace_ebpf::abi::program;

use crate::collect::probes::{self, Attach, Firewall, Hook, HookMode, KernelFacts, Need, Role};

/// Attaches the best hook for `role`; in auto mode a hook that fails to
/// attach is undone and the next one tried.
pub(super) fn attach_role(
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

pub(super) fn attach_hook(
    ebpf: &mut Ebpf,
    hook: &Hook,
    facts: &KernelFacts,
    btf: &aya::Btf,
) -> Result<()> {
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
pub(super) fn undo(ebpf: &mut Ebpf, hook: &Hook) {
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

pub(super) fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("eBPF object has no program {name}"))?;
    Ok(prog.try_into()?)
}

/// Loads an fentry program unless already loaded (by the trial load).
pub(super) fn load_fentry(
    ebpf: &mut Ebpf,
    program: &str,
    function: &str,
    btf: &aya::Btf,
) -> Result<()> {
    let prog: &mut FEntry = program_mut(ebpf, program)?;
    match prog.load(function, btf) {
        Ok(()) | Err(ProgramError::AlreadyLoaded) => Ok(()),
        Err(e) => Err(explain_bpf_error(anyhow::Error::new(e)))
            .with_context(|| format!("loading {program} (fentry/{function})")),
    }
}

pub(super) fn attach_kprobe(ebpf: &mut Ebpf, program: &str, symbol: &str) -> Result<()> {
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

/// Aborts (errors without an RST): the best usable abort hook (the
/// tracepoint where the kernel has it, else a kprobe on the error report
/// function), falling back along `probes::abort_hooks`.
pub(super) fn attach_aborts(
    ebpf: &mut Ebpf,
    facts: &KernelFacts,
    btf: &aya::Btf,
) -> Result<&'static Hook> {
    if probes::abort_hooks(facts).is_empty() {
        bail!("no usable hook:\n{}", probes::why_no_abort_hook(facts));
    }
    attach_role(ebpf, Role::Abort, HookMode::Auto, facts, btf)
}

/// netfilter's RSTs as `probes::choose_firewall` decided. Returns what
/// is attached, and the kernel functions still waiting for their module.
pub(super) fn attach_firewall(
    ebpf: &mut Ebpf,
    chosen: Firewall,
    facts: &KernelFacts,
    btf: &aya::Btf,
) -> (Firewall, Vec<&'static str>) {
    let (Firewall::Kernel { hook, .. } | Firewall::Device { hook }) = chosen else {
        return (chosen, Vec::new());
    };
    if let Err(e) = attach_hook(ebpf, hook, facts, btf) {
        undo(ebpf, hook);
        warn!(
            "{} failed ({e:#}): RSTs a firewall makes will not be seen",
            hook.name
        );
        return (Firewall::Off("its hook failed to attach"), Vec::new());
    }
    let pending = probes::firewall_functions(hook)
        .filter(|f| matches!(chosen, Firewall::Kernel { .. }) && !facts.functions.contains_key(*f))
        .collect();
    (chosen, pending)
}

/// Modules whose loading brings a pending firewall function.
const REJECT_MODULES: [&str; 2] = ["/sys/module/nf_reject_ipv4", "/sys/module/nf_reject_ipv6"];

/// Attaches the pending firewall functions whose module has loaded since
/// (the first reject rule loads it); `modules` is how many were present at
/// the last look, so /proc/kallsyms is read only when that changes.
pub(super) fn attach_late_firewall(
    ebpf: &mut Ebpf,
    pending: &mut Vec<&'static str>,
    modules: &mut usize,
) {
    let present = REJECT_MODULES
        .iter()
        .filter(|m| std::path::Path::new(m).exists())
        .count();
    if present == *modules {
        return;
    }
    *modules = present;
    let Ok(text) = std::fs::read_to_string("/proc/kallsyms") else {
        return;
    };
    let wanted = pending.iter().copied().collect();
    let found = crate::kernel::kallsyms::Kallsyms::scan(&text, &wanted, &[]).functions;
    pending.retain(|function| {
        let Some(symbol) = found.get(*function) else {
            return true;
        };
        match attach_kprobe(ebpf, program::KPROBE_NF_SEND_RESET, symbol) {
            Ok(()) => {
                log::info!("firewall: kprobe on {symbol} attached after its module loaded");
                false
            }
            Err(e) => {
                warn!("firewall: {symbol} loaded but its kprobe failed: {e:#}");
                false
            }
        }
    });
}

/// The program that remembers which process owns each socket: tp_btf,
/// whose typed arguments let it leave after one comparison on the state
/// changes it ignores; the classic tracepoint where the kernel has no BTF.
pub(super) fn attach_owner_tracking(
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
pub(super) fn require_kernel_btf(facts: &KernelFacts) -> Result<()> {
    probes::KernelFacts::check(facts, &Need::Btf).map_err(|why| anyhow!(why))
}

pub(super) fn attach_btf(
    ebpf: &mut Ebpf,
    program: &str,
    tracepoint: &str,
    btf: &aya::Btf,
) -> Result<()> {
    let prog: &mut BtfTracePoint = program_mut(ebpf, program)?;
    prog.load(tracepoint, btf)
        .map_err(|e| explain_bpf_error(anyhow::Error::new(e)))
        .with_context(|| format!("loading {program} (tp_btf/{tracepoint})"))?;
    prog.attach()
        .with_context(|| format!("attaching tp_btf/{tracepoint}"))?;
    Ok(())
}

pub(super) fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &str,
    category: &str,
    name: &str,
) -> Result<()> {
    let prog: &mut TracePoint = program_mut(ebpf, program)?;
    prog.load()
        .map_err(|e| explain_bpf_error(anyhow::Error::new(e)))
        .with_context(|| format!("loading {program} (tracepoint {category}:{name})"))?;
    prog.attach(category, name)
        .with_context(|| format!("attaching tracepoint {category}:{name}"))?;
    Ok(())
}

/// The verifier log is long; keep it for `-v`, and put a hint first.
pub(super) fn explain_bpf_error(e: anyhow::Error) -> anyhow::Error {
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
