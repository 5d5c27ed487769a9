//! `cargo xtask vm-test`: the kernel integration tests on other kernels.
//!
//! Each kernel of the matrix (`kernel::KERNELS`: Debian's 5.10, 6.1 and 6.12
//! cloud kernels) is fetched with apt, unpacked under target/vm/ and booted
//! under qemu with an initramfs holding busybox, the integration test
//! binaries, rsttrace and their libraries. /init (init.sh) runs the tests as
//! root and prints markers on the serial console, which `report` parses.
//! TCG, not KVM: /dev/kvm on the machines this runs on is a nested software
//! hypervisor that crashes stock kernels.
//!
//! Each run leaves target/vm/results/<version>/: `causes.tsv` (the rows the
//! tests reported), `check.txt` (`rsttrace check` in the guest) and
//! `summary.txt`; `cargo xtask causes-doc` turns them into docs/causes.md's
//! table.

mod initramfs;
pub mod kernel;
mod qemu;
mod report;

use std::{
    env,
    ffi::OsString,
    fs,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    Workspace,
    build::{self, Profile},
    causes,
    system::{self, Apt, say},
    toolchain,
};
use initramfs::Built;
use kernel::GuestKernel;
use report::Report;

/// Every line /init prints for us starts with this, so kernel messages and
/// test output in between cannot be mistaken for a result.
const MARK: &str = "RSTTRACE-VM:";
/// The whole guest run under software emulation (TCG): the cause tests wait
/// for real timers (SYN-ACK and keepalive retransmissions), so give room.
const DEFAULT_TIMEOUT_SECS: u64 = 1500;

/// `--suite short`: hook selection, one test per cause family (sent with and
/// without a socket, received, aborts by timeout and by ICMP), --btf.
pub const SHORT_SUITE: &[&str] = &[
    "each_usable_hook_family_sees_a_refused_connection",
    "port_not_open_and_peer_refused",
    "close_with_unread_data",
    "so_linger_zero",
    "data_after_close",
    "connect_timeout_is_joined_to_the_abandoned_connect",
    "icmp_errors_abort_a_connect",
    "keepalive_timeout_resets_a_silent_peer",
    "a_stray_ack_to_a_listener_is_an_invalid_packet",
    "btf_from_a_file_when_sysfs_has_none",
    "perf_transport_port_not_open_and_peer_refused",
    "perf_transport_close_with_unread_data",
    "perf_transport_counts_every_lost_event",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// Every integration test.
    Full,
    /// SHORT_SUITE.
    Short,
}

pub struct Options {
    /// Versions from `kernel::KERNELS`, in order.
    pub kernels: Vec<&'static GuestKernel>,
    pub suite: Suite,
    pub test_args: Vec<OsString>,
    /// Fetch the kernels and build the initramfs images, boot nothing.
    pub prepare_only: bool,
}

/// `--kernel 5.10|6.1|6.12|all` → the matrix entries.
pub fn parse_kernels(arg: &str) -> Result<Vec<&'static GuestKernel>> {
    if arg == "all" {
        return Ok(kernel::KERNELS.iter().collect());
    }
    arg.split(',')
        .map(|v| {
            GuestKernel::by_version(v.trim()).with_context(|| {
                let known: Vec<&str> = kernel::KERNELS.iter().map(|k| k.version).collect();
                format!(
                    "--kernel {v}: not in the matrix; use one of {} or all",
                    known.join(", ")
                )
            })
        })
        .collect()
}

