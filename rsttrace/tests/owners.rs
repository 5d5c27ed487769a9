//! Who owns an RST: the socket's owner, not whoever the kernel happened to
//! run on (an interrupt, a timer), and for a server's connection that was
//! never read from, the process that listens on its port.

mod common;

use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn our_pid() -> u64 {
    u64::from(std::process::id())
}

/// An RST made in softirq names the socket's owner, not the task the
/// interrupt landed on: here the peer process, whose write provokes it.
#[test]
fn softirq_reset_names_the_owner_not_the_actor() {
    let listener = TcpListener::bind(loopback(0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(mut sc) = Scenario::new("softirq_reset_names_the_owner_not_the_actor")
        .trace(&["--port", &port.to_string()])
        .start()
    else {
        return;
    };

    // The peer is another process: it connects, waits for our FIN, then
    // writes into our closed socket. Only async-signal-safe calls after fork.
    // SAFETY: the child runs libc calls only and never returns.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        // SAFETY: as above; the child ends in _exit().
        unsafe {
            let fd = connect_loopback_fd(port);
            let ok = fd >= 0;
            let mut byte = 0u8;
            // EOF once the owner closes.
            let eof = ok && libc::read(fd, (&mut byte as *mut u8).cast(), 1) == 0;
            let late = b"late";
            libc::write(fd, late.as_ptr().cast(), late.len());
            libc::usleep(200_000);
            libc::_exit(if eof { 0 } else { 1 });
        }
    }
    let (server, _) = listener.accept().unwrap();
    // shutdown(SHUT_RDWR) with the fd kept open: FIN now, and the peer's
    // later write gets the RST from this very socket. (After a close() the
    // RST may come from a TIME_WAIT socket instead, depending on timing, and
    // timewait sockets carry no owner yet.)
    server.shutdown(Shutdown::Both).unwrap();
    let mut status = 0;
    // SAFETY: `status` outlives the call.
    unsafe { libc::waitpid(child, &mut status, 0) };
    drop(server);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "peer failed"
    );
    let events = sc.stop();

    let sent = find(&events, "sent", "data_after_close");
    assert_eq!(sent.len(), 1, "events:\n{}", describe(&events));
    let ev = sent[0];
    assert_eq!(ev["pid"], std::process::id(), "owner: {}", ev["owner"]);
    assert_eq!(ev["owner"]["source"], "tracked");
    assert_eq!(ev["actor"]["context"], "softirq:NET_RX");
    assert_eq!(
        ev["actor"]["pid"], child,
        "the actor is the peer that wrote"
    );
    // Enriched from /proc: this test binary's command line and netns.
    let cmdline = ev["cmdline"].as_str().unwrap_or_default();
    assert!(cmdline.contains("owners"), "cmdline {cmdline:?}");
    assert!(ev["netns"].is_u64(), "netns {}", ev["netns"]);
}

/// A server's connection reset by its client before the server closed it
/// has no owner of its own: it names the process that listens on its port,
/// and `--pid` of that process keeps it (the client's own RST, another
/// process's, is filtered out in the kernel). The kernel side learns the
/// owner from listen() while rsttrace runs...
#[test]
fn an_accepted_connection_names_its_listener() {
    accepted_connection_names_its_listener("an_accepted_connection_names_its_listener", false);
}

/// ...and from /proc at start for a port that was listening before.
#[test]
fn a_listener_older_than_rsttrace_names_its_connections() {
    accepted_connection_names_its_listener(
        "a_listener_older_than_rsttrace_names_its_connections",
        true,
    );
}

fn accepted_connection_names_its_listener(test: &str, listening_before: bool) {
    let Some(mut sc) = Scenario::new(test).start() else {
        return;
    };
    let ours = std::process::id();
    let port = free_port();
    let mut listener = listening_before.then(|| TcpListener::bind(loopback(port)).unwrap());
    sc.trace(&["--port", &port.to_string(), "--pid", &ours.to_string()]);
    let listener = listener
        .take()
        .unwrap_or_else(|| TcpListener::bind(loopback(port)).unwrap());

    // The client is another process: connect, then close with SO_LINGER 0.
    // Only async-signal-safe calls after fork.
    // SAFETY: the child runs libc calls only and never returns.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        // SAFETY: as above; `linger` outlives the call; the child ends in _exit().
        unsafe {
            let fd = connect_loopback_fd(port);
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            let set = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
            libc::usleep(100_000);
            libc::close(fd);
            libc::_exit(if fd >= 0 && set == 0 { 0 } else { 1 });
        }
    }
    let (server, _) = listener.accept().unwrap();
    let mut status = 0;
    // SAFETY: `status` outlives the call.
    unsafe { libc::waitpid(child, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "client failed"
    );
    wait_reset(&server);
    let events = sc.stop();
    drop(server);

    let received = find(&events, "received", "peer_reset");
    assert_eq!(received.len(), 1, "events:\n{}", describe(&events));
    let ev = received[0];
    assert_eq!(ev["local_port"], port);
    assert_eq!(ev["pid"], ours, "{ev}");
    assert_eq!(ev["owner"]["source"], "listener", "{ev}");
    assert!(ev["owner"]["uid"].is_u64() && ev["owner"]["cgroup_id"].as_u64() > Some(0));
    assert!(
        find(&events, "sent", "linger_zero").is_empty(),
        "the client's own RST passed --pid {ours}:\n{}",
        describe(&events)
    );
}

