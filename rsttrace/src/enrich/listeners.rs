//! Ports that were listening before rsttrace started. The kernel side learns
//! a port's owner when listen() runs (`owners.rs` in rsttrace-ebpf) and
//! lends it to the port's connections that have no owner of their own; for
//! the ports already listening, that owner is found once, at start, the way
//! `ss -ltnp` finds it: each listening socket's inode in
//! /proc/PID/net/tcp{,6} (one process per network namespace), and the
//! process holding that inode among /proc/PID/fd.
//!
//! Other users control how many processes, descriptors and sockets there
//! are: every walk and every read is bounded, and what did not fit is
//! counted, never waited for.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use rsttrace_ebpf::abi::{ListenerKey, Owner};

use crate::enrich::{procinfo, scope};
use crate::model::event::Task;

/// Processes and descriptors looked at, at most.
const MAX_PROCESSES: usize = 65_536;
const MAX_DESCRIPTORS: usize = 1 << 20;
/// Bytes of one /proc/PID/net/tcp{,6} table read, at most (~150 per socket).
const MAX_TABLE_BYTES: usize = 32 << 20;

/// The listening ports found, and whether a bound cut the search short.
#[derive(Debug, Default)]
pub struct Listeners {
    pub owners: Vec<(ListenerKey, Owner)>,
    pub truncated: bool,
}

/// Walks /proc once.
pub fn scan() -> Listeners {
    let mut found = Listeners::default();
    let mut holders: HashMap<u64, u32> = HashMap::new();
    let mut namespaces: HashMap<u32, u32> = HashMap::new();
    let mut descriptors = 0usize;
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return found;
    };
    for (n, entry) in proc.flatten().enumerate() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if n >= MAX_PROCESSES || descriptors >= MAX_DESCRIPTORS {
            found.truncated = true;
            break;
        }
        if let Some(netns) = link_inode(&format!("/proc/{pid}/ns/net"), "net:[") {
            namespaces.entry(netns as u32).or_insert(pid);
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            descriptors += 1;
            if descriptors >= MAX_DESCRIPTORS {
                found.truncated = true;
                break;
            }
            if let Some(inode) = link_inode(&fd.path().to_string_lossy(), "socket:[") {
                holders.entry(inode).or_insert(pid);
            }
        }
    }
    let cgroup_root = scope::cgroup_v2_root();
    for (netns, pid) in namespaces {
        for table in ["tcp", "tcp6"] {
            let Some((text, more)) =
                procinfo::read_capped(&format!("/proc/{pid}/net/{table}"), MAX_TABLE_BYTES)
            else {
                continue;
            };
            found.truncated |= more;
            for l in listening(&String::from_utf8_lossy(&text)) {
                let Some(&holder) = holders.get(&l.inode) else {
                    continue;
                };
                let key = ListenerKey {
                    netns,
                    port: l.port,
                    _pad: 0,
                };
                found.owners.push((key, owner(holder, l.uid, &cgroup_root)));
            }
        }
    }
    count_groups(&mut found.owners);
    found
}

/// Each owner's `listeners`: how many processes listen on its port
/// (SO_REUSEPORT groups), as the kernel side counts them.
fn count_groups(owners: &mut [(ListenerKey, Owner)]) {
    let mut processes: HashMap<ListenerKey, HashSet<u32>> = HashMap::new();
    for (key, owner) in owners.iter() {
        processes.entry(*key).or_default().insert(owner.tgid);
    }
    for (key, owner) in owners.iter_mut() {
        owner.listeners = processes[key].len() as u32;
    }
}

/// How long one /proc walk names the SO_REUSEPORT groups.
const GROUPS_FOR: Duration = Duration::from_secs(10);

/// The processes of an SO_REUSEPORT group, named when an RST on one of
/// its connections is reported (the kernel side keeps one owner per
/// port): one bounded /proc walk, reused for `GROUPS_FOR`, so a storm of
/// such RSTs costs one walk per interval.
#[derive(Default)]
pub(crate) struct Groups {
    walked: Option<Instant>,
    owners: Vec<(ListenerKey, Owner)>,
}

