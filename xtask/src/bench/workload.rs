//! The traffic the bench measures: an RST storm, and healthy request/response
//! traffic that never makes an RST (TCP_RR and TCP_CRR style, our own
//! generator so that no netperf is needed).
//!
//! The healthy workloads run on the loopback of a network namespace of their
//! own: the TCP counters there prove that they sent no RST, which the host's
//! counters cannot while other work on the machine makes RSTs. The namespace
//! is anonymous and ends with the bench, so there is nothing to clean up.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// No read or accept waits longer than this: a broken run fails, never hangs.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How much work a run did, and for how long.
pub struct Done {
    /// Connect attempts (storm: one RST sent and one received each), or
    /// request/response transactions.
    pub units: u64,
    pub elapsed: Duration,
    /// CPU time of the thread that did the work, where the healthy
    /// workloads measure it (the storm's threads are not timed).
    pub cpu: Option<Duration>,
}

/// connect() to a closed loopback port in a loop on `threads` threads
/// until `duration` passes; every attempt makes the kernel send one RST
/// (NO_SOCKET) and receive it (SYN_SENT). `cpu`: every thread pinned there.
pub fn storm(port: u16, threads: usize, cpu: Option<usize>, duration: Duration) -> Result<Done> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into();
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, count) = (stop.clone(), count.clone());
            thread::spawn(move || {
                if let Some(cpu) = cpu {
                    pin_to_cpu(cpu)?;
                }
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
                    n += 1;
                }
                count.fetch_add(n, Ordering::Relaxed);
                io::Result::Ok(())
            })
        })
        .collect();
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a storm thread panicked"))?
            .context("pinning a storm thread")?;
    }
    Ok(Done {
        units: count.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
        cpu: None,
    })
}

/// Where the healthy workloads run: a network namespace and one CPU.
pub struct Healthy {
    netns: Netns,
    cpu: Option<usize>,
}

impl Healthy {
    pub fn new(cpu: Option<usize>) -> Result<Healthy> {
        Ok(Healthy {
            netns: Netns::new()?,
            cpu,
        })
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// TCP_RR: one connection, 1-byte request and 1-byte response in a loop.
    pub fn request_response(&self, duration: Duration) -> Result<Done> {
        self.run(duration, false)
    }

    /// TCP_CRR: connect, 1-byte request and response, close, in a loop.
    pub fn connect_request_response(&self, duration: Duration) -> Result<Done> {
        self.run(duration, true)
    }

    /// The namespace's TCP counters that count RSTs.
    pub fn reset_counters(&self) -> Result<ResetCounters> {
        self.netns.run(ResetCounters::read)?
    }

    /// Both ends on one thread: on loopback the kernel delivers each
    /// segment (and completes each handshake) within the sending syscall,
    /// so the thread never waits for another. What is measured is the
    /// kernel's TCP path with the tracer's hooks, not the scheduler's
    /// wake-ups, which made two-thread runs swing by 2x with timing alone.
    /// The thread's CPU time (softirq work done in its context included)
    /// gives the rate it would have alone on its CPU: other work on a
    /// shared machine changes wall time, not that.
    fn run(&self, duration: Duration, connection_per_request: bool) -> Result<Done> {
        self.netns.run(|| {
            if let Some(cpu) = self.cpu {
                pin_to_cpu(cpu).context("pinning the generator")?;
            }
            let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
            // Accepted sockets inherit it: no read waits forever.
            set_receive_timeout(&listener, IO_TIMEOUT)?;
            let addr = listener.local_addr()?;
            let start = Instant::now();
            let cpu_start = thread_cpu_time()?;
            let mut units = 0u64;
            let mut byte = [0u8; 1];
            let mut pair = None;
            loop {
                let (client, server) = match pair.take() {
                    Some(pair) => pair,
                    None => {
                        let client =
                            TcpStream::connect_timeout(&addr, IO_TIMEOUT).context("connect")?;
                        client.set_read_timeout(Some(IO_TIMEOUT))?;
                        let (server, _) = listener.accept().context("accept")?;
                        (client, server)
                    }
                };
                let (mut client, mut server) = (client, server);
                client.write_all(b"q").context("request")?;
                server.read_exact(&mut byte).context("server read")?;
                server.write_all(&byte).context("response")?;
                client.read_exact(&mut byte).context("client read")?;
                units += 1;
                let done = units.is_multiple_of(64) && start.elapsed() >= duration;
                if connection_per_request || done {
                    close_cleanly(client, server)?;
                } else {
                    pair = Some((client, server));
                }
                if done {
                    return Ok(Done {
                        units,
                        elapsed: start.elapsed(),
                        cpu: Some(thread_cpu_time()?.saturating_sub(cpu_start)),
                    });
                }
            }
        })?
    }
}

/// The calling thread's CPU time, softirq work done in its context included.
fn thread_cpu_time() -> io::Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The client closes first, with nothing unread, and the server after
/// reading its FIN: FINs both ways, never an RST.
fn close_cleanly(client: TcpStream, mut server: TcpStream) -> Result<()> {
    drop(client);
    let mut byte = [0u8; 1];
    if server.read(&mut byte).context("server read at close")? != 0 {
        bail!("the client sent more than its request");
    }
    Ok(())
}

/// SO_RCVTIMEO, which accept() honours and accepted sockets inherit.
pub fn set_receive_timeout(listener: &TcpListener, timeout: Duration) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid socket and a timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("setsockopt(SO_RCVTIMEO)");
    }
    Ok(())
}

