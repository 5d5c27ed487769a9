//! The per-kernel cause report: which RST causes the integration tests saw.
//!
//! Each test's `Tracer::stop` (rsttrace/tests/common) appends one line per
//! event to `$RSTTRACE_CAUSE_REPORT`: `test<TAB>direction<TAB>cause`. The host
//! suite and the VM suite both print the summary, so the difference between
//! kernels is visible side by side.

use std::{collections::BTreeMap, fs, path::Path};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub test: String,
    /// `event`: rsttrace reported it; `provoked`: a test made it happen.
    pub kind: RowKind,
    pub direction: String,
    pub cause: String,
    /// `certain` / `likely` for events; empty for provocations.
    pub confidence: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    Event,
    Provoked,
    /// A test that cannot work on the kernel; `confidence` holds why.
    NotApplicable,
}

impl Row {
    /// `kind<TAB>test<TAB>direction<TAB>cause<TAB>confidence`.
    pub fn parse(line: &str) -> Option<Row> {
        let mut f = line.trim_end_matches(['\r', '\n']).split('\t');
        let kind = match f.next()? {
            "event" => RowKind::Event,
            "provoked" => RowKind::Provoked,
            "not_applicable" => RowKind::NotApplicable,
            _ => return None,
        };
        let (test, direction, cause) = (f.next()?, f.next()?, f.next()?);
        Some(Row {
            test: test.to_string(),
            kind,
            direction: direction.to_string(),
            cause: cause.to_string(),
            confidence: f.next().unwrap_or("").to_string(),
        })
    }
}

impl Row {
    /// The line `parse` reads.
    pub fn to_line(&self) -> String {
        let kind = match self.kind {
            RowKind::Event => "event",
            RowKind::Provoked => "provoked",
            RowKind::NotApplicable => "not_applicable",
        };
        format!(
            "{kind}\t{}\t{}\t{}\t{}",
            self.test, self.direction, self.cause, self.confidence
        )
    }
}

pub fn read(path: &Path) -> Vec<Row> {
    fs::read_to_string(path)
        .map(|text| text.lines().filter_map(Row::parse).collect())
        .unwrap_or_default()
}

/// The table the issue asks for: cause, provoked by which tests, detected
/// how often, and with which labels.
pub fn print_summary(kernel: &str, rows: &[Row]) {
    let (not_applicable, rows): (Vec<Row>, Vec<Row>) = rows
        .iter()
        .cloned()
        .partition(|r| r.kind == RowKind::NotApplicable);
    let rows = rows.as_slice();
    for r in &not_applicable {
        eprintln!("not applicable on {kernel}: {}: {}", r.test, r.confidence);
    }
    eprintln!("causes on {kernel}:");
    if rows.is_empty() {
        eprintln!("  (none reported)");
        return;
    }
    eprintln!(
        "  {:<9} {:<20} {:<9} {:<9} {:<18} tests",
        "direction", "cause", "provoked", "detected", "label"
    );
    for ((direction, cause), group) in group(rows) {
        let provoked: Vec<&Row> = group
            .iter()
            .filter(|r| r.kind == RowKind::Provoked)
            .copied()
            .collect();
        let detected: Vec<&Row> = group
            .iter()
            .filter(|r| r.kind == RowKind::Event)
            .copied()
            .collect();
        let mut labels: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &detected {
            *labels.entry(r.confidence.as_str()).or_default() += 1;
        }
        let labels: Vec<String> = labels.iter().map(|(l, n)| format!("{l}:{n}")).collect();
        let tests: Vec<String> = dedup(&group.iter().map(|r| r.test.clone()).collect::<Vec<_>>());
        eprintln!(
            "  {:<9} {:<20} {:<9} {:<9} {:<18} {}",
            direction,
            cause,
            if provoked.is_empty() {
                "-".to_string()
            } else {
                format!("yes ({})", provoked.len())
            },
            detected.len(),
            labels.join(" "),
            tests.join(", ")
        );
    }
}

