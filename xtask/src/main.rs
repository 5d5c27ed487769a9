//! `cargo xtask <command>`: the developer tasks of rsttrace.
//!
//! The eBPF object needs a different toolchain from the rest of the workspace
//! (bpfel-unknown-none, `-Z build-std=core`, bpf-linker), so building, running
//! and testing rsttrace go through here rather than through plain cargo.

mod bench;
mod build;
mod causes;
mod dist;
mod frames;
mod lint;
mod run;
mod soak;
mod system;
mod test;
mod toolchain;
mod vm;

use std::{env, ffi::OsString, path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for rsttrace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Find or install the BPF toolchain (rustc with library sources, LLVM,
    /// bpf-linker). Idempotent; does nothing when all is in place.
    Setup,
    /// Set up, then build the eBPF object and print its path.
    BuildEbpf {
        /// Build the dev profile instead of release.
        #[arg(long)]
        debug: bool,
    },
    /// Build the eBPF object, then rsttrace with it embedded; print the binary path.
    Build {
        /// Build rsttrace in release mode.
        #[arg(long)]
        release: bool,
    },
    /// Build, then run rsttrace as root (through `sudo -E` when not root).
    Run {
        /// Run the release build.
        #[arg(long)]
        release: bool,
        /// Arguments for rsttrace, after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Lint, set up, build the eBPF object and run every test (needs root for
    /// the kernel tests).
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for the workspace `cargo test`, after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Clippy (-D warnings) on the host crates and on the eBPF crate for its target.
    Clippy,
    /// Write the man page generated from the CLI definition to target/man/rsttrace.1.
    Man,
    /// Build one static x86_64 binary with the eBPF object embedded, to copy
    /// to production hosts: target/dist/rsttrace-x86_64-linux.
    Dist,
    /// Measure the cost of tracing on healthy traffic (TCP_RR, TCP_CRR) and
    /// under a loopback RST storm, and each kernel program's cost (ratios
    /// from one interleaved run; needs root).
    Bench {
        /// Seconds per scenario per round.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds of all scenarios, interleaved.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// The CI check: one round of 2 s with one storm thread; fails only
        /// if rsttrace lost events or missed RSTs, never on timings.
        #[arg(long, conflicts_with_all = ["seconds", "rounds"])]
        short: bool,
        /// Another rsttrace binary (e.g. a copy of main's) to run interleaved
        /// with this build, to compare the two on a busy machine.
        #[arg(long, value_name = "RSTTRACE")]
        baseline: Option<PathBuf>,
        /// Only these workloads (repeatable; default: all).
        #[arg(long = "workload", value_enum)]
        workloads: Vec<bench::Workload>,
    },
    /// Run rsttrace for a long time (default 30 min) with --stack, --metrics
    /// and a rotating -w under mixed traffic and a pid-churning process;
    /// report RSS over time, lost events and counters (not in CI; needs
    /// root and python3). Writes target/soak/results.md.
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// Soak the release build.
        #[arg(long)]
        release: bool,
        /// Soak this rsttrace binary instead of building one (e.g. a copy,
        /// so the tree can change while the soak waits for its turn).
        #[arg(long, value_name = "RSTTRACE")]
        binary: Option<PathBuf>,
    },
    /// Run the kernel integration tests on Debian's 5.10, 6.1 and 6.12 cloud
    /// kernels under qemu (TCG): fetches and caches each kernel under
    /// target/vm/ (a private apt configuration; needs root). Set
    /// RSTTRACE_VM_TIMEOUT (seconds per guest, default 1500) to bound it.
    VmTest {
        /// Which kernels: 5.10, 6.1, 6.12 (comma-separated) or all.
        #[arg(long, default_value = "6.1")]
        kernel: String,
        /// full: every integration test; short: hook selection, one test
        /// per cause family and --btf.
        #[arg(long, value_enum, default_value = "full")]
        suite: vm::Suite,
        /// Fetch the kernels and build each guest's initramfs, boot nothing
        /// (no qemu: needs no time on the shared machine's heavy lock).
        #[arg(long)]
        prepare_only: bool,
        /// Arguments for the test binaries in the guest (libtest), after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Write docs/causes.md's cause × kernel × confidence table from the last
    /// `cargo xtask test` and `cargo xtask vm-test` runs.
    CausesDoc,
}

/// Paths of the workspace this xtask belongs to.
pub struct Workspace {
    pub root: PathBuf,
}

impl Workspace {
    fn locate() -> Self {
        // `cargo run` sets CARGO_MANIFEST_DIR at run time; the compile-time value
        // is the fallback for running target/debug/xtask directly.
        let manifest = env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest.parent().map(PathBuf::from).unwrap_or(manifest);
        Self { root }
    }

    /// Host build output (honours CARGO_TARGET_DIR like cargo does).
    pub fn target_dir(&self) -> PathBuf {
        match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => self.root.join(dir),
            None => self.root.join("target"),
        }
    }

    /// Tools built for this workspace (bpf-linker), kept out of ~/.cargo.
    pub fn tools_dir(&self) -> PathBuf {
        self.root.join("target/tools")
    }

    /// The BPF build has its own target dir so it never shares (and
    /// invalidates) the host build's cache.
    pub fn bpf_target_dir(&self) -> PathBuf {
        self.root.join("target/bpf")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command, &Workspace::locate()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes; a backtrace of xtask helps nobody.
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command, ws: &Workspace) -> Result<()> {
    match command {
        Command::Setup => toolchain::setup(ws).map(drop),
        Command::BuildEbpf { debug } => {
            let toolchain = toolchain::setup(ws)?;
            let profile = if debug {
                build::Profile::Debug
            } else {
                build::Profile::Release
            };
            let object = build::ebpf(ws, &toolchain, profile)?;
            println!("{}", object.display());
            Ok(())
        }
        Command::Build { release } => {
            let binary = build::all(ws, build::Profile::from_release(release))?;
            println!("{}", binary.display());
            Ok(())
        }
        Command::Run { release, args } => {
            run::run(ws, build::Profile::from_release(release), &args)
        }
        Command::Test { no_lint, args } => test::test(ws, !no_lint, &args),
        Command::Clippy => lint::clippy(ws),
        Command::Dist => dist::dist(ws).map(|path| println!("{}", path.display())),
        Command::Man => {
            let binary = build::all(ws, build::Profile::Debug)?;
            let out = std::process::Command::new(binary).arg("man").output()?;
            anyhow::ensure!(out.status.success(), "rsttrace man failed");
            let dir = ws.target_dir().join("man");
            std::fs::create_dir_all(&dir)?;
            let page = dir.join("rsttrace.1");
            std::fs::write(&page, out.stdout)?;
            println!("{}", page.display());
            Ok(())
        }
        Command::Bench {
            seconds,
            rounds,
            short,
            baseline,
            workloads,
        } => {
            let (seconds, rounds) = if short { (2, 1) } else { (seconds, rounds) };
            let opts = bench::Options {
                seconds,
                rounds,
                short,
                baseline,
                workloads,
            };
            bench::bench(ws, &opts)
        }
        Command::CausesDoc => {
            println!("{}", vm::causes_doc(ws)?.display());
            Ok(())
        }
        Command::VmTest {
            kernel,
            suite,
            prepare_only,
            args,
        } => vm::vm_test(
            ws,
            &vm::Options {
                kernels: vm::parse_kernels(&kernel)?,
                suite,
                test_args: args,
                prepare_only,
            },
        ),
        Command::Soak {
            minutes,
            release,
            binary,
        } => soak::soak(
            ws,
            &soak::Options {
                minutes,
                release,
                binary,
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_after_double_dash_go_to_rsttrace() {
        let cli = Cli::try_parse_from(["xtask", "run", "--release", "--", "--help", "-v"]).unwrap();
        let Command::Run { release, args } = cli.command else {
            panic!("not run")
        };
        assert!(release);
        assert_eq!(args, ["--help", "-v"]);
    }

    #[test]
    fn test_flags() {
        let cli = Cli::try_parse_from(["xtask", "test", "--no-lint", "--", "probes"]).unwrap();
        let Command::Test { no_lint, args } = cli.command else {
            panic!("not test")
        };
        assert!(no_lint);
        assert_eq!(args, ["probes"]);
    }
}
