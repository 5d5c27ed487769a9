//! A tracing process (rsttrace or tcpdump) running beside a workload: started
//! until it says it is ready, then stopped with SIGINT as a person would,
//! with what it cost (CPU, peak RSS, time to attach) and what it printed.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::workload::{Netns, pin_to_cpu};
use crate::system;

/// What tcpdump prints on stderr once its capture is open.
pub const TCPDUMP_READY: Ready = Ready::Text("listening on lo");
pub const TCPDUMP_FILTER: &str = "tcp[tcpflags] & tcp-rst != 0";

/// Where a tracer runs: its CPU, (tcpdump, which captures one namespace's
/// loopback) its network namespace, and where its stdout goes.
#[derive(Clone, Copy, Default)]
pub struct Placement<'a> {
    pub cpu: Option<usize>,
    pub netns: Option<&'a Netns>,
    /// A file for its stdout (None: /dev/null).
    pub stdout: Option<&'a Path>,
}

/// How a tracer says it is ready on stderr.
#[derive(Clone, Copy)]
pub enum Ready {
    /// A line containing this text.
    Text(&'static str),
    /// rsttrace's `--log-format json` status line `{"event":"ready",...}`.
    JsonEvent,
}

impl Ready {
    /// The line's JSON object when it is a JSON ready line; `Null` for a
    /// matching text line.
    fn matches(self, line: &str) -> Option<Value> {
        match self {
            Ready::Text(needle) => line.contains(needle).then_some(Value::Null),
            Ready::JsonEvent => serde_json::from_str::<Value>(line)
                .ok()
                .filter(|v| v["event"] == "ready"),
        }
    }
}

pub struct Tracer {
    child: Child,
    /// rsttrace's ready status line (`Null` for text readiness).
    pub ready: Value,
    stderr: mpsc::Receiver<String>,
    pub attach: Duration,
    ready_at: Instant,
    /// CPU time (clock ticks) it had used when it became ready.
    cpu_at_ready: u64,
}

/// What a tracer cost and printed, from ready to exit.
pub struct Finished {
    /// Its stderr after it was ready (the exit summary).
    pub stderr: Vec<String>,
    pub cpu_ns: f64,
    /// Wall time from ready to exit.
    pub seconds: f64,
    pub peak_rss_kib: u64,
}

impl Tracer {
    /// Starts `binary` and waits until a line on its stderr contains `ready`.
    pub fn start(
        binary: &Path,
        args: &[&str],
        ready: Ready,
        placement: Placement<'_>,
    ) -> Result<Tracer> {
        let started = Instant::now();
        let stdout = match placement.stdout {
            Some(path) => std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?
                .into(),
            None => Stdio::null(),
        };
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        let cpu = placement.cpu;
        let netns_fd = placement.netns.map(Netns::raw_fd);
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = netns_fd
                    && libc::setns(fd, libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(cpu) = cpu {
                    pin_to_cpu(cpu)?;
                }
                Ok(())
            });
        }
        let mut child = cmd
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
        let ready = loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => match ready.matches(&line) {
                    Some(ready) => break ready,
                    None => seen.push(line),
                },
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
        };
        let attach = started.elapsed();
        // Start-up (parsing kernel BTF, loading) is paid once, not per event.
        let cpu_at_ready = proc_usage(child.id())?.0;
        Ok(Tracer {
            child,
            ready,
            stderr: rx,
            attach,
            ready_at: Instant::now(),
            cpu_at_ready,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the tracer with SIGINT (both print their summary on stderr then).
    pub fn finish(mut self) -> Result<Finished> {
        let pid = self.child.id();
        let (cpu_ticks, peak_rss_kib) = proc_usage(pid)?;
        let seconds = self.ready_at.elapsed().as_secs_f64();
        // SAFETY: signalling our own child, which has not been waited for.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        let status = self.child.wait()?;
        // The reader thread ends with the pipe: wait for the last lines.
        let stderr: Vec<String> = self.stderr.iter().collect();
        if !status.success() {
            bail!("tracer failed: {status}\n{}", stderr.join("\n"));
        }
        let cpu_ticks = cpu_ticks.saturating_sub(self.cpu_at_ready);
        Ok(Finished {
            stderr,
            cpu_ns: cpu_ticks as f64 * 1e9 / clock_ticks(),
            seconds,
            peak_rss_kib,
        })
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // A bench that fails half-way leaves no tracer attached.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// tcpdump, installed with apt when missing and possible; otherwise why not.
pub fn find_tcpdump() -> Result<PathBuf, String> {
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

/// `N packets captured` and the like, from tcpdump's exit statistics.
pub fn tcpdump_number(lines: &[String], what: &str) -> u64 {
    lines
        .iter()
        .find_map(|l| l.trim().strip_suffix(what)?.trim().parse().ok())
        .unwrap_or(0)
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
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

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
