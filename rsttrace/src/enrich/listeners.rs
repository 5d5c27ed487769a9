//! The owner of an accepted socket before it is ever seen: a child socket
//! belongs to whoever owns the listening socket it came from, from the
//! moment the handshake completes, before accept() and before any read.
//! On a server host most RSTs hit such sockets (the peer resets first).
//!
//! The listener of (namespace, port) is read from that namespace's
//! /proc/net/tcp{,6} (entered with setns() on a short-lived thread), and
//! the processes holding its socket inode from /proc/PID/fd. Several
//! processes (a shared fd after fork, or an SO_REUSEPORT group) make the
//! owner `likely`, and all of them are named. Scans are bounded and
//! rate-limited; answers (also "none") are cached per (netns, port).

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use crate::model::event::{Event, Owner, Task, TcpState};

/// At most one scan this often (or 20 times its duration, if longer); a
/// storm of unowned sockets waits for it.
const MIN_RESCAN: Duration = Duration::from_secs(1);
/// How long an answer holds.
const KEEP: Duration = Duration::from_secs(30);
/// Bounds of one scan: bytes of each /proc/net/tcp file, /proc entries,
/// and fd links read in all.
const MAX_TABLE: u64 = 4 << 20;
const MAX_PIDS: usize = 8192;
const MAX_FDS: usize = 1 << 18;
/// Owners named per listener.
const MAX_OWNERS: usize = 16;
/// Cached (netns, port) answers.
const MAX_CACHED: usize = 4096;

/// The processes owning the listener an accepted socket came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerOwners {
    pub port: u16,
    /// Sorted by pid; more than one: the owner is one of them.
    pub owners: Vec<Task>,
}

/// Listening sockets on one port of one namespace: (address, inode).
type PortListeners = Vec<(IpAddr, u64)>;

#[derive(Default)]
pub struct Listeners {
    /// (netns, port) → when it was read, and what was listening.
    cache: HashMap<(u32, u16), (Instant, PortListeners)>,
    last_scan: Option<Instant>,
    /// Socket inode → owning processes, from the last fd walk.
    holders: HashMap<u64, Vec<Task>>,
    /// Scans run, and how long the last one took.
    pub scans: u64,
    pub last_took: Option<Duration>,
}

impl Listeners {
    /// The owners of the listener on `local` in `netns`, if one is found.
    pub fn owners_of(
        &mut self,
        netns: u32,
        local: SocketAddr,
        now: Instant,
    ) -> Option<ListenerOwners> {
        let key = (netns, local.port());
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < KEEP;
        if !self.cache.get(&key).is_some_and(|(at, _)| fresh(at)) {
            // A scan runs on the event path: at most 5% of its time.
            let pause = MIN_RESCAN.max(self.last_took.unwrap_or_default() * 20);
            if self
                .last_scan
                .is_some_and(|at| now.saturating_duration_since(at) < pause)
            {
                return None;
            }
            self.scan(netns, local.port(), now);
        }
        let (_, listeners) = self.cache.get(&key)?;
        let mut owners: Vec<Task> = listeners
            .iter()
            .filter(|(addr, _)| covers(*addr, local.ip()))
            .flat_map(|(_, inode)| self.holders.get(inode).cloned().unwrap_or_default())
            .collect();
        owners.sort_by_key(|t| t.pid);
        owners.dedup_by_key(|t| t.pid);
        owners.truncate(MAX_OWNERS);
        (!owners.is_empty()).then_some(ListenerOwners {
            port: local.port(),
            owners,
        })
    }

    /// Names the owner of a socket never seen with one: a child of a
    /// listener on its local port, in its namespace. Only the passive
    /// side's states; a connect()ed socket has its own owner path.
    pub fn inherit(&mut self, ev: &mut Event, now: Instant) {
        let passive = matches!(
            ev.state,
            TcpState::ESTABLISHED
                | TcpState::SYN_RECV
                | TcpState::NEW_SYN_RECV
                | TcpState::CLOSE_WAIT
                | TcpState::CLOSE
                | TcpState::FIN_WAIT1
                | TcpState::FIN_WAIT2
                | TcpState::LAST_ACK
                | TcpState::CLOSING
        );
        if ev.owner != Owner::NotSeen || ev.socket.is_none() || !passive {
            return;
        }
        let Some(netns) = ev.netns else { return };
        if let Some(found) = self.owners_of(netns, ev.local, now) {
            ev.process = found.owners.first().cloned();
            ev.owner = Owner::ListenerFromProc {
                candidates: found.owners,
            };
        }
    }

