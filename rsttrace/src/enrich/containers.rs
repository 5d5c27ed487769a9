//! Kubernetes and container names for an owner's container: pod name,
//! namespace, container name and image, read from the container runtime's
//! own state on the host, so users see `shop/checkout-7d9f/api` rather
//! than a cgroup id.
//!
//! Each runtime keeps a per-container file with these facts:
//! - containerd (CRI): the OCI bundle's `config.json`, annotations
//!   `io.kubernetes.cri.{sandbox-name,sandbox-namespace,container-name,image-name}`;
//! - CRI-O: `userdata/config.json`, annotations
//!   `io.kubernetes.{pod.name,pod.namespace,container.name}`, `io.kubernetes.cri-o.ImageName`;
//! - Docker (and cri-dockerd): `config.v2.json`, `Name`, `Config.Image` and
//!   the `io.kubernetes.*` labels;
//! - podman: containers/storage's `containers.json`, whose per-container
//!   `metadata` names the container and its image.
//!
//! The host has hostile users: every file is opened with O_NOFOLLOW and
//! O_NONBLOCK, must be a regular file owned by root (the runtimes' state
//! is), and is read only up to a cap; ids are 64 hex digits before they
//! become part of a path. Results (found or not) are cached per container
//! id in a bounded map: one read per container, not per event.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

/// What the runtime's state says about one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerNames {
    /// The container's own name (`api`; docker's without the leading `/`).
    pub name: Option<String>,
    /// Image reference, e.g. `docker.io/library/nginx:1.27`.
    pub image: Option<String>,
    /// Kubernetes pod name.
    pub pod: Option<String>,
    /// Kubernetes namespace.
    pub namespace: Option<String>,
}

impl ContainerNames {
    fn is_empty(&self) -> bool {
        *self == ContainerNames::default()
    }
}

/// A per-container state file (OCI spec, docker config) is a few KiB to a
/// few hundred; this leaves room and bounds a hostile or corrupt file.
const FILE_CAP: u64 = 1 << 20;
/// containers/storage lists every container of the host in one file.
const LIST_CAP: u64 = 16 << 20;
/// Names longer than this are cut: they end up in every record.
const NAME_CAP: usize = 256;

/// Where each runtime keeps its state, relative to the host root.
const CONTAINERD_TASKS: &str = "run/containerd/io.containerd.runtime.v2.task";
const CRIO_CONTAINERS: &[&str] = &[
    "run/containers/storage/overlay-containers",
    "var/lib/containers/storage/overlay-containers",
];
const DOCKER_CONTAINERS: &str = "var/lib/docker/containers";
const PODMAN_LIST: &str = "var/lib/containers/storage/overlay-containers/containers.json";

/// The host directories the readers look in (the DaemonSet mounts them
/// read-only; its test checks this list against the manifest). For
/// containerd only the task bundles: the rest of /run/containerd holds its
/// API socket, which a read-only mount would not keep rsttrace from using.
pub const STATE_DIRS: &[&str] = &[
    "/run/containerd/io.containerd.runtime.v2.task",
    "/run/containers/storage",
    "/var/lib/containers/storage",
    "/var/lib/docker/containers",
];

/// Runtime state readers with a bounded cache by container id.
pub struct RuntimeState {
    root: PathBuf,
    /// Files must belong to this user (root on a real host).
    owner_uid: u32,
    cache: HashMap<String, Option<(&'static str, Arc<ContainerNames>)>>,
    capacity: usize,
    /// podman's one list of every container, parsed, with the (inode,
    /// size, mtime) it was read at: re-read only when it changed, so ids
    /// that are in no runtime's state (a delegated user can name cgroups
    /// like containers) cost a stat, not a parse of megabytes.
    podman: Option<(FileStamp, Arc<HashMap<String, ContainerNames>>)>,
}

type FileStamp = (u64, u64, Option<std::time::SystemTime>);

impl RuntimeState {
    /// The host's runtimes (their directories under `root`, `/` unless the
    /// host's are mounted elsewhere), files owned by root.
    pub fn host(root: &Path) -> RuntimeState {
        RuntimeState::new(root, 0, 1024)
    }

    pub fn new(root: &Path, owner_uid: u32, capacity: usize) -> RuntimeState {
        RuntimeState {
            root: root.to_path_buf(),
            owner_uid,
            cache: HashMap::new(),
            capacity: capacity.max(1),
            podman: None,
        }
    }

