//! The bench's tables: one per workload, the kernel's per-program costs, and
//! the targets of issue 12 next to what was measured (met / not met).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Row, Sample, Tool, Workload};

/// How the run was set up, for the header.
pub struct Context {
    pub short: bool,
    pub rounds: u32,
    pub seconds: u64,
    pub storm_threads: usize,
    pub cores: usize,
    pub workload_cpu: Option<usize>,
    pub tracer_cpu: Option<usize>,
    /// Program statistics were on before the bench (sysctl): every traced
    /// scenario then pays for them.
    pub stats_were_on: bool,
}

pub fn render(rows: &[Row], cx: &Context) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n# rsttrace bench{}: {} interleaved round(s) x {} s per scenario\n",
        if cx.short { " (short)" } else { "" },
        cx.rounds,
        cx.seconds
    );
    let _ = writeln!(
        t,
        "Ratios are medians over rounds of traced/untraced in the same round. Healthy traffic runs on the loopback of a network namespace of its own, client and server on one thread, {}; its ratios compare rates per second of that thread's CPU time (softirq work in its context included), which other load on the machine does not skew as it does wall time. Events seen there come from elsewhere on the host: the workload makes no RST (RSTs made: the namespace's OutRsts).",
        pinning(cx, "the generator")
    );
    if cx.stats_were_on {
        let _ = writeln!(
            t,
            "\n**kernel.bpf_stats_enabled was already on: every traced scenario paid for program statistics.**"
        );
    }
    for workload in [Workload::Rr, Workload::Crr] {
        healthy_table(&mut t, rows, workload);
    }
    storm_table(&mut t, rows, cx, Workload::Storm);
    storm_table(&mut t, rows, cx, Workload::PinnedStorm);
    kernel_table(&mut t, rows);
    targets_table(&mut t, rows);
    t
}

/// Where a pinned workload (`who`) and its tracer ran.
fn pinning(cx: &Context, who: &str) -> String {
    match (cx.workload_cpu, cx.tracer_cpu) {
        (Some(w), Some(tr)) if w != tr => {
            format!("{who} pinned to CPU {w} and the tracer to CPU {tr}")
        }
        _ => format!("{who} unpinned (fewer than two CPUs)"),
    }
}

