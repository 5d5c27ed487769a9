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

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::Workspace;
use crate::bench::progstats;
use crate::bench::tracer::{Placement, Ready, Tracer};
use crate::bench::workload::{Netns, ResetCounters, set_receive_timeout};
use crate::bench::{closed_port, program_names};
use crate::build::{self, Profile};

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
/// RSS "flat": the median of the last quarter of the rows after warm-up is
/// at most this much above the median of their first quarter.
const RSS_GROWTH_ALLOWED: f64 = 0.10;
/// Descriptors "flat": the maximum over the last half of the rows after
/// warm-up at most this much above the maximum over the first half. The
/// process-root cache (two generations of 256) makes a saw-tooth between
/// ~300 and ~530 descriptors; a sample may miss a peak by one interval's
/// growth (~60), a leak of one per process grows by thousands.
const FDS_GROWTH_ALLOWED: f64 = 0.10;
/// The export rotates at this size and keeps this many files.
const ROTATE_SIZE: &str = "4M";
const ROTATE_COUNT: usize = 3;

/// One generator: every unit makes exactly one RST, which the namespace's
/// loopback both sends and receives.
struct Mix {
    kind: Kind,
    per_sec: u64,
    what: &'static str,
    /// The causes rsttrace should name for the sent and the received RST.
    sent: &'static str,
    received: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Refused,
    Unread,
    Linger,
    AfterClose,
}

const MIX: [Mix; 4] = [
    Mix {
        kind: Kind::Refused,
        per_sec: 100,
        what: "connect() to a closed port",
        sent: "port_not_open",
        received: "peer_refused",
    },
    Mix {
        kind: Kind::Unread,
        per_sec: 5,
        what: "close() with unread data, one new python3 process each",
        sent: "close_unread_data",
        received: "peer_reset",
    },
    Mix {
        kind: Kind::Linger,
        per_sec: 10,
        what: "close() with SO_LINGER 0",
        sent: "linger_zero",
        received: "peer_reset",
    },
    Mix {
        kind: Kind::AfterClose,
        per_sec: 10,
        what: "data sent to a socket its application closed",
        sent: "data_after_close",
        received: "peer_reset",
    },
];

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

#[derive(Clone, Debug, Default)]
struct Row {
    at: Duration,
    rss_kib: u64,
    fds: u64,
    resets: u64,
    lost: u64,
    kernel_drops: u64,
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

/// Runs one generator in the namespace at its rate until `stop`; counts
/// the units that made their RST.
fn generate(mix: &Mix, netns: &Netns, stop: &AtomicBool, made: &AtomicU64) -> Result<()> {
    netns.enter().context("entering the soak's namespace")?;
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    // accept() and the accepted sockets never wait longer than this.
    set_receive_timeout(&listener, Duration::from_secs(5))?;
    let addr = listener.local_addr()?;
    let closed = SocketAddr::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, closed_port()?));
    // The peek waits until the data is there: a close before it arrived
    // (seen 3 times in 2,875 under load) would be a clean FIN, and the
    // data then reaches a closed socket: data_after_close.
    let script = format!(
        "import socket\n\
         s=socket.create_connection(('127.0.0.1',{}))\n\
         s.recv(1,socket.MSG_PEEK)\n\
         s.close()\n",
        addr.port()
    );
    let target = if mix.kind == Kind::Refused {
        closed
    } else {
        addr
    };
    eprintln!("soak: {} on port {}", mix.what, target.port());
    let gap = Duration::from_micros(1_000_000 / mix.per_sec);
    // Server ends of unread-data connections, kept until their RST came.
    let mut held = std::collections::VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        let rst = match mix.kind {
            Kind::Refused => TcpStream::connect_timeout(&closed, Duration::from_secs(1))
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
            Kind::Unread => {
                // Spawned from this thread, the process is in the namespace.
                let mut child = Command::new("python3")
                    .args(["-c", &script])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting python3")?;
                let (mut server, _) = listener.accept()?;
                server.write_all(&[b'x'; 100])?;
                held.push_back(server);
                // At 5/s, 64 server ends are 13 s: their RSTs have come.
                while held.len() > 64 {
                    held.pop_front();
                }
                child.wait()?.success()
            }
            Kind::Linger => {
                let (client, server) = pair(&listener, addr)?;
                set_linger_zero(&client)?;
                drop(client);
                drop(server);
                true
            }
            Kind::AfterClose => {
                let (mut client, server) = pair(&listener, addr)?;
                drop(server);
                // The FIN has arrived within the close on loopback; wait a
                // little anyway, then send into the closed socket.
                thread::sleep(Duration::from_millis(2));
                client.write_all(b"after close")?;
                // The RST shows as the socket's error: EPIPE, as it came in
                // CLOSE_WAIT (tcp_reset()). Usually within the write.
                let deadline = Instant::now() + Duration::from_secs(1);
                loop {
                    match client.take_error()? {
                        Some(e) => break e.kind() == std::io::ErrorKind::BrokenPipe,
                        None if Instant::now() > deadline => break false,
                        None => thread::sleep(Duration::from_millis(1)),
                    }
                }
            }
        };
        if rst {
            made.fetch_add(1, Ordering::Relaxed);
        }
        thread::sleep(gap);
    }
    Ok(())
}

