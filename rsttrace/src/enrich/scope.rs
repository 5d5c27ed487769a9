//! `--netns`, `--cgroup` and `--container`: the names users know, turned
//! into the ids the kernel programs compare (namespace inodes, cgroup v2
//! ids). The directory walk is I/O; matching names is pure and unit-tested.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::enrich::procinfo::container_from_cgroup;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup v2 hierarchy: /sys/fs/cgroup, or on a hybrid host (v1
/// controllers beside a v2 tree) /sys/fs/cgroup/unified, where the ids the
/// kernel programs see live.
pub fn cgroup_v2_root() -> PathBuf {
    let unified = Path::new(CGROUP_ROOT).join("unified");
    if !Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
        && unified.join("cgroup.controllers").exists()
    {
        return unified;
    }
    PathBuf::from(CGROUP_ROOT)
}

/// `--netns`: an inode number, or a namespace file (`/run/netns/NAME`,
/// `/proc/PID/ns/net`) whose inode it is.
pub fn parse_netns(arg: &str) -> Result<u32, String> {
    if let Ok(inode) = arg.parse::<u32>() {
        return Ok(inode);
    }
    let path = if arg.contains('/') {
        PathBuf::from(arg)
    } else {
        // `ip netns` names.
        Path::new("/run/netns").join(arg)
    };
    let meta = std::fs::metadata(&path).map_err(|e| {
        format!(
            "{arg}: not an inode number, and {} cannot be read ({e}); give the inode \
             (`ls -Li /proc/PID/ns/net`), an `ip netns` name or a namespace file",
            path.display()
        )
    })?;
    u32::try_from(meta.ino()).map_err(|_| format!("{arg}: inode {} is out of range", meta.ino()))
}

/// `--container`: a hex id or prefix, as `docker ps` / `crictl ps` show it.
pub fn parse_container_id(arg: &str) -> Result<String, String> {
    let id = arg.trim().to_ascii_lowercase();
    if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{arg}: a container id is hexadecimal, at least 4 digits (e.g. 3f4e8a1b2c7d)"
        ));
    }
    Ok(id)
}

/// The cgroup v2 id of a directory is its inode number.
pub fn cgroup_id(dir: &Path) -> Result<u64> {
    Ok(std::fs::metadata(dir)
        .with_context(|| format!("{}", dir.display()))?
        .ino())
}

/// `--cgroup PATH`: the directory under the cgroup v2 root (`PATH` may be
/// absolute under /sys/fs/cgroup or relative to it) and every cgroup below
/// it, because processes live in the leaves (a pod's containers, a unit's
/// sub-cgroups).
pub fn cgroup_tree(root: &Path, arg: &str) -> Result<Vec<PathBuf>> {
    let rel = arg
        .strip_prefix(root.to_str().unwrap_or(CGROUP_ROOT))
        .unwrap_or(arg)
        .trim_start_matches('/');
    let top = root.join(rel);
    if !top.join("cgroup.procs").exists() {
        bail!(
            "--cgroup {arg}: {} is not a cgroup v2 directory; give a path under {} \
             as /proc/PID/cgroup shows it, e.g. /system.slice/nginx.service",
            top.display(),
            root.display()
        );
    }
    let mut dirs = Vec::new();
    walk(&top, &mut dirs, MAX_DEPTH);
    Ok(dirs)
}

/// The cgroups under `root` whose path (as /proc/PID/cgroup shows it)
/// `matches`, and every cgroup below them: one walk of the tree serves both.
fn matching_cgroups(root: &Path, mut matches: impl FnMut(&str) -> bool) -> Vec<PathBuf> {
    let mut all = Vec::new();
    walk(root, &mut all, MAX_DEPTH);
    let tops: Vec<&PathBuf> = all
        .iter()
        .filter(|dir| {
            let rel = dir.strip_prefix(root).unwrap_or(dir);
            matches(&format!("/{}", rel.display()))
        })
        .collect();
    all.iter()
        .filter(|dir| tops.iter().any(|top| dir.starts_with(top)))
        .cloned()
        .collect()
}

/// `--container ID`: the cgroups whose path names a container with that
/// id, and every cgroup below them.
pub fn container_cgroups(root: &Path, id: &str) -> Result<Vec<PathBuf>> {
    let found = matching_cgroups(root, |path| names_container(path, id));
    if found.is_empty() {
        bail!(
            "--container {id}: no cgroup under {} belongs to a container with that id \
             (is it running on this host, under cgroup v2?)",
            root.display()
        );
    }
    Ok(found)
}

