//! `cargo xtask bench`: the cost of tracing under an RST storm, as ratios
//! measured in one run (never as timed tests).
//!
//! The storm: one thread per core connect()s to a closed loopback port in a
//! tight loop; every attempt makes the kernel send one RST (NO_SOCKET) and
//! receive it (SYN_SENT), i.e. two events. Scenarios are interleaved round
//! by round so that drift on a shared machine hits all of them alike.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::Workspace;
use crate::build::{self, Profile};

pub struct Options {
    pub seconds: u64,
    pub rounds: u32,
}

/// One way of running the storm.
#[derive(Clone, Copy)]
enum Scenario {
    Untraced,
    /// `rsttrace` with default options, text to stdout (sent to /dev/null).
    Traced,
    /// `rsttrace --quiet -w FILE.jsonl`.
    TracedJsonl,
}

impl Scenario {
    const ALL: [Scenario; 3] = [Scenario::Untraced, Scenario::Traced, Scenario::TracedJsonl];

    fn name(self) -> &'static str {
        match self {
            Scenario::Untraced => "untraced",
            Scenario::Traced => "rsttrace (text to stdout)",
            Scenario::TracedJsonl => "rsttrace -w file.jsonl",
        }
    }
}

#[derive(Default, Clone)]
struct Sample {
    rst_per_sec: f64,
    out_rsts: u64,
    events_sent: u64,
    lost: u64,
    cpu_ns_per_event: f64,
    peak_rss_kib: u64,
    attach_ms: f64,
}

pub fn bench(ws: &Workspace, opts: &Options) -> Result<()> {
    let binary = build::all(ws, Profile::Release)?;
    let port = closed_port()?;
    let threads = thread::available_parallelism().map_or(2, |n| n.get());
    let out_dir = ws.target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    eprintln!(
        "bench: {} round(s) of {} s per scenario, {threads} storm threads, closed port {port}",
        opts.rounds, opts.seconds
    );

    let mut results: Vec<(Scenario, Vec<Sample>)> =
        Scenario::ALL.iter().map(|&s| (s, Vec::new())).collect();
    for round in 1..=opts.rounds {
        for (scenario, samples) in results.iter_mut() {
            let sample = run_scenario(*scenario, &binary, port, threads, opts.seconds, &out_dir)
                .with_context(|| format!("round {round}, {}", scenario.name()))?;
            eprintln!(
                "bench: round {round} {:<28} {:>10.0} RST/s",
                scenario.name(),
                sample.rst_per_sec
            );
            samples.push(sample);
        }
    }
    let table = render(&results, opts);
    print!("{table}");
    let path = out_dir.join("results.md");
    std::fs::write(&path, &table)?;
    eprintln!("bench: table written to {}", path.display());
    let lost: u64 = results.iter().flat_map(|(_, s)| s).map(|s| s.lost).sum();
    if lost > 0 {
        bail!("{lost} events were lost during the bench");
    }
    Ok(())
}

fn run_scenario(
    scenario: Scenario,
    binary: &Path,
    port: u16,
    threads: usize,
    seconds: u64,
    out_dir: &Path,
) -> Result<Sample> {
    let tracer = match scenario {
        Scenario::Untraced => None,
        Scenario::Traced => Some(Tracer::start(binary, &[])?),
        Scenario::TracedJsonl => {
            let file = out_dir.join("storm.jsonl");
            let _ = std::fs::remove_file(&file);
            let file = file.display().to_string();
            Some(Tracer::start(binary, &["--quiet", "--write", &file])?)
        }
    };
    let before = out_rsts()?;
    let (attempts, elapsed) = storm(port, threads, Duration::from_secs(seconds));
    let out = out_rsts()? - before;
    let mut sample = Sample {
        rst_per_sec: attempts as f64 / elapsed.as_secs_f64(),
        out_rsts: out,
        ..Sample::default()
    };
    if let Some(t) = tracer {
        t.finish(&mut sample)?;
    }
    Ok(sample)
}

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

struct Tracer {
    child: Child,
    stderr: mpsc::Receiver<String>,
    attach: Duration,
}

impl Tracer {
    fn start(binary: &Path, args: &[&str]) -> Result<Tracer> {
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
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("tracing TCP resets") => break,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    bail!("rsttrace did not attach within 30 s");
                }
            }
        }
        Ok(Tracer {
            child,
            stderr: rx,
            attach: started.elapsed(),
        })
    }

    /// Stops rsttrace and reads its cost and its summary.
    fn finish(mut self, sample: &mut Sample) -> Result<()> {
        let pid = self.child.id();
        let (cpu_ticks, peak_kib) = proc_usage(pid)?;
        Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()?;
        let status = self.child.wait()?;
        let summary: Vec<String> = self.stderr.try_iter().collect();
        if !status.success() {
            bail!("rsttrace failed: {status}\n{}", summary.join("\n"));
        }
        sample.events_sent =
            summary_number(&summary, |l| l.split_whitespace().nth(1) == Some("sent"));
        sample.lost = summary_number(&summary, |l| l.starts_with("lost"));
        sample.peak_rss_kib = peak_kib;
        sample.attach_ms = self.attach.as_secs_f64() * 1e3;
        let events = (sample.events_sent * 2).max(1);
        sample.cpu_ns_per_event = cpu_ticks as f64 * 1e9 / clock_ticks() / events as f64;
        Ok(())
    }
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

fn render(results: &[(Scenario, Vec<Sample>)], opts: &Options) -> String {
    let untraced = results
        .iter()
        .find(|(s, _)| matches!(s, Scenario::Untraced))
        .map(|(_, v)| mean(v, |s| s.rst_per_sec))
        .unwrap_or(0.0);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\nrsttrace bench: RST storm on loopback, {} round(s) x {} s, interleaved\n",
        opts.rounds, opts.seconds
    );
    let _ = writeln!(
        t,
        "| scenario | RST/s | ratio vs untraced | sent events / TcpOutRsts | lost | CPU ns/event | peak RSS MiB | attach ms |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|");
    for (scenario, samples) in results {
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
    t
}