fn pair(listener: &TcpListener, addr: SocketAddr) -> Result<(TcpStream, TcpStream)> {
    let client = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    let (server, _) = listener.accept()?;
    Ok((client, server))
}

fn set_linger_zero(s: &TcpStream) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a live socket and a linger struct that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_LINGER");
    }
    Ok(())
}

fn scrape(port: u16) -> Result<String> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    if !text.starts_with("HTTP/1.1 200") {
        bail!("unexpected answer: {}", text.lines().next().unwrap_or(""));
    }
    Ok(text)
}

/// Sum of every sample of `name` in Prometheus text whose labels contain
/// `label` (e.g. `direction="sent"`; "" for all).
fn metric_where(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            (rest.starts_with(' ') || rest.starts_with('{')).then_some(rest)
        })
        .filter(|rest| {
            label.is_empty() || rest.split_once(' ').is_some_and(|(l, _)| l.contains(label))
        })
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn metric_sum(text: &str, name: &str) -> u64 {
    metric_where(text, name, "")
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

/// What the rotating export left: the files kept, their events and gap
/// records; every line must be JSON.
#[derive(Debug, Default)]
struct ExportFiles {
    files: usize,
    bytes: u64,
    events: u64,
    gaps: u64,
    /// Gap records that report lost events.
    gaps_lost: u64,
    bad_lines: u64,
}

impl ExportFiles {
    fn read(dir: &Path, name: &str) -> Result<ExportFiles> {
        let mut found = ExportFiles::default();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if !file_name.starts_with(name) {
                continue;
            }
            found.files += 1;
            found.bytes += entry.metadata()?.len();
            let text = std::fs::read_to_string(entry.path())?;
            for line in text.lines() {
                match serde_json::from_str::<Value>(line) {
                    Ok(v) if v.get("gap").is_some() => {
                        found.gaps += 1;
                        if v["gap"]["lost"].as_u64().unwrap_or(0) > 0 {
                            found.gaps_lost += 1;
                        }
                    }
                    Ok(_) => found.events += 1,
                    Err(_) => found.bad_lines += 1,
                }
            }
        }
        Ok(found)
    }
}

/// Everything the checks compare.
struct Facts<'a> {
    made: &'a BTreeMap<Kind, u64>,
    /// The namespace's TCP counters over the soak.
    kernel: ResetCounters,
    summary: &'a Value,
    metrics: &'a str,
    scrape_failures: u64,
    files: &'a ExportFiles,
    rows: &'a [Row],
    /// Per program (name, recursion misses), before the summary.
    recursion: &'a [(String, u64)],
}

/// One accounted counter: its value, what it must be and why, and whether
/// it is. `ok` is false only for what must hold.
#[derive(Debug)]
struct Check {
    what: String,
    value: String,
    expected: String,
    ok: bool,
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

