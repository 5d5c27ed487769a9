//! The causes that need a link between two hosts: a pair of network
//! namespaces joined by veth, with nftables dropping or rejecting on it,
//! real sockets, real RSTs (or aborts), traced by the real rsttrace. Each
//! asserts the cause, direction, ports, namespace and owner in the JSON
//! export, and that nothing is labelled `certain` that the kernel did not
//! confirm.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn our_pid() -> u64 {
    u64::from(std::process::id())
}

#[test]
fn port_not_open_between_namespaces_names_the_last_listener() {
    let port = free_port();
    let Some(mut sc) = Scenario::new("port_not_open_between_namespaces_names_the_last_listener")
        .netns_pair()
        .trace(&["--port", &port.to_string()])
        .start()
    else {
        return;
    };
    // A listener that came and went: the port's history names it.
    sc.b()
        .run(move || drop(TcpListener::bind(("0.0.0.0", port)).unwrap()));
    let target = sc.b().socket_addr(port);
    let err = sc.a().run(move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(5)).expect_err("nothing listens")
    });
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let socketless = sc.sees_socketless_rsts();
    let events = sc.stop();

    // A's connect() proved it owns the socket that received the RST.
    let received = provoked(&events, "received", "peer_refused");
    assert_eq!(received.len(), 1, "events:\n{}", describe(&events));
    assert_eq!(received[0]["pid"], our_pid());
    assert_eq!(received[0]["netns"], sc.a().inode());
    assert_eq!(received[0]["remote_port"], port);
    if !socketless {
        not_applicable("port_not_open: the send hook cannot see socketless RSTs");
        return;
    }
    // B answered from softirq, with no socket: no owner, whoever the actor was.
    let sent = provoked(&events, "sent", "port_not_open");
    assert_eq!(sent.len(), 1, "events:\n{}", describe(&events));
    let ev = sent[0];
    assert_eq!(ev["local_port"], port);
    assert_eq!(ev["netns"], sc.b().inode());
    assert_eq!(ev["pid"], Value::Null, "{ev}");
    assert_eq!(ev["owner_unknown"], "no_socket");
    let prior = &ev["evidence"]["prior"];
    assert_eq!(prior["kind"], "listener_closed", "{ev}");
    assert_eq!(prior["pid"], our_pid(), "{ev}");
}

#[test]
fn connect_timeout_is_joined_to_the_abandoned_connect() {
    let port = free_port();
    // A never sees the SYN-ACK, so its connect() times out...
    let Some(mut sc) = Scenario::new("connect_timeout_is_joined_to_the_abandoned_connect")
        .netns_pair()
        .nft(
            Side::A,
            input_rules(&format!(
                "tcp sport {port} tcp flags & (syn | ack) == syn | ack drop;"
            )),
        )
        .start()
    else {
        return;
    };
    let listener = sc.b().listen(port);
    sc.trace(&["--port", &port.to_string()]);
    let target = sc.b().socket_addr(port);
    let err = sc.a().run(move || {
        TcpStream::connect_timeout(&target, Duration::from_millis(300)).expect_err("dropped")
    });
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    // ...and B's retransmitted SYN-ACK (1 s later) finds no socket at A.
    sc.a().nft(DELETE_RULES);
    let socketless = sc.sees_socketless_rsts();
    let confidence = sc.proven_confidence("connect_timeout");
    let plan = sc.plan().clone();
    sc.wait_for(Duration::from_secs(8), |ev| {
        !find(ev, "sent", "connect_timeout").is_empty()
    });
    let events = sc.stop();
    drop(listener);
    if !socketless {
        not_applicable("connect_timeout: the send hook cannot see socketless RSTs");
        return;
    }
    let sent = provoked(&events, "sent", "connect_timeout");
    assert!(!sent.is_empty(), "events:\n{}", describe(&events));
    let ev = sent[0];
    assert_eq!(ev["remote_port"], port);
    assert_eq!(ev["netns"], sc.a().inode());
    assert_eq!(ev["packet"]["flags"], "S.");
    assert_eq!(ev["confidence"], confidence, "{ev}");
    let prior = &ev["evidence"]["prior"];
    assert_eq!(prior["kind"], "connect_abandoned", "{ev}");
    assert_eq!(prior["pid"], our_pid(), "{ev}");
    let late = ev["evidence"]["syn_ack_late_ms"].as_u64().unwrap();
    assert!(late >= 300, "the SYN-ACK came {late} ms after the close");
    assert_no_unconfirmed_certainty(&plan, &events);
}

