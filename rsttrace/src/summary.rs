//! The end-of-run summary: what was seen, and what was not.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::cause::{CauseId, Classified};
use crate::counters::KernelDrops;
use crate::event::Direction;

#[derive(Debug, Default, Clone)]
pub struct Summary {
    counts: BTreeMap<(CauseId, Direction), u64>,
    total: u64,
    /// Events the kernel could not put in the ring buffer.
    pub lost: u64,
    /// Events the in-kernel filters dropped.
    pub filtered: u64,
    /// Events the userspace filters (--cause, --direction) dropped.
    pub filtered_userspace: u64,
    /// Kernel memory reads that failed (facts may be incomplete).
    pub read_errors: u64,
    /// Records userspace could not decode.
    pub decode_errors: u64,
    /// Events that could not be written to an output.
    pub write_errors: u64,
    /// What else the kernel side could not capture or remember.
    pub kernel_drops: KernelDrops,
    /// Error reports merged into the RST reported just before them.
    pub aborts_merged: u64,
    /// Per local port (65536 at most: bounded by the domain).
    ports: HashMap<u16, u64>,
    /// Per owning process (pid, comm), up to `MAX_OWNERS`; the rest are
    /// counted in `owners_other`.
    owners: HashMap<(u32, String), u64>,
    owners_other: u64,
    /// `--stack` only.
    pub stacks: Option<StackSummary>,
}

/// What `--stack` could not show; never fatal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StackSummary {
    /// Stacks the kernel could not store (stack map full, hash collision).
    pub not_captured: u64,
    /// Stack ids no longer in the map when read.
    pub missing: u64,
    /// Frames shown as a file offset or raw address.
    pub unsymbolized: u64,
}

/// Distinct owners counted by name; a fork storm cannot grow the table.
const MAX_OWNERS: usize = 4096;
/// Rows of the "top" lines.
const TOP: usize = 5;

