//! Building the eBPF object, then rsttrace with the object embedded.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::{
    Workspace,
    system::{self, say},
    toolchain::{self, BPF_TARGET, BpfToolchain},
};

#[derive(Clone, Copy)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    pub fn from_release(release: bool) -> Self {
        if release { Self::Release } else { Self::Debug }
    }

    /// cargo's output directory name for this profile.
    fn dir(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Release => "release",
        }
    }

    fn flag(self) -> Option<&'static str> {
        match self {
            Self::Debug => None,
            Self::Release => Some("--release"),
        }
    }
}

/// Where the eBPF object of `profile` lands; also where rsttrace's build.rs
/// looks by default (release) when RSTTRACE_EBPF_OBJECT is not set.
pub fn ebpf_object(ws: &Workspace, profile: Profile) -> PathBuf {
    ws.bpf_target_dir()
        .join(BPF_TARGET)
        .join(profile.dir())
        .join("rsttrace-ebpf")
}

/// The perf-event-array build of the object (`--features perf`), next to
/// `ebpf_object`; rsttrace's build.rs embeds it too.
pub fn ebpf_perf_object(ws: &Workspace, profile: Profile) -> PathBuf {
    ebpf_object(ws, profile).with_file_name("rsttrace-ebpf-perf")
}

/// Builds both eBPF objects (ring buffer, then perf event array) with the
/// BPF toolchain and returns the ring buffer one's path; the perf one is at
/// `ebpf_perf_object`.
pub fn ebpf(ws: &Workspace, toolchain: &BpfToolchain, profile: Profile) -> Result<PathBuf> {
    say!("building the eBPF objects with {}", toolchain.description());
    // Same target directory for both: cargo keeps each feature set's build,
    // so switching costs a link, and `ebpf_object` ends as the ring buffer one.
    let object = ebpf_object(ws, profile);
    build_object(ws, toolchain, profile, Some("perf"))?;
    std::fs::copy(&object, ebpf_perf_object(ws, profile))?;
    build_object(ws, toolchain, profile, None)?;
    say!("eBPF objects: {} (+ -perf)", object.display());
    Ok(object)
}

fn build_object(
    ws: &Workspace,
    toolchain: &BpfToolchain,
    profile: Profile,
    features: Option<&str>,
) -> Result<()> {
    let mut cargo = toolchain.cargo(ws);
    cargo
        .args([
            "build",
            "-p",
            "rsttrace-ebpf",
            "--bin",
            "rsttrace-ebpf",
            "--target",
            BPF_TARGET,
        ])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(ws.bpf_target_dir())
        .args(profile.flag());
    if let Some(features) = features {
        cargo.args(["--features", features]);
    }
    system::run(&mut cargo)?;
    let object = ebpf_object(ws, profile);
    if !object.is_file() {
        bail!(
            "the eBPF build succeeded but left no object at {}",
            object.display()
        );
    }
    Ok(())
}

/// Sets up, builds the (always release: the debug one is only for inspecting
/// codegen) eBPF object, then rsttrace; returns the rsttrace binary.
pub fn all(ws: &Workspace, profile: Profile) -> Result<PathBuf> {
    let toolchain = toolchain::setup(ws)?;
    let object = ebpf(ws, &toolchain, Profile::Release)?;
    let mut cargo = system::host_cargo();
    cargo
        .current_dir(&ws.root)
        .args(["build", "-p", "rsttrace"])
        .args(profile.flag())
        .env("RSTTRACE_EBPF_OBJECT", &object);
    system::run(&mut cargo)?;
    let binary = ws.target_dir().join(profile.dir()).join("rsttrace");
    say!("rsttrace: {}", binary.display());
    Ok(binary)
}