#[test]
fn retransmit_timeout_then_half_open() {
    let Some(mut sc) = Scenario::new("retransmit_timeout_then_half_open")
        .netns_pair()
        .start()
    else {
        return;
    };
    let port = free_port();
    let listener = sc.b().listen(port);
    sc.trace(&["--port", &port.to_string()]);
    let target = sc.b().socket_addr(port);
    let client = sc.a().connect(target);
    let (mut server, _) = listener.accept().unwrap();
    set_int(
        client.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_USER_TIMEOUT,
        500,
    );
    // B stops hearing A: A's data is never acknowledged, and A gives up
    // after TCP_USER_TIMEOUT with ETIMEDOUT, sending no RST.
    sc.b().nft(&input_rules(&format!("tcp dport {port} drop;")));
    (&client).write_all(b"hello").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let err = (&client).read(&mut [0u8; 8]).expect_err("timed out");
    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT), "{err}");
    // B never learnt of it; when it talks, A has no socket and resets.
    sc.b().nft(DELETE_RULES);
    server.write_all(b"still there?").unwrap();
    let socketless = sc.sees_socketless_rsts();
    let aborts_seen = sc.sees_aborts();
    let plan = sc.plan().clone();
    sc.wait_for(Duration::from_secs(5), |ev| {
        !find(ev, "received", "peer_reset").is_empty()
    });
    let events = sc.stop();

    if aborts_seen {
        let aborts = provoked(&events, "abort", "retransmit_timeout");
        assert_eq!(aborts.len(), 1, "events:\n{}", describe(&events));
        let ev = aborts[0];
        assert_eq!(ev["confidence"], "certain");
        assert_eq!(ev["pid"], our_pid());
        assert_eq!(ev["netns"], sc.a().inode());
        assert_eq!(ev["remote_port"], port);
        assert_eq!(ev["evidence"]["errno"], "ETIMEDOUT");
        assert_eq!(ev["socket"]["unacked"], 5);
        assert_eq!(ev["evidence"]["state_before"], "ESTABLISHED", "{ev}");
    }

    let peer = provoked(&events, "received", "peer_reset");
    assert_eq!(peer.len(), 1, "events:\n{}", describe(&events));
    assert_eq!(peer[0]["netns"], sc.b().inode());
    // How long the peer had been silent (the kernel's tick rate is measured).
    assert!(peer[0]["evidence"]["peer_idle_s"].is_u64(), "{}", peer[0]);
    if socketless {
        let half = provoked(&events, "sent", "half_open");
        assert_eq!(half.len(), 1, "events:\n{}", describe(&events));
        let ev = half[0];
        assert_eq!(ev["netns"], sc.a().inode());
        assert_eq!(ev["evidence"]["follows_abort"], "ETIMEDOUT", "{ev}");
        assert_eq!(ev["evidence"]["prior"]["pid"], our_pid(), "{ev}");
    }
    assert_no_unconfirmed_certainty(&plan, &events);
}

#[test]
fn icmp_errors_abort_a_connect() {
    let (unreachable, rejected) = (free_port(), free_port());
    let Some(mut sc) = Scenario::new("icmp_errors_abort_a_connect")
        .netns_pair()
        .nft(
            Side::B,
            input_rules(&format!(
                "tcp dport {unreachable} reject with icmpx type host-unreachable; \
                 tcp dport {rejected} reject with icmpx type port-unreachable;"
            )),
        )
        .trace(&[
            "--port",
            &unreachable.to_string(),
            "--port",
            &rejected.to_string(),
        ])
        .start()
    else {
        return;
    };
    if !sc.sees_aborts() {
        return;
    }
    for (port, errno) in [
        (unreachable, libc::EHOSTUNREACH),
        (rejected, libc::ECONNREFUSED),
    ] {
        let target = sc.b().socket_addr(port);
        // A blocking connect(): the first ICMP error arrives while connect()
        // holds the socket lock and stays soft; the one answering the SYN's
        // retransmission (1 s later) is fatal.
        let err = sc
            .a()
            .run(move || TcpStream::connect(target).expect_err("rejected"));
        assert_eq!(err.raw_os_error(), Some(errno), "{err}");
    }
    let events = sc.stop();

    let aborts = provoked(&events, "abort", "unreachable");
    assert_eq!(aborts.len(), 2, "events:\n{}", describe(&events));
    for (ev, errno) in aborts.iter().zip(["EHOSTUNREACH", "ECONNREFUSED"]) {
        assert_eq!(ev["evidence"]["errno"], errno, "{ev}");
        assert_eq!(ev["evidence"]["state_before"], "SYN_SENT", "{ev}");
        assert_eq!(ev["pid"], our_pid());
        assert_eq!(ev["netns"], sc.a().inode());
    }
    // An ICMP error is not an RST: nothing was sent or received. (Gap
    // records, of what the kernel dropped meanwhile, are not events.)
    assert!(
        events
            .iter()
            .filter(|e| e["gap"].is_null())
            .all(|e| e["direction"] == "abort"),
        "events:\n{}",
        describe(&events)
    );
}

