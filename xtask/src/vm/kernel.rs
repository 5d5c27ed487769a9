//! The guest kernels: which Debian package each matrix entry boots, fetched
//! through a private apt configuration and unpacked once under target/vm/.
//!
//! The private configuration (its own sources.list, lists and cache under
//! target/vm/apt/<suite>/) reaches bullseye and trixie from a bookworm host
//! without touching the machine's sources or package state.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::system::{self, Apt, capture, say};

/// One kernel of the matrix.
#[derive(Debug)]
pub struct GuestKernel {
    /// What `--kernel` takes: "5.10", "6.1", "6.12".
    pub version: &'static str,
    /// Debian suite that ships it.
    pub suite: &'static str,
    /// Suites of that release to search (the newest kernel may be in -security).
    pub apt_suites: &'static [(&'static str, &'static str)],
    /// What this kernel tells apart from the others (printed in reports).
    pub why: &'static str,
}

const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";

/// The matrix, oldest first. The host (6.18) is the fourth kernel.
pub const KERNELS: &[GuestKernel] = &[
    GuestKernel {
        version: "5.10",
        suite: "bullseye",
        apt_suites: &[(MIRROR, "bullseye"), (SECURITY, "bullseye-security")],
        why: "Debian 11 / Amazon Linux 2: no reset reason, no sock:inet_sk_error_report, \
              tcp_reset without the skb",
    },
    GuestKernel {
        version: "6.1",
        suite: "bookworm",
        apt_suites: &[(MIRROR, "bookworm"), (SECURITY, "bookworm-security")],
        why: "Debian 12: no reset reason, kprobes and fentry",
    },
    GuestKernel {
        version: "6.12",
        suite: "trixie",
        apt_suites: &[(MIRROR, "trixie"), (SECURITY, "trixie-security")],
        why: "Debian 13: the reset reason, with tcp_send_active_reset(sk, reason)",
    },
];

impl GuestKernel {
    pub fn by_version(version: &str) -> Option<&'static GuestKernel> {
        KERNELS.iter().find(|k| k.version == version)
    }

    /// Package names look like `linux-image-5.10.0-46-cloud-amd64` or
    /// `linux-image-6.12.117+deb13-cloud-amd64`.
    fn package_pattern(&self) -> String {
        format!(
            r"^linux-image-{}\.[0-9].*-cloud-amd64$",
            self.version.replace('.', r"\.")
        )
    }

    /// The numbers in a package name of this series, for ordering by version
    /// (`6.1.0-56` → [6, 1, 0, 56]); None for another series or flavour.
    fn version_key(&self, package: &str) -> Option<Vec<u32>> {
        let middle = package
            .strip_prefix("linux-image-")?
            .strip_suffix("-cloud-amd64")?;
        let rest = middle.strip_prefix(self.version)?.strip_prefix('.')?;
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        let key = middle
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().ok())
            .collect::<Option<Vec<u32>>>()?;
        Some(key)
    }

    fn newest<'a>(&self, names: impl Iterator<Item = &'a str>) -> Option<String> {
        names
            .filter_map(|n| Some((self.version_key(n)?, n)))
            .max()
            .map(|(_, n)| n.to_string())
    }
}

