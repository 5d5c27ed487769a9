//! BPF helpers that the programs call only where the kernel has them: each
//! sits behind a load-time constant, so that on an older kernel the
//! verifier never reaches the call (it rejects unknown helpers only on the
//! paths it walks).

use aya::programs::ProgramType;
use aya::sys::{BpfHelper, is_helper_supported};

/// A helper and the first kernel whose tracing programs may call it.
pub struct Helper {
    pub name: &'static str,
    pub id: BpfHelper,
    pub since: &'static str,
}

/// The current task as a typed pointer: its ids, name, user and cgroup are
/// then loads rather than helper calls (rsttrace-ebpf `current.rs`), and
/// `--stack` reaches its saved user registers.
pub const CURRENT_TASK_BTF: Helper = Helper {
    name: "bpf_get_current_task_btf",
    id: BpfHelper::BPF_FUNC_get_current_task_btf,
    since: "5.11",
};

/// `--stack`: the task's saved user registers, for the words at the user
/// stack pointer (see rsttrace-ebpf `stacks.rs`).
pub const STACK_HELPERS: [Helper; 2] = [
    CURRENT_TASK_BTF,
    Helper {
        name: "bpf_task_pt_regs",
        id: BpfHelper::BPF_FUNC_task_pt_regs,
        since: "5.15",
    },
];

/// The peer's idle time (now − `tcp_sock.rcv_tstamp`). The helper exists
/// since 5.6, but tracing programs may call it only since 5.9.
pub const JIFFIES64: Helper = Helper {
    name: "bpf_jiffies64",
    id: BpfHelper::BPF_FUNC_jiffies64,
    since: "5.9",
};

/// Whether kprobe programs (and so the other tracing types, which share
/// the helper table) may call `helper`. A failed probe (no privileges)
/// counts as present: the load that follows fails anyway, and says why.
pub fn available(helper: &Helper) -> bool {
    is_helper_supported(ProgramType::KProbe, helper.id).unwrap_or(true)
}

/// Why `--stack` cannot work here, if it cannot.
pub fn stack_unsupported() -> Option<String> {
    let missing: Vec<String> = STACK_HELPERS
        .iter()
        .filter(|h| !available(h))
        .map(|h| format!("{} (Linux {})", h.name, h.since))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "--stack needs BPF helpers this kernel lacks: {}. Trace without --stack \
             here, or on Linux 5.15 or later",
            missing.join(", ")
        )
    })
}