    /// The runtime that has the container `id` (trying `hint`, the one the
    /// cgroup path suggests, first) and what it says; None when no runtime
    /// knows it or `id` is not a container id.
    pub fn lookup(&mut self, hint: &str, id: &str) -> Option<(&'static str, Arc<ContainerNames>)> {
        if let Some(hit) = self.cache.get(id) {
            return hit.clone();
        }
        if self.cache.len() >= self.capacity {
            // Containers come and go; a full map is simply started afresh.
            self.cache.clear();
        }
        let found = self.read(hint, id).map(|(rt, n)| (rt, Arc::new(n)));
        self.cache.insert(id.to_owned(), found.clone());
        found
    }

    fn read(&mut self, hint: &str, id: &str) -> Option<(&'static str, ContainerNames)> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut order: Vec<&'static str> = vec!["containerd", "cri-o", "docker", "podman"];
        if let Some(i) = order.iter().position(|r| *r == hint) {
            let first = order.remove(i);
            order.insert(0, first);
        }
        order.into_iter().find_map(|runtime| {
            let names = match runtime {
                "containerd" => self.containerd(id),
                "cri-o" => self.crio(id),
                "docker" => self.docker(id),
                _ => self.podman(id),
            }?;
            (!names.is_empty()).then_some((runtime, names))
        })
    }

    fn containerd(&self, id: &str) -> Option<ContainerNames> {
        // Kubernetes' containers live in the `k8s.io` namespace, docker's in `moby`.
        ["k8s.io", "moby", "default"].iter().find_map(|ns| {
            let spec = self.json(
                &self
                    .root
                    .join(CONTAINERD_TASKS)
                    .join(ns)
                    .join(id)
                    .join("config.json"),
                FILE_CAP,
            )?;
            let a = &spec["annotations"];
            Some(ContainerNames {
                name: text(&a["io.kubernetes.cri.container-name"]),
                image: text(&a["io.kubernetes.cri.image-name"]),
                pod: text(&a["io.kubernetes.cri.sandbox-name"]),
                namespace: text(&a["io.kubernetes.cri.sandbox-namespace"]),
            })
        })
    }

    fn crio(&self, id: &str) -> Option<ContainerNames> {
        CRIO_CONTAINERS.iter().find_map(|dir| {
            let spec = self.json(
                &self.root.join(dir).join(id).join("userdata/config.json"),
                FILE_CAP,
            )?;
            let a = &spec["annotations"];
            // podman's containers share this layout without these annotations.
            let names = ContainerNames {
                name: text(&a["io.kubernetes.container.name"]),
                image: text(&a["io.kubernetes.cri-o.ImageName"]),
                pod: text(&a["io.kubernetes.pod.name"]),
                namespace: text(&a["io.kubernetes.pod.namespace"]),
            };
            (!names.is_empty()).then_some(names)
        })
    }

    fn docker(&self, id: &str) -> Option<ContainerNames> {
        let config = self.json(
            &self
                .root
                .join(DOCKER_CONTAINERS)
                .join(id)
                .join("config.v2.json"),
            FILE_CAP,
        )?;
        let labels = &config["Config"]["Labels"];
        Some(ContainerNames {
            // cri-dockerd names containers k8s_<container>_<pod>_...: the label is clearer.
            name: text(&labels["io.kubernetes.container.name"])
                .or_else(|| text(&config["Name"]).map(|n| n.trim_start_matches('/').to_owned())),
            image: text(&config["Config"]["Image"]),
            pod: text(&labels["io.kubernetes.pod.name"]),
            namespace: text(&labels["io.kubernetes.pod.namespace"]),
        })
    }

    fn podman(&mut self, id: &str) -> Option<ContainerNames> {
        let path = self.root.join(PODMAN_LIST);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        let stamp = (meta.ino(), meta.len(), meta.modified().ok());
        let list = match &self.podman {
            Some((seen, list)) if *seen == stamp => list.clone(),
            _ => {
                let list = Arc::new(self.podman_list(&path).unwrap_or_default());
                self.podman = Some((stamp, list.clone()));
                list
            }
        };
        list.get(id).cloned()
    }

