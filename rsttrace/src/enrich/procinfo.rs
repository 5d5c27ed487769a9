//! Userspace facts about an owner process: command line, container (from
//! its cgroup path) and network namespace, read from /proc.
//!
//! The reads are small /proc files, done on the event path but cached by pid
//! in a bounded map; a process that already exited is simply missed.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    pub names: Option<Arc<crate::enrich::containers::ContainerNames>>,
}

impl Container {
    /// Fills `names` from the runtimes' state (and corrects `runtime`: a
    /// bare id in a cgroupfs path does not say which runtime made it).
    pub fn look_up_names(&mut self, runtimes: &mut crate::enrich::containers::RuntimeState) {
        let Some(id) = self.id.clone() else {
            return;
        };
        if let Some((runtime, names)) = runtimes.lookup(self.runtime, &id) {
            self.runtime = runtime;
            self.names = Some(names);
        }
    }
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

/// Most bytes read from /proc/PID/cmdline and kept per process (an
/// argument list can be megabytes); longer ones end in `TRUNCATED`.
pub const CMDLINE_MAX: usize = 4096;
/// Most bytes read from /proc/PID/cgroup; a longer file says nothing.
const CGROUP_FILE_MAX: usize = 8192;
/// Appended to a command line cut at `CMDLINE_MAX`.
pub const TRUNCATED: &str = "…[truncated]";
/// Bytes of process facts the cache holds before it starts over.
const CACHE_BYTES: usize = 2 << 20;
/// A cached entry older than this is checked against the process's start
/// time before use. Reusing a pid means cycling through the whole pid space
/// (at least 32768 forks), which takes seconds, never this long.
const REVALIDATE_AFTER: Duration = Duration::from_millis(100);

impl ProcInfo {
    /// Heap bytes held, for the cache's bound.
    fn heap_bytes(&self) -> usize {
        let len = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let c = self.container.as_ref().map_or(0, |c| {
            len(&c.id) + len(&c.pod_uid) + len(&c.unit) + size_of::<Container>()
        });
        len(&self.cmdline) + len(&self.cgroup) + c + size_of::<ProcInfo>()
    }
}

struct Entry {
    info: Arc<ProcInfo>,
    /// Start time of the process read (clock ticks after boot), None when
    /// it was already gone.
    start_time: Option<u64>,
    checked: Instant,
}

/// Bounded cache by pid. When full (in entries or bytes) it is emptied: a
/// simple bound. A pid seen again after `REVALIDATE_AFTER` is checked
/// against the start time of the process now behind it, so a recycled pid
/// never inherits a dead process's command line or container.
pub struct ProcCache {
    entries: HashMap<u32, Entry>,
    capacity: usize,
    bytes: usize,
    /// Lookups of processes /proc no longer had.
    pub misses: u64,
}

impl ProcCache {
    pub fn new(capacity: usize) -> ProcCache {
        ProcCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            bytes: 0,
            misses: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Facts about `pid` from /proc, cached.
    pub fn get(&mut self, pid: u32) -> Arc<ProcInfo> {
        self.get_with(pid, Instant::now(), start_time, read_proc)
    }

    /// Cached facts for `pid`, read with `read` on a miss or when the
    /// process behind the pid changed (`start_time`).
    pub fn get_with(
        &mut self,
        pid: u32,
        now: Instant,
        start_time: impl Fn(u32) -> Option<u64>,
        read: impl FnOnce(u32) -> ProcInfo,
    ) -> Arc<ProcInfo> {
        let mut started = None;
        if let Some(e) = self.entries.get_mut(&pid) {
            if now.saturating_duration_since(e.checked) < REVALIDATE_AFTER {
                return e.info.clone();
            }
            let now_start = start_time(pid);
            // Gone since: what we read is the last process with this pid.
            if now_start.is_none() || now_start == e.start_time {
                e.checked = now;
                return e.info.clone();
            }
            started = Some(now_start);
            self.forget(pid);
        }
        let start = started.unwrap_or_else(|| start_time(pid));
        let info = read(pid);
        if info == ProcInfo::default() {
            self.misses += 1;
        }
        let info = Arc::new(info);
        let bytes = info.heap_bytes();
        if self.entries.len() >= self.capacity || self.bytes + bytes > CACHE_BYTES {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += bytes;
        self.entries.insert(
            pid,
            Entry {
                info: info.clone(),
                start_time: start,
                checked: now,
            },
        );
        info
    }

    /// Forgets `pid` (its owner changed or it exited).
    pub fn forget(&mut self, pid: u32) {
        if let Some(e) = self.entries.remove(&pid) {
            self.bytes = self.bytes.saturating_sub(e.info.heap_bytes());
        }
    }
}

/// At most `max` bytes of a /proc file, and whether there was more.
pub(crate) fn read_capped(path: &str, max: usize) -> Option<(Vec<u8>, bool)> {
    let file = fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(max.min(4096) + 1);
    file.take(max as u64 + 1).read_to_end(&mut buf).ok()?;
    let more = buf.len() > max;
    buf.truncate(max);
    Some((buf, more))
}

/// Longest the event path waits for a command line.
const CMDLINE_WAIT: Duration = Duration::from_millis(50);
/// Helper threads that may be stuck for good before command lines are no
/// longer read at all.
const MAX_STUCK_READERS: usize = 4;

/// Reads /proc/PID/cmdline on a helper thread. Unlike the other /proc
/// files it reads the process's own memory, which its owner can make block
/// indefinitely (argument pages remapped onto a file of a stalled FUSE
/// server): the event path waits `CMDLINE_WAIT`, then goes on without it.
/// A helper that did not answer in time is replaced; it ends once its read
/// returns. While `MAX_STUCK_READERS` are still blocked, no command line is read.
pub struct CmdlineReader<F: Fn(u32) -> Option<(Vec<u8>, bool)> + Send + Sync + 'static> {
    read: Arc<F>,
    state: std::sync::Mutex<ReaderState>,
}

/// Bytes of a /proc file, and whether there was more.
type Capped = Option<(Vec<u8>, bool)>;
type Reply = std::sync::mpsc::SyncSender<Capped>;

#[derive(Default)]
struct ReaderState {
    helper: Option<std::sync::mpsc::SyncSender<(u32, Reply)>>,
    /// Helpers given up on whose read has not returned yet.
    stuck: Arc<std::sync::atomic::AtomicUsize>,
}

fn read_cmdline_file(pid: u32) -> Option<(Vec<u8>, bool)> {
    read_capped(&format!("/proc/{pid}/cmdline"), CMDLINE_MAX)
}

type ReadCmdline = fn(u32) -> Capped;

static CMDLINE_READER: std::sync::LazyLock<CmdlineReader<ReadCmdline>> =
    std::sync::LazyLock::new(|| CmdlineReader::new(read_cmdline_file));

impl<F: Fn(u32) -> Option<(Vec<u8>, bool)> + Send + Sync + 'static> CmdlineReader<F> {
    pub fn new(read: F) -> Self {
        CmdlineReader {
            read: Arc::new(read),
            state: std::sync::Mutex::new(ReaderState::default()),
        }
    }

