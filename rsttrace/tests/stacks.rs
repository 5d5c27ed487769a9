//! `--stack`: a C program closes a connection with unread data from a
//! function with a distinctive name; the RST event must name that function
//! with its source line in the user stack, and the kernel's close path in
//! the kernel stack.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;

const SOURCE: &str = include_str!("stacks/close_unread.c");

/// The program: prebuilt by `cargo xtask vm-test` (the guest has no C
/// compiler), else compiled here with frame pointers and debug info.
fn close_unread_program(dir: &tempfile::TempDir) -> PathBuf {
    if let Some(prebuilt) = std::env::var_os("RSTTRACE_STACK_HELPER") {
        return prebuilt.into();
    }
    let src = dir.path().join("close_unread.c");
    std::fs::write(&src, SOURCE).unwrap();
    let exe = dir.path().join("close_unread");
    let status = Command::new("cc")
        .args(["-g", "-O0", "-fno-omit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("cc (gcc) is needed to build the test program");
    assert!(status.success(), "cc failed");
    exe
}

/// The line of close() inside drop_connection_with_unread_data.
fn close_line() -> usize {
    SOURCE
        .lines()
        .position(|l| l.contains("the RST is sent here"))
        .unwrap()
        + 1
}

/// The program run against a listener of the test, traced with
/// `--stack` and `trace_args`, up to its close() and the RST.
struct CloseUnread {
    child: std::process::Child,
    program: PathBuf,
    _dir: tempfile::TempDir,
}

/// Runs the program through its close(). With `exit_after_ms` it exits
/// that long after; without, it waits for its stdin to close (`finish`).
fn run_close_unread(
    sc: &mut Scenario,
    trace_args: &[&str],
    exit_after_ms: Option<u32>,
) -> CloseUnread {
    let dir = tempfile::tempdir().unwrap();
    let program = close_unread_program(&dir);
    let listener = TcpListener::bind(loopback(0)).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let mut args = vec!["--stack", "--port", &port];
    args.extend_from_slice(trace_args);
    sc.trace(&args);
    let mut command = Command::new(&program);
    command.arg(&port);
    match exit_after_ms {
        Some(ms) => command.arg(ms.to_string()).stdin(Stdio::null()),
        None => command.stdin(Stdio::piped()),
    };
    let child = command.spawn().unwrap();
    let (mut server, _) = listener.accept().unwrap();
    server.write_all(&[7u8; 100]).unwrap();
    // Returns once the RST arrives: the program has closed.
    let _ = server.read(&mut [0u8; 1]);
    CloseUnread {
        child,
        program,
        _dir: dir,
    }
}

impl CloseUnread {
    fn wait(&mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        self.child.wait().unwrap()
    }

    /// Waits for the program to exit; its one RST event among `events`.
    fn finish(mut self, events: &[serde_json::Value]) -> serde_json::Value {
        let status = self.wait();
        assert!(status.success(), "{:?}: {status}", self.program);
        let sent: Vec<_> = find(events, "sent", "close_unread_data")
            .into_iter()
            .filter(|e| e["pid"] == self.child.id())
            .collect();
        assert_eq!(sent.len(), 1, "events:\n{}", describe(events));
        sent[0].clone()
    }
}

#[test]
fn user_and_kernel_stacks_name_the_close() {
    let Some(mut sc) = Scenario::new("user_and_kernel_stacks_name_the_close").start() else {
        return;
    };
    if let Some(why) = stack_unsupported() {
        // Refused up front, with the reason and the fix, before anything
        // is loaded.
        let out = Command::new(env!("CARGO_BIN_EXE_rsttrace"))
            .args(["--stack", "--duration", "1"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--stack was accepted: {stderr}");
        assert!(stderr.contains(&why), "{stderr}");
        not_applicable(&why);
        return;
    }
    // The program stays alive until its stdin closes.
    let run = run_close_unread(&mut sc, &[], None);
    let events = sc.stop();
    let sent = run.finish(&events);
    let frames = |key: &str| -> Vec<String> {
        sent[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} in {sent}"))
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect()
    };
    let kernel = frames("kernel_stack");
    assert!(
        kernel
            .iter()
            .any(|f| f.starts_with("tcp_send_active_reset+") || f.starts_with("tcp_close+")),
        "kernel stack: {kernel:#?}"
    );
    let user = frames("user_stack");
    // The frame-pointer walk alone skips the caller of libc's frameless
    // close(); rsttrace recovers it from the stack and .eh_frame.
    let expected = format!(
        "drop_connection_with_unread_data (close_unread.c:{})",
        close_line()
    );
    assert!(user.contains(&expected), "want {expected:?} in {user:#?}");
    let at = user.iter().position(|f| *f == expected).unwrap();
    assert!(
        user[at + 1..]
            .iter()
            .any(|f| f.starts_with("main (close_unread.c:")),
        "main calls it: {user:#?}"
    );
}

/// An event with a user stack wakes the reader at once, whatever the
/// drain interval: its process exits long before the next drain would
/// come, and its frames are named all the same.
#[test]
fn a_user_stack_is_read_before_its_process_exits() {
    let Some(mut sc) = Scenario::new("a_user_stack_is_read_before_its_process_exits").start()
    else {
        return;
    };
    if let Some(why) = stack_unsupported() {
        not_applicable(&why);
        return;
    }
    let mut run = run_close_unread(&mut sc, &["--drain-interval", "10000"], Some(1500));
    run.wait();
    // Gone now, seconds before the tracer's next drain.
    let events = sc.stop();
    let sent = run.finish(&events);
    let user = sent["user_stack"]
        .as_array()
        .unwrap_or_else(|| panic!("no user_stack in {sent}"));
    assert!(
        user.iter().any(|f| f
            .as_str()
            .is_some_and(|f| f.starts_with("drop_connection_with_unread_data ("))),
        "frames of an exited process: {user:#?}"
    );
}

#[test]
fn without_stack_no_stacks_are_written() {
    let listener = TcpListener::bind(loopback(0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(mut sc) = Scenario::new("without_stack_no_stacks_are_written")
        .trace(&["--port", &port.to_string()])
        .start()
    else {
        return;
    };
    let client = std::net::TcpStream::connect(loopback(port)).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    server.write_all(&[1u8; 10]).unwrap();
    // Blocks until the data is there, and leaves it unread.
    client.peek(&mut [0u8; 1]).unwrap();
    drop(client);
    let events = sc.stop();
    let sent = find(&events, "sent", "close_unread_data");
    assert_eq!(sent.len(), 1, "events:\n{}", describe(&events));
    assert!(sent[0].get("kernel_stack").is_none(), "{}", sent[0]);
    assert!(sent[0].get("user_stack").is_none(), "{}", sent[0]);
}

/// A burst of refused connects over `--stack-budget`: the first events
/// of each window carry stacks, the rest are written all the same, each
/// marked `stack_skipped`, and the summary counts exactly those.
#[test]
fn events_over_the_stack_budget_are_written_without_stacks() {
    let Some(mut sc) =
        Scenario::new("events_over_the_stack_budget_are_written_without_stacks").start()
    else {
        return;
    };
    if let Some(why) = stack_unsupported() {
        not_applicable(&why);
        return;
    }
    let port = free_port();
    // 10 per second: one event per CPU per 100 ms window.
    sc.trace(&[
        "--stack",
        "--stack-budget",
        "10",
        "--port",
        &port.to_string(),
    ]);
    const CONNECTS: usize = 200;
    for _ in 0..CONNECTS {
        let refused = std::net::TcpStream::connect(loopback(port));
        assert!(refused.is_err(), "something listens on {port}");
    }
    let (events, _, stderr) = sc.stop_with_stderr();
    let refusals = find(&events, "sent", "port_not_open").len();
    assert_eq!(refusals, CONNECTS, "events:\n{}", describe(&events));
    let with_stack = events.iter().filter(|e| e.get("kernel_stack").is_some());
    let skipped: Vec<_> = events
        .iter()
        .filter(|e| e["stack_skipped"] == true)
        .collect();
    for e in &skipped {
        assert!(
            e.get("kernel_stack").is_none() && e.get("user_stack").is_none(),
            "{e}"
        );
    }
    assert!(with_stack.count() >= 1, "no event took its stack");
    assert!(
        skipped.len() >= events.len() / 2,
        "{} of {} events skipped their stacks in a burst far over the budget",
        skipped.len(),
        events.len()
    );
    let summary = summary_event(&stderr).unwrap_or_else(|| panic!("no summary:\n{stderr}"));
    assert_eq!(
        summary["stacks"]["skipped"].as_u64(),
        Some(skipped.len() as u64),
        "{summary}"
    );
    assert_eq!(summary["lost"], 0, "{summary}");
}
