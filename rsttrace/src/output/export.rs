//! `--write FILE`: where export files are created, and how, on a host
//! where other users can write to the same directory (`/tmp`).
//!
//! Every name is resolved against a descriptor of the directory opened
//! once, so renaming or replacing the directory later moves nothing. Files
//! are created with `O_EXCL|O_NOFOLLOW` (never someone else's file, never
//! through a symlink or hard link, never a FIFO or device), and a file
//! already at FILE from an earlier run is checked (regular, ours, one link)
//! and moved aside to FILE.1 rather than truncated: a restart loses nothing.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};

/// How often a name planted between unlink/rename and create is cleared
/// before giving up.
const CREATE_ATTEMPTS: usize = 4;

/// The directory of an export file and the file's name in it.
pub struct ExportDir {
    dir: OwnedFd,
    name: OsString,
    /// FILE as given, for messages.
    path: PathBuf,
}

impl ExportDir {
    pub(crate) fn open(path: &Path) -> Result<ExportDir> {
        let name = path
            .file_name()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| anyhow!("--write {}: not a file name", path.display()))?
            .to_owned();
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let c = cstring(parent.as_os_str())?;
        // SAFETY: c is a valid NUL-terminated string; the result is checked.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            let hint = match e.raw_os_error() {
                Some(libc::ENOENT) => "; the directory does not exist",
                Some(libc::ENOTDIR) => "; it is not a directory",
                Some(libc::EACCES) => "; permission denied",
                _ => "",
            };
            bail!(
                "cannot create --write file {}: {}: {e}{hint}",
                path.display(),
                parent.display()
            );
        }
        // SAFETY: fd was just opened and is owned by nobody else.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(ExportDir {
            dir,
            name,
            path: path.to_owned(),
        })
    }

    /// `NAME.i` (`NAME` for 0).
    fn numbered(&self, i: u32) -> OsString {
        let mut n = self.name.clone();
        if i > 0 {
            n.push(format!(".{i}"));
        }
        n
    }

    /// Moves FILE.i to FILE.i+1 for every i, dropping the one past `keep`
    /// files (FILE itself counts); FILE is free afterwards.
    pub(crate) fn shift(&self, keep: u32) -> io::Result<()> {
        let keep = keep.max(1);
        self.unlink(&self.numbered(keep - 1))?;
        for i in (0..keep - 1).rev() {
            match self.rename(&self.numbered(i), &self.numbered(i + 1)) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// At start-up: a FILE left by an earlier run is moved aside (FILE.1,
    /// ...), after checking it is one we could have written; anything else
    /// at FILE is refused with the reason.
    pub(crate) fn set_aside_previous(&self, keep: u32) -> Result<()> {
        let Some(st) = self.lstat(&self.name)? else {
            return Ok(());
        };
        if let Some(problem) = unsafe_existing(&st) {
            bail!(
                "--write {}: {problem}; rsttrace does not write into it. Remove it, or choose another path",
                self.path.display()
            );
        }
        if st.st_size == 0 {
            return Ok(self.unlink(&self.name)?);
        }
        self.shift(keep).map_err(|e| {
            anyhow!(
                "--write {}: cannot move the previous file aside: {e}",
                self.path.display()
            )
        })
    }

    /// Creates FILE, new, mode 0600. Something planted at the name (after
    /// a rotation freed it) is unlinked: only its name goes, never the file
    /// behind a link.
    pub(crate) fn create(&self) -> io::Result<File> {
        let c = cstring_io(&self.name)?;
        for _ in 0..CREATE_ATTEMPTS {
            // SAFETY: valid directory fd and NUL-terminated name; checked.
            let fd = unsafe {
                libc::openat(
                    self.dir.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_NONBLOCK
                        | libc::O_CLOEXEC,
                    0o600 as libc::c_uint,
                )
            };
            if fd >= 0 {
                // SAFETY: fd was just opened and is owned by nobody else.
                return Ok(unsafe { File::from_raw_fd(fd) });
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
            self.unlink(&self.name)?;
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{}: someone keeps creating this name; not writing there",
                self.path.display()
            ),
        ))
    }

    fn lstat(&self, name: &OsStr) -> io::Result<Option<libc::stat>> {
        let c = cstring_io(name)?;
        // SAFETY: an all-zero stat is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd, NUL-terminated name, st is writable.
        let r = unsafe {
            libc::fstatat(
                self.dir.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r == 0 {
            return Ok(Some(st));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(e),
        }
    }

    fn unlink(&self, name: &OsStr) -> io::Result<()> {
        let c = cstring_io(name)?;
        // SAFETY: valid fd and NUL-terminated name.
        if unsafe { libc::unlinkat(self.dir.as_raw_fd(), c.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(()),
            _ => Err(e),
        }
    }

    fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (f, t) = (cstring_io(from)?, cstring_io(to)?);
        let dir = self.dir.as_raw_fd();
        // SAFETY: valid fds and NUL-terminated names.
        if unsafe { libc::renameat(dir, f.as_ptr(), dir, t.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Why an existing FILE is not one to take over, or None when it is a
/// regular file of ours with no other name.
fn unsafe_existing(st: &libc::stat) -> Option<String> {
    let kind = st.st_mode & libc::S_IFMT;
    if kind == libc::S_IFLNK {
        return Some("it is a symbolic link, which rsttrace refuses to follow".into());
    }
    if kind == libc::S_IFDIR {
        return Some("it is a directory".into());
    }
    if kind != libc::S_IFREG {
        return Some("it is not a regular file (a FIFO, socket or device)".into());
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if st.st_uid != me {
        return Some(format!(
            "it already exists and belongs to uid {}, not to us (uid {me})",
            st.st_uid
        ));
    }
    if st.st_nlink != 1 {
        return Some(format!(
            "it has {} hard links, so writing it would change another file",
            st.st_nlink
        ));
    }
    None
}

fn cstring(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| anyhow!("--write: the path contains a NUL byte"))
}

fn cstring_io(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::time::Duration;

    use super::*;

    fn open_fresh(path: &Path, keep: u32) -> Result<File> {
        let dir = ExportDir::open(path)?;
        dir.set_aside_previous(keep)?;
        Ok(dir.create()?)
    }

    #[test]
    fn a_restart_moves_the_previous_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(&path, "first run\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(dir.path().join("r.jsonl.1"), "older run\n").unwrap();
        let f = open_fresh(&path, 3).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 0);
        let kept = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        assert_eq!(kept("r.jsonl.1"), "first run\n");
        assert_eq!(kept("r.jsonl.2"), "older run\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_hard_link_at_the_path_is_refused_and_its_target_kept() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::hard_link(&victim, &path).unwrap();
        let err = open_fresh(&path, 3).unwrap_err().to_string();
        assert!(err.contains("hard links"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert_eq!(std::fs::metadata(&victim).unwrap().nlink(), 2);
    }

    #[test]
    fn a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "keep me").unwrap();
        let link = dir.path().join("out.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open_fresh(&link, 3).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }

    #[test]
    fn a_fifo_is_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(open_fresh(&path, 3).map(drop).map_err(|e| e.to_string()));
        });
        let err = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("opening a FIFO hung")
            .unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_file_of_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            crate::test_support::skipped(
                "a_file_of_another_user_is_refused",
                "needs root to chown",
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(&path, "planted").unwrap();
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        let err = open_fresh(&path, 3).unwrap_err().to_string();
        assert!(err.contains("belongs to uid 65534"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "planted");
    }

    #[test]
    fn a_name_planted_after_rotation_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        let path = dir.path().join("r.jsonl");
        let export = ExportDir::open(&path).unwrap();
        // Planted between the rename and the create.
        std::fs::hard_link(&victim, &path).unwrap();
        let mut f = export.create().unwrap();
        io::Write::write_all(&mut f, b"ours").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ours");
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ExportDir::open(&dir.path().join("nope/out.jsonl"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("does not exist") && err.contains("nope"),
            "{err}"
        );
    }
}