/// `--pod` / `--namespace`: the cgroups of containers whose runtime state
/// names a matching pod and namespace, and every cgroup below them.
/// Containers started later are not included (as with --container).
pub fn pod_cgroups(
    root: &Path,
    runtimes: &mut crate::enrich::containers::RuntimeState,
    pods: &[String],
    namespaces: &[String],
) -> Result<Vec<PathBuf>> {
    let found = matching_cgroups(root, |path| {
        container_from_cgroup(path)
            .and_then(|c| Some((c.runtime, c.id?)))
            .and_then(|(runtime, id)| runtimes.lookup(runtime, &id))
            .is_some_and(|(_, names)| {
                crate::enrich::containers::names_match(&names, pods, namespaces)
            })
    });
    if found.is_empty() {
        bail!(
            "--pod {pods:?} --namespace {namespaces:?}: no running container under {} \
             belongs to such a pod (the names come from the container runtime's state \
             in {}; is the runtime's state directory visible to rsttrace?)",
            root.display(),
            crate::enrich::containers::STATE_DIRS.join(", ")
        );
    }
    Ok(found)
}

/// Whether the cgroup path's own container (docker, containerd, CRI-O,
/// podman layouts) has an id starting with `id`.
pub fn names_container(cgroup_path: &str, id: &str) -> bool {
    container_from_cgroup(cgroup_path)
        .and_then(|c| c.id)
        .is_some_and(|c| c.starts_with(id))
}

/// Deep enough for Kubernetes (kubepods/burstable/pod.../container) and
/// nested systemd slices; a bound for hostile or looping trees.
const MAX_DEPTH: usize = 12;

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    out.push(dir.to_path_buf());
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&entry.path(), out, depth - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_numbers_and_names() {
        assert_eq!(parse_netns("4026531840"), Ok(4026531840));
        let err = parse_netns("no-such-namespace").unwrap_err();
        assert!(err.contains("/run/netns/no-such-namespace"), "{err}");
        // This process's own namespace file.
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        assert_eq!(parse_netns("/proc/self/ns/net"), Ok(own));
    }

    #[test]
    fn container_ids_are_hex_prefixes() {
        assert_eq!(parse_container_id("3F4E8A1B").unwrap(), "3f4e8a1b");
        assert!(parse_container_id("abc").is_err());
        assert!(
            parse_container_id("nginx")
                .unwrap_err()
                .contains("hexadecimal")
        );
    }

    #[test]
    fn container_names_in_cgroup_layouts() {
        let id = "3f4e8a1b2c7d9e0f3f4e8a1b2c7d9e0f3f4e8a1b2c7d9e0f3f4e8a1b2c7d9e0f";
        for path in [
            format!("/system.slice/docker-{id}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{id}.scope"
            ),
            format!("/machine.slice/libpod-{id}.scope"),
        ] {
            assert!(names_container(&path, "3f4e8a1b"), "{path}");
            assert!(!names_container(&path, "deadbeef"), "{path}");
        }
        assert!(!names_container("/system.slice/nginx.service", "3f4e"));
    }

    #[test]
    fn cgroup_tree_includes_descendants_and_rejects_non_cgroups() {
        let root = tempfile::tempdir().unwrap();
        let unit = root.path().join("system.slice/app.service");
        std::fs::create_dir_all(unit.join("worker")).unwrap();
        for d in [&unit, &unit.join("worker")] {
            std::fs::write(d.join("cgroup.procs"), "").unwrap();
        }
        let dirs = cgroup_tree(root.path(), "/system.slice/app.service").unwrap();
        assert_eq!(dirs, [unit.clone(), unit.join("worker")]);
        // The same, given as an absolute path under the root.
        let abs = unit.to_str().unwrap().to_string();
        assert_eq!(cgroup_tree(root.path(), &abs).unwrap().len(), 2);
        let err = cgroup_tree(root.path(), "/nope").unwrap_err().to_string();
        assert!(err.contains("--cgroup /nope"), "{err}");
    }

    #[test]
    fn containers_are_found_by_walking_the_tree() {
        let root = tempfile::tempdir().unwrap();
        let id = "a".repeat(64);
        let scope = root.path().join(format!("system.slice/docker-{id}.scope"));
        std::fs::create_dir_all(scope.join("init")).unwrap();
        assert_eq!(
            container_cgroups(root.path(), "aaaa").unwrap(),
            [scope.clone(), scope.join("init")]
        );
        let err = container_cgroups(root.path(), "bbbb")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--container bbbb"), "{err}");
    }
}
