//! `cargo xtask dist`: one self-contained x86_64 binary to copy to a host.
//!
//! The eBPF object is embedded and the C library is linked statically
//! (`+crt-static` on the gnu target: no musl Rust standard library can be
//! installed here without rustup's download server). rsttrace resolves host
//! names only for `--otlp`, where static glibc needs its NSS modules at run
//! time: give the static binary an IP (the DaemonSet passes the node's).

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::{
    Workspace,
    build::{self, Profile},
    system::{self, say},
    toolchain,
};

const HOST: &str = "x86_64-unknown-linux-gnu";

pub fn dist(ws: &Workspace) -> Result<PathBuf> {
    let toolchain = toolchain::setup(ws)?;
    let object = build::ebpf(ws, &toolchain, Profile::Release)?;
    let target_dir = ws.target_dir().join("dist-build");
    let mut cargo = system::host_cargo();
    cargo
        .current_dir(&ws.root)
        .args([
            "build",
            "--release",
            "-p",
            "rsttrace",
            "--target",
            HOST,
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("RSTTRACE_EBPF_OBJECT", &object)
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=debuginfo",
        );
    system::run(&mut cargo)?;
    let built = target_dir.join(HOST).join("release/rsttrace");
    let out_dir = ws.target_dir().join("dist");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("rsttrace-x86_64-linux");
    std::fs::copy(&built, &out)?;
    // A dynamic binary would fail on hosts with another glibc: check.
    let elf = std::fs::read(&out)?;
    if contains(&elf, b"/lib64/ld-linux-x86-64.so") {
        bail!("{} still needs the dynamic loader", out.display());
    }
    say!(
        "dist: {} ({} KiB, static, eBPF object embedded)",
        out.display(),
        elf.len() / 1024
    );
    Ok(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
