//! Every counter of rsttrace's summary accounted for against what the
//! generators made and the kernel counted, and the results table.

use std::collections::BTreeMap;

use serde_json::Value;

use super::measure::{ExportFiles, Row, metric_sum, metric_where};
use super::workload::{Kind, MIX};
use super::{Options, ROTATE_COUNT, ROTATE_SIZE, WARM_UP};
use crate::bench::workload::ResetCounters;

/// RSS "flat": the median of the last quarter of the rows after warm-up is
/// at most this much above the median of their first quarter.
const RSS_GROWTH_ALLOWED: f64 = 0.10;
/// Descriptors "flat": the maximum over the last half of the rows after
/// warm-up at most this much above the maximum over the first half. The
/// process-root cache (two generations of 256) makes a saw-tooth between
/// ~300 and ~530 descriptors; a sample may miss a peak by one interval's
/// growth (~60), a leak of one per process grows by thousands.
const FDS_GROWTH_ALLOWED: f64 = 0.10;

/// Summary counters that must stay zero in the soak, and why.
const MUST_BE_ZERO: [(&[&str], &str); 9] = [
    (&["abort"], "every error report follows an RST"),
    (
        &["lost"],
        "a few hundred events/s, far below the ring's capacity",
    ),
    (&["filtered_userspace"], "no userspace filter"),
    (&["decode_errors"], "every record decodes"),
    (&["write_errors"], "the export's disk has room"),
    (
        &["read_errors"],
        "every kernel read of loopback sockets succeeds",
    ),
    (&["kernel_drops", "packets_lost"], "no pcapng"),
    (
        &["kernel_drops", "context_errors"],
        "every tracepoint read succeeds",
    ),
    (
        &["stacks", "missing"],
        "stack ids are read before they are recycled",
    ),
];

/// Everything the checks compare.
pub(super) struct Facts<'a> {
    pub(super) made: &'a BTreeMap<Kind, u64>,
    /// The namespace's TCP counters over the soak.
    pub(super) kernel: ResetCounters,
    pub(super) summary: &'a Value,
    pub(super) metrics: &'a str,
    pub(super) scrape_failures: u64,
    pub(super) files: &'a ExportFiles,
    pub(super) rows: &'a [Row],
    /// Per program (name, recursion misses), before the summary.
    pub(super) recursion: &'a [(String, u64)],
}

/// One accounted counter: its value, what it must be and why, and whether
/// it is. `ok` is false only for what must hold.
#[derive(Debug)]
pub(super) struct Check {
    pub(super) what: String,
    pub(super) value: String,
    pub(super) expected: String,
    pub(super) ok: bool,
}

impl Check {
    fn equal(what: impl Into<String>, value: u64, expected: u64, why: &str) -> Check {
        Check {
            what: what.into(),
            value: value.to_string(),
            expected: format!("{expected} ({why})"),
            ok: value == expected,
        }
    }

    fn info(what: impl Into<String>, value: impl ToString, why: &str) -> Check {
        Check {
            what: what.into(),
            value: value.to_string(),
            expected: why.to_string(),
            ok: true,
        }
    }
}

