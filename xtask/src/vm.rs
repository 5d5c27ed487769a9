//! `cargo xtask vm-test`: the kernel integration tests on a second kernel.
//!
//! Debian bookworm's 6.1 cloud kernel (`linux-image-6.1.0-<N>-cloud-amd64`,
//! the newest apt knows) is fetched with `apt-get download`, unpacked under
//! target/vm/ and booted under qemu with a generated initramfs holding
//! busybox, the integration test binaries, rsttrace and their libraries. An
//! /init script runs the tests as root and prints markers on the serial
//! console, which this module parses. TCG, not KVM: /dev/kvm on the machines
//! this runs on is a nested software hypervisor that crashes stock kernels.

use std::{
    collections::BTreeMap,
    env,
    ffi::OsString,
    fs,
    io::{BufRead, BufReader},
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    Workspace,
    build::{self, Profile},
    causes,
    system::{self, Apt, capture, say},
    toolchain,
};

/// Every line /init prints for us starts with this, so kernel messages and
/// test output in between cannot be mistaken for a result.
const MARK: &str = "RSTTRACE-VM:";
const KERNEL_PACKAGE_RE: &str = r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$";
/// Host tools the integration tests may drive inside the guest.
const GUEST_TOOLS: [&str; 3] = ["ip", "nft", "ss"];
/// Kernel modules (with their dependencies) loaded before the tests: network
/// namespaces joined by veth, nftables rules that drop or reset.
/// tcp_diag: `ss -K` (sock_diag destroy) and `ss` itself.
const GUEST_MODULES: [&str; 5] = ["veth", "nf_tables", "nft_reject_inet", "nft_ct", "tcp_diag"];
/// The whole guest run under software emulation (TCG): the cause tests wait
/// for real timers (SYN-ACK and keepalive retransmissions), so give room.
const DEFAULT_TIMEOUT_SECS: u64 = 1500;

pub fn vm_test(ws: &Workspace, test_args: &[OsString]) -> Result<()> {
    let started = Instant::now();
    let mut apt = Apt::new();
    ensure_host_tools(&mut apt)?;
    let kernel = fetch_kernel(ws, &mut apt)?;
    let built = build_tests(ws)?;
    let initrd = build_initramfs(ws, &built, &kernel, test_args)?;
    let timeout = env::var("RSTTRACE_VM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(DEFAULT_TIMEOUT_SECS));
    let boot_started = Instant::now();
    // A guest that locks up (seen once in a few runs under TCG: a CPU stuck
    // in the kernel, RCU starved) says nothing about rsttrace; it gets one
    // more boot, announced loudly. A test failure is never retried.
    let serial = match boot(&kernel.vmlinuz, &initrd, timeout) {
        Err(e) if e.to_string().contains(GUEST_LOCKUP) => {
            say!("WARNING: {e:#}; booting the guest once more");
            boot(&kernel.vmlinuz, &initrd, timeout)?
        }
        other => other?,
    };
    let report = parse_serial(&serial);
    say!(
        "vm-test: boot and tests took {:.1} s, {:.1} s in all",
        boot_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    print_report(&kernel.package, &report);
    compare_with_host(ws, &report);
    report.verdict()
}

/// Puts the guest's causes next to those of the last host run
/// (`cargo xtask test` writes target/causes-host.tsv).
fn compare_with_host(ws: &Workspace, report: &Report) {
    let host_rows = causes::read(&ws.target_dir().join("causes-host.tsv"));
    if host_rows.is_empty() || report.causes.is_empty() {
        return;
    }
    let host = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let guest = report.kernel.as_deref().unwrap_or("guest");
    eprintln!();
    causes::print_comparison(&[(host.trim(), &host_rows), (guest, &report.causes)]);
}

// ------------------------------------------------------------ host tools

fn ensure_host_tools(apt: &mut Apt) -> Result<()> {
    let needed = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("cpio", "cpio"),
        ("gzip", "gzip"),
    ];
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(bin, _)| system::which(bin).is_none())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !Apt::usable() {
        bail!(
            "vm-test needs {} and cannot install them (not root on Debian): \
             `sudo apt-get install -y --no-install-recommends {}`",
            missing.join(", "),
            missing.join(" ")
        );
    }
    apt.install(&missing)
}

