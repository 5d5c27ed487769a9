//! Reading a test's events: finding them, describing them in a failure
//! message, the checks every cause test shares, and the rows of
//! $RSTTRACE_CAUSE_REPORT (what each kernel showed, for `cargo xtask test`
//! and `vm-test`).

use std::process::Command;

use serde_json::Value;

/// Events matching direction and cause.
pub fn find<'a>(events: &'a [Value], direction: &str, cause: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["direction"] == direction && e["cause"] == cause)
        .collect()
}

pub fn describe(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {} {}:{} -> {}:{} state={} reason={} evidence={}",
                e["direction"],
                e["cause"],
                e["local_addr"],
                e["local_port"],
                e["remote_addr"],
                e["remote_port"],
                e["state"],
                e["kernel_reason"],
                e["evidence"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `rsttrace check`'s report on this kernel, run once.
fn check_report() -> &'static str {
    static CHECK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CHECK.get_or_init(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_rsttrace"))
            .arg("check")
            .output()
            .expect("run rsttrace check");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

/// Why `--stack` cannot work on this kernel (`rsttrace check`), if it cannot.
pub fn stack_unsupported() -> Option<String> {
    let line = check_report()
        .lines()
        .find_map(|l| l.strip_prefix("--stack:"))
        .expect("rsttrace check has a --stack line")
        .trim();
    (line != "yes").then(|| line.to_string())
}

/// Whether this kernel's reason set names `cause`: the per-cause line of
/// `rsttrace check` ("yes (kernel reason NAME + facts)"), read once.
pub fn kernel_reason_decides(cause: &str) -> bool {
    check_report().lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some(cause) && l.contains("(kernel reason ")
    })
}

/// No sent event may be `certain` unless the plan has the kernel's reason
/// and this kernel's reason set names its cause, or it is netfilter's RST
/// seen in nf_send_reset itself (`firewall_reject` with the netfilter hook
/// as evidence): inference alone is `likely`. No received event may be
/// `certain` unless its sender's send was seen (paired) on this host.
pub fn assert_no_unconfirmed_certainty(plan: &Value, events: &[Value]) {
    for e in events.iter().filter(|e| e["direction"] == "received") {
        if e["confidence"] == "certain" {
            assert!(
                e["evidence"]["peer_event"].is_object(),
                "a certain received RST without its sender's event: {e}"
            );
        }
    }
    for e in events.iter().filter(|e| e["direction"] == "sent") {
        if e["confidence"] == "certain" {
            let cause = e["cause"].as_str().unwrap_or("?");
            if seen_in_nf_send_reset(e) {
                continue;
            }
            assert!(
                plan["reason"] == "kernel" && kernel_reason_decides(cause),
                "certain without a kernel reason for {cause} ({plan}): {e}"
            );
        }
    }
}

/// A `firewall_reject` the kprobe on nf_send_reset saw: netfilter's own
/// function ran, which is what the cause says (no inference).
fn seen_in_nf_send_reset(e: &Value) -> bool {
    e["cause"] == "firewall_reject"
        && e["hook"]
            .as_str()
            .is_some_and(|h| h.starts_with("kprobe:nf_send_reset"))
        && e["evidence"]["netfilter_hook"].is_string()
}

/// Records that the running test provoked `cause` (the "provoked" column of
/// the cause table) and returns the events rsttrace labelled with it.
pub fn provoked<'a>(events: &'a [Value], direction: &str, cause: &str) -> Vec<&'a Value> {
    let family = FAMILY.with(|f| f.borrow().clone());
    append_report(&format!(
        "provoked\t{}\t{direction}\t{cause}\t\n",
        test_tag(&family)
    ));
    find(events, direction, cause)
}

/// The running test (or the part of it that follows) cannot work on this
/// kernel: recorded in $RSTTRACE_CAUSE_REPORT with why, so the suites
/// count it apart from passes instead of passing it silently.
pub fn not_applicable(why: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    eprintln!("{test}: not applicable on this kernel: {why}");
    append_report(&format!("not_applicable\t{test}\t-\t-\t{why}\n"));
}

/// A tracer of the running test stopped with `events`, its send hook of
/// `family`: one report row per event (`event<TAB>test[family]<TAB>
/// direction<TAB>cause<TAB>confidence`), and `family` remembered for the
/// rows `provoked` adds.
pub(super) fn stopped(events: &[Value], family: &str) {
    let test = test_tag(family);
    let lines: String = events
        .iter()
        .filter(|e| e["gap"].is_null())
        .map(|e| {
            format!(
                "event\t{test}\t{}\t{}\t{}\n",
                e["direction"].as_str().unwrap_or("?"),
                e["cause"].as_str().unwrap_or("?"),
                e["confidence"].as_str().unwrap_or("?")
            )
        })
        .collect();
    append_report(&lines);
    FAMILY.with(|f| *f.borrow_mut() = family.to_string());
}

thread_local! {
    /// The send hook family of the test thread's last stopped tracer.
    static FAMILY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// libtest runs each test on a thread named after it.
fn test_tag(family: &str) -> String {
    format!("{}[{family}]", std::thread::current().name().unwrap_or("?"))
}

fn append_report(lines: &str) {
    use std::io::Write;
    let Some(path) = std::env::var_os("RSTTRACE_CAUSE_REPORT") else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    // One write per call: O_APPEND keeps lines of parallel tests whole.
    if let Ok(mut f) = file {
        let _ = f.write_all(lines.as_bytes());
    }
}
