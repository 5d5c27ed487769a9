//! Output formats behind one small trait. Formatting is pure (a record in,
//! text out) so every format is unit-tested; the sinks only add buffering.

pub(crate) mod csv;
pub mod export;
pub(crate) mod json;
pub mod metrics;
pub mod otlp;
pub mod pcapng;
pub(crate) mod rotate;
pub(crate) mod stats;
pub mod status;
pub(crate) mod summary;
pub(crate) mod text;

use std::borrow::Cow;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::text::escape_control;
use crate::record::Classified;

/// Where events go: a terminal, a pipe, an export file.
pub(crate) trait Sink {
    fn write(&mut self, rec: &Classified) -> io::Result<()>;
    /// Marks that `lost` events were lost by the kernel at this point
    /// (`at`: now when tracing, the file's time when reading one back).
    fn write_gap(&mut self, lost: u64, at: SystemTime) -> io::Result<()>;
    /// Marks what else the kernel dropped since the last mark (segments,
    /// owners, closes, hook runs); only the JSON export records them.
    fn write_drops(
        &mut self,
        _drops: &crate::collect::counters::KernelDrops,
        _at: SystemTime,
    ) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()>;
    /// A real RST segment; only captures use them.
    fn packet(&mut self, _packet: &crate::output::pcapng::pairing::WirePacket) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
    Csv,
    /// Packets for Wireshark/tshark, the cause in each packet's comment.
    Pcapng,
}

impl Format {
    /// The export format for a `--write` path, from its extension.
    pub(crate) fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "json" | "ndjson" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "pcapng" => Some(Format::Pcapng),
            "txt" | "log" => Some(Format::Text),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TextOptions {
    /// ANSI colours (only for terminals).
    pub(crate) color: bool,
    /// Language of explanations.
    pub(crate) lang: crate::model::explain::Lang,
    /// `--stack`: CSV gets its two stack columns.
    pub(crate) stacks: bool,
}

pub(crate) fn sink(
    format: Format,
    writer: Box<dyn Write + Send>,
    opts: &TextOptions,
) -> Box<dyn Sink + Send> {
    // Flushed after every batch anyway; the capacity only bounds the
    // writes of a storm's long batches, where a filesystem's cost per
    // byte falls with the size of the write.
    let out = BufWriter::with_capacity(256 * 1024, writer);
    match format {
        Format::Text => Box::new(text::TextSink::new(out, *opts)),
        Format::Json => Box::new(json::JsonSink::new(out, opts.lang)),
        Format::Csv => Box::new(csv::CsvSink::new(out, opts.stacks)),
        Format::Pcapng => Box::new(pcapng::PcapngSink::new(out)),
    }
}

/// A stack on one line, innermost frame first: `a <- b <- c` (b called a).
/// Frames were escaped when symbolized, but a replayed file carries anything.
pub(crate) fn joined_frames(frames: &[String]) -> String {
    let escaped: Vec<Cow<'_, str>> = frames.iter().map(|f| escape_control(f)).collect();
    escaped.join(" <- ")
}

/// The range RFC 3339 (and humantime) can print: 1970-01-01 up to the last
/// nanosecond of 9999. humantime panics outside it; an event must never
/// take the tracer down, so times outside are clamped.
pub(crate) fn printable_time(t: SystemTime) -> SystemTime {
    const LAST: Duration = Duration::new(253_402_300_799, 999_999_999);
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d <= LAST => t,
        Ok(_) => UNIX_EPOCH + LAST,
        Err(_) => UNIX_EPOCH,
    }
}