    /// Every container in containers/storage's list, by id.
    fn podman_list(&self, path: &Path) -> Option<HashMap<String, ContainerNames>> {
        let list = self.json(path, LIST_CAP)?;
        let names = list
            .as_array()?
            .iter()
            .filter_map(|entry| {
                let id = entry["id"].as_str()?.to_owned();
                // `metadata` is JSON inside a string: libpod's name and image.
                let meta: Value = serde_json::from_str(entry["metadata"].as_str()?).ok()?;
                let names = ContainerNames {
                    name: text(&meta["name"]).or_else(|| text(&entry["names"][0])),
                    image: text(&meta["image-name"]),
                    pod: text(&meta["pod-name"]),
                    namespace: None,
                };
                Some((id, names))
            })
            .collect();
        Some(names)
    }

    fn json(&self, path: &Path, cap: u64) -> Option<Value> {
        let bytes = read_capped(path, cap, self.owner_uid)?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// A runtime's file, only if it is a regular file owned by `owner_uid`, not
/// a symlink, and at most `cap` bytes; never blocks on a FIFO.
fn read_capped(path: &Path, cap: u64, owner_uid: u32) -> Option<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.file_type().is_file() || meta.uid() != owner_uid || meta.len() > cap {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow between fstat and read: the cap still holds.
    file.take(cap + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= cap).then_some(bytes)
}

/// A non-empty string value, cut to NAME_CAP bytes (on a char boundary).
fn text(v: &Value) -> Option<String> {
    let s = v.as_str().filter(|s| !s.is_empty())?;
    let mut end = s.len().min(NAME_CAP);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(s[..end].to_owned())
}

/// `--pod` / `--namespace`: whether a container's names match the filters
/// (each list empty = any; both given = both must match).
pub fn names_match(names: &ContainerNames, pods: &[String], namespaces: &[String]) -> bool {
    let hit = |want: &[String], have: &Option<String>| {
        want.is_empty() || have.as_ref().is_some_and(|h| want.contains(h))
    };
    (!pods.is_empty() || !namespaces.is_empty())
        && hit(pods, &names.pod)
        && hit(namespaces, &names.namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4b1c3e0c9a1f6e2d8b7a5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/runtimes/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// A host root with `file` at `rel`, owned by this test's user.
    fn host_with(rel: &str, contents: &str) -> (tempfile::TempDir, RuntimeState) {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let state = RuntimeState::new(root.path(), uid, 16);
        (root, state)
    }

    fn names(pod: &str, ns: &str, name: &str, image: &str) -> ContainerNames {
        ContainerNames {
            name: Some(name.into()),
            image: Some(image.into()),
            pod: (!pod.is_empty()).then(|| pod.into()),
            namespace: (!ns.is_empty()).then(|| ns.into()),
        }
    }

    #[test]
    fn containerd_cri_annotations() {
        let rel = format!("{CONTAINERD_TASKS}/k8s.io/{ID}/config.json");
        let (_root, mut state) = host_with(&rel, &fixture("containerd-config.json"));
        let (runtime, got) = state.lookup("containerd", ID).unwrap();
        assert_eq!(runtime, "containerd");
        assert_eq!(
            *got,
            names(
                "checkout-7d9f5c-x2k4p",
                "shop",
                "api",
                "registry.example.com/shop/api:2.4.1"
            )
        );
    }

    #[test]
    fn crio_annotations() {
        let rel = format!("{}/{ID}/userdata/config.json", CRIO_CONTAINERS[0]);
        let (_root, mut state) = host_with(&rel, &fixture("crio-config.json"));
        // A cgroupfs path names no runtime: the hint is wrong, the state decides.
        let (runtime, got) = state.lookup("containerd", ID).unwrap();
        assert_eq!(runtime, "cri-o");
        assert_eq!(
            *got,
            names(
                "coredns-5d78c9869d-8xk2q",
                "kube-system",
                "coredns",
                "registry.k8s.io/coredns/coredns:v1.11.1"
            )
        );
    }

    #[test]
    fn docker_config_and_kubernetes_labels() {
        let rel = format!("{DOCKER_CONTAINERS}/{ID}/config.v2.json");
        let (_root, mut state) = host_with(&rel, &fixture("docker-config.v2.json"));
        let (runtime, got) = state.lookup("docker", ID).unwrap();
        assert_eq!(runtime, "docker");
        assert_eq!(*got, names("", "", "web", "nginx:1.27"));

        let labelled = fixture("docker-config.v2.json").replace(
            "\"Labels\": {}",
            "\"Labels\": {\"io.kubernetes.pod.name\": \"web-0\", \
             \"io.kubernetes.pod.namespace\": \"default\", \
             \"io.kubernetes.container.name\": \"nginx\"}",
        );
        let (_root, mut state) = host_with(&rel, &labelled);
        let (_, got) = state.lookup("docker", ID).unwrap();
        assert_eq!(*got, names("web-0", "default", "nginx", "nginx:1.27"));
    }

    #[test]
    fn podman_storage_metadata() {
        let (_root, mut state) = host_with(PODMAN_LIST, &fixture("podman-containers.json"));
        let (runtime, got) = state.lookup("podman", ID).unwrap();
        assert_eq!(runtime, "podman");
        assert_eq!(
            *got,
            names("", "", "redis-cache", "docker.io/library/redis:7")
        );
        // Another id in the same list is not this container.
        assert!(state.lookup("podman", &"0".repeat(64)).is_none());
        // The list is parsed once while it stays the same, again when it changes.
        let other = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
        let first = state.podman.as_ref().map(|(_, list)| Arc::as_ptr(list));
        assert!(state.lookup("podman", other).is_some());
        assert_eq!(state.podman.as_ref().map(|(_, l)| Arc::as_ptr(l)), first);
        let path = _root.path().join(PODMAN_LIST);
        std::fs::write(&path, "[]").unwrap();
        assert!(state.lookup("podman", &"1".repeat(64)).is_none());
        assert_ne!(state.podman.as_ref().map(|(_, l)| Arc::as_ptr(l)), first);
    }

    #[test]
    fn unsafe_files_are_not_read() {
        let rel = format!("{DOCKER_CONTAINERS}/{ID}/config.v2.json");
        let (root, _) = host_with("decoy.json", &fixture("docker-config.v2.json"));
        let path = root.path().join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        // A symlink to a file the attacker controls.
        std::os::unix::fs::symlink(root.path().join("decoy.json"), &path).unwrap();
        assert!(
            RuntimeState::new(root.path(), uid, 4)
                .lookup("docker", ID)
                .is_none()
        );
        // A FIFO: opening must not block, and it is not a regular file.
        std::fs::remove_file(&path).unwrap();
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(
            RuntimeState::new(root.path(), uid, 4)
                .lookup("docker", ID)
                .is_none()
        );
        // Owned by someone else than the runtime's user.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, fixture("docker-config.v2.json")).unwrap();
        assert!(
            RuntimeState::new(root.path(), uid + 1, 4)
                .lookup("docker", ID)
                .is_none()
        );
        // Too big.
        std::fs::write(&path, " ".repeat(FILE_CAP as usize + 1)).unwrap();
        assert!(read_capped(&path, FILE_CAP, uid).is_none());
        // Not a container id: never becomes a path.
        assert!(
            RuntimeState::new(root.path(), uid, 4)
                .lookup("docker", "../../x")
                .is_none()
        );
    }

    #[test]
    fn results_are_cached_and_the_cache_is_bounded() {
        let rel = format!("{DOCKER_CONTAINERS}/{ID}/config.v2.json");
        let (root, mut state) = host_with(&rel, &fixture("docker-config.v2.json"));
        assert!(state.lookup("docker", ID).is_some());
        // Served from the cache once the file is gone.
        std::fs::remove_dir_all(root.path().join(DOCKER_CONTAINERS)).unwrap();
        assert!(state.lookup("docker", ID).is_some());
        for i in 0..20 {
            state.lookup("docker", &format!("{i:064x}"));
        }
        assert!(state.cache.len() <= 16);
    }

    #[test]
    fn long_names_are_cut_on_a_char_boundary() {
        let long = "é".repeat(300);
        let cut = text(&Value::String(long)).unwrap();
        assert!(cut.len() <= NAME_CAP && cut.chars().all(|c| c == 'é'));
        assert_eq!(text(&Value::String(String::new())), None);
    }

    #[test]
    fn pod_and_namespace_filters() {
        let n = names("web-0", "shop", "api", "x");
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(names_match(&n, &s(&["web-0"]), &[]));
        assert!(names_match(&n, &[], &s(&["shop"])));
        assert!(names_match(&n, &s(&["web-0"]), &s(&["shop"])));
        assert!(!names_match(&n, &s(&["web-0"]), &s(&["default"])));
        assert!(!names_match(&n, &[], &[]));
    }
}
