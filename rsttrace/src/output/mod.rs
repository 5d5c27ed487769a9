//! Output formats behind one small trait. Formatting is pure (a record in,
//! text out) so every format is unit-tested; the sinks only add buffering.

pub mod csv;
pub mod json;
pub mod pcapng;
pub mod rotate;
pub mod text;

use std::borrow::Cow;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::cause::Classified;

/// Where events go: a terminal, a pipe, an export file.
pub trait Sink {
    fn write(&mut self, rec: &Classified) -> io::Result<()>;
    /// Marks that `lost` events were lost by the kernel at this point.
    fn write_gap(&mut self, lost: u64) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Csv,
    /// Packets for Wireshark/tshark, the cause in each packet's comment.
    Pcapng,
}

impl Format {
    /// The export format for a `--write` path, from its extension.
    pub fn from_path(path: &Path) -> Option<Format> {
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
pub struct TextOptions {
    /// ANSI colours (only for terminals).
    pub color: bool,
    /// Language of explanations.
    pub lang: crate::explain::Lang,
}

pub fn sink(
    format: Format,
    writer: Box<dyn Write + Send>,
    opts: &TextOptions,
) -> Box<dyn Sink + Send> {
    let out = BufWriter::with_capacity(64 * 1024, writer);
    match format {
        Format::Text => Box::new(text::TextSink::new(out, *opts)),
        Format::Json => Box::new(json::JsonSink {
            out,
            lang: opts.lang,
        }),
        Format::Csv => Box::new(csv::CsvSink::new(out)),
        Format::Pcapng => Box::new(pcapng::PcapngSink::new(out)),
    }
}

/// Process names and command lines are chosen by whoever runs the process:
/// never let them reach a terminal or a file with control characters in them.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            let n = c as u32;
            if n <= 0xff {
                out.push_str(&format!("\\x{n:02x}"));
            } else {
                out.push_str(&format!("\\u{{{n:x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `2026-11-22T22:51:03.123456789Z`
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

#[cfg(test)]
pub(crate) mod fixtures {
    use std::net::SocketAddr;
    use std::time::{Duration, SystemTime};

    use serde_json::json;

    use crate::cause::{Cause, CauseId, Classified, Confidence};
    use crate::event::*;

    pub fn record() -> Classified {
        let mut evidence = serde_json::Map::new();
        evidence.insert("unread_bytes_lost".into(), json!(100));
        Classified {
            event: Event {
                time: SystemTime::UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789),
                direction: Direction::Sent,
                hook: "tp_btf:tcp_send_reset",
                local: "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
                remote: "[::1]:40000".parse::<SocketAddr>().unwrap(),
                state: TcpState::CLOSE,
                kernel_reason: Some((11, "TCP_ABORT_ON_CLOSE".into())),
                packet: Some(Packet {
                    flags: TcpFlags(TcpFlags::PSH | TcpFlags::ACK),
                    seq: 1,
                    ack: 2,
                    len: 9,
                    window: 512,
                    ttl: 64,
                }),
                socket: None,
                context: ExecContext::Task,
                actor: Task {
                    pid: 7,
                    tid: 8,
                    comm: "evil\x1b[31m,\"x\"\nname".into(),
                },
                exit_signal: None,
                process: Some(Task {
                    pid: 7,
                    tid: 8,
                    comm: "=cmd|evil\x1b[2J".into(),
                }),
                owner: Owner::Tracked {
                    uid: 1000,
                    cgroup_id: 42,
                },
            },
            cause: Cause {
                id: CauseId::CloseUnreadData,
                confidence: Confidence::Certain,
                evidence,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_the_extension() {
        assert_eq!(Format::from_path(Path::new("a.jsonl")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("a.JSON")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("a.csv")), Some(Format::Csv));
        assert_eq!(Format::from_path(Path::new("a.log")), Some(Format::Text));
        assert_eq!(
            Format::from_path(Path::new("a.pcapng")),
            Some(Format::Pcapng)
        );
        assert_eq!(Format::from_path(Path::new("a.pcap")), None);
        assert_eq!(Format::from_path(Path::new("noext")), None);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("nginx"), "nginx");
        assert_eq!(
            escape_control("a\x1b[31mb\nc\x7f"),
            "a\\x1b[31mb\\x0ac\\x7f"
        );
        assert_eq!(escape_control("x\u{9b}y"), "x\\x9by");
    }
}