/// One table for several kernels: per direction/cause, which send hook
/// families saw it on each kernel ("-" for none), so a cause one kernel
/// cannot see stands out.
pub fn print_comparison(kernels: &[(&str, &[Row])]) {
    type Key = (String, String);
    let mut keys: Vec<Key> = kernels
        .iter()
        .flat_map(|(_, rows)| {
            rows.iter()
                .filter(|r| r.kind == RowKind::Event)
                .map(|r| (r.direction.clone(), r.cause.clone()))
        })
        .collect();
    keys.sort();
    keys.dedup();
    eprintln!("causes per kernel (send hook families that saw them):");
    let header: Vec<String> = kernels.iter().map(|(k, _)| format!("{k:<28}")).collect();
    eprintln!("  {:<32} {}", "", header.join(" "));
    for (direction, cause) in keys {
        let cells: Vec<String> = kernels
            .iter()
            .map(|(_, rows)| {
                let mut families: Vec<&str> = rows
                    .iter()
                    .filter(|r| {
                        r.kind == RowKind::Event && r.direction == direction && r.cause == cause
                    })
                    .map(|r| family(&r.test))
                    .collect();
                families.sort();
                families.dedup();
                let cell = if families.is_empty() {
                    "-".to_string()
                } else {
                    families.join(",")
                };
                format!("{cell:<28}")
            })
            .collect();
        eprintln!(
            "  {:<32} {}",
            format!("{direction} {cause}"),
            cells.join(" ")
        );
    }
}

/// "test[family]" → "family" (the integration tests tag each row).
fn family(test: &str) -> &str {
    test.rsplit_once('[')
        .and_then(|(_, f)| f.strip_suffix(']'))
        .unwrap_or("?")
}

fn group(rows: &[Row]) -> BTreeMap<(String, String), Vec<&Row>> {
    let mut by_cause: BTreeMap<(String, String), Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by_cause
            .entry((r.direction.clone(), r.cause.clone()))
            .or_default()
            .push(r);
    }
    by_cause
}

fn dedup(tests: &[String]) -> Vec<String> {
    let mut t = tests.to_vec();
    t.sort();
    t.dedup();
    t
}

/// Where docs/causes.md's text from `rsttrace explain --markdown` ends and
/// the table below begins (`KERNEL_TABLE_MARKER` in rsttrace/src/model/explain.rs,
/// whose test ignores what follows it; a test here checks they agree).
const DOC_MARKER: &str = "\n<!-- cause x kernel table: cargo xtask causes-doc -->\n";

/// One kernel's column of the table.
pub struct Column {
    /// "5.10", "6.18 (host)".
    pub label: String,
    /// Release and how it ran ("5.10.0-46-cloud-amd64, vm, short suite").
    pub detail: String,
    pub rows: Vec<Row>,
    /// The plan `rsttrace check` printed, if recorded.
    pub plan: Option<String>,
}

