//! Finding and preparing the toolchain that builds the eBPF object.
//!
//! `bpfel-unknown-none` ships no prebuilt `core`, so the compiler must come
//! with the standard library sources (`-Z build-std=core`). bpf-linker must
//! link the same LLVM major as that compiler's: a mismatch installs fine and
//! then fails at link time (`Invalid record`, bogus `memset is not supported`).
//!
//! rustup's download server is not reachable in CI, so `rustup component add
//! rust-src` is not an option there; Debian's rustc-web + rust-web-src are.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    Workspace,
    system::{self, Apt, capture, say},
};

pub const BPF_TARGET: &str = "bpfel-unknown-none";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The LLVM majors bpf-linker 0.13.0 has a feature (`llvm-<major>`) for.
const BPF_LINKER_LLVM: [u32; 3] = [21, 22, 23];
/// Debian's compiler with its library sources; needs RUSTC_BOOTSTRAP=1 for -Z.
const DEBIAN_ORIGIN: &str = "Debian";
const DEBIAN_RUST: [&str; 3] = ["rustc-web", "cargo-web", "rust-web-src"];
/// LLVM major of Debian bookworm's rustc-web, for the manual instructions only.
const DEBIAN_RUST_LLVM: u32 = 22;

/// A compiler able to build `core` for the BPF target, and the cargo to drive it.
pub struct BpfToolchain {
    rustc: PathBuf,
    cargo: PathBuf,
    /// Where it came from and its version, for messages.
    description: String,
    tools_bin: PathBuf,
}

impl BpfToolchain {
    /// `cargo <args>` set up for the BPF target: this toolchain's rustc,
    /// bpf-linker on PATH, and the target's rustflags.
    pub fn cargo(&self, ws: &Workspace) -> Command {
        let mut cmd = Command::new(&self.cargo);
        self.configure(ws, &mut cmd);
        cmd
    }

