//! Formatting and clippy checks.

use std::process::Command;

use anyhow::Result;

use crate::{
    Workspace,
    build::{self, Profile},
    system::{self, say},
    toolchain::{self, BPF_TARGET},
};

/// The fast checks `cargo xtask test` starts with: formatting, then host clippy.
pub fn host(ws: &Workspace) -> Result<()> {
    let mut fmt = system::host_cargo();
    fmt.current_dir(&ws.root).args(["fmt", "--all", "--check"]);
    system::run(&mut fmt)?;
    host_clippy(ws)
}

/// `cargo xtask clippy`: host crates, then the eBPF crate for its own target.
pub fn clippy(ws: &Workspace) -> Result<()> {
    host_clippy(ws)?;
    let toolchain = toolchain::setup(ws)?;
    if toolchain.cargo_clippy(ws).is_none() {
        say!(
            "note: {} has no clippy; skipping clippy of rsttrace-ebpf for {BPF_TARGET} \
             (Debian: `apt-get install rust-web-clippy`)",
            toolchain.description()
        );
        return Ok(());
    }
    // Both objects: the ring buffer one, and the perf event array one.
    for features in [None, Some("perf")] {
        let mut clippy = toolchain.cargo_clippy(ws).expect("checked above");
        clippy
            .args([
                "-p",
                "rsttrace-ebpf",
                "--target",
                BPF_TARGET,
                "-Z",
                "build-std=core",
            ])
            .arg("--target-dir")
            .arg(ws.bpf_target_dir())
            .arg("--release");
        if let Some(features) = features {
            clippy.args(["--features", features]);
        }
        system::run(clippy.args(["--", "-D", "warnings"]))?;
    }
    Ok(())
}

/// Clippy with warnings denied on the default members (rsttrace, xtask, and
/// the ABI library through rsttrace), then on the ABI library alone as the
/// host sees it in its unit tests.
fn host_clippy(ws: &Workspace) -> Result<()> {
    system::run(host_cargo_clippy(ws).args(["--all-targets", "--", "-D", "warnings"]))?;
    system::run(host_cargo_clippy(ws).args([
        "-p",
        "rsttrace-ebpf",
        "--all-targets",
        "--no-default-features",
        "--",
        "-D",
        "warnings",
    ]))
}

fn host_cargo_clippy(ws: &Workspace) -> Command {
    let mut cargo = system::host_cargo();
    cargo
        .current_dir(&ws.root)
        .arg("clippy")
        // The same value the builds use, so that rsttrace's build script is
        // not rerun just because the variable appeared or changed.
        .env(
            "RSTTRACE_EBPF_OBJECT",
            build::ebpf_object(ws, Profile::Release),
        );
    cargo
}
