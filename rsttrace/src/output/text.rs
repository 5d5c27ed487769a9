//! One aligned, human-readable line per RST.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::UNIX_EPOCH;

use super::{Sink, TextOptions, escape_control};
use crate::cause::Classified;
use crate::event::{Direction, Event};

pub fn header() -> String {
    format!(
        "{:<12} {:<6} {:<47} {:<11} {:<18} {:<22} {}",
        "TIME(UTC)", "DIR", "LOCAL -> REMOTE", "STATE", "CAUSE", "PROCESS", "DETAILS"
    )
}

/// `HH:MM:SS.mmm` in UTC.
fn clock(e: &Event) -> String {
    let d = e.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

fn endpoints(e: &Event) -> String {
    format!("{} -> {}", e.local, e.remote)
}

fn details(rec: &Classified) -> String {
    let e = &rec.event;
    let mut s = format!("reason={}", e.reason().unwrap_or("-"));
    if let Some(p) = e.packet {
        let _ = write!(s, " pkt={}", p.flags.tcpdump());
        if p.len > 0 {
            let _ = write!(s, " len={}", p.len);
        }
    }
    for key in ["unread_bytes_lost", "errno", "tw_substate", "probes_out"] {
        if let Some(v) = rec.cause.evidence.get(key) {
            let v = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            let _ = write!(s, " {key}={v}");
        }
    }
    if rec.cause.confidence == crate::cause::Confidence::Likely {
        s.push_str(" (likely)");
    }
    s
}

pub fn line(rec: &Classified, opts: TextOptions) -> String {
    let e = &rec.event;
    let dir = match e.direction {
        Direction::Sent => "SENT >",
        Direction::Received => "RECV <",
    };
    let process = match &e.process {
        Some(p) => format!("{}/{}", p.pid, escape_control(&p.comm)),
        None => "-".into(),
    };
    let cause = format!("{:<18}", rec.cause.id.id());
    let cause = if opts.color {
        let color = match e.direction {
            Direction::Sent => "31",
            Direction::Received => "33",
        };
        format!("\x1b[{color}m{cause}\x1b[0m")
    } else {
        cause
    };
    format!(
        "{:<12} {dir} {:<47} {:<11} {cause} {:<22} {}",
        clock(e),
        endpoints(e),
        e.state.name(),
        process,
        details(rec)
    )
}

pub struct TextSink<W: Write> {
    out: W,
    opts: TextOptions,
    header_written: bool,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W, opts: TextOptions) -> TextSink<W> {
        TextSink {
            out,
            opts,
            header_written: false,
        }
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn write(&mut self, rec: &Classified) -> io::Result<()> {
        if !self.header_written {
            writeln!(self.out, "{}", header())?;
            self.header_written = true;
        }
        writeln!(self.out, "{}", line(rec, self.opts))
    }

    fn write_gap(&mut self, lost: u64) -> io::Result<()> {
        writeln!(self.out, "*** {lost} events lost (ring buffer full) ***")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures::record;

    #[test]
    fn a_line_says_who_what_and_why() {
        let l = line(
            &record(),
            TextOptions {
                color: false,
                ..TextOptions::default()
            },
        );
        assert!(
            l.starts_with("11:06:40.123 SENT > 127.0.0.1:8080 -> [::1]:40000"),
            "{l}"
        );
        assert!(l.contains("CLOSE"), "{l}");
        assert!(l.contains("close_unread_data"), "{l}");
        assert!(l.contains("7/=cmd|evil\\x1b[2J"), "{l}");
        assert!(
            l.contains("reason=TCP_ABORT_ON_CLOSE pkt=P. len=9 unread_bytes_lost=100"),
            "{l}"
        );
    }

    #[test]
    fn no_escape_sequences_unless_colour_is_asked_for() {
        let plain = line(
            &record(),
            TextOptions {
                color: false,
                ..TextOptions::default()
            },
        );
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let coloured = line(
            &record(),
            TextOptions {
                color: true,
                ..TextOptions::default()
            },
        );
        assert!(coloured.contains("\x1b[31m"));
    }

    #[test]
    fn ownerless_events_show_a_dash() {
        let mut rec = record();
        rec.event.process = None;
        rec.event.kernel_reason = None;
        let l = line(&rec, TextOptions::default());
        assert!(l.contains(" - "), "{l}");
        assert!(l.contains("reason=-"), "{l}");
    }
}
