//! The end-of-run summary of a run's `Stats`: what was seen, and what was not.

use std::fmt::Write as _;

use crate::model::event::Direction;
use crate::model::explain::Lang;
use crate::output::stats::Stats;

/// Rows of the "top" lines.
const TOP: usize = 5;

/// The exit summary as a `--log-format json` status line.
pub(crate) fn to_json(stats: &Stats) -> serde_json::Value {
    let counts = stats.by_cause();
    let mut rows: Vec<_> = counts.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let by_direction = |d: Direction| -> u64 {
        counts
            .iter()
            .filter(|((_, dir), _)| *dir == d)
            .map(|(_, n)| n)
            .sum()
    };
    serde_json::json!({
        "event": "summary",
        "total": stats.total(),
        "sent": by_direction(Direction::Sent),
        "received": by_direction(Direction::Received),
        "abort": by_direction(Direction::Abort),
        "causes": rows
            .iter()
            .map(|((cause, dir), n)| {
                serde_json::json!({"cause": cause.id(), "direction": dir.as_str(), "count": n})
            })
            .collect::<Vec<_>>(),
        "lost": stats.lost,
        "filtered": stats.filtered,
        "filtered_userspace": stats.filtered_userspace,
        "read_errors": stats.read_errors,
        "decode_errors": stats.decode_errors,
        "write_errors": stats.write_errors,
        "kernel_drops": stats
            .kernel_drops
            .kinds()
            .iter()
            .map(|(key, _, n)| (key.to_string(), serde_json::json!(n)))
            .collect::<serde_json::Map<_, _>>(),
        "aborts_merged": stats.aborts_merged,
        "otlp_dropped": stats.otlp_dropped,
        "stacks": stats.stacks.map(|st| serde_json::json!({
            "not_captured": st.not_captured,
            "skipped": st.skipped,
            "missing": st.missing,
            "unsymbolized": st.unsymbolized,
        })),
    })
}

/// The table printed on stderr at exit, in `lang` (`--lang zh`: headings
/// and directions in Chinese; cause ids stay, they are the schema). Each
/// cause row's last word is its count, and the loss line starts with
/// `lost` and ends with the number (`cargo xtask bench` reads both).
pub(crate) fn render(stats: &Stats, lang: Lang) -> String {
    let h = Headings::of(lang);
    let mut s = format!("\n{}\n", h.title);
    let row = |s: &mut String, cause: &str, dir: &str, n: &dyn std::fmt::Display| {
        let n = n.to_string();
        let _ = writeln!(
            s,
            "  {} {} {}{n}",
            pad(cause, 20),
            pad(dir, 9),
            " ".repeat(9usize.saturating_sub(columns(&n)))
        );
    };
    row(&mut s, h.cause, h.direction, &h.count);
    let counts = stats.by_cause();
    let mut rows: Vec<_> = counts.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for ((cause, dir), n) in rows {
        row(&mut s, cause.id(), h.direction_name(*dir), n);
    }
    row(&mut s, h.total, "", &stats.total());
    if stats.ports().next().is_some() {
        let ports = top(stats.ports().map(|(p, n)| (p.to_string(), n)));
        let _ = writeln!(s, "  {}{ports}", h.top_ports);
    }
    let (owners, owners_other) = stats.owners();
    let mut owners = owners.peekable();
    if owners.peek().is_some() {
        let mut owners = top(owners.map(|(pid, comm, n)| {
            (
                format!("{pid}/{}", crate::model::text::escape_control(comm)),
                n,
            )
        }));
        if owners_other > 0 {
            let _ = write!(owners, ", {} ({owners_other})", h.others);
        }
        let _ = writeln!(s, "  {}{owners}", h.top_owners);
    }
    let _ = writeln!(s, "  {}{}", pad(h.lost, 25), stats.lost);
    let _ = writeln!(s, "  {}{}", pad(h.filtered_kernel, 25), stats.filtered);
    for (label, n) in [
        (h.filtered_userspace, stats.filtered_userspace),
        (h.read_errors, stats.read_errors),
        (h.undecodable, stats.decode_errors),
        (h.not_written, stats.write_errors),
    ] {
        if n > 0 {
            let _ = writeln!(s, "  {}{n}", pad(label, 25));
        }
    }
    for (_, label, n) in stats.kernel_drops.kinds() {
        if n > 0 {
            let _ = writeln!(s, "  {:<24} {n}", format!("{label}:"));
        }
    }
    if stats.aborts_merged > 0 {
        let _ = writeln!(s, "  aborts merged into their RST: {}", stats.aborts_merged);
    }
    if let Some(st) = stats.stacks {
        let _ = writeln!(
            s,
            "  {}{} (+{} {})",
            pad(h.stacks_not_captured, 25),
            st.not_captured,
            st.missing,
            h.unreadable
        );
        let _ = writeln!(s, "  {}{}", pad(h.unsymbolized, 25), st.unsymbolized);
        if st.skipped > 0 {
            let _ = writeln!(s, "  {}{}", pad(h.stacks_skipped, 25), st.skipped);
        }
    }
    if let Some(n) = stats.otlp_dropped {
        let _ = writeln!(s, "  {}{n}", pad(h.otlp_dropped, 25));
    }
    if stats.lost > 0 {
        let _ = writeln!(s, "  {}", h.lost_hint);
    }
    s
}

