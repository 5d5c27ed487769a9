//! The end-of-run summary: what was seen, and what was not.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::cause::{CauseId, Classified};
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
}

impl Summary {
    pub fn add(&mut self, rec: &Classified) {
        *self
            .counts
            .entry((rec.cause.id, rec.event.direction))
            .or_default() += 1;
        self.total += 1;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn count(&self, cause: CauseId, direction: Direction) -> u64 {
        self.counts.get(&(cause, direction)).copied().unwrap_or(0)
    }

    pub fn render(&self) -> String {
        let mut s = String::from("\nrsttrace summary\n");
        let _ = writeln!(s, "  {:<20} {:<9} {:>9}", "CAUSE", "DIRECTION", "COUNT");
        let mut rows: Vec<_> = self.counts.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for ((cause, dir), n) in rows {
            let _ = writeln!(s, "  {:<20} {:<9} {:>9}", cause.id(), dir.as_str(), n);
        }
        let _ = writeln!(s, "  {:<20} {:<9} {:>9}", "total", "", self.total);
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
        if self.lost > 0 {
            s.push_str(
                "  events were lost: raise --ring-buffer or narrow the filters (--port, --pid)\n",
            );
        }
        s
    }
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
        assert!(!text.contains("raise --ring-buffer"));
        sum.lost = 5;
        assert!(sum.render().contains("raise --ring-buffer"));
    }
}
