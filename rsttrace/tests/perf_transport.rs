//! The perf event array transport (`--transport perf`, what kernels before
//! 5.8 get automatically): the same events, and losses counted as exactly,
//! as over the ring buffer. Forced here so that every kernel tests it.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;

#[test]
fn transport_auto_takes_the_ring_buffer_and_ring_can_be_forced() {
    let Some(mut sc) =
        Scenario::new("transport_auto_takes_the_ring_buffer_and_ring_can_be_forced").start()
    else {
        return;
    };
    // Every kernel of the matrix (5.10+) has the BPF ring buffer (5.8+).
    for args in [&[][..], &["--transport", "ring"]] {
        let port = free_port().to_string();
        let mut all = vec!["--port", &port];
        all.extend_from_slice(args);
        sc.trace(&all);
        assert_eq!(sc.transport(), "ring", "{args:?}");
        sc.stop();
    }
}

#[test]
fn perf_transport_port_not_open_and_peer_refused() {
    let Some(mut sc) = Scenario::new("perf_transport_port_not_open_and_peer_refused").start()
    else {
        return;
    };
    let port = free_port();
    sc.trace(&["--transport", "perf", "--port", &port.to_string()]);
    assert_eq!(sc.transport(), "perf");
    let _ = TcpStream::connect(loopback(port));
    let socketless = sc.sees_socketless_rsts();
    let events = sc.stop();

    let received = provoked(&events, "received", "peer_refused");
    assert_eq!(received.len(), 1, "events:\n{}", describe(&events));
    assert_eq!(received[0]["remote_port"], port);
    assert_eq!(received[0]["state"], "SYN_SENT");
    let sent = provoked(&events, "sent", "port_not_open");
    assert_eq!(
        sent.len(),
        usize::from(socketless),
        "events:\n{}",
        describe(&events)
    );
    if let Some(ev) = sent.first() {
        assert_eq!(ev["local_port"], port);
        assert_eq!(ev["packet"]["flags"], "S");
    }
}

#[test]
fn perf_transport_close_with_unread_data() {
    let listener = TcpListener::bind(loopback(0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(mut sc) = Scenario::new("perf_transport_close_with_unread_data")
        .trace(&["--transport", "perf", "--port", &port.to_string()])
        .start()
    else {
        return;
    };
    assert_eq!(sc.transport(), "perf");

    let mut client = TcpStream::connect(loopback(port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.write_all(&[7u8; 100]).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut peek = [0u8; 1];
    server.peek(&mut peek).unwrap();
    drop(server); // close() with 100 bytes unread
    let mut buf = [0u8; 16];
    assert!(
        client.read(&mut buf).is_err(),
        "the client should see a reset"
    );
    let confidence = sc.proven_confidence("close_unread_data");
    let events = sc.stop();

    let sent = provoked(&events, "sent", "close_unread_data");
    assert_eq!(sent.len(), 1, "events:\n{}", describe(&events));
    assert_eq!(sent[0]["local_port"], port);
    assert_eq!(sent[0]["confidence"], confidence);
    assert_eq!(sent[0]["evidence"]["unread_bytes_lost"], 100);
    assert_eq!(sent[0]["pid"], std::process::id());
    assert_eq!(find(&events, "received", "peer_reset").len(), 1);
}

/// A storm's connect()s: bounded, so that however fast the host, the
/// reference's ring holds all their events.
const STORM_ATTEMPTS: u64 = 40_000;

#[test]
fn perf_transport_counts_every_lost_event() {
    let Some(mut sc) = Scenario::new("perf_transport_counts_every_lost_event").start() else {
        return;
    };
    let port = free_port().to_string();
    // The reference: a ring buffer that holds the whole storm unread
    // (`STORM_ATTEMPTS` connect()s make about twice as many events of 328
    // bytes). It, not the number of connect()s, says how many RSTs there
    // were: a SYN retransmitted under load (seen under TCG) makes a second RST.
    let reference = Tracer::start(&["--port", &port, "--ring-buffer", "64M"]);
    // One page of perf buffer per CPU, and a reader behind the storm's
    // threads (the lowest priority): most of a storm cannot be queued.
    sc.trace(&[
        "--transport",
        "perf",
        "--port",
        &port,
        "--ring-buffer",
        "4K",
        "--nice",
        "19",
    ]);
    assert_eq!(sc.transport(), "perf");
    let port: u16 = port.parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, attempts) = (stop.clone(), attempts.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed)
                    && attempts.fetch_add(1, Ordering::Relaxed) < STORM_ATTEMPTS
                {
                    let _ = TcpStream::connect(loopback(port));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let attempts = attempts.load(Ordering::Relaxed).min(STORM_ATTEMPTS);
    let events = sc.stop();
    let all = reference.stop();
    assert!(attempts > 100, "storm too small: {attempts}");
    let lost_in = |events: &[serde_json::Value]| -> u64 {
        events
            .iter()
            .filter_map(|e| e["gap"]["lost"].as_u64())
            .sum()
    };
    let rsts_in =
        |events: &[serde_json::Value]| events.iter().filter(|e| e["gap"].is_null()).count() as u64;
    assert_eq!(lost_in(&all), 0, "the reference lost events");
    let (rsts, lost, total) = (rsts_in(&events), lost_in(&events), rsts_in(&all));
    eprintln!("perf storm: {attempts} attempts, {total} RSTs, {rsts} exported + {lost} lost");
    assert!(lost > 0, "no gap records in {} lines", events.len());
    assert!(total >= attempts, "{total} RSTs for {attempts} attempts");
    assert_eq!(
        rsts + lost,
        total,
        "{rsts} exported + {lost} lost of {total} RSTs"
    );
}
