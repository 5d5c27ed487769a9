//! Labels judged on evidence (issue 13): real sockets, in namespaces the
//! tests create, traced by the real rsttrace. A received RST is `certain`
//! only when its sender's send is seen on this host; a firewall's reject
//! or a middlebox's RST never is; a tcp_reset() the kernel runs before its
//! own RST is not a received RST; a stale peer after a kill is half-open.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn our_pid() -> u64 {
    u64::from(std::process::id())
}

/// Whether the tracer hooks nf_send_reset (kprobes work here), and so sees
/// netfilter's RSTs without `--firewall`: the reject is then a sent
/// `firewall_reject [certain]` and the victim's RST pairs with it. With
/// `(when nf_reject loads)` the kprobe attaches up to 2 s after the first
/// reject rule: the tests load the module before they start the tracer.
fn hooks_nf_send_reset(plan: &Value) -> bool {
    let firewall = plan["firewall"].as_str().unwrap_or("");
    assert!(
        !firewall.contains("when nf_reject loads"),
        "nf_reject was loaded before the tracer started: {plan}"
    );
    firewall.starts_with("kprobe:")
}

/// The victim's RST paired with the reject nf_send_reset saw: both
/// `firewall_reject [certain]`, the sent one in the server's namespace.
fn assert_paired_with_the_reject(events: &[Value], ev: &Value, server_netns: u64, port: u16) {
    let sent = find(events, "sent", "firewall_reject");
    assert_eq!(sent.len(), 1, "events:\n{}", describe(events));
    assert_eq!(sent[0]["netns"], server_netns, "{}", sent[0]);
    assert_eq!(sent[0]["local_port"], port, "{}", sent[0]);
    assert_eq!(sent[0]["confidence"], "certain", "{}", sent[0]);
    assert!(
        sent[0]["evidence"]["netfilter_hook"].is_string(),
        "{}",
        sent[0]
    );
    assert_eq!(ev["cause"], "firewall_reject", "{ev}");
    assert_eq!(ev["confidence"], "certain", "{ev}");
    assert_eq!(
        ev["evidence"]["peer_event"]["cause"], "firewall_reject",
        "{ev}"
    );
    assert_eq!(ev["evidence"]["peer_event"]["netns"], server_netns, "{ev}");
}

/// Received events for `port` (either end).
fn received_on(events: &[Value], port: u16) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| {
            e["direction"] == "received" && (e["local_port"] == port || e["remote_port"] == port)
        })
        .collect()
}

