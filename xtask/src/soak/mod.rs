//! `cargo xtask soak`: rsttrace for a long time under mixed traffic, as a
//! daemon runs for weeks (not in CI). With `--stack`, `--metrics` and a
//! rotating `-w` export it watches an anonymous network namespace of its
//! own (`--netns`), where four generators each make exactly one RST per
//! unit of work (see `MIX`): connects to a closed port, close() with unread
//! data from a new python3 process each time (new pids, new address-space
//! layouts, so new user stacks), SO_LINGER 0 closes, and data after close.
//!
//! Every `SAMPLE_EVERY` it records rsttrace's RSS, descriptors and metrics
//! (a scrape); at the end it stops rsttrace with Ctrl-C and accounts for
//! every counter of its summary against what the generators made and what
//! the namespace's kernel counted (`Tcp: OutRsts`; nothing else runs
//! there). Writes target/soak/results.md; fails on any check that does not
//! hold (`Check`), including RSS that grows after warm-up.
//!
//! `workload` makes the traffic, `measure` samples rsttrace and reads what
//! it left, `report` accounts for every counter and writes the table.

mod measure;
mod report;
mod workload;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::Workspace;
use crate::bench::progstats;
use crate::bench::tracer::{Placement, Ready, Tracer};
use crate::bench::workload::{Netns, ResetCounters};
use crate::bench::{closed_port, program_names};
use crate::build::{self, Profile};
use measure::{ExportFiles, Row, metric_sum, scrape, status_kib};
use report::{Facts, render};
use workload::{Kind, MIX, generate};

pub struct Options {
    pub minutes: u64,
    pub release: bool,
    /// A prebuilt rsttrace instead of building this tree.
    pub binary: Option<PathBuf>,
}

/// How often a row is recorded.
const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// RSS before this is start-up and warm-up (kallsyms, first symbolizations).
const WARM_UP: Duration = Duration::from_secs(120);
/// The export rotates at this size and keeps this many files.
const ROTATE_SIZE: &str = "4M";
const ROTATE_COUNT: usize = 3;

pub fn soak(ws: &Workspace, opts: &Options) -> Result<()> {
    let binary = match &opts.binary {
        Some(b) => b.clone(),
        None => build::all(ws, Profile::from_release(opts.release))?,
    };
    let out_dir = ws.target_dir().join("soak");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir)?;
    let export = out_dir.join("soak.jsonl");
    let duration = Duration::from_secs(opts.minutes * 60);
    let netns = Netns::new()?;
    let netns_inode = std::fs::metadata(format!("/proc/self/fd/{}", netns.raw_fd()))?.ino();
    let metrics_port = closed_port()?;
    let args: Vec<String> = [
        "--stack",
        "--quiet",
        "--log-format",
        "json",
        "--rotate-size",
        ROTATE_SIZE,
        "--rotate-count",
        &ROTATE_COUNT.to_string(),
        "--metrics",
        &metrics_port.to_string(),
        "--netns",
        &netns_inode.to_string(),
        "--write",
        &export.to_string_lossy(),
    ]
    .map(String::from)
    .into();
    eprintln!(
        "soak: {} min, {} {}",
        opts.minutes,
        binary.display(),
        args.join(" ")
    );
    let tracer = Tracer::start(
        &binary,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        Ready::JsonEvent,
        Placement::default(),
    )?;
    let pid = tracer.pid();
    let kernel_before = netns.run(ResetCounters::read)??;

    let stop = AtomicBool::new(false);
    let made: BTreeMap<Kind, AtomicU64> = MIX.iter().map(|m| (m.kind, AtomicU64::new(0))).collect();
    let mut rows = Vec::new();
    let mut scrape_failures = 0;
    let mut rotations = 0;
    let started = Instant::now();
    let sampled: Result<()> = thread::scope(|s| {
        let generators: Vec<_> = MIX
            .iter()
            .map(|m| {
                let (netns, stop, made) = (&netns, &stop, &made[&m.kind]);
                s.spawn(move || generate(m, netns, stop, made))
            })
            .collect();
        let mut export_inode = None;
        let sampled = (|| -> Result<()> {
            while started.elapsed() < duration {
                thread::sleep(SAMPLE_EVERY.min(duration.saturating_sub(started.elapsed())));
                if generators.iter().any(|g| g.is_finished()) {
                    bail!("a traffic generator stopped early");
                }
                let t0 = Instant::now();
                let text = scrape(metrics_port).unwrap_or_else(|e| {
                    scrape_failures += 1;
                    eprintln!("soak: scrape failed: {e:#}");
                    String::new()
                });
                let inode = std::fs::metadata(&export).map(|m| m.ino()).ok();
                if export_inode.is_some() && inode != export_inode {
                    rotations += 1;
                }
                export_inode = inode;
                let row = Row {
                    at: started.elapsed(),
                    rss_kib: status_kib(pid, "VmRSS:")
                        .context("rsttrace exited during the soak")?,
                    fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64,
                    resets: metric_sum(&text, "rsttrace_resets_total"),
                    lost: metric_sum(&text, "rsttrace_lost_events_total"),
                    kernel_drops: metric_sum(&text, "rsttrace_kernel_drops_total"),
                    stack_errors: metric_sum(&text, "rsttrace_stack_errors_total"),
                    processes: made[&Kind::Unread].load(Ordering::Relaxed),
                    scrape_ms: t0.elapsed().as_millis(),
                };
                eprintln!(
                    "soak: {:>5.0} s  RSS {:>7} KiB  fds {:>3}  resets {:>9}  lost {}  kernel drops {}  stack errors {}  processes {}",
                    row.at.as_secs_f64(),
                    row.rss_kib,
                    row.fds,
                    row.resets,
                    row.lost,
                    row.kernel_drops,
                    row.stack_errors,
                    row.processes
                );
                rows.push(row);
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        for g in generators {
            g.join().expect("generator panicked")?;
        }
        sampled
    });
    sampled?;
    let kernel = netns.run(ResetCounters::read)??.since(kernel_before);
    let made: BTreeMap<Kind, u64> = made
        .iter()
        .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
        .collect();
    // Let the last events reach the outputs, take the final scrape, then
    // stop as a user would.
    thread::sleep(Duration::from_secs(2));
    let final_metrics = scrape(metrics_port).unwrap_or_else(|e| {
        scrape_failures += 1;
        eprintln!("soak: final scrape failed: {e:#}");
        String::new()
    });
    let names = program_names(&tracer.ready);
    let recursion: Vec<(String, u64)> = progstats::recursion_misses(pid)?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(id, n)| (names.get(&id).cloned().unwrap_or(id.to_string()), n))
        .collect();
    let finished = tracer.finish()?;
    let summary = finished
        .stderr
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .context("no JSON summary on rsttrace's stderr")?;
    let files = ExportFiles::read(&out_dir, "soak.jsonl")?;

    let facts = Facts {
        made: &made,
        kernel,
        summary: &summary,
        metrics: &final_metrics,
        scrape_failures,
        files: &files,
        rows: &rows,
        recursion: &recursion,
    };
    let checks = facts.checks();
    let table = render(opts, &facts, &checks, rotations, finished.peak_rss_kib);
    let path = out_dir.join("results.md");
    std::fs::write(&path, &table)?;
    print!("{table}");
    eprintln!("soak: written to {}", path.display());
    let failed: Vec<_> = checks.iter().filter(|c| !c.ok).collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} checks failed: {}",
            failed.len(),
            checks.len(),
            failed
                .iter()
                .map(|c| c.what.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
