//! For tests only: a test that cannot run here must say so where people
//! look, and be counted, never pass silently.

use std::io::Write;

/// Environment variable naming the file that collects skipped tests
/// (`cargo xtask test` sets it and prints the count at the end).
pub const SKIP_LOG: &str = "RSTTRACE_SKIP_LOG";

/// Reports `test` as skipped because of `why`: on stderr past libtest's
/// output capture (written to the stream, not through `eprintln!`), and
/// appended to `$RSTTRACE_SKIP_LOG` when set.
pub fn skipped(test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os(SKIP_LOG)
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
