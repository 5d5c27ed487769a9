//! The rsttrace under test: started with `--log-format json`, ready when its
//! `ready` status line says its hooks are attached, stopped with SIGINT as a
//! user would, killed by `Drop` if the test fails first.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::events::{self, kernel_reason_decides, not_applicable};

/// A running `rsttrace` writing JSON Lines to a temp file.
pub struct Tracer {
    child: Option<Child>,
    pub export: PathBuf,
    _dir: tempfile::TempDir,
    stderr: mpsc::Receiver<String>,
    /// Its status lines (`--log-format json`), one JSON object each.
    pub stderr_text: String,
    /// The `ready` status line: the hook plan and the loaded programs.
    ready: Value,
}

impl Tracer {
    /// Starts rsttrace with `args` (plus `--write <tmp>.jsonl --quiet`, and
    /// a 20 ms drain interval unless `args` choose one) and waits for its
    /// `ready` status line: its hooks are attached.
    pub fn start(args: &[&str]) -> Tracer {
        Tracer::start_with(args, |_| {})
    }

    /// `start`, with `setup` applied to the command first (e.g. a pre_exec
    /// that changes what rsttrace sees of the system).
    pub fn start_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> Tracer {
        let dir = tempfile::tempdir().expect("tempdir");
        let export = dir.path().join("events.jsonl");
        let mut command = Command::new(env!("CARGO_BIN_EXE_rsttrace"));
        setup(&mut command);
        command.args(args);
        if !args.contains(&"--drain-interval") {
            command.args(["--drain-interval", "20"]);
        }
        let mut child = command
            .arg("--write")
            .arg(&export)
            .arg("--quiet")
            .args(["--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rsttrace");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut tracer = Tracer {
            child: Some(child),
            export,
            _dir: dir,
            stderr: rx,
            stderr_text: String::new(),
            ready: Value::Null,
        };
        tracer.ready = tracer.wait_for_ready(start_timeout());
        tracer
    }

    fn wait_for_ready(&mut self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_text.push_str(&line);
                    self.stderr_text.push('\n');
                    if let Some(ready) = ready_event(&line) {
                        return ready;
                    }
                }
                Err(_) => {
                    let status = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    panic!(
                        "rsttrace did not report ready (exit: {status:?}); stderr:\n{}",
                        self.stderr_text
                    );
                }
            }
        }
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The events exported so far (rsttrace flushes once per batch: every
    /// complete line is an event).
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.export).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until the events exported so far satisfy `done`; false on timeout.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.events()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops rsttrace with SIGINT, as a user would, and returns the events.
    pub fn stop(self) -> Vec<Value> {
        self.stop_with_raw().0
    }

    /// Like `stop`, also returning the export file's bytes.
    pub fn stop_with_raw(self) -> (Vec<Value>, Vec<u8>) {
        let (events, raw, _) = self.stop_with_stderr();
        (events, raw)
    }

    /// Like `stop_with_raw`, also returning everything rsttrace wrote to stderr.
    pub fn stop_with_stderr(mut self) -> (Vec<Value>, Vec<u8>, String) {
        let mut child = self.child.take().unwrap();
        // Let the last RSTs reach the ring buffer and one drain pass run.
        std::thread::sleep(Duration::from_millis(150));
        // SAFETY: kill() takes any pid and signal; the child is ours.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = wait_timeout(&mut child, Duration::from_secs(10));
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.stderr_text.push_str(&line);
            self.stderr_text.push('\n');
        }
        assert!(
            status.is_some_and(|s| s.success()),
            "rsttrace exited with {status:?}; stderr:\n{}",
            self.stderr_text
        );
        // Shown by libtest only when the test fails: rsttrace's warnings
        // (a hook that would not load) explain most failures.
        println!("rsttrace stderr:\n{}", self.stderr_text);
        let raw = std::fs::read(&self.export).expect("export file exists");
        let events = read_jsonl(&self.export);
        events::stopped(&events, self.send_family());
        let stderr = std::mem::take(&mut self.stderr_text);
        (events, raw, stderr)
    }

    /// The `ready` status line (docs/schema.md).
    pub fn ready(&self) -> &Value {
        &self.ready
    }

    /// The hook plan rsttrace reported ready with (`send`, `send_family`,
    /// `reason`, `no_socket`, ...; docs/schema.md).
    pub fn plan(&self) -> &Value {
        &self.ready["plan"]
    }

    /// Confidence of `cause` when the facts prove it: "certain" needs a
    /// kernel reason to agree, which takes a reason in the plan (6.10+) and
    /// a name for this cause in this kernel's reason set (6.12 lacks the
    /// active-reset names); otherwise the verdict is "likely".
    pub fn proven_confidence(&self, cause: &str) -> &'static str {
        if self.plan()["reason"] == "kernel" && kernel_reason_decides(cause) {
            "certain"
        } else {
            "likely"
        }
    }

    /// How events reach rsttrace: "ring" or "perf".
    pub fn transport(&self) -> &str {
        self.ready["transport"].as_str().unwrap_or("?")
    }

    /// The family of the chosen send hook ("tp_btf", "fentry", ...).
    pub fn send_family(&self) -> &str {
        self.plan()["send_family"].as_str().unwrap_or("?")
    }

    /// Whether the chosen send hook fires for RSTs sent without a socket
    /// (closed port, TIME_WAIT): 6.1's tcp_send_reset tracepoint does not.
    pub fn sees_socketless_rsts(&self) -> bool {
        self.plan()["no_socket"] == true
    }

    /// Whether connections that die without an RST (direction abort) are
    /// seen: through `sock:inet_sk_error_report` (5.14+), or a kprobe on
    /// `sock_def_error_report` before. Where the kernel has neither the
    /// test part that needs them is not applicable; where it has the
    /// tracepoint, the plan must see aborts.
    pub fn sees_aborts(&self) -> bool {
        let has_tracepoint = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .any(|t| {
                std::path::Path::new(t)
                    .join("events/sock/inet_sk_error_report")
                    .exists()
            });
        let seen = self.plan()["aborts"] == true;
        assert!(
            seen || !has_tracepoint,
            "the kernel has sock:inet_sk_error_report but the plan sees no aborts: {}",
            self.plan()
        );
        if !seen {
            not_applicable(
                "connections that die without an RST: neither sock:inet_sk_error_report (5.14+) \
                 nor a kprobe on sock_def_error_report here",
            );
        }
        seen
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An rsttrace a test starts with its own outputs (pcapng, CSV, stdout) and
/// ends itself, by a signal or a closed pipe: attached once `new` returns,
/// killed by `Drop` if the test fails first, so no tracer outlives it.
pub struct Attached {
    pub child: Child,
    /// Open until rsttrace exits: it writes its summary there.
    pub stderr: ChildStderr,
    /// The `ready` status line.
    pub ready: Value,
}

impl Attached {
    /// Starts `cmd` (rsttrace and its arguments) with `--log-format json`
    /// and stderr piped, and returns once its hooks are attached.
    pub fn new(cmd: &mut Command) -> Attached {
        let mut child = cmd
            .args(["--log-format", "json"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rsttrace");
        let mut stderr = child.stderr.take().unwrap();
        let attached = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for_attach(&mut stderr)
        }));
        match attached {
            Ok(ready) => Attached {
                child,
                stderr,
                ready,
            },
            Err(panic) => {
                let _ = child.kill();
                let status = child.wait();
                let why = panic.downcast_ref::<String>().map_or("?", String::as_str);
                panic!("{why} (exit: {status:?})")
            }
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill() takes any pid and signal; the child is ours.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// SIGINT, then its exit status and the rest of its stderr (the summary).
    pub fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        self.signal(libc::SIGINT);
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        (status, rest)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits up to `timeout`; kills the child and returns None past it.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok();
    None
}

pub fn read_jsonl(path: &std::path::Path) -> Vec<Value> {
    let mut text = String::new();
    std::fs::File::open(path)
        .expect("export file exists")
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// How long rsttrace may take to attach; emulated kernels (cargo xtask
/// vm-test) start much slower.
fn start_timeout() -> Duration {
    let secs = std::env::var("RSTTRACE_TEST_START_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// The `ready` status line, if `line` is one.
fn ready_event(line: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(line).ok()?;
    (v["event"] == "ready").then_some(v)
}

/// The status lines (`--log-format json`) among `text`'s lines.
pub fn status_events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"].is_string())
        .collect()
}

/// The exit summary among `text`'s status lines, if rsttrace wrote one.
pub fn summary_event(text: &str) -> Option<Value> {
    status_events(text)
        .into_iter()
        .find(|e| e["event"] == "summary")
}

/// The rsttrace binary, stdin closed.
pub fn rsttrace() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rsttrace"));
    c.stdin(Stdio::null());
    c
}

/// Reads `stderr` of an rsttrace started by hand with `--log-format json`
/// until its `ready` line, or panics with what it printed before exiting
/// or within the start timeout (without `--log-format json` no ready line
/// ever comes). Reads a byte at a time so that nothing after that line is
/// consumed.
pub fn wait_for_attach(stderr: &mut (impl Read + AsFd)) -> Value {
    wait_for_attach_within(stderr, start_timeout())
}

/// `wait_for_attach` with its own deadline.
pub fn wait_for_attach_within(stderr: &mut (impl Read + AsFd), timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if !readable_within(stderr.as_fd(), left) {
            seen.extend_from_slice(&line);
            panic!(
                "rsttrace did not report ready within {timeout:?} (started without \
                 `--log-format json`?); it printed:\n{}",
                String::from_utf8_lossy(&seen)
            );
        }
        match stderr.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => {
                if let Some(ready) = ready_event(&String::from_utf8_lossy(&line)) {
                    return ready;
                }
                seen.append(&mut line);
                seen.push(b'\n');
            }
            Ok(1) => line.push(byte[0]),
            _ => panic!(
                "rsttrace ended before reporting ready: {}{}",
                String::from_utf8_lossy(&seen),
                String::from_utf8_lossy(&line)
            ),
        }
    }
}

/// Whether `fd` has something to read (or is at its end) within `timeout`.
fn readable_within(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: one valid pollfd for the duration of the call.
        match unsafe { libc::poll(&mut pfd, 1, ms) } {
            -1 if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            n => return n > 0,
        }
    }
}
