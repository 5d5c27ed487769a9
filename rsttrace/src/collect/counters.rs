//! The kernel side's counters: what it delivered, filtered, and could not
//! deliver or remember. Read from the per-CPU `COUNTERS` map, the LRU maps
//! and the kernel's own per-program statistics.

use std::cell::Cell;
use std::collections::HashSet;
use std::hash::Hash;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use aya::Ebpf;
use aya::Pod;
use aya::maps::{HashMap, MapData, PerCpuArray};
use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
use rsttrace_ebpf::abi::{self, Owner, counter};

/// Kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) lost: u64,
    pub(crate) filtered: u64,
    pub(crate) read_errors: u64,
    /// `--stack`: stacks the kernel could not store (map full, collision).
    pub(crate) stack_errors: u64,
    /// `--stack`: events sent without stacks (`--stack-budget` used up).
    pub(crate) stacks_skipped: u64,
    /// Error reports merged into the RST reported just before (not a loss).
    pub(crate) aborts_merged: u64,
    pub(crate) drops: KernelDrops,
}

/// What the kernel side could not capture or remember, besides lost events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KernelDrops {
    /// pcapng: RST segments not queued (their events get synthesised headers).
    pub(crate) packets_lost: u64,
    /// Tracepoint record fields that could not be read (that hook run saw nothing).
    pub(crate) context_errors: u64,
    /// Socket owners pushed out of the full `OWNERS` LRU map.
    pub(crate) owners_evicted: u64,
    /// 4-tuple closes pushed out of `HISTORY` by newer closes in their set.
    pub(crate) history_evicted: u64,
    /// Program runs the kernel skipped because another was running on the
    /// CPU (`bpf_prog_info.recursion_misses`, summed over our programs).
    pub(crate) recursion_misses: u64,
}

impl KernelDrops {
    /// (key in metrics labels and JSON gap records, summary label, count).
    pub(crate) fn kinds(&self) -> [(&'static str, &'static str, u64); 5] {
        [
            (
                "packets_lost",
                "RST segments not captured",
                self.packets_lost,
            ),
            (
                "context_errors",
                "tracepoint reads failed",
                self.context_errors,
            ),
            (
                "owners_evicted",
                "owners forgotten (map full)",
                self.owners_evicted,
            ),
            (
                "history_evicted",
                "closes forgotten (map full)",
                self.history_evicted,
            ),
            (
                "recursion_misses",
                "hook runs skipped (nested)",
                self.recursion_misses,
            ),
        ]
    }

    /// What was added since `earlier`.
    pub(crate) fn since(&self, earlier: &KernelDrops) -> KernelDrops {
        KernelDrops {
            packets_lost: self.packets_lost.saturating_sub(earlier.packets_lost),
            context_errors: self.context_errors.saturating_sub(earlier.context_errors),
            owners_evicted: self.owners_evicted.saturating_sub(earlier.owners_evicted),
            history_evicted: self.history_evicted.saturating_sub(earlier.history_evicted),
            recursion_misses: self
                .recursion_misses
                .saturating_sub(earlier.recursion_misses),
        }
    }

    /// Sets the count of the kind named `key` (a gap record's key); false
    /// for a key that names no kind.
    pub(crate) fn set(&mut self, key: &str, n: u64) -> bool {
        let slot = match key {
            "packets_lost" => &mut self.packets_lost,
            "context_errors" => &mut self.context_errors,
            "owners_evicted" => &mut self.owners_evicted,
            "history_evicted" => &mut self.history_evicted,
            "recursion_misses" => &mut self.recursion_misses,
            _ => return false,
        };
        *slot = n;
        true
    }

    pub(crate) fn any(&self) -> bool {
        self.kinds().iter().any(|(_, _, n)| *n > 0)
    }
}

/// Counting the live keys of a full LRU map takes one syscall per key
/// (~80k at most), the programs' statistics one per program: done at most
/// this often, and once more at exit.
const RECOUNT_EVERY: Duration = Duration::from_secs(5);

/// The counters take a syscall each, and the tracer asks after every
/// batch: with `--stack` (a wake-up per event with a user stack) after
/// nearly every such event. A read
/// this recent stands. Well under the correlator's hold (`correlate::HOLD`),
/// so a loss is still noted before the received events that waited
/// through it are labelled.
const REREAD_AFTER: Duration = Duration::from_millis(10);

/// Reads the counters; remembers the last eviction counts between recounts.
#[derive(Default)]
pub(crate) struct CounterReader {
    last: Cell<Option<(Instant, Counters)>>,
    owners: Cell<Option<(Instant, u64)>>,
    recursion: Cell<Option<(Instant, u64)>>,
}

impl CounterReader {
    /// `exact`: recount the LRU maps now (at exit) instead of reusing a
    /// count up to `RECOUNT_EVERY` old.
    pub(crate) fn read(&self, ebpf: &Ebpf, exact: bool) -> Result<Counters> {
        if !exact
            && let Some((at, counters)) = self.last.get()
            && at.elapsed() < REREAD_AFTER
        {
            return Ok(counters);
        }
        let counters = self.read_now(ebpf, exact)?;
        self.last.set(Some((Instant::now(), counters)));
        Ok(counters)
    }