    fn checks(&self) -> Vec<Check> {
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

fn render(
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

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "# HELP rsttrace_resets_total x\n\
        rsttrace_resets_total{direction=\"sent\",cause=\"port_not_open\",kernel_reason=\"\"} 7\n\
        rsttrace_resets_total{direction=\"received\",cause=\"peer_refused\",kernel_reason=\"\"} 7\n\
        rsttrace_resets_total_other 99\n\
        rsttrace_lost_events_total 0\n\
        rsttrace_kernel_drops_total{kind=\"recursion_misses\"} 3\n";

    #[test]
    fn metrics_by_name_and_label() {
        assert_eq!(metric_sum(METRICS, "rsttrace_resets_total"), 14);
        assert_eq!(
            metric_where(METRICS, "rsttrace_resets_total", "direction=\"sent\""),
            7
        );
        assert_eq!(metric_sum(METRICS, "rsttrace_lost_events_total"), 0);
        assert_eq!(
            metric_where(
                METRICS,
                "rsttrace_kernel_drops_total",
                "kind=\"recursion_misses\""
            ),
            3
        );
    }

    /// 10 refused connects, 2 unread, 3 linger, 4 after close: 19 RSTs.
    fn made() -> BTreeMap<Kind, u64> {
        [
            (Kind::Refused, 10),
            (Kind::Unread, 2),
            (Kind::Linger, 3),
            (Kind::AfterClose, 4),
        ]
        .into()
    }

    fn summary() -> Value {
        serde_json::json!({
            "event": "summary", "total": 38, "sent": 19, "received": 19, "abort": 0,
            "causes": [
                {"cause": "port_not_open", "direction": "sent", "count": 10},
                {"cause": "peer_refused", "direction": "received", "count": 10},
                {"cause": "close_unread_data", "direction": "sent", "count": 2},
                {"cause": "linger_zero", "direction": "sent", "count": 3},
                {"cause": "data_after_close", "direction": "sent", "count": 4},
                {"cause": "peer_reset", "direction": "received", "count": 9},
            ],
            "lost": 0, "filtered": 500, "filtered_userspace": 0, "read_errors": 0,
            "decode_errors": 0, "write_errors": 0, "aborts_merged": 19,
            "kernel_drops": {"packets_lost": 0, "context_errors": 0, "owners_evicted": 0,
                             "history_evicted": 40, "recursion_misses": 3},
            "stacks": {"not_captured": 0, "missing": 0, "unsymbolized": 12},
        })
    }

    fn rows(rss: &[u64]) -> Vec<Row> {
        rss.iter()
            .enumerate()
            .map(|(i, &rss_kib)| Row {
                at: WARM_UP + SAMPLE_EVERY * i as u32,
                rss_kib,
                fds: 300,
                ..Row::default()
            })
            .collect()
    }

    /// The final scrape that goes with `summary()`, with `recursion` misses.
    fn metrics(recursion: u64) -> String {
        format!(
            "rsttrace_resets_total{{direction=\"sent\",cause=\"port_not_open\",kernel_reason=\"\"}} 19\n\
             rsttrace_resets_total{{direction=\"received\",cause=\"peer_refused\",kernel_reason=\"\"}} 19\n\
             rsttrace_lost_events_total 0\n\
             rsttrace_kernel_drops_total{{kind=\"recursion_misses\"}} {recursion}\n"
        )
    }

    fn failed(summary: &Value, rss: &[u64]) -> Vec<String> {
        failed_rows(summary, &rows(rss))
    }

    fn failed_rows(summary: &Value, rows: &[Row]) -> Vec<String> {
        let made = made();
        let files = ExportFiles {
            files: ROTATE_COUNT,
            events: 20,
            ..ExportFiles::default()
        };
        let metrics = metrics(
            summary["kernel_drops"]["recursion_misses"]
                .as_u64()
                .unwrap(),
        );
        let facts = Facts {
            made: &made,
            kernel: ResetCounters {
                out_rsts: 19,
                ..ResetCounters::default()
            },
            summary,
            metrics: &metrics,
            scrape_failures: 0,
            files: &files,
            rows,
            recursion: &[("softirq_entry".into(), 3)],
        };
        facts
            .checks()
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.what)
            .collect()
    }

    #[test]
    fn counters_that_add_up_pass_and_host_drops_are_only_reported() {
        let mut s = summary();
        assert!(
            failed(&s, &[100; 8]).is_empty(),
            "{:?}",
            failed(&s, &[100; 8])
        );
        s["kernel_drops"]["recursion_misses"] = 1000.into();
        s["kernel_drops"]["history_evicted"] = 1000.into();
        s["filtered"] = 100_000.into();
        assert!(
            failed(&s, &[100; 8]).is_empty(),
            "{:?}",
            failed(&s, &[100; 8])
        );
    }

    #[test]
    fn a_missed_rst_a_loss_or_growing_memory_fails() {
        let mut s = summary();
        s["sent"] = 18.into();
        assert!(failed(&s, &[100; 8]).contains(&"summary: sent".to_string()));
        let mut s = summary();
        s["lost"] = 1.into();
        assert!(failed(&s, &[100; 8]).contains(&"summary: lost".to_string()));
        let mut s = summary();
        s["causes"][5]["count"] = 8.into();
        assert!(failed(&s, &[100; 8]).contains(&"summary: peer_reset received".to_string()));
        let growing = [100, 100, 105, 110, 115, 120, 125, 130];
        assert!(
            failed(&summary(), &growing)
                .iter()
                .any(|f| f.starts_with("RSS after warm-up"))
        );
        // Descriptors: the process-root cache's saw-tooth passes, a leak
        // of a hundred per sample does not.
        let with_fds = |fds: &[u64]| -> Vec<Row> {
            rows(&[100; 8])
                .into_iter()
                .zip(fds)
                .map(|(r, &fds)| Row { fds, ..r })
                .collect()
        };
        let saw_tooth = with_fds(&[300, 420, 530, 310, 420, 500, 300, 480]);
        assert!(failed_rows(&summary(), &saw_tooth).is_empty());
        let leak = with_fds(&[300, 400, 500, 600, 700, 800, 900, 1000]);
        assert!(
            failed_rows(&summary(), &leak)
                .iter()
                .any(|f| f.starts_with("descriptors after warm-up"))
        );
        // Too short a run proves nothing about memory.
        assert!(
            failed(&summary(), &[100; 3])
                .iter()
                .any(|f| f.starts_with("RSS after warm-up"))
        );
    }
}
