//! The kernel tests' scenario helper (tests/common/scenario.rs) itself: a
//! test that fails leaves no network namespace and no tracer behind, and a
//! kernel test that cannot run fails loudly under
//! RSTTRACE_REQUIRE_KERNEL_TESTS. The only tests of this binary that make
//! namespaces, so that any left with its process id in the name are theirs.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::sync::Mutex;

use common::*;

/// Network namespaces whose names this process made (`rstt<pid>...`).
fn our_namespaces() -> Vec<String> {
    let prefix = format!("rstt{}", std::process::id());
    std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether process `pid` still exists (a zombie counts: nobody reaped it).
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs `body`, which must panic, without its panic failing this test.
fn must_panic(body: impl FnOnce()) {
    let result = catch_unwind(AssertUnwindSafe(body));
    assert!(result.is_err(), "the scenario did not panic");
}

#[test]
fn a_failing_scenario_leaves_no_namespace_and_no_tracer() {
    let Some(_root) = Scenario::new("a_failing_scenario_leaves_no_namespace_and_no_tracer").start()
    else {
        return;
    };
    assert_eq!(our_namespaces(), Vec::<String>::new(), "left from before");

    // A test body that panics, with namespaces, rules and a running tracer.
    let seen = Mutex::new((Vec::new(), None, 0));
    must_panic(|| {
        let port = free_port();
        let sc = Scenario::new("a_failing_scenario_leaves_no_namespace_and_no_tracer")
            .netns_pair()
            .nft(Side::B, input_rules(&format!("tcp dport {port} drop;")))
            .trace(&["--port", &port.to_string()])
            .start()
            .unwrap();
        let names: Vec<String> = sc.namespaces().iter().map(|n| n.name.clone()).collect();
        *seen.lock().unwrap() = (names, sc.tracer().pid(), our_namespaces().len());
        panic!("the test's assertion failed");
    });
    let (names, pid, while_running) = seen.into_inner().unwrap();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(while_running, 2, "the pair exists while the test runs");
    assert_eq!(our_namespaces(), Vec::<String>::new(), "after a panic");
    let pid = pid.expect("the tracer ran");
    assert!(!alive(pid), "the tracer (pid {pid}) outlived its scenario");

    // A step of the set-up that fails, after the namespaces were made.
    for routed in [false, true] {
        must_panic(|| {
            let builder = Scenario::new("a_failing_scenario_leaves_no_namespace_and_no_tracer");
            let builder = if routed {
                builder.routed_path()
            } else {
                builder.netns_pair()
            };
            builder.nft(Side::B, "not nftables at all").start();
        });
        assert_eq!(
            our_namespaces(),
            Vec::<String>::new(),
            "after a failed set-up (routed: {routed})"
        );
    }

    // A tracer that never reports ready: killed, namespaces deleted.
    must_panic(|| {
        Scenario::new("a_failing_scenario_leaves_no_namespace_and_no_tracer")
            .netns_pair()
            .trace(&["--no-such-flag"])
            .start();
    });
    assert_eq!(
        our_namespaces(),
        Vec::<String>::new(),
        "after a failed start"
    );
}

/// Under RSTTRACE_REQUIRE_KERNEL_TESTS a kernel test that cannot run (here:
/// not root) fails, saying why; without it, it is reported as skipped.
#[test]
fn a_scenario_that_cannot_run_fails_under_require_kernel_tests() {
    let Some(_root) =
        Scenario::new("a_scenario_that_cannot_run_fails_under_require_kernel_tests").start()
    else {
        return;
    };
    use std::os::unix::process::CommandExt;
    // This very test binary, its other test, as nobody.
    let as_nobody = |require: bool| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "a_failing_scenario_leaves_no_namespace_and_no_tracer",
        ])
        .env_remove("RSTTRACE_SKIP_LOG")
        .uid(65534)
        .gid(65534);
        if require {
            cmd.env("RSTTRACE_REQUIRE_KERNEL_TESTS", "1");
        } else {
            cmd.env_remove("RSTTRACE_REQUIRE_KERNEL_TESTS");
        }
        cmd.output().unwrap()
    };
    let out = as_nobody(true);
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "passed without root:\n{text}");
    assert!(
        text.contains("kernel test cannot run: not running as root"),
        "{text}"
    );
    let out = as_nobody(false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("SKIPPED a_failing_scenario_leaves_no_namespace_and_no_tracer"),
        "{stderr}"
    );
}
