//! The tracer's scheduling priority. Under an RST storm the threads that
//! make the RSTs keep every CPU busy; a reader that waits its turn behind
//! them lets the ring buffer fill, and events are lost. So the tracer runs
//! ahead of ordinary tasks: a nice value, never a real-time class, so it
//! cannot lock a CPU up, and it only uses the CPU its events need.

use std::io;

/// The nice value taken when neither `--nice` nor whoever started rsttrace
/// (a service manager's `Nice=`) chose one.
pub const DEFAULT_NICE: i32 = -10;

/// What `apply` did.
#[derive(Debug)]
pub enum Priority {
    Set(i32),
    /// The process already ran at this non-default nice value.
    Kept(i32),
    Refused {
        wanted: i32,
        error: io::Error,
    },
}

/// Sets the calling thread's nice value to `requested`, or else to
/// `DEFAULT_NICE` unless it runs at another value than 0 already. Linux
/// keeps a nice value per thread and new threads inherit their creator's:
/// call it before any other thread starts.
pub fn apply(requested: Option<i32>) -> Priority {
    let wanted = match requested {
        Some(n) => n,
        None => match current() {
            Ok(0) | Err(_) => DEFAULT_NICE,
            Ok(n) => return Priority::Kept(n),
        },
    };
    // SAFETY: setpriority has no memory preconditions; `who` 0 is this thread.
    match unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, wanted) } {
        0 => Priority::Set(wanted),
        _ => Priority::Refused {
            wanted,
            error: io::Error::last_os_error(),
        },
    }
}

/// The calling thread's nice value (getpriority may return -1, so errno
/// tells an error apart).
fn current() -> io::Result<i32> {
    // SAFETY: errno is this thread's; getpriority has no memory preconditions.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, 0);
        match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(0) => Ok(n),
            e => Err(e),
        }
    }
}