impl Facts<'_> {
    fn n(&self, path: &[&str]) -> u64 {
        path.iter()
            .fold(self.summary, |v, k| &v[*k])
            .as_u64()
            .unwrap_or(0)
    }

    fn cause(&self, cause: &str, direction: &str) -> u64 {
        self.summary["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["cause"] == cause && c["direction"] == direction)
            .filter_map(|c| c["count"].as_u64())
            .sum()
    }

    fn made_total(&self) -> u64 {
        self.made.values().sum()
    }

    pub(super) fn checks(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        let made = self.made_total();
        checks.push(Check::equal(
            "kernel: Tcp OutRsts in the namespace",
            self.kernel.out_rsts,
            made,
            "one RST per generated unit",
        ));
        checks.push(Check::equal(
            "summary: sent",
            self.n(&["sent"]),
            self.kernel.out_rsts,
            "Tcp OutRsts",
        ));
        checks.push(Check::equal(
            "summary: received",
            self.n(&["received"]),
            self.kernel.out_rsts,
            "loopback: every RST sent is received",
        ));
        checks.push(Check::equal(
            "summary: total",
            self.n(&["total"]),
            self.n(&["sent"]) + self.n(&["received"]) + self.n(&["abort"]),
            "sent + received + abort",
        ));
        // Per cause: the generators' units, summed where causes share a name.
        let mut expected: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for m in &MIX {
            let n = self.made[&m.kind];
            *expected.entry((m.sent, "sent")).or_default() += n;
            *expected.entry((m.received, "received")).or_default() += n;
        }
        for ((cause, direction), n) in &expected {
            checks.push(Check::equal(
                format!("summary: {cause} {direction}"),
                self.cause(cause, direction),
                *n,
                "units generated",
            ));
        }
        let unexpected: u64 = self.summary["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                !expected.contains_key(&(
                    c["cause"].as_str().unwrap_or(""),
                    c["direction"].as_str().unwrap_or(""),
                ))
            })
            .filter_map(|c| c["count"].as_u64())
            .sum();
        checks.push(Check::equal(
            "summary: other causes",
            unexpected,
            0,
            "none generated",
        ));
        for (path, why) in MUST_BE_ZERO {
            checks.push(Check::equal(
                format!("summary: {}", path.join(".")),
                self.n(path),
                0,
                why,
            ));
        }
        checks.push(Check::info(
            "summary: filtered (in the kernel)",
            self.n(&["filtered"]),
            "RSTs of other namespaces: the rest of the host's traffic",
        ));
        let per_program = self
            .recursion
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        checks.push(Check::info(
            "summary: kernel_drops.recursion_misses",
            self.n(&["kernel_drops", "recursion_misses"]),
            &format!(
                "runs nested in a running program on that CPU, host-wide (by program before the stop: {}); \
                 no RST of the soak was missed (sent and received above)",
                if per_program.is_empty() { "none" } else { &per_program }
            ),
        ));
        for key in ["owners_evicted", "history_evicted"] {
            checks.push(Check::info(
                format!("summary: kernel_drops.{key}"),
                self.n(&["kernel_drops", key]),
                "LRU maps shared with the whole host: evictions once it made more sockets or closes than they hold",
            ));
        }
        checks.push(Check::info(
            "summary: aborts_merged",
            self.n(&["aborts_merged"]),
            "error reports echoing an RST just reported (refused connects, peer resets)",
        ));
        // A map that filled up (entries never recycled) would fail nearly
        // every stack after its first 16,384; what remains are collisions
        // of two stacks in one bucket, the first not yet read.
        let not_captured = self.n(&["stacks", "not_captured"]);
        checks.push(Check {
            what: "summary: stacks.not_captured".into(),
            value: not_captured.to_string(),
            expected: format!(
                "at most 1% of events, {} (stack map entries recycled once read; hash collisions)",
                self.n(&["total"]) / 100
            ),
            ok: not_captured * 100 <= self.n(&["total"]),
        });
        checks.push(Check::info(
            "summary: stacks.unsymbolized",
            self.n(&["stacks", "unsymbolized"]),
            "frames without symbols (python3's interpreter, stripped libraries)",
        ));
        // The final scrape (after the traffic stopped) against the summary.
        let m = self.metrics;
        checks.push(Check::equal(
            "metrics: rsttrace_resets_total",
            metric_sum(m, "rsttrace_resets_total"),
            self.n(&["total"]),
            "summary total",
        ));
        checks.push(Check::equal(
            "metrics: rsttrace_resets_total{direction=\"sent\"}",
            metric_where(m, "rsttrace_resets_total", "direction=\"sent\""),
            self.n(&["sent"]),
            "summary sent",
        ));
        checks.push(Check::equal(
            "metrics: rsttrace_lost_events_total",
            metric_sum(m, "rsttrace_lost_events_total"),
            self.n(&["lost"]),
            "summary lost",
        ));
        // The evictions are recounted at most every 5 s and at exit: only
        // the exact kinds are compared.
        let exact = ["packets_lost", "context_errors", "recursion_misses"];
        checks.push(Check::equal(
            "metrics: rsttrace_kernel_drops_total (packets, context, recursion)",
            exact
                .iter()
                .map(|k| metric_where(m, "rsttrace_kernel_drops_total", &format!("kind=\"{k}\"")))
                .sum(),
            exact.iter().map(|k| self.n(&["kernel_drops", k])).sum(),
            "summary kernel_drops",
        ));
        checks.push(Check::equal(
            "metrics: scrapes that failed",
            self.scrape_failures,
            0,
            "every scrape answers",
        ));
        checks.push(Check::equal(
            "metrics: lost at any sample",
            self.rows.iter().map(|r| r.lost).max().unwrap_or(0),
            0,
            "nothing lost at any time",
        ));
        // The export: rotated, bounded, every line JSON, no gap.
        let f = self.files;
        checks.push(Check {
            what: "export: files kept".into(),
            value: f.files.to_string(),
            expected: format!("{ROTATE_COUNT} (--rotate-count)"),
            ok: f.files == ROTATE_COUNT,
        });
        checks.push(Check::equal(
            "export: lines that are not JSON",
            f.bad_lines,
            0,
            "every line an event",
        ));
        checks.push(Check::equal(
            "export: gap records reporting lost events",
            f.gaps_lost,
            0,
            "nothing lost",
        ));
        checks.push(Check::info(
            "export: gap records",
            f.gaps,
            "one per kernel-drop change (recursion misses)",
        ));
        checks.push(Check {
            what: "export: events in the kept files".into(),
            value: f.events.to_string(),
            expected: format!(
                "at most {} (summary total), the newest ones",
                self.n(&["total"])
            ),
            ok: f.events > 0 && f.events <= self.n(&["total"]),
        });
        checks.push(self.rss_check());
        checks.push(self.fds_check());
        checks
    }

    /// Descriptors after warm-up (the caches are full by then): the
    /// maximum of the last half within `FDS_GROWTH_ALLOWED` of the first's.
    fn fds_check(&self) -> Check {
        let (first, last) = warm_parts(self.rows, 2, |r| r.fds);
        let (first, last) = (
            first.iter().copied().max().unwrap_or(0),
            last.iter().copied().max().unwrap_or(0),
        );
        let growth = last as f64 / first.max(1) as f64 - 1.0;
        Check {
            what: "descriptors after warm-up: max of the last half vs the first".into(),
            value: format!("{first} -> {last} ({:+.1}%)", growth * 100.0),
            expected: format!(
                "at most {:+.0}% (4 samples after warm-up at least)",
                FDS_GROWTH_ALLOWED * 100.0
            ),
            ok: self.warm().len() >= 4 && growth <= FDS_GROWTH_ALLOWED,
        }
    }

    fn warm(&self) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.at >= WARM_UP).collect()
    }

    /// RSS after warm-up: the median of the last quarter of the rows within
    /// `RSS_GROWTH_ALLOWED` of the median of the first quarter.
    fn rss_check(&self) -> Check {
        let (first, last) = warm_parts(self.rows, 4, |r| r.rss_kib);
        let (first, last) = (median(&first), median(&last));
        let warm = self.warm();
        let growth = last as f64 / first.max(1) as f64 - 1.0;
        Check {
            what: "RSS after warm-up: median of the last quarter vs the first".into(),
            value: format!("{first} -> {last} KiB ({:+.1}%)", growth * 100.0),
            expected: format!(
                "at most {:+.0}% (4 samples after warm-up at least)",
                RSS_GROWTH_ALLOWED * 100.0
            ),
            ok: warm.len() >= 4 && growth <= RSS_GROWTH_ALLOWED,
        }
    }
}