impl Groups {
    pub(crate) fn members(&mut self, netns: u32, port: u16, now: Instant) -> Vec<Task> {
        if self
            .walked
            .is_none_or(|at| now.saturating_duration_since(at) >= GROUPS_FOR)
        {
            self.owners = scan().owners;
            self.walked = Some(now);
        }
        let mut members: Vec<Task> = Vec::new();
        for (key, o) in &self.owners {
            if key.netns == netns && key.port == port && !members.iter().any(|t| t.pid == o.tgid) {
                let end = o.comm.iter().position(|&b| b == 0).unwrap_or(o.comm.len());
                members.push(Task {
                    pid: o.tgid,
                    tid: o.pid,
                    comm: String::from_utf8_lossy(&o.comm[..end]).into_owned(),
                });
            }
        }
        members.sort_by_key(|t| t.pid);
        members
    }
}

/// A LISTEN row of /proc/net/tcp{,6}.
#[derive(Debug, PartialEq, Eq)]
struct Listening {
    port: u16,
    uid: u32,
    inode: u64,
}

/// "  0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000
/// 00000000  1000        0 123456 1 ..." (st 0A is LISTEN).
fn listening(table: &str) -> Vec<Listening> {
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let cols: Vec<&str> = row.split_whitespace().take(10).collect();
            if cols.len() < 10 || cols[3] != "0A" {
                return None;
            }
            let (_, port) = cols[1].rsplit_once(':')?;
            Some(Listening {
                port: u16::from_str_radix(port, 16).ok()?,
                uid: cols[7].parse().ok()?,
                inode: cols[9].parse().ok()?,
            })
        })
        .collect()
}

/// "socket:[123]" → 123, from a /proc link (read, never followed).
fn link_inode(path: &str, prefix: &str) -> Option<u64> {
    let target = std::fs::read_link(path).ok()?;
    target
        .to_str()?
        .strip_prefix(prefix)?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn owner(pid: u32, uid: u32, cgroup_root: &Path) -> Owner {
    let mut comm = [0u8; 16];
    if let Some((name, _)) = procinfo::read_capped(&format!("/proc/{pid}/comm"), 16) {
        let name = name.strip_suffix(b"\n").unwrap_or(&name);
        let n = name.len().min(15);
        comm[..n].copy_from_slice(&name[..n]);
    }
    Owner {
        tgid: pid,
        pid,
        uid,
        listeners: 1,
        cgroup: cgroup_id(pid, cgroup_root).unwrap_or(0),
        comm,
        peer: 0,
    }
}

/// The cgroup v2 id of a process: the inode of its cgroup's directory
/// under the v2 root `--cgroup` uses too.
fn cgroup_id(pid: u32, root: &Path) -> Option<u64> {
    let (raw, _) = procinfo::read_capped(&format!("/proc/{pid}/cgroup"), 4096)?;
    let text = String::from_utf8_lossy(&raw);
    let path = procinfo::unified_cgroup_path(&text)?;
    if path.split('/').any(|part| part == "..") {
        return None;
    }
    scope::cgroup_id(&root.join(path.trim_start_matches('/'))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listen_rows_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 654321 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(
            listening(table),
            [Listening {
                port: 8080,
                uid: 1000,
                inode: 123456
            }]
        );
    }

    #[test]
    fn ipv6_rows_and_garbage() {
        let table = "header\n\
   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 42 1\n\
   1: short row\n\
   2: 0000:ZZZZ 0000:0000 0A 0:0 0:0 0 0 0 7\n";
        assert_eq!(
            listening(table),
            [Listening {
                port: 443,
                uid: 33,
                inode: 42
            }]
        );
    }

    #[test]
    fn processes_sharing_a_port_are_a_group() {
        let key = |port| ListenerKey {
            netns: 1,
            port,
            _pad: 0,
        };
        let of = |tgid| Owner {
            tgid,
            ..owner(std::process::id(), 0, Path::new("/nonexistent"))
        };
        let mut owners = vec![
            (key(80), of(10)),
            (key(80), of(11)),
            (key(80), of(11)),
            (key(81), of(10)),
        ];
        count_groups(&mut owners);
        let counts: Vec<u32> = owners.iter().map(|(_, o)| o.listeners).collect();
        assert_eq!(counts, [2, 2, 2, 1]);
    }

    #[test]
    fn this_process_listening_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let found = scan();
        let me = std::process::id();
        assert!(
            found
                .owners
                .iter()
                .any(|(k, o)| k.port == port && o.tgid == me && o.cgroup != 0),
            "port {port} not found among {} listeners",
            found.owners.len()
        );
    }
}
