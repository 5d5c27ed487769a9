//! RSTs a firewall on this host makes (issue 13): nftables `reject with
//! tcp reset` in the server's namespace, for a SYN and for an established
//! flow cut by a rule added later, IPv4 and IPv6. rsttrace reports the
//! reject as a `sent` `firewall_reject` in the server's namespace, with its
//! device, and labels the client's received RST `firewall_reject` by
//! pairing it with that send. Run with `--firewall`: where kprobes work the
//! tracer hooks nf_send_reset (certain) regardless; where they do not (6.18
//! here) the flag checks packets leaving devices (likely).
//!
//! Also the owner of a connection reset in the accept queue of an
//! SO_REUSEPORT group: the listener's owner, with the group's processes.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use common::netns::Netns;
use common::*;
use serde_json::Value;

const A_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const B_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
/// The server's end of the veth pair (`Scenario::netns_pair`).
const SERVER_DEVICE: &str = "veth1";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Family {
    V4,
    V6,
}

/// IPv6 addresses on the pair's veths, for `Family::V6`.
fn add_addresses(sc: &Scenario, family: Family) {
    if family == Family::V6 {
        for (ns, dev, addr) in [(sc.a(), "veth0", A_V6), (sc.b(), "veth1", B_V6)] {
            // nodad: usable at once, no duplicate detection delay.
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                dev,
                "nodad",
            ]);
        }
    }
}

fn server_addr(sc: &Scenario, family: Family, port: u16) -> SocketAddr {
    match family {
        Family::V4 => sc.b().socket_addr(port),
        Family::V6 => SocketAddr::new(IpAddr::V6(B_V6), port),
    }
}

fn listen(ns: &Netns, family: Family, port: u16) -> std::net::TcpListener {
    let any: IpAddr = match family {
        Family::V4 => "0.0.0.0".parse().unwrap(),
        Family::V6 => "::".parse().unwrap(),
    };
    ns.run(move || std::net::TcpListener::bind((any, port)).unwrap())
}

/// The index of `dev` in `ns`, as the kernel numbers it there.
fn ifindex(ns: &Netns, dev: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.name, "-o", "link", "show", dev])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex for {dev} in {}: {text}", ns.name))
}

/// Whether the tracer sees netfilter's RSTs in nf_send_reset (kprobes),
/// or as socketless RSTs leaving a device (`--firewall` without them).
fn in_kernel(plan: &Value) -> bool {
    let firewall = plan["firewall"].as_str().unwrap_or("");
    // Attached up to 2 s late otherwise: the tests load it first.
    assert!(
        !firewall.contains("when nf_reject loads"),
        "nf_reject was loaded before the tracer started: {plan}"
    );
    assert!(
        firewall.starts_with("kprobe:nf_send_reset")
            || firewall.starts_with("tp_btf:net_dev_queue"),
        "--firewall yet netfilter's RSTs are not traced: {plan}"
    );
    firewall.starts_with("kprobe:")
}

