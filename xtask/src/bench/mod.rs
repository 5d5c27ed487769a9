//! `cargo xtask bench`: what tracing costs, as ratios measured in one run
//! (never as timed tests).
//!
//! Three workloads, each untraced and traced several ways:
//! - healthy traffic with no RST at all, the common case on a production
//!   host: 1-byte request/response on one connection (TCP_RR style) and
//!   connect/request/response/close (TCP_CRR style), on the loopback of a
//!   namespace of their own, pinned to one CPU with the tracer on another;
//! - an RST storm: threads connect() to a closed loopback port in a tight
//!   loop; every attempt makes the kernel send one RST (NO_SOCKET) and
//!   receive it (SYN_SENT), i.e. two events. Twice: on every core, where
//!   the tracer competes with the storm for CPU, and on one thread pinned
//!   to the healthy workloads' CPU with the tracer on the other, which
//!   measures what tracing costs the workload's own CPU.
//!
//! Scenarios are interleaved round by round so that drift on a shared
//! machine hits all of them alike; ratios are medians of each round's
//! traced/untraced. One traced scenario per workload runs with the kernel's
//! program statistics on, for the per-program cost table.
//!
//! Timings are only reported, next to the targets of issue 12. What fails
//! the bench is a correctness check, which `--short` runs in CI: a traced
//! scenario that lost events or saw fewer sent RSTs than the kernel counted
//! (`TcpOutRsts`), or a healthy workload that made an RST.

pub(crate) mod progstats;
mod report;
pub(crate) mod tracer;
pub(crate) mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::Workspace;
use crate::build::{self, Profile};
use progstats::ProgramCost;
use serde_json::Value;
use tracer::{Placement, Ready, TCPDUMP_FILTER, TCPDUMP_READY, Tracer};
use workload::{Healthy, ResetCounters};

pub struct Options {
    pub seconds: u64,
    pub rounds: u32,
    /// CI mode: one storm thread, results in results-short.md.
    pub short: bool,
    /// Another rsttrace build to run the same way, interleaved: on a shared
    /// machine only an A/B run in one go compares two builds fairly.
    pub baseline: Option<PathBuf>,
    /// Only these workloads; empty: all.
    pub workloads: Vec<Workload>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Workload {
    /// TCP_RR style: 1-byte request/response on one connection.
    Rr,
    /// TCP_CRR style: connect, request/response, close.
    Crr,
    /// connect() to a closed port in a loop: two RSTs per attempt, on
    /// every core (short mode: one thread), the tracer among them.
    Storm,
    /// The storm on one thread pinned to one CPU, the tracer on another.
    PinnedStorm,
}

impl Workload {
    const ALL: [Workload; 4] = [
        Workload::Rr,
        Workload::Crr,
        Workload::Storm,
        Workload::PinnedStorm,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::Rr => "TCP_RR",
            Workload::Crr => "TCP_CRR",
            Workload::Storm => "RST storm",
            Workload::PinnedStorm => "pinned RST storm",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Workload::Rr => "transactions/s",
            Workload::Crr => "connections/s",
            Workload::Storm | Workload::PinnedStorm => "RST/s",
        }
    }

    fn is_healthy(self) -> bool {
        !self.is_storm()
    }

    fn is_storm(self) -> bool {
        matches!(self, Workload::Storm | Workload::PinnedStorm)
    }

    /// Whether the workload has a CPU of its own, and its tracer another.
    fn is_pinned(self) -> bool {
        self != Workload::Storm
    }

    /// The ways each workload runs. The storm keeps its text-to-stdout rows,
    /// whose history goes back further; healthy traffic has no events to print.
    fn tools(self) -> &'static [Tool] {
        match self {
            Workload::Storm => &[
                Tool::Untraced,
                Tool::Text,
                Tool::Jsonl,
                Tool::Stack,
                Tool::StackAll,
                Tool::Tcpdump,
                Tool::JsonlStats,
                Tool::BaselineText,
                Tool::BaselineJsonl,
            ],
            Workload::PinnedStorm => &[
                Tool::Untraced,
                Tool::Text,
                Tool::Jsonl,
                Tool::Stack,
                Tool::Tcpdump,
                Tool::JsonlStats,
                Tool::BaselineJsonl,
            ],
            Workload::Rr => &[
                Tool::Untraced,
                Tool::Jsonl,
                Tool::Stack,
                Tool::Firewall,
                Tool::Tcpdump,
                Tool::JsonlStats,
                Tool::FirewallStats,
                Tool::BaselineJsonl,
            ],
            Workload::Crr => &[
                Tool::Untraced,
                Tool::Jsonl,
                Tool::Stack,
                Tool::Firewall,
                Tool::Tcpdump,
                Tool::JsonlStats,
                Tool::BaselineJsonl,
            ],
        }
    }
}

