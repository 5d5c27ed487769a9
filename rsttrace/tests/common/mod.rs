//! Helpers for the kernel integration tests: run the real rsttrace binary
//! against the real kernel, provoke real RSTs, read its JSON Lines export.
//! `Scenario` (scenario.rs) is the way in: it puts together the namespaces
//! (netns.rs), the tracer (tracer.rs) and the events it exported
//! (events.rs); sockets.rs holds the ways to provoke RSTs.
#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary uses a different subset"
)]

pub mod events;
pub mod netns;
pub mod scenario;
pub mod sockets;
pub mod tracer;

pub use events::*;
pub use netns::{DELETE_RULES, input_rules};
pub use scenario::{Scenario, Side};
pub use sockets::*;
pub use tracer::*;

/// Whether kernel tests can run here. In CI (`RSTTRACE_REQUIRE_KERNEL_TESTS=1`)
/// a missing prerequisite fails the test instead of skipping it.
pub fn kernel_tests_possible(test: &str) -> bool {
    // SAFETY: geteuid() has no preconditions.
    let problem = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root")
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no /sys/kernel/btf/vmlinux")
    } else {
        None
    };
    match problem {
        None => true,
        Some(why) if std::env::var_os("RSTTRACE_REQUIRE_KERNEL_TESTS").is_some() => {
            panic!("{test}: kernel test cannot run: {why} (RSTTRACE_REQUIRE_KERNEL_TESTS is set)")
        }
        Some(why) => {
            skipped(test, &format!("{why}; run `cargo xtask test` as root"));
            false
        }
    }
}

/// Reports a test that returns early as skipped, visibly and counted
/// (`cargo xtask test` prints the count); never a silent pass.
pub fn skipped(test: &str, why: &str) {
    rsttrace::test_support::skipped(test, why);
}
