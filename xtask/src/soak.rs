//! `cargo xtask soak`: rsttrace for a long time under mixed traffic, as a
//! daemon runs for weeks (not in CI). With `--stack`, `--metrics`, and a
//! rotating `-w` export, it gets:
//! - RSTs to a closed port (port_not_open / peer_refused), steadily;
//! - close() with unread data from short-lived processes, a new pid (and a
//!   new address-space layout, so a new user stack) each time;
//! - a metrics scrape every few seconds.
//!
//! Every interval it records rsttrace's RSS, descriptors and counters; at
//! the end it stops rsttrace with Ctrl-C and checks its summary. Writes
//! target/soak/results.md. Fails if rsttrace died, lost events, or a
//! scrape failed; RSS is reported, judged by the reader.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::Workspace;
use crate::build::{self, Profile};

pub struct Options {
    pub minutes: u64,
    pub release: bool,
    /// A prebuilt rsttrace instead of building this tree.
    pub binary: Option<std::path::PathBuf>,
}

/// How often a row is recorded.
const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// RSS before this is start-up and warm-up (kallsyms, first symbolizations).
const WARM_UP: Duration = Duration::from_secs(120);
/// Connects to the closed port per second.
const REFUSED_PER_SEC: u64 = 100;
/// Short-lived processes closing with unread data per second.
const CHURN_PER_SEC: u64 = 5;

#[derive(Clone, Debug, Default)]
struct Row {
    at: Duration,
    rss_kib: u64,
    fds: u64,
    resets: u64,
    lost: u64,
    stack_errors: u64,
    processes: u64,
    scrape_ms: u128,
}

pub fn soak(ws: &Workspace, opts: &Options) -> Result<()> {
    let binary = match &opts.binary {
        Some(b) => b.clone(),
        None => build::all(ws, Profile::from_release(opts.release))?,
    };
    let out_dir = ws.target_dir().join("soak");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir)?;
    let export = out_dir.join("soak.jsonl");
    let metrics_port = free_port()?;
    let closed_port = free_port()?;
    let churn = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    let churn_port = churn.local_addr()?.port();
    let duration = Duration::from_secs(opts.minutes * 60);
    eprintln!(
        "soak: {} min, rsttrace {}, export {}",
        opts.minutes,
        binary.display(),
        export.display()
    );

    let mut child = Command::new(&binary)
        .args([
            "--stack",
            "--quiet",
            "--rotate-size",
            "4M",
            "--rotate-count",
            "3",
        ])
        .arg("--metrics")
        .arg(metrics_port.to_string())
        // Only our traffic: other work on the host (storms) is not the soak's.
        .args([
            "--port",
            &closed_port.to_string(),
            "--port",
            &churn_port.to_string(),
        ])
        .arg("--write")
        .arg(&export)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stderr_lines = collect_stderr(&mut child)?;
    wait_ready(&stderr_lines, &mut child)?;

    let stop = Arc::new(AtomicBool::new(false));
    let processes = Arc::new(AtomicU64::new(0));
    let mut workers = vec![
        spawn_refused(closed_port, stop.clone()),
        spawn_churn(churn, stop.clone(), processes.clone())?,
    ];
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut scrape_failures = 0;
    while started.elapsed() < duration {
        thread::sleep(SAMPLE_EVERY.min(duration.saturating_sub(started.elapsed())));
        if let Some(status) = child.try_wait()? {
            stop.store(true, Ordering::Relaxed);
            bail!("rsttrace exited during the soak: {status}");
        }
        let t0 = Instant::now();
        let text = match scrape(metrics_port) {
            Ok(t) => t,
            Err(e) => {
                scrape_failures += 1;
                eprintln!("soak: scrape failed: {e:#}");
                String::new()
            }
        };
        let row = Row {
            at: started.elapsed(),
            rss_kib: status_kib(child.id(), "VmRSS:")?,
            fds: std::fs::read_dir(format!("/proc/{}/fd", child.id()))?.count() as u64,
            resets: metric_sum(&text, "rsttrace_resets_total"),
            lost: metric_sum(&text, "rsttrace_lost_events_total"),
            stack_errors: metric_sum(&text, "rsttrace_stack_errors_total"),
            processes: processes.load(Ordering::Relaxed),
            scrape_ms: t0.elapsed().as_millis(),
        };
        eprintln!(
            "soak: {:>5.0} s  RSS {:>7} KiB  fds {:>3}  resets {:>9}  lost {}  stack errors {}  processes {}",
            row.at.as_secs_f64(),
            row.rss_kib,
            row.fds,
            row.resets,
            row.lost,
            row.stack_errors,
            row.processes
        );
        rows.push(row);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers.drain(..) {
        let _ = w.join();
    }
    // Let the last events reach the outputs, then stop as a user would.
    thread::sleep(Duration::from_millis(500));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    let status = wait_timeout(&mut child, Duration::from_secs(60))?;
    // The reader thread ends with the pipe: every last line.
    let stderr: Vec<String> = stderr_lines.iter().collect();
    let table = render(&rows, &stderr, opts);
    let path = out_dir.join("results.md");
    std::fs::write(&path, &table)?;
    print!("{table}");
    eprintln!("soak: written to {}", path.display());
    if !status.success() {
        bail!("rsttrace exited with {status}");
    }
    let lost = summary_number(&stderr, "lost");
    if lost > 0 || rows.iter().any(|r| r.lost > 0) {
        bail!("rsttrace lost {lost} events");
    }
    if scrape_failures > 0 {
        bail!("{scrape_failures} metrics scrapes failed");
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

fn collect_stderr(child: &mut Child) -> Result<std::sync::mpsc::Receiver<String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().context("no stderr")?;
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Ok(rx)
}

fn wait_ready(lines: &std::sync::mpsc::Receiver<String>, child: &mut Child) -> Result<()> {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("tracing TCP resets") => return Ok(()),
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("rsttrace was not ready within 60 s:\n{}", seen.join("\n"));
            }
        }
    }
}

