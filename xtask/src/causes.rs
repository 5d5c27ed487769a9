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
    pub direction: String,
    pub cause: String,
}

impl Row {
    pub fn parse(line: &str) -> Option<Row> {
        let mut f = line.trim_end().split('\t');
        let (test, direction, cause) = (f.next()?, f.next()?, f.next()?);
        Some(Row {
            test: test.to_string(),
            direction: direction.to_string(),
            cause: cause.to_string(),
        })
    }
}

pub fn read(path: &Path) -> Vec<Row> {
    fs::read_to_string(path)
        .map(|text| text.lines().filter_map(Row::parse).collect())
        .unwrap_or_default()
}

pub fn print_summary(kernel: &str, rows: &[Row]) {
    eprintln!("causes detected on {kernel}:");
    if rows.is_empty() {
        eprintln!("  (none reported)");
        return;
    }
    for ((direction, cause), tests) in group(rows) {
        eprintln!(
            "  {:<9} {:<22} {}× in {}",
            direction,
            cause,
            tests.len(),
            dedup(&tests).join(", ")
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
        .flat_map(|(_, rows)| rows.iter().map(|r| (r.direction.clone(), r.cause.clone())))
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
                    .filter(|r| r.direction == direction && r.cause == cause)
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

fn group(rows: &[Row]) -> BTreeMap<(String, String), Vec<String>> {
    let mut by_cause: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in rows {
        by_cause
            .entry((r.direction.clone(), r.cause.clone()))
            .or_default()
            .push(r.test.clone());
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
            "a\tsent\tport_not_open",
            "b\tsent\tport_not_open",
            "bad line",
        ]
        .into_iter()
        .filter_map(Row::parse)
        .collect();
        assert_eq!(rows.len(), 2);
        let g = group(&rows);
        assert_eq!(
            g[&("sent".to_string(), "port_not_open".to_string())],
            ["a", "b"]
        );
        assert_eq!(family("t[fentry]"), "fentry");
        assert_eq!(family("t"), "?");
    }
}
