//! Every hook family the running kernel offers traces the same RSTs:
//! `rsttrace check --hooks X` says whether X is usable here, and if so
//! `rsttrace --hooks X` must attach it and see a refused connection.

mod common;

use std::net::TcpStream;
use std::process::Command;

use common::*;

const FAMILIES: [&str; 4] = ["tp_btf", "tracepoint", "fentry", "kprobe"];

#[test]
fn each_usable_hook_family_sees_a_refused_connection() {
    if !kernel_tests_possible("each_usable_hook_family_sees_a_refused_connection") {
        return;
    }
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
        let tracer = Tracer::start(&["--hooks", family, "--port", &port.to_string()]);
        let plan = tracer.plan().to_string();
        assert!(
            plan.contains(&format!("send={family}:")),
            "--hooks {family} chose {plan}"
        );
        let socketless = tracer.sees_socketless_rsts();
        let _ = TcpStream::connect(loopback(port));
        let events = tracer.stop();
        eprintln!("hook family {family}: {plan}\n{}", describe(&events));
        assert_eq!(
            find(&events, "received", "peer_refused").len(),
            1,
            "--hooks {family}:\n{}",
            describe(&events)
        );
        assert_eq!(
            find(&events, "sent", "port_not_open").len(),
            usize::from(socketless),
            "--hooks {family}:\n{}",
            describe(&events)
        );
    }
    // Every kernel with BTF has the tracepoints and tp_btf.
    assert!(
        usable.contains(&"tp_btf") && usable.contains(&"tracepoint"),
        "usable: {usable:?}"
    );
}
