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

/// A kernel reason's name (`None`: no reason) and its count.
type ReasonCount = (Option<Arc<str>>, u64);

/// The tracer's `Stats`, which the metrics endpoint reads while it runs.
pub(crate) type Shared = Arc<Mutex<Stats>>;

/// A panic while handling an event stops tracing in order; the counts
/// stay readable for the summary.
pub(crate) fn lock(stats: &Shared) -> MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    /// Per cause and direction, the counts per kernel reason (`None`: no
    /// reason): closed sets and the kernel's enum, so bounded, and the
    /// reasons of one cause few. Indexed by `reset_slot` (empty until the
    /// first event): no hashing per event, and counting allocates nothing
    /// once a reason was seen.
    resets: Vec<Vec<ReasonCount>>,
    total: u64,
    /// Per local port, indexed by port (empty until the first event). A
    /// storm's ephemeral ports would make a hash map of ~30k entries, as
    /// large and missing the cache on every event; only the pages of
    /// ports seen are resident.
    ports: Box<[u64]>,
    /// Per owning process, by pid then comm, up to `MAX_OWNERS` (pid, comm)
    /// pairs; the rest are counted in `owners_other`.
    owners: HashMap<u32, Vec<(Box<str>, u64)>>,
    owners_len: usize,
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
    /// Events sent without stacks: their CPU had used its `--stack-budget`.
    pub(crate) skipped: u64,
    /// Stack ids no longer in the map when read.
    pub(crate) missing: u64,
    /// Frames shown as a file offset or raw address.
    pub(crate) unsymbolized: u64,
}

const DIRECTIONS: [Direction; 3] = [Direction::Sent, Direction::Received, Direction::Abort];

/// Where a cause and direction are counted in `Stats::resets`.
fn reset_slot(cause: CauseId, direction: Direction) -> usize {
    let d = match direction {
        Direction::Sent => 0,
        Direction::Received => 1,
        Direction::Abort => 2,
    };
    debug_assert_eq!(DIRECTIONS[d], direction);
    cause as usize * DIRECTIONS.len() + d
}

/// Distinct owners counted by name; a fork storm cannot grow the table.
pub(crate) const MAX_OWNERS: usize = 4096;

impl Stats {
    /// One event written to the outputs.
    pub(crate) fn add(&mut self, rec: &Classified) {
        let e = &rec.event;
        // An empty name would be a second `kernel_reason=""` series.
        let reason = e.reason().filter(|name| !name.is_empty());
        if self.resets.is_empty() {
            self.resets = vec![Vec::new(); CauseId::ALL.len() * DIRECTIONS.len()];
        }
        let reasons = &mut self.resets[reset_slot(rec.cause.id, e.direction)];
        match reasons.iter_mut().find(|(r, _)| r.as_deref() == reason) {
            Some((_, n)) => *n += 1,
            None => {
                let name = e.kernel_reason.as_ref().map(|(_, name)| name.clone());
                reasons.push((name.filter(|name| !name.is_empty()), 1));
            }
        }
        self.total += 1;
        if self.ports.is_empty() {
            self.ports = vec![0; 1 << 16].into_boxed_slice();
        }
        self.ports[usize::from(e.local.port())] += 1;
        if let Some(p) = &e.process {
            let seen = self
                .owners
                .get_mut(&p.pid)
                .and_then(|comms| comms.iter_mut().find(|(c, _)| **c == *p.comm));
            match seen {
                Some((_, n)) => *n += 1,
                None if self.owners_len >= MAX_OWNERS => self.owners_other += 1,
                None => {
                    let comms = self.owners.entry(p.pid).or_default();
                    comms.push((p.comm.as_str().into(), 1));
                    self.owners_len += 1;
                }
            }
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Counts per cause, direction and kernel reason (`""` for none), in
    /// no particular order.
    pub(crate) fn resets(&self) -> impl Iterator<Item = (CauseId, Direction, &str, u64)> {
        self.resets.iter().enumerate().flat_map(|(slot, reasons)| {
            let (c, d) = (
                CauseId::ALL[slot / DIRECTIONS.len()],
                DIRECTIONS[slot % DIRECTIONS.len()],
            );
            reasons
                .iter()
                .map(move |(r, n)| (c, d, r.as_deref().unwrap_or(""), *n))
        })
    }

    /// Counts per cause and direction, over all kernel reasons.
    pub(crate) fn by_cause(&self) -> BTreeMap<(CauseId, Direction), u64> {
        let mut counts = BTreeMap::new();
        for (c, d, _, n) in self.resets() {
            *counts.entry((c, d)).or_default() += n;
        }
        counts
    }

    /// Counts per local port that saw events, by port.
    pub(crate) fn ports(&self) -> impl Iterator<Item = (u16, u64)> {
        (0..=u16::MAX)
            .zip(&self.ports)
            .filter(|(_, n)| **n > 0)
            .map(|(port, n)| (port, *n))
    }

    /// Counts per owner (pid, comm, count) in no particular order, and of
    /// the owners past `MAX_OWNERS`.
    pub(crate) fn owners(&self) -> (impl Iterator<Item = (u32, &str, u64)>, u64) {
        let owners = self
            .owners
            .iter()
            .flat_map(|(&pid, comms)| comms.iter().map(move |(comm, n)| (pid, &**comm, *n)));
        (owners, self.owners_other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fixtures::record;

    /// Every cause in every direction is counted under its own name.
    #[test]
    fn each_cause_and_direction_counts_apart() {
        let mut stats = Stats::default();
        let mut rec = record();
        for &cause in CauseId::ALL {
            for direction in DIRECTIONS {
                rec.cause.id = cause;
                rec.event.direction = direction;
                stats.add(&rec);
            }
        }
        let counts = stats.by_cause();
        assert_eq!(counts.len(), CauseId::ALL.len() * DIRECTIONS.len());
        assert!(counts.values().all(|&n| n == 1));
    }

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

    #[test]
    fn reasons_count_by_name_and_owners_by_pid_and_comm() {
        let mut stats = Stats::default();
        let mut rec = record();
        stats.add(&rec);
        // The same name from another table (a replayed file) is the same series.
        rec.event.kernel_reason = Some((11, "TCP_ABORT_ON_CLOSE".into()));
        stats.add(&rec);
        // An empty name is no reason.
        rec.event.kernel_reason = Some((0, "".into()));
        stats.add(&rec);
        rec.event.kernel_reason = None;
        stats.add(&rec);
        let mut resets: Vec<_> = stats.resets().collect();
        resets.sort_unstable();
        let cause = (CauseId::CloseUnreadData, Direction::Sent);
        assert_eq!(
            resets,
            [
                (cause.0, cause.1, "", 2),
                (cause.0, cause.1, "TCP_ABORT_ON_CLOSE", 2)
            ]
        );
        let process = rec.event.process.as_mut().unwrap();
        let pid = process.pid;
        process.comm = "renamed".into();
        stats.add(&rec);
        let mut owners: Vec<_> = stats.owners().0.collect();
        owners.sort_unstable();
        let comm = record().event.process.unwrap().comm;
        assert_eq!(owners, [(pid, comm.as_str(), 4), (pid, "renamed", 1)]);
        assert_eq!(stats.total(), 5);
        assert_eq!(stats.ports().collect::<Vec<_>>(), [(8080, 5)]);
    }
}
