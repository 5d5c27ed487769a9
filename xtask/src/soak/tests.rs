use super::measure::{ExportFiles, Row, metric_sum, metric_where};
use super::report::Facts;
use super::workload::Kind;
use super::*;

const METRICS: &str = "# HELP rsttrace_resets_total x\n\
    rsttrace_resets_total{direction=\"sent\",cause=\"port_not_open\",kernel_reason=\"\"} 7\n\
    rsttrace_resets_total{direction=\"received\",cause=\"peer_refused\",kernel_reason=\"\"} 7\n\
    rsttrace_resets_total_other 99\n\
    rsttrace_lost_events_total 0\n\
    rsttrace_kernel_drops_total{kind=\"recursion_misses\"} 3\n";

#[test]
fn metrics_by_name_and_label() {
    assert_eq!(metric_sum(METRICS, "rsttrace_resets_total"), 14);
    assert_eq!(
        metric_where(METRICS, "rsttrace_resets_total", "direction=\"sent\""),
        7
    );
    assert_eq!(metric_sum(METRICS, "rsttrace_lost_events_total"), 0);
    assert_eq!(
        metric_where(
            METRICS,
            "rsttrace_kernel_drops_total",
            "kind=\"recursion_misses\""
        ),
        3
    );
}

/// 10 refused connects, 2 unread, 3 linger, 4 after close: 19 RSTs.
fn made() -> BTreeMap<Kind, u64> {
    [
        (Kind::Refused, 10),
        (Kind::Unread, 2),
        (Kind::Linger, 3),
        (Kind::AfterClose, 4),
    ]
    .into()
}

fn summary() -> Value {
    serde_json::json!({
        "event": "summary", "total": 38, "sent": 19, "received": 19, "abort": 0,
        "causes": [
            {"cause": "port_not_open", "direction": "sent", "count": 10},
            {"cause": "peer_refused", "direction": "received", "count": 10},
            {"cause": "close_unread_data", "direction": "sent", "count": 2},
            {"cause": "linger_zero", "direction": "sent", "count": 3},
            {"cause": "data_after_close", "direction": "sent", "count": 4},
            {"cause": "peer_reset", "direction": "received", "count": 9},
        ],
        "lost": 0, "filtered": 500, "filtered_userspace": 0, "read_errors": 0,
        "decode_errors": 0, "write_errors": 0, "aborts_merged": 19,
        "kernel_drops": {"packets_lost": 0, "context_errors": 0, "owners_evicted": 0,
                         "history_evicted": 40, "recursion_misses": 3},
        "stacks": {"not_captured": 0, "missing": 0, "unsymbolized": 12},
    })
}

fn rows(rss: &[u64]) -> Vec<Row> {
    rss.iter()
        .enumerate()
        .map(|(i, &rss_kib)| Row {
            at: WARM_UP + SAMPLE_EVERY * i as u32,
            rss_kib,
            fds: 300,
            ..Row::default()
        })
        .collect()
}

/// The final scrape that goes with `summary()`, with `recursion` misses.
fn metrics(recursion: u64) -> String {
    format!(
        "rsttrace_resets_total{{direction=\"sent\",cause=\"port_not_open\",kernel_reason=\"\"}} 19\n\
         rsttrace_resets_total{{direction=\"received\",cause=\"peer_refused\",kernel_reason=\"\"}} 19\n\
         rsttrace_lost_events_total 0\n\
         rsttrace_kernel_drops_total{{kind=\"recursion_misses\"}} {recursion}\n"
    )
}

fn failed(summary: &Value, rss: &[u64]) -> Vec<String> {
    failed_rows(summary, &rows(rss))
}

fn failed_rows(summary: &Value, rows: &[Row]) -> Vec<String> {
    let made = made();
    let files = ExportFiles {
        files: ROTATE_COUNT,
        events: 20,
        ..ExportFiles::default()
    };
    let metrics = metrics(
        summary["kernel_drops"]["recursion_misses"]
            .as_u64()
            .unwrap(),
    );
    let facts = Facts {
        made: &made,
        kernel: ResetCounters {
            out_rsts: 19,
            ..ResetCounters::default()
        },
        summary,
        metrics: &metrics,
        scrape_failures: 0,
        files: &files,
        rows,
        recursion: &[("softirq_entry".into(), 3)],
    };
    facts
        .checks()
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| c.what)
        .collect()
}

#[test]
fn counters_that_add_up_pass_and_host_drops_are_only_reported() {
    let mut s = summary();
    assert!(
        failed(&s, &[100; 8]).is_empty(),
        "{:?}",
        failed(&s, &[100; 8])
    );
    s["kernel_drops"]["recursion_misses"] = 1000.into();
    s["kernel_drops"]["history_evicted"] = 1000.into();
    s["filtered"] = 100_000.into();
    assert!(
        failed(&s, &[100; 8]).is_empty(),
        "{:?}",
        failed(&s, &[100; 8])
    );
}

#[test]
fn a_missed_rst_a_loss_or_growing_memory_fails() {
    let mut s = summary();
    s["sent"] = 18.into();
    assert!(failed(&s, &[100; 8]).contains(&"summary: sent".to_string()));
    let mut s = summary();
    s["lost"] = 1.into();
    assert!(failed(&s, &[100; 8]).contains(&"summary: lost".to_string()));
    let mut s = summary();
    s["causes"][5]["count"] = 8.into();
    assert!(failed(&s, &[100; 8]).contains(&"summary: peer_reset received".to_string()));
    let growing = [100, 100, 105, 110, 115, 120, 125, 130];
    assert!(
        failed(&summary(), &growing)
            .iter()
            .any(|f| f.starts_with("RSS after warm-up"))
    );
    // Descriptors: the process-root cache's saw-tooth passes, a leak
    // of a hundred per sample does not.
    let with_fds = |fds: &[u64]| -> Vec<Row> {
        rows(&[100; 8])
            .into_iter()
            .zip(fds)
            .map(|(r, &fds)| Row { fds, ..r })
            .collect()
    };
    let saw_tooth = with_fds(&[300, 420, 530, 310, 420, 500, 300, 480]);
    assert!(failed_rows(&summary(), &saw_tooth).is_empty());
    let leak = with_fds(&[300, 400, 500, 600, 700, 800, 900, 1000]);
    assert!(
        failed_rows(&summary(), &leak)
            .iter()
            .any(|f| f.starts_with("descriptors after warm-up"))
    );
    // Too short a run proves nothing about memory.
    assert!(
        failed(&summary(), &[100; 3])
            .iter()
            .any(|f| f.starts_with("RSS after warm-up"))
    );
}
