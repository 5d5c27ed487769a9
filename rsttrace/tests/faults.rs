//! Bad input and hostile conditions: rsttrace must say what is wrong, lose
//! nothing silently, and never panic.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

/// Runs rsttrace to completion and returns (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run rsttrace");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
}

#[test]
fn bad_flag_values_name_the_flag() {
    for (args, flag) in [
        (&["--port", "70000"][..], "--port"),
        (&["--pid", "abc"], "--pid"),
        (&["--duration", "0"], "--duration"),
        (&["--format", "xml"], "--format"),
        (&["--ring-buffer", "lots"], "--ring-buffer"),
        (&["--hooks", "magic"], "--hooks"),
    ] {
        let (ok, _, stderr) = run(rsttrace().args(args));
        assert!(!ok, "{args:?} was accepted");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert_no_panic(&stderr);
    }
}

#[test]
fn unusable_export_paths_fail_before_tracing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/r.jsonl");
    let (ok, _, stderr) = run(rsttrace().arg("--write").arg(&missing));
    assert!(!ok);
    assert!(stderr.contains(&*missing.to_string_lossy()), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!stderr.contains("tracing TCP resets"), "{stderr}");

    let (ok, _, stderr) = run(rsttrace().arg("--write").arg(dir.path().join("r.pcapx")));
    assert!(!ok);
    assert!(stderr.contains("unknown extension"), "{stderr}");
    assert_no_panic(&stderr);
}

#[test]
fn without_privileges_one_clear_message() {
    let Some(_sc) = Scenario::new("without_privileges_one_clear_message").start() else {
        return;
    };
    let (ok, _, stderr) = run(Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_rsttrace"))
        .args(["--duration", "1"])
        .stdin(Stdio::null()));
    assert!(!ok, "rsttrace ran without privileges: {stderr}");
    assert!(
        stderr.contains("root") && stderr.contains("CAP_BPF"),
        "{stderr}"
    );
    assert_no_panic(&stderr);
}

/// connect()s to a closed loopback port from `threads` threads until stopped.
struct Storm {
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<u64>>,
}

