//! Which IP addresses live on this host, in any network namespace: a
//! received RST from one of them had its sender here, where rsttrace sees
//! every RST a TCP stack sends. If none was sent, something else made it
//! (a firewall's reject, an injected segment).
//!
//! Namespaces are found under /run/netns (`ip netns`) and as the network
//! namespace of each process (/proc/PID/ns/net); a short-lived thread enters
//! each in turn and lists its interface addresses. Scans are bounded (number
//! of processes and namespaces) and rate-limited: a storm of unexplained
//! RSTs costs at most one scan per `MIN_RESCAN`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::{Duration, Instant};

/// A scan lists at most this many namespaces...
const MAX_NETNS: usize = 256;
/// ...looked for in at most this many /proc entries.
const MAX_PIDS: usize = 8192;
/// Unknown addresses trigger a rescan, at most this often.
const MIN_RESCAN: Duration = Duration::from_secs(2);

/// Where an address lives on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Local {
    /// The namespace holding it (None: loopback, the receiver's own).
    pub netns: Option<u32>,
}

/// Answers "is this address on this host?".
pub trait Locate {
    fn locate(&mut self, addr: IpAddr, now: Instant) -> Option<Local>;
}

#[derive(Default)]
pub struct HostNet {
    addrs: HashMap<IpAddr, u32>,
    scanned: Option<Instant>,
    /// How long the last scan took, and how many namespaces it listed.
    pub last_scan: Option<(Duration, usize)>,
}

impl Locate for HostNet {
    fn locate(&mut self, addr: IpAddr, now: Instant) -> Option<Local> {
        if addr.is_loopback() {
            return Some(Local { netns: None });
        }
        if let Some(&netns) = self.addrs.get(&addr) {
            return Some(Local { netns: Some(netns) });
        }
        if self
            .scanned
            .is_some_and(|at| now.saturating_duration_since(at) < MIN_RESCAN)
        {
            return None;
        }
        self.scanned = Some(now);
        let started = Instant::now();
        let (addrs, spaces) = scan();
        self.last_scan = Some((started.elapsed(), spaces));
        self.addrs = addrs;
        self.addrs
            .get(&addr)
            .map(|&netns| Local { netns: Some(netns) })
    }
}

/// Every namespace's addresses, address → namespace inode.
fn scan() -> (HashMap<IpAddr, u32>, usize) {
    let spaces = namespaces();
    let count = spaces.len();
    // setns() changes the calling thread only: a thread of our own, which
    // ends with the scan, so no other thread ever runs in another namespace.
    let addrs = std::thread::spawn(move || {
        let mut addrs = HashMap::new();
        for (inode, file) in spaces {
            // SAFETY: setns on a namespace fd we opened and checked.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                continue;
            }
            for addr in interface_addrs() {
                addrs.entry(addr).or_insert(inode);
            }
        }
        addrs
    })
    .join()
    .unwrap_or_default();
    (addrs, count)
}

/// "net:[INODE]" → INODE.
fn ns_inode(target: &std::path::Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse::<u64>()
        .ok()
}

/// Open handles on the host's network namespaces, by inode.
fn namespaces() -> Vec<(u32, File)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let add =
        |seen: &mut HashSet<u64>, out: &mut Vec<(u32, File)>, file: File, expect: Option<u64>| {
            let Ok(meta) = file.metadata() else { return };
            // Only nsfs files (the namespace's own inode): /run/netns entries
            // are bind mounts of them, /proc/PID/ns/net links to them.
            if expect.is_some_and(|ino| ino != meta.ino()) || !is_nsfs(&file) {
                return;
            }
            if out.len() < MAX_NETNS && seen.insert(meta.ino()) {
                out.push((meta.ino() as u32, file));
            }
        };
    // /run/netns belongs to root; its entries are opened without following links.
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for entry in dir.flatten().take(MAX_NETNS) {
            if let Ok(file) = open_ns(&entry.path(), true) {
                add(&mut seen, &mut out, file, None);
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten().take(MAX_PIDS) {
            let name = entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let link = entry.path().join("ns/net");
            // "net:[INODE]": known namespaces are not opened again.
            let Some(ino) = std::fs::read_link(&link).ok().and_then(|t| ns_inode(&t)) else {
                continue;
            };
            if seen.contains(&ino) {
                continue;
            }
            // A /proc ns link is the kernel's, not a path a user controls;
            // it must be followed to reach the namespace. The inode check
            // catches a pid reused in between.
            if let Ok(file) = open_ns(&link, false) {
                add(&mut seen, &mut out, file, Some(ino));
            }
        }
    }
    out
}

fn open_ns(path: &std::path::Path, nofollow: bool) -> std::io::Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
}

fn is_nsfs(file: &File) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    // SAFETY: statfs is plain integers, for which all-zero is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor, and a struct fstatfs may fill.
    let ok = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } == 0;
    ok && st.f_type as i64 == NSFS_MAGIC
}

/// The IPv4/IPv6 addresses of the calling thread's network namespace.
fn interface_addrs() -> Vec<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr of the family it names.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        if !addr.is_loopback() {
            out.push(addr);
        }
    }
    // SAFETY: the list getifaddrs allocated, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local_without_a_scan() {
        let mut host = HostNet::default();
        let now = Instant::now();
        assert_eq!(
            host.locate("127.0.0.9".parse().unwrap(), now),
            Some(Local { netns: None })
        );
        assert_eq!(
            host.locate("::1".parse().unwrap(), now),
            Some(Local { netns: None })
        );
        assert!(host.last_scan.is_none());
    }

    #[test]
    fn unknown_addresses_rescan_at_most_every_min_rescan() {
        let mut host = HostNet::default();
        let now = Instant::now();
        // TEST-NET-3: on no interface.
        let nowhere: IpAddr = "203.0.113.77".parse().unwrap();
        assert_eq!(host.locate(nowhere, now), None);
        let first = host.scanned;
        assert!(first.is_some());
        assert_eq!(host.locate(nowhere, now + Duration::from_millis(10)), None);
        assert_eq!(host.scanned, first, "rescanned within MIN_RESCAN");
        host.locate(nowhere, now + MIN_RESCAN);
        assert_ne!(host.scanned, first);
    }
}
