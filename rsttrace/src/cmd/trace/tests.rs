use super::*;
use crate::cmd::outputs::open_export;
use crate::output::{self, Sink, TextOptions};

#[test]
fn ring_buffer_sizes_are_power_of_two_pages() {
    let page = page_size();
    assert_eq!(u64::from(ring_buffer_bytes(1).unwrap()), page);
    assert_eq!(ring_buffer_bytes(4 << 20).unwrap(), 4 << 20);
    assert_eq!(ring_buffer_bytes((4 << 20) + 1).unwrap(), 8 << 20);
    assert!(ring_buffer_bytes(1 << 33).is_err());
    assert!(ring_buffer_bytes(u64::MAX).is_err());
    assert!(ring_buffer_bytes((1 << 63) + 1).is_err());
    // The CLI takes absurd sizes and counts without panicking.
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from([
        "rsttrace",
        "--ring-buffer",
        "18446744073709551615",
        "--count",
        "18446744073709551615",
        "--duration",
        "18446744073709551615",
    ])
    .unwrap();
    assert!(ring_buffer_bytes(cli.trace.ring_buffer).is_err());
    assert!(
        <crate::cli::Cli as clap::Parser>::try_parse_from([
            "rsttrace",
            "--ring-buffer",
            "99999999999G"
        ])
        .is_err()
    );
}

/// A pipeline with no filter, stacks or exporters.
fn bare_pipeline(reasons: &Reasons) -> Pipeline<'_> {
    Pipeline {
        stats: stats::Shared::default(),
        clock: BootClock::sample(),
        reasons,
        filter: RecordFilter::default(),
        procs: crate::enrich::procinfo::ProcCache::new(4),
        limit: None,
        limit_reached: false,
        runtimes: crate::enrich::containers::RuntimeState::host(std::path::Path::new("/")),
        otlp: None,
        seen_lost: 0,
        seen_drops: KernelDrops::default(),
        stacks: None,
        user_stack_read: false,
        panicked: None,
        correlate: Correlator::new(HostNet::default(), None, None),
        ready: Vec::new(),
        listener_groups: Default::default(),
        now: None,
    }
}

/// A batch reads the clock once; a received event waiting for its sender
/// is released at a later batch's time, never within its own batch however
/// long that took.
#[test]
fn a_received_event_waits_past_its_batch() {
    let reasons = Reasons(Default::default(), Default::default());
    let mut state = bare_pipeline(&reasons);
    let mut outputs = Vec::new();
    let mut raw = decode::blank_rst();
    raw.direction = rsttrace_ebpf::abi::direction::RECEIVED;
    state.handle_guarded(&decode::encode(&raw), &mut outputs);
    // A slow batch: the event waited longer than HOLD while it ran.
    std::thread::sleep(crate::correlate::HOLD + std::time::Duration::from_millis(10));
    assert_eq!(state.release_waiting(false, &mut outputs), 0);
    state.now = None;
    assert_eq!(state.release_waiting(false, &mut outputs), 1);
    assert_eq!(stats::lock(&state.stats).total(), 1);
}

struct PanickingSink;

impl Sink for PanickingSink {
    fn write(&mut self, _: &Classified) -> io::Result<()> {
        panic!("hostile input");
    }
    fn write_gap(&mut self, _: u64, _: std::time::SystemTime) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_panic_while_handling_an_event_stops_tracing_in_order() {
    let reasons = Reasons(Default::default(), Default::default());
    let mut state = bare_pipeline(&reasons);
    let mut outputs = vec![Output {
        name: "test".into(),
        sink: Box::new(PanickingSink),
        failed: None,
        unwritten: 0,
    }];
    let bytes = decode::encode(&decode::blank_rst());
    state.handle_guarded(&bytes, &mut outputs);
    assert_eq!(state.panicked.as_deref(), Some("hostile input"));
    // Later events are not handled; the loop stops and writes the summary.
    state.handle_guarded(&bytes, &mut outputs);
    assert_eq!(state.panicked.as_deref(), Some("hostile input"));
}

/// Writes into a shared buffer, for looking at what a sink wrote.
#[derive(Clone, Default)]
struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

proptest::proptest! {
    /// Records with a valid header and any body go through the whole
    /// event path (decode, Event::new, classify, filter, every output
    /// format) without a panic, one line per event in each output.
    #[test]
    fn fuzz_the_event_path(
        body in proptest::collection::vec(
            proptest::num::u8::ANY,
            size_of::<rsttrace_ebpf::abi::RstEvent>() - 8,
        ),
    ) {
        let mut bytes = decode::encode(&decode::blank_rst())[..8].to_vec();
        bytes.extend_from_slice(&body);
        let reasons = Reasons(
            [(0u32, Arc::from("NOT_SPECIFIED"))].into_iter().collect(),
            Default::default(),
        );
        let mut state = bare_pipeline(&reasons);
        let buffers: Vec<Shared> = (0..3).map(|_| Shared::default()).collect();
        let mut outputs: Vec<Output> = [Format::Text, Format::Json, Format::Csv]
            .into_iter()
            .zip(&buffers)
            .map(|(format, buf)| Output {
                name: format!("{format:?}"),
                sink: output::sink(format, Box::new(buf.clone()), &TextOptions::default()),
                failed: None,
                unwritten: 0,
            })
            .collect();
        state.handle_guarded(&bytes, &mut outputs);
        // Received RSTs wait for their sender's event: let them go.
        state.release_waiting(true, &mut outputs);
        for o in &mut outputs {
            o.flush();
        }
        proptest::prop_assert_eq!(&state.panicked, &None);
        proptest::prop_assert_eq!(stats::lock(&state.stats).total(), 1);
        let text = String::from_utf8(buffers[0].0.lock().unwrap().clone()).unwrap();
        proptest::prop_assert_eq!(text.lines().filter(|l| !l.starts_with("TIME(UTC)")).count(), 1, "{}", text);
        let json = String::from_utf8(buffers[1].0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
        proptest::prop_assert!(line.is_object());
        // The export reads back, with a cause the table gives that direction.
        let Ok(crate::output::json::read::Line::Event(rec)) = crate::output::json::read::parse_line(json.trim_end()) else {
            return Err(proptest::test_runner::TestCaseError::fail(json));
        };
        proptest::prop_assert!(rec.cause.id.info().directions.contains(&rec.event.direction), "{}", json);
    }
}

#[test]
fn export_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    open_export(&path, 2).unwrap().create().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "mode {mode:o}");
}

/// Only an event that carries a user stack asks the reader to look again
/// soon (`Source::follow_up`): the others wait for the threshold.
#[test]
fn a_user_stack_asks_for_a_follow_up() {
    let reasons = Reasons(Default::default(), Default::default());
    let mut state = bare_pipeline(&reasons);
    let mut outputs = Vec::new();
    let mut raw = decode::blank_rst();
    raw.user_stack_id = -1;
    state.handle_guarded(&decode::encode(&raw), &mut outputs);
    assert!(!state.user_stack_read);
    raw.user_stack_id = 7;
    state.handle_guarded(&decode::encode(&raw), &mut outputs);
    raw.user_stack_id = -1;
    state.handle_guarded(&decode::encode(&raw), &mut outputs);
    assert!(state.user_stack_read, "kept until the batch ends");
}
