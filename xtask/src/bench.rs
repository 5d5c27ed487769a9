//! `cargo xtask bench`: the cost of tracing under an RST storm, as ratios
//! measured in one run (never as timed tests).
//!
//! The storm: one thread per core connect()s to a closed loopback port in a
//! tight loop; every attempt makes the kernel send one RST (NO_SOCKET) and
//! receive it (SYN_SENT), i.e. two events. Scenarios are interleaved round
//! by round so that drift on a shared machine hits all of them alike.
//!
//! Timings are only reported. What fails the bench is a traced scenario
//! that lost events or saw fewer sent RSTs than the kernel counted
//! (`TcpOutRsts`): that is a correctness check, and `--short` runs it in CI.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::Workspace;
use crate::build::{self, Profile};
use crate::system;

pub struct Options {
    pub seconds: u64,
    pub rounds: u32,
    /// CI mode: one storm thread, results in results-short.md.
    pub short: bool,
    /// Another rsttrace build to run the same way, interleaved: on a shared
    /// machine only an A/B run in one go compares two builds fairly.
    pub baseline: Option<PathBuf>,
}

/// One way of running the storm.
#[derive(Clone, Copy)]
enum Scenario {
    Untraced,
    /// `rsttrace` with default options, text to stdout (sent to /dev/null).
    Traced,
    /// `rsttrace --quiet -w FILE.jsonl`.
    TracedJsonl,
    /// `rsttrace --stack`, text to stdout: kernel stacks for every event.
    TracedStack,
    /// `tcpdump -w FILE` with a filter for RSTs: what the usual tool costs.
    Tcpdump,
    /// `Traced` and `TracedJsonl` with the `--baseline` binary.
    BaselineText,
    BaselineJsonl,
}

impl Scenario {
    const ALL: [Scenario; 7] = [
        Scenario::Untraced,
        Scenario::Traced,
        Scenario::TracedJsonl,
        Scenario::TracedStack,
        Scenario::Tcpdump,
        Scenario::BaselineText,
        Scenario::BaselineJsonl,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Untraced => "untraced",
            Scenario::Traced => "rsttrace (text to stdout)",
            Scenario::TracedJsonl => "rsttrace -w file.jsonl",
            Scenario::TracedStack => "rsttrace --stack (text to stdout)",
            Scenario::Tcpdump => "tcpdump -w (RST filter)",
            Scenario::BaselineText => "baseline: text to stdout",
            Scenario::BaselineJsonl => "baseline: -w file.jsonl",
        }
    }

    /// Scenarios whose losses fail the bench: this build of rsttrace with
    /// the options an always-on tracer runs with. (`--stack` trades events
    /// for stacks under a storm, by design: it is reported, not checked.)
    fn is_rsttrace(self) -> bool {
        matches!(self, Scenario::Traced | Scenario::TracedJsonl)
    }
}

#[derive(Default, Clone)]
struct Sample {
    rst_per_sec: f64,
    out_rsts: u64,
    /// rsttrace: events with direction `sent`; tcpdump: packets captured.
    events_sent: u64,
    /// rsttrace: ring buffer full; tcpdump: packets dropped by the kernel.
    lost: u64,
    cpu_ns_per_event: f64,
    peak_rss_kib: u64,
    attach_ms: f64,
}

pub fn bench(ws: &Workspace, opts: &Options) -> Result<()> {
    let binary = build::all(ws, Profile::Release)?;
    let tcpdump = find_tcpdump();
    let port = closed_port()?;
    let cores = thread::available_parallelism().map_or(2, |n| n.get());
    // A full storm keeps every core busy, and on a loaded 2-core CI machine
    // rsttrace could then be starved into losses that say nothing about it.
    // One thread still makes tens of thousands of RSTs a second.
    let threads = if opts.short { 1 } else { cores };
    let out_dir = ws.target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    eprintln!(
        "bench: {} round(s) of {} s per scenario, {threads} storm thread(s) on {cores} core(s), closed port {port}",
        opts.rounds, opts.seconds
    );

    if let Err(why) = &tcpdump {
        eprintln!("bench: no tcpdump row: {why}");
    }
    // A scenario that cannot run keeps the reason for its row.
    let mut results: Vec<(Scenario, Result<Vec<Sample>, String>)> = Scenario::ALL
        .iter()
        .filter(|s| {
            opts.baseline.is_some()
                || !matches!(s, Scenario::BaselineText | Scenario::BaselineJsonl)
        })
        .map(|&s| match (s, &tcpdump) {
            (Scenario::Tcpdump, Err(why)) => (s, Err(why.clone())),
            _ => (s, Ok(Vec::new())),
        })
        .collect();
    let tcpdump = tcpdump.unwrap_or_default();
    for round in 1..=opts.rounds {
        for (scenario, samples) in results.iter_mut() {
            let Ok(samples) = samples else { continue };
            let sample = run_scenario(*scenario, &binary, &tcpdump, port, threads, opts, &out_dir)
                .with_context(|| format!("round {round}, {}", scenario.name()))?;
            eprintln!(
                "bench: round {round} {:<28} {:>10.0} RST/s",
                scenario.name(),
                sample.rst_per_sec
            );
            samples.push(sample);
        }
    }
    let table = render(&results, opts, threads, cores);
    print!("{table}");
    let path = out_dir.join(if opts.short {
        "results-short.md"
    } else {
        "results.md"
    });
    std::fs::write(&path, &table)?;
    eprintln!("bench: table written to {}", path.display());
    let failures = failures(&results);
    if !failures.is_empty() {
        bail!("rsttrace missed events:\n  {}", failures.join("\n  "));
    }
    eprintln!("bench: every traced run lost nothing and saw every RST the kernel counted");
    Ok(())
}

