//! What the kernel side could not capture or remember is counted and
//! reported: in the summary, the metrics and the JSON export's gap records.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::netns::A_ADDR;
use common::*;
use rsttrace_ebpf::abi::MAX_HISTORY;

/// The close history is an LRU map: more closed connections than it holds
/// push the oldest out, and each one pushed out is counted, the same in the
/// summary and in the export's gap records.
#[test]
fn history_evictions_are_counted_and_reported() {
    let Some(sc) = Scenario::new("history_evictions_are_counted_and_reported").start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("drops.jsonl");
    // No events wanted, only the drops: a port nothing uses.
    let rst = sc.attach(
        rsttrace()
            .args(["--port", &free_port().to_string(), "--quiet", "--write"])
            .arg(&export),
    );

    let listener = TcpListener::bind(loopback(0)).unwrap();
    let addr = listener.local_addr().unwrap();
    // Each connection leaves two closes (its client and server ends) under
    // two keys. Loopback reuses client ports still in TIME_WAIT
    // (tcp_tw_reuse), so only distinct client ports make distinct keys.
    let mut client_ports = HashSet::new();
    for _ in 0..MAX_HISTORY {
        let client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        client_ports.insert(client.local_addr().unwrap().port());
        drop(client);
        drop(server);
    }
    let keys = 2 * client_ports.len() as u64;
    assert!(
        keys > u64::from(MAX_HISTORY) + 1000,
        "only {keys} distinct closes: the map did not overflow"
    );
    let (status, summary) = rst.interrupt();
    assert!(status.success(), "{summary}");

    let evicted = summary_event(&summary)
        .and_then(|s| s["kernel_drops"]["history_evicted"].as_u64())
        .unwrap_or_else(|| panic!("no history evictions in the summary:\n{summary}"));
    // At least the closes beyond the map's size (the host's other
    // connections may add to them).
    assert!(
        evicted >= keys - u64::from(MAX_HISTORY),
        "evicted {evicted} of {keys} distinct closes\n{summary}"
    );
    let reported: u64 = read_jsonl(&export)
        .iter()
        .filter_map(|r| r["gap"]["history_evicted"].as_u64())
        .sum();
    assert_eq!(reported, evicted, "gap records and summary disagree");
}

/// The per-CPU note of the last RST, which keeps the error report an RST
/// raises from being reported again as an abort, must not swallow a later
/// abort of the same socket. Here a connect answers a forged SYN-ACK with an
/// RST, stays in SYN_SENT, and gives up seconds later with ETIMEDOUT.
#[test]
fn an_abort_long_after_an_rst_on_its_socket_is_reported() {
    let port = free_port();
    // Nobody answers the SYN, nor the RST.
    let Some(mut sc) = Scenario::new("an_abort_long_after_an_rst_on_its_socket_is_reported")
        .netns_pair()
        .nft(Side::B, input_rules(&format!("tcp dport {port} drop;")))
        .start()
    else {
        return;
    };
    // The RST (in the softirq of the forged segment, sent from here) and the
    // SYN timer run on one CPU, the one whose note would swallow the abort.
    pin_to_cpu(0);
    let busy = Arc::new(AtomicBool::new(true));
    // A busy CPU keeps its timers: an idle one may hand them to another.
    let spinner = {
        let busy = busy.clone();
        std::thread::spawn(move || {
            while busy.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    // rsttrace inherits the pinning: it runs on CPU 0 too.
    sc.trace(&["--port", &port.to_string()]);
    let (tx, rx) = std::sync::mpsc::channel();
    let target = sc.b().socket_addr(port);
    let client = sc
        .a()
        .spawn(move || connect_giving_up_after_one_retry(target, &tx));
    let client_port = rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // A SYN-ACK that acknowledges nothing the client sent: it answers RST.
    let from = SocketAddrV4::new(sc.b().addr, port);
    let to = SocketAddrV4::new(A_ADDR, client_port);
    sc.b().run(move || send_segment(from, to, 0x12, 1_000, 1));
    let started = Instant::now();
    let error = client.join().unwrap();
    busy.store(false, Ordering::Relaxed);
    spinner.join().unwrap();
    assert_eq!(error, Some(libc::ETIMEDOUT), "the connect gives up");
    assert!(
        started.elapsed() > Duration::from_millis(100),
        "not an echo"
    );
    sc.wait_for(Duration::from_secs(3), |ev| {
        !find(ev, "abort", "retransmit_timeout").is_empty()
    });
    let events = sc.stop();

    let ours = |e: &&serde_json::Value| e["local_port"] == client_port;
    let rsts: Vec<_> = events
        .iter()
        .filter(|e| e["direction"] == "sent")
        .filter(ours)
        .collect();
    assert_eq!(
        rsts.len(),
        1,
        "the RST to the forged SYN-ACK:\n{}",
        describe(&events)
    );
    let aborts: Vec<_> = find(&events, "abort", "retransmit_timeout")
        .into_iter()
        .filter(ours)
        .collect();
    assert_eq!(
        aborts.len(),
        1,
        "the connect's own abort:\n{}",
        describe(&events)
    );
}

/// A blocking connect from this thread with one SYN retry (gives up after
/// about 3 s); sends its local port first. Returns the connect's error.
fn connect_giving_up_after_one_retry(
    target: SocketAddr,
    port: &std::sync::mpsc::Sender<u16>,
) -> Option<i32> {
    let SocketAddr::V4(target) = target else {
        unreachable!("the namespaces are IPv4")
    };
    let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: a socket this function owns and closes; the addresses live
    // through each call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let retries: i32 = 1;
        let rc = libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_SYNCNT,
            (&retries as *const i32).cast(),
            size_of::<i32>() as u32,
        );
        assert_eq!(rc, 0, "TCP_SYNCNT");
        let mut local = sockaddr(SocketAddrV4::new(A_ADDR, 0));
        assert_eq!(
            libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len),
            0
        );
        let mut local_len = len;
        libc::getsockname(
            fd,
            (&mut local as *mut libc::sockaddr_in).cast(),
            &mut local_len,
        );
        port.send(u16::from_be(local.sin_port)).unwrap();
        let remote = sockaddr(target);
        let rc = libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len);
        let error = (rc != 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        libc::close(fd);
        error
    }
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; the call affects this thread and
    // the threads it starts afterwards.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}
