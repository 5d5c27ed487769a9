//! `cargo xtask run`: build, then become rsttrace as root.

use std::{ffi::OsString, os::unix::process::CommandExt, process::Command};

use anyhow::{Result, bail};

use crate::{
    Workspace,
    build::{self, Profile},
    system,
};

/// Replaces this process with rsttrace (or `sudo -E rsttrace`). Replacing
/// rather than waiting means Ctrl-C reaches rsttrace alone, nothing can exit
/// before it has flushed its output, and its exit code is ours.
pub fn run(ws: &Workspace, profile: Profile, args: &[OsString]) -> Result<()> {
    let binary = build::all(ws, profile)?;
    let mut cmd = if system::is_root() {
        Command::new(&binary)
    } else if system::which("sudo").is_some() {
        // -E keeps RUST_LOG and the like.
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&binary);
        sudo
    } else {
        bail!("rsttrace needs root to load eBPF programs: run as root, or install sudo");
    };
    cmd.args(args);
    eprintln!("+ {}", system::show(&cmd));
    let err = cmd.exec();
    bail!("cannot run {}: {err}", binary.display())
}