/// The reject's sent event and the victim's received one, checked.
fn check(
    events: &[Value],
    sc: &Scenario,
    kernel: bool,
    port: u16,
    victim_state: &str,
    errno: &str,
) {
    let confidence = if kernel { "certain" } else { "likely" };
    let sent = provoked(events, "sent", "firewall_reject");
    assert_eq!(sent.len(), 1, "events:\n{}", describe(events));
    let ev = sent[0];
    assert_eq!(ev["netns"], sc.b().inode(), "{ev}");
    assert_eq!(ev["local_port"], port, "{ev}");
    assert_eq!(ev["confidence"], confidence, "{ev}");
    assert_eq!(ev["pid"], Value::Null, "no process sent it: {ev}");
    let evidence = &ev["evidence"];
    if kernel {
        assert_eq!(evidence["netfilter_hook"], "input", "{ev}");
        // The rejected segment came in on the server's veth.
        assert_eq!(evidence["device"], ifindex(sc.b(), SERVER_DEVICE), "{ev}");
    } else {
        // The RST left by the server's veth.
        assert_eq!(evidence["device"], ifindex(sc.b(), SERVER_DEVICE), "{ev}");
        assert!(
            evidence["why"]
                .as_str()
                .is_some_and(|w| w.contains("no socket")),
            "{ev}"
        );
    }
    assert!(
        events
            .iter()
            .all(|e| e["direction"] != "sent" || e["cause"] == "firewall_reject"),
        "the server's TCP stack sent nothing:\n{}",
        describe(events)
    );

    let received = provoked(events, "received", "firewall_reject");
    assert_eq!(received.len(), 1, "events:\n{}", describe(events));
    let ev = received[0];
    assert_eq!(ev["netns"], sc.a().inode(), "{ev}");
    assert_eq!(ev["remote_port"], port, "{ev}");
    assert_eq!(ev["state"], victim_state, "{ev}");
    assert_eq!(ev["confidence"], confidence, "{ev}");
    let peer = &ev["evidence"]["peer_event"];
    assert_eq!(peer["cause"], "firewall_reject", "{ev}");
    assert_eq!(peer["netns"], sc.b().inode(), "{ev}");
    assert_eq!(ev["evidence"]["errno"], errno, "{ev}");
    check_seq(ev, kernel);
}

/// netfilter's RST carries the rejected segment's ACK number, which is the
/// victim's own `rcv_nxt`: an established victim finds it exactly there,
/// as RFC 5961 demands. The number comes from the received segment where
/// the receive hook has it (kprobe, fentry on tcp_reset), else from the
/// sender's event: nf_send_reset's trigger carries that ACK, the device
/// hook's event no number. A SYN_SENT victim's RST is checked by its ACK.
fn check_seq(ev: &Value, kernel: bool) {
    let seq = &ev["evidence"]["seq"];
    let syn_sent = ev["state"] == "SYN_SENT";
    let from = if !ev["packet"].is_null() {
        "packet"
    } else if kernel && !syn_sent {
        "sender"
    } else {
        assert!(seq.is_null(), "{ev}");
        return;
    };
    let position = if syn_sent { "not_checked" } else { "exact" };
    assert_eq!(seq["position"], position, "{ev}");
    assert_eq!(seq["from"], from, "{ev}");
}

fn reject_syn(test: &str, family: Family) {
    let port = free_port();
    let Some(mut sc) = Scenario::new(test)
        .netns_pair()
        .nft(
            Side::B,
            input_rules(&format!("tcp dport {port} reject with tcp reset;")),
        )
        .trace(&["--port", &port.to_string(), "--firewall"])
        .start()
    else {
        return;
    };
    add_addresses(&sc, family);
    let _listener = listen(sc.b(), family, port);
    let kernel = in_kernel(sc.plan());
    let target = server_addr(&sc, family, port);
    let err = sc
        .a()
        .run(move || TcpStream::connect(target).map(|_| ()))
        .expect_err("rejected");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");
    let events = sc.stop();
    check(&events, &sc, kernel, port, "SYN_SENT", "ECONNREFUSED");
}

fn reject_established(test: &str, family: Family) {
    let port = free_port();
    // The same rule on another port first: nftables loads nf_reject with
    // it, so where kprobes work the tracer hooks nf_send_reset from start.
    let other = free_port();
    let Some(mut sc) = Scenario::new(test)
        .netns_pair()
        .nft(
            Side::B,
            input_rules(&format!("tcp dport {other} reject with tcp reset;")),
        )
        .start()
    else {
        return;
    };
    add_addresses(&sc, family);
    let listener = listen(sc.b(), family, port);
    sc.trace(&["--port", &port.to_string(), "--firewall"]);
    let kernel = in_kernel(sc.plan());
    let target = server_addr(&sc, family, port);
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
    let events = sc.stop();
    check(&events, &sc, kernel, port, "ESTABLISHED", "ECONNRESET");
}

/// A process that listens on `port` with SO_REUSEPORT until dropped: a
/// forked child that only makes system calls, killed and reaped on drop
/// (also when the test fails).
struct ReuseportListener {
    pid: libc::pid_t,
}