#[test]
fn keepalive_timeout_resets_a_silent_peer() {
    let Some(mut sc) = Scenario::new("keepalive_timeout_resets_a_silent_peer")
        .netns_pair()
        .start()
    else {
        return;
    };
    let port = free_port();
    let listener = sc.b().listen(port);
    sc.trace(&["--port", &port.to_string()]);
    let target = sc.b().socket_addr(port);
    let client = sc.a().connect(target);
    let _server = listener.accept().unwrap();
    let fd = client.as_raw_fd();
    set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 1);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 1);
    // B goes silent: the probes are never answered.
    sc.b().nft(&input_rules(&format!("tcp dport {port} drop;")));
    let confidence = sc.proven_confidence("keepalive_timeout");
    let plan = sc.plan().clone();
    sc.wait_for(Duration::from_secs(8), |ev| {
        !find(ev, "sent", "keepalive_timeout").is_empty()
    });
    let events = sc.stop();

    let sent = provoked(&events, "sent", "keepalive_timeout");
    assert_eq!(sent.len(), 1, "events:\n{}", describe(&events));
    let ev = sent[0];
    assert_eq!(ev["confidence"], confidence);
    assert_eq!(ev["pid"], our_pid(), "the owner, not the timer's actor");
    assert_eq!(ev["actor"]["context"], "softirq:TIMER");
    assert!(ev["socket"]["probes_out"].as_u64().unwrap() >= 1);
    // The keepalive RST's own ETIMEDOUT is not reported a second time.
    assert!(
        find(&events, "abort", "retransmit_timeout").is_empty()
            && find(&events, "abort", "keepalive_timeout").is_empty(),
        "events:\n{}",
        describe(&events)
    );
    assert_no_unconfirmed_certainty(&plan, &events);
}

#[test]
fn accept_queue_overflow_with_abort_on_overflow() {
    let port = free_port();
    // Traced first: the listener's owner is seen at listen().
    let Some(mut sc) = Scenario::new("accept_queue_overflow_with_abort_on_overflow")
        .netns_pair()
        .sysctl(Side::B, "net.ipv4.tcp_abort_on_overflow", "1")
        .trace(&["--port", &port.to_string()])
        .start()
    else {
        return;
    };
    let listener = sc.b().run(move || {
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
        // listen() again: only the backlog changes (the queue holds 2).
        // SAFETY: a listening socket we own.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 1) }, 0);
        l
    });
    let target = sc.b().socket_addr(port);
    // The late client: its handshake's last ACK is held back at B, so its
    // request waits while two others fill the accept queue.
    sc.b().nft(&input_rules(&format!(
        "tcp dport {port} tcp flags & (syn | ack | fin | rst) == ack drop;"
    )));
    let late = sc.a().connect(target);
    let late_port = late.local_addr().unwrap().port();
    sc.b().nft(DELETE_RULES);
    sc.b().nft(&input_rules(&format!(
        "tcp sport {late_port} tcp dport {port} drop;"
    )));
    let _early: Vec<TcpStream> = (0..2).map(|_| sc.a().connect(target)).collect();
    std::thread::sleep(Duration::from_millis(100));
    sc.b().nft(DELETE_RULES);
    // Its data carries the ACK: the queue is full, and B resets it.
    (&late).write_all(b"x").unwrap();
    let confidence = sc.proven_confidence("backlog_overflow");
    let plan = sc.plan().clone();
    sc.wait_for(Duration::from_secs(5), |ev| {
        !find(ev, "sent", "backlog_overflow").is_empty()
    });
    let events = sc.stop();
    drop(listener);

    let sent = provoked(&events, "sent", "backlog_overflow");
    assert_eq!(sent.len(), 1, "events:\n{}", describe(&events));
    let ev = sent[0];
    assert_eq!(ev["state"], "LISTEN");
    assert_eq!(ev["remote_port"], late_port);
    assert_eq!(ev["netns"], sc.b().inode());
    assert_eq!(ev["evidence"]["accept_queue"], "full", "{ev}");
    assert_eq!(ev["confidence"], confidence);
    // The listener's owner: it called listen().
    assert_eq!(ev["pid"], our_pid(), "{ev}");
    assert_no_unconfirmed_certainty(&plan, &events);
}

