//! How rsttrace runs and ends: its priority, closed pipes, hang-ups, a
//! second Ctrl-C. Each test runs the real binary against the real kernel.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `n` connects to a closed loopback port: two events each.
fn refused_connects(n: usize) {
    let port = free_port();
    for _ in 0..n {
        let _ = TcpStream::connect(loopback(port));
    }
}

/// A tracer started without `--log-format json` prints no ready line and
/// keeps running: waiting for its attach fails at the deadline, saying
/// why, instead of hanging the test (a stand-in that prints the text
/// banner; no kernel needed).
#[test]
fn waiting_for_attach_without_json_status_fails_at_its_deadline() {
    let mut child = Command::new("sh")
        .args([
            "-c",
            "echo 'tracing TCP resets (2 hooks)' >&2; exec sleep 30",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let started = Instant::now();
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for_attach_within(&mut stderr, Duration::from_secs(1))
    }));
    let _ = child.kill();
    let _ = child.wait();
    let message = *waited
        .expect_err("no ready line, yet it returned")
        .downcast::<String>()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        message.contains("did not report ready within 1s")
            && message.contains("--log-format json")
            && message.contains("tracing TCP resets (2 hooks)"),
        "{message}"
    );
}

#[test]
fn closed_stdout_and_stderr_end_cleanly() {
    let Some(_sc) = Scenario::new("closed_stdout_and_stderr_end_cleanly").start() else {
        return;
    };
    // `rsttrace --format json 2>&1 | head -1`.
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut child = rsttrace()
        .args(["--format", "json", "--drain-interval", "20"])
        .args(["--log-format", "json"])
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    wait_for_attach(&mut reader);
    drop(reader);
    refused_connects(20);
    // With nothing left to write to, it stops by itself, without a panic.
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "rsttrace exited with {status:?}"
    );
}

#[test]
fn sighup_flushes_and_writes_the_summary() {
    let Some(sc) = Scenario::new("sighup_flushes_and_writes_the_summary").start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("e.jsonl");
    let mut rst = sc.attach(
        rsttrace()
            .args(["--quiet", "--write"])
            .arg(&export)
            .stdout(Stdio::null()),
    );
    refused_connects(3);
    // Let the events reach the ring buffer; the export is flushed only at exit.
    std::thread::sleep(Duration::from_millis(200));
    rst.signal(libc::SIGHUP);
    let status = wait_timeout(&mut rst.child, Duration::from_secs(20));
    let mut text = String::new();
    rst.stderr.read_to_string(&mut text).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "rsttrace exited with {status:?}: {text}"
    );
    assert!(text.contains(r#""event":"summary""#), "{text}");
    let events = read_jsonl(&export);
    assert!(
        events
            .iter()
            .filter(|e| e["cause"] == "port_not_open")
            .count()
            >= 3,
        "{}",
        describe(&events)
    );
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    let Some(sc) = Scenario::new("a_second_ctrl_c_exits_at_once").start() else {
        return;
    };
    // Nobody reads stdout: once the pipe is full every write blocks, and
    // the first Ctrl-C cannot be acted on.
    let (reader, writer) = std::io::pipe().unwrap();
    let mut rst = sc.attach(
        rsttrace()
            .args(["--format", "json", "--drain-interval", "20"])
            .stdout(writer),
    );
    // ~1 KB per event: well past a 64 KiB pipe.
    refused_connects(300);
    std::thread::sleep(Duration::from_millis(300));
    rst.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    let second = Instant::now();
    rst.signal(libc::SIGINT);
    let status = wait_timeout(&mut rst.child, Duration::from_secs(5));
    drop(reader);
    assert!(status.is_some(), "still running 5 s after a second Ctrl-C");
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "{:?}",
        second.elapsed()
    );
}

#[test]
fn a_kernel_test_without_root_is_reported_as_skipped() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skipped(
            "a_kernel_test_without_root_is_reported_as_skipped",
            "needs root to drop to another user",
        );
        return;
    }
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skipped.txt");
    std::fs::write(&log, "").unwrap();
    std::os::unix::fs::chown(&log, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    // This very test binary, one kernel test, as nobody.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sighup_flushes_and_writes_the_summary"])
        .env_remove("RSTTRACE_REQUIRE_KERNEL_TESTS")
        .env("RSTTRACE_SKIP_LOG", &log)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Shown although libtest captures the test's output, and counted.
    assert!(
        stderr.contains("SKIPPED sighup_flushes_and_writes_the_summary: not running as root"),
        "{stderr}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("sighup_flushes_and_writes_the_summary"),
        "{logged:?}"
    );
}

/// Every thread of the tracer runs at its nice value: -10 unless told
/// otherwise, so that a storm's threads do not starve the reader.
#[test]
fn the_tracer_runs_ahead_of_ordinary_tasks() {
    let Some(mut sc) = Scenario::new("the_tracer_runs_ahead_of_ordinary_tasks").start() else {
        return;
    };
    for (args, nice) in [(&[][..], -10), (&["--nice", "3"][..], 3)] {
        let port = free_port().to_string();
        let mut all = vec!["--port", &port];
        all.extend_from_slice(args);
        let pid = sc.trace(&all).pid().expect("running");
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        for thread in threads {
            let stat = std::fs::read_to_string(thread.unwrap().path().join("stat")).unwrap();
            // Field 19; the fields after the comm's closing parenthesis start at 3.
            let after_comm = &stat[stat.rfind(')').unwrap() + 1..];
            let field: i32 = after_comm
                .split_whitespace()
                .nth(16)
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(field, nice, "{args:?}: {stat}");
        }
        sc.stop();
    }
}