    fn scan(&mut self, netns: u32, port: u16, now: Instant) {
        let started = Instant::now();
        self.last_scan = Some(now);
        self.scans += 1;
        let listeners = listeners_in(netns, port);
        if !listeners.is_empty() {
            self.holders = socket_holders(listeners.iter().map(|(_, i)| *i).collect());
        }
        if self.cache.len() >= MAX_CACHED {
            self.cache
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < KEEP);
            if self.cache.len() >= MAX_CACHED {
                self.cache.clear();
            }
        }
        self.cache.insert((netns, port), (now, listeners));
        self.last_took = Some(started.elapsed());
    }
}

/// A listener bound to `bound` accepts connections to `local`.
fn covers(bound: IpAddr, local: IpAddr) -> bool {
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        ip => ip,
    };
    bound.is_unspecified() || v4(bound) == v4(local)
}

/// (address, socket inode) of the listeners on `port` in namespace `netns`.
fn listeners_in(netns: u32, port: u16) -> PortListeners {
    let Some(file) = crate::enrich::hostnet::namespace(netns) else {
        return Vec::new();
    };
    std::thread::spawn(move || {
        // SAFETY: setns on the namespace fd just opened and checked; the
        // thread ends with this closure.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        for table in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
            if let Some(text) = read_bounded(table, MAX_TABLE) {
                out.extend(parse_listeners(&text, port));
            }
        }
        out
    })
    .join()
    .unwrap_or_default()
}

/// LISTEN rows (`st` 0A) of a /proc/net/tcp{,6} table on `port`.
pub fn parse_listeners(table: &str, port: u16) -> PortListeners {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            let inode = f.nth(5)?.parse::<u64>().ok()?;
            let (addr, p) = local.split_once(':')?;
            if state != "0A" || u16::from_str_radix(p, 16).ok()? != port || inode == 0 {
                return None;
            }
            Some((hex_addr(addr)?, inode))
        })
        .collect()
}

/// /proc/net/tcp writes addresses as host-order 32-bit words in hex.
fn hex_addr(hex: &str) -> Option<IpAddr> {
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(hex)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(&hex[i * 8..i * 8 + 8])?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// The processes holding each socket inode (`socket:[N]` fd links).
fn socket_holders(inodes: Vec<u64>) -> HashMap<u64, Vec<Task>> {
    let mut out: HashMap<u64, Vec<Task>> = HashMap::new();
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return out;
    };
    let mut fds_left = MAX_FDS;
    for entry in proc.flatten().take(MAX_PIDS) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fds_left == 0 {
                return out;
            }
            fds_left -= 1;
            // readlink does not follow the link; the target is the kernel's.
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if inodes.contains(&inode) {
                let comm = read_bounded(&format!("/proc/{pid}/comm"), 64)
                    .map(|c| c.trim_end().to_string())
                    .unwrap_or_default();
                let holders = out.entry(inode).or_default();
                if holders.len() < MAX_OWNERS && holders.iter().all(|t| t.pid != pid) {
                    holders.push(Task {
                        pid,
                        tid: pid,
                        comm,
                    });
                }
            }
        }
    }
    out
}

/// A /proc file, without following links, at most `max` bytes.
fn read_bounded(path: &str, max: u64) -> Option<String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let mut text = String::new();
    file.take(max).read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_rows_of_both_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 20 4 30 10 -1\n\
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(
            parse_listeners(v4, 8080),
            [("127.0.0.1".parse().unwrap(), 4242)]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(parse_listeners(v6, 8080), [("::1".parse().unwrap(), 99)]);
    }

    #[test]
    fn wildcard_and_v4_mapped_listeners_cover_their_children() {
        let any6: IpAddr = "::".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(covers(any6, v4));
        assert!(covers(mapped, v4));
        assert!(covers(v4, mapped));
        assert!(!covers(v4, "10.1.2.4".parse().unwrap()));
    }

    #[test]
    fn finds_this_process_as_the_owner_of_its_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let Some(netns) = crate::enrich::hostnet::own_netns() else {
            return;
        };
        let mut l = Listeners::default();
        let now = Instant::now();
        let found = l.owners_of(netns, local, now);
        // Another user's /proc/PID/fd is unreadable without root.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let found = found.expect("our own listener");
        assert!(found.owners.iter().any(|t| t.pid == std::process::id()));
        // Cached: no second scan.
        l.owners_of(netns, local, now + Duration::from_millis(1));
        assert_eq!(l.scans, 1);
    }
}