/// Connects to a closed port at a steady rate.
fn spawn_refused(port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let gap = Duration::from_micros(1_000_000 / REFUSED_PER_SEC);
        while !stop.load(Ordering::Relaxed) {
            let _ = TcpStream::connect(addr);
            thread::sleep(gap);
        }
    })
}

/// A listener that sends 100 bytes to each client, and a stream of
/// short-lived python processes that connect, let the data arrive, and
/// close without reading it: an RST with the user stack of close(), from
/// a new pid each time.
fn spawn_churn(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    processes: Arc<AtomicU64>,
) -> Result<thread::JoinHandle<()>> {
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let accept_stop = stop.clone();
    thread::spawn(move || {
        let mut held = std::collections::VecDeque::new();
        while !accept_stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(&[b'x'; 100]);
                    held.push_back(s);
                    // The client's RST ends each one; keep a few.
                    while held.len() > 64 {
                        held.pop_front();
                    }
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let script = format!(
        "import socket,time\n\
         s=socket.create_connection(('127.0.0.1',{port}))\n\
         time.sleep(0.05)\n\
         s.close()\n"
    );
    Ok(thread::spawn(move || {
        let gap = Duration::from_micros(1_000_000 / CHURN_PER_SEC);
        while !stop.load(Ordering::Relaxed) {
            let ok = Command::new("python3")
                .args(["-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                processes.fetch_add(1, Ordering::Relaxed);
            }
            thread::sleep(gap);
        }
    }))
}

fn scrape(port: u16) -> Result<String> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    if !text.starts_with("HTTP/1.1 200") {
        bail!("unexpected answer: {}", text.lines().next().unwrap_or(""));
    }
    Ok(text)
}

/// Sum of every sample of `name` in Prometheus text.
fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let rest = &l[name.len()..];
            rest.starts_with('{') || rest.starts_with(' ')
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    bail!("rsttrace did not exit within {timeout:?} of Ctrl-C")
}

/// The number on the summary line starting with `label`.
fn summary_number(lines: &[String], label: &str) -> u64 {
    lines
        .iter()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}

fn render(rows: &[Row], stderr: &[String], opts: &Options) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# rsttrace soak: {} min, {} build, --stack --metrics -w (rotating 4M x3), --port (its own two)\n",
        opts.minutes,
        if opts.release { "release" } else { "debug" }
    );
    let _ = writeln!(
        s,
        "Traffic: {REFUSED_PER_SEC} connects/s to a closed port, {CHURN_PER_SEC} short-lived processes/s closing with unread data.\n"
    );
    let _ = writeln!(
        s,
        "| t (s) | RSS (KiB) | fds | resets (metrics) | lost | stack errors | processes | scrape (ms) |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            r.at.as_secs_f64(),
            r.rss_kib,
            r.fds,
            r.resets,
            r.lost,
            r.stack_errors,
            r.processes,
            r.scrape_ms
        );
    }
    let warm: Vec<&Row> = rows.iter().filter(|r| r.at >= WARM_UP).collect();
    if let (Some(first), Some(min), Some(max)) = (
        warm.first(),
        warm.iter().map(|r| r.rss_kib).min(),
        warm.iter().map(|r| r.rss_kib).max(),
    ) {
        let last = warm.last().map_or(0, |r| r.rss_kib);
        let _ = writeln!(
            s,
            "\nRSS after warm-up ({} s): first {} KiB, min {min}, max {max}, last {last} KiB ({:+.1}% first to last).",
            WARM_UP.as_secs(),
            first.rss_kib,
            (last as f64 - first.rss_kib as f64) * 100.0 / first.rss_kib.max(1) as f64
        );
    }
    let _ = writeln!(s, "\nrsttrace's summary:\n\n```");
    for l in stderr {
        let _ = writeln!(s, "{l}");
    }
    let _ = writeln!(s, "```");
    s
}