// ------------------------------------------------------------ guest kernel

struct Kernel {
    package: String,
    vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the unpacked package, with a modules.dep.
    modules: PathBuf,
    release: String,
}

impl Kernel {
    /// Describes the unpacked tree at `root`; runs depmod there (the package's
    /// postinst would have) when modules.dep is missing.
    fn at(package: String, root: &Path) -> Result<Kernel> {
        let vmlinuz = find_vmlinuz(root)
            .with_context(|| format!("{} holds no boot/vmlinuz-*", root.display()))?;
        let release = vmlinuz
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .context("vmlinuz name")?
            .to_string();
        let modules = root.join("lib/modules").join(&release);
        if !modules.join("modules.dep").is_file() {
            system::run(
                Command::new("busybox")
                    .arg("depmod")
                    .arg("-b")
                    .arg(root)
                    .arg(&release),
            )?;
        }
        Ok(Kernel {
            package,
            vmlinuz,
            modules,
            release,
        })
    }
}

/// The newest 6.1 cloud kernel apt knows, unpacked (once) under target/vm/.
fn fetch_kernel(ws: &Workspace, apt: &mut Apt) -> Result<Kernel> {
    let vm_dir = vm_dir(ws);
    fs::create_dir_all(&vm_dir)?;
    let mut package = newest_kernel_package();
    if package.is_none() && Apt::usable() {
        apt.update()?;
        package = newest_kernel_package();
    }
    let package = match package {
        Some(p) => p,
        // Offline with a cache: use what is there rather than fail.
        None => match cached_packages(&vm_dir).pop() {
            Some(p) => {
                say!("apt knows no {KERNEL_PACKAGE_RE}; using the cached {p}");
                p
            }
            None => bail!(
                "apt knows no package matching {KERNEL_PACKAGE_RE}: run `apt-get update` \
                 on a Debian bookworm host (or with bookworm in sources.list)"
            ),
        },
    };
    let root = vm_dir.join(&package);
    if find_vmlinuz(&root).is_some() {
        let kernel = Kernel::at(package, &root)?;
        say!("guest kernel: {} (cached)", kernel.vmlinuz.display());
        return Ok(kernel);
    }
    let debs = vm_dir.join("debs");
    fs::create_dir_all(&debs)?;
    system::run(
        Command::new("apt-get")
            .args(["download", &package])
            .current_dir(&debs),
    )?;
    let deb = fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
        .with_context(|| {
            format!(
                "apt-get download left no {package}_*.deb in {}",
                debs.display()
            )
        })?;
    // Unpack next to the final place, then rename: an interrupted run leaves no half tree.
    let partial = vm_dir.join(format!("{package}.partial"));
    let _ = fs::remove_dir_all(&partial);
    system::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&partial))?;
    Kernel::at(package.clone(), &partial)?;
    fs::rename(&partial, &root)?;
    let kernel = Kernel::at(package, &root)?;
    say!("guest kernel: {}", kernel.vmlinuz.display());
    Ok(kernel)
}

fn vm_dir(ws: &Workspace) -> PathBuf {
    ws.target_dir().join("vm")
}

fn newest_kernel_package() -> Option<String> {
    let list =
        capture(Command::new("apt-cache").args(["search", "--names-only", KERNEL_PACKAGE_RE]))?;
    newest_by_abi(list.lines().filter_map(|l| l.split_whitespace().next()))
}

/// `linux-image-6.1.0-<abi>-cloud-amd64` with the largest ABI number.
fn newest_by_abi<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    names
        .filter_map(|n| {
            let abi = n
                .strip_prefix("linux-image-6.1.0-")?
                .strip_suffix("-cloud-amd64")?;
            Some((abi.parse::<u32>().ok()?, n))
        })
        .max()
        .map(|(_, n)| n.to_string())
}

fn cached_packages(vm_dir: &Path) -> Vec<String> {
    let names: Vec<String> = fs::read_dir(vm_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| find_vmlinuz(&vm_dir.join(n)).is_some())
                .collect()
        })
        .unwrap_or_default();
    newest_by_abi(names.iter().map(String::as_str))
        .into_iter()
        .collect()
}