/// A listening socket on 127.0.0.1:`port` with SO_REUSEPORT; -1 on error.
fn reuseport_listen(port: u16) -> i32 {
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = size_of::<libc::sockaddr_in>() as u32;
        if libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), len) != 0
            || libc::listen(fd, 16) != 0
        {
            return -1;
        }
        fd
    }
}

impl ReuseportListener {
    fn start(port: u16) -> ReuseportListener {
        let mut pipe = [0i32; 2];
        // SAFETY: the child makes only async-signal-safe calls (socket,
        // bind, listen, write, pause, _exit) before it is killed.
        unsafe {
            assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
            let pid = libc::fork();
            assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
            if pid == 0 {
                let ok: u8 = (reuseport_listen(port) >= 0).into();
                libc::write(pipe[1], (&ok as *const u8).cast(), 1);
                loop {
                    libc::pause();
                }
            }
            libc::close(pipe[1]);
            let mut ok = 0u8;
            let n = libc::read(pipe[0], (&mut ok as *mut u8).cast(), 1);
            libc::close(pipe[0]);
            let child = ReuseportListener { pid };
            assert!(n == 1 && ok == 1, "the child could not listen on {port}");
            child
        }
    }
}

impl Drop for ReuseportListener {
    fn drop(&mut self) {
        // SAFETY: our own child, killed and reaped.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Two processes listen on one port with SO_REUSEPORT; connections reset
/// while still in either accept queue name the listener's owner (the last
/// to listen), and the group's processes.
#[test]
fn a_connection_queued_in_a_reuseport_group_names_the_groups_processes() {
    let port = free_port();
    let Some(mut sc) =
        Scenario::new("a_connection_queued_in_a_reuseport_group_names_the_groups_processes")
            .trace(&["--port", &port.to_string()])
            .start()
    else {
        return;
    };
    // After the tracer: the kernel side sees both listen() calls.
    let child = ReuseportListener::start(port);
    let fd = reuseport_listen(port);
    assert!(fd >= 0, "listen on {port}");
    // SAFETY: our listening socket, closed when the test ends.
    let _listener = unsafe { <std::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // The kernel spreads connections over the group by their 4-tuple.
    for _ in 0..4 {
        use std::os::fd::AsRawFd;
        let client = TcpStream::connect(loopback(port)).unwrap();
        set_linger_zero(client.as_raw_fd());
        drop(client); // an RST to a queued child nobody accepted
    }
    std::thread::sleep(Duration::from_millis(100));
    let events = sc.stop();

    let server_side: Vec<&Value> = events
        .iter()
        .filter(|e| e["direction"] == "received" && e["local_port"] == port)
        .collect();
    assert_eq!(
        server_side.len(),
        4,
        "events:
{}",
        describe(&events)
    );
    let me = u64::from(std::process::id());
    for ev in server_side {
        assert_eq!(ev["owner"]["source"], "listener", "{ev}");
        assert_eq!(ev["pid"], me, "the last to listen: {ev}");
        let group = &ev["evidence"]["owner_group"];
        let pids: Vec<u64> = group["processes"]
            .as_array()
            .unwrap_or_else(|| panic!("no owner_group: {ev}"))
            .iter()
            .filter_map(|p| p["pid"].as_u64())
            .collect();
        let mut expected = vec![me, child.pid as u64];
        expected.sort();
        assert_eq!(pids, expected, "{ev}");
    }
}

#[test]
fn nft_reject_of_a_syn_ipv4() {
    reject_syn("nft_reject_of_a_syn_ipv4", Family::V4);
}

#[test]
fn nft_reject_of_a_syn_ipv6() {
    reject_syn("nft_reject_of_a_syn_ipv6", Family::V6);
}

#[test]
fn nft_reject_of_an_established_flow_ipv4() {
    reject_established("nft_reject_of_an_established_flow_ipv4", Family::V4);
}

#[test]
fn nft_reject_of_an_established_flow_ipv6() {
    reject_established("nft_reject_of_an_established_flow_ipv6", Family::V6);
}
