//! The kernel's tick rate (CONFIG_HZ), to turn jiffies into time. Not in
//! BTF nor always in /boot: measured from /proc/timer_list, which prints
//! CLOCK_MONOTONIC (`now at N nsecs`) and `jiffies: N` in one snapshot.

use std::time::Duration;

/// The tick rates Linux is configured with.
const CANDIDATES: [u32; 4] = [100, 250, 300, 1000];

/// Samples /proc/timer_list twice, `gap` apart; None when it cannot be read
/// or the rate fits no known configuration.
pub(crate) fn measure(gap: Duration) -> Option<u32> {
    let first = sample(&std::fs::read_to_string("/proc/timer_list").ok()?)?;
    std::thread::sleep(gap);
    let second = sample(&std::fs::read_to_string("/proc/timer_list").ok()?)?;
    rate(first, second)
}

/// (`now at` nanoseconds, jiffies) from one /proc/timer_list snapshot.
pub(crate) fn sample(text: &str) -> Option<(u64, u64)> {
    let now = text.lines().find_map(|l| {
        l.strip_prefix("now at ")?
            .strip_suffix(" nsecs")?
            .trim()
            .parse()
            .ok()
    })?;
    let jiffies = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("jiffies: ")?.trim().parse().ok())?;
    Some((now, jiffies))
}

/// The configured rate nearest to the measured one, within 15%.
pub(crate) fn rate((t0, j0): (u64, u64), (t1, j1): (u64, u64)) -> Option<u32> {
    let dt = t1.checked_sub(t0)? as f64 / 1e9;
    let dj = j1.checked_sub(j0)? as f64;
    if dt <= 0.0 {
        return None;
    }
    let measured = dj / dt;
    CANDIDATES
        .into_iter()
        .min_by(|a, b| {
            (f64::from(*a) - measured)
                .abs()
                .total_cmp(&(f64::from(*b) - measured).abs())
        })
        .filter(|hz| (f64::from(*hz) - measured).abs() <= 0.15 * f64::from(*hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: &str = "Timer List Version: v0.9\nHRTIMER_MAX_CLOCK_BASES: 8\n\
        now at 1525182014554 nsecs\n\ncpu: 0\n clock 0:\n\njiffies: 4295273528\n";

    #[test]
    fn parses_a_snapshot() {
        assert_eq!(sample(SNAPSHOT), Some((1_525_182_014_554, 4_295_273_528)));
        assert_eq!(sample("no clock here"), None);
    }

    #[test]
    fn snaps_to_a_configured_rate() {
        let t = 1_000_000_000_000;
        // 100 ms: 25 ticks at HZ=250, one tick of jitter either way.
        for ticks in [24, 25, 26] {
            assert_eq!(rate((t, 0), (t + 100_000_000, ticks)), Some(250));
        }
        assert_eq!(rate((t, 0), (t + 100_000_000, 100)), Some(1000));
        assert_eq!(rate((t, 0), (t + 100_000_000, 30)), Some(300));
        assert_eq!(rate((t, 0), (t + 100_000_000, 10)), Some(100));
        // Nothing like a tick rate, or time going backwards.
        assert_eq!(rate((t, 0), (t + 100_000_000, 60)), None);
        assert_eq!(rate((t, 0), (t - 1, 5)), None);
    }

    #[test]
    fn measures_this_kernel() {
        if std::fs::metadata("/proc/timer_list").is_err() {
            return;
        }
        let hz = measure(Duration::from_millis(100));
        assert!(hz.is_some_and(|hz| CANDIDATES.contains(&hz)), "{hz:?}");
    }
}
