//! What the running kernel offers, probed once at start-up from BTF,
//! tracefs, sysfs and kallsyms: what the hook table asks about.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use log::{debug, warn};
use rsttrace_ebpf::abi::KfreeSkb;

use crate::collect::probes::{self, KernelFacts, Need};
use crate::collect::transport;
use crate::kernel::{btf::Btf, btf_source, kallsyms, offsets, preempt, tracefs};

/// Everything the kernel side needs, probed once at start-up.
pub(crate) struct KernelInfo {
    pub(crate) btf: Option<Btf>,
    /// Why BTF is missing, when it is.
    pub(crate) btf_error: Option<String>,
    pub(crate) tracefs: Option<PathBuf>,
    pub(crate) facts: KernelFacts,
    /// `enum sk_rst_reason` value → name, from BTF.
    pub(crate) reasons: HashMap<u32, String>,
    /// Whether the kernel has the BPF ring buffer (Err: the probe failed).
    pub(crate) ring_buffer: Result<bool, String>,
}

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

impl KernelInfo {
    pub(crate) fn probe() -> KernelInfo {
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
            ring_buffer: transport::probe_ring_buffer(),
        }
    }
}

/// Everything the hook table asks about, except the fentry trial load
/// (that needs the object loaded, see `Session::load` and `try_fentry`).
pub(super) fn probe_facts(btf: Option<&Btf>, tracefs: Option<&Path>) -> KernelFacts {
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
    match kallsyms::read(&wanted, preempt::SYMBOLS) {
        Ok(found) => {
            facts.preempt_count = preempt::locate(&found.data, btf);
            facts.functions = found.functions;
        }
        Err(e) => {
            debug!("cannot read /proc/kallsyms: {e}");
            facts.preempt_count = Err(format!("cannot read /proc/kallsyms: {e}"));
        }
    }
    facts
}

/// Where `skb:kfree_skb` keeps the skb and the reason, and NO_SOCKET's value.
pub(super) fn kfree_skb(btf: Option<&Btf>, tracefs: Option<&Path>) -> Option<KfreeSkb> {
    let (skbaddr, reason) = tracefs::kfree_skb_layout(tracefs?).ok()?;
    Some(KfreeSkb {
        skbaddr,
        reason,
        no_socket: offsets::drop_reason_no_socket(btf?)?,
        _pad: 0,
    })
}