    fn read_now(&self, ebpf: &Ebpf, exact: bool) -> Result<Counters> {
        let map = ebpf
            .map(abi::COUNTERS_MAP)
            .ok_or_else(|| anyhow!("eBPF object has no {} map", abi::COUNTERS_MAP))?;
        let array = PerCpuArray::<_, u64>::try_from(map)?;
        let sum = |index: u32| -> Result<u64> { Ok(array.get(&index, 0)?.iter().copied().sum()) };
        let owners_kept = sum(counter::OWNERS_ADDED)?;
        Ok(Counters {
            lost: sum(counter::LOST)?,
            filtered: sum(counter::FILTERED)?,
            read_errors: sum(counter::READ_ERRORS)?,
            stack_errors: sum(counter::STACK_ERRORS)?,
            stacks_skipped: sum(counter::STACKS_SKIPPED)?,
            aborts_merged: sum(counter::ABORTS_MERGED)?,
            drops: KernelDrops {
                packets_lost: sum(counter::PACKETS_LOST)?,
                context_errors: sum(counter::CONTEXT_ERRORS)?,
                owners_evicted: evicted::<u64, Owner>(
                    ebpf,
                    abi::OWNERS_MAP,
                    owners_kept,
                    abi::MAX_OWNERS,
                    &self.owners,
                    exact,
                ),
                history_evicted: sum(counter::HISTORY_EVICTED)?,
                recursion_misses: recent(&self.recursion, exact, || recursion_misses(ebpf)),
            },
        })
    }
}

/// Keys an LRU map lost: those added and not removed, minus those still
/// there. The kernel's LRU can evict a little before the map is full (free
/// elements wait in per-CPU lists), never while it is half empty: below
/// that, nothing is counted.
fn evicted<K: Pod + Eq + Hash, V: Pod>(
    ebpf: &Ebpf,
    name: &str,
    kept: u64,
    capacity: u32,
    last: &Cell<Option<(Instant, u64)>>,
    exact: bool,
) -> u64 {
    if kept <= u64::from(capacity / 2) {
        return 0;
    }
    recent(last, exact, || {
        ebpf.map(name)
            .and_then(|map| HashMap::<&MapData, K, V>::try_from(map).ok())
            .map_or(0, |map| {
                kept.saturating_sub(live_keys(&map).min(u64::from(capacity)))
            })
    })
}

/// `count()`, or its value from less than `RECOUNT_EVERY` ago.
fn recent(last: &Cell<Option<(Instant, u64)>>, exact: bool, count: impl FnOnce() -> u64) -> u64 {
    if !exact
        && let Some((at, n)) = last.get()
        && at.elapsed() < RECOUNT_EVERY
    {
        return n;
    }
    let n = count();
    last.set(Some((Instant::now(), n)));
    n
}

/// Distinct keys: a walk whose current key is evicted meanwhile starts over
/// from the first key (the kernel's get_next_key), so on a busy host the
/// same keys come back.
fn live_keys<K: Pod + Eq + Hash, V: Pod>(map: &HashMap<&MapData, K, V>) -> u64 {
    map.keys()
        .filter_map(Result::ok)
        .collect::<HashSet<K>>()
        .len() as u64
}

/// `recursion_misses` of every loaded program (Linux 5.12+; 0 before).
fn recursion_misses(ebpf: &Ebpf) -> u64 {
    ebpf.programs()
        .filter_map(|(_, program)| program.fd().ok())
        .map(|fd| prog_info(fd.as_fd().as_raw_fd()).map_or(0, |info| info.recursion_misses))
        .sum()
}

/// `BPF_OBJ_GET_INFO_BY_FD`: aya 0.14's `ProgramInfo` keeps the counters
/// private. The kernel fills the prefix it knows and zeroes nothing else.
fn prog_info(fd: i32) -> Option<bpf_prog_info> {
    // SAFETY: plain-old-data kernel structs, all-zero is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: `attr` describes a buffer of `info_len` bytes that lives
    // through the call.
    let rc = unsafe {
        attr.info.bpf_fd = fd as u32;
        attr.info.info_len = size_of::<bpf_prog_info>() as u32;
        attr.info.info = std::ptr::addr_of_mut!(info) as u64;
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_int,
            std::ptr::addr_of_mut!(attr),
            size_of::<bpf_attr>() as u32,
        )
    };
    (rc == 0).then_some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_since_an_earlier_reading() {
        let earlier = KernelDrops {
            packets_lost: 2,
            owners_evicted: 5,
            ..KernelDrops::default()
        };
        let now = KernelDrops {
            packets_lost: 3,
            owners_evicted: 5,
            recursion_misses: 1,
            ..KernelDrops::default()
        };
        let delta = now.since(&earlier);
        assert_eq!(delta.packets_lost, 1);
        assert_eq!(delta.owners_evicted, 0);
        assert_eq!(delta.recursion_misses, 1);
        assert!(delta.any());
        assert!(!now.since(&now).any());
    }

    #[test]
    fn every_drop_kind_has_a_distinct_key() {
        let drops = KernelDrops {
            packets_lost: 1,
            context_errors: 2,
            owners_evicted: 3,
            history_evicted: 4,
            recursion_misses: 5,
        };
        let kinds = drops.kinds();
        let mut keys: Vec<_> = kinds.iter().map(|(k, _, _)| *k).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), kinds.len());
        assert_eq!(kinds.iter().map(|(_, _, n)| n).sum::<u64>(), 15);
    }
}