/// A server's sockets reset before it reads from them (one still in the
/// accept queue, one accepted) belong to the listener's owner from the
/// start: the owner is named, inherited from the listener.
#[test]
fn a_server_socket_reset_before_its_first_read_has_the_listeners_owner() {
    let listener = TcpListener::bind(loopback(0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(mut sc) =
        Scenario::new("a_server_socket_reset_before_its_first_read_has_the_listeners_owner")
            .trace(&["--port", &port.to_string()])
            .start()
    else {
        return;
    };
    let accepted_client = TcpStream::connect(loopback(port)).unwrap();
    let (_accepted, _) = listener.accept().unwrap();
    let queued_client = TcpStream::connect(loopback(port)).unwrap();
    for client in [accepted_client, queued_client] {
        use std::os::fd::AsRawFd;
        set_linger_zero(client.as_raw_fd());
        drop(client); // an RST to a server socket nobody read from
    }
    std::thread::sleep(Duration::from_millis(100));
    let events = sc.stop();

    let server_side: Vec<&Value> = events
        .iter()
        .filter(|e| e["direction"] == "received" && e["local_port"] == port)
        .collect();
    assert_eq!(server_side.len(), 2, "events:\n{}", describe(&events));
    for ev in server_side {
        assert_eq!(ev["pid"], our_pid(), "{ev}");
        assert_eq!(ev["owner"]["source"], "listener", "{ev}");
        assert!(ev["owner_unknown"].is_null(), "{ev}");
        // The clients' SO_LINGER 0 closes were seen: paired, certain.
        assert_eq!(ev["cause"], "peer_reset", "{ev}\n{}", describe(&events));
        assert_eq!(ev["confidence"], "certain", "{ev}");
        assert_eq!(ev["evidence"]["peer_event"]["cause"], "linger_zero", "{ev}");
    }
}

/// The owner of a refused connect() is the very thread that called it:
/// its process and thread ids, its own name and user, and its process's
/// cgroup v2 id, whichever way the kernel programs read the current task
/// (`current.rs`: typed loads on 5.11+, helpers before). The thread drops
/// to another user with the raw system call, which changes only its own
/// credentials, and takes a name of its own.
#[test]
fn a_refused_connect_names_the_thread_its_name_and_user() {
    const NAME: &str = "rsttrace-owner";
    const NOBODY: u32 = 65534;
    let closed = free_port();
    let Some(mut sc) = Scenario::new("a_refused_connect_names_the_thread_its_name_and_user")
        .trace(&["--port", &closed.to_string()])
        .start()
    else {
        return;
    };
    let connecting = std::thread::Builder::new()
        .name(NAME.into())
        .spawn(move || {
            // SAFETY: system calls without pointers; they change only this
            // thread's credentials, which end with it.
            let (gid, uid) = unsafe {
                (
                    libc::syscall(libc::SYS_setresgid, NOBODY, NOBODY, NOBODY),
                    libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY),
                )
            };
            assert_eq!((gid, uid), (0, 0), "dropping to nobody");
            TcpStream::connect(loopback(closed)).expect_err("nothing listens");
            // SAFETY: gettid has no preconditions.
            unsafe { libc::gettid() }
        })
        .unwrap();
    let tid = connecting.join().unwrap();
    let events = sc.stop();

    let refused = find(&events, "received", "peer_refused");
    assert_eq!(refused.len(), 1, "events:\n{}", describe(&events));
    let ev = refused[0];
    let owner = &ev["owner"];
    assert_eq!(owner["pid"], our_pid(), "{ev}");
    assert_eq!(owner["tid"], tid, "{ev}");
    assert_ne!(owner["tid"], owner["pid"], "{ev}");
    assert_eq!(owner["comm"], NAME, "{ev}");
    assert_eq!(owner["uid"], NOBODY, "{ev}");
    assert_eq!(owner["cgroup_id"], our_cgroup_id(), "{ev}");
    // The receive ran in that thread's own connect() (loopback: the RST
    // waits in the socket's backlog until connect() releases the socket).
    assert_eq!(ev["actor"]["context"], "task", "{ev}");
    assert_eq!(ev["actor"]["tid"], tid, "{ev}");
    assert_eq!(ev["actor"]["comm"], NAME, "{ev}");
}

/// This process's cgroup v2 id: the inode of its directory.
fn our_cgroup_id() -> u64 {
    use std::os::unix::fs::MetadataExt;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = rsttrace::enrich::procinfo::unified_cgroup_path(&cgroups)
        .expect("a cgroup v2 line in /proc/self/cgroup");
    let dir = rsttrace::enrich::scope::cgroup_v2_root().join(path.trim_start_matches('/'));
    std::fs::metadata(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .ino()
}