/// Pins the calling thread (or, before exec, the process) to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET bounds-checks.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; the kernel fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// An anonymous network namespace with its loopback up, alive while this
/// handle (or a process that entered it) is.
pub struct Netns(OwnedFd);

impl Netns {
    pub fn new() -> Result<Netns> {
        // unshare() moves only the calling thread: a thread of our own,
        // which ends here, keeps the bench's other threads where they are.
        thread::spawn(|| -> Result<Netns> {
            // SAFETY: affects only this thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error()).context(
                    "unshare(CLONE_NEWNET) for the healthy-traffic namespace (needs root)",
                );
            }
            loopback_up().context("bringing up lo in the bench's network namespace")?;
            let ns = File::open("/proc/thread-self/ns/net")?;
            Ok(Netns(ns.into()))
        })
        .join()
        .expect("netns thread panicked")
    }

    /// Moves the calling thread (or, before exec, the process) into it.
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: a namespace fd we own.
        if unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        thread::scope(|s| {
            s.spawn(|| {
                self.enter().context("setns into the bench namespace")?;
                Ok(f())
            })
            .join()
            .expect("netns thread panicked")
        })
    }

    pub fn raw_fd(&self) -> i32 {
        self.0.as_raw_fd()
    }
}

fn loopback_up() -> io::Result<()> {
    // SAFETY: plain ioctls on a socket this function owns, with an ifreq
    // that names "lo" and lives across both calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let _close = OwnedFdGuard(fd);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

struct OwnedFdGuard(i32);

impl Drop for OwnedFdGuard {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

/// The TCP counters of the calling thread's namespace that grow with RSTs.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ResetCounters {
    /// RSTs sent (`Tcp: OutRsts`); on loopback every one is also received.
    pub out_rsts: u64,
    /// Established connections reset (`Tcp: EstabResets`).
    pub estab_resets: u64,
    /// Connection attempts that failed (`Tcp: AttemptFails`).
    pub attempt_fails: u64,
}

impl ResetCounters {
    pub fn read() -> Result<ResetCounters> {
        // thread-self: a thread that entered another namespace reads that one.
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp")?;
        Ok(ResetCounters {
            out_rsts: tcp_counter(&snmp, "OutRsts")?,
            estab_resets: tcp_counter(&snmp, "EstabResets")?,
            attempt_fails: tcp_counter(&snmp, "AttemptFails")?,
        })
    }

    /// Growth since `before`.
    pub fn since(self, before: ResetCounters) -> ResetCounters {
        ResetCounters {
            out_rsts: self.out_rsts.saturating_sub(before.out_rsts),
            estab_resets: self.estab_resets.saturating_sub(before.estab_resets),
            attempt_fails: self.attempt_fails.saturating_sub(before.attempt_fails),
        }
    }

    pub fn is_zero(self) -> bool {
        self == ResetCounters::default()
    }
}

/// A `Tcp:` counter of /proc/net/snmp (a line of names, then one of values).
fn tcp_counter(snmp: &str, name: &str) -> Result<u64> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        bail!("no Tcp lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .with_context(|| format!("no {name} in /proc/net/snmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_counters_by_name() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
            Tcp: RtoAlgorithm ActiveOpens AttemptFails EstabResets OutRsts\n\
            Tcp: 1 10 2 3 42\n";
        assert_eq!(tcp_counter(snmp, "OutRsts").unwrap(), 42);
        assert_eq!(tcp_counter(snmp, "AttemptFails").unwrap(), 2);
        assert!(tcp_counter(snmp, "InRsts").is_err());
    }

    /// The healthy workloads work and really make no RST (needs root for
    /// its network namespace).
    #[test]
    fn healthy_workloads_make_no_rst() {
        if !crate::system::is_root() {
            assert!(
                std::env::var_os("RSTTRACE_REQUIRE_KERNEL_TESTS").is_none(),
                "healthy_workloads_make_no_rst needs root (RSTTRACE_REQUIRE_KERNEL_TESTS is set)"
            );
            eprintln!("SKIPPED healthy_workloads_make_no_rst: not root");
            return;
        }
        let healthy = Healthy::new(allowed_cpus().first().copied()).unwrap();
        let before = healthy.reset_counters().unwrap();
        let rr = healthy
            .request_response(Duration::from_millis(200))
            .unwrap();
        let crr = healthy
            .connect_request_response(Duration::from_millis(200))
            .unwrap();
        let after = healthy.reset_counters().unwrap();
        assert!(
            rr.units > 100 && crr.units > 10,
            "{} {}",
            rr.units,
            crr.units
        );
        assert!(rr.cpu.unwrap() > Duration::ZERO);
        assert!(after.since(before).is_zero(), "{:?}", after.since(before));
        // The counters are the namespace's: the host's storm does not reach them.
        let _ = storm(closed_port(), 1, None, Duration::from_millis(50)).unwrap();
        assert!(healthy.reset_counters().unwrap().since(after).is_zero());
    }

    fn closed_port() -> u16 {
        let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    }
}
