//! `--namespace` / `--pod` end to end: a pod's container cgroup (created
//! here, named as containerd names it under Kubernetes) and its runtime
//! state (containerd's bundle config.json with the CRI annotations, under
//! `--runtime-root`) resolve to the cgroup the kernel filters on; the RST
//! of a process inside is reported with its pod, namespace, container name
//! and image, the same RST from outside is not.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};

use common::*;

/// Removes the test's cgroups, even when the test fails.
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn cgroup_v2_or_skip(test: &str) -> Option<PathBuf> {
    let root = rsttrace::enrich::scope::cgroup_v2_root();
    if root.join("cgroup.controllers").exists() {
        return Some(root);
    }
    if std::env::var_os("RSTTRACE_REQUIRE_KERNEL_TESTS").is_some() {
        panic!("{test}: no cgroup v2 hierarchy (RSTTRACE_REQUIRE_KERNEL_TESTS is set)");
    }
    eprintln!("SKIPPED {test}: no cgroup v2 hierarchy");
    None
}

fn write_containerd_state(root: &Path, id: &str) {
    let bundle = root
        .join("run/containerd/io.containerd.runtime.v2.task/k8s.io")
        .join(id);
    std::fs::create_dir_all(&bundle).unwrap();
    let spec = serde_json::json!({
        "ociVersion": "1.1.0",
        "annotations": {
            "io.kubernetes.cri.container-name": "web",
            "io.kubernetes.cri.image-name": "registry.example.com/shop/web:1.0",
            "io.kubernetes.cri.sandbox-name": "web-0",
            "io.kubernetes.cri.sandbox-namespace": "rsttrace-test",
        }
    });
    std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
}

/// Forks a child that moves itself into the cgroup whose `cgroup.procs`
/// is given, connects to 127.0.0.1:`port`, and stays a second so /proc
/// still has it when rsttrace looks; returns its pid once it exited.
fn connect_from_cgroup(procs: &Path, port: u16) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let procs = std::ffi::CString::new(procs.as_os_str().as_bytes()).unwrap();
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the child makes only system calls, which are async-signal-
    // safe, on memory prepared before the fork, and leaves with _exit.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            // Writing 0 moves the writer itself (cgroup v2).
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            let joined = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            let sock = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            libc::connect(
                sock,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            libc::sleep(1);
            libc::_exit(if joined { 0 } else { 1 });
        }
        assert!(pid > 0, "fork failed");
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child could not join the cgroup"
        );
        pid
    }
}

#[test]
fn a_namespace_filter_keeps_its_pods_rsts_and_names_them() {
    let test = "a_namespace_filter_keeps_its_pods_rsts_and_names_them";
    let Some(mut sc) = Scenario::new(test).start() else {
        return;
    };
    let Some(root) = cgroup_v2_or_skip(test) else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{nanos:032x}{:032x}", std::process::id());
    let top = root.join(format!("rsttrace-test-{}", std::process::id()));
    let scope = top.join(format!("cri-containerd-{id}.scope"));
    std::fs::create_dir_all(&scope).expect("create a cgroup");
    let _cgroups = Cgroups(vec![top, scope.clone()]);
    let state = tempfile::tempdir().unwrap();
    write_containerd_state(state.path(), &id);

    let closed = free_port();
    sc.trace(&[
        "--port",
        &closed.to_string(),
        "--namespace",
        "rsttrace-test",
        "--runtime-root",
        state.path().to_str().unwrap(),
    ]);
    // Inside the pod: a child joins the container's cgroup, then connects.
    let inside = connect_from_cgroup(&scope.join("cgroup.procs"), closed);
    // Outside the pod: the same RST, from this process.
    TcpStream::connect(loopback(closed)).expect_err("nothing listens");
    let events = sc.stop();

    let refused = find(&events, "received", "peer_refused");
    assert_eq!(
        refused.len(),
        1,
        "only the pod's RST:\n{}",
        describe(&events)
    );
    let c = &refused[0]["container"];
    assert_eq!(refused[0]["pid"], inside, "{}", refused[0]);
    assert_eq!(c["runtime"], "containerd", "{c}");
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["pod"], "web-0");
    assert_eq!(c["namespace"], "rsttrace-test");
    assert_eq!(c["name"], "web");
    assert_eq!(c["image"], "registry.example.com/shop/web:1.0");
}