    /// The toolchain's own `cargo-clippy`, if it has clippy. Run directly
    /// rather than as `cargo clippy`, whose subcommand lookup can land on
    /// rustup's proxy in ~/.cargo/bin and so on a source-less toolchain.
    pub fn cargo_clippy(&self, ws: &Workspace) -> Option<Command> {
        let bin = self.bin_dir();
        if !bin.join("cargo-clippy").is_file() || !bin.join("clippy-driver").is_file() {
            return None;
        }
        let mut cmd = Command::new(bin.join("cargo-clippy"));
        cmd.arg("clippy").env("CARGO", &self.cargo);
        self.configure(ws, &mut cmd);
        Some(cmd)
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    fn bin_dir(&self) -> &Path {
        self.rustc.parent().unwrap_or(Path::new("/usr/bin"))
    }

    fn configure(&self, ws: &Workspace, cmd: &mut Command) {
        let mut path = vec![self.tools_bin.clone(), self.bin_dir().to_path_buf()];
        path.extend(env::var_os("PATH").iter().flat_map(env::split_paths));
        let flags = [
            // aya-ebpf's helpers differ per architecture (pt_regs layout).
            format!("--cfg=bpf_target_arch=\"{}\"", env::consts::ARCH),
            "-Cdebuginfo=2".into(),
            // BTF for the loader, and readable verifier logs.
            "-Clink-arg=--btf".into(),
        ];
        cmd.current_dir(&ws.root)
            // Host settings must not leak into the BPF build: RUSTUP_TOOLCHAIN
            // (set by rustup for xtask) would redirect the rustup proxies.
            .env_remove("RUSTFLAGS")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env(
                "PATH",
                env::join_paths(path).expect("PATH entries contain no ':'"),
            )
            .env("RUSTC", &self.rustc)
            // -Z build-std on a stable-channel (Debian) compiler and cargo.
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
    }
}

/// Ensures the BPF toolchain: a compiler with library sources, the LLVM
/// development files of its LLVM major, and bpf-linker built against them.
/// When everything is in place this only probes (well under a second).
pub fn setup(ws: &Workspace) -> Result<BpfToolchain> {
    let mut apt = Apt::new();
    let mut tried = Vec::new();
    let compiler = match find_compiler(&mut tried)? {
        // A machine image may carry an older rustc-web whose LLVM bpf-linker
        // no longer supports; the security suite has a newer one.
        Some(compiler)
            if compiler.is_debian()
                && !BPF_LINKER_LLVM.contains(&compiler.llvm_major)
                && Apt::usable() =>
        {
            say!(
                "{} uses LLVM {}; upgrading Debian's compiler",
                compiler.description,
                compiler.llvm_major
            );
            apt.update()?;
            apt.install(&DEBIAN_RUST)?;
            debian_compiler()
                .map_err(anyhow::Error::msg)
                .context("after upgrading rustc-web")?
        }
        Some(compiler) => compiler,
        None if Apt::usable() => {
            say!(
                "no compiler with library sources ({}); installing Debian's",
                tried.join("; ")
            );
            apt.install(&DEBIAN_RUST)?;
            debian_compiler()
                .map_err(anyhow::Error::msg)
                .context("after installing rustc-web")?
        }
        None => bail!(missing_compiler_help(&tried)),
    };
    say!(
        "BPF compiler: {} (LLVM {})",
        compiler.description,
        compiler.llvm_major
    );

    let llvm = compiler.llvm_major;
    if !BPF_LINKER_LLVM.contains(&llvm) {
        bail!(
            "{} uses LLVM {llvm}, but bpf-linker {BPF_LINKER_VERSION} supports only LLVM {:?}; \
             choose another compiler with RSTTRACE_BPF_RUSTC",
            compiler.description,
            BPF_LINKER_LLVM
        );
    }
    ensure_llvm_dev(&mut apt, llvm)?;
    ensure_bpf_linker(ws, llvm)?;

    Ok(BpfToolchain {
        rustc: compiler.rustc,
        cargo: compiler.cargo,
        description: compiler.description,
        tools_bin: ws.tools_dir().join("bin"),
    })
}

struct Compiler {
    rustc: PathBuf,
    cargo: PathBuf,
    description: String,
    llvm_major: u32,
}

impl Compiler {
    fn is_debian(&self) -> bool {
        self.description.starts_with(DEBIAN_ORIGIN)
    }
}

/// The search order: explicit override, rustup nightly with rust-src (a
/// developer laptop), Debian's packaged compiler (CI). Each miss is recorded
/// in `tried` for the error message.
fn find_compiler(tried: &mut Vec<String>) -> Result<Option<Compiler>> {
    if let Some(rustc) = env::var_os("RSTTRACE_BPF_RUSTC") {
        // An explicit choice that does not work is an error, not a fallback.
        let rustc = PathBuf::from(&rustc);
        let rustc = if rustc.components().count() == 1 {
            system::which(&rustc.to_string_lossy()).unwrap_or(rustc)
        } else {
            rustc
        };
        let sibling = rustc.with_file_name("cargo");
        let cargo = if sibling.is_file() {
            sibling
        } else {
            "/usr/bin/cargo".into()
        };
        return probe("RSTTRACE_BPF_RUSTC", &rustc, &cargo)
            .map(Some)
            .map_err(|why| anyhow::anyhow!("RSTTRACE_BPF_RUSTC={}: {why}", rustc.display()));
    }
    tried.push("RSTTRACE_BPF_RUSTC: not set".into());

    match rustup_nightly() {
        Ok(compiler) => return Ok(Some(compiler)),
        Err(why) => tried.push(format!("rustup nightly: {why}")),
    }
    match debian_compiler() {
        Ok(compiler) => return Ok(Some(compiler)),
        Err(why) => tried.push(format!("/usr/bin/rustc: {why}")),
    }
    Ok(None)
}

fn rustup_nightly() -> Result<Compiler, String> {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "rustc", "--print", "sysroot"])
        .env_remove("RUSTUP_TOOLCHAIN")
        // A probe must never start a toolchain download.
        .env("RUSTUP_AUTO_INSTALL", "0");
    let sysroot = capture(&mut cmd).ok_or("not installed")?;
    let bin = Path::new(sysroot.trim()).join("bin");
    probe("rustup nightly", &bin.join("rustc"), &bin.join("cargo")).map_err(|why| {
        format!("{why} (rust-src: `rustup component add rust-src --toolchain nightly`)")
    })
}

fn debian_compiler() -> Result<Compiler, String> {
    let rustc = Path::new("/usr/bin/rustc");
    if !rustc.is_file() {
        return Err("not installed".into());
    }
    probe(DEBIAN_ORIGIN, rustc, Path::new("/usr/bin/cargo"))
}