fn find_vmlinuz(root: &Path) -> Option<PathBuf> {
    fs::read_dir(root.join("boot"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
}

// ------------------------------------------------------------ what runs inside

struct Built {
    rsttrace: PathBuf,
    /// Integration test binaries (name, path).
    tests: Vec<(String, PathBuf)>,
}

/// Builds the integration tests the way `cargo xtask test` does and returns
/// the binaries cargo reports (`--message-format=json`).
fn build_tests(ws: &Workspace) -> Result<Built> {
    let toolchain = toolchain::setup(ws)?;
    let object = build::ebpf(ws, &toolchain, Profile::Release)?;
    let mut cargo = system::host_cargo();
    cargo
        .current_dir(&ws.root)
        .args([
            "test",
            "-p",
            "rsttrace",
            "--tests",
            "--no-run",
            // Release: under TCG a debug rsttrace needs ~17 s just to start.
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .env("RSTTRACE_EBPF_OBJECT", &object)
        .stderr(Stdio::inherit());
    eprintln!("+ {}", system::show(&cargo));
    let out = cargo.output().context("cannot start cargo")?;
    if !out.status.success() {
        bail!("building the integration tests failed ({})", out.status);
    }
    parse_artifacts(&String::from_utf8_lossy(&out.stdout))
}

fn parse_artifacts(json_lines: &str) -> Result<Built> {
    let mut rsttrace = None;
    let mut tests = Vec::new();
    for line in json_lines.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let kinds = msg["target"]["kind"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let is = |k: &str| kinds.iter().any(|v| v == k);
        let name = msg["target"]["name"].as_str().unwrap_or("").to_string();
        if is("bin") && name == "rsttrace" && msg["profile"]["test"] == false {
            rsttrace = Some(PathBuf::from(exe));
        } else if is("test") {
            tests.push((name, PathBuf::from(exe)));
        }
    }
    let rsttrace = rsttrace.context("cargo reported no rsttrace binary")?;
    if tests.is_empty() {
        bail!("cargo reported no integration test binaries");
    }
    Ok(Built { rsttrace, tests })
}

fn build_initramfs(
    ws: &Workspace,
    built: &Built,
    kernel: &Kernel,
    test_args: &[OsString],
) -> Result<PathBuf> {
    let vm_dir = vm_dir(ws);
    let stage = vm_dir.join("initramfs");
    let _ = fs::remove_dir_all(&stage);
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "tests",
    ] {
        fs::create_dir_all(stage.join(dir))?;
    }
    let busybox = system::which("busybox").context("busybox not found")?;
    install_binary(&stage, &busybox, Path::new("/bin/busybox"))?;
    symlink("busybox", stage.join("bin/sh"))?;

    // The test binaries find rsttrace at the absolute path cargo compiled in
    // (CARGO_BIN_EXE_rsttrace), so it goes to the same path in the guest.
    install_binary(&stage, &built.rsttrace, &built.rsttrace)?;
    let mut names = Vec::new();
    for (name, path) in &built.tests {
        install_binary(&stage, path, &Path::new("/tests").join(name))?;
        names.push(name.as_str());
    }
    for tool in GUEST_TOOLS {
        match system::which(tool) {
            Some(path) => install_binary(&stage, &path, &Path::new("/usr/sbin").join(tool))?,
            None => {
                say!("warning: {tool} not found on the host; tests needing it will fail in the VM")
            }
        }
    }
    build_stack_helper(ws, &stage)?;
    install_modules(&stage, kernel)?;
    let init = stage.join("init");
    fs::write(&init, init_script(&built.rsttrace, &names, test_args))?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;

    let image = vm_dir.join("initramfs.cpio.gz");
    let mut pack = Command::new("sh");
    pack.arg("-c")
        .arg("find . | cpio -o -H newc -R 0:0 --quiet | gzip -1 > \"$1\"")
        .arg("sh")
        .arg(&image)
        .current_dir(&stage);
    system::run(&mut pack)?;
    let size = fs::metadata(&image)?.len();
    say!(
        "initramfs: {} ({:.1} MiB)",
        image.display(),
        size as f64 / (1 << 20) as f64
    );
    Ok(image)
}

/// The guest has no C compiler: tests/stacks.rs gets its program built
/// here, with its debug info (what the test checks), at STACK_HELPER.
fn build_stack_helper(ws: &Workspace, stage: &Path) -> Result<()> {
    let src = ws.root.join("rsttrace/tests/stacks/close_unread.c");
    let exe = stage.join(STACK_HELPER.trim_start_matches('/'));
    let mut cc = Command::new("cc");
    cc.args(["-g", "-O0", "-fno-omit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(&src);
    system::run(&mut cc)
}

/// Where the guest finds tests/stacks.rs's program (RSTTRACE_STACK_HELPER).
const STACK_HELPER: &str = "/tests/close_unread";

/// Copies `src` to `dst` inside `stage` (debug info stripped: the guest needs
/// none and it is most of the size), with the shared libraries it needs.
fn install_binary(stage: &Path, src: &Path, dst: &Path) -> Result<()> {
    let target = stage.join(dst.strip_prefix("/").unwrap_or(dst));
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    let stripped = system::which("strip").is_some()
        && Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&target)
            .arg(src)
            .status()
            .is_ok_and(|s| s.success());
    if !stripped {
        fs::copy(src, &target).with_context(|| format!("copying {}", src.display()))?;
    }
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
    for lib in shared_libraries(src) {
        let lib_target = stage.join(lib.strip_prefix("/").unwrap_or(&lib));
        if lib_target.exists() {
            continue;
        }
        if let Some(parent) = lib_target.parent() {
            fs::create_dir_all(parent)?;
        }
        // Follow symlinks: the guest gets the library under the name ld.so asks for.
        fs::copy(&lib, &lib_target).with_context(|| format!("copying {}", lib.display()))?;
    }
    Ok(())
}

/// GUEST_MODULES and what they depend on, with the index files modprobe reads.
fn install_modules(stage: &Path, kernel: &Kernel) -> Result<()> {
    let dest = stage.join("lib/modules").join(&kernel.release);
    fs::create_dir_all(&dest)?;
    let dep = fs::read_to_string(kernel.modules.join("modules.dep"))?;
    for module in module_closure(&dep, &GUEST_MODULES)? {
        let target = dest.join(&module);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(kernel.modules.join(&module), &target)
            .with_context(|| format!("copying module {module}"))?;
    }
    for index in [
        "modules.dep",
        "modules.alias",
        "modules.symbols",
        "modules.builtin",
    ] {
        let src = kernel.modules.join(index);
        if src.is_file() {
            fs::copy(&src, dest.join(index))?;
        }
    }
    Ok(())
}

/// The module files (paths relative to lib/modules/<release>) that `names`
/// need, from modules.dep ("kernel/x/a.ko: kernel/y/b.ko ...").
fn module_closure(modules_dep: &str, names: &[&str]) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for name in names {
        let line = modules_dep
            .lines()
            .find(|l| {
                l.split(':')
                    .next()
                    .and_then(|path| Path::new(path).file_name()?.to_str()?.split('.').next())
                    == Some(name)
            })
            .with_context(|| format!("kernel module {name} is not in modules.dep"))?;
        let (path, deps) = line.split_once(':').unwrap_or((line, ""));
        for file in std::iter::once(path).chain(deps.split_whitespace()) {
            if !files.iter().any(|f| f == file) {
                files.push(file.to_string());
            }
        }
    }
    Ok(files)
}

/// Absolute paths `ldd` lists (none for a static binary).
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let Some(out) = capture(Command::new("ldd").arg(binary)) else {
        return Vec::new();
    };
    out.lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
            let word = l.split("=>").last()?.split_whitespace().next()?;
            word.starts_with('/').then(|| PathBuf::from(word))
        })
        .collect()
}

