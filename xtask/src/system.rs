//! Running commands visibly, and the bits of the host xtask relies on: who we
//! are, whether apt can install things, tracefs.

use std::{
    env,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use anyhow::{Context, Result, bail};

/// Prints a progress line. Progress goes to stderr so that stdout carries only
/// the results (object and binary paths).
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("xtask: {}", format_args!($($arg)*)) };
}
pub(crate) use say;

/// Runs `cmd` after echoing it, failing if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", cmd.get_program().to_string_lossy()))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show_short(cmd));
    }
    Ok(())
}

/// Runs a quiet probe and returns its stdout, or None if it cannot run or fails.
pub fn capture(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(std::process::Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The cargo that runs this xtask (rustup's stable): it builds everything that
/// is not eBPF.
pub fn host_cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Effective uid 0, read from /proc so that no libc binding is needed.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            uids.split_whitespace().nth(1).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// `program` as found on PATH, if any.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Installs Debian packages through `apt-get`.
pub struct Apt {
    program: PathBuf,
}

/// The `apt-get` programs whose lists this run has refreshed: once per run,
/// however many `Apt`s the tasks make.
static REFRESHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

impl Apt {
    pub fn new() -> Self {
        Self::with_program("apt-get")
    }

    /// An `apt-get` other than the one on PATH (the set-up tests' fake).
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    /// apt can be used without asking anyone: root on Debian or Ubuntu.
    pub fn usable() -> bool {
        is_root() && Path::new("/etc/debian_version").exists() && which("apt-get").is_some()
    }

    /// Installs (or upgrades to) the newest versions the registry has. The
    /// lists are refreshed first, once per run: a fresh machine's lists are
    /// stale and offer old versions (bookworm's rustc-web 1.85 with LLVM 19
    /// instead of the security suite's 1.96 with LLVM 22).
    pub fn install(&mut self, packages: &[&str]) -> Result<()> {
        say!("installing {} with apt", packages.join(" "));
        self.update()?;
        let mut install = self.command(&["install", "-y", "--no-install-recommends"]);
        run(install.args(packages))
    }

    /// `apt-get update`, unless this run already did it.
    pub fn update(&mut self) -> Result<()> {
        let mut refreshed = REFRESHED.lock().unwrap_or_else(|e| e.into_inner());
        if refreshed.contains(&self.program) {
            return Ok(());
        }
        run(&mut self.command(&["update"]))?;
        refreshed.push(self.program.clone());
        Ok(())
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }
}

/// Installs the Debian package of every missing program, when apt is usable;
/// otherwise says what is missing and lets the tests that need it fail.
pub fn ensure_programs(programs: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = programs
        .iter()
        .filter(|(program, _)| {
            which(program).is_none() && !Path::new("/usr/sbin").join(program).exists()
        })
        .map(|&(_, package)| package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if Apt::usable() {
        return Apt::new().install(&missing);
    }
    say!(
        "warning: missing {}; tests that need them will fail (install them with apt-get as root)",
        missing.join(" ")
    );
    Ok(())
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs where the probes and tests look for tracepoint formats.
/// Failure is only a warning: the kernel tests then say why they cannot run.
pub fn ensure_tracefs() {
    let mounted = fs::read_to_string("/proc/self/mountinfo")
        .map(|info| info.lines().any(|l| l.split(' ').nth(4) == Some(TRACEFS)))
        .unwrap_or(false);
    if mounted {
        return;
    }
    let mut mount = if is_root() {
        Command::new("mount")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("mount");
        sudo
    };
    mount.args(["-t", "tracefs", "nodev", TRACEFS]);
    if let Err(e) = run(&mut mount) {
        say!("warning: cannot mount tracefs at {TRACEFS}: {e:#}");
    }
}

/// `cmd` as a shell line, with the environment it sets, for echoing.
pub fn show(cmd: &Command) -> String {
    // `env -u A -u B C=1 D=2 program args`: env wants its -u options first.
    let (set, unset): (Vec<_>, Vec<_>) = cmd.get_envs().partition(|(_, value)| value.is_some());
    let mut words = Vec::new();
    if !unset.is_empty() {
        words.push("env".to_string());
    }
    for (key, _) in unset {
        words.push(format!("-u {}", key.to_string_lossy()));
    }
    for (key, value) in set {
        let key = key.to_string_lossy();
        let value = shorten_path(&key, value.unwrap_or_default());
        words.push(format!("{key}={}", quote(&value)));
    }
    if let Some(dir) = cmd.get_current_dir() {
        words.insert(0, format!("(cd {} &&", quote(&dir.to_string_lossy())));
    }
    words.push(show_short(cmd));
    let mut line = words.join(" ");
    if cmd.get_current_dir().is_some() {
        line.push(')');
    }
    line
}

fn show_short(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Shows a PATH we prepended to as `dirs:$PATH` rather than in full.
fn shorten_path(key: &str, value: &OsStr) -> String {
    let value = value.to_string_lossy();
    if key == "PATH"
        && let Ok(orig) = env::var("PATH")
        && let Some(prefix) = value.strip_suffix(orig.as_str())
    {
        return format!("{prefix}$PATH");
    }
    value.into_owned()
}

/// Quotes a word for a POSIX shell, using `$'…'` for control characters (the
/// \x1f separators of CARGO_ENCODED_RUSTFLAGS).
fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:+,@%$".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.into();
    }
    if word.chars().any(char::is_control) {
        let mut out = String::from("$'");
        for c in word.chars() {
            match c {
                '\'' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('\'');
        return out;
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("--release"), "--release");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(
            quote("--cfg=x=\"y\"\x1f-Cdebuginfo=2"),
            r#"$'--cfg=x="y"\x1f-Cdebuginfo=2'"#
        );
    }
}
