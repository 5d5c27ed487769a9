//! `--namespace` / `--pod` end to end: a pod's container cgroup (created
//! here, named as containerd names it under Kubernetes) and its runtime
//! state (containerd's bundle config.json with the CRI annotations, under
//! `--runtime-root`) resolve to the cgroup the kernel filters on; the RST
//! of a process inside is reported with its pod, namespace, container name
//! and image, the same RST from outside is not.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    let root = rsttrace::scope::cgroup_v2_root();
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

#[test]
fn a_namespace_filter_keeps_its_pods_rsts_and_names_them() {
    let test = "a_namespace_filter_keeps_its_pods_rsts_and_names_them";
    if !kernel_tests_possible(test) {
        return;
    }
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
    let tracer = Tracer::start(&[
        "--port",
        &closed.to_string(),
        "--namespace",
        "rsttrace-test",
        "--runtime-root",
        state.path().to_str().unwrap(),
    ]);
    // Inside the pod: bash joins the container's cgroup, then connects to
    // a closed port, and stays a moment so /proc still has it.
    let inside = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && : 3<>/dev/tcp/127.0.0.1/{closed}; sleep 1",
            scope.join("cgroup.procs").display()
        ))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run bash");
    assert!(inside.success(), "bash could not join the cgroup");
    // Outside the pod: the same RST, from this process.
    TcpStream::connect(loopback(closed)).expect_err("nothing listens");
    let events = tracer.stop();

    let refused = find(&events, "received", "peer_refused");
    assert_eq!(
        refused.len(),
        1,
        "only the pod's RST:\n{}",
        describe(&events)
    );
    let c = &refused[0]["container"];
    assert_eq!(refused[0]["comm"], "bash", "{}", refused[0]);
    assert_eq!(c["runtime"], "containerd", "{c}");
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["pod"], "web-0");
    assert_eq!(c["namespace"], "rsttrace-test");
    assert_eq!(c["name"], "web");
    assert_eq!(c["image"], "registry.example.com/shop/web:1.0");
}