/// The summary's words, in each language: one table, so a heading cannot
/// be translated in one place and forgotten in another.
struct Headings {
    title: &'static str,
    cause: &'static str,
    direction: &'static str,
    count: &'static str,
    /// sent, received, abort.
    directions: [&'static str; 3],
    total: &'static str,
    top_ports: &'static str,
    top_owners: &'static str,
    others: &'static str,
    lost: &'static str,
    filtered_kernel: &'static str,
    filtered_userspace: &'static str,
    read_errors: &'static str,
    undecodable: &'static str,
    not_written: &'static str,
    stacks_not_captured: &'static str,
    unreadable: &'static str,
    unsymbolized: &'static str,
    stacks_skipped: &'static str,
    otlp_dropped: &'static str,
    lost_hint: &'static str,
}

const EN: Headings = Headings {
    title: "rsttrace summary",
    cause: "CAUSE",
    direction: "DIRECTION",
    count: "COUNT",
    directions: ["sent", "received", "abort"],
    total: "total",
    top_ports: "top local ports: ",
    top_owners: "top owners: ",
    others: "others",
    lost: "lost (ring buffer full): ",
    filtered_kernel: "filtered in kernel: ",
    filtered_userspace: "filtered in userspace: ",
    read_errors: "kernel read errors: ",
    undecodable: "undecodable records: ",
    not_written: "events not written: ",
    stacks_not_captured: "stacks not captured: ",
    unreadable: "unreadable",
    unsymbolized: "frames not symbolized: ",
    stacks_skipped: "events without stacks (--stack-budget): ",
    otlp_dropped: "OTLP records dropped: ",
    lost_hint: "events were lost: raise --ring-buffer or narrow the filters (--port, --pid)",
};

const ZH: Headings = Headings {
    title: "rsttrace 汇总",
    cause: "原因",
    direction: "方向",
    count: "次数",
    directions: ["发送", "接收", "中止"],
    total: "合计",
    top_ports: "最多的本地端口：",
    top_owners: "最多的进程：",
    others: "其他",
    lost: "丢失（环形缓冲区满）：",
    filtered_kernel: "内核中过滤：",
    filtered_userspace: "用户态过滤：",
    read_errors: "内核读取错误：",
    undecodable: "无法解码的记录：",
    not_written: "未写出的事件：",
    stacks_not_captured: "未捕获的调用栈：",
    unreadable: "无法读取",
    unsymbolized: "未符号化的栈帧：",
    stacks_skipped: "未取调用栈的事件（--stack-budget）：",
    otlp_dropped: "OTLP 丢弃的记录：",
    lost_hint: "有事件丢失：请加大 --ring-buffer 或收窄过滤条件（--port、--pid）",
};

impl Headings {
    fn of(lang: Lang) -> &'static Headings {
        match lang {
            Lang::En => &EN,
            Lang::Zh => &ZH,
        }
    }