    pub fn read(&self, pid: u32) -> Option<(Vec<u8>, bool)> {
        let Ok(mut state) = self.state.lock() else {
            return None;
        };
        if state.stuck.load(std::sync::atomic::Ordering::Relaxed) >= MAX_STUCK_READERS {
            return None;
        }
        let helper = match &state.helper {
            Some(h) => h.clone(),
            None => {
                let (tx, rx) = std::sync::mpsc::sync_channel::<(u32, Reply)>(1);
                let read = self.read.clone();
                let stuck = state.stuck.clone();
                std::thread::Builder::new()
                    .name("rsttrace-cmdline".into())
                    .spawn(move || {
                        for (pid, reply) in rx {
                            let _ = reply.send(read(pid));
                        }
                        // Only a helper given up on sees its channel close.
                        stuck.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    })
                    .ok()?;
                state.helper = Some(tx.clone());
                tx
            }
        };
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        if helper.try_send((pid, reply)).is_err() {
            return None;
        }
        match answer.recv_timeout(CMDLINE_WAIT) {
            Ok(result) => result,
            Err(_) => {
                // Blocked in the kernel: leave it, start afresh next time.
                state.helper = None;
                state
                    .stuck
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                None
            }
        }
    }
}

/// The start time of `pid` (field 22 of /proc/PID/stat), None once it exited.
pub fn start_time(pid: u32) -> Option<u64> {
    let (stat, _) = read_capped(&format!("/proc/{pid}/stat"), 1024)?;
    let stat = std::str::from_utf8(&stat).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // from the last `)`. Field 3 is the first after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// A command line read up to `CMDLINE_MAX` bytes.
pub fn cmdline_capped(raw: &[u8], more: bool) -> String {
    let mut c = cmdline_from_raw(raw);
    if more {
        // A cut inside a multi-byte character became U+FFFD; drop it.
        while c.ends_with('\u{fffd}') {
            c.pop();
        }
        c.push_str(TRUNCATED);
    }
    c
}

/// Reads /proc/PID/{cmdline,cgroup,ns/net}; missing files leave fields None.
pub fn read_proc(pid: u32) -> ProcInfo {
    let base = format!("/proc/{pid}");
    let cmdline = CMDLINE_READER
        .read(pid)
        .map(|(raw, more)| cmdline_capped(&raw, more))
        .filter(|c| !c.is_empty());
    let cgroup = read_capped(&format!("{base}/cgroup"), CGROUP_FILE_MAX)
        .filter(|(_, more)| !more)
        .and_then(|(raw, _)| {
            let text = String::from_utf8_lossy(&raw);
            unified_cgroup_path(&text).map(str::to_string)
        });
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
        let t = Instant::now();
        let st = |_| Some(1);
        assert_eq!(cache.get_with(1, t, st, &mut read).netns, Some(1));
        assert_eq!(cache.get_with(1, t, st, &mut read).netns, Some(1));
        cache.get_with(2, t, st, &mut read);
        assert_eq!(cache.len(), 2);
        cache.get_with(3, t, st, &mut read); // full: emptied, then 3 added
        assert_eq!(cache.len(), 1);
        cache.forget(3);
        assert!(cache.is_empty());
        assert_eq!(reads, 3);
    }

    #[test]
    fn cache_is_bounded_in_bytes() {
        let mut cache = ProcCache::new(1 << 20);
        let t = Instant::now();
        for pid in 0..10_000 {
            cache.get_with(
                pid,
                t,
                |_| Some(1),
                |_| ProcInfo {
                    cmdline: Some("x".repeat(CMDLINE_MAX)),
                    ..ProcInfo::default()
                },
            );
            assert!(cache.bytes <= CACHE_BYTES);
        }
        assert!(cache.len() < 1000, "{}", cache.len());
    }

    #[test]
    fn a_recycled_pid_does_not_inherit_the_dead_process() {
        let mut cache = ProcCache::new(16);
        let t = Instant::now();
        let info = |cmd: &str| ProcInfo {
            cmdline: Some(cmd.into()),
            ..ProcInfo::default()
        };
        cache.get_with(7, t, |_| Some(100), |_| info("victim --secret"));
        let later = t + REVALIDATE_AFTER;
        // Same process, still there: no new read.
        let same = cache.get_with(7, later, |_| Some(100), |_| info("wrong"));
        assert_eq!(same.cmdline.as_deref(), Some("victim --secret"));
        // It exited: events about it still get what we read.
        let gone = cache.get_with(7, later, |_| None, |_| info("wrong"));
        assert_eq!(gone.cmdline.as_deref(), Some("victim --secret"));
        // Another process now has pid 7.
        let later = later + REVALIDATE_AFTER;
        let new = cache.get_with(7, later, |_| Some(900), |_| info("attacker"));
        assert_eq!(new.cmdline.as_deref(), Some("attacker"));
    }

    #[test]
    fn cache_counts_processes_that_were_gone() {
        let mut cache = ProcCache::new(4);
        cache.get_with(9, Instant::now(), |_| None, |_| ProcInfo::default());
        assert_eq!(cache.misses, 1);
    }

    #[test]
    fn long_command_lines_are_cut_and_marked() {
        let raw = "é".repeat(CMDLINE_MAX);
        let cut = &raw.as_bytes()[..CMDLINE_MAX - 1];
        let c = cmdline_capped(cut, true);
        assert!(c.ends_with(TRUNCATED) && !c.contains('\u{fffd}'), "{c}");
        assert!(c.len() <= CMDLINE_MAX + TRUNCATED.len());
        assert_eq!(cmdline_capped(b"a\0b\0", false), "a b");
    }

    #[test]
    fn a_megabyte_command_line_is_read_only_up_to_the_cap() {
        // 1 MiB of arguments (one may not pass 128 KiB).
        let arg = "y".repeat(100 << 10);
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; true", "sh"])
            .args(std::iter::repeat_n(&arg, 10))
            .spawn()
            .unwrap();
        let mut info = ProcInfo::default();
        for _ in 0..200 {
            info = read_proc(child.id());
            if info
                .cmdline
                .as_deref()
                .is_some_and(|c| c.contains("sleep 30"))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let c = info.cmdline.unwrap();
        assert!(c.ends_with(TRUNCATED), "{}", &c[..40]);
        assert!(c.len() <= CMDLINE_MAX + TRUNCATED.len(), "{}", c.len());
    }

    #[test]
    fn start_time_of_this_process_is_stable() {
        let a = start_time(std::process::id()).unwrap();
        assert_eq!(start_time(std::process::id()), Some(a));
        assert_eq!(start_time(u32::MAX - 1), None);
    }

    #[test]
    fn reads_this_process() {
        let info = read_proc(std::process::id());
        assert!(info.cmdline.is_some() && info.netns.is_some(), "{info:?}");
    }

    #[test]
    fn a_command_line_that_blocks_costs_a_bounded_wait() {
        let reader = CmdlineReader::new(|pid| {
            match pid {
                // A read that never returns (a stalled FUSE page).
                1 => std::thread::sleep(Duration::from_secs(3600)),
                // One that is merely slow.
                3 => std::thread::sleep(Duration::from_millis(200)),
                _ => {}
            }
            Some((b"ok".to_vec(), false))
        });
        // A slow read is given up on, and its helper ends when it returns.
        assert_eq!(reader.read(3), None);
        std::thread::sleep(Duration::from_millis(400));
        let stuck = || {
            reader
                .state
                .lock()
                .unwrap()
                .stuck
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!(stuck(), 0);
        let started = Instant::now();
        assert_eq!(reader.read(1), None);
        assert!(started.elapsed() < Duration::from_secs(1));
        // A fresh helper serves the next one.
        assert_eq!(reader.read(2), Some((b"ok".to_vec(), false)));
        // After enough stuck helpers, no more threads are spent.
        for _ in 0..MAX_STUCK_READERS {
            reader.read(1);
        }
        let started = Instant::now();
        assert_eq!(reader.read(2), None);
        assert!(started.elapsed() < Duration::from_millis(10));
    }
}
