//! Userspace facts about an owner process: command line, container (from
//! its cgroup path) and network namespace, read from /proc.
//!
//! The reads are small /proc files, done on the event path but cached by pid
//! in a bounded map; a process that already exited is simply missed.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use serde::Serialize;

/// What the cgroup path says about where the process runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Container {
    /// `docker`, `containerd`, `cri-o`, `podman`, `kubernetes` (pod known,
    /// runtime not), or `systemd` (a service unit, not a container).
    pub runtime: &'static str,
    /// Container id (64 hex digits) when the path carries one.
    pub id: Option<String>,
    /// Kubernetes pod uid (with dashes), when the path carries one.
    pub pod_uid: Option<String>,
    /// systemd unit (`nginx.service`, `docker-<id>.scope`...).
    pub unit: Option<String>,
    /// Pod, namespace, container name and image from the runtime's own
    /// state (`containers::RuntimeState`); None until looked up, or unknown.
    #[serde(skip)]
    pub names: Option<Arc<crate::containers::ContainerNames>>,
}

/// Resolves a cgroup v2 path (the `0::` line of /proc/PID/cgroup) to a
/// container. Pure. None for paths that say nothing (e.g. `/`, user sessions).
pub fn container_from_cgroup(path: &str) -> Option<Container> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let pod_uid = parts.iter().find_map(|p| pod_uid(p));
    let unit = parts
        .iter()
        .rev()
        .find(|p| p.ends_with(".service") || p.ends_with(".scope"))
        // Delegated users name their own cgroups: keep only printable names.
        .filter(|p| p.bytes().all(|b| b.is_ascii_graphic()))
        .map(|p| p.to_string());
    // The innermost component with a 64-hex id names the container.
    let (runtime, id) = parts
        .iter()
        .rev()
        .find_map(|p| container_id(p))
        .map_or((None, None), |(rt, id)| (Some(rt), Some(id)));
    let runtime = match (runtime, &pod_uid, &unit) {
        (Some(rt), _, _) => rt,
        (None, Some(_), _) => "kubernetes",
        (None, None, Some(u)) if u.ends_with(".service") => "systemd",
        _ => return None,
    };
    Some(Container {
        runtime,
        id,
        pod_uid,
        unit,
        names: None,
    })
}

