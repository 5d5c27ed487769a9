//! Embeds the eBPF object built by `cargo xtask build-ebpf`.
//!
//! The object is built by a different toolchain (bpfel-unknown-none with
//! build-std), so it cannot be a normal dependency. When it is missing (plain
//! `cargo check`/`clippy` on a fresh clone), an empty object is embedded and
//! rsttrace refuses to trace at run time with a message saying how to build it.
use std::{env, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let default = manifest.join("../target/bpf/bpfel-unknown-none/release/rsttrace-ebpf");
    let object = env::var_os("RSTTRACE_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or(default);
    println!("cargo:rerun-if-env-changed=RSTTRACE_EBPF_OBJECT");
    println!("cargo:rerun-if-changed={}", object.display());

    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("rsttrace-ebpf.o");
    match fs::read(&object) {
        Ok(bytes) => fs::write(&out, bytes).unwrap(),
        Err(_) => {
            println!(
                "cargo:warning=eBPF object not found at {}; run `cargo xtask build` to embed it",
                object.display()
            );
            fs::write(&out, []).unwrap();
        }
    }
}