/// What fails the bench: an rsttrace run that lost events, or that saw fewer
/// sent RSTs than `TcpOutRsts` grew by while it was attached (it may see
/// more: RSTs of other network namespaces, and those just before and after
/// the counter was read). Never a rate or a ratio.
fn failures(results: &[(Scenario, Result<Vec<Sample>, String>)]) -> Vec<String> {
    let mut out = Vec::new();
    for (scenario, samples) in results {
        let Ok(samples) = samples else { continue };
        if !scenario.is_rsttrace() {
            continue;
        }
        for (round, s) in samples.iter().enumerate() {
            let round = round + 1;
            if s.lost > 0 {
                out.push(format!(
                    "round {round}, {}: {} events lost",
                    scenario.name(),
                    s.lost
                ));
            }
            if s.events_sent < s.out_rsts {
                out.push(format!(
                    "round {round}, {}: {} sent RSTs reported, but TcpOutRsts grew by {}",
                    scenario.name(),
                    s.events_sent,
                    s.out_rsts
                ));
            }
        }
    }
    out
}

/// tcpdump, installed with apt when missing and possible; otherwise why not.
fn find_tcpdump() -> Result<PathBuf, String> {
    let find = || {
        system::which("tcpdump").or_else(|| {
            let sbin = Path::new("/usr/sbin/tcpdump");
            sbin.exists().then(|| sbin.to_path_buf())
        })
    };
    if let Some(path) = find() {
        return Ok(path);
    }
    if !system::Apt::usable() {
        return Err(
            "tcpdump is not installed, and apt is not usable here (not root on Debian)".into(),
        );
    }
    if let Err(e) = system::Apt::new().install(&["tcpdump"]) {
        return Err(format!("tcpdump could not be installed: {e:#}"));
    }
    find().ok_or_else(|| "tcpdump was installed but is not on PATH or in /usr/sbin".into())
}

fn run_scenario(
    scenario: Scenario,
    binary: &Path,
    tcpdump: &Path,
    port: u16,
    threads: usize,
    opts: &Options,
    out_dir: &Path,
) -> Result<Sample> {
    let fresh = |name: &str| {
        let file = out_dir.join(name);
        let _ = std::fs::remove_file(&file);
        file.display().to_string()
    };
    let baseline = opts.baseline.as_deref().unwrap_or(binary);
    let tracer = match scenario {
        Scenario::Untraced => None,
        Scenario::Traced => Some(Tracer::start(binary, &[], RSTTRACE_READY)?),
        Scenario::TracedStack => Some(Tracer::start(binary, &["--stack"], RSTTRACE_READY)?),
        Scenario::BaselineText => Some(Tracer::start(baseline, &[], RSTTRACE_READY)?),
        Scenario::BaselineJsonl => {
            let file = fresh("storm-baseline.jsonl");
            Some(Tracer::start(
                baseline,
                &["--quiet", "--write", &file],
                RSTTRACE_READY,
            )?)
        }
        Scenario::TracedJsonl => {
            let file = fresh("storm.jsonl");
            Some(Tracer::start(
                binary,
                &["--quiet", "--write", &file],
                RSTTRACE_READY,
            )?)
        }
        Scenario::Tcpdump => {
            let file = fresh("storm.pcap");
            // -Z root: do not drop to the tcpdump user, who may not write here.
            let args = ["-i", "lo", "-Z", "root", "-w", &file, TCPDUMP_FILTER];
            Some(Tracer::start(tcpdump, &args, TCPDUMP_READY)?)
        }
    };
    let before = out_rsts()?;
    let (attempts, elapsed) = storm(port, threads, Duration::from_secs(opts.seconds));
    let out = out_rsts()? - before;
    let mut sample = Sample {
        rst_per_sec: attempts as f64 / elapsed.as_secs_f64(),
        out_rsts: out,
        ..Sample::default()
    };
    if let Some(t) = tracer {
        let (summary, cpu_ns) = t.finish(&mut sample)?;
        let events = if matches!(scenario, Scenario::Tcpdump) {
            sample.events_sent = tcpdump_number(&summary, "packets captured");
            sample.lost = tcpdump_number(&summary, "packets dropped by kernel");
            // One packet per RST.
            sample.events_sent
        } else {
            sample.events_sent =
                summary_number(&summary, |l| l.split_whitespace().nth(1) == Some("sent"));
            sample.lost = summary_number(&summary, |l| l.starts_with("lost"));
            // Two events per RST: sent and received.
            sample.events_sent * 2
        };
        sample.cpu_ns_per_event = cpu_ns / events.max(1) as f64;
    }
    Ok(sample)
}

