//! Boots a guest under qemu (TCG) and returns its serial console output.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::MARK;
use crate::system;

/// The error `boot` returns when the guest kernel locks up (retried once).
pub const GUEST_LOCKUP: &str = "the guest kernel locked up";

/// Boots `vmlinuz` with `initrd`, echoing the console prefixed with `tag`;
/// the whole console output once the guest powers off.
pub fn boot(vmlinuz: &Path, initrd: &Path, timeout: Duration, tag: &str) -> Result<String> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        // One vCPU: with two, a guest CPU was seen spinning in the kernel
        // (soft lockup) waiting for the other under multi-threaded TCG.
        "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1",
    ])
    .args(["-nographic", "-no-reboot", "-kernel"])
    .arg(vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", "console=ttyS0 panic=-1 quiet"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    eprintln!("+ {}", system::show(&qemu));
    let mut child = qemu.spawn().context(
        "qemu-system-x86_64 cannot start: install qemu-system-x86, or set RSTTRACE_SKIP_VM=1 \
         to skip the VM suites explicitly",
    )?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let tx2 = tx.clone();
    std::thread::spawn(move || forward_lines(stdout, tx));
    std::thread::spawn(move || forward_lines(stderr, tx2));

    let deadline = Instant::now() + timeout;
    let mut serial = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                eprintln!("{tag}| {line}");
                serial.push_str(&line);
                serial.push('\n');
                if line.contains("BUG: soft lockup") {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("{GUEST_LOCKUP} (\"{}\")", line.trim());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the VM did not finish within {} s (RSTTRACE_VM_TIMEOUT); serial output so far is above",
                    timeout.as_secs()
                );
            }
        }
    }
    let status = child.wait()?;
    if !serial.contains(MARK) {
        bail!(
            "qemu ({status}) printed no {MARK} line: the guest did not reach /init. \
             If qemu cannot run here, set RSTTRACE_SKIP_VM=1 to skip the VM suites explicitly"
        );
    }
    Ok(serial)
}

fn forward_lines(from: impl std::io::Read, tx: mpsc::Sender<String>) {
    for line in BufReader::new(from).lines() {
        let Ok(line) = line else { break };
        if tx.send(line.trim_end_matches('\r').to_string()).is_err() {
            break;
        }
    }
}