/// Tests of userspace behaviour that need host tools the guest image does
/// not carry (tshark reads pcapng back, setpriv drops privileges); they say
/// nothing about the kernel and run in the host suite.
const HOST_ONLY_TESTS: [&str; 2] = [
    "pcapng_export_reads_back_in_tshark",
    "without_privileges_one_clear_message",
];

fn init_script(rsttrace: &Path, tests: &[&str], test_args: &[OsString]) -> String {
    let rsttrace = rsttrace.display();
    let skips = HOST_ONLY_TESTS
        .iter()
        .flat_map(|t| [OsString::from("--skip"), OsString::from(*t)]);
    let args: Vec<String> = test_args
        .iter()
        .cloned()
        .chain(skips)
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', r"'\''")))
        .collect();
    let args = args.join(" ");
    let tests = tests.join(" ");
    let modules = GUEST_MODULES.join(" ");
    format!(
        r#"#!/bin/sh
# Generated by `cargo xtask vm-test`.
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# /tmp and /run stay on the (writable, RAM-backed) initramfs root: a tmpfs
# mounted there would hide binaries copied under the host's path when the
# checkout itself lives under /tmp.
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
# cgroup v2, as a systemd host has it (--cgroup/--container/--pod tests).
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
for m in {modules}; do modprobe $m || echo "{MARK} MODULE-FAILED $m"; done
# Smoke-test what namespace/nftables tests rely on.
ip link add rsttrace-vm0 type veth peer name rsttrace-vm1 && ip link del rsttrace-vm0 \
    || echo "{MARK} MODULE-FAILED veth-smoke"
nft add table inet rsttrace_vm && nft delete table inet rsttrace_vm \
    || echo "{MARK} MODULE-FAILED nft-smoke"
echo "{MARK} BEGIN kernel=$(uname -r) cpus=$(nproc)"
status=0
# What rsttrace makes of this kernel, for the record (and a first smoke test).
echo "{MARK} CHECK-BEGIN"
start=$(date +%s)
{rsttrace} check 2>&1
echo "{MARK} CHECK-END rc=$? seconds=$(( $(date +%s) - start ))"
for t in {tests}; do
    echo "{MARK} RUN $t"
    RSTTRACE_REQUIRE_KERNEL_TESTS=1 RSTTRACE_CAUSE_REPORT=/tmp/causes.tsv RUST_BACKTRACE=0 \
        RSTTRACE_TEST_START_SECS=120 RSTTRACE_STACK_HELPER={STACK_HELPER} \
        /tests/$t {args} 2>&1
    rc=$?
    echo "{MARK} EXIT $t $rc"
    [ $rc -eq 0 ] || status=1
done
if [ -f /tmp/causes.tsv ]; then
    while IFS= read -r line; do echo "{MARK} CAUSE $line"; done < /tmp/causes.tsv
fi
if [ $status -eq 0 ]; then echo "{MARK} RESULT PASS"; else echo "{MARK} RESULT FAIL"; fi
poweroff -f
"#
    )
}

