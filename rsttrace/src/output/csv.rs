//! CSV with a header row; the csv crate quotes commas, quotes and newlines.

use std::io::{self, Write};

use super::{Sink, rfc3339};
use crate::model::text::escape_control;
use crate::record::Classified;

/// Columns without `--stack`.
pub const COLUMNS: usize = 23;

pub const HEADER: [&str; COLUMNS] = [
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
    "container_id",
    "container_name",
    "image",
    "pod",
    "namespace",
];

/// Free text (process names; a kernel reason read back from a file) has its
/// control characters escaped, and gets a leading `'` when a spreadsheet
/// would run it as a formula.
pub fn cell_text(s: &str) -> String {
    let s = escape_control(s);
    if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.into_owned()
    }
}

pub fn row(rec: &Classified) -> [String; COLUMNS] {
    let e = &rec.event;
    let opt = |v: Option<String>| v.unwrap_or_default();
    let container = rec.owner_proc.as_ref().and_then(|p| p.container.as_ref());
    let names = container.and_then(|c| c.names.as_deref());
    // Runtime state files are root's, but names in them are chosen by
    // whoever deploys the container: free text.
    let name = |f: fn(&crate::enrich::containers::ContainerNames) -> &Option<String>| {
        opt(names.and_then(|n| f(n).as_deref()).map(cell_text))
    };
    [
        rfc3339(e.time),
        e.direction.as_str().into(),
        rec.cause.id.id().into(),
        rec.cause.confidence.as_str().into(),
        opt(e.reason().map(cell_text)),
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
        opt(container.and_then(|c| c.id.as_deref()).map(cell_text)),
        name(|n| &n.name),
        name(|n| &n.image),
        name(|n| &n.pod),
        name(|n| &n.namespace),
    ]
}

/// With `--stack`, after the others: each stack on one line, innermost
/// frame first (`close <- drop_connection <- main`).
pub const STACK_HEADER: [&str; 2] = ["kernel_stack", "user_stack"];

pub fn stack_cells(rec: &Classified) -> [String; 2] {
    let cell = |frames: &Option<Vec<String>>| {
        frames
            .as_deref()
            .map(|f| cell_text(&super::joined_frames(f)))
            .unwrap_or_default()
    };
    [cell(&rec.stacks.kernel), cell(&rec.stacks.user)]
}

pub struct CsvSink<W: Write> {
    out: csv::Writer<W>,
    header_written: bool,
    /// `--stack`: the two stack columns.
    stacks: bool,
}

