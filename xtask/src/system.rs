//! Running commands visibly, and the bits of the host xtask relies on: who we
//! are, whether apt can install things, tracefs.

use std::{
    env,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::Command,
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

/// Installs Debian packages, running `apt-get update` at most once and only
/// when needed: a fresh machine may have no package lists, a kept one has them.
pub struct Apt {
    updated: bool,
}

impl Apt {
    pub fn new() -> Self {
        Self { updated: false }
    }

    /// apt can be used without asking anyone: root on Debian or Ubuntu.
    pub fn usable() -> bool {
        is_root() && Path::new("/etc/debian_version").exists() && which("apt-get").is_some()
    }

    pub fn install(&mut self, packages: &[&str]) -> Result<()> {
        say!("installing {} with apt", packages.join(" "));
        if !self.updated && !has_candidates(packages) {
            self.update()?;
        }
        let attempt = run(&mut apt_install(packages));
        match attempt {
            Err(_) if !self.updated => {
                // Stale lists name versions the mirror no longer has.
                self.update()?;
                run(&mut apt_install(packages))
            }
            other => other,
        }
    }

    pub fn update(&mut self) -> Result<()> {
        run(Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        self.updated = true;
        Ok(())
    }
}

fn apt_install(packages: &[&str]) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// Whether the local package lists know an installable version of every package.
fn has_candidates(packages: &[&str]) -> bool {
    let Some(policy) = capture(Command::new("apt-cache").arg("policy").args(packages)) else {
        return false;
    };
    candidates_known(&policy, packages.len())
}

fn candidates_known(policy: &str, expected: usize) -> bool {
    let candidates: Vec<&str> = policy
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .collect();
    candidates.len() == expected && candidates.iter().all(|c| *c != "(none)")
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
    fn apt_policy_candidates() {
        let known = "rustc-web:\n  Installed: (none)\n  Candidate: 1.96.0\n";
        assert!(candidates_known(known, 1));
        assert!(!candidates_known(known, 2), "a package apt does not know");
        assert!(!candidates_known(
            "x:\n  Installed: (none)\n  Candidate: (none)\n",
            1
        ));
    }

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