// ------------------------------------------------------------ boot and parse

/// Boots the guest and returns its serial console output, echoed as it comes.
const GUEST_LOCKUP: &str = "the guest kernel locked up";

fn boot(vmlinuz: &Path, initrd: &Path, timeout: Duration) -> Result<String> {
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
         to skip the second-kernel suite explicitly",
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
                eprintln!("vm| {line}");
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
             If qemu cannot run here, set RSTTRACE_SKIP_VM=1 to skip the second-kernel suite explicitly"
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

#[derive(Debug, Default, PartialEq)]
struct Report {
    kernel: Option<String>,
    /// test name → "ok" | "FAILED" | "ignored".
    tests: BTreeMap<String, String>,
    /// binaries with a non-zero exit status.
    failed_binaries: Vec<String>,
    causes: Vec<causes::Row>,
    passed: Option<bool>,
    /// GUEST_MODULES modprobe could not load.
    modules_failed: Vec<String>,
}

impl Report {
    fn verdict(&self) -> Result<()> {
        let failed: Vec<&String> = self
            .tests
            .iter()
            .filter(|(_, r)| r.as_str() == "FAILED")
            .map(|(t, _)| t)
            .collect();
        match self.passed {
            None => bail!("the guest printed no {MARK} RESULT line (crash or panic? see above)"),
            Some(_) if self.tests.is_empty() => bail!("no test ran in the guest"),
            Some(true) if failed.is_empty() && self.failed_binaries.is_empty() => Ok(()),
            _ => bail!(
                "vm-test failed on {}: tests {:?}, binaries {:?}",
                self.kernel.as_deref().unwrap_or("?"),
                failed,
                self.failed_binaries
            ),
        }
    }
}

fn parse_serial(serial: &str) -> Report {
    let mut report = Report::default();
    for line in serial.lines() {
        if let Some(rest) = line.find(MARK).map(|i| line[i + MARK.len()..].trim()) {
            let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            match word {
                "BEGIN" => {
                    report.kernel = rest
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("kernel="))
                        .map(str::to_string)
                }
                "EXIT" => {
                    let mut w = rest.split_whitespace();
                    if let (Some(name), Some(rc)) = (w.next(), w.next())
                        && rc != "0"
                    {
                        report.failed_binaries.push(name.to_string());
                    }
                }
                "CAUSE" => report.causes.extend(causes::Row::parse(rest)),
                "MODULE-FAILED" => report.modules_failed.push(rest.trim().to_string()),
                "RESULT" => report.passed = Some(rest.trim() == "PASS"),
                _ => {}
            }
        } else if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, result)) = rest.rsplit_once(" ... ")
        {
            let result = result.split_whitespace().next().unwrap_or("");
            if ["ok", "FAILED", "ignored"].contains(&result) {
                report.tests.insert(name.to_string(), result.to_string());
            }
        }
    }
    report
}