#[test]
fn reconnecting_into_a_time_wait_is_reset() {
    let port = free_port();
    // Without timestamps, B's TIME_WAIT judges a new SYN by its sequence
    // number alone; after 16 MiB the client's next ISN is behind it.
    let Some(mut sc) = Scenario::new("reconnecting_into_a_time_wait_is_reset")
        .netns_pair()
        .sysctl(Side::A, "net.ipv4.tcp_timestamps", "0")
        .trace(&["--port", &port.to_string()])
        .start()
    else {
        return;
    };
    let listener = sc.b().listen(port);
    let target = sc.b().socket_addr(port);
    let local = sc.a().socket_addr(free_port());
    let mut first = sc.a().run(move || connect_from(local, target).unwrap());
    let (mut server, _) = listener.accept().unwrap();
    const SENT: usize = 16 << 20;
    let reader = std::thread::spawn(move || {
        let mut sink = vec![0u8; SENT];
        server.read_exact(&mut sink).unwrap();
        // B closes first: the TIME_WAIT is B's.
        drop(server);
    });
    first.write_all(&vec![0u8; SENT]).unwrap();
    reader.join().unwrap();
    assert_eq!(first.read(&mut [0u8; 1]).unwrap(), 0, "B's FIN");
    drop(first);
    std::thread::sleep(Duration::from_millis(50));
    // Same 4-tuple: B's TIME_WAIT answers the SYN with an ACK for the old
    // connection; A, in SYN_SENT, resets it (and its retry then succeeds).
    let second = sc.a().run(move || connect_from(local, target));
    let plan = sc.plan().clone();
    let events = sc.stop();
    drop((second, listener));

    let sent = provoked(&events, "sent", "time_wait");
    assert!(!sent.is_empty(), "events:\n{}", describe(&events));
    let ev = sent[0];
    assert_eq!(ev["state"], "SYN_SENT");
    assert_eq!(ev["local_port"], local.port());
    assert_eq!(ev["remote_port"], port);
    assert_eq!(ev["netns"], sc.a().inode());
    assert_eq!(ev["pid"], our_pid(), "{ev}");
    assert_no_unconfirmed_certainty(&plan, &events);
}

#[test]
fn a_stray_ack_to_a_listener_is_an_invalid_packet() {
    let port = free_port();
    let Some(mut sc) = Scenario::new("a_stray_ack_to_a_listener_is_an_invalid_packet")
        .netns_pair()
        .trace(&["--port", &port.to_string()])
        .start()
    else {
        return;
    };
    let listener = sc.b().listen(port);
    // An ACK for a handshake the listener never started.
    let from = std::net::SocketAddrV4::new(sc.a().addr, 40_404);
    let to = std::net::SocketAddrV4::new(sc.b().addr, port);
    sc.a()
        .run(move || send_segment(from, to, 0x10, 1_000, 2_000));
    let confidence = sc.proven_confidence("invalid_packet");
    let plan = sc.plan().clone();
    sc.wait_for(Duration::from_secs(3), |ev| {
        !find(ev, "sent", "invalid_packet").is_empty()
    });
    let events = sc.stop();
    drop(listener);

    let sent = provoked(&events, "sent", "invalid_packet");
    assert_eq!(sent.len(), 1, "events:\n{}", describe(&events));
    let ev = sent[0];
    assert_eq!(ev["state"], "LISTEN");
    assert_eq!(ev["packet"]["flags"], ".");
    assert_eq!(ev["remote_port"], 40_404);
    assert_eq!(ev["netns"], sc.b().inode());
    assert_eq!(ev["pid"], our_pid(), "the listener's owner: {ev}");
    assert_eq!(ev["confidence"], confidence);
    assert_no_unconfirmed_certainty(&plan, &events);
}