/// A guest kernel unpacked on the host.
pub struct Kernel {
    pub package: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the unpacked package, with a modules.dep.
    pub modules: PathBuf,
    pub release: String,
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
        // trixie moved modules to /usr/lib/modules.
        let modules = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|dir| root.join(dir).join(&release))
            .find(|p| p.is_dir())
            .with_context(|| format!("{} has no lib/modules/{release}", root.display()))?;
        if !modules.join("modules.dep").is_file() {
            let base = modules
                .parent()
                .and_then(Path::parent)
                .and_then(Path::parent)
                .context("modules base")?;
            system::run(
                Command::new("busybox")
                    .arg("depmod")
                    .arg("-b")
                    .arg(base)
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

/// The private apt configuration of one suite.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn new(vm_dir: &Path, kernel: &GuestKernel) -> Result<PrivateApt> {
        let dir = vm_dir.join("apt").join(kernel.suite);
        for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let sources: String = kernel
            .apt_suites
            .iter()
            .map(|(uri, suite)| {
                format!(
                    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {uri} {suite} main\n"
                )
            })
            .collect();
        fs::write(dir.join("sources.list"), sources)?;
        Ok(PrivateApt { dir })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
        cmd.args(["-q", "-o"])
            .arg(opt("Dir::Etc::sourcelist", &self.dir.join("sources.list")))
            .arg("-o")
            .arg(opt(
                "Dir::Etc::sourceparts",
                &self.dir.join("sources.list.d"),
            ))
            .arg("-o")
            .arg(opt("Dir::State::Lists", &self.dir.join("lists")))
            .arg("-o")
            .arg(opt("Dir::Cache", &self.dir.join("cache")));
        cmd
    }

    fn update(&self) -> Result<()> {
        system::run(self.command("apt-get").arg("update"))
    }

    fn search(&self, pattern: &str) -> Vec<String> {
        capture(
            self.command("apt-cache")
                .args(["search", "--names-only", pattern]),
        )
        .map(|list| {
            list.lines()
                .filter_map(|l| Some(l.split_whitespace().next()?.to_string()))
                .collect()
        })
        .unwrap_or_default()
    }
}

/// The newest cloud kernel of `guest`'s series, unpacked (once) under
/// target/vm/.
pub fn fetch(vm_dir: &Path, guest: &GuestKernel) -> Result<Kernel> {
    fs::create_dir_all(vm_dir)?;
    let apt = PrivateApt::new(vm_dir, guest)?;
    let pattern = guest.package_pattern();
    let mut package = guest.newest(apt.search(&pattern).iter().map(String::as_str));
    if package.is_none() && Apt::usable() {
        apt.update()?;
        package = guest.newest(apt.search(&pattern).iter().map(String::as_str));
    }
    let package = match package {
        Some(p) => p,
        // Offline with a cache: use what is there rather than fail.
        None => match cached_package(vm_dir, guest) {
            Some(p) => {
                say!("apt knows no {pattern}; using the cached {p}");
                p
            }
            None => bail!(
                "apt knows no package matching {pattern} in Debian {}: run vm-test as root \
                 with access to the Debian mirror (it runs `apt-get update` on a private \
                 configuration under {})",
                guest.suite,
                apt.dir.display()
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
        apt.command("apt-get")
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

fn cached_package(vm_dir: &Path, guest: &GuestKernel) -> Option<String> {
    let names: Vec<String> = fs::read_dir(vm_dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| find_vmlinuz(&vm_dir.join(n)).is_some())
        .collect();
    guest.newest(names.iter().map(String::as_str))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_kernel_by_version_numbers_not_by_text() {
        let k61 = GuestKernel::by_version("6.1").unwrap();
        let names = [
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-100-cloud-amd64-dbg",
            "linux-image-6.1.0-47-cloud-amd64",
            "linux-image-6.12.9+deb13-cloud-amd64",
        ];
        assert_eq!(
            k61.newest(names.into_iter()).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(k61.newest(std::iter::empty()), None);

        let k612 = GuestKernel::by_version("6.12").unwrap();
        let names = [
            "linux-image-6.12.9+deb13-cloud-amd64",
            "linux-image-6.12.117+deb13-cloud-amd64",
            "linux-image-6.12.48+deb13-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.12.117+deb13-amd64",
        ];
        assert_eq!(
            k612.newest(names.into_iter()).as_deref(),
            Some("linux-image-6.12.117+deb13-cloud-amd64")
        );
        let k510 = GuestKernel::by_version("5.10").unwrap();
        assert_eq!(
            k510.newest(["linux-image-5.10.0-46-cloud-amd64"].into_iter())
                .as_deref(),
            Some("linux-image-5.10.0-46-cloud-amd64")
        );
    }

    #[test]
    fn the_matrix_is_ordered_and_unique() {
        let versions: Vec<&str> = KERNELS.iter().map(|k| k.version).collect();
        assert_eq!(versions, ["5.10", "6.1", "6.12"]);
    }
}
