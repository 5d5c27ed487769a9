use super::*;

fn run(workload: Workload, tool: Tool, sample: Sample) -> Vec<Row> {
    vec![Row {
        workload,
        tool,
        samples: Ok(vec![sample]),
    }]
}

fn storm(out_rsts: u64, sent: u64, lost: u64) -> Sample {
    Sample {
        resets: ResetCounters {
            out_rsts,
            ..ResetCounters::default()
        },
        events_sent: sent,
        lost,
        ..Sample::default()
    }
}

#[test]
fn losses_and_missed_rsts_fail_the_bench() {
    for s in [Workload::Storm, Workload::PinnedStorm] {
        assert!(failures(&run(s, Tool::Text, storm(100, 100, 0))).is_empty());
        // RSTs of other namespaces or around the counter reads: more is fine.
        assert!(failures(&run(s, Tool::Jsonl, storm(100, 103, 0))).is_empty());
        let lost = failures(&run(s, Tool::Text, storm(100, 100, 1)));
        assert!(lost[0].contains("1 events lost"), "{lost:?}");
        let missed = failures(&run(s, Tool::JsonlStats, storm(100, 99, 0)));
        assert!(
            missed[0].contains("99 sent RSTs reported, but TcpOutRsts grew by 100"),
            "{missed:?}"
        );
    }
}

#[test]
fn tcpdump_drops_and_stack_losses_are_reported_not_failed() {
    let s = Workload::Storm;
    assert!(failures(&run(s, Tool::Tcpdump, storm(100, 50, 50))).is_empty());
    assert!(failures(&run(s, Tool::Stack, storm(100, 50, 50))).is_empty());
    assert!(failures(&run(s, Tool::StackAll, storm(100, 50, 50))).is_empty());
}

#[test]
fn a_healthy_workload_that_resets_fails_the_bench() {
    let quiet = Sample::default();
    assert!(failures(&run(Workload::Rr, Tool::Untraced, quiet)).is_empty());
    // Losses there come from RSTs elsewhere on the host.
    let others = Sample {
        lost: 5,
        ..Sample::default()
    };
    assert!(failures(&run(Workload::Rr, Tool::Jsonl, others)).is_empty());
    let reset = Sample {
        resets: ResetCounters {
            estab_resets: 1,
            ..ResetCounters::default()
        },
        ..Sample::default()
    };
    let found = failures(&run(Workload::Crr, Tool::Tcpdump, reset));
    assert!(
        found[0].contains("TCP_CRR, tcpdump -w (RST filter): the healthy workload made RSTs"),
        "{found:?}"
    );
}

#[test]
fn json_summary_and_program_names() {
    let lines: Vec<String> = [
        r#"{"event":"ready","programs":[{"name":"btf_tcp_send_reset","id":41},{"name":"owner_set_state","id":7}]}"#,
        r#"{"event":"summary","total":14,"sent":7,"received":7,"abort":0,"lost":3}"#,
    ]
    .map(String::from)
    .into();
    assert_eq!(rsttrace_counts(&lines).unwrap(), (7, 14, 3));
    let ready: Value = serde_json::from_str(&lines[0]).unwrap();
    let names = program_names(&ready);
    assert_eq!(names[&41], "btf_tcp_send_reset");
    assert_eq!(names.len(), 2);
    assert!(program_names(&Value::Null).is_empty());
}

#[test]
fn summary_lines() {
    let lines: Vec<String> = [
        "rsttrace summary",
        "  CAUSE                DIRECTION     COUNT",
        "  peer_refused         received          7",
        "  port_not_open        sent              5",
        "  time_wait            sent              2",
        "  total                                 14",
        "  lost (ring buffer full): 3",
    ]
    .map(String::from)
    .into();
    // A build without JSON status lines.
    assert_eq!(rsttrace_counts(&lines).unwrap(), (7, 14, 3));
}
