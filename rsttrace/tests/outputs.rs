//! The outputs besides the JSON export, end to end on real RSTs: pcapng
//! read back by tshark, the `--metrics` endpoint, `--rotate-size`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The pcapng export opens in tshark: one RST packet per event, the right
/// ports, and the cause in each packet's comment.
#[test]
fn pcapng_export_reads_back_in_tshark() {
    let Some(sc) = Scenario::new("pcapng_export_reads_back_in_tshark").start() else {
        return;
    };
    let tshark = ["/usr/bin/tshark", "/usr/sbin/tshark"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("tshark is installed by `cargo xtask test`");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("resets.pcapng");
    let rst = sc.attach(
        rsttrace()
            .args(["--port", &port.to_string(), "--quiet", "--write"])
            .arg(&capture),
    );
    for _ in 0..3 {
        let _ = TcpStream::connect(loopback(port));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(rst.interrupt().0.success());

    let out = std::process::Command::new(tshark)
        .args(["-r"])
        .arg(&capture)
        .args([
            "-T",
            "fields",
            "-e",
            "tcp.flags.reset",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
            "-e",
            "frame.comment",
            "-e",
            "pkt_comment",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = text.lines().collect();
    // Three refused connects: three RSTs sent, three received.
    assert_eq!(rows.len(), 6, "{text}");
    for row in &rows {
        let cols: Vec<&str> = row.split('\t').collect();
        assert!(cols[0] == "1" || cols[0] == "True", "not an RST: {row}");
        assert!(
            cols[1] == port.to_string() || cols[2] == port.to_string(),
            "{row}"
        );
        assert!(row.contains("rsttrace:"), "no comment: {row}");
        // The kernel's own segment, not one rebuilt from the event.
        assert!(
            row.contains("[packet captured from the device]"),
            "synthesised: {row}"
        );
    }
    // Each comment starts with its own direction and cause (a received
    // RST's evidence may name its sender's cause too).
    assert_eq!(
        rows.iter()
            .filter(|r| r.contains("rsttrace: sent port_not_open"))
            .count(),
        3,
        "{text}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.contains("rsttrace: received peer_refused"))
            .count(),
        3,
        "{text}"
    );
}

/// `--metrics` serves Prometheus text that counts the provoked resets.
#[test]
fn metrics_endpoint_counts_resets() {
    let port = free_port();
    let metrics_port = free_port();
    let Some(mut sc) = Scenario::new("metrics_endpoint_counts_resets")
        .trace(&[
            "--port",
            &port.to_string(),
            "--metrics",
            &metrics_port.to_string(),
        ])
        .start()
    else {
        return;
    };
    let banner = &sc.tracer().stderr_text;
    assert!(
        banner.contains(&format!("127.0.0.1:{metrics_port}")),
        "{banner}"
    );
    for _ in 0..4 {
        let _ = TcpStream::connect(loopback(port));
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut conn = TcpStream::connect(loopback(metrics_port)).expect("metrics endpoint listens");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    sc.stop();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(
        body.contains(
            "rsttrace_resets_total{direction=\"sent\",cause=\"port_not_open\",kernel_reason=\"NO_SOCKET\"} 4"
        ) || body.contains(
            "rsttrace_resets_total{direction=\"sent\",cause=\"port_not_open\",kernel_reason=\"\"} 4"
        ),
        "{body}"
    );
    assert!(body.contains("rsttrace_lost_events_total 0"), "{body}");
    assert!(body.contains(&format!("port=\"{port}\"")), "{body}");
}

/// `--rotate-size`: every event lands in exactly one of the rotated files.
#[test]
fn rotation_keeps_every_event() {
    let Some(sc) = Scenario::new("rotation_keeps_every_event").start() else {
        return;
    };
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    let rst = sc.attach(
        rsttrace()
            .args(["--port", &port.to_string(), "--quiet"])
            .args(["--drain-interval", "10"])
            .args(["--rotate-size", "8K", "--rotate-count", "1000", "--write"])
            .arg(&path),
    );
    let attempts = 60;
    for _ in 0..attempts {
        let _ = TcpStream::connect(loopback(port));
        // Spread over several drain batches, so several rotations happen.
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(rst.interrupt().0.success());

    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() > 3, "expected several rotated files: {files:?}");
    let mut events = 0;
    for f in &files {
        for l in std::fs::read_to_string(f).unwrap().lines() {
            let v: Value = serde_json::from_str(l).expect("whole records in every file");
            // Gap records also report the host's other kernel drops (the
            // softirq hooks' recursion misses on a busy machine): only a
            // lost event would mean a missing one.
            if !v["gap"].is_null() {
                assert_eq!(v["gap"]["lost"], 0, "nothing was lost: {v}");
                continue;
            }
            events += 1;
        }
    }
    assert_eq!(events, 2 * attempts, "files: {files:?}");
}
