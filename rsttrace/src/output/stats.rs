//! What a run saw and lost, counted once: the pipeline updates one `Stats`
//! per event (and per batch for the kernel's counters), and both the
//! end-of-run summary (`summary.rs`) and the Prometheus metrics
//! (`metrics.rs`) render it, so the two cannot count differently.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::collect::counters::KernelDrops;
use crate::model::cause::CauseId;
use crate::model::event::Direction;
use crate::record::Classified;

/// The tracer's `Stats`, which the metrics endpoint reads while it runs.
pub(crate) type Shared = Arc<Mutex<Stats>>;

/// A panic while handling an event stops tracing in order; the counts
/// stay readable for the summary.
pub(crate) fn lock(stats: &Shared) -> MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    /// Per cause, direction and kernel reason (`None`: no reason): closed
    /// sets and the kernel's enum, so bounded.
    resets: BTreeMap<(CauseId, Direction, Option<Arc<str>>), u64>,
    total: u64,
    /// Per local port (65536 at most: bounded by the domain).
    ports: HashMap<u16, u64>,
    /// Per owning process (pid, comm), up to `MAX_OWNERS`; the rest are
    /// counted in `owners_other`.
    owners: HashMap<(u32, String), u64>,
    owners_other: u64,
    /// Events the kernel could not put in the ring buffer.
    pub(crate) lost: u64,
    /// Events the in-kernel filters dropped.
    pub(crate) filtered: u64,
    /// Events the userspace filters (--cause, --direction) dropped.
    pub(crate) filtered_userspace: u64,
    /// Kernel memory reads that failed (facts may be incomplete).
    pub(crate) read_errors: u64,
    /// Records userspace could not decode.
    pub(crate) decode_errors: u64,
    /// Events that could not be written to an output.
    pub(crate) write_errors: u64,
    /// What else the kernel side could not capture or remember.
    pub(crate) kernel_drops: KernelDrops,
    /// Error reports merged into the RST reported just before them.
    pub(crate) aborts_merged: u64,
    /// `--stack` only.
    pub(crate) stacks: Option<StackSummary>,
    /// `--otlp` only: log records the collector did not get.
    pub(crate) otlp_dropped: Option<u64>,
}

/// What `--stack` could not show; never fatal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StackSummary {
    /// Stacks the kernel could not store (stack map full, hash collision).
    pub(crate) not_captured: u64,
    /// Stack ids no longer in the map when read.
    pub(crate) missing: u64,
    /// Frames shown as a file offset or raw address.
    pub(crate) unsymbolized: u64,
}

/// Distinct owners counted by name; a fork storm cannot grow the table.
pub(crate) const MAX_OWNERS: usize = 4096;

impl Stats {
    /// One event written to the outputs.
    pub(crate) fn add(&mut self, rec: &Classified) {
        let e = &rec.event;
        let reason = e.kernel_reason.as_ref().map(|(_, name)| name.clone());
        // An empty name would be a second `kernel_reason=""` series.
        let reason = reason.filter(|name| !name.is_empty());
        *self
            .resets
            .entry((rec.cause.id, e.direction, reason))
            .or_default() += 1;
        self.total += 1;
        *self.ports.entry(e.local.port()).or_default() += 1;
        if let Some(p) = &e.process {
            let key = (p.pid, p.comm.clone());
            let full = self.owners.len() >= MAX_OWNERS;
            match self.owners.get_mut(&key) {
                Some(n) => *n += 1,
                None if full => self.owners_other += 1,
                None => {
                    self.owners.insert(key, 1);
                }
            }
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Counts per cause, direction and kernel reason (`""` for none).
    pub(crate) fn resets(&self) -> impl Iterator<Item = (CauseId, Direction, &str, u64)> {
        self.resets
            .iter()
            .map(|((c, d, r), n)| (*c, *d, r.as_deref().unwrap_or(""), *n))
    }

    /// Counts per cause and direction, over all kernel reasons.
    pub(crate) fn by_cause(&self) -> BTreeMap<(CauseId, Direction), u64> {
        let mut counts = BTreeMap::new();
        for (c, d, _, n) in self.resets() {
            *counts.entry((c, d)).or_default() += n;
        }
        counts
    }

    pub(crate) fn ports(&self) -> &HashMap<u16, u64> {
        &self.ports
    }

    /// Counts per owner, and of the owners past `MAX_OWNERS`.
    pub(crate) fn owners(&self) -> (&HashMap<(u32, String), u64>, u64) {
        (&self.owners, self.owners_other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fixtures::record;

    #[test]
    fn the_summary_adds_up_the_kernel_reasons() {
        let mut stats = Stats::default();
        let mut rec = record();
        stats.add(&rec);
        rec.event.kernel_reason = None;
        stats.add(&rec);
        assert_eq!(stats.resets().count(), 2);
        assert_eq!(
            stats.by_cause(),
            BTreeMap::from([((CauseId::CloseUnreadData, Direction::Sent), 2)])
        );
    }
}
