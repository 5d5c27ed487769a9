//! CSV with a header row; the csv crate quotes commas, quotes and newlines.

use std::io::{self, Write};

use super::{Sink, escape_control, rfc3339};
use crate::cause::Classified;

pub const HEADER: [&str; 18] = [
    "time",
    "direction",
    "cause",
    "confidence",
    "kernel_reason",
    "state",
    "local_addr",
    "local_port",
    "remote_addr",
    "remote_port",
    "pid",
    "comm",
    "actor_pid",
    "actor_comm",
    "context",
    "pkt_flags",
    "unread",
    "hook",
];

/// Free text that a spreadsheet would run as a formula gets a leading `'`.
fn cell_text(s: &str) -> String {
    let s = escape_control(s);
    if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.into_owned()
    }
}

pub fn row(rec: &Classified) -> [String; 18] {
    let e = &rec.event;
    let opt = |v: Option<String>| v.unwrap_or_default();
    [
        rfc3339(e.time),
        e.direction.as_str().into(),
        rec.cause.id.id().into(),
        rec.cause.confidence.as_str().into(),
        opt(e.reason().map(str::to_owned)),
        e.state.name().into(),
        e.local.ip().to_string(),
        e.local.port().to_string(),
        e.remote.ip().to_string(),
        e.remote.port().to_string(),
        opt(e.process.as_ref().map(|p| p.pid.to_string())),
        opt(e.process.as_ref().map(|p| cell_text(&p.comm))),
        e.actor.pid.to_string(),
        cell_text(&e.actor.comm),
        e.context.name().into(),
        opt(e.packet.map(|p| p.flags.tcpdump())),
        opt(e.socket.map(|s| s.unread.to_string())),
        e.hook.into(),
    ]
}

pub struct CsvSink<W: Write> {
    out: csv::Writer<W>,
    header_written: bool,
}

impl<W: Write> CsvSink<W> {
    pub fn new(out: W) -> CsvSink<W> {
        CsvSink {
            out: csv::Writer::from_writer(out),
            header_written: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.out.write_record(HEADER).map_err(into_io)?;
            self.header_written = true;
        }
        Ok(())
    }
}

fn into_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

impl<W: Write> Sink for CsvSink<W> {
    fn write(&mut self, rec: &Classified) -> io::Result<()> {
        self.header()?;
        self.out.write_record(row(rec)).map_err(into_io)
    }

    /// CSV has no room for a marker row that fits the columns; a row whose
    /// cause is `gap` and whose `unread` column carries the lost count does.
    fn write_gap(&mut self, lost: u64) -> io::Result<()> {
        self.header()?;
        let mut cells: [String; 18] = Default::default();
        cells[0] = rfc3339(std::time::SystemTime::now());
        cells[2] = "gap".into();
        cells[16] = lost.to_string();
        self.out.write_record(cells).map_err(into_io)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.header()?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures::record;

    fn render(recs: usize) -> String {
        let mut buf = Vec::new();
        {
            let mut sink = CsvSink::new(&mut buf);
            for _ in 0..recs {
                sink.write(&record()).unwrap();
            }
            sink.flush().unwrap();
        }
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn header_then_one_row_per_event_that_parses_back() {
        let text = render(2);
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(reader.headers().unwrap().len(), HEADER.len());
        let rows: Vec<_> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].len(), HEADER.len());
        assert_eq!(&rows[0][2], "close_unread_data");
        assert_eq!(&rows[0][7], "8080");
        assert_eq!(&rows[0][8], "::1");
    }

    #[test]
    fn hostile_names_cannot_break_rows_or_run_formulas() {
        let text = render(1);
        assert!(!text.contains('\x1b'));
        assert_eq!(text.lines().count(), 2, "{text}");
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let row = reader.records().next().unwrap().unwrap();
        assert_eq!(&row[11], "'=cmd|evil\\x1b[2J");
        assert_eq!(&row[13], "evil\\x1b[31m,\"x\"\\x0aname");
    }

    #[test]
    fn empty_export_still_has_a_header() {
        assert_eq!(render(0).lines().next().unwrap(), HEADER.join(","));
    }
}