/// The RST a TCP stack on this host sent is paired with the one received:
/// `certain`, with the sender's event as evidence.
#[test]
fn a_loopback_peer_reset_is_paired_with_its_sender() {
    let listener = TcpListener::bind(loopback(0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(mut sc) = Scenario::new("a_loopback_peer_reset_is_paired_with_its_sender")
        .trace(&["--port", &port.to_string()])
        .start()
    else {
        return;
    };
    let mut client = TcpStream::connect(loopback(port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.write_all(&[7u8; 100]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(server); // close() with 100 bytes unread: an RST
    let _ = client.read(&mut [0u8; 8]);
    let events = sc.stop();

    let sent = find(&events, "sent", "close_unread_data");
    assert_eq!(sent.len(), 1, "events:\n{}", describe(&events));
    let received = provoked(&events, "received", "peer_reset");
    assert_eq!(received.len(), 1, "events:\n{}", describe(&events));
    let ev = received[0];
    assert_eq!(ev["confidence"], "certain", "{ev}");
    let peer = &ev["evidence"]["peer_event"];
    assert_eq!(peer["cause"], "close_unread_data", "{ev}");
    assert_eq!(peer["pid"], our_pid(), "{ev}");
    assert!(peer["delta_us"].as_i64().unwrap().abs() < 500_000, "{ev}");
    assert_eq!(ev["local_port"], sent[0]["remote_port"]);
}

/// nftables `reject with tcp reset` in the server's namespace answers a
/// SYN: the client's RST came from netfilter, which no TCP stack sent.
#[test]
fn a_firewall_reject_of_a_syn_is_not_the_peers() {
    let Some(mut sc) = Scenario::new("a_firewall_reject_of_a_syn_is_not_the_peers")
        .netns_pair()
        .start()
    else {
        return;
    };
    let port = free_port();
    let _listener = sc.b().listen(port);
    sc.b().nft(&input_rules(&format!(
        "tcp dport {port} reject with tcp reset;"
    )));
    sc.trace(&["--port", &port.to_string()]);
    let target = sc.b().socket_addr(port);
    let err = sc
        .a()
        .run(move || TcpStream::connect(target).map(|_| ()))
        .expect_err("rejected");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");
    let in_kernel = hooks_nf_send_reset(sc.plan());
    let events = sc.stop();

    assert!(
        find(&events, "sent", "port_not_open").is_empty(),
        "the server's TCP stack never saw the SYN:\n{}",
        describe(&events)
    );
    let received = received_on(&events, port);
    assert_eq!(received.len(), 1, "events:\n{}", describe(&events));
    let ev = received[0];
    assert_eq!(ev["netns"], sc.a().inode());
    assert_eq!(ev["state"], "SYN_SENT");
    assert_eq!(ev["evidence"]["errno"], "ECONNREFUSED");
    if in_kernel {
        assert_paired_with_the_reject(&events, ev, sc.b().inode(), port);
        return;
    }
    assert!(
        find(&events, "sent", "firewall_reject").is_empty(),
        "{}",
        describe(&events)
    );
    assert_eq!(ev["cause"], "middlebox_suspect", "{ev}");
    assert_eq!(ev["confidence"], "likely", "{ev}");
    let evidence = &ev["evidence"];
    assert_eq!(
        evidence["unpaired"], "sender on this host sent no RST",
        "{ev}"
    );
    assert_eq!(evidence["suspect"], "firewall_reject", "{ev}");
    assert_eq!(evidence["errno"], "ECONNREFUSED");
    assert!(evidence["sender_netns"].is_u64(), "{ev}");
    assert!(evidence["peer_event"].is_null(), "{ev}");
}

/// An established flow cut by a reject rule added later: the client's
/// next segment gets netfilter's RST; the server's socket never knew.
#[test]
fn a_firewall_reject_of_an_established_flow_is_not_the_peers() {
    let Some(mut sc) = Scenario::new("a_firewall_reject_of_an_established_flow_is_not_the_peers")
        .netns_pair()
        .start()
    else {
        return;
    };
    let port = free_port();
    let listener = sc.b().listen(port);
    // The same rule on another port first: nftables loads nf_reject with
    // it, so a kprobe on nf_send_reset is attached when the tracer starts.
    let other = free_port();
    sc.b().nft(&input_rules(&format!(
        "tcp dport {other} reject with tcp reset;"
    )));
    sc.trace(&["--port", &port.to_string()]);
    let target = sc.b().socket_addr(port);
    let mut client = sc.a().connect(target);
    let (_server, _) = listener.accept().unwrap();
    sc.b().nft(&input_rules(&format!(
        "tcp dport {port} reject with tcp reset;"
    )));
    client.write_all(b"after the rule").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let err = client.read(&mut [0u8; 8]).expect_err("reset");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
    let in_kernel = hooks_nf_send_reset(sc.plan());
    let events = sc.stop();

    assert!(
        events
            .iter()
            .all(|e| e["direction"] != "sent" || e["cause"] == "firewall_reject"),
        "no TCP stack sent an RST:\n{}",
        describe(&events)
    );
    let received = received_on(&events, port);
    assert_eq!(received.len(), 1, "events:\n{}", describe(&events));
    let ev = received[0];
    assert_eq!(ev["netns"], sc.a().inode());
    assert_eq!(ev["state"], "ESTABLISHED");
    assert_eq!(ev["evidence"]["errno"], "ECONNRESET");
    if in_kernel {
        assert_paired_with_the_reject(&events, ev, sc.b().inode(), port);
        return;
    }
    assert!(
        find(&events, "sent", "firewall_reject").is_empty(),
        "{}",
        describe(&events)
    );
    assert_eq!(ev["cause"], "middlebox_suspect", "{ev}");
    assert_eq!(ev["confidence"], "likely", "{ev}");
    assert_eq!(
        ev["evidence"]["middlebox"],
        serde_json::json!(["local_sender_sent_no_rst"]),
        "{ev}"
    );
    assert_eq!(ev["evidence"]["errno"], "ECONNRESET");
}

/// Data reaching a FIN_WAIT socket after shutdown(): the kernel runs
/// tcp_reset() on it, then sends the RST itself. One sent event, carrying
/// the folded tcp_reset(); no received event on the server's side.
#[test]
fn abort_on_data_in_fin_wait_reports_no_phantom_receive() {
    let listener = TcpListener::bind(loopback(0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(mut sc) = Scenario::new("abort_on_data_in_fin_wait_reports_no_phantom_receive")
        .trace(&["--port", &port.to_string()])
        .start()
    else {
        return;
    };
    let mut client = TcpStream::connect(loopback(port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.shutdown(Shutdown::Both).unwrap();
    assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0, "the server's FIN");
    client.write_all(b"late data").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let confidence = sc.proven_confidence("data_after_close");
    let events = sc.stop();
    drop(server);

    let sent = provoked(&events, "sent", "data_after_close");
    assert_eq!(sent.len(), 1, "events:\n{}", describe(&events));
    let ev = sent[0];
    assert_eq!(ev["local_port"], port);
    assert_eq!(ev["confidence"], confidence, "{ev}");
    let folded = &ev["evidence"]["folded_receive"];
    assert!(
        folded["state"] == "FIN_WAIT2" || folded["state"] == "FIN_WAIT1",
        "{ev}"
    );
    let phantom: Vec<_> = events
        .iter()
        .filter(|e| e["direction"] == "received" && e["local_port"] == port)
        .collect();
    assert!(phantom.is_empty(), "phantom receive: {phantom:?}");
    // The client did receive it, from a sender seen on this host.
    let received = find(&events, "received", "peer_reset");
    assert_eq!(received.len(), 1, "events:\n{}", describe(&events));
    assert_eq!(received[0]["confidence"], "certain", "{}", received[0]);
    assert_eq!(
        received[0]["evidence"]["peer_event"]["cause"],
        "data_after_close"
    );
}

/// A client socket killed (`ss -K`) while its RST is lost; the client
/// reconnects from the same port, the server's stale socket answers the
/// SYN with a challenge ACK, the client resets it: half-open, not
/// TIME_WAIT, because the previous connection on the 4-tuple was killed.
#[test]
fn a_killed_socket_whose_port_is_reused_is_half_open() {
    let Some(mut sc) = Scenario::new("a_killed_socket_whose_port_is_reused_is_half_open")
        .netns_pair()
        .start()
    else {
        return;
    };
    let port = free_port();
    let listener = sc.b().listen(port);
    sc.trace(&["--port", &port.to_string()]);
    let target = sc.b().socket_addr(port);
    let local = sc.a().socket_addr(free_port());
    let first = sc.a().run(move || connect_from(local, target).unwrap());
    let (_server, _) = listener.accept().unwrap();
    // B loses A's RST: its socket stays ESTABLISHED.
    sc.b().nft(&input_rules(&format!(
        "tcp dport {port} tcp flags & rst == rst drop;"
    )));
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &sc.a().name, "ss", "-K"])
        .args([
            "dst",
            &target.ip().to_string(),
            "dport",
            "=",
            &port.to_string(),
        ])
        .output()
        .expect("run ss");
    assert!(out.status.success(), "ss -K: {out:?}");
    drop(first);
    sc.b().nft(DELETE_RULES);
    let second = sc.a().run(move || connect_from(local, target));
    assert!(second.is_ok(), "the retried SYN connects: {second:?}");
    let plan = sc.plan().clone();
    let events = sc.stop();

    let killed = find(&events, "sent", "socket_killed");
    assert_eq!(killed.len(), 1, "events:\n{}", describe(&events));
    assert!(
        find(&events, "sent", "time_wait").is_empty(),
        "events:\n{}",
        describe(&events)
    );
    let half = provoked(&events, "sent", "half_open");
    assert_eq!(half.len(), 1, "events:\n{}", describe(&events));
    let ev = half[0];
    assert_eq!(ev["state"], "SYN_SENT", "{ev}");
    assert_eq!(ev["local_port"], local.port());
    assert_eq!(ev["confidence"], "likely");
    let previous = &ev["evidence"]["previous_connection"];
    assert_eq!(previous["ended"], "socket_killed", "{ev}");
    assert!(previous["ago_ms"].as_u64().unwrap() < 10_000, "{ev}");
    assert_no_unconfirmed_certainty(&plan, &events);
}

/// A router between client and server whose conntrack forgot an idle
/// flow (2 s timeout, no loose pickup) rejects the next segment with an
/// RST in the server's name. No TCP stack sent it: middlebox_suspect, or,
/// where the kprobe on nf_send_reset sees the router's reject (it is a
/// namespace of this host), firewall_reject in the router's namespace.
#[test]
fn a_router_that_forgot_an_idle_flow_is_a_middlebox_suspect() {
    // The ct expression loads conntrack in the router; its sysctls exist
    // from then on, per namespace.
    let Some(mut sc) = Scenario::new("a_router_that_forgot_an_idle_flow_is_a_middlebox_suspect")
        .routed_path()
        .nft(
            Side::Router,
            "table inet rtr {\n chain path {\n type filter hook forward priority 0;\n \
             ct state invalid reject with tcp reset;\n }\n}\n",
        )
        .sysctl(
            Side::Router,
            "net.netfilter.nf_conntrack_tcp_timeout_established",
            "2",
        )
        .sysctl(Side::Router, "net.netfilter.nf_conntrack_tcp_loose", "0")
        .start()
    else {
        return;
    };
    let port = free_port();
    let listener = sc.b().listen(port);
    sc.trace(&["--port", &port.to_string()]);
    let mut client = sc.a().connect(sc.b().socket_addr(port));
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"ping").unwrap();
    server.read_exact(&mut [0u8; 4]).unwrap();
    // Idle past the router's conntrack timeout.
    std::thread::sleep(Duration::from_secs(3));
    client.write_all(b"after the gap").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let err = client.read(&mut [0u8; 8]).expect_err("reset");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
    let plan = sc.plan().clone();
    let events = sc.stop();

    assert!(
        events
            .iter()
            .all(|e| e["direction"] != "sent" || e["cause"] == "firewall_reject"),
        "no TCP stack sent an RST:\n{}",
        describe(&events)
    );
    if hooks_nf_send_reset(&plan) {
        // The router is a namespace of this host: its reject is seen in
        // nf_send_reset, there, and the client's RST pairs with it.
        let received = provoked(&events, "received", "firewall_reject");
        assert_eq!(received.len(), 1, "events:\n{}", describe(&events));
        assert_paired_with_the_reject(&events, received[0], sc.router().inode(), port);
        assert!(find(&events, "received", "peer_reset").is_empty());
        assert_no_unconfirmed_certainty(&plan, &events);
        return;
    }
    assert!(
        find(&events, "sent", "firewall_reject").is_empty(),
        "{}",
        describe(&events)
    );
    let received = provoked(&events, "received", "middlebox_suspect");
    assert_eq!(received.len(), 1, "events:\n{}", describe(&events));
    let ev = received[0];
    assert_eq!(ev["netns"], sc.a().inode());
    assert_eq!(ev["confidence"], "likely");
    let evidence = &ev["evidence"];
    assert_eq!(
        evidence["unpaired"], "sender on this host sent no RST",
        "{ev}"
    );
    assert!(
        evidence["middlebox"]
            .as_array()
            .unwrap()
            .contains(&"local_sender_sent_no_rst".into()),
        "{ev}"
    );
    assert!(evidence["peer_idle_s"].as_u64().unwrap() >= 2, "{ev}");
    // With the received segment (kprobe/fentry receive hooks), its TTL is
    // the router's own (64), not the server's forwarded one (63).
    if ev["packet"].is_object() {
        assert_eq!(evidence["ttl"], 64, "{ev}");
    }
    assert!(find(&events, "received", "peer_reset").is_empty());
    assert_no_unconfirmed_certainty(&plan, &events);
}

/// IPv6 and dual-stack (an IPv4 client of an IPv6 listener, v4-mapped on
/// the server's side) pair as IPv4 does.
#[test]
fn ipv6_and_v4_mapped_resets_pair_with_their_senders() {
    let Some(mut sc) = Scenario::new("ipv6_and_v4_mapped_resets_pair_with_their_senders").start()
    else {
        return;
    };
    for (bind, connect) in [("[::1]:0", "[::1]"), ("[::]:0", "127.0.0.1")] {
        let listener = TcpListener::bind(bind).unwrap();
        let port = listener.local_addr().unwrap().port();
        sc.trace(&["--port", &port.to_string()]);
        let mut client = TcpStream::connect(format!("{connect}:{port}")).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.write_all(&[1u8; 10]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(server); // close() with unread data
        let _ = client.read(&mut [0u8; 8]);
        let plan = sc.plan().clone();
        let events = sc.stop();

        let sent = find(&events, "sent", "close_unread_data");
        assert_eq!(sent.len(), 1, "{bind}: events:\n{}", describe(&events));
        let received = find(&events, "received", "peer_reset");
        assert_eq!(received.len(), 1, "{bind}: events:\n{}", describe(&events));
        let ev = received[0];
        assert_eq!(ev["confidence"], "certain", "{bind}: {ev}");
        assert_eq!(ev["evidence"]["peer_event"]["cause"], "close_unread_data");
        // v4-mapped addresses are reported as IPv4 on both sides.
        assert_eq!(ev["local_addr"], sent[0]["remote_addr"], "{bind}");
        assert_eq!(ev["remote_addr"], sent[0]["local_addr"], "{bind}");
        assert_no_unconfirmed_certainty(&plan, &events);
    }
}
