//! One schema for write and read: the golden export in tests/fixtures/
//! covers every hook, every cause, every container runtime and a gap, and
//! `rsttrace read` turns it back into the same JSON, byte for byte, and into
//! the committed text and CSV. No kernel, no privileges.
//!
//! The fixtures are compiled in, so the test also runs where the source
//! tree is not (the VM suite).
//!
//! After a deliberate change of the text or CSV output, regenerate the
//! expected files with `RSTTRACE_BLESS=1 cargo test --test schema_roundtrip`
//! and review the diff.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use rsttrace::model::cause::CauseId;
use rsttrace::model::schema;
use serde_json::Value;

const GOLDEN: &str = include_str!("fixtures/golden.jsonl");
const GOLDEN_TXT: &str = include_str!("fixtures/golden.txt");
const GOLDEN_CSV: &str = include_str!("fixtures/golden.csv");

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `rsttrace read [args] -` with the golden export on stdin: stdout and stderr.
fn read(args: &[&str]) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rsttrace"))
        .arg("read")
        .args(args)
        .arg("-")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rsttrace read");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(GOLDEN.as_bytes()));
    let out = child.wait_with_output().expect("rsttrace read output");
    feeder.join().unwrap().expect("feed the export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    )
}

fn golden_lines() -> Vec<Value> {
    GOLDEN
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// One event per cause, and one more per cause seen by two hooks
/// (firewall_reject: in nf_send_reset, or on a device).
fn golden_events() -> usize {
    golden_lines()
        .iter()
        .filter(|v| v.get("gap").is_none())
        .count()
}

#[test]
fn the_golden_export_covers_every_closed_set() {
    let lines = golden_lines();
    let seen = |key: &str, value: &str| lines.iter().any(|v| v[key] == value);
    for (_, hook) in schema::HOOKS {
        assert!(seen("hook", hook), "no event from hook {hook}");
    }
    for cause in CauseId::ALL {
        assert!(
            seen("cause", cause.id()),
            "no event of cause {}",
            cause.id()
        );
    }
    for runtime in schema::RUNTIMES {
        assert!(
            lines.iter().any(|v| v["container"]["runtime"] == *runtime),
            "no container of runtime {runtime}"
        );
    }
    for source in schema::OWNER_SOURCES {
        assert!(
            lines.iter().any(|v| v["owner"]["source"] == *source),
            "no owner known as {source}"
        );
    }
    for direction in schema::DIRECTIONS {
        assert!(seen("direction", direction), "no {direction} event");
    }
    assert!(
        lines.iter().any(|v| v.get("gap").is_some()),
        "no gap record"
    );
    assert!(lines.iter().any(|v| v.get("user_stack").is_some()));
    assert!(lines.iter().any(|v| v["container"]["pod"].is_string()));
}

#[test]
fn json_reads_back_byte_for_byte() {
    let (out, err) = read(&["--format", "json"]);
    let golden = GOLDEN;
    if out != golden {
        for (n, (got, want)) in out.lines().zip(golden.lines()).enumerate() {
            assert_eq!(got, want, "line {}", n + 1);
        }
        panic!(
            "{} lines read back, {} in the file",
            out.lines().count(),
            golden.lines().count()
        );
    }
    // Every record was an event or a gap: nothing refused.
    assert!(!err.contains("undecodable"), "{err}");
    assert!(err.contains("lost (ring buffer full): 1234"), "{err}");
    let total = golden_events();
    assert!(
        err.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["total", &total.to_string()]),
        "{err}"
    );
}

/// Text and CSV against their committed renderings.
#[test]
fn text_and_csv_match_their_golden_files() {
    for (format, file, want) in [
        ("text", "golden.txt", GOLDEN_TXT),
        ("csv", "golden.csv", GOLDEN_CSV),
    ] {
        let (out, _) = read(&["--format", format, "--no-color"]);
        let path = fixture(file);
        if std::env::var_os("RSTTRACE_BLESS").is_some() {
            std::fs::write(&path, &out).unwrap();
            continue;
        }
        assert!(
            out == want,
            "`rsttrace read -f {format}` differs from {}; if intended, bless it \
             (see this file's doc):\n{out}",
            path.display()
        );
    }
}

/// Each CSV row names its hook and cause from the closed sets.
#[test]
fn csv_rows_keep_hook_cause_and_pod() {
    let (out, _) = read(&["--format", "csv"]);
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<_> = reader.records().map(Result::unwrap).collect();
    let events: Vec<_> = rows.iter().filter(|r| &r[col("cause")] != "gap").collect();
    assert_eq!(events.len(), golden_events());
    for (_, hook) in schema::HOOKS {
        assert!(events.iter().any(|r| &r[col("hook")] == *hook), "{hook}");
    }
    assert!(events.iter().all(|r| &r[col("hook")] != schema::UNKNOWN));
    assert!(
        events
            .iter()
            .any(|r| &r[col("pod")] == "checkout-7d9f5c-x2k4p" && &r[col("namespace")] == "shop")
    );
}

/// `read` filters on the names too: the one event of namespace `shop`.
#[test]
fn pod_and_namespace_filters_apply_to_files() {
    let (out, _) = read(&["--format", "json", "--namespace", "shop"]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v.get("gap").is_none())
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["container"]["pod"], "checkout-7d9f5c-x2k4p");
    let (out, _) = read(&["--format", "json", "--pod", "coredns-5d78c9869d-8xk2q"]);
    assert_eq!(
        out.lines().filter(|l| !l.contains("\"gap\"")).count(),
        1,
        "{out}"
    );
}

/// `--lang zh` reaches the JSON explanations and the summary of `read`.
#[test]
fn chinese_explanations_and_summary() {
    let (out, err) = read(&["--format", "json", "--lang", "zh"]);
    let cjk = |s: &str| s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(text) = v["explanation"].as_str() {
            assert!(cjk(text), "{} explained in English: {text}", v["cause"]);
        }
    }
    assert!(
        err.contains("rsttrace 汇总") && err.contains("合计"),
        "{err}"
    );
    assert!(
        !err.contains("total") && !err.contains("lost (ring"),
        "{err}"
    );
}