fn print_report(package: &str, report: &Report) {
    let kernel = report.kernel.as_deref().unwrap_or(package);
    eprintln!();
    eprintln!("vm-test on {kernel} ({package}):");
    for (test, result) in &report.tests {
        eprintln!("  {result:>7}  {test}");
    }
    if !report.modules_failed.is_empty() {
        eprintln!(
            "  warning: kernel modules not loaded in the guest: {}",
            report.modules_failed.join(", ")
        );
    }
    causes::print_summary(kernel, &report.causes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_kernel_by_abi_number_not_by_text() {
        let names = [
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-100-cloud-amd64-dbg",
            "linux-image-6.1.0-47-cloud-amd64",
        ];
        assert_eq!(
            newest_by_abi(names.into_iter()).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(newest_by_abi(std::iter::empty()), None);
    }

    #[test]
    fn module_closure_follows_modules_dep() {
        let dep = "\
kernel/net/netfilter/nf_tables.ko: kernel/net/netfilter/nfnetlink.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/nfnetlink.ko:
kernel/lib/libcrc32c.ko:
kernel/drivers/net/veth.ko:
";
        assert_eq!(
            module_closure(dep, &["veth", "nf_tables"]).unwrap(),
            [
                "kernel/drivers/net/veth.ko",
                "kernel/net/netfilter/nf_tables.ko",
                "kernel/net/netfilter/nfnetlink.ko",
                "kernel/lib/libcrc32c.ko"
            ]
        );
        assert!(module_closure(dep, &["nft_nope"]).is_err());
    }

    #[test]
    fn serial_output_is_parsed_into_a_report() {
        let serial = "\
[    1.2] random kernel line
RSTTRACE-VM: MODULE-FAILED veth
RSTTRACE-VM: BEGIN kernel=6.1.0-56-cloud-amd64 cpus=2
RSTTRACE-VM: RUN loopback_causes
running 2 tests
test so_linger_zero ... ok
test port_not_open_and_peer_refused ... FAILED
RSTTRACE-VM: EXIT loopback_causes 101
RSTTRACE-VM: CAUSE event\tso_linger_zero\tsent\tlinger_zero\tlikely
RSTTRACE-VM: RESULT FAIL
";
        let r = parse_serial(serial);
        assert_eq!(r.kernel.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(r.tests["so_linger_zero"], "ok");
        assert_eq!(r.tests["port_not_open_and_peer_refused"], "FAILED");
        assert_eq!(r.failed_binaries, ["loopback_causes"]);
        assert_eq!(r.modules_failed, ["veth"]);
        assert_eq!(r.causes.len(), 1);
        assert_eq!(r.passed, Some(false));
        assert!(r.verdict().is_err());

        let ok = serial
            .replace("... FAILED", "... ok")
            .replace("loopback_causes 101", "loopback_causes 0")
            .replace("RESULT FAIL", "RESULT PASS");
        assert!(parse_serial(&ok).verdict().is_ok());
        assert!(parse_serial("no markers at all").verdict().is_err());
    }
}