const RSTTRACE_READY: &str = "tracing TCP resets";
/// What tcpdump prints on stderr once its capture is open.
const TCPDUMP_READY: &str = "listening on lo";
const TCPDUMP_FILTER: &str = "tcp[tcpflags] & tcp-rst != 0";

/// A loopback port with no listener.
fn closed_port() -> Result<u16> {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// connect() in a loop on every thread until `duration` passes; returns attempts.
fn storm(port: u16, threads: usize, duration: Duration) -> (u64, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into();
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, count) = (stop.clone(), count.clone());
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
                    n += 1;
                }
                count.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    (count.load(Ordering::Relaxed), start.elapsed())
}

/// `Tcp: ... OutRsts` from /proc/net/snmp.
fn out_rsts() -> Result<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp")?;
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        bail!("no Tcp lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "OutRsts")
        .and_then(|(_, v)| v.parse().ok())
        .context("no OutRsts in /proc/net/snmp")
}

/// A tracing process (rsttrace or tcpdump) running alongside the storm.
struct Tracer {
    child: Child,
    stderr: mpsc::Receiver<String>,
    attach: Duration,
    /// CPU time (clock ticks) it had used when it became ready.
    cpu_at_ready: u64,
}

impl Tracer {
    /// Starts `binary` and waits until it prints `ready` on stderr.
    fn start(binary: &Path, args: &[&str], ready: &str) -> Result<Tracer> {
        let started = Instant::now();
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().context("no stderr")?;
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains(ready) => break,
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "{} was not ready within 30 s:\n{}",
                        binary.display(),
                        seen.join("\n")
                    );
                }
            }
        }
        let attach = started.elapsed();
        // Start-up (parsing kernel BTF, loading) is paid once, not per event.
        let cpu_at_ready = proc_usage(child.id())?.0;
        Ok(Tracer {
            child,
            stderr: rx,
            attach,
            cpu_at_ready,
        })
    }

    /// Stops the tracer with SIGINT (both print their summary on stderr
    /// then); fills in its peak RSS and attach time and returns the
    /// summary and the CPU time it used since it was ready, in ns.
    fn finish(mut self, sample: &mut Sample) -> Result<(Vec<String>, f64)> {
        let pid = self.child.id();
        let (cpu_ticks, peak_kib) = proc_usage(pid)?;
        Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()?;
        let status = self.child.wait()?;
        // The reader thread ends with the pipe: wait for the last lines.
        let summary: Vec<String> = self.stderr.iter().collect();
        if !status.success() {
            bail!("tracer failed: {status}\n{}", summary.join("\n"));
        }
        sample.peak_rss_kib = peak_kib;
        sample.attach_ms = self.attach.as_secs_f64() * 1e3;
        let cpu_ticks = cpu_ticks.saturating_sub(self.cpu_at_ready);
        Ok((summary, cpu_ticks as f64 * 1e9 / clock_ticks()))
    }
}