/// The cause × kernel × confidence table, in Markdown.
pub fn markdown_table(columns: &[Column]) -> String {
    let mut keys: Vec<(String, String)> = columns
        .iter()
        .flat_map(|c| {
            c.rows
                .iter()
                .filter(|r| r.kind != RowKind::NotApplicable)
                .map(|r| (r.direction.clone(), r.cause.clone()))
        })
        .collect();
    keys.sort();
    keys.dedup();
    let mut s = String::from(
        "\n## Causes per kernel\n\nGenerated by `cargo xtask causes-doc` from the last runs of \
         `cargo xtask test` (the host) and `cargo xtask vm-test --kernel all` (the VMs): for \
         each cause the integration tests provoked or rsttrace reported, with which confidence \
         each kernel reported it, and in how many tests. `provoked, not seen` means a test made it \
         happen and rsttrace did not report it under that cause on that kernel; `-` means no \
         test there provoked it (a shorter suite, or a test that cannot work on that kernel).\n\n",
    );
    for c in columns {
        s.push_str(&format!("- **{}**: {}", c.label, c.detail));
        if let Some(plan) = &c.plan {
            s.push_str(&format!("; plan `{plan}`"));
        }
        s.push('\n');
    }
    s.push_str("\n| direction | cause |");
    for c in columns {
        s.push_str(&format!(" {} |", c.label));
    }
    s.push_str("\n|---|---|");
    for _ in columns {
        s.push_str("---|");
    }
    s.push('\n');
    for (direction, cause) in keys {
        s.push_str(&format!("| {direction} | `{cause}` |"));
        for c in columns {
            let (direction, cause) = (&direction, &cause);
            let matching = |kind: RowKind| {
                c.rows.iter().filter(move |r| {
                    r.kind == kind && &r.direction == direction && &r.cause == cause
                })
            };
            // Per label, the tests that saw it (a storm test's thousands of
            // events count once).
            let mut labels: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for r in matching(RowKind::Event) {
                labels
                    .entry(r.confidence.as_str())
                    .or_default()
                    .push(&r.test);
            }
            let cell = if !labels.is_empty() {
                labels
                    .iter_mut()
                    .map(|(l, tests)| {
                        tests.sort_unstable();
                        tests.dedup();
                        let n = tests.len();
                        format!("{l} ({n} test{})", if n == 1 { "" } else { "s" })
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            } else if matching(RowKind::Provoked).next().is_some() {
                "provoked, not seen".to_string()
            } else {
                "-".to_string()
            };
            s.push_str(&format!(" {cell} |"));
        }
        s.push('\n');
    }
    let not_applicable: Vec<String> = columns
        .iter()
        .flat_map(|c| {
            c.rows
                .iter()
                .filter(|r| r.kind == RowKind::NotApplicable)
                .map(move |r| format!("- {}: `{}`: {}\n", c.label, r.test, r.confidence))
        })
        .collect();
    if !not_applicable.is_empty() {
        s.push_str("\nTests (or parts of them) that cannot work on a kernel, and why:\n\n");
        s.push_str(&not_applicable.concat());
    }
    s
}

/// Replaces the table after DOC_MARKER in `doc` (appending the marker when
/// it is missing).
pub fn replace_table(doc: &str, table: &str) -> String {
    let head = doc.split_once(DOC_MARKER).map_or(doc, |(head, _)| head);
    format!("{head}{DOC_MARKER}{table}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_and_group() {
        let rows: Vec<Row> = [
            "event\ta[tp_btf]\tsent\tport_not_open\tcertain",
            "provoked\ta[tp_btf]\tsent\tport_not_open\t",
            "event\tb[fentry]\tsent\tport_not_open\tlikely",
            "bad line",
        ]
        .into_iter()
        .filter_map(Row::parse)
        .collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].kind, RowKind::Provoked);
        assert_eq!(rows[2].confidence, "likely");
        let g = group(&rows);
        let tests: Vec<&str> = g[&("sent".to_string(), "port_not_open".to_string())]
            .iter()
            .map(|r| r.test.as_str())
            .collect();
        assert_eq!(tests, ["a[tp_btf]", "a[tp_btf]", "b[fentry]"]);
        assert_eq!(family("t[fentry]"), "fentry");
        assert_eq!(family("t"), "?");
    }

    #[test]
    fn the_doc_table_is_generated_after_the_marker() {
        let explain = include_str!("../../rsttrace/src/model/explain.rs");
        assert!(
            explain.contains(&format!("{DOC_MARKER:?}")),
            "rsttrace/src/model/explain.rs's KERNEL_TABLE_MARKER differs from DOC_MARKER"
        );
        let rows: Vec<Row> = [
            "event\ta[tp_btf]\tsent\tport_not_open\tcertain",
            "event\tb[tp_btf]\tsent\tport_not_open\tcertain",
            "provoked\ta[kprobe]\tsent\tlinger_zero\t",
        ]
        .into_iter()
        .filter_map(Row::parse)
        .collect();
        let columns = [
            Column {
                label: "6.18".into(),
                detail: "host".into(),
                rows: rows.clone(),
                plan: Some("send=tp_btf".into()),
            },
            Column {
                label: "5.10".into(),
                detail: "vm".into(),
                rows: vec![],
                plan: None,
            },
        ];
        let table = markdown_table(&columns);
        assert!(
            table.contains("| sent | `port_not_open` | certain (2 tests) | - |"),
            "{table}"
        );
        assert!(
            table.contains("| sent | `linger_zero` | provoked, not seen | - |"),
            "{table}"
        );
        let doc = replace_table("# Causes\ntext\n", &table);
        assert_eq!(replace_table(&doc, &table), doc);
        assert!(doc.starts_with("# Causes\ntext\n\n<!-- cause x kernel table"));
    }
}
