//! Reads records from the kernel's ring buffer.
//!
//! The kernel programs wake the reader only when the buffer passes a fill
//! threshold (a wake-up per event would cost more than the tracing itself
//! under a storm), so the reader also drains on a timer: that bounds the
//! latency of a lone RST to one drain interval.

use std::io;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::{Interval, MissedTickBehavior};

pub struct RingSource {
    ring: AsyncFd<RingBuf<MapData>>,
    drain: Interval,
}

/// Records handled per wake-up before the caller gets control back: under a
/// storm the producer refills the buffer as fast as it drains, and an
/// unbounded drain would never let Ctrl-C, timers or flushes run.
const BATCH_LIMIT: usize = 1024;

impl RingSource {
    pub fn new(ring: RingBuf<MapData>, drain_every: Duration) -> io::Result<RingSource> {
        // SAFETY: the RingBuf owns its map fd and keeps it open for as long
        // as the AsyncFd (which owns the RingBuf) lives.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let mut drain = tokio::time::interval(drain_every);
        drain.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(RingSource { ring, drain })
    }

    /// Waits for a wake-up or the drain timer, then hands every waiting record
    /// to `each`. Returns how many records were read.
    pub async fn next_batch(&mut self, each: impl FnMut(&[u8])) -> io::Result<usize> {
        tokio::select! {
            guard = self.ring.readable_mut() => {
                let mut guard = guard?;
                let (n, empty) = drain(guard.get_inner_mut(), each, BATCH_LIMIT);
                // Only after the buffer was seen empty (tokio#6302).
                if empty {
                    guard.clear_ready();
                }
                Ok(n)
            }
            _ = self.drain.tick() => Ok(drain(self.ring.get_mut(), each, BATCH_LIMIT).0),
        }
    }

    /// Reads what is waiting, without blocking (used at exit). Bounded by
    /// `limit` so that a storm still running cannot keep rsttrace from exiting.
    pub fn drain_now(&mut self, each: impl FnMut(&[u8]), limit: usize) -> usize {
        drain(self.ring.get_mut(), each, limit).0
    }
}

/// Hands up to `limit` records to `each`; says whether the buffer was seen empty.
fn drain(ring: &mut RingBuf<MapData>, mut each: impl FnMut(&[u8]), limit: usize) -> (usize, bool) {
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