/// `N packets captured` and the like, from tcpdump's exit statistics.
fn tcpdump_number(lines: &[String], what: &str) -> u64 {
    lines
        .iter()
        .find_map(|l| l.trim().strip_suffix(what)?.trim().parse().ok())
        .unwrap_or(0)
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

/// (utime + stime in clock ticks, VmHWM in KiB) of a live process.
fn proc_usage(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`, which may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the comm.
    let cpu = ticks(11) + ticks(12);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok((cpu, hwm))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

fn mean(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    samples.iter().map(&f).sum::<f64>() / samples.len().max(1) as f64
}

fn render(
    results: &[(Scenario, Result<Vec<Sample>, String>)],
    opts: &Options,
    threads: usize,
    cores: usize,
) -> String {
    let untraced = results
        .iter()
        .find(|(s, _)| matches!(s, Scenario::Untraced))
        .and_then(|(_, v)| v.as_ref().ok())
        .map(|v| mean(v, |s| s.rst_per_sec))
        .unwrap_or(0.0);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\nrsttrace bench{}: RST storm on loopback, {} round(s) x {} s, interleaved, {threads} storm thread(s) on {cores} core(s)",
        if opts.short { " (short)" } else { "" },
        opts.rounds,
        opts.seconds
    );
    if opts.short && threads < cores {
        let _ = writeln!(
            t,
            "(short mode storms with {threads} thread(s), not {cores}, so that rsttrace keeps up on a loaded CI machine)"
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| scenario | RST/s | ratio vs untraced | sent events / TcpOutRsts | lost | CPU ns/event | peak RSS MiB | attach ms |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|");
    for (scenario, samples) in results {
        let samples = match samples {
            Ok(s) => s,
            Err(why) => {
                let _ = writeln!(t, "| {} | not run: {why} | | | | | | |", scenario.name());
                continue;
            }
        };
        let rate = mean(samples, |s| s.rst_per_sec);
        let traced = !matches!(scenario, Scenario::Untraced);
        let coverage = samples.iter().map(|s| s.events_sent).sum::<u64>() as f64
            / samples.iter().map(|s| s.out_rsts).sum::<u64>().max(1) as f64;
        let dash = || "-".to_string();
        let _ = writeln!(
            t,
            "| {} | {:.0} | {:.3} | {} | {} | {} | {} | {} |",
            scenario.name(),
            rate,
            rate / untraced.max(1.0),
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
            if traced {
                format!("{:.0}", mean(samples, |s| s.cpu_ns_per_event))
            } else {
                dash()
            },
            if traced {
                format!(
                    "{:.1}",
                    samples.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0
                )
            } else {
                dash()
            },
            if traced {
                format!("{:.0}", mean(samples, |s| s.attach_ms))
            } else {
                dash()
            },
        );
    }
    let _ = writeln!(
        t,
        "\nCPU ns/event: the tracer's user+system time from ready to exit (start-up excluded) per event; rsttrace sees two events per RST (sent and received)."
    );
    if results
        .iter()
        .any(|(s, v)| matches!(s, Scenario::Tcpdump) && v.is_ok())
    {
        let _ = writeln!(
            t,
            "tcpdump: events are packets captured (one per RST), lost are packets dropped by the kernel; its CPU leaves out the in-kernel filter and copy, which the storm pays."
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        scenario: Scenario,
        out_rsts: u64,
        sent: u64,
        lost: u64,
    ) -> Vec<(Scenario, Result<Vec<Sample>, String>)> {
        let sample = Sample {
            out_rsts,
            events_sent: sent,
            lost,
            ..Sample::default()
        };
        vec![(scenario, Ok(vec![sample]))]
    }

    #[test]
    fn losses_and_missed_rsts_fail_the_bench() {
        assert!(failures(&run(Scenario::Traced, 100, 100, 0)).is_empty());
        // RSTs of other namespaces or around the counter reads: more is fine.
        assert!(failures(&run(Scenario::TracedJsonl, 100, 103, 0)).is_empty());
        let lost = failures(&run(Scenario::Traced, 100, 100, 1));
        assert!(lost[0].contains("1 events lost"), "{lost:?}");
        let missed = failures(&run(Scenario::TracedJsonl, 100, 99, 0));
        assert!(
            missed[0].contains("99 sent RSTs reported, but TcpOutRsts grew by 100"),
            "{missed:?}"
        );
    }

    #[test]
    fn tcpdump_drops_are_reported_not_failed() {
        assert!(failures(&run(Scenario::Tcpdump, 100, 50, 50)).is_empty());
    }

    #[test]
    fn tcpdump_exit_statistics() {
        let lines: Vec<String> = [
            "listening on lo, link-type EN10MB (Ethernet), snapshot length 262144 bytes",
            "",
            "123 packets captured",
            "130 packets received by filter",
            "7 packets dropped by kernel",
        ]
        .map(String::from)
        .into();
        assert_eq!(tcpdump_number(&lines, "packets captured"), 123);
        assert_eq!(tcpdump_number(&lines, "packets dropped by kernel"), 7);
    }
}
