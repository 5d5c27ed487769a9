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
}

impl Row {
    /// `kind<TAB>test<TAB>direction<TAB>cause<TAB>confidence`.
    pub fn parse(line: &str) -> Option<Row> {
        let mut f = line.trim_end_matches(['\r', '\n']).split('\t');
        let kind = match f.next()? {
            "event" => RowKind::Event,
            "provoked" => RowKind::Provoked,
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

pub fn read(path: &Path) -> Vec<Row> {
    fs::read_to_string(path)
        .map(|text| text.lines().filter_map(Row::parse).collect())
        .unwrap_or_default()
}

/// The table the issue asks for: cause, provoked by which tests, detected
/// how often, and with which labels.
pub fn print_summary(kernel: &str, rows: &[Row]) {
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
}