/// What runs beside the workload.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Untraced,
    /// `rsttrace` with default options, text to stdout, which is a file:
    /// rsttrace formats nothing for a stdout that is /dev/null.
    Text,
    /// `rsttrace --quiet -w FILE.jsonl`: the always-on configuration.
    Jsonl,
    /// `Jsonl` plus `--stack`, within its default `--stack-budget`.
    Stack,
    /// `Stack` with every event's stacks (`--stack-budget 0`): what a
    /// stack walk costs the RST's path.
    StackAll,
    /// `Jsonl` plus `--firewall`: on a kernel without kprobes, a program
    /// on every packet sent (with kprobes it costs nothing, and this row
    /// measures the same as `Jsonl`).
    Firewall,
    /// `Firewall` with the kernel's program statistics on: its per-packet
    /// program's cost.
    FirewallStats,
    /// `tcpdump -w FILE` with a filter for RSTs: what the usual tool costs.
    Tcpdump,
    /// `Jsonl` with the kernel's program statistics on (which cost a little
    /// themselves): the per-program cost table.
    JsonlStats,
    /// `Text` and `Jsonl` with the `--baseline` binary.
    BaselineText,
    BaselineJsonl,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Untraced => "untraced",
            Tool::Text => "rsttrace (text to stdout, a file)",
            Tool::Jsonl => "rsttrace -w file.jsonl",
            Tool::Stack => "rsttrace -w file.jsonl --stack",
            Tool::StackAll => "rsttrace -w file.jsonl --stack --stack-budget 0",
            Tool::Firewall => "rsttrace -w file.jsonl --firewall",
            Tool::FirewallStats => "rsttrace --firewall, bpf stats on",
            Tool::Tcpdump => "tcpdump -w (RST filter)",
            Tool::JsonlStats => "rsttrace -w file.jsonl, bpf stats on",
            Tool::BaselineText => "baseline: text to stdout, a file",
            Tool::BaselineJsonl => "baseline: -w file.jsonl",
        }
    }

    fn is_baseline(self) -> bool {
        matches!(self, Tool::BaselineText | Tool::BaselineJsonl)
    }

    fn is_rsttrace(self) -> bool {
        !matches!(self, Tool::Untraced | Tool::Tcpdump)
    }

    /// Whose losses fail the bench: this build with the options an always-on
    /// tracer runs with. (`--stack` may lose events at a storm's start,
    /// while an event waits for its first user frames: reported, not
    /// checked.)
    fn is_checked(self) -> bool {
        matches!(
            self,
            Tool::Text | Tool::Jsonl | Tool::JsonlStats | Tool::Firewall | Tool::FirewallStats
        )
    }

    /// rsttrace's options, with `file` as the export.
    fn rsttrace_args(self, file: &str) -> Vec<&str> {
        match self {
            Tool::Text | Tool::BaselineText => vec![],
            Tool::Jsonl | Tool::JsonlStats | Tool::BaselineJsonl => {
                vec!["--quiet", "--write", file]
            }
            Tool::Stack => vec!["--quiet", "--write", file, "--stack"],
            Tool::StackAll => vec!["--quiet", "--write", file, "--stack", "--stack-budget", "0"],
            Tool::Firewall | Tool::FirewallStats => {
                vec!["--quiet", "--write", file, "--firewall"]
            }
            Tool::Untraced | Tool::Tcpdump => unreachable!("not rsttrace"),
        }
    }
}

/// One run of one scenario.
#[derive(Default, Clone)]
struct Sample {
    /// Workload units per second: RSTs, transactions or connections.
    rate: f64,
    /// Healthy workloads: units per second of the generator's CPU time.
    cpu_rate: Option<f64>,
    /// Storm: the host's counters; healthy: the namespace's, which must
    /// not move.
    resets: ResetCounters,
    /// rsttrace: events with direction `sent`; tcpdump: packets captured.
    events_sent: u64,
    /// rsttrace: all events; tcpdump: packets captured.
    events: u64,
    /// rsttrace: ring buffer full; tcpdump: packets dropped by the kernel.
    lost: u64,
    tracer: Option<TracerCost>,
    /// `Tool::JsonlStats`: each program's runs, the seconds measured, and
    /// the workload units done meanwhile.
    programs: Option<ProgramRuns>,
}

