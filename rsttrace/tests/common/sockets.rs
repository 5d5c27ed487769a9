//! Sockets the tests provoke RSTs with: free loopback ports, raw libc
//! sockets for forked children, socket options, hand-made TCP segments.

use std::io::Read;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// A loopback port nothing listens on (bound once, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    l.local_addr().unwrap().port()
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A socket connected to 127.0.0.1:`port` with plain libc calls, which are
/// async-signal-safe: for forked children. -1 when the connect failed.
///
/// # Safety
/// Only the libc calls it makes; safe to call after fork().
pub unsafe fn connect_loopback_fd(port: u16) -> i32 {
    // SAFETY: plain syscalls on values this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        );
        if rc == 0 { fd } else { -1 }
    }
}

/// Sets SO_LINGER {on, 0}: close() then sends an RST instead of a FIN.
pub fn set_linger_zero(fd: i32) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` outlives the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
}

/// Sends one bare TCP segment (no payload) from this namespace's raw socket.
pub fn send_segment(
    from: std::net::SocketAddrV4,
    to: std::net::SocketAddrV4,
    flags: u8,
    seq: u32,
    ack: u32,
) {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&from.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&to.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4; // 20-byte header
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&from.ip().octets());
    pseudo.extend_from_slice(&to.ip().octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    tcp[16..18].copy_from_slice(&rsttrace::output::pcapng::checksum(&pseudo).to_be_bytes());
    // SAFETY: a raw socket this function owns and closes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(*to.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let sent = libc::sendto(
            fd,
            tcp.as_ptr().cast(),
            tcp.len(),
            0,
            (&dst as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(sent, 20, "sendto: {err}");
    }
}

pub fn set_int(fd: i32, level: i32, option: i32, value: i32) {
    // SAFETY: a plain setsockopt with an int-sized value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&value as *const i32).cast(),
            size_of::<i32>() as u32,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {option}): {}",
        std::io::Error::last_os_error()
    );
}

/// A TcpStream bound to `local` before connecting (SO_REUSEADDR), as a
/// client pinned to a source port would.
pub fn connect_from(
    local: std::net::SocketAddr,
    target: std::net::SocketAddr,
) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns; it is
    // handed to TcpStream (which closes it) or closed on error.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let stream = std::net::TcpStream::from_raw_fd(fd);
        set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
        let sin = |a: std::net::SocketAddr| {
            let std::net::SocketAddr::V4(a) = a else {
                panic!("IPv4 only")
            };
            libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            }
        };
        let len = size_of::<libc::sockaddr_in>() as u32;
        let l = sin(local);
        if libc::bind(fd, (&l as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let t = sin(target);
        if libc::connect(fd, (&t as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Waits up to 2 s for `s` to have data to read.
pub fn wait_readable(s: &TcpStream) {
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` outlives the call; the count matches.
    let rc = unsafe { libc::poll(&mut pfd, 1, 2000) };
    assert_eq!(rc, 1, "data did not arrive");
}

/// Reads until the peer's RST surfaces as an error (or gives up after 2 s).
pub fn wait_reset(s: &TcpStream) {
    let mut s = s.try_clone().unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..20 {
        match s.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return,
            Ok(0) => {
                let _ = s.shutdown(Shutdown::Both);
                return;
            }
            Ok(_) => continue,
        }
    }
}