impl Storm {
    fn start(port: u16, threads: usize) -> Storm {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let _ = TcpStream::connect(loopback(port));
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        Storm { stop, workers }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.workers.drain(..).map(|w| w.join().unwrap()).sum()
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_storm_beyond_capacity_is_counted_and_marked() {
    let port = free_port();
    // One page of ring buffer, and a reader behind the storm's threads
    // (the lowest priority): most events cannot be queued.
    let Some(mut sc) = Scenario::new("a_storm_beyond_capacity_is_counted_and_marked")
        .trace(&[
            "--port",
            &port.to_string(),
            "--ring-buffer",
            "4K",
            "--nice",
            "19",
        ])
        .start()
    else {
        return;
    };
    let storm = Storm::start(port, 2);
    std::thread::sleep(Duration::from_millis(1500));
    let attempts = storm.stop();
    let events = sc.stop();
    assert!(attempts > 1000, "storm too small: {attempts}");
    let lost: u64 = events
        .iter()
        .filter_map(|e| e["gap"]["lost"].as_u64())
        .sum();
    assert!(lost > 0, "no gap records in {} lines", events.len());
    let rsts = events.iter().filter(|e| e["gap"].is_null()).count() as u64;
    // Every attempt makes two events (the RST sent and the RST received):
    // each is either exported or counted as lost, none vanishes.
    assert_eq!(
        rsts + lost,
        2 * attempts,
        "{rsts} exported + {lost} lost for {attempts} attempts"
    );
}

/// With `--log-format json` every stderr line is a status object, errors too.
#[test]
fn json_status_lines_report_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/r.jsonl");
    let (ok, _, stderr) = run(rsttrace()
        .args(["--log-format", "json", "--write"])
        .arg(&missing));
    assert!(!ok);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(lines[0]["event"], "error");
    let message = lines[0]["message"].as_str().unwrap();
    assert!(message.contains("does not exist"), "{message}");
    assert!(message.contains(&*missing.to_string_lossy()), "{message}");
}

#[test]
fn sigterm_during_a_storm_leaves_valid_files() {
    let Some(sc) = Scenario::new("sigterm_during_a_storm_leaves_valid_files").start() else {
        return;
    };
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    for ext in ["jsonl", "csv"] {
        let path = dir.path().join(format!("storm.{ext}"));
        let mut rst = sc.attach(
            rsttrace()
                .args(["--port", &port.to_string(), "--quiet", "--write"])
                .arg(&path)
                .stdout(Stdio::null()),
        );
        let storm = Storm::start(port, 2);
        std::thread::sleep(Duration::from_millis(700));
        rst.signal(libc::SIGTERM);
        let status = rst.child.wait().unwrap();
        storm.stop();
        let mut rest = String::new();
        rst.stderr.read_to_string(&mut rest).unwrap();
        assert!(status.success(), "{status}: {rest}");
        assert!(summary_event(&rest).is_some(), "{rest}");

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'), "{ext} export ends mid-record");
        match ext {
            "jsonl" => {
                let records: Vec<serde_json::Value> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                assert!(!records.is_empty());
            }
            _ => {
                let mut reader = csv::Reader::from_reader(text.as_bytes());
                let width = reader.headers().unwrap().len();
                let rows: Vec<_> = reader.records().map(Result::unwrap).collect();
                assert!(!rows.is_empty());
                assert!(rows.iter().all(|r| r.len() == width));
            }
        }
    }
}

/// A tiny tmpfs, unmounted even when the test fails.
struct TinyFs(tempfile::TempDir);

impl TinyFs {
    fn mount(size: &str) -> TinyFs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs");
        TinyFs(dir)
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_stops_the_export_not_the_trace() {
    let Some(sc) = Scenario::new("a_full_disk_stops_the_export_not_the_trace").start() else {
        return;
    };
    let fs = TinyFs::mount("16k");
    let path = fs.0.path().join("full.jsonl");
    let port = free_port();
    let mut rst = sc.attach(
        rsttrace()
            .args(["--port", &port.to_string(), "--format", "json", "--write"])
            .arg(&path)
            .stdout(Stdio::piped()),
    );
    // ~1 KB per event: 200 refused connects overflow 16 KiB.
    for _ in 0..200 {
        let _ = TcpStream::connect(loopback(port));
    }
    std::thread::sleep(Duration::from_millis(300));
    rst.signal(libc::SIGINT);
    let mut stdout = String::new();
    rst.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = rst.child.wait().unwrap();
    let mut rest = String::new();
    rst.stderr.read_to_string(&mut rest).unwrap();

    assert!(!status.success(), "an incomplete export must not exit 0");
    assert!(rest.contains("No space left on device"), "{rest}");
    assert!(rest.contains(&*path.to_string_lossy()), "{rest}");
    assert!(rest.contains("events were not written"), "{rest}");
    // stdout kept every event.
    let on_stdout = stdout.lines().filter(|l| l.contains("\"cause\"")).count();
    assert_eq!(on_stdout, 400, "stdout lines: {on_stdout}\n{rest}");
    assert_no_panic(&rest);
}

#[test]
fn hostile_process_names_cannot_inject() {
    let listener = TcpListener::bind(loopback(0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(mut sc) = Scenario::new("hostile_process_names_cannot_inject")
        .trace(&["--port", &port.to_string()])
        .start()
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("h.csv");
    let csv = sc.attach(
        rsttrace()
            .args(["--port", &port.to_string(), "--quiet", "--write"])
            .arg(&csv_path),
    );

    // close() with unread data from a thread whose name is hostile: the RST
    // is made in its task context, so its comm is reported.
    let mut client = TcpStream::connect(loopback(port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.write_all(b"unread").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    std::thread::spawn(move || {
        let name = b"\x1b[2J=x,\"y\n\0";
        // SAFETY: `name` is NUL-terminated and outlives the call.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
        drop(server);
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let (events, raw) = sc.stop_with_raw();
    csv.interrupt();

    let ev = find(&events, "sent", "close_unread_data");
    assert_eq!(ev.len(), 1, "events:\n{}", describe(&events));
    assert_eq!(ev[0]["comm"], "\\x1b[2J=x,\"y\\x0a");
    assert!(!raw.contains(&0x1b), "ESC in JSON export");
    let csv_text = std::fs::read_to_string(&csv_path).unwrap();
    assert!(!csv_text.contains('\x1b'), "ESC in CSV export");
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let width = reader.headers().unwrap().len();
    for row in reader.records() {
        assert_eq!(row.unwrap().len(), width, "{csv_text}");
    }
    assert!(csv_text.contains("\\x1b[2J=x,"), "{csv_text}");
}
