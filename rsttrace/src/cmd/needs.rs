//! What rsttrace needs from the host, in one list: the capabilities and the
//! host paths it uses. `rsttrace check` reports them against what the
//! process has, and deploy/kubernetes/daemonset.yaml grants exactly these
//! (its test compares the manifest with this list, so they cannot drift).

/// A Linux capability rsttrace uses.
pub struct Capability {
    /// As Kubernetes' `capabilities.add` spells it (without `CAP_`).
    pub name: &'static str,
    /// Bit number (include/uapi/linux/capability.h).
    pub(crate) bit: u32,
    /// Without it rsttrace cannot trace at all (else a feature degrades).
    pub(crate) required: bool,
    pub why: &'static str,
}

pub const CAPABILITIES: &[Capability] = &[
    Capability {
        name: "BPF",
        bit: 39,
        required: true,
        why: "load the programs and create their maps",
    },
    Capability {
        name: "PERFMON",
        bit: 38,
        required: true,
        why: "attach tracepoints, kprobes and fentry, and read kernel memory and stacks from them",
    },
    Capability {
        name: "SYS_RESOURCE",
        bit: 24,
        required: false,
        why: "raise RLIMIT_MEMLOCK, which kernels before 5.11 charge BPF maps to",
    },
    Capability {
        name: "SYS_PTRACE",
        bit: 19,
        required: false,
        why: "read other users' /proc/PID/ns/net and /proc/PID/maps (the owner's \
              network namespace; --stack user frames)",
    },
    Capability {
        name: "SYS_NICE",
        bit: 23,
        required: false,
        why: "run ahead of ordinary tasks (--nice), so that an RST storm's threads \
              do not starve the reader into losing events",
    },
    Capability {
        name: "SYSLOG",
        bit: 34,
        required: false,
        why: "see kernel addresses in /proc/kallsyms under kptr_restrict=1 (--stack kernel frames)",
    },
];

/// A host path rsttrace reads (or writes).
pub struct HostPath {
    pub path: &'static str,
    pub writable: bool,
    pub why: &'static str,
}

/// In a container these are mounted from the host at the same paths;
/// /proc comes with the host's PID namespace (hostPID).
pub const HOST_PATHS: &[HostPath] = &[
    HostPath {
        path: "/sys/kernel/btf",
        writable: false,
        why: "kernel BTF: struct offsets and reset reason names",
    },
    HostPath {
        path: "/sys/kernel/tracing",
        writable: false,
        why: "tracefs: tracepoint formats and the kprobe PMU",
    },
    HostPath {
        path: "/sys/fs/cgroup",
        writable: false,
        why: "cgroup ids for --cgroup, --container, --pod and --namespace",
    },
    HostPath {
        path: "/run/containerd/io.containerd.runtime.v2.task",
        writable: false,
        why: "containerd's container bundles (pod, namespace, name, image)",
    },
    HostPath {
        path: "/run/containers/storage",
        writable: false,
        why: "CRI-O's per-container state",
    },
    HostPath {
        path: "/var/lib/containers/storage",
        writable: false,
        why: "CRI-O's and podman's container state",
    },
    HostPath {
        path: "/var/lib/docker/containers",
        writable: false,
        why: "Docker's per-container configuration",
    },
    HostPath {
        path: "/var/log/rsttrace",
        writable: true,
        why: "the JSON Lines export (--write), rotated",
    },
];

/// The capabilities in this process's effective set (bit mask).
pub(crate) fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .unwrap_or(0)
}

/// `rsttrace check`'s capability lines: each need, whether this process has
/// it, and why rsttrace wants it.
pub(crate) fn report(effective: u64) -> String {
    let mut out = String::new();
    for c in CAPABILITIES {
        let has = effective & (1u64 << c.bit) != 0;
        let status = match (has, c.required) {
            (true, _) => "yes",
            (false, true) => "MISSING (required)",
            (false, false) => "missing",
        };
        out += &format!("  CAP_{:<13} {status:<19} {}\n", c.name, c.why);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_dirs_the_runtimes_read_are_host_paths() {
        for dir in crate::enrich::containers::STATE_DIRS {
            assert!(
                HOST_PATHS.iter().any(|p| p.path == *dir && !p.writable),
                "{dir} is read by containers.rs but not in HOST_PATHS"
            );
        }
    }

    #[test]
    fn the_report_names_each_capability() {
        let all = CAPABILITIES.iter().fold(0u64, |m, c| m | 1 << c.bit);
        let text = report(all);
        assert_eq!(text.lines().count(), CAPABILITIES.len());
        assert!(!text.contains("MISSING"), "{text}");
        let none = report(0);
        assert!(
            none.contains("CAP_BPF           MISSING (required)"),
            "{none}"
        );
        assert!(none.contains("CAP_SYSLOG        missing"), "{none}");
    }
}
