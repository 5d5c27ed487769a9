//! Every hook family the running kernel offers traces the same RSTs:
//! `rsttrace check --hooks X` says whether X is usable here, and if so
//! `rsttrace --hooks X` must attach it and see a refused connection.

mod common;

use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;

use common::*;

const FAMILIES: [&str; 4] = ["tp_btf", "tracepoint", "fentry", "kprobe"];

#[test]
fn each_usable_hook_family_sees_a_refused_connection() {
    let Some(mut sc) = Scenario::new("each_usable_hook_family_sees_a_refused_connection").start()
    else {
        return;
    };
    let mut usable = Vec::new();
    for family in FAMILIES {
        let check = Command::new(env!("CARGO_BIN_EXE_rsttrace"))
            .args(["check", "--hooks", family])
            .output()
            .expect("run rsttrace check");
        if !check.status.success() {
            eprintln!("hook family {family}: not usable on this kernel");
            continue;
        }
        usable.push(family);

        let port = free_port();
        // The IPv6 reset functions are separate hooks (tcp_v6_send_reset).
        let port6 = free_port_v6();
        let mut args = vec!["--hooks", family, "--port"];
        let port_arg = port.to_string();
        args.push(&port_arg);
        let port6_arg = port6.map(|p| p.to_string());
        if let Some(p) = &port6_arg {
            args.extend(["--port", p]);
        }
        sc.trace(&args);
        let plan = sc.plan().clone();
        assert_eq!(sc.send_family(), family, "--hooks {family} chose {plan}");
        let socketless = sc.sees_socketless_rsts();
        let _ = TcpStream::connect(loopback(port));
        if let Some(p6) = port6 {
            let _ = TcpStream::connect(SocketAddr::from((Ipv6Addr::LOCALHOST, p6)));
        }
        let events = sc.stop();
        let (v4, v6): (Vec<_>, Vec<_>) = events
            .iter()
            .cloned()
            .partition(|e| e["local_port"] == port || e["remote_port"] == port);
        eprintln!("hook family {family}: {plan}\n{}", describe(&events));
        let sets: &[(&str, &[serde_json::Value])] = if port6.is_some() {
            &[("IPv4", &v4), ("IPv6", &v6)]
        } else {
            &[("IPv4", &v4)]
        };
        for (ip, events) in sets {
            assert_eq!(
                find(events, "received", "peer_refused").len(),
                1,
                "--hooks {family} {ip}:\n{}",
                describe(events)
            );
            assert_eq!(
                find(events, "sent", "port_not_open").len(),
                usize::from(socketless),
                "--hooks {family} {ip}:\n{}",
                describe(events)
            );
        }
    }
    // Every kernel with BTF has the tracepoints and tp_btf.
    assert!(
        usable.contains(&"tp_btf") && usable.contains(&"tracepoint"),
        "usable: {usable:?}"
    );
}

/// A free [::1] port, or None where the host has no IPv6 loopback.
fn free_port_v6() -> Option<u16> {
    match TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
        Ok(l) => l.local_addr().ok().map(|a| a.port()),
        Err(e) => {
            eprintln!("no IPv6 loopback ({e}): IPv6 hooks not exercised");
            None
        }
    }
}
