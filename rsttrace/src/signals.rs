//! Ending well: stop signals, and a stderr that may be closed.
//!
//! The first Ctrl-C, SIGTERM or SIGHUP asks the trace loop to stop (it
//! drains, flushes and writes the summary); a second one ends the process
//! at once, even when the first could not be acted on (a write blocked on
//! a stalled pipe, a slow drain).

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

/// Exit status of a process ended by a second stop signal (128 + SIGINT).
const SECOND_SIGNAL_STATUS: i32 = 130;

static STOP_SIGNALS: AtomicU32 = AtomicU32::new(0);

/// Registers, next to tokio's handlers, one that counts stop signals and
/// `_exit`s on the second.
pub fn exit_on_second_stop_signal() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the action only touches an atomic and calls _exit, both
        // async-signal-safe.
        unsafe {
            signal_hook_registry::register(sig, || {
                if STOP_SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
                    libc::_exit(SECOND_SIGNAL_STATUS);
                }
            })?;
        }
    }
    Ok(())
}

/// Writes to stderr; a closed stderr (`2>&1 | head`) is not worth a panic.
pub fn stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `eprintln!` that never panics (see `signals::stderr`).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::signals::stderr(&format!("{}\n", format_args!($($arg)*)))
    };
}