impl Summary {
    pub fn add(&mut self, rec: &Classified) {
        *self
            .counts
            .entry((rec.cause.id, rec.event.direction))
            .or_default() += 1;
        self.total += 1;
        *self.ports.entry(rec.event.local.port()).or_default() += 1;
        if let Some(p) = &rec.event.process {
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

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn count(&self, cause: CauseId, direction: Direction) -> u64 {
        self.counts.get(&(cause, direction)).copied().unwrap_or(0)
    }

    /// The table printed on stderr at exit. Each cause row's last word is its
    /// count, and the loss line starts with `lost` and ends with the number
    /// (`cargo xtask bench` reads both).
    pub fn render(&self) -> String {
        let mut s = String::from("\nrsttrace summary\n");
        let _ = writeln!(s, "  {:<20} {:<9} {:>9}", "CAUSE", "DIRECTION", "COUNT");
        let mut rows: Vec<_> = self.counts.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for ((cause, dir), n) in rows {
            let _ = writeln!(s, "  {:<20} {:<9} {:>9}", cause.id(), dir.as_str(), n);
        }
        let _ = writeln!(s, "  {:<20} {:<9} {:>9}", "total", "", self.total);
        if !self.ports.is_empty() {
            let ports = top(self.ports.iter().map(|(p, n)| (p.to_string(), *n)));
            let _ = writeln!(s, "  top local ports: {ports}");
        }
        if !self.owners.is_empty() {
            let mut owners = top(self.owners.iter().map(|((pid, comm), n)| {
                (format!("{pid}/{}", crate::output::escape_control(comm)), *n)
            }));
            if self.owners_other > 0 {
                let _ = write!(owners, ", others ({})", self.owners_other);
            }
            let _ = writeln!(s, "  top owners: {owners}");
        }
        let _ = writeln!(s, "  lost (ring buffer full): {}", self.lost);
        let _ = writeln!(s, "  filtered in kernel:      {}", self.filtered);
        for (label, n) in [
            ("filtered in userspace:   ", self.filtered_userspace),
            ("kernel read errors:      ", self.read_errors),
            ("undecodable records:     ", self.decode_errors),
            ("events not written:      ", self.write_errors),
        ] {
            if n > 0 {
                let _ = writeln!(s, "  {label}{n}");
            }
        }
        for (_, label, n) in self.kernel_drops.kinds() {
            if n > 0 {
                let _ = writeln!(s, "  {:<24} {n}", format!("{label}:"));
            }
        }
        if self.aborts_merged > 0 {
            let _ = writeln!(s, "  aborts merged into their RST: {}", self.aborts_merged);
        }
        if let Some(st) = self.stacks {
            let _ = writeln!(
                s,
                "  stacks not captured:     {} (+{} unreadable)",
                st.not_captured, st.missing
            );
            let _ = writeln!(s, "  frames not symbolized:   {}", st.unsymbolized);
        }
        if self.lost > 0 {
            s.push_str(
                "  events were lost: raise --ring-buffer or narrow the filters (--port, --pid)\n",
            );
        }
        s
    }
}

/// `name (count), ...` for the `TOP` largest counts, ties by name.
fn top(counts: impl Iterator<Item = (String, u64)>) -> String {
    let mut all: Vec<(String, u64)> = counts.collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.iter()
        .take(TOP)
        .map(|(name, n)| format!("{name} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures::record;

    #[test]
    fn counts_per_cause_and_direction_and_reports_losses() {
        let mut sum = Summary::default();
        sum.add(&record());
        sum.add(&record());
        let mut rec = record();
        rec.event.direction = Direction::Received;
        sum.add(&rec);
        assert_eq!(sum.total(), 3);
        assert_eq!(sum.count(CauseId::CloseUnreadData, Direction::Sent), 2);
        assert_eq!(sum.count(CauseId::CloseUnreadData, Direction::Received), 1);
        let text = sum.render();
        assert!(
            text.contains("close_unread_data    sent              2"),
            "{text}"
        );
        assert!(text.contains("lost (ring buffer full): 0"), "{text}");
        assert!(text.contains("top local ports: 8080 (3)"), "{text}");
        assert!(
            text.contains("top owners: 7/=cmd|evil\\x1b[2J (3)"),
            "{text}"
        );
        assert!(!text.contains("raise --ring-buffer"));
        sum.lost = 5;
        assert!(sum.render().contains("raise --ring-buffer"));
    }

    #[test]
    fn owner_counts_are_bounded() {
        let mut sum = Summary::default();
        let mut rec = record();
        for pid in 0..(MAX_OWNERS as u32 + 10) {
            rec.event.process.as_mut().unwrap().pid = pid;
            sum.add(&rec);
        }
        assert_eq!(sum.owners.len(), MAX_OWNERS);
        assert_eq!(sum.owners_other, 10);
        assert!(sum.render().contains(", others (10)"));
    }

    #[test]
    fn kernel_drops_are_reported_when_there_are_any() {
        let mut sum = Summary::default();
        assert!(!sum.render().contains("forgotten"));
        sum.kernel_drops.packets_lost = 3;
        sum.kernel_drops.owners_evicted = 11;
        let text = sum.render();
        assert!(text.contains("  RST segments not captured: 3\n"), "{text}");
        assert!(
            text.contains("  owners forgotten (map full): 11\n"),
            "{text}"
        );
        assert!(!text.contains("closes forgotten"), "{text}");
    }

    #[test]
    fn an_empty_run_still_reports_the_counters() {
        let text = Summary::default().render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "",
                "rsttrace summary",
                "  CAUSE                DIRECTION     COUNT",
                "  total                                  0",
                "  lost (ring buffer full): 0",
                "  filtered in kernel:      0",
            ]
        );
    }

    #[test]
    fn rows_are_aligned_biggest_first() {
        let mut sum = Summary::default();
        let mut refused = record();
        refused.cause.id = CauseId::PeerRefused;
        refused.event.direction = Direction::Received;
        for _ in 0..12 {
            sum.add(&refused);
        }
        sum.add(&record());
        let text = sum.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[3], "  peer_refused         received         12");
        assert_eq!(lines[4], "  close_unread_data    sent              1");
        assert_eq!(lines[5], "  total                                 13");
        // Counts end in the same column as the header's COUNT.
        assert!(lines[2..=5].iter().all(|l| l.len() == lines[2].len()));
    }

    #[test]
    fn error_counters_show_only_when_something_went_wrong() {
        let mut sum = Summary::default();
        let quiet = sum.render();
        for word in ["userspace", "read errors", "undecodable", "not written"] {
            assert!(!quiet.contains(word), "{word}: {quiet}");
        }
        sum.filtered = 3;
        sum.filtered_userspace = 4;
        sum.read_errors = 5;
        sum.decode_errors = 6;
        sum.write_errors = 7;
        sum.lost = 8;
        let text = sum.render();
        for line in [
            "  lost (ring buffer full): 8",
            "  filtered in kernel:      3",
            "  filtered in userspace:   4",
            "  kernel read errors:      5",
            "  undecodable records:     6",
            "  events not written:      7",
            "  events were lost: raise --ring-buffer or narrow the filters (--port, --pid)",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        // What `cargo xtask bench` reads: the last word of the `lost` line.
        let lost = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("lost"))
            .and_then(|l| l.split_whitespace().last())
            .unwrap();
        assert_eq!(lost, "8");
    }
}