/// `field` of the first and of the last of `parts` equal parts of the
/// rows after warm-up (empty with fewer than 4 such rows).
fn warm_parts(rows: &[Row], parts: usize, field: impl Fn(&Row) -> u64) -> (Vec<u64>, Vec<u64>) {
    let warm: Vec<u64> = rows.iter().filter(|r| r.at >= WARM_UP).map(field).collect();
    if warm.len() < 4 {
        return (Vec::new(), Vec::new());
    }
    let part = warm.len() / parts;
    (warm[..part].to_vec(), warm[warm.len() - part..].to_vec())
}

fn median(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

pub(super) fn render(
    opts: &Options,
    facts: &Facts<'_>,
    checks: &[Check],
    rotations: u64,
    peak_rss_kib: u64,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# rsttrace soak: {} min, {} build\n\n`--stack --metrics PORT -w soak.jsonl --rotate-size {ROTATE_SIZE} --rotate-count {ROTATE_COUNT} --netns INODE`, \
         the traffic in an anonymous network namespace of its own.\n",
        opts.minutes,
        if opts.release { "release" } else { "debug" }
    );
    let _ = writeln!(s, "| traffic | rate /s | units | sent RST | received RST |");
    let _ = writeln!(s, "|---|---:|---:|---|---|");
    for m in &MIX {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            m.what, m.per_sec, facts.made[&m.kind], m.sent, m.received
        );
    }
    let _ = writeln!(
        s,
        "\nKernel (namespace): OutRsts +{}, EstabResets +{}, AttemptFails +{}. \
         Export rotations seen between samples: {rotations}.\n",
        facts.kernel.out_rsts, facts.kernel.estab_resets, facts.kernel.attempt_fails
    );
    let _ = writeln!(
        s,
        "| t (s) | RSS (KiB) | fds | resets (metrics) | lost | kernel drops | stack errors | processes | scrape (ms) |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in facts.rows {
        let _ = writeln!(
            s,
            "| {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.at.as_secs_f64(),
            r.rss_kib,
            r.fds,
            r.resets,
            r.lost,
            r.kernel_drops,
            r.stack_errors,
            r.processes,
            r.scrape_ms
        );
    }
    let warm: Vec<&Row> = facts.rows.iter().filter(|r| r.at >= WARM_UP).collect();
    if let (Some(first), Some(last)) = (warm.first(), warm.last()) {
        let middle = warm[warm.len() / 2];
        let _ = writeln!(
            s,
            "\nRSS: at warm-up ({} s) {} KiB, middle ({:.0} s) {} KiB, end ({:.0} s) {} KiB; \
             min {} max {} KiB after warm-up; peak (VmHWM) {peak_rss_kib} KiB.",
            WARM_UP.as_secs(),
            first.rss_kib,
            middle.at.as_secs_f64(),
            middle.rss_kib,
            last.at.as_secs_f64(),
            last.rss_kib,
            warm.iter().map(|r| r.rss_kib).min().unwrap_or(0),
            warm.iter().map(|r| r.rss_kib).max().unwrap_or(0),
        );
    }
    let _ = writeln!(s, "\n## Every counter accounted for\n");
    let _ = writeln!(s, "| counter | value | expected | |");
    let _ = writeln!(s, "|---|---:|---|---|");
    for c in checks {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            c.what,
            c.value,
            c.expected,
            if c.ok { "ok" } else { "**FAILED**" }
        );
    }
    let _ = writeln!(
        s,
        "\nExport kept: {} files, {} bytes, {} events.\n\nrsttrace's summary:\n\n```json\n{}\n```",
        facts.files.files,
        facts.files.bytes,
        facts.files.events,
        serde_json::to_string_pretty(facts.summary).unwrap_or_default()
    );
    s
}
