//! `cargo xtask test`: every test, from a fresh machine.

use std::{env, ffi::OsString, path::Path, process::Command};

use anyhow::{Result, bail};

use crate::{
    Workspace,
    build::{self, Profile},
    causes, lint,
    system::{self, say},
    toolchain,
};

pub fn test(ws: &Workspace, lint: bool, extra: &[OsString]) -> Result<()> {
    // Lint first: it needs only the host toolchain and fails in seconds.
    if lint {
        lint::host(ws)?;
    }
    let toolchain = toolchain::setup(ws)?;
    system::ensure_tracefs();
    // The integration tests build network namespaces, veth pairs and
    // nftables rules, and kill sockets with `ss -K`;
    // tshark reads back the pcapng exports.
    system::ensure_programs(&[
        ("ip", "iproute2"),
        ("ss", "iproute2"),
        ("nft", "nftables"),
        ("tshark", "tshark"),
    ])?;
    let object = build::ebpf(ws, &toolchain, Profile::Release)?;

    let root = system::is_root();
    if !root {
        if system::which("sudo").is_none() {
            bail!(
                "the kernel tests load eBPF programs and need root: run `cargo xtask test` as root"
            );
        }
        say!("not root: test binaries will run under `sudo -E`");
    }

    // The ABI crate's unit tests on the host (its default feature is the
    // kernel side, which only builds for the BPF target).
    let mut abi = test_command(ws, &object, root);
    abi.args(["-p", "rsttrace-ebpf", "--lib", "--no-default-features"]);
    system::run(&mut abi)?;

    // The default members: rsttrace (unit + kernel integration tests) and xtask.
    let report = ws.target_dir().join("causes-host.tsv");
    let _ = std::fs::remove_file(&report);
    let skip_log = ws.target_dir().join("skipped-tests.txt");
    let _ = std::fs::remove_file(&skip_log);
    let mut tests = test_command(ws, &object, root);
    tests
        .env("RSTTRACE_CAUSE_REPORT", &report)
        .env("RSTTRACE_SKIP_LOG", &skip_log)
        .args(extra);
    let result = system::run(&mut tests);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    causes::print_summary(kernel.trim(), &causes::read(&report));
    // libtest counts a test that returned early as passed: say how many did.
    let skipped = std::fs::read_to_string(&skip_log).unwrap_or_default();
    let skipped: Vec<&str> = skipped.lines().collect();
    if skipped.is_empty() {
        say!("no test was skipped");
    } else {
        say!(
            "{} test(s) SKIPPED (counted as passed by libtest):\n  {}",
            skipped.len(),
            skipped.join("\n  ")
        );
    }
    result
}

fn test_command(ws: &Workspace, object: &Path, root: bool) -> Command {
    let mut cargo = system::host_cargo();
    cargo.current_dir(&ws.root).arg("test");
    if !root {
        // Only the test binaries need root, not the compiler.
        cargo.args(["--config", "target.'cfg(all())'.runner = ['sudo', '-E']"]);
    }
    cargo.env("RSTTRACE_EBPF_OBJECT", object);
    if in_ci() {
        // In CI a kernel test that cannot run is a failure, not a skip.
        cargo.env("RSTTRACE_REQUIRE_KERNEL_TESTS", "1");
    }
    cargo
}

fn in_ci() -> bool {
    env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}
