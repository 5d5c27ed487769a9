//! Reads records from the kernel: the BPF ring buffer, or the perf
//! transport's per-CPU buffers (`perfbuf.rs`), through one interface.
//!
//! The kernel wakes the reader only when a buffer passes a fill threshold
//! (a wake-up per event would cost more than the tracing itself under a
//! storm), so the reader also drains on a timer: that bounds the latency of
//! a lone RST to one drain interval. With `--stack`, an event with a user
//! stack wakes it at once (`PACED_GAP`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::pin::Pin;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::{Interval, MissedTickBehavior, Sleep};

use crate::collect::counters::Counters;
use crate::collect::perfbuf::PerfBuffers;
use crate::collect::ringfill::RingFill;

/// Where the records wait.
pub(crate) enum Buffers {
    Ring(RingBuf<MapData>),
    Perf(PerfBuffers),
}

impl AsRawFd for Buffers {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Buffers::Ring(ring) => ring.as_raw_fd(),
            Buffers::Perf(perf) => perf.as_raw_fd(),
        }
    }
}

impl Buffers {
    /// Hands up to `limit` records to `each`; says whether all was read.
    fn drain(&mut self, mut each: impl FnMut(&[u8]), limit: usize) -> (usize, bool) {
        match self {
            Buffers::Ring(ring) => {
                let mut n = 0;
                while n < limit {
                    let Some(item) = ring.next() else {
                        return (n, true);
                    };
                    each(&item);
                    n += 1;
                }
                (n, false)
            }
            Buffers::Perf(perf) => perf.drain(each, limit),
        }
    }
}

/// `--stack`'s pace: an event with a user stack wakes the reader, at most
/// this often per CPU (`Tuning::wakeup_gap_ns`), and the reader drains
/// again this soon after a batch that had one (`Source::follow_up`), for
/// those that came meanwhile unannounced.
pub(crate) const PACED_GAP: Duration = Duration::from_millis(1);

pub(crate) struct Source {
    buffers: AsyncFd<Buffers>,
    drain: Interval,
    /// Paced: when to drain again (`follow_up`).
    follow_up: Option<Pin<Box<Sleep>>>,
    paced: bool,
}

/// Records handled per wake-up before the caller gets control back: under a
/// storm the producer refills the buffer as fast as it drains, and an
/// unbounded drain would never let Ctrl-C, timers or flushes run.
const BATCH_LIMIT: usize = 1024;

impl Source {
    /// `paced`: events with a user stack wake the reader, paced (`PACED_GAP`).
    pub(crate) fn new(buffers: Buffers, drain_every: Duration, paced: bool) -> io::Result<Source> {
        // SAFETY: the buffers own their fds and keep them open for as long
        // as the AsyncFd (which owns the buffers) lives.
        let buffers = unsafe { AsyncFd::register_with_interest(buffers, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let mut drain = tokio::time::interval(drain_every);
        drain.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Source {
            buffers,
            drain,
            follow_up: None,
            paced,
        })
    }

    /// Waits for a wake-up or the drain timer, then hands every waiting record
    /// to `each`. Returns how many records were read.
    pub(crate) async fn next_batch(&mut self, each: impl FnMut(&[u8])) -> io::Result<usize> {
        let pending = &mut self.follow_up;
        let follow_up = async move {
            match pending.as_mut() {
                Some(sleep) => sleep.await,
                None => std::future::pending().await,
            }
        };
        let n = tokio::select! {
            guard = self.buffers.readable_mut() => {
                let mut guard = guard?;
                let (n, empty) = guard.get_inner_mut().drain(each, BATCH_LIMIT);
                // Only after the buffer was seen empty (tokio#6302).
                if empty {
                    guard.clear_ready();
                }
                n
            }
            _ = self.drain.tick() => self.buffers.get_mut().drain(each, BATCH_LIMIT).0,
            () = follow_up => self.buffers.get_mut().drain(each, BATCH_LIMIT).0,
        };
        self.follow_up = None;
        Ok(n)
    }

    /// The batch just read had an event with a user stack: paced, drain
    /// again within `PACED_GAP`. The kernel woke the reader for the first
    /// such event and stays silent for the others of the gap; a reader
    /// that waited for the threshold would find their processes gone.
    pub(crate) fn follow_up(&mut self) {
        if self.paced {
            self.follow_up = Some(Box::pin(tokio::time::sleep(PACED_GAP)));
        }
    }

    /// A gauge of the ring buffer's fill (`capacity`: its size in bytes);
    /// None for the perf transport, or when its pages cannot be mapped.
    pub(crate) fn fill_gauge(&self, capacity: u64) -> Option<RingFill> {
        match self.buffers.get_ref() {
            Buffers::Ring(ring) => RingFill::new(ring.as_fd(), capacity).ok(),
            Buffers::Perf(_) => None,
        }
    }

    /// Reads what is waiting, without blocking (used at exit). Bounded by
    /// `limit` so that a storm still running cannot keep rsttrace from exiting.
    pub(crate) fn drain_now(&mut self, each: impl FnMut(&[u8]), limit: usize) -> usize {
        self.buffers.get_mut().drain(each, limit).0
    }

    /// The kernel's counters with this transport's losses in them. The perf
    /// transport's losses are seen twice: by the programs, when the output
    /// helper reports a failure (where the kernel passes perf's error on),
    /// and here, in the kernel's lost-samples records
    /// (which do not say whether an event or a packet was lost). Both count
    /// the same samples, the records later; where the helper does not
    /// report the failure only the records do. So the larger total is
    /// exact, and what the records add beyond the programs' count is events.
    pub(crate) fn with_losses(&self, counters: Counters) -> Counters {
        match self.buffers.get_ref() {
            Buffers::Perf(perf) => with_perf_losses(counters, perf.lost()),
            Buffers::Ring(_) => counters,
        }
    }
}

/// `counters` with the losses of `lost_records` the programs did not count.
fn with_perf_losses(mut counters: Counters, lost_records: u64) -> Counters {
    let counted = counters.lost + counters.drops.packets_lost;
    counters.lost += lost_records.saturating_sub(counted);
    counters
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(lost: u64, packets_lost: u64) -> Counters {
        let mut c = Counters {
            lost,
            ..Counters::default()
        };
        c.drops.packets_lost = packets_lost;
        c
    }

    #[test]
    fn perf_losses_are_counted_once() {
        // The helper reported every failure: the records add nothing,
        // whether they arrived yet or not.
        assert_eq!(with_perf_losses(counted(7, 3), 10).lost, 7);
        assert_eq!(with_perf_losses(counted(7, 3), 4).lost, 7);
        // It reported none: the records are the losses, counted as events.
        assert_eq!(with_perf_losses(counted(0, 0), 10).lost, 10);
        assert_eq!(with_perf_losses(counted(0, 0), 10).drops.packets_lost, 0);
    }
}
