//! Kernel timestamps (CLOCK_MONOTONIC ns) → wall-clock time.

use std::time::{Duration, SystemTime};

/// The offset between CLOCK_REALTIME and CLOCK_MONOTONIC, sampled once at
/// start: events keep a consistent order even if the wall clock steps later.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BootClock {
    realtime_minus_mono_ns: i128,
}

impl BootClock {
    pub(crate) fn sample() -> BootClock {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        BootClock {
            realtime_minus_mono_ns: real - mono,
        }
    }

    /// For tests: a clock whose monotonic zero is `epoch_ns` after 1970.
    #[cfg(test)]
    pub(crate) fn with_offset(realtime_minus_mono_ns: i128) -> BootClock {
        BootClock {
            realtime_minus_mono_ns,
        }
    }

    pub(crate) fn to_wall(self, mono_ns: u64) -> SystemTime {
        let ns = (mono_ns as i128 + self.realtime_minus_mono_ns).max(0) as u128;
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns.min(u64::MAX as u128) as u64)
    }

    /// Current CLOCK_MONOTONIC in ns, in the kernel's `bpf_ktime_get_ns` terms.
    #[cfg(test)]
    pub(crate) fn mono_now() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC) as u64
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_with_the_sampled_offset() {
        let clock = BootClock::with_offset(1_000_000_000_000_000_000);
        let wall = clock.to_wall(5);
        assert_eq!(
            wall.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::from_nanos(1_000_000_000_000_000_005)
        );
    }

    #[test]
    fn live_clock_is_close_to_now() {
        let clock = BootClock::sample();
        let wall = clock.to_wall(BootClock::mono_now());
        let skew = SystemTime::now()
            .duration_since(wall)
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(1), "skew {skew:?}");
    }
}
