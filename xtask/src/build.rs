//! Building the eBPF object, then rsttrace with the object embedded.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::{
    Workspace, frames,
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
/// `ebpf_perf_object`. Both are stripped of their DWARF (`strip_debug`).
pub fn ebpf(ws: &Workspace, toolchain: &BpfToolchain, profile: Profile) -> Result<PathBuf> {
    say!("building the eBPF objects with {}", toolchain.description());
    // Same target directory for both: cargo keeps each feature set's build,
    // so switching costs a link, and `ebpf_object` ends as the ring buffer one.
    let object = ebpf_object(ws, profile);
    build_object(ws, toolchain, profile, Some("perf"))?;
    strip_debug(toolchain, &object, &ebpf_perf_object(ws, profile))?;
    build_object(ws, toolchain, profile, None)?;
    strip_debug(toolchain, &object, &object)?;
    let (program, bytes) = frames::check(&object)?;
    frames::check(&ebpf_perf_object(ws, profile))?;
    say!("eBPF objects: {} (+ -perf)", object.display());
    say!("deepest stack: {program}, {bytes} of 512 bytes across its calls");
    Ok(object)
}

/// Writes `from` without its DWARF to `to`, and keeps the whole object as
/// `to` + `.debug` (for `llvm-objdump -dl`). bpf-linker makes BTF out of
/// DWARF, so the object is linked with it, but two thirds of its 880 KB are
/// DWARF that neither aya nor the kernel reads: they load .BTF and .BTF.ext
/// (whose line info the verifier's messages quote), which stay.
///
/// Both files get `from`'s modification time: rsttrace's build.rs embeds
/// `to` and reruns when it is newer, so an unchanged object must not look
/// new. `to` may be `from`, cargo's hard link to its own copy: it is
/// replaced, never written through.
fn strip_debug(toolchain: &BpfToolchain, from: &Path, to: &Path) -> Result<()> {
    let with_suffix = |suffix: &str| {
        let mut path = to.as_os_str().to_owned();
        path.push(suffix);
        PathBuf::from(path)
    };
    let (debug, stripped) = (with_suffix(".debug"), with_suffix(".stripped"));
    let built = std::fs::metadata(from)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading {}", from.display()))?;
    let mut objcopy = toolchain.objcopy();
    objcopy.arg("--strip-debug").arg(from).arg(&stripped);
    system::run(&mut objcopy)?;
    std::fs::copy(from, &debug)
        .with_context(|| format!("copying {} to {}", from.display(), debug.display()))?;
    for path in [&debug, &stripped] {
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(built))
            .with_context(|| format!("setting the time of {}", path.display()))?;
    }
    std::fs::rename(&stripped, to)
        .with_context(|| format!("renaming {} to {}", stripped.display(), to.display()))
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