/// `2026-11-22T22:51:03.123456789Z`
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(printable_time(t)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::text::needs_escape;
    use crate::record::fixtures;

    /// No control character (but line ends) and no bidi override in `out`.
    fn assert_inert(format: &str, out: &str) {
        for line in out.lines() {
            let bad: Vec<char> = line.chars().filter(|&c| needs_escape(c)).collect();
            assert!(bad.is_empty(), "{format}: {bad:?} in {line:?}");
        }
    }

    #[test]
    fn every_attacker_controlled_string_is_escaped_in_every_format() {
        let evil = "x\u{1b}[2J\u{9b}31m\u{202e}gpj.exe\u{2066}\u{85}\ty";
        let mut rec = fixtures::record();
        rec.event.actor.comm = evil.into();
        if let Some(p) = rec.event.process.as_mut() {
            p.comm = evil.into();
        }
        rec.cause.evidence.insert(
            "prior".into(),
            serde_json::json!({"kind": evil, "pid": 1, "comm": evil, "errno": evil}),
        );
        // A replayed file can put anything in any evidence field.
        rec.cause
            .evidence
            .insert("peer_idle_s".into(), serde_json::json!({ evil: [evil] }));
        rec.cause
            .evidence
            .insert(evil.into(), serde_json::json!(evil));
        rec.owner_proc = Some(std::sync::Arc::new(crate::enrich::procinfo::ProcInfo {
            cmdline: Some(evil.into()),
            cgroup: Some(evil.into()),
            container: Some(crate::enrich::procinfo::Container {
                runtime: "docker",
                id: Some(evil.into()),
                pod_uid: Some(evil.into()),
                unit: Some(evil.into()),
                names: Some(std::sync::Arc::new(
                    crate::enrich::containers::ContainerNames {
                        name: Some(evil.into()),
                        image: Some(evil.into()),
                        pod: Some(evil.into()),
                        namespace: Some(evil.into()),
                    },
                )),
            }),
            netns: None,
        }));
        rec.stacks.kernel = Some(vec![evil.into()]);
        rec.stacks.user = Some(vec![evil.into(), evil.into()]);
        let opts = TextOptions {
            stacks: true,
            ..TextOptions::default()
        };
        for (name, format) in [
            ("text", Format::Text),
            ("json", Format::Json),
            ("csv", Format::Csv),
        ] {
            let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
            impl Write for Shared {
                fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                    self.0.lock().unwrap().extend_from_slice(b);
                    Ok(b.len())
                }
                fn flush(&mut self) -> io::Result<()> {
                    Ok(())
                }
            }
            let mut out = sink(format, Box::new(Shared(buf.clone())), &opts);
            out.write(&rec).unwrap();
            out.flush().unwrap();
            let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
            assert!(text.contains("gpj.exe"), "{name}: {text}");
            assert_inert(name, &text);
        }
    }

    #[test]
    fn formats_follow_the_extension() {
        assert_eq!(Format::from_path(Path::new("a.jsonl")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("a.JSON")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("a.csv")), Some(Format::Csv));
        assert_eq!(Format::from_path(Path::new("a.log")), Some(Format::Text));
        assert_eq!(Format::from_path(Path::new("a.txt")), Some(Format::Text));
        assert_eq!(
            Format::from_path(Path::new("/var/log/rst.ndjson")),
            Some(Format::Json)
        );
        assert_eq!(Format::from_path(Path::new("out.csv/events")), None);
        assert_eq!(Format::from_path(Path::new(".csv")), None);
        assert_eq!(
            Format::from_path(Path::new("a.pcapng")),
            Some(Format::Pcapng)
        );
        assert_eq!(Format::from_path(Path::new("a.pcap")), None);
        assert_eq!(Format::from_path(Path::new("noext")), None);
    }

    #[test]
    fn stacks_join_innermost_first_and_stay_inert() {
        let frames = ["close+0x10 (libc.so.6)".to_string(), "main (a.c:3)".into()];
        assert_eq!(
            joined_frames(&frames),
            "close+0x10 (libc.so.6) <- main (a.c:3)"
        );
        assert_eq!(joined_frames(&["a\nb".into()]), "a\\x0ab");
        assert_eq!(joined_frames(&[]), "");
    }

    #[test]
    fn times_outside_rfc3339_are_clamped_not_panicking() {
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00.000000000Z");
        let far = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.999999999Z");
        let t = UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123456789Z");
    }

    /// A `Write + Send + 'static` the tests can read back.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn through_sink(format: Format, color: bool) -> String {
        let buf = Shared::default();
        let mut s = sink(
            format,
            Box::new(buf.clone()),
            &TextOptions {
                color,
                ..TextOptions::default()
            },
        );
        s.write(&fixtures::record()).unwrap();
        s.write_gap(3, SystemTime::now()).unwrap();
        s.write(&fixtures::record()).unwrap();
        s.flush().unwrap();
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn sinks_buffer_until_flush_and_write_every_format() {
        let json = through_sink(Format::Json, true);
        let lines: Vec<&str> = json.lines().collect();
        assert_eq!(lines.len(), 3, "{json}");
        assert!(lines[1].starts_with(r#"{"v":1,"time":""#), "{}", lines[1]);
        assert!(lines[1].ends_with(r#""gap":{"lost":3}}"#), "{}", lines[1]);
        assert!(!json.contains('\x1b'));

        let csv = through_sink(Format::Csv, true);
        let mut reader = ::csv::Reader::from_reader(csv.as_bytes());
        let rows: Vec<_> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(&rows[1][2], "gap");
        assert_eq!(&rows[1][16], "3");

        let plain = through_sink(Format::Text, false);
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines.len(), 4, "{plain}");
        assert_eq!(lines[0], text::header());
        assert!(lines[2].contains("3 events lost"), "{}", lines[2]);

        // Colour only ever wraps the cause; the hostile comm stays inert.
        let coloured = through_sink(Format::Text, true);
        assert_eq!(coloured.matches('\x1b').count(), 4, "{coloured:?}");
    }
}