impl<W: Write> CsvSink<W> {
    pub fn new(out: W, stacks: bool) -> CsvSink<W> {
        CsvSink {
            out: csv::Writer::from_writer(out),
            header_written: false,
            stacks,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_written {
            let extra = if self.stacks { &STACK_HEADER[..] } else { &[] };
            let header = HEADER.iter().chain(extra);
            self.out.write_record(header).map_err(into_io)?;
            self.header_written = true;
        }
        Ok(())
    }

    fn record(&mut self, cells: [String; COLUMNS], stacks: [String; 2]) -> io::Result<()> {
        let extra = if self.stacks { &stacks[..] } else { &[] };
        let record = cells.iter().chain(extra);
        self.out.write_record(record).map_err(into_io)
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
        self.record(row(rec), stack_cells(rec))
    }

    /// CSV has no room for a marker row that fits the columns; a row whose
    /// cause is `gap` and whose `unread` column carries the lost count does.
    fn write_gap(&mut self, lost: u64, at: std::time::SystemTime) -> io::Result<()> {
        self.header()?;
        let mut cells: [String; COLUMNS] = Default::default();
        cells[0] = rfc3339(at);
        cells[2] = "gap".into();
        cells[16] = lost.to_string();
        self.record(cells, Default::default())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.header()?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/schema.md lists the columns in this order.
    #[test]
    fn docs_schema_md_lists_the_columns() {
        let doc = include_str!("../../../docs/schema.md");
        let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
        let columns = format!("`{}`", HEADER.join(", "));
        assert!(doc.contains(&columns), "docs/schema.md lacks {columns}");
    }
    use crate::record::fixtures::record;

    fn render(recs: usize) -> String {
        let mut buf = Vec::new();
        {
            let mut sink = CsvSink::new(&mut buf, false);
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
    fn stack_columns_only_with_stack_and_quoted() {
        let mut rec = record();
        rec.stacks.user = Some(vec!["=evil, \"x\" (a.c:1)".into(), "main (a.c:9)".into()]);
        let mut buf = Vec::new();
        {
            let mut sink = CsvSink::new(&mut buf, true);
            sink.write(&rec).unwrap();
            sink.write_gap(1, std::time::SystemTime::now()).unwrap();
            sink.flush().unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().unwrap().clone();
        assert_eq!(headers.len(), HEADER.len() + 2);
        assert_eq!(&headers[COLUMNS], "kernel_stack");
        let rows: Vec<_> = reader.records().map(Result::unwrap).collect();
        assert_eq!(&rows[0][COLUMNS], "", "no kernel stack captured");
        assert_eq!(
            &rows[0][COLUMNS + 1],
            "'=evil, \"x\" (a.c:1) <- main (a.c:9)"
        );
        assert_eq!(rows[1].len(), HEADER.len() + 2, "gap rows keep the width");
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

    fn parse(text: &str) -> Vec<csv::StringRecord> {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(reader.headers().unwrap(), HEADER.as_slice());
        reader.records().map(Result::unwrap).collect()
    }

    #[test]
    fn newline_comma_and_quote_in_a_comm_keep_the_columns() {
        let mut rec = record();
        if let Some(p) = rec.event.process.as_mut() {
            p.comm = "a\x1b[31m\n,\"b".into();
        }
        let mut buf = Vec::new();
        {
            let mut sink = CsvSink::new(&mut buf, false);
            sink.write(&rec).unwrap();
            sink.flush().unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        assert!(!text.contains('\x1b'));
        let rows = parse(&text);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].len(), HEADER.len());
        assert_eq!(&rows[0][11], "a\\x1b[31m\\x0a,\"b");
        assert_eq!(&rows[0][13], "evil\\x1b[31m,\"x\"\\x0aname");
    }

    #[test]
    fn formula_prefixes_are_neutralised_only_in_free_text() {
        for lead in ["=", "+", "-", "@"] {
            assert_eq!(cell_text(&format!("{lead}x")), format!("'{lead}x"));
        }
        assert_eq!(cell_text("nginx"), "nginx");
        assert_eq!(cell_text("a=b"), "a=b");
        // A leading control character is escaped first, so `\x09=...` is inert.
        assert_eq!(cell_text("\t=1"), "\\x09=1");
        let mut rec = record();
        rec.event.kernel_reason = Some((0, "=HYPERLINK(\"x\")".into()));
        let r = row(&rec);
        assert_eq!(r[4], "'=HYPERLINK(\"x\")");
        // Numbers and names that are not free text stay as they are.
        rec.event.local = "[::1]:1".parse().unwrap();
        assert_eq!(row(&rec)[6], "::1");
    }

    #[test]
    fn ipv6_and_absent_facts() {
        let mut rec = record();
        rec.event.local = "[2001:db8::1]:443".parse().unwrap();
        rec.event.remote = "[2001:db8::2]:51234".parse().unwrap();
        rec.event.process = None;
        rec.event.kernel_reason = None;
        rec.event.packet = None;
        rec.event.socket = None;
        let r = row(&rec);
        assert_eq!(r[6], "2001:db8::1");
        assert_eq!(r[7], "443");
        assert_eq!(r[8], "2001:db8::2");
        assert_eq!(r[9], "51234");
        for i in [4, 10, 11, 15, 16] {
            assert_eq!(r[i], "", "column {}", HEADER[i]);
        }
        assert_eq!(r[12], "7");
        assert_eq!(r[14], "task");
        assert_eq!(r[17], "tp_btf:tcp_send_reset");
    }

    #[test]
    fn a_gap_is_a_row_with_the_lost_count() {
        let mut buf = Vec::new();
        {
            let mut sink = CsvSink::new(&mut buf, false);
            sink.write_gap(42, std::time::SystemTime::now()).unwrap();
            sink.write(&record()).unwrap();
            sink.flush().unwrap();
        }
        let rows = parse(&String::from_utf8(buf).unwrap());
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].len(), HEADER.len());
        assert_eq!(&rows[0][2], "gap");
        assert_eq!(&rows[0][16], "42");
        assert!(rows[0][0].ends_with('Z'));
        assert_eq!(&rows[1][2], "close_unread_data");
    }

    #[test]
    fn empty_export_still_has_a_header() {
        assert_eq!(render(0).lines().next().unwrap(), HEADER.join(","));
    }
}
