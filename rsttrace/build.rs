//! Embeds the two eBPF objects built by `cargo xtask build-ebpf`: the ring
//! buffer one and, next to it with a `-perf` suffix, the perf event array one.
//!
//! The objects are built by a different toolchain (bpfel-unknown-none with
//! build-std), so they cannot be a normal dependency. When one is missing
//! (plain `cargo check`/`clippy` on a fresh clone), an empty object is
//! embedded and rsttrace refuses to trace at run time with a message saying
//! how to build it.
use std::{env, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let default = manifest.join("../target/bpf/bpfel-unknown-none/release/rsttrace-ebpf");
    let object = env::var_os("RSTTRACE_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or(default);
    println!("cargo:rerun-if-env-changed=RSTTRACE_EBPF_OBJECT");
    let mut perf = object.clone().into_os_string();
    perf.push("-perf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    embed(&object, &out.join("rsttrace-ebpf.o"));
    embed(&PathBuf::from(perf), &out.join("rsttrace-ebpf-perf.o"));
}

fn embed(object: &PathBuf, out: &PathBuf) {
    println!("cargo:rerun-if-changed={}", object.display());
    match fs::read(object) {
        Ok(bytes) => fs::write(out, bytes).unwrap(),
        Err(_) => {
            println!(
                "cargo:warning=eBPF object not found at {}; run `cargo xtask build` to embed it",
                object.display()
            );
            fs::write(out, []).unwrap();
        }
    }
}
