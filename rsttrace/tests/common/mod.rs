//! Helpers for the kernel integration tests: run the real rsttrace binary
//! against the real kernel, provoke real RSTs, read its JSON Lines export.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod netns;

/// Whether kernel tests can run here. In CI (`RSTTRACE_REQUIRE_KERNEL_TESTS=1`)
/// a missing prerequisite fails the test instead of skipping it.
pub fn kernel_tests_possible(test: &str) -> bool {
    // SAFETY: geteuid() has no preconditions.
    let problem = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root")
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no /sys/kernel/btf/vmlinux")
    } else {
        None
    };
    match problem {
        None => true,
        Some(why) if std::env::var_os("RSTTRACE_REQUIRE_KERNEL_TESTS").is_some() => {
            panic!("{test}: kernel test cannot run: {why} (RSTTRACE_REQUIRE_KERNEL_TESTS is set)")
        }
        Some(why) => {
            skipped(test, &format!("{why}; run `cargo xtask test` as root"));
            false
        }
    }
}

/// Reports a test that returns early as skipped, visibly and counted
/// (`cargo xtask test` prints the count); never a silent pass.
pub fn skipped(test: &str, why: &str) {
    rsttrace::test_support::skipped(test, why);
}

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
    /// Starts rsttrace with `args` (plus `--write <tmp>.jsonl --quiet`) and
    /// waits for its `ready` status line: its hooks are attached.
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
        let mut child = command
            .args(args)
            .arg("--write")
            .arg(&export)
            .arg("--quiet")
            .arg("--drain-interval")
            .arg("20")
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

    /// Waits until the events exported so far satisfy `done`; false on timeout.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // rsttrace flushes once per batch: every complete line is an event.
            let text = std::fs::read_to_string(&self.export).unwrap_or_default();
            let events: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if done(&events) {
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
        report_causes(&events, self.send_family());
        FAMILY.with(|f| *f.borrow_mut() = self.send_family().to_string());
        let stderr = std::mem::take(&mut self.stderr_text);
        (events, raw, stderr)
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
}

impl Tracer {
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

/// `rsttrace check`'s report on this kernel, run once.
fn check_report() -> &'static str {
    static CHECK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CHECK.get_or_init(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_rsttrace"))
            .arg("check")
            .output()
            .expect("run rsttrace check");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

/// Why `--stack` cannot work on this kernel (`rsttrace check`), if it cannot.
pub fn stack_unsupported() -> Option<String> {
    let line = check_report()
        .lines()
        .find_map(|l| l.strip_prefix("--stack:"))
        .expect("rsttrace check has a --stack line")
        .trim();
    (line != "yes").then(|| line.to_string())
}

/// Whether this kernel's reason set names `cause`: the per-cause line of
/// `rsttrace check` ("yes (kernel reason NAME + facts)"), read once.
pub fn kernel_reason_decides(cause: &str) -> bool {
    check_report().lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some(cause) && l.contains("(kernel reason ")
    })
}

/// No sent event may be `certain` unless the plan has the kernel's reason
/// and this kernel's reason set names its cause: inference alone is
/// `likely`. No received event may be `certain` unless its sender's send
/// was seen (paired) on this host.
pub fn assert_no_unconfirmed_certainty(plan: &Value, events: &[Value]) {
    for e in events.iter().filter(|e| e["direction"] == "received") {
        if e["confidence"] == "certain" {
            assert!(
                e["evidence"]["peer_event"].is_object(),
                "a certain received RST without its sender's event: {e}"
            );
        }
    }
    for e in events.iter().filter(|e| e["direction"] == "sent") {
        if e["confidence"] == "certain" {
            let cause = e["cause"].as_str().unwrap_or("?");
            assert!(
                plan["reason"] == "kernel" && kernel_reason_decides(cause),
                "certain without a kernel reason for {cause} ({plan}): {e}"
            );
        }
    }
}

/// Appends one row per event (`event<TAB>test[family]<TAB>direction<TAB>cause<TAB>confidence`)
/// to $RSTTRACE_CAUSE_REPORT, so `cargo xtask test` / `vm-test` can print
/// which causes each kernel (and hook family) showed, and how they were labelled.
fn report_causes(events: &[Value], family: &str) {
    let test = test_tag(family);
    let lines: String = events
        .iter()
        .filter(|e| e["gap"].is_null())
        .map(|e| {
            format!(
                "event\t{test}\t{}\t{}\t{}\n",
                e["direction"].as_str().unwrap_or("?"),
                e["cause"].as_str().unwrap_or("?"),
                e["confidence"].as_str().unwrap_or("?")
            )
        })
        .collect();
    append_report(&lines);
}

/// Records that the running test provoked `cause` (the "provoked" column of
/// the cause table) and returns the events rsttrace labelled with it.
pub fn provoked<'a>(events: &'a [Value], direction: &str, cause: &str) -> Vec<&'a Value> {
    let family = FAMILY.with(|f| f.borrow().clone());
    append_report(&format!(
        "provoked\t{}\t{direction}\t{cause}\t\n",
        test_tag(&family)
    ));
    find(events, direction, cause)
}