#[derive(Clone, Copy, Default)]
struct TracerCost {
    /// From ready to exit: CPU time and wall time.
    cpu_ns: f64,
    seconds: f64,
    peak_rss_kib: u64,
    attach_ms: f64,
}

#[derive(Clone, Default)]
struct ProgramRuns {
    costs: Vec<ProgramCost>,
    seconds: f64,
    units: u64,
}

/// Every run of one scenario, or why it could not run.
struct Row {
    workload: Workload,
    tool: Tool,
    samples: Result<Vec<Sample>, String>,
}

/// What every scenario shares.
struct Setup {
    binary: Rsttrace,
    baseline: Option<Rsttrace>,
    tcpdump: PathBuf,
    closed_port: u16,
    storm_threads: usize,
    duration: Duration,
    out_dir: PathBuf,
    healthy: Healthy,
    /// The CPU the healthy workloads run on, and the one their tracer does.
    workload_cpu: Option<usize>,
    tracer_cpu: Option<usize>,
}

pub fn bench(ws: &Workspace, opts: &Options) -> Result<()> {
    let binary = build::all(ws, Profile::Release)?;
    let tcpdump = tracer::find_tcpdump();
    let cores = thread::available_parallelism().map_or(2, |n| n.get());
    // A full storm keeps every core busy, and on a loaded 2-core CI machine
    // rsttrace could then be starved into losses that say nothing about it.
    // One thread still makes tens of thousands of RSTs a second.
    let storm_threads = if opts.short { 1 } else { cores };
    let cpus = workload::allowed_cpus();
    let (workload_cpu, tracer_cpu) = match cpus.as_slice() {
        [first, .., last] => (Some(*first), Some(*last)),
        _ => (None, None),
    };
    let out_dir = ws.target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let setup = Setup {
        binary: Rsttrace::new(binary),
        baseline: opts.baseline.clone().map(Rsttrace::new),
        tcpdump: tcpdump.clone().unwrap_or_default(),
        closed_port: closed_port()?,
        storm_threads,
        duration: Duration::from_secs(opts.seconds),
        out_dir,
        healthy: Healthy::new(workload_cpu)?,
        workload_cpu,
        tracer_cpu,
    };
    let stats_were_on = progstats::already_enabled();
    eprintln!(
        "bench: {} round(s) of {} s per scenario; healthy traffic on CPU {}, tracers on CPU {}; storm: {storm_threads} thread(s) on {cores} core(s), closed port {}",
        opts.rounds,
        opts.seconds,
        show_cpu(workload_cpu),
        show_cpu(tracer_cpu),
        setup.closed_port
    );
    if let Err(why) = &tcpdump {
        eprintln!("bench: no tcpdump rows: {why}");
    }

    // A scenario that cannot run keeps the reason for its row.
    let mut rows: Vec<Row> = Workload::ALL
        .iter()
        .filter(|w| opts.workloads.is_empty() || opts.workloads.contains(w))
        .flat_map(|&w| w.tools().iter().map(move |&t| (w, t)))
        .filter(|(_, t)| opts.baseline.is_some() || !t.is_baseline())
        .map(|(workload, tool)| Row {
            workload,
            tool,
            samples: match (tool, &tcpdump) {
                (Tool::Tcpdump, Err(why)) => Err(why.clone()),
                _ => Ok(Vec::new()),
            },
        })
        .collect();
    for round in 1..=opts.rounds {
        for row in &mut rows {
            let Ok(samples) = &mut row.samples else {
                continue;
            };
            let sample = run_scenario(row.workload, row.tool, &setup).with_context(|| {
                format!(
                    "round {round}, {}, {}",
                    row.workload.name(),
                    row.tool.name()
                )
            })?;
            eprintln!(
                "bench: round {round} {:<9} {:<38} {:>10.0} {}{}",
                row.workload.name(),
                row.tool.name(),
                sample.rate,
                row.workload.unit(),
                sample
                    .cpu_rate
                    .map(|r| format!(", {r:.0} per CPU-second"))
                    .unwrap_or_default()
            );
            samples.push(sample);
        }
    }
    let context = report::Context {
        short: opts.short,
        rounds: opts.rounds,
        seconds: opts.seconds,
        storm_threads,
        cores,
        workload_cpu: setup.workload_cpu,
        tracer_cpu: setup.tracer_cpu,
        stats_were_on,
    };
    let table = report::render(&rows, &context);
    print!("{table}");
    let path = setup.out_dir.join(if opts.short {
        "results-short.md"
    } else {
        "results.md"
    });
    std::fs::write(&path, &table)?;
    eprintln!("bench: table written to {}", path.display());
    let failures = failures(&rows);
    if !failures.is_empty() {
        bail!("the bench found errors:\n  {}", failures.join("\n  "));
    }
    eprintln!(
        "bench: every traced run lost nothing and saw every RST the kernel counted; the healthy workloads made no RST"
    );
    Ok(())
}

