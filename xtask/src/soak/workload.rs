//! The soak's traffic: four generators, each making exactly one RST per
//! unit of work in the soak's namespace.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::bench::closed_port;
use crate::bench::workload::{Netns, set_receive_timeout};

/// One generator: every unit makes exactly one RST, which the namespace's
/// loopback both sends and receives.
pub(super) struct Mix {
    pub(super) kind: Kind,
    pub(super) per_sec: u64,
    pub(super) what: &'static str,
    /// The causes rsttrace should name for the sent and the received RST.
    pub(super) sent: &'static str,
    pub(super) received: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Kind {
    Refused,
    Unread,
    Linger,
    AfterClose,
}

pub(super) const MIX: [Mix; 4] = [
    Mix {
        kind: Kind::Refused,
        per_sec: 100,
        what: "connect() to a closed port",
        sent: "port_not_open",
        received: "peer_refused",
    },
    Mix {
        kind: Kind::Unread,
        per_sec: 5,
        what: "close() with unread data, one new python3 process each",
        sent: "close_unread_data",
        received: "peer_reset",
    },
    Mix {
        kind: Kind::Linger,
        per_sec: 10,
        what: "close() with SO_LINGER 0",
        sent: "linger_zero",
        received: "peer_reset",
    },
    Mix {
        kind: Kind::AfterClose,
        per_sec: 10,
        what: "data sent to a socket its application closed",
        sent: "data_after_close",
        received: "peer_reset",
    },
];

/// Runs one generator in the namespace at its rate until `stop`; counts
/// the units that made their RST.
pub(super) fn generate(
    mix: &Mix,
    netns: &Netns,
    stop: &AtomicBool,
    made: &AtomicU64,
) -> Result<()> {
    netns.enter().context("entering the soak's namespace")?;
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    // accept() and the accepted sockets never wait longer than this.
    set_receive_timeout(&listener, Duration::from_secs(5))?;
    let addr = listener.local_addr()?;
    let closed = SocketAddr::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, closed_port()?));
    // The peek waits until the data is there: a close before it arrived
    // (seen 3 times in 2,875 under load) would be a clean FIN, and the
    // data then reaches a closed socket: data_after_close.
    let script = format!(
        "import socket\n\
         s=socket.create_connection(('127.0.0.1',{}))\n\
         s.recv(1,socket.MSG_PEEK)\n\
         s.close()\n",
        addr.port()
    );
    let target = if mix.kind == Kind::Refused {
        closed
    } else {
        addr
    };
    eprintln!("soak: {} on port {}", mix.what, target.port());
    let gap = Duration::from_micros(1_000_000 / mix.per_sec);
    // Server ends of unread-data connections, kept until their RST came.
    let mut held = std::collections::VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        let rst = match mix.kind {
            Kind::Refused => TcpStream::connect_timeout(&closed, Duration::from_secs(1))
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
            Kind::Unread => {
                // Spawned from this thread, the process is in the namespace.
                let mut child = Command::new("python3")
                    .args(["-c", &script])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting python3")?;
                let (mut server, _) = listener.accept()?;
                server.write_all(&[b'x'; 100])?;
                held.push_back(server);
                // At 5/s, 64 server ends are 13 s: their RSTs have come.
                while held.len() > 64 {
                    held.pop_front();
                }
                child.wait()?.success()
            }
            Kind::Linger => {
                let (client, server) = pair(&listener, addr)?;
                set_linger_zero(&client)?;
                drop(client);
                drop(server);
                true
            }
            Kind::AfterClose => {
                let (mut client, server) = pair(&listener, addr)?;
                drop(server);
                // The FIN has arrived within the close on loopback; wait a
                // little anyway, then send into the closed socket.
                thread::sleep(Duration::from_millis(2));
                client.write_all(b"after close")?;
                // The RST shows as the socket's error: EPIPE, as it came in
                // CLOSE_WAIT (tcp_reset()). Usually within the write.
                let deadline = Instant::now() + Duration::from_secs(1);
                loop {
                    match client.take_error()? {
                        Some(e) => break e.kind() == std::io::ErrorKind::BrokenPipe,
                        None if Instant::now() > deadline => break false,
                        None => thread::sleep(Duration::from_millis(1)),
                    }
                }
            }
        };
        if rst {
            made.fetch_add(1, Ordering::Relaxed);
        }
        thread::sleep(gap);
    }
    Ok(())
}

fn pair(listener: &TcpListener, addr: SocketAddr) -> Result<(TcpStream, TcpStream)> {
    let client = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    let (server, _) = listener.accept()?;
    Ok((client, server))
}

fn set_linger_zero(s: &TcpStream) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a live socket and a linger struct that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_LINGER");
    }
    Ok(())
}
