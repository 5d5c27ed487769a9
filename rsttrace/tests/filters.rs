//! Filters applied in the kernel (`--port`, `--cgroup`): what they keep and
//! what they keep out, on real RSTs.

mod common;

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use common::*;

#[test]
fn port_filter_keeps_other_ports_out() {
    let watched = free_port();
    let other = free_port();
    let Some(mut sc) = Scenario::new("port_filter_keeps_other_ports_out")
        .trace(&["--port", &watched.to_string()])
        .start()
    else {
        return;
    };
    let _ = TcpStream::connect(loopback(other));
    let _ = TcpStream::connect(loopback(watched));
    let socketless = sc.sees_socketless_rsts();
    let events = sc.stop();
    assert!(
        events
            .iter()
            .all(|e| e["local_port"] == watched || e["remote_port"] == watched),
        "events:\n{}",
        describe(&events)
    );
    let expected = usize::from(socketless);
    assert_eq!(find(&events, "sent", "port_not_open").len(), expected);
    assert_eq!(find(&events, "received", "peer_refused").len(), 1);
}

/// `--cgroup` keeps an RST on a socket no process was seen to own (a
/// client connected before rsttrace started, reset by its server): the
/// socket's own cgroup, read when the RST is made, is its creator's.
#[test]
fn cgroup_filter_matches_the_socket_own_cgroup() {
    let Some(mut sc) = Scenario::new("cgroup_filter_matches_the_socket_own_cgroup").start() else {
        return;
    };
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 path in /proc/self/cgroup")
        .to_string();
    let listener = TcpListener::bind(loopback(0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect(loopback(port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    let client_port = client.local_addr().unwrap().port();
    sc.trace(&["--port", &port.to_string(), "--cgroup", &path]);

    set_linger_zero(server.as_raw_fd());
    drop(server);
    wait_reset(&client);
    let events = sc.stop();

    let received = find(&events, "received", "peer_reset");
    assert_eq!(received.len(), 1, "events:\n{}", describe(&events));
    let ev = received[0];
    assert_eq!(ev["local_port"], client_port);
    assert!(ev["owner"].is_null(), "{ev}");
    assert!(ev["socket"]["cgroup_id"].as_u64() > Some(0), "{ev}");
}