/// `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `libpod-<id>.scope`, or a bare `<id>` (cgroupfs driver: `/docker/<id>`,
/// `/kubepods/burstable/pod<uid>/<id>`).
fn container_id(part: &str) -> Option<(&'static str, String)> {
    let stem = part.strip_suffix(".scope").unwrap_or(part);
    for (prefix, runtime) in [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ] {
        if let Some(id) = stem.strip_prefix(prefix)
            && is_container_id(id)
        {
            return Some((runtime, id.to_string()));
        }
    }
    is_container_id(stem).then(|| ("containerd", stem.to_string()))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `pod<uid>` (cgroupfs) or `kubepods-besteffort-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(part: &str) -> Option<String> {
    let stem = part.strip_suffix(".slice").unwrap_or(part);
    let at = stem.rfind("pod")?;
    let uid = stem[at + 3..].replace('_', "-");
    let ok = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then_some(uid)
}

/// The cgroup v2 path from the contents of /proc/PID/cgroup (`0::/path`).
pub fn unified_cgroup_path(contents: &str) -> Option<&str> {
    contents.lines().find_map(|l| l.strip_prefix("0::"))
}

/// `/proc/PID/cmdline`: NUL-separated arguments, joined with spaces.
pub fn cmdline_from_raw(raw: &[u8]) -> String {
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Facts about one process, as far as /proc still had them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub cmdline: Option<String>,
    pub cgroup: Option<String>,
    pub container: Option<Container>,
    /// Inode of /proc/PID/ns/net.
    pub netns: Option<u64>,
}

/// Bounded cache by pid. When full it is emptied: a simple bound, and pids
/// are recycled anyway, so stale entries must not live forever.
pub struct ProcCache {
    entries: HashMap<u32, Arc<ProcInfo>>,
    capacity: usize,
    /// Lookups of processes /proc no longer had.
    pub misses: u64,
}

impl ProcCache {
    pub fn new(capacity: usize) -> ProcCache {
        ProcCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            misses: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Cached facts for `pid`, read with `read` on a miss.
    pub fn get_with(&mut self, pid: u32, read: impl FnOnce(u32) -> ProcInfo) -> &Arc<ProcInfo> {
        if !self.entries.contains_key(&pid) && self.entries.len() >= self.capacity {
            self.entries.clear();
        }
        let misses = &mut self.misses;
        self.entries.entry(pid).or_insert_with(|| {
            let info = read(pid);
            if info == ProcInfo::default() {
                *misses += 1;
            }
            Arc::new(info)
        })
    }

    /// Forgets `pid` (its owner changed or it exited).
    pub fn forget(&mut self, pid: u32) {
        self.entries.remove(&pid);
    }
}

/// Reads /proc/PID/{cmdline,cgroup,ns/net}; missing files leave fields None.
pub fn read_proc(pid: u32) -> ProcInfo {
    let base = format!("/proc/{pid}");
    let cmdline = fs::read(format!("{base}/cmdline"))
        .ok()
        .map(|raw| cmdline_from_raw(&raw))
        .filter(|c| !c.is_empty());
    let cgroup = fs::read_to_string(format!("{base}/cgroup"))
        .ok()
        .and_then(|c| unified_cgroup_path(&c).map(str::to_string));
    let container = cgroup.as_deref().and_then(container_from_cgroup);
    let netns = fs::metadata(format!("{base}/ns/net")).ok().map(|m| m.ino());
    ProcInfo {
        cmdline,
        cgroup,
        container,
        netns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4b1c3e0c9a1f6e2d8b7a5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";

    #[test]
    fn docker_with_the_systemd_driver() {
        let c = container_from_cgroup(&format!("/system.slice/docker-{ID}.scope")).unwrap();
        assert_eq!(c.runtime, "docker");
        assert_eq!(c.id.as_deref(), Some(ID));
        assert_eq!(c.pod_uid, None);
        assert_eq!(c.unit, Some(format!("docker-{ID}.scope")));
    }

    #[test]
    fn docker_with_the_cgroupfs_driver() {
        let c = container_from_cgroup(&format!("/docker/{ID}")).unwrap();
        assert_eq!(c.id.as_deref(), Some(ID));
    }

    #[test]
    fn kubernetes_containerd_systemd_driver() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod0f4a2b6c_1d2e_4f3a_9b8c_7d6e5f4a3b2c.slice/\
             cri-containerd-{ID}.scope"
        );
        let c = container_from_cgroup(&path).unwrap();
        assert_eq!(c.runtime, "containerd");
        assert_eq!(c.id.as_deref(), Some(ID));
        assert_eq!(
            c.pod_uid.as_deref(),
            Some("0f4a2b6c-1d2e-4f3a-9b8c-7d6e5f4a3b2c")
        );
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        let path = format!("/kubepods/besteffort/pod0f4a2b6c-1d2e-4f3a-9b8c-7d6e5f4a3b2c/{ID}");
        let c = container_from_cgroup(&path).unwrap();
        assert_eq!(c.id.as_deref(), Some(ID));
        assert_eq!(
            c.pod_uid.as_deref(),
            Some("0f4a2b6c-1d2e-4f3a-9b8c-7d6e5f4a3b2c")
        );
    }

    #[test]
    fn crio_and_podman() {
        let c = container_from_cgroup(&format!("/kubepods.slice/crio-{ID}.scope")).unwrap();
        assert_eq!(c.runtime, "cri-o");
        let c = container_from_cgroup(&format!("/user.slice/libpod-{ID}.scope")).unwrap();
        assert_eq!(c.runtime, "podman");
    }

    #[test]
    fn systemd_service() {
        let c = container_from_cgroup("/system.slice/nginx.service").unwrap();
        assert_eq!(c.runtime, "systemd");
        assert_eq!(c.id, None);
        assert_eq!(c.unit.as_deref(), Some("nginx.service"));
    }

    #[test]
    fn paths_that_say_nothing() {
        assert_eq!(container_from_cgroup("/"), None);
        assert_eq!(container_from_cgroup(""), None);
        assert_eq!(
            container_from_cgroup("/user.slice/user-0.slice/session-3.scope"),
            None
        );
        // Not 64 hex digits: not a container id.
        assert_eq!(container_from_cgroup("/docker/abc"), None);
    }

    #[test]
    fn unified_line_and_cmdline() {
        let c = "12:cpu:/x\n0::/system.slice/sshd.service\n";
        assert_eq!(unified_cgroup_path(c), Some("/system.slice/sshd.service"));
        assert_eq!(unified_cgroup_path("1:name=systemd:/\n"), None);
        assert_eq!(
            cmdline_from_raw(b"nginx\0-g\0daemon off;\0"),
            "nginx -g daemon off;"
        );
        assert_eq!(cmdline_from_raw(b""), "");
    }

    #[test]
    fn cache_is_bounded_and_reads_once() {
        let mut cache = ProcCache::new(2);
        let mut reads = 0;
        let mut read = |pid: u32| {
            reads += 1;
            ProcInfo {
                netns: Some(pid as u64),
                ..ProcInfo::default()
            }
        };
        assert_eq!(cache.get_with(1, &mut read).netns, Some(1));
        assert_eq!(cache.get_with(1, &mut read).netns, Some(1));
        cache.get_with(2, &mut read);
        assert_eq!(cache.len(), 2);
        cache.get_with(3, &mut read); // full: emptied, then 3 added
        assert_eq!(cache.len(), 1);
        cache.forget(3);
        assert!(cache.is_empty());
        assert_eq!(reads, 3);
    }

    #[test]
    fn cache_counts_processes_that_were_gone() {
        let mut cache = ProcCache::new(4);
        cache.get_with(9, |_| ProcInfo::default());
        assert_eq!(cache.misses, 1);
    }

    #[test]
    fn reads_this_process() {
        let info = read_proc(std::process::id());
        assert!(info.cmdline.is_some() && info.netns.is_some(), "{info:?}");
    }
}
