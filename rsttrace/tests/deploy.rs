//! deploy/kubernetes/: the DaemonSet grants exactly what rsttrace says it
//! needs (rsttrace/src/needs.rs, shown by `rsttrace check`), its arguments
//! parse with rsttrace's own command line, and the Containerfile packages
//! the binary `cargo xtask dist` builds. No cluster needed; the files are
//! compiled in, so the test runs where the source tree is not (the VM).

use std::collections::BTreeSet;

use clap::Parser;
use rsttrace::cli::Cli;
use rsttrace::cmd::needs::{CAPABILITIES, HOST_PATHS};
use serde::Deserialize;
use serde_json::Value;

const DAEMONSET: &str = include_str!("../../deploy/kubernetes/daemonset.yaml");
const CONTAINERFILE: &str = include_str!("../../deploy/kubernetes/Containerfile");
const XTASK_DIST: &str = include_str!("../../xtask/src/dist.rs");

/// The manifest's DaemonSet.
fn daemonset() -> Value {
    serde_norway::Deserializer::from_str(DAEMONSET)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .find(|doc| doc["kind"] == "DaemonSet")
        .expect("a DaemonSet in daemonset.yaml")
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn it_runs_in_the_hosts_namespaces() {
    let ds = daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "/proc of the host's processes");
    assert_eq!(pod["hostNetwork"], true, "RSTs of every network namespace");
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
}

#[test]
fn capabilities_are_exactly_rsttraces_needs() {
    let ds = daemonset();
    let sc = &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    let granted = strings(&sc["capabilities"]["add"]);
    let needed: BTreeSet<String> = CAPABILITIES.iter().map(|c| c.name.to_owned()).collect();
    assert_eq!(
        granted, needed,
        "capabilities.add differs from needs::CAPABILITIES"
    );
    assert_eq!(
        strings(&sc["capabilities"]["drop"]),
        BTreeSet::from(["ALL".to_owned()])
    );
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
}

#[test]
fn mounts_are_exactly_rsttraces_host_paths() {
    let ds = daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let mounts = container["volumeMounts"].as_array().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    assert_eq!(
        mounts.len(),
        HOST_PATHS.len(),
        "one mount per needs::HOST_PATHS entry"
    );
    for need in HOST_PATHS {
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == need.path)
            .unwrap_or_else(|| panic!("{} ({}) is not mounted", need.path, need.why));
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("no volume {}", mount["name"]));
        assert_eq!(
            volume["hostPath"]["path"], need.path,
            "{} must be the host's own path",
            need.path
        );
        let read_only = mount["readOnly"].as_bool().unwrap_or(false);
        assert_eq!(read_only, !need.writable, "{}: readOnly", need.path);
    }
}

/// `$(VAR)` as the kubelet expands it, with sample values.
fn expanded_args() -> Vec<String> {
    let ds = daemonset();
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let mut arg = a.as_str().expect("args are strings").to_owned();
            for name in &env {
                arg = arg.replace(&format!("$({name})"), "10.0.0.7");
            }
            assert!(!arg.contains("$("), "{arg}: an undefined variable");
            arg
        })
        .collect()
}

#[test]
fn args_parse_and_agree_with_the_manifest() {
    let args = expanded_args();
    let cli = Cli::try_parse_from(std::iter::once("rsttrace".to_owned()).chain(args))
        .unwrap_or_else(|e| panic!("the DaemonSet's args do not parse: {e}"));
    let trace = cli.trace;
    assert!(trace.quiet);
    // Prometheus scrapes the port rsttrace serves.
    let ds = daemonset();
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    let metrics = trace.metrics.expect("--metrics");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["prometheus.io/port"],
        metrics.port().to_string()
    );
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["ports"][0]["containerPort"], metrics.port());
    assert_eq!(
        container["livenessProbe"]["httpGet"]["port"],
        metrics.port()
    );
    // The export is rotated, inside the one writable mount.
    let write = trace.write.expect("--write");
    let writable = HOST_PATHS.iter().find(|p| p.writable).unwrap();
    assert!(write.starts_with(writable.path), "{}", write.display());
    assert!(trace.rotate_size.is_some());
}

#[test]
fn resources_are_requested_and_memory_is_limited() {
    let ds = daemonset();
    let r = &ds["spec"]["template"]["spec"]["containers"][0]["resources"];
    let mib = |v: &Value| -> u64 {
        let s = v.as_str().expect("a quantity");
        s.strip_suffix("Mi").expect("in Mi").parse().unwrap()
    };
    // The bench's peak RSS (25 MB) plus the 4 MiB ring buffer charged to
    // the pod fit in the request; the limit leaves room for --stack.
    assert!(mib(&r["requests"]["memory"]) >= 32, "{r}");
    assert!(
        mib(&r["limits"]["memory"]) >= mib(&r["requests"]["memory"]) + 16,
        "{r}"
    );
    assert!(r["requests"]["cpu"].is_string(), "{r}");
    // A CPU limit throttles the reader during a storm: events get lost.
    assert!(r["limits"].get("cpu").is_none(), "{r}");
}

#[test]
fn the_image_holds_the_dist_binary() {
    // The name `cargo xtask dist` gives the binary.
    assert!(XTASK_DIST.contains("\"rsttrace-x86_64-linux\""));
    assert!(CONTAINERFILE.contains("COPY rsttrace-x86_64-linux /usr/bin/rsttrace"));
    assert!(CONTAINERFILE.contains("ENTRYPOINT [\"/usr/bin/rsttrace\"]"));
}