/// The running test (or the part of it that follows) cannot work on this
/// kernel: recorded in $RSTTRACE_CAUSE_REPORT with why, so the suites
/// count it apart from passes instead of passing it silently.
pub fn not_applicable(why: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    eprintln!("{test}: not applicable on this kernel: {why}");
    append_report(&format!("not_applicable\t{test}\t-\t-\t{why}\n"));
}

thread_local! {
    /// The send hook family of the test thread's last stopped tracer.
    static FAMILY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// libtest runs each test on a thread named after it.
fn test_tag(family: &str) -> String {
    format!("{}[{family}]", std::thread::current().name().unwrap_or("?"))
}

fn append_report(lines: &str) {
    use std::io::Write;
    let Some(path) = std::env::var_os("RSTTRACE_CAUSE_REPORT") else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    // One write per call: O_APPEND keeps lines of parallel tests whole.
    if let Ok(mut f) = file {
        let _ = f.write_all(lines.as_bytes());
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

/// The rsttrace binary, stdin closed.
pub fn rsttrace() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rsttrace"));
    c.stdin(Stdio::null());
    c
}

/// Starts `cmd` (rsttrace and its arguments) with `--log-format json` and
/// stderr piped, and returns once its hooks are attached. Its stderr stays
/// open: the summary comes there at exit.
pub fn start_attached(cmd: &mut Command) -> (Child, ChildStderr) {
    let mut child = cmd
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rsttrace");
    let mut stderr = child.stderr.take().unwrap();
    wait_for_attach(&mut stderr);
    (child, stderr)
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

/// A loopback port nothing listens on (bound once, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    l.local_addr().unwrap().port()
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Events matching direction and cause.
pub fn find<'a>(events: &'a [Value], direction: &str, cause: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["direction"] == direction && e["cause"] == cause)
        .collect()
}

pub fn describe(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {} {}:{} -> {}:{} state={} reason={} evidence={}",
                e["direction"],
                e["cause"],
                e["local_addr"],
                e["local_port"],
                e["remote_addr"],
                e["remote_port"],
                e["state"],
                e["kernel_reason"],
                e["evidence"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A socket connected to 127.0.0.1:`port` with plain libc calls, which are
/// async-signal-safe: for forked children. -1 when the connect failed.
///
/// # Safety
/// Only the libc calls it makes; safe to call after fork().
pub unsafe fn connect_loopback_fd(port: u16) -> i32 {
    // SAFETY: plain syscalls on values this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        );
        if rc == 0 { fd } else { -1 }
    }
}

/// Sets SO_LINGER {on, 0}: close() then sends an RST instead of a FIN.
pub fn set_linger_zero(fd: i32) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` outlives the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
}

/// Sends one bare TCP segment (no payload) from this namespace's raw socket.
pub fn send_segment(
    from: std::net::SocketAddrV4,
    to: std::net::SocketAddrV4,
    flags: u8,
    seq: u32,
    ack: u32,
) {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&from.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&to.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4; // 20-byte header
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&from.ip().octets());
    pseudo.extend_from_slice(&to.ip().octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    tcp[16..18].copy_from_slice(&rsttrace::output::pcapng::checksum(&pseudo).to_be_bytes());
    // SAFETY: a raw socket this function owns and closes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(*to.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let sent = libc::sendto(
            fd,
            tcp.as_ptr().cast(),
            tcp.len(),
            0,
            (&dst as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(sent, 20, "sendto: {err}");
    }
}

pub fn set_int(fd: i32, level: i32, option: i32, value: i32) {
    // SAFETY: a plain setsockopt with an int-sized value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&value as *const i32).cast(),
            size_of::<i32>() as u32,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {option}): {}",
        std::io::Error::last_os_error()
    );
}

/// An nftables table `rsttrace` with one input-hook chain holding `rules`.
pub fn input_rules(rules: &str) -> String {
    format!(
        "table inet rsttrace {{\n chain input {{\n type filter hook input priority 0;\n {rules}\n }}\n}}\n"
    )
}

pub const DELETE_RULES: &str = "delete table inet rsttrace";

/// A TcpStream bound to `local` before connecting (SO_REUSEADDR), as a
/// client pinned to a source port would.
pub fn connect_from(
    local: std::net::SocketAddr,
    target: std::net::SocketAddr,
) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns; it is
    // handed to TcpStream (which closes it) or closed on error.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let stream = std::net::TcpStream::from_raw_fd(fd);
        set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
        let sin = |a: std::net::SocketAddr| {
            let std::net::SocketAddr::V4(a) = a else {
                panic!("IPv4 only")
            };
            libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            }
        };
        let len = size_of::<libc::sockaddr_in>() as u32;
        let l = sin(local);
        if libc::bind(fd, (&l as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let t = sin(target);
        if libc::connect(fd, (&t as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Waits up to 2 s for `s` to have data to read.
pub fn wait_readable(s: &TcpStream) {
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` outlives the call; the count matches.
    let rc = unsafe { libc::poll(&mut pfd, 1, 2000) };
    assert_eq!(rc, 1, "data did not arrive");
}

/// Reads until the peer's RST surfaces as an error (or gives up after 2 s).
pub fn wait_reset(s: &TcpStream) {
    let mut s = s.try_clone().unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..20 {
        match s.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return,
            Ok(0) => {
                let _ = s.shutdown(Shutdown::Both);
                return;
            }
            Ok(_) => continue,
        }
    }
}
