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

/// Cargo settings that undo the release profile's LTO and single codegen
/// unit (Cargo.toml), which only the shipped rsttrace binary needs.
pub const HOST_ONLY_PROFILE: [(&str, &str); 2] = [
    ("CARGO_PROFILE_RELEASE_LTO", "false"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
];

/// A compiler able to build `core` for the BPF target, and the cargo to drive it.
pub struct BpfToolchain {
    rustc: PathBuf,
    cargo: PathBuf,
    /// Where it came from and its version, for messages.
    description: String,
    tools_bin: PathBuf,
    /// The LLVM of bpf-linker's major (llvm-<major>-dev brings its tools).
    llvm_bin: PathBuf,
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

    /// `llvm-objcopy` of the LLVM that links the object.
    pub fn objcopy(&self) -> Command {
        Command::new(self.llvm_bin.join("llvm-objcopy"))
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
            // The workspace's release profile (LTO, one codegen unit) is
            // for the host binary: the object keeps cargo's defaults.
            .envs(HOST_ONLY_PROFILE)
            .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
    }
}

/// Ensures the BPF toolchain: a compiler with library sources, the LLVM
/// development files of its LLVM major, and bpf-linker built against them.
/// When everything is in place this only probes (well under a second).
pub fn setup(ws: &Workspace) -> Result<BpfToolchain> {
    let mut host = Host::this_machine();
    let compiler = choose_compiler(&mut host)?;
    say!(
        "BPF compiler: {} (LLVM {})",
        compiler.description,
        compiler.llvm_major
    );
    let llvm = compiler.llvm_major;
    ensure_llvm_dev(&mut host.apt, llvm)?;
    ensure_bpf_linker(ws, llvm)?;

    Ok(BpfToolchain {
        rustc: compiler.rustc,
        cargo: compiler.cargo,
        description: compiler.description,
        tools_bin: ws.tools_dir().join("bin"),
        llvm_bin: llvm_prefix(llvm).join("bin"),
    })
}

/// Where the set-up looks for compilers and how it installs them. The tests
/// put fake programs here.
struct Host {
    /// None where apt cannot be used without asking anyone.
    apt: Option<Apt>,
    rustup: PathBuf,
    debian_rustc: PathBuf,
    debian_cargo: PathBuf,
    /// RSTTRACE_BPF_RUSTC.
    explicit_rustc: Option<PathBuf>,
    distro: Distro,
}

impl Host {
    fn this_machine() -> Self {
        Self {
            apt: Apt::usable().then(Apt::new),
            rustup: "rustup".into(),
            debian_rustc: "/usr/bin/rustc".into(),
            debian_cargo: "/usr/bin/cargo".into(),
            explicit_rustc: env::var_os("RSTTRACE_BPF_RUSTC").map(PathBuf::from),
            distro: Distro::read(),
        }
    }
}

/// The compiler the BPF object will be built with, installing or upgrading
/// Debian's when none usable is found and apt can be used.
fn choose_compiler(host: &mut Host) -> Result<Compiler> {
    let mut tried = Vec::new();
    let found = find_compiler(host, &mut tried)?;
    let compiler = match (found, &mut host.apt) {
        // An older rustc-web (installed from stale lists, or by a machine
        // image) whose LLVM bpf-linker does not support: the registry's
        // newest may be usable.
        (Some(compiler), Some(apt))
            if compiler.is_debian() && !BPF_LINKER_LLVM.contains(&compiler.llvm_major) =>
        {
            say!(
                "{} uses LLVM {}; upgrading Debian's compiler",
                compiler.description,
                compiler.llvm_major
            );
            apt.install(&DEBIAN_RUST)?;
            debian_compiler(host)
                .map_err(anyhow::Error::msg)
                .context("after upgrading rustc-web")?
        }
        (Some(compiler), _) => compiler,
        (None, Some(apt)) => {
            say!(
                "no compiler with library sources ({}); installing Debian's",
                tried.join("; ")
            );
            apt.install(&DEBIAN_RUST)?;
            debian_compiler(host)
                .map_err(anyhow::Error::msg)
                .context("after installing rustc-web")?
        }
        (None, None) => bail!(missing_compiler_help(&tried, &host.distro)),
    };
    if !BPF_LINKER_LLVM.contains(&compiler.llvm_major) {
        bail!(unusable_compiler_help(&compiler, &host.distro));
    }
    Ok(compiler)
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
fn find_compiler(host: &Host, tried: &mut Vec<String>) -> Result<Option<Compiler>> {
    if let Some(rustc) = &host.explicit_rustc {
        // An explicit choice that does not work is an error, not a fallback.
        let rustc = if rustc.components().count() == 1 {
            system::which(&rustc.to_string_lossy()).unwrap_or_else(|| rustc.clone())
        } else {
            rustc.clone()
        };
        let sibling = rustc.with_file_name("cargo");
        let cargo = if sibling.is_file() {
            sibling
        } else {
            host.debian_cargo.clone()
        };
        return probe("RSTTRACE_BPF_RUSTC", &rustc, &cargo)
            .map(Some)
            .map_err(|why| anyhow::anyhow!("RSTTRACE_BPF_RUSTC={}: {why}", rustc.display()));
    }
    tried.push("RSTTRACE_BPF_RUSTC: not set".into());

    match rustup_nightly(host) {
        Ok(compiler) => return Ok(Some(compiler)),
        Err(why) => tried.push(format!("rustup nightly: {why}")),
    }
    match debian_compiler(host) {
        Ok(compiler) => return Ok(Some(compiler)),
        Err(why) => tried.push(format!("{}: {why}", host.debian_rustc.display())),
    }
    Ok(None)
}

fn rustup_nightly(host: &Host) -> Result<Compiler, String> {
    let mut cmd = Command::new(&host.rustup);
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

fn debian_compiler(host: &Host) -> Result<Compiler, String> {
    if !host.debian_rustc.is_file() {
        return Err("not installed".into());
    }
    probe(DEBIAN_ORIGIN, &host.debian_rustc, &host.debian_cargo)
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

/// The distribution, from /etc/os-release, for instructions that fit it.
#[derive(Clone, Debug, Default, PartialEq)]
struct Distro {
    /// `ID` and `ID_LIKE`, e.g. ["ubuntu", "debian"].
    ids: Vec<String>,
    /// `VERSION_CODENAME`, e.g. "bookworm".
    codename: String,
}

impl Distro {
    fn read() -> Self {
        Self::parse(&fs::read_to_string("/etc/os-release").unwrap_or_default())
    }

    fn parse(os_release: &str) -> Self {
        let value = |key: &str| {
            os_release
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        let mut ids = vec![value("ID")];
        ids.extend(value("ID_LIKE").split_whitespace().map(String::from));
        ids.retain(|id| !id.is_empty());
        Self {
            ids,
            codename: value("VERSION_CODENAME"),
        }
    }

    fn is(&self, id: &str) -> bool {
        self.ids.iter().any(|i| i == id)
    }

    /// What to run on this distribution to get a compiler bpf-linker can use.
    fn fix(&self) -> String {
        let debian = DEBIAN_RUST.join(" ");
        let llvm = DEBIAN_RUST_LLVM;
        let rustup = format!(
            "install a rustup nightly with its library sources:\n    \
             rustup toolchain install nightly --component rust-src\n\
             then, as root, the LLVM development files of that nightly's LLVM major (`rustc \
             +nightly -vV` names it; bpf-linker {BPF_LINKER_VERSION} supports {BPF_LINKER_LLVM:?}):\n    \
             apt-get install -y --no-install-recommends llvm-<major>-dev\n\
             (apt.llvm.org packages the majors a release lacks)"
        );
        if self.is("debian") && self.codename == "bookworm" {
            format!(
                "On Debian 12 (bookworm), bookworm-security ships {debian} with LLVM {llvm}. \
                 Make sure bookworm-security is in /etc/apt/sources.list(.d), then, as root:\n    \
                 apt-get update\n    \
                 apt-get install -y --no-install-recommends {debian} llvm-{llvm}-dev\n\
                 Or {rustup}"
            )
        } else if self.is("debian") || self.is("ubuntu") {
            let name = self.ids.first().map_or("this distribution", String::as_str);
            format!(
                "This release of {name} packages no rustc with library sources and an LLVM \
                 bpf-linker supports, so {rustup}"
            )
        } else {
            format!("On this distribution, {rustup}")
        }
    }
}

fn missing_compiler_help(tried: &[String], distro: &Distro) -> String {
    format!(
        "no toolchain can build `core` for {BPF_TARGET} (tried: {}).\n{}\n\
         Or set RSTTRACE_BPF_RUSTC to a rustc whose sysroot has lib/rustlib/src/rust/library.",
        tried.join("; "),
        distro.fix()
    )
}

fn unusable_compiler_help(compiler: &Compiler, distro: &Distro) -> String {
    format!(
        "{} uses LLVM {}, but bpf-linker {BPF_LINKER_VERSION} supports only LLVM {:?}.\n{}\n\
         Or set RSTTRACE_BPF_RUSTC to a rustc with library sources and one of those LLVMs.",
        compiler.description,
        compiler.llvm_major,
        BPF_LINKER_LLVM,
        distro.fix()
    )
}

/// bpf-linker's llvm-sys needs `llvm-config` of exactly this major.
fn ensure_llvm_dev(apt: &mut Option<Apt>, llvm: u32) -> Result<()> {
    let prefix = llvm_prefix(llvm);
    if prefix.join("bin/llvm-config").is_file() {
        return Ok(());
    }
    let package = format!("llvm-{llvm}-dev");
    let Some(apt) = apt else {
        bail!(
            "bpf-linker needs LLVM {llvm} development files ({} is missing). As root, run:\n    \
             apt-get update\n    apt-get install -y --no-install-recommends {package}",
            prefix.join("bin/llvm-config").display()
        );
    };
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
    use std::{os::unix::fs::PermissionsExt, sync::Mutex};

    use super::*;

    #[test]
    fn reads_llvm_major() {
        let debian = "rustc 1.96.0 (ac68faa20 2026-05-25)\nhost: x86_64-unknown-linux-gnu\n\
                      release: 1.96.0\nLLVM version: 22.1.8\n";
        assert_eq!(llvm_major(debian), Some(22));
        assert_eq!(llvm_major("rustc 1.0.0\n"), None);
    }

    /// Writing a script and running another at once from two test threads can
    /// fail with ETXTBSY (a forked child holds the first one open for writing).
    static FAKES: Mutex<()> = Mutex::new(());

    const BOOKWORM: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n\
                            VERSION_CODENAME=bookworm\n";
    const UBUNTU: &str = "ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n";

    /// A machine of fake programs: `apt-get` whose stale lists offer rustc-web
    /// 1.85 (LLVM 19) until `update` brings 1.96 (LLVM 22), `rustc`s of both
    /// kinds, and an optional rustup nightly. Every apt-get call is logged.
    struct FakeMachine {
        dir: PathBuf,
    }

    impl FakeMachine {
        fn new(name: &str) -> Self {
            let dir = env::temp_dir().join(format!("xtask-setup-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("usr/bin")).unwrap();
            let machine = Self { dir };
            // The compilers apt would unpack, with their library sources.
            machine.compiler("rustc-1.85", "1.85.0", 19, "sysroot-old");
            machine.compiler("rustc-1.96", "1.96.0", 22, "sysroot-new");
            machine.script(
                "apt-get",
                &format!(
                    "echo \"$*\" >> {dir}/apt.log\n\
                     case \"$1\" in\n\
                     update) [ -e {dir}/registry-stale ] || touch {dir}/updated ;;\n\
                     install) if [ -e {dir}/updated ]; then v=1.96; else v=1.85; fi\n\
                     \x20 cp {dir}/rustc-$v {dir}/usr/bin/rustc; touch {dir}/usr/bin/cargo ;;\n\
                     esac",
                    dir = machine.dir.display()
                ),
            );
            machine
        }

        fn script(&self, name: &str, body: &str) -> PathBuf {
            let path = self.dir.join(name);
            fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            path
        }

        fn compiler(&self, name: &str, release: &str, llvm: u32, sysroot: &str) -> PathBuf {
            let sysroot = self.dir.join(sysroot);
            fs::create_dir_all(sysroot.join("lib/rustlib/src/rust/library")).unwrap();
            fs::create_dir_all(sysroot.join("bin")).unwrap();
            fs::write(sysroot.join("bin/cargo"), "").unwrap();
            self.script(
                name,
                &format!(
                    "case \"$1\" in\n\
                     --print) echo {} ;;\n\
                     -vV) printf 'rustc {release}\\nrelease: {release}\\nLLVM version: {llvm}.1.0\\n' ;;\n\
                     esac",
                    sysroot.display()
                ),
            )
        }

        /// A rustup whose nightly's sysroot is `sysroot` (with or without
        /// library sources).
        fn rustup_nightly(&self, llvm: u32, with_sources: bool) {
            let rustc = self.compiler("nightly-rustc", "1.97.0-nightly", llvm, "nightly");
            fs::copy(&rustc, self.dir.join("nightly/bin/rustc")).unwrap();
            if !with_sources {
                fs::remove_dir_all(self.dir.join("nightly/lib/rustlib/src")).unwrap();
            }
            self.script(
                "rustup",
                &format!("echo {}", self.dir.join("nightly").display()),
            );
        }

        fn host(&self, apt: bool, os_release: &str) -> Host {
            Host {
                apt: apt.then(|| Apt::with_program(self.dir.join("apt-get"))),
                rustup: self.dir.join("rustup"),
                debian_rustc: self.dir.join("usr/bin/rustc"),
                debian_cargo: self.dir.join("usr/bin/cargo"),
                explicit_rustc: None,
                distro: Distro::parse(os_release),
            }
        }

        fn apt_calls(&self) -> Vec<String> {
            fs::read_to_string(self.dir.join("apt.log"))
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect()
        }
    }

    impl Drop for FakeMachine {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    const INSTALL_RUST: &str =
        "install -y --no-install-recommends rustc-web cargo-web rust-web-src";

    #[test]
    fn stale_lists_are_refreshed_before_the_first_install() {
        let _serial = FAKES.lock().unwrap_or_else(|e| e.into_inner());
        let machine = FakeMachine::new("stale");
        let compiler = choose_compiler(&mut machine.host(true, BOOKWORM)).unwrap();
        assert_eq!(compiler.llvm_major, 22, "{}", compiler.description);
        assert_eq!(machine.apt_calls(), ["update", INSTALL_RUST]);
    }

    #[test]
    fn an_installed_old_compiler_is_upgraded_from_fresh_lists() {
        let _serial = FAKES.lock().unwrap_or_else(|e| e.into_inner());
        let machine = FakeMachine::new("upgrade");
        fs::copy(
            machine.dir.join("rustc-1.85"),
            machine.dir.join("usr/bin/rustc"),
        )
        .unwrap();
        fs::write(machine.dir.join("usr/bin/cargo"), "").unwrap();
        let compiler = choose_compiler(&mut machine.host(true, BOOKWORM)).unwrap();
        assert_eq!(compiler.llvm_major, 22);
        assert_eq!(machine.apt_calls(), ["update", INSTALL_RUST]);
    }

    #[test]
    fn a_rustup_nightly_with_sources_needs_no_apt() {
        let _serial = FAKES.lock().unwrap_or_else(|e| e.into_inner());
        let machine = FakeMachine::new("nightly");
        machine.rustup_nightly(22, true);
        let compiler = choose_compiler(&mut machine.host(true, BOOKWORM)).unwrap();
        assert!(
            compiler.description.starts_with("rustup nightly"),
            "{}",
            compiler.description
        );
        assert!(machine.apt_calls().is_empty(), "{:?}", machine.apt_calls());
    }

    #[test]
    fn nothing_installed_and_no_apt_says_what_to_install_here() {
        let _serial = FAKES.lock().unwrap_or_else(|e| e.into_inner());
        let machine = FakeMachine::new("none");
        machine.rustup_nightly(22, false);
        let err = choose_compiler(&mut machine.host(false, BOOKWORM))
            .err()
            .expect("no compiler")
            .to_string();
        assert!(err.contains("rustup component add rust-src"), "{err}");
        assert!(err.contains("bookworm-security"), "{err}");
        assert!(
            err.contains("apt-get install -y --no-install-recommends rustc-web cargo-web rust-web-src llvm-22-dev"),
            "{err}"
        );
        assert!(machine.apt_calls().is_empty());
    }

    #[test]
    fn a_registry_with_only_an_old_compiler_names_the_fix_for_the_distribution() {
        let _serial = FAKES.lock().unwrap_or_else(|e| e.into_inner());
        let machine = FakeMachine::new("old-registry");
        fs::write(machine.dir.join("registry-stale"), "").unwrap();
        let err = choose_compiler(&mut machine.host(true, UBUNTU))
            .err()
            .expect("LLVM 19 is unusable")
            .to_string();
        assert!(err.contains("uses LLVM 19"), "{err}");
        assert!(err.contains("This release of ubuntu"), "{err}");
        assert!(
            err.contains("rustup toolchain install nightly --component rust-src"),
            "{err}"
        );
        assert!(err.contains("llvm-<major>-dev"), "{err}");
        assert_eq!(machine.apt_calls(), ["update", INSTALL_RUST]);
    }

    #[test]
    fn os_release_parsing() {
        let bookworm = Distro::parse(BOOKWORM);
        assert!(bookworm.is("debian") && bookworm.codename == "bookworm");
        let ubuntu = Distro::parse(UBUNTU);
        assert_eq!(ubuntu.ids, ["ubuntu", "debian"]);
        assert_eq!(Distro::parse(""), Distro::default());
    }
}
