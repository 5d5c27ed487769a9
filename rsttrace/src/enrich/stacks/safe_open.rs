//! Opening the files a process has mapped, as root, when the process (and
//! whoever wrote its file system) may be hostile.
//!
//! A path from /proc/PID/maps is resolved inside the process's own root
//! (`openat2` with `RESOLVE_IN_ROOT`, no magic links, no symlink at the
//! end) to an `O_PATH` descriptor, which opens nothing: a FIFO cannot block
//! us and a device's open() never runs. Only once fstat says it is the
//! regular file the mapping names (same device and inode) is it opened for
//! reading, through that descriptor, non-blocking.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::procmaps::Mapping;

/// Larger than any binary worth symbolizing.
pub const MAX_BINARY_BYTES: u64 = 4 << 30;

/// The root directory of a process, held open.
pub struct Root(OwnedFd);

impl Root {
    /// `/proc/PID/root`; None once the process exited.
    pub fn of(pid: u32) -> Option<Root> {
        let path = CString::new(format!("/proc/{pid}/root")).ok()?;
        // SAFETY: valid NUL-terminated path; the result is checked.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        // SAFETY: fd was just opened and is owned by nobody else.
        (fd >= 0).then(|| Root(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

/// A mapped binary opened for reading, and its identity.
pub struct Opened {
    pub file: File,
    pub len: u64,
}

/// Opens the file behind `m` in the process whose root is `root`.
pub fn open_mapped(root: &Root, m: &Mapping) -> io::Result<Opened> {
    let path = CString::new(m.path.as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: open_how is plain data; zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid fd, path and open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.0.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let handle = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let st = fstat(handle.as_raw_fd())?;
    check(&st, m)?;
    // Reopen the very inode the O_PATH descriptor holds.
    let reopen = CString::new(format!("/proc/self/fd/{}", handle.as_raw_fd()))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: valid NUL-terminated path; the result is checked.
    let rfd = unsafe {
        libc::open(
            reopen.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if rfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: rfd was just opened and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(rfd) };
    let st2 = fstat(file.as_raw_fd())?;
    if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino) {
        return Err(io::Error::other("the file changed while it was opened"));
    }
    Ok(Opened {
        file,
        len: st2.st_size as u64,
    })
}

fn fstat(fd: i32) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is valid to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd; st is writable.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// A regular file of sane size, and the one the mapping names.
fn check(st: &libc::stat, m: &Mapping) -> io::Result<()> {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::other("not a regular file"));
    }
    if st.st_size < 0 || st.st_size as u64 > MAX_BINARY_BYTES {
        return Err(io::Error::other("implausibly large binary"));
    }
    let dev = (libc::major(st.st_dev), libc::minor(st.st_dev));
    if st.st_ino != m.inode || dev != m.dev {
        return Err(io::Error::other(
            "the path now names another file than the one mapped",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn mapping_of(path: &std::path::Path) -> Mapping {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(path).unwrap();
        Mapping {
            start: 0,
            end: 0x1000,
            offset: 0,
            dev: (libc::major(md.dev()), libc::minor(md.dev())),
            inode: md.ino(),
            path: Arc::from(path.to_str().unwrap()),
        }
    }

    #[test]
    fn opens_a_regular_file_in_our_root() {
        let exe = std::env::current_exe().unwrap();
        let root = Root::of(std::process::id()).unwrap();
        let opened = open_mapped(&root, &mapping_of(&exe)).unwrap();
        assert!(opened.len > 0);
    }

    #[test]
    fn a_fifo_is_not_opened_and_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("lib.so");
        let c = CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        let m = mapping_of(&fifo);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let root = Root::of(std::process::id()).unwrap();
            let _ = tx.send(
                open_mapped(&root, &m)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
        });
        let r = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("open blocked");
        assert!(r.unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn a_device_is_not_opened() {
        let root = Root::of(std::process::id()).unwrap();
        let err = open_mapped(&root, &mapping_of(std::path::Path::new("/dev/null")))
            .err()
            .unwrap();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn symlinks_do_not_lead_out_of_the_root_or_to_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.so");
        std::fs::write(&real, b"\x7fELF").unwrap();
        let link = dir.path().join("link.so");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let root = Root::of(std::process::id()).unwrap();
        // A symlink as the last component is refused.
        let mut m = mapping_of(&real);
        m.path = Arc::from(link.to_str().unwrap());
        assert!(open_mapped(&root, &m).is_err());
        // A path that now names another file than the mapping is refused.
        let other = dir.path().join("other.so");
        std::fs::write(&other, b"\x7fELF").unwrap();
        let mut m = mapping_of(&real);
        m.path = Arc::from(other.to_str().unwrap());
        let err = open_mapped(&root, &m).err().unwrap().to_string();
        assert!(err.contains("another file"), "{err}");
    }

    #[test]
    fn paths_resolve_inside_the_process_root() {
        // A root of `dir`: /etc/passwd there is dir/etc/passwd, absent.
        let dir = tempfile::tempdir().unwrap();
        let c = CString::new(dir.path().to_str().unwrap()).unwrap();
        // SAFETY: valid path; checked.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
        assert!(fd >= 0);
        // SAFETY: just opened.
        let root = Root(unsafe { OwnedFd::from_raw_fd(fd) });
        let m = mapping_of(std::path::Path::new("/etc/passwd"));
        let err = open_mapped(&root, &m).err().unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    }
}