    fn direction_name(&self, d: Direction) -> &'static str {
        match d {
            Direction::Sent => self.directions[0],
            Direction::Received => self.directions[1],
            Direction::Abort => self.directions[2],
        }
    }
}

/// `s` padded with spaces to `width` terminal columns (CJK characters take two).
fn pad(s: &str, width: usize) -> String {
    format!("{s}{}", " ".repeat(width.saturating_sub(columns(s))))
}

fn columns(s: &str) -> usize {
    s.chars().map(|c| if is_wide(c) { 2 } else { 1 }).sum()
}

/// East Asian wide: CJK ideographs and full-width punctuation.
fn is_wide(c: char) -> bool {
    matches!(c, '\u{2e80}'..='\u{9fff}' | '\u{ac00}'..='\u{d7a3}' | '\u{f900}'..='\u{faff}' | '\u{fe30}'..='\u{fe4f}' | '\u{ff00}'..='\u{ff60}' | '\u{ffe0}'..='\u{ffe6}')
}

/// `name (count), ...` for the `TOP` largest counts, ties by name.
fn top(counts: impl Iterator<Item = (String, u64)>) -> String {
    let mut all: Vec<(String, u64)> = counts.collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.iter()
        .take(TOP)
        .map(|(name, n)| format!("{name} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cause::CauseId;
    use crate::output::stats::{MAX_OWNERS, StackSummary};
    use crate::record::fixtures::record;

    /// The table in English.
    fn in_english(stats: &Stats) -> String {
        render(stats, Lang::En)
    }

    #[test]
    fn counts_per_cause_and_direction_and_reports_losses() {
        let mut sum = Stats::default();
        sum.add(&record());
        sum.add(&record());
        let mut rec = record();
        rec.event.direction = Direction::Received;
        sum.add(&rec);
        assert_eq!(sum.total(), 3);
        let counts = sum.by_cause();
        assert_eq!(counts[&(CauseId::CloseUnreadData, Direction::Sent)], 2);
        assert_eq!(counts[&(CauseId::CloseUnreadData, Direction::Received)], 1);
        let text = in_english(&sum);
        assert!(
            text.contains("close_unread_data    sent              2"),
            "{text}"
        );
        assert!(text.contains("lost (ring buffer full): 0"), "{text}");
        assert!(text.contains("top local ports: 8080 (3)"), "{text}");
        assert!(
            text.contains("top owners: 7/=cmd|evil\\x1b[2J (3)"),
            "{text}"
        );
        assert!(!text.contains("raise --ring-buffer"));
        sum.lost = 5;
        assert!(in_english(&sum).contains("raise --ring-buffer"));
    }

    #[test]
    fn json_summary_counts_per_direction_and_losses() {
        let mut sum = Stats::default();
        sum.add(&record());
        sum.add(&record());
        let mut rec = record();
        rec.event.direction = Direction::Received;
        sum.add(&rec);
        sum.lost = 4;
        let j = to_json(&sum);
        assert_eq!(j["event"], "summary");
        assert_eq!(j["total"], 3);
        assert_eq!(j["sent"], 2);
        assert_eq!(j["received"], 1);
        assert_eq!(j["abort"], 0);
        assert_eq!(j["lost"], 4);
        assert_eq!(j["causes"][0]["cause"], "close_unread_data");
        assert_eq!(j["causes"][0]["direction"], "sent");
        assert_eq!(j["causes"][0]["count"], 2);
        assert!(j["stacks"].is_null());
    }

    #[test]
    fn owner_counts_are_bounded() {
        let mut sum = Stats::default();
        let mut rec = record();
        for pid in 0..(MAX_OWNERS as u32 + 10) {
            rec.event.process.as_mut().unwrap().pid = pid;
            sum.add(&rec);
        }
        let (owners, others) = sum.owners();
        assert_eq!(owners.count(), MAX_OWNERS);
        assert_eq!(others, 10);
        assert!(in_english(&sum).contains(", others (10)"));
    }

    #[test]
    fn kernel_drops_are_reported_when_there_are_any() {
        let mut sum = Stats::default();
        assert!(!in_english(&sum).contains("forgotten"));
        sum.kernel_drops.packets_lost = 3;
        sum.kernel_drops.owners_evicted = 11;
        let text = in_english(&sum);
        assert!(text.contains("  RST segments not captured: 3\n"), "{text}");
        assert!(
            text.contains("  owners forgotten (map full): 11\n"),
            "{text}"
        );
        assert!(!text.contains("closes forgotten"), "{text}");
    }

    #[test]
    fn an_empty_run_still_reports_the_counters() {
        let text = in_english(&Stats::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "",
                "rsttrace summary",
                "  CAUSE                DIRECTION     COUNT",
                "  total                                  0",
                "  lost (ring buffer full): 0",
                "  filtered in kernel:      0",
            ]
        );
    }

    #[test]
    fn rows_are_aligned_biggest_first() {
        let mut sum = Stats::default();
        let mut refused = record();
        refused.cause.id = CauseId::PeerRefused;
        refused.event.direction = Direction::Received;
        for _ in 0..12 {
            sum.add(&refused);
        }
        sum.add(&record());
        let text = in_english(&sum);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[3], "  peer_refused         received         12");
        assert_eq!(lines[4], "  close_unread_data    sent              1");
        assert_eq!(lines[5], "  total                                 13");
        // Counts end in the same column as the header's COUNT.
        assert!(lines[2..=5].iter().all(|l| l.len() == lines[2].len()));
    }

    #[test]
    fn the_chinese_summary_has_no_english_headings() {
        let mut sum = Stats::default();
        let mut rec = record();
        sum.add(&rec);
        rec.event.direction = Direction::Abort;
        sum.add(&rec);
        sum.lost = 3;
        sum.filtered_userspace = 1;
        sum.read_errors = 1;
        sum.decode_errors = 1;
        sum.write_errors = 1;
        sum.stacks = Some(StackSummary::default());
        sum.otlp_dropped = Some(4);
        for _ in 0..=MAX_OWNERS {
            rec.event.process.as_mut().unwrap().pid += 1;
            sum.add(&rec);
        }
        let text = render(&sum, Lang::Zh);
        let english = crate::model::explain::english_in(&text);
        assert!(english.is_empty(), "{english:?} in\n{text}");
        assert!(text.contains("合计") && text.contains("中止"), "{text}");
        // The English table says the same in English.
        assert!(!crate::model::explain::english_in(&in_english(&sum)).is_empty());
        // Columns stay aligned on a terminal: the header's count ends where the rows' do.
        let lines: Vec<&str> = text.lines().collect();
        let width = |l: &str| {
            l.chars()
                .map(|c| if is_wide(c) { 2 } else { 1 })
                .sum::<usize>()
        };
        assert_eq!(width(lines[2]), width(lines[3]), "{text}");
    }

    #[test]
    fn error_counters_show_only_when_something_went_wrong() {
        let mut sum = Stats::default();
        let quiet = in_english(&sum);
        for word in ["userspace", "read errors", "undecodable", "not written"] {
            assert!(!quiet.contains(word), "{word}: {quiet}");
        }
        sum.filtered = 3;
        sum.filtered_userspace = 4;
        sum.read_errors = 5;
        sum.decode_errors = 6;
        sum.write_errors = 7;
        sum.lost = 8;
        let text = in_english(&sum);
        for line in [
            "  lost (ring buffer full): 8",
            "  filtered in kernel:      3",
            "  filtered in userspace:   4",
            "  kernel read errors:      5",
            "  undecodable records:     6",
            "  events not written:      7",
            "  events were lost: raise --ring-buffer or narrow the filters (--port, --pid)",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        // What `cargo xtask bench` reads: the last word of the `lost` line.
        let lost = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("lost"))
            .and_then(|l| l.split_whitespace().last())
            .unwrap();
        assert_eq!(lost, "8");
    }
}