pub fn vm_test(ws: &Workspace, opts: &Options) -> Result<()> {
    let started = Instant::now();
    let mut apt = Apt::new();
    ensure_host_tools(&mut apt)?;
    let vm_dir = ws.target_dir().join("vm");
    let guests = opts
        .kernels
        .iter()
        .map(|g| Ok((*g, kernel::fetch(&vm_dir, g)?)))
        .collect::<Result<Vec<_>>>()?;
    let built = build_tests(ws)?;
    let mut test_args = opts.test_args.clone();
    if opts.suite == Suite::Short {
        test_args.extend(SHORT_SUITE.iter().map(OsString::from));
        test_args.push("--exact".into());
    }
    let timeout = env::var("RSTTRACE_VM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(DEFAULT_TIMEOUT_SECS));

    let mut results: Vec<(String, Report)> = Vec::new();
    let mut failures = Vec::new();
    for (guest, kernel) in &guests {
        say!(
            "vm-test {}: {} ({})",
            guest.version,
            kernel.package,
            guest.why
        );
        let work_dir = vm_dir.join("results").join(guest.version);
        fs::create_dir_all(&work_dir)?;
        let image = initramfs::build(
            &work_dir,
            &ws.root.join("rsttrace/tests/stacks/close_unread.c"),
            &built,
            kernel,
            &initramfs::Run {
                test_args: &test_args,
                // Each program's verified instruction count, for the record:
                // both objects (the perf one is what kernels before 5.8
                // load, with the tracepoint family where BTF is missing).
                check_args: &["--verify", "--transport", "all"],
            },
        )?;
        if opts.prepare_only {
            say!("vm-test {}: prepared {}", guest.version, image.display());
            continue;
        }
        let boot_started = Instant::now();
        let tag = format!("vm {}", guest.version);
        // A guest that locks up (seen once in a few runs under TCG: a CPU
        // stuck in the kernel, RCU starved) says nothing about rsttrace; it
        // gets one more boot, announced loudly. A test failure is never retried.
        let serial = match qemu::boot(&kernel.vmlinuz, &image, timeout, &tag) {
            Err(e) if e.to_string().contains(qemu::GUEST_LOCKUP) => {
                say!("WARNING: {e:#}; booting the guest once more");
                qemu::boot(&kernel.vmlinuz, &image, timeout, &tag)
            }
            other => other,
        };
        let serial = match serial {
            Ok(s) => s,
            Err(e) => {
                say!("vm-test on {}: {e:#}", guest.version);
                failures.push(format!("{}: {e:#}", guest.version));
                continue;
            }
        };
        let seconds = boot_started.elapsed().as_secs_f64();
        let report = Report::parse(&serial);
        report.print(&kernel.package);
        say!(
            "vm-test {} ({:?} suite): boot and tests took {seconds:.1} s",
            guest.version,
            opts.suite
        );
        save(&work_dir, &report, seconds, opts.suite)?;
        if let Err(e) = report.verdict() {
            failures.push(format!("{}: {e:#}", guest.version));
        }
        results.push((
            report.kernel.clone().unwrap_or(kernel.release.clone()),
            report,
        ));
    }
    compare_with_host(ws, &results);
    say!(
        "vm-test: {} kernel(s) in {:.1} s",
        guests.len(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        bail!("vm-test failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// The run's record under target/vm/results/<version>/.
fn save(dir: &std::path::Path, report: &Report, seconds: f64, suite: Suite) -> Result<()> {
    let rows: String = report.causes.iter().map(|r| r.to_line() + "\n").collect();
    fs::write(dir.join("causes.tsv"), rows)?;
    fs::write(dir.join("check.txt"), &report.check)?;
    let mut summary = format!(
        "kernel\t{}\nsuite\t{suite:?}\nseconds\t{seconds:.0}\n",
        report.kernel.as_deref().unwrap_or("?")
    );
    for (test, result) in &report.tests {
        let result = if report.not_applicable.contains_key(test) {
            "n/a"
        } else {
            result
        };
        summary.push_str(&format!("test\t{test}\t{result}\n"));
    }
    for (test, why) in &report.not_applicable {
        summary.push_str(&format!("not_applicable\t{test}\t{why}\n"));
    }
    fs::write(dir.join("summary.txt"), summary)?;
    Ok(())
}

/// Puts the guests' causes next to those of the last host run
/// (`cargo xtask test` writes target/causes-host.tsv).
fn compare_with_host(ws: &Workspace, results: &[(String, Report)]) {
    let host_rows = causes::read(&ws.target_dir().join("causes-host.tsv"));
    let host = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut columns: Vec<(&str, &[causes::Row])> = Vec::new();
    if !host_rows.is_empty() {
        columns.push((host.trim(), &host_rows));
    }
    columns.extend(
        results
            .iter()
            .filter(|(_, r)| !r.causes.is_empty())
            .map(|(k, r)| (k.as_str(), r.causes.as_slice())),
    );
    if columns.len() > 1 {
        eprintln!();
        causes::print_comparison(&columns);
    }
}

fn ensure_host_tools(apt: &mut Apt) -> Result<()> {
    let needed = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("cpio", "cpio"),
        ("gzip", "gzip"),
        ("xz", "xz-utils"),
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
        // Without whole-program LTO: every test binary would get it.
        .envs(toolchain::HOST_ONLY_PROFILE)
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

/// `cargo xtask causes-doc`: docs/causes.md's cause × kernel × confidence
/// table from the last host run and the last VM run of each kernel.
pub fn causes_doc(ws: &Workspace) -> Result<PathBuf> {
    let results = ws.target_dir().join("vm/results");
    let mut columns = Vec::new();
    for guest in kernel::KERNELS {
        let dir = results.join(guest.version);
        let Ok(summary) = fs::read_to_string(dir.join("summary.txt")) else {
            say!(
                "no VM run of {} (target/vm/results/{0}): its column is left out",
                guest.version
            );
            continue;
        };
        let field = |name: &str| {
            summary
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('\t'))
                .unwrap_or("?")
                .to_string()
        };
        let count = |result: &str| {
            summary
                .lines()
                .filter(|l| l.starts_with("test\t") && l.ends_with(&format!("\t{result}")))
                .count()
        };
        let check = fs::read_to_string(dir.join("check.txt")).unwrap_or_default();
        columns.push(causes::Column {
            label: guest.version.to_string(),
            detail: format!(
                "{} in a VM, {} suite: {} passed, {} not applicable, {} failed",
                field("kernel"),
                field("suite").to_lowercase(),
                count("ok"),
                count("n/a"),
                count("FAILED")
            ),
            rows: causes::read(&dir.join("causes.tsv")),
            plan: plan_of(&check),
        });
    }
    let host_rows = causes::read(&ws.target_dir().join("causes-host.tsv"));
    if host_rows.is_empty() {
        say!(
            "no host run (target/causes-host.tsv, from `cargo xtask test`): its column is left out"
        );
    } else {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let major_minor: String = release
            .trim()
            .split('.')
            .take(2)
            .collect::<Vec<_>>()
            .join(".");
        columns.push(causes::Column {
            label: format!("{major_minor} (host)"),
            detail: format!("{} on the host, full suite", release.trim()),
            rows: host_rows,
            plan: None,
        });
    }
    if columns.is_empty() {
        bail!(
            "no test runs to tabulate: run `cargo xtask test` and `cargo xtask vm-test --kernel all` first"
        );
    }
    let doc_path = ws.root.join("docs/causes.md");
    let doc = fs::read_to_string(&doc_path)?;
    fs::write(
        &doc_path,
        causes::replace_table(&doc, &causes::markdown_table(&columns)),
    )?;
    Ok(doc_path)
}

/// The `plan:` line of `rsttrace check`.
fn plan_of(check: &str) -> Option<String> {
    check
        .lines()
        .find_map(|l| l.strip_prefix("plan: "))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_argument_names_matrix_entries() {
        let all: Vec<&str> = parse_kernels("all")
            .unwrap()
            .iter()
            .map(|k| k.version)
            .collect();
        assert_eq!(all, ["5.10", "6.1", "6.12"]);
        let two: Vec<&str> = parse_kernels("6.12,5.10")
            .unwrap()
            .iter()
            .map(|k| k.version)
            .collect();
        assert_eq!(two, ["6.12", "5.10"]);
        let err = parse_kernels("4.19").unwrap_err().to_string();
        assert!(err.contains("5.10, 6.1, 6.12"), "{err}");
    }
    /// `--exact` runs a renamed test nowhere and says nothing: every name of
    /// the short suite must be a test of rsttrace/tests.
    #[test]
    fn the_short_suite_names_existing_tests() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rsttrace/tests");
        let sources: String = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .map(|p| fs::read_to_string(p).unwrap())
            .collect();
        for name in SHORT_SUITE {
            assert!(
                sources.contains(&format!("#[test]\nfn {name}() {{")),
                "the short suite runs {name}, which is no test in {}",
                dir.display()
            );
        }
    }
}