fn show_cpu(cpu: Option<usize>) -> String {
    cpu.map_or_else(|| "any".into(), |c| c.to_string())
}

/// What fails the bench (never a rate or a ratio):
/// - an rsttrace run of the storm that lost events, or that saw fewer sent RSTs than
///   `TcpOutRsts` grew by while it was attached (it may see more: RSTs of
///   other network namespaces, and those just before and after the counter
///   was read);
/// - a healthy workload that made an RST, which would make its rows
///   measure something else.
fn failures(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for row in rows {
        let Ok(samples) = &row.samples else { continue };
        let name = format!("{}, {}", row.workload.name(), row.tool.name());
        for (round, s) in samples.iter().enumerate() {
            let round = round + 1;
            if row.workload.is_healthy() && !s.resets.is_zero() {
                out.push(format!(
                    "round {round}, {name}: the healthy workload made RSTs (OutRsts +{}, EstabResets +{}, AttemptFails +{})",
                    s.resets.out_rsts, s.resets.estab_resets, s.resets.attempt_fails
                ));
            }
            // Healthy workloads make no RST: what rsttrace sees (and may
            // lose) then comes from elsewhere on the host.
            if !row.tool.is_checked() || row.workload.is_healthy() {
                continue;
            }
            if s.lost > 0 {
                out.push(format!("round {round}, {name}: {} events lost", s.lost));
            }
            if !row.workload.is_healthy() && s.events_sent < s.resets.out_rsts {
                out.push(format!(
                    "round {round}, {name}: {} sent RSTs reported, but TcpOutRsts grew by {}",
                    s.events_sent, s.resets.out_rsts
                ));
            }
        }
    }
    out
}

