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
                let n = drain(guard.get_inner_mut(), each);
                // Only after the buffer was seen empty (tokio#6302).
                guard.clear_ready();
                Ok(n)
            }
            _ = self.drain.tick() => Ok(self.drain_now(each)),
        }
    }

    /// Reads everything waiting, without blocking (used at exit).
    pub fn drain_now(&mut self, each: impl FnMut(&[u8])) -> usize {
        drain(self.ring.get_mut(), each)
    }
}

fn drain(ring: &mut RingBuf<MapData>, mut each: impl FnMut(&[u8])) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        each(&item);
        n += 1;
    }
    n
}
