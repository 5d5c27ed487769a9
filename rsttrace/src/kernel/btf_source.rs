//! Where the kernel's BTF comes from: `/sys/kernel/btf/vmlinux`, or a file
//! for the running kernel given with `--btf FILE` (or `RSTTRACE_BTF`) on
//! kernels built without CONFIG_DEBUG_INFO_BTF, such as a BTFHub file or the
//! `.BTF` section of a vmlinux with debug info.
//!
//! A file gives the struct offsets and the function and tracepoint
//! prototypes; it cannot give what the kernel itself must own: tp_btf and
//! fentry programs are checked against the kernel's own BTF, so without it
//! they stay unavailable and the tracepoint and kprobe hooks are used.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

use super::btf::{Btf, SYS_FS_VMLINUX, attach_names};

/// The environment variable that names a BTF file, like `--btf`.
pub(crate) const ENV_VAR: &str = "RSTTRACE_BTF";

/// vmlinux BTF is 5–10 MiB; anything far larger is not BTF.
const MAX_FILE_BYTES: u64 = 256 << 20;

static FILE: OnceLock<PathBuf> = OnceLock::new();

/// Uses `path` (from `--btf`, else `RSTTRACE_BTF`) instead of sysfs for the
/// rest of the process. Called once, before anything reads BTF.
pub fn use_file(flag: Option<PathBuf>) {
    let path = flag.or_else(|| {
        std::env::var_os(ENV_VAR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = path {
        let _ = FILE.set(path);
    }
}

/// The file given with `--btf`, if any.
pub(crate) fn file() -> Option<&'static Path> {
    FILE.get().map(PathBuf::as_path)
}

/// Whether the kernel exposes its own BTF (what tp_btf and fentry need).
pub(crate) fn kernel_has_btf() -> bool {
    Path::new(SYS_FS_VMLINUX).exists()
}

/// Where BTF is read from, for messages.
pub(crate) fn describe() -> String {
    match file() {
        Some(p) => format!("{} (--btf)", p.display()),
        None => SYS_FS_VMLINUX.to_string(),
    }
}

/// The raw BTF bytes from the chosen source.
pub(crate) fn read() -> Result<Vec<u8>> {
    match file() {
        Some(path) => read_file(path),
        None => std::fs::read(SYS_FS_VMLINUX).with_context(|| {
            format!(
                "cannot read {SYS_FS_VMLINUX}: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF); \
                 pass a BTF file for it with --btf FILE (or {ENV_VAR}=FILE), e.g. from BTFHub \
                 or `objcopy -O binary --only-section=.BTF vmlinux vmlinux.btf` on a vmlinux \
                 with debug info"
            )
        }),
    }
}

/// rsttrace's own parse of the chosen BTF.
pub(crate) fn parse() -> Result<Btf> {
    let bytes = read()?;
    Btf::parse(&bytes).with_context(|| format!("parsing BTF from {}", describe()))
}

/// aya's parse, for attaching tp_btf and fentry programs: the kernel's own
/// BTF when it has one (type ids must be the kernel's), else the file.
/// aya gets only the names it looks up (`btf::attach_names`): its parse of
/// the whole of vmlinux BTF was rsttrace's peak memory.
pub(crate) fn parse_for_aya() -> Result<aya::Btf> {
    let (bytes, source) = if kernel_has_btf() {
        let bytes =
            std::fs::read(SYS_FS_VMLINUX).with_context(|| format!("reading {SYS_FS_VMLINUX}"))?;
        (bytes, SYS_FS_VMLINUX.to_string())
    } else {
        (read()?, describe())
    };
    let names = attach_names(&bytes).with_context(|| format!("parsing BTF from {source}"))?;
    drop(bytes);
    aya::Btf::parse(&names, aya::Endianness::default())
        .with_context(|| format!("parsing BTF from {source}"))
}

/// A root process reads a path that another user may control: no symlink
/// at the end, no blocking open (a FIFO), a regular file of bounded size,
/// owned by root or by us and writable by nobody else.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    let fix = "pass a BTF file for the running kernel owned by root, mode 0644 or stricter";
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| {
            format!(
                "--btf {}: cannot open it (a symlink is refused: give the real path)",
                path.display()
            )
        })?;
    let meta = file
        .metadata()
        .with_context(|| format!("--btf {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!("--btf {}: not a regular file; {fix}", path.display());
    }
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != euid {
        bail!(
            "--btf {}: owned by uid {}, not by root: another user could change what \
             rsttrace trusts; {fix}",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "--btf {}: writable by group or others (mode {:o}); {fix}",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    if meta.len() > MAX_FILE_BYTES {
        bail!(
            "--btf {}: {} bytes is too large for kernel BTF (at most {MAX_FILE_BYTES}); \
             give the raw BTF, not a compressed archive or a vmlinux",
            path.display(),
            meta.len()
        );
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.by_ref()
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("--btf {}", path.display()))?;
    check_raw_btf(path, &bytes)?;
    Ok(bytes)
}

/// Names the usual wrong inputs (an ELF vmlinux, a BTFHub archive) and the fix.
fn check_raw_btf(path: &Path, bytes: &[u8]) -> Result<()> {
    let hint = match bytes {
        [0x7f, b'E', b'L', b'F', ..] => {
            "an ELF file (a vmlinux?): extract its BTF with \
             `objcopy -O binary --only-section=.BTF vmlinux vmlinux.btf`"
        }
        [0xfd, b'7', b'z', b'X', b'Z', ..] => {
            "xz-compressed (a BTFHub archive?): unpack it with `tar xJf FILE`"
        }
        [0x1f, 0x8b, ..] => "gzip-compressed: unpack it first",
        _ => return Ok(()),
    };
    bail!("--btf {}: not raw BTF but {hint}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn unsafe_or_wrong_files_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let elf = write(dir.path(), "vmlinux", b"\x7fELF\x02\x01\x01", 0o644);
        let err = format!("{:#}", read_file(&elf).unwrap_err());
        assert!(err.contains("objcopy"), "{err}");

        let xz = write(dir.path(), "k.btf.tar.xz", b"\xfd7zXZ\0\0", 0o644);
        let err = format!("{:#}", read_file(&xz).unwrap_err());
        assert!(err.contains("tar xJf"), "{err}");

        let open = write(dir.path(), "open.btf", b"\x9f\xeb\x01\0", 0o666);
        let err = format!("{:#}", read_file(&open).unwrap_err());
        assert!(err.contains("writable by group or others"), "{err}");

        let link = dir.path().join("link.btf");
        std::os::unix::fs::symlink(&elf, &link).unwrap();
        let err = format!("{:#}", read_file(&link).unwrap_err());
        assert!(err.contains("symlink is refused"), "{err}");

        let err = format!("{:#}", read_file(dir.path()).unwrap_err());
        assert!(err.contains("not a regular file"), "{err}");

        let ok = write(dir.path(), "ok.btf", b"\x9f\xeb\x01\0", 0o644);
        assert_eq!(read_file(&ok).unwrap(), b"\x9f\xeb\x01\0");
    }
}