/// Checks that `rustc` has the library sources build-std needs, and reads its
/// version and LLVM major.
fn probe(origin: &str, rustc: &Path, cargo: &Path) -> Result<Compiler, String> {
    let sysroot = capture(Command::new(rustc).args(["--print", "sysroot"]))
        .ok_or_else(|| format!("`{} --print sysroot` failed", rustc.display()))?;
    let library = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library");
    if !library.is_dir() {
        return Err(format!("no library sources at {}", library.display()));
    }
    if !cargo.is_file() {
        return Err(format!("no cargo at {}", cargo.display()));
    }
    let version = capture(Command::new(rustc).arg("-vV"))
        .ok_or_else(|| format!("`{} -vV` failed", rustc.display()))?;
    let llvm_major = llvm_major(&version)
        .ok_or_else(|| format!("`{} -vV` names no LLVM version", rustc.display()))?;
    let release = version
        .lines()
        .find_map(|l| l.strip_prefix("release: "))
        .unwrap_or("?");
    Ok(Compiler {
        rustc: rustc.to_path_buf(),
        cargo: cargo.to_path_buf(),
        description: format!("{origin} rustc {release} ({})", rustc.display()),
        llvm_major,
    })
}

/// The major of `LLVM version: 22.1.8` in `rustc -vV`.
fn llvm_major(version: &str) -> Option<u32> {
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))?;
    llvm.trim().split('.').next()?.parse().ok()
}

fn missing_compiler_help(tried: &[String]) -> String {
    let debian = DEBIAN_RUST.join(" ");
    format!(
        "no toolchain can build `core` for {BPF_TARGET} (tried: {}).\n\
         Install Debian's compiler with its library sources, as root, then rerun:\n    \
         apt-get update\n    \
         apt-get install -y --no-install-recommends {debian} llvm-{DEBIAN_RUST_LLVM}-dev\n\
         (or `rustup component add rust-src --toolchain nightly` where rustup's server is \
         reachable, or set RSTTRACE_BPF_RUSTC to a rustc whose sysroot has \
         lib/rustlib/src/rust/library)",
        tried.join("; ")
    )
}

/// bpf-linker's llvm-sys needs `llvm-config` of exactly this major.
fn ensure_llvm_dev(apt: &mut Apt, llvm: u32) -> Result<()> {
    let prefix = llvm_prefix(llvm);
    if prefix.join("bin/llvm-config").is_file() {
        return Ok(());
    }
    let package = format!("llvm-{llvm}-dev");
    if !Apt::usable() {
        bail!(
            "bpf-linker needs LLVM {llvm} development files ({} is missing). As root, run:\n    \
             apt-get update\n    apt-get install -y --no-install-recommends {package}",
            prefix.join("bin/llvm-config").display()
        );
    }
    apt.install(&[&package])?;
    if !prefix.join("bin/llvm-config").is_file() {
        bail!(
            "{package} installed, but {} is still missing",
            prefix.join("bin/llvm-config").display()
        );
    }
    Ok(())
}

fn llvm_prefix(llvm: u32) -> PathBuf {
    PathBuf::from(format!("/usr/lib/llvm-{llvm}"))
}

/// Installs bpf-linker into target/tools unless the stamp says the installed
/// one was built for this LLVM major.
fn ensure_bpf_linker(ws: &Workspace, llvm: u32) -> Result<()> {
    let tools = ws.tools_dir();
    let binary = tools.join("bin/bpf-linker");
    let stamp = tools.join("bpf-linker.stamp");
    let wanted = format!("{BPF_LINKER_VERSION} llvm-{llvm}");
    let current = fs::read_to_string(&stamp).ok();
    if current.as_deref().map(str::trim) == Some(wanted.as_str()) && binary.is_file() {
        say!("bpf-linker {wanted}: up to date ({})", binary.display());
        return Ok(());
    }

    say!(
        "installing bpf-linker {wanted} into {} (a minute or two)",
        tools.display()
    );
    let mut install = system::host_cargo();
    install
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm}"),
        ])
        .arg("--root")
        .arg(&tools)
        // Without it llvm-sys finds /usr/bin/llvm-config, an older LLVM.
        .env("LLVM_PREFIX", llvm_prefix(llvm))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR");
    // A stamp for another LLVM (or a lost binary) means cargo's own record of
    // the install cannot be trusted to trigger a rebuild.
    if current.is_some() || !binary.is_file() {
        install.arg("--force");
    }
    system::run(&mut install)?;
    fs::write(&stamp, format!("{wanted}\n")).with_context(|| format!("writing {}", stamp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llvm_major() {
        let debian = "rustc 1.96.0 (ac68faa20 2026-05-25)\nhost: x86_64-unknown-linux-gnu\n\
                      release: 1.96.0\nLLVM version: 22.1.8\n";
        assert_eq!(llvm_major(debian), Some(22));
        assert_eq!(llvm_major("rustc 1.0.0\n"), None);
    }
}