fn run_scenario(workload: Workload, tool: Tool, setup: &Setup) -> Result<Sample> {
    let export = setup.out_dir.join(format!(
        "{}-{tool:?}.{}",
        workload.name().replace(' ', "-"),
        if tool == Tool::Tcpdump {
            "pcap"
        } else {
            "jsonl"
        }
    ));
    let _ = std::fs::remove_file(&export);
    let file = export.display().to_string();
    // Text rows print to a file: rsttrace skips a stdout that is /dev/null.
    let text_out =
        matches!(tool, Tool::Text | Tool::BaselineText).then(|| export.with_extension("txt"));
    let mut placement = match workload.is_pinned() {
        true => Placement {
            cpu: setup.tracer_cpu,
            // tcpdump captures the loopback of the healthy workloads' own namespace.
            netns: (tool == Tool::Tcpdump && workload.is_healthy()).then(|| setup.healthy.netns()),
            stdout: None,
        },
        false => Placement::default(),
    };
    placement.stdout = text_out.as_deref();
    let tracer = match tool {
        Tool::Untraced => None,
        Tool::Tcpdump => {
            // -Z root: do not drop to the tcpdump user, who may not write here.
            let args = ["-i", "lo", "-Z", "root", "-w", &file, TCPDUMP_FILTER];
            Some(Tracer::start(
                &setup.tcpdump,
                &args,
                TCPDUMP_READY,
                placement,
            )?)
        }
        _ => {
            let rsttrace = match (tool.is_baseline(), &setup.baseline) {
                (true, Some(baseline)) => baseline,
                _ => &setup.binary,
            };
            let mut args = tool.rsttrace_args(&file);
            let ready = match rsttrace.json_status {
                true => {
                    args.extend(["--log-format", "json"]);
                    Ready::JsonEvent
                }
                false => Ready::Text(RSTTRACE_READY),
            };
            Some(Tracer::start(&rsttrace.path, &args, ready, placement)?)
        }
    };
    let stats = match (&tracer, tool) {
        (Some(t), Tool::JsonlStats | Tool::FirewallStats) => Some(progstats::Measurement::start(
            t.pid(),
            &program_names(&t.ready),
        )?),
        _ => None,
    };
    let (done, resets) = match workload {
        Workload::Storm | Workload::PinnedStorm => {
            let (threads, cpu) = match workload.is_pinned() {
                true => (1, setup.workload_cpu),
                false => (setup.storm_threads, None),
            };
            let before = ResetCounters::read()?;
            let done = workload::storm(setup.closed_port, threads, cpu, setup.duration)?;
            (done, ResetCounters::read()?.since(before))
        }
        Workload::Rr | Workload::Crr => {
            let before = setup.healthy.reset_counters()?;
            let done = match workload {
                Workload::Rr => setup.healthy.request_response(setup.duration)?,
                _ => setup.healthy.connect_request_response(setup.duration)?,
            };
            (done, setup.healthy.reset_counters()?.since(before))
        }
    };
    if done.units == 0 {
        bail!("the workload did no work");
    }
    let mut sample = Sample {
        rate: done.units as f64 / done.elapsed.as_secs_f64(),
        cpu_rate: done
            .cpu
            .map(|cpu| done.units as f64 / cpu.as_secs_f64().max(1e-9)),
        resets,
        ..Sample::default()
    };
    if let Some(stats) = stats {
        let (costs, elapsed) = stats.finish()?;
        sample.programs = Some(ProgramRuns {
            costs,
            seconds: elapsed.as_secs_f64(),
            units: done.units,
        });
    }
    if let Some(t) = tracer {
        let attach_ms = t.attach.as_secs_f64() * 1e3;
        let finished = t.finish()?;
        if tool == Tool::Tcpdump {
            sample.events_sent = tracer::tcpdump_number(&finished.stderr, "packets captured");
            sample.events = sample.events_sent;
            sample.lost = tracer::tcpdump_number(&finished.stderr, "packets dropped by kernel");
        } else {
            (sample.events_sent, sample.events, sample.lost) = rsttrace_counts(&finished.stderr)?;
        }
        sample.tracer = Some(TracerCost {
            cpu_ns: finished.cpu_ns,
            seconds: finished.seconds,
            peak_rss_kib: finished.peak_rss_kib,
            attach_ms,
        });
    }
    // A storm's export (and text) runs to hundreds of megabytes.
    let _ = std::fs::remove_file(&export);
    if let Some(text) = &text_out {
        let _ = std::fs::remove_file(text);
    }
    Ok(sample)
}

/// An rsttrace binary, and whether it reports its status as JSON lines
/// (`--log-format json`; a `--baseline` build may predate them).
struct Rsttrace {
    path: PathBuf,
    json_status: bool,
}

impl Rsttrace {
    fn new(path: PathBuf) -> Rsttrace {
        let help = crate::system::capture(std::process::Command::new(&path).arg("--help"));
        Rsttrace {
            json_status: help.is_some_and(|h| h.contains("--log-format")),
            path,
        }
    }
}

/// The human banner, for builds without JSON status lines.
const RSTTRACE_READY: &str = "tracing TCP resets";

/// Program id -> name in the object, from rsttrace's ready line (the
/// kernel keeps only 15 characters of a name).
pub(crate) fn program_names(ready: &Value) -> BTreeMap<u32, String> {
    ready["programs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                u32::try_from(p["id"].as_u64()?).ok()?,
                p["name"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// (sent events, all events, lost) from rsttrace's exit summary: its JSON
/// status line, or the human table of builds without one.
fn rsttrace_counts(stderr: &[String]) -> Result<(u64, u64, u64)> {
    let summary = stderr
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary");
    if let Some(s) = summary {
        let n = |key: &str| {
            s[key]
                .as_u64()
                .with_context(|| format!("no {key} in rsttrace's summary: {s}"))
        };
        return Ok((n("sent")?, n("total")?, n("lost")?));
    }
    Ok((
        summary_number(stderr, |l| l.split_whitespace().nth(1) == Some("sent")),
        summary_number(stderr, |l| l.starts_with("total")),
        summary_number(stderr, |l| l.starts_with("lost")),
    ))
}

/// A loopback port with no listener (in the calling thread's namespace).
pub(crate) fn closed_port() -> Result<u16> {
    use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// Sums the last number of every summary line `pick` selects.
fn summary_number(lines: &[String], pick: impl Fn(&str) -> bool) -> u64 {
    lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| pick(l))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests;
