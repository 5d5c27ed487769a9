//! How records travel from the kernel programs to rsttrace: the BPF ring
//! buffer (5.8+), or a perf event array (any kernel rsttrace runs on). Each
//! has its own eBPF object (`rsttrace-ebpf/src/sink.rs`); the event format,
//! the batching and the loss accounting are the same.

use std::fmt;

use anyhow::{Result, bail};
use clap::ValueEnum;

/// `--transport`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TransportMode {
    /// The ring buffer where the kernel has it, else the perf event array.
    #[default]
    Auto,
    /// The BPF ring buffer (Linux 5.8+).
    Ring,
    /// A perf event array, one buffer per CPU.
    Perf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Ring,
    Perf,
}

impl Transport {
    /// The name in status lines and `rsttrace check`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Ring => "ring",
            Transport::Perf => "perf",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Ring => "BPF ring buffer",
            Transport::Perf => "perf event array",
        })
    }
}

/// Whether this kernel can create a BPF_MAP_TYPE_RINGBUF map; Err when the
/// probe itself failed (no privileges, seccomp).
pub(crate) fn probe_ring_buffer() -> Result<bool, String> {
    aya::sys::is_map_supported(aya::maps::MapType::RingBuf).map_err(|e| e.to_string())
}

/// The transport for `mode` on a kernel whose ring buffer probe said `ring`.
/// A failed probe is taken as a ring buffer: the probe fails only where
/// loading fails too, and that error says why.
pub(crate) fn choose(mode: TransportMode, ring: &Result<bool, String>) -> Result<Transport> {
    match (mode, ring) {
        (TransportMode::Perf, _) => Ok(Transport::Perf),
        (TransportMode::Ring, Ok(false)) => bail!(
            "this kernel has no BPF ring buffer (it arrived in Linux 5.8): \
             use --transport perf (or auto, which picks it here)"
        ),
        (TransportMode::Ring, _) => Ok(Transport::Ring),
        (TransportMode::Auto, Ok(false)) => Ok(Transport::Perf),
        (TransportMode::Auto, _) => Ok(Transport::Ring),
    }
}

/// Bytes of perf buffer per CPU for a `--ring-buffer` of `total` bytes:
/// the total shared out, rounded down to a power-of-two number of pages
/// (what perf_event mmap accepts), at least one page.
pub(crate) fn perf_bytes_per_cpu(total: u32, cpus: usize, page: usize) -> usize {
    let share = total as usize / cpus.max(1);
    if share <= page {
        return page;
    }
    1 << (usize::BITS - 1 - share.leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_the_ring_buffer_where_the_kernel_has_it() {
        assert_eq!(
            choose(TransportMode::Auto, &Ok(true)).unwrap(),
            Transport::Ring
        );
        assert_eq!(
            choose(TransportMode::Auto, &Ok(false)).unwrap(),
            Transport::Perf
        );
        assert_eq!(
            choose(TransportMode::Auto, &Err("EPERM".into())).unwrap(),
            Transport::Ring
        );
    }

    #[test]
    fn forced_transports() {
        assert_eq!(
            choose(TransportMode::Perf, &Ok(true)).unwrap(),
            Transport::Perf
        );
        assert_eq!(
            choose(TransportMode::Ring, &Ok(true)).unwrap(),
            Transport::Ring
        );
        let e = choose(TransportMode::Ring, &Ok(false)).unwrap_err();
        assert!(e.to_string().contains("--transport perf"), "{e}");
    }

    #[test]
    fn perf_buffers_share_the_total() {
        let page = 4096;
        assert_eq!(perf_bytes_per_cpu(4 << 20, 2, page), 2 << 20);
        assert_eq!(perf_bytes_per_cpu(4 << 20, 3, page), 1 << 20);
        assert_eq!(perf_bytes_per_cpu(4096, 2, page), page);
        assert_eq!(perf_bytes_per_cpu(1 << 16, 0, page), 1 << 16);
    }
}