fn healthy_table(t: &mut String, rows: &[Row], workload: Workload) {
    if !rows.iter().any(|r| r.workload == workload) {
        return;
    }
    let _ = writeln!(
        t,
        "\n## {}: {}, no RSTs\n",
        workload.name(),
        match workload {
            Workload::Rr => "1-byte request/response on one connection",
            _ => "connect, 1-byte request/response, close",
        }
    );
    let _ = writeln!(
        t,
        "| scenario | {} | per CPU-second | ratio vs untraced | RSTs made | events seen (lost) | tracer CPU % | peak RSS MiB | attach ms |",
        workload.unit()
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|");
    for row in rows.iter().filter(|r| r.workload == workload) {
        let samples = match &row.samples {
            Ok(s) => s,
            Err(why) => {
                let _ = writeln!(t, "| {} | not run: {why} | | | | | | | |", row.tool.name());
                continue;
            }
        };
        let resets: u64 = samples.iter().map(|s| s.resets.out_rsts).sum();
        let (events, cpu, rss, attach) = tracer_columns(row, samples, |s| {
            let c = s.tracer.unwrap_or_default();
            100.0 * c.cpu_ns / (c.seconds * 1e9).max(1.0)
        });
        let lost: u64 = samples.iter().map(|s| s.lost).sum();
        let _ = writeln!(
            t,
            "| {} | {:.0} | {:.0} | {} | {resets} | {events}{} | {cpu} | {rss} | {attach} |",
            row.tool.name(),
            median(samples.iter().map(|s| s.rate)),
            median(samples.iter().filter_map(|s| s.cpu_rate)),
            show_ratio(ratio(rows, workload, row.tool)),
            if lost > 0 {
                format!(" ({lost})")
            } else {
                String::new()
            },
        );
    }
}

fn storm_table(t: &mut String, rows: &[Row], cx: &Context, workload: Workload) {
    if !rows.iter().any(|r| r.workload == workload) {
        return;
    }
    if workload == Workload::PinnedStorm {
        let _ = writeln!(
            t,
            "\n## Pinned RST storm: connect() to a closed loopback port, {}\n",
            pinning(cx, "one thread")
        );
        let _ = writeln!(
            t,
            "What tracing costs the storm's own CPU: the kernel programs run there, in its context; the tracer's CPU (CPU ns/event) is the other one's. In the all-cores storm, the tracer takes its CPU from the storm as well.\n"
        );
    } else {
        let _ = writeln!(
            t,
            "\n## RST storm: connect() to a closed loopback port, {} thread(s) on {} core(s), the tracer unpinned\n",
            cx.storm_threads, cx.cores
        );
    }
    if workload == Workload::Storm && cx.short && cx.storm_threads < cx.cores {
        let _ = writeln!(
            t,
            "(short mode storms with {} thread(s), not {}, so that rsttrace keeps up on a loaded CI machine)\n",
            cx.storm_threads, cx.cores
        );
    }
    let _ = writeln!(
        t,
        "| scenario | RST/s | ratio vs untraced | sent events / TcpOutRsts | lost | CPU ns/event | peak RSS MiB | attach ms |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|");
    for row in rows.iter().filter(|r| r.workload == workload) {
        let samples = match &row.samples {
            Ok(s) => s,
            Err(why) => {
                let _ = writeln!(t, "| {} | not run: {why} | | | | | | |", row.tool.name());
                continue;
            }
        };
        let traced = row.tool != Tool::Untraced;
        let coverage = samples.iter().map(|s| s.events_sent).sum::<u64>() as f64
            / samples
                .iter()
                .map(|s| s.resets.out_rsts)
                .sum::<u64>()
                .max(1) as f64;
        let (_, cpu, rss, attach) = tracer_columns(row, samples, |s| {
            s.tracer.unwrap_or_default().cpu_ns / s.events.max(1) as f64
        });
        let dash = || "-".to_string();
        let _ = writeln!(
            t,
            "| {} | {:.0} | {} | {} | {} | {cpu} | {rss} | {attach} |",
            row.tool.name(),
            median(samples.iter().map(|s| s.rate)),
            show_ratio(ratio(rows, workload, row.tool)),
            if traced {
                format!("{coverage:.4}")
            } else {
                dash()
            },
            if traced {
                samples.iter().map(|s| s.lost).sum::<u64>().to_string()
            } else {
                dash()
            },
        );
    }
    let _ = writeln!(
        t,
        "\nCPU ns/event: the tracer's user+system time from ready to exit (start-up excluded) per event; rsttrace sees two events per RST (sent and received)."
    );
    if rows
        .iter()
        .any(|r| r.tool == Tool::Tcpdump && r.samples.is_ok())
    {
        let _ = writeln!(
            t,
            "tcpdump: events are packets captured (one per RST), lost are packets dropped by the kernel; its CPU leaves out the in-kernel filter and copy, which the workload pays."
        );
    }
}

/// (events seen, CPU column, peak RSS MiB, attach ms) of a traced row;
/// dashes for the untraced one.
fn tracer_columns(
    row: &Row,
    samples: &[Sample],
    cpu: impl Fn(&Sample) -> f64,
) -> (String, String, String, String) {
    if row.tool == Tool::Untraced {
        let dash = || "-".to_string();
        return (dash(), dash(), dash(), dash());
    }
    let events: u64 = samples.iter().map(|s| s.events).sum();
    let rss = samples
        .iter()
        .filter_map(|s| s.tracer)
        .map(|c| c.peak_rss_kib)
        .max()
        .unwrap_or(0);
    (
        events.to_string(),
        format!("{:.1}", median(samples.iter().map(cpu))),
        format!("{:.1}", rss as f64 / 1024.0),
        format!(
            "{:.0}",
            median(samples.iter().filter_map(|s| s.tracer).map(|c| c.attach_ms))
        ),
    )
}

/// Per program and workload, summed over rounds: (runs, run time ns, seconds).
type Costs = BTreeMap<String, BTreeMap<&'static str, (u64, u64, f64)>>;

fn kernel_table(t: &mut String, rows: &[Row]) {
    let mut costs: Costs = BTreeMap::new();
    // Per workload: (run time of all programs, units of work, seconds).
    let mut totals: BTreeMap<&'static str, (u64, u64, f64)> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.tool == Tool::JsonlStats) {
        let Ok(samples) = &row.samples else { continue };
        for runs in samples.iter().filter_map(|s| s.programs.as_ref()) {
            let total = totals.entry(row.workload.name()).or_default();
            total.1 += runs.units;
            total.2 += runs.seconds;
            for c in &runs.costs {
                let e = costs
                    .entry(c.name.clone())
                    .or_default()
                    .entry(row.workload.name())
                    .or_default();
                e.0 += c.runs;
                e.1 += c.run_time_ns;
                e.2 += runs.seconds;
                total.0 += c.run_time_ns;
            }
        }
    }
    // --firewall's per-packet program, apart: it is not in the default.
    for row in rows.iter().filter(|r| r.tool == Tool::FirewallStats) {
        let Ok(samples) = &row.samples else { continue };
        for runs in samples.iter().filter_map(|s| s.programs.as_ref()) {
            for c in runs.costs.iter().filter(|c| c.name == FIREWALL_PROGRAM) {
                let e = costs
                    .entry(format!("{} (--firewall)", c.name))
                    .or_default()
                    .entry(row.workload.name())
                    .or_default();
                e.0 += c.runs;
                e.1 += c.run_time_ns;
                e.2 += runs.seconds;
            }
        }
    }
    let _ = writeln!(
        t,
        "\n## Kernel cost per program (the kernel's program statistics, rsttrace -w file.jsonl)\n"
    );
    if costs.is_empty() {
        let _ = writeln!(t, "not measured (no run with bpf stats on)");
        return;
    }
    let workloads = Workload::ALL.map(Workload::name);
    let _ = writeln!(
        t,
        "| program | {} |",
        workloads
            .iter()
            .map(|w| format!("{w} runs/s | {w} ns/run"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(t, "|---|{}", "---|---|".repeat(workloads.len()));
    for (name, per) in &costs {
        let cells: Vec<String> = workloads
            .iter()
            .map(|w| match per.get(w) {
                Some(&(runs, ns, secs)) if runs > 0 => format!(
                    "{:.0} | {:.0}",
                    runs as f64 / secs.max(1e-9),
                    ns as f64 / runs as f64
                ),
                Some(_) => "0 | -".into(),
                None => "- | -".into(),
            })
            .collect();
        let _ = writeln!(t, "| {name} | {} |", cells.join(" | "));
    }
    let summary = |cell: &dyn Fn(u64, u64, f64, Workload) -> String| -> String {
        Workload::ALL
            .iter()
            .map(|&w| match totals.get(w.name()) {
                Some(&(ns, units, secs)) => cell(ns, units, secs, w),
                None => "-".into(),
            })
            .flat_map(|c| [c, String::new()])
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let per_unit = summary(&|ns, units, _, w| {
        let unit = w.unit().trim_end_matches("/s").trim_end_matches('s');
        format!("{:.0} ns per {unit}", ns as f64 / units.max(1) as f64)
    });
    let _ = writeln!(t, "| all programs | {per_unit} |");
    let share =
        summary(&|ns, _, secs, _| format!("{:.2} % of one CPU", ns as f64 / secs.max(1e-9) / 1e7));
    let _ = writeln!(t, "| all programs | {share} |");
    let _ = writeln!(
        t,
        "\nruns/s per second of workload; per RST: one connect() of the storm, i.e. one RST sent and received. Names as the tracer reports them (builds without JSON status lines: the kernel's, 15 characters)."
    );
}

/// `--firewall`'s program on every packet sent (kernels without kprobes).
const FIREWALL_PROGRAM: &str = "btf_socketless_rst";

/// Per workload, the kernel's run time of all programs per unit of work.
fn kernel_ns_per_unit(rows: &[Row], workload: Workload) -> Option<f64> {
    let row = rows
        .iter()
        .find(|r| r.workload == workload && r.tool == Tool::JsonlStats)?;
    let runs: Vec<_> = row
        .samples
        .as_ref()
        .ok()?
        .iter()
        .filter_map(|s| s.programs.as_ref())
        .collect();
    let ns: u64 = runs
        .iter()
        .flat_map(|r| &r.costs)
        .map(|c| c.run_time_ns)
        .sum();
    let units: u64 = runs.iter().map(|r| r.units).sum();
    (units > 0).then(|| ns as f64 / units as f64)
}

fn targets_table(t: &mut String, rows: &[Row]) {
    let _ = writeln!(t, "\n## Targets (issue 12), reported, never asserted\n");
    let _ = writeln!(t, "| target | measured | |");
    let _ = writeln!(t, "|---|---|---|");
    let mut line = |target: &str, measured: Option<(String, bool)>| {
        let (value, verdict) = match measured {
            Some((v, true)) => (v, "met"),
            Some((v, false)) => (v, "**not met**"),
            None => ("-".into(), "not measured"),
        };
        let _ = writeln!(t, "| {target} | {value} | {verdict} |");
    };
    let at_least = |w: Workload, tool: Tool, min: f64| {
        ratio(rows, w, tool).map(|r| (format!("{r:.3}"), r >= min))
    };
    line(
        "TCP_RR >= 0.99 of untraced, -w file.jsonl",
        at_least(Workload::Rr, Tool::Jsonl, 0.99),
    );
    line(
        "TCP_RR >= 0.99 of untraced, --stack",
        at_least(Workload::Rr, Tool::Stack, 0.99),
    );
    line(
        "TCP_RR >= 0.99 of untraced, --firewall (opt-in without kprobes)",
        at_least(Workload::Rr, Tool::Firewall, 0.99),
    );
    line(
        "TCP_CRR >= 0.98 of untraced, -w file.jsonl",
        at_least(Workload::Crr, Tool::Jsonl, 0.98),
    );
    line(
        "TCP_CRR >= 0.98 of untraced, --stack",
        at_least(Workload::Crr, Tool::Stack, 0.98),
    );
    for (storm, name) in [
        (Workload::Storm, "storm (all cores)"),
        (Workload::PinnedStorm, "pinned storm"),
    ] {
        line(
            &format!("{name} >= 0.90 of untraced, -w file.jsonl"),
            at_least(storm, Tool::Jsonl, 0.90),
        );
        line(
            &format!("{name}: -w file.jsonl ahead of tcpdump"),
            ratio(rows, storm, Tool::Jsonl)
                .zip(ratio(rows, storm, Tool::Tcpdump))
                .map(|(r, d)| (format!("{r:.3} vs {d:.3}"), r > d)),
        );
        line(
            &format!("{name} >= 0.70 of untraced, --stack"),
            at_least(storm, Tool::Stack, 0.70),
        );
        line(
            &format!("{name}: kernel cost per RST <= 1 µs, all programs"),
            kernel_ns_per_unit(rows, storm).map(|ns| (format!("{ns:.0} ns"), ns <= 1000.0)),
        );
    }
    let this_build = |r: &&Row| r.tool.is_rsttrace() && !r.tool.is_baseline();
    let costs: Vec<(Tool, super::TracerCost)> = rows
        .iter()
        .filter(this_build)
        .filter_map(|r| Some((r.tool, r.samples.as_ref().ok()?)))
        .flat_map(|(tool, s)| s.iter().filter_map(move |s| Some((tool, s.tracer?))))
        .collect();
    let peak = costs
        .iter()
        .filter(|(tool, _)| !matches!(tool, Tool::Stack | Tool::StackAll))
        .map(|(_, c)| c.peak_rss_kib)
        .max();
    line(
        "peak RSS <= 25 MiB without --stack",
        peak.map(|kib| {
            let mib = kib as f64 / 1024.0;
            (format!("{mib:.1} MiB"), mib <= 25.0)
        }),
    );
    let attach = (!costs.is_empty()).then(|| median(costs.iter().map(|(_, c)| c.attach_ms)));
    line(
        "attach <= 0.5 s (median)",
        attach.map(|ms| (format!("{ms:.0} ms"), ms <= 500.0)),
    );
}

/// Median over rounds of the scenario's rate over the untraced rate of the
/// same workload in the same round (per CPU-second where measured).
fn ratio(rows: &[Row], workload: Workload, tool: Tool) -> Option<f64> {
    let samples = |tool: Tool| {
        rows.iter()
            .find(|r| r.workload == workload && r.tool == tool)?
            .samples
            .as_ref()
            .ok()
            .filter(|s| !s.is_empty())
    };
    let traced = samples(tool)?;
    let untraced = samples(Tool::Untraced)?;
    Some(median(traced.iter().zip(untraced).map(|(t, u)| {
        let rate = |s: &Sample| s.cpu_rate.unwrap_or(s.rate);
        rate(t) / rate(u).max(1e-9)
    })))
}

fn show_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.3}"))
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(rate: f64) -> Sample {
        Sample {
            rate,
            ..Sample::default()
        }
    }

    #[test]
    fn ratios_pair_rounds_and_take_the_median() {
        let rows = vec![
            Row {
                workload: Workload::Rr,
                tool: Tool::Untraced,
                samples: Ok(vec![rate(100.0), rate(50.0), rate(100.0)]),
            },
            Row {
                workload: Workload::Rr,
                tool: Tool::Jsonl,
                samples: Ok(vec![rate(90.0), rate(49.0), rate(99.0)]),
            },
        ];
        // Rounds: 0.90, 0.98, 0.99: a slow round hits both alike.
        let r = ratio(&rows, Workload::Rr, Tool::Jsonl).unwrap();
        assert!((r - 0.98).abs() < 1e-9, "{r}");
        assert_eq!(ratio(&rows, Workload::Crr, Tool::Jsonl), None);
    }

    #[test]
    fn kernel_costs_per_program_and_per_unit() {
        use super::super::{ProgramCost, ProgramRuns};
        let cost = |name: &str, runs, ns| ProgramCost {
            name: name.into(),
            runs,
            run_time_ns: ns,
        };
        let stats = |costs, units| Sample {
            programs: Some(ProgramRuns {
                costs,
                seconds: 2.0,
                units,
            }),
            ..Sample::default()
        };
        let rows = vec![
            Row {
                workload: Workload::Rr,
                tool: Tool::JsonlStats,
                samples: Ok(vec![stats(vec![cost("softirq_entry", 1000, 150_000)], 500)]),
            },
            Row {
                workload: Workload::Storm,
                tool: Tool::JsonlStats,
                samples: Ok(vec![stats(
                    vec![
                        cost("btf_tcp_send_reset", 100, 120_000),
                        cost("softirq_entry", 0, 0),
                    ],
                    100,
                )]),
            },
        ];
        let mut t = String::new();
        kernel_table(&mut t, &rows);
        assert!(
            t.contains("| btf_tcp_send_reset | - | - | - | - | 50 | 1200 |"),
            "{t}"
        );
        assert!(
            t.contains("| softirq_entry | 500 | 150 | - | - | 0 | - |"),
            "{t}"
        );
        assert!(
            t.contains("| all programs | 300 ns per transaction |  | - |  | 1200 ns per RST |  |"),
            "{t}"
        );
        assert_eq!(kernel_ns_per_unit(&rows, Workload::Storm), Some(1200.0));
    }

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }

    #[test]
    fn targets_say_met_or_not() {
        let rows = vec![
            Row {
                workload: Workload::Rr,
                tool: Tool::Untraced,
                samples: Ok(vec![rate(100.0)]),
            },
            Row {
                workload: Workload::Rr,
                tool: Tool::Jsonl,
                samples: Ok(vec![rate(99.5)]),
            },
            Row {
                workload: Workload::Rr,
                tool: Tool::Stack,
                samples: Ok(vec![rate(95.0)]),
            },
        ];
        let mut t = String::new();
        targets_table(&mut t, &rows);
        assert!(
            t.contains("| TCP_RR >= 0.99 of untraced, -w file.jsonl | 0.995 | met |"),
            "{t}"
        );
        assert!(
            t.contains("| TCP_RR >= 0.99 of untraced, --stack | 0.950 | **not met** |"),
            "{t}"
        );
        assert!(
            t.contains("| TCP_CRR >= 0.98 of untraced, -w file.jsonl | - | not measured |"),
            "{t}"
        );
    }
}
