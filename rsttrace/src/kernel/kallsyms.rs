//! Which kernel functions exist under which symbol, from /proc/kallsyms.
//!
//! The compiler may rename a static function it specialised
//! (`tcp_v4_send_reset.isra.0`, `.constprop.0`) or inline it away entirely;
//! a kprobe must name the symbol that exists. Pure: the caller reads the file.

use std::collections::{BTreeMap, BTreeSet};

/// `wanted` name → the symbol to attach to: the exact name if it is a text
/// symbol, else the first suffixed variant (never a `.cold` split-off part).
pub fn find_functions(kallsyms: &str, wanted: &BTreeSet<&str>) -> BTreeMap<String, String> {
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    for line in kallsyms.lines() {
        // "ffffffff81a2b3c0 t tcp_v4_send_reset	[module]"
        let mut words = line.split_whitespace();
        let (Some(_addr), Some(kind), Some(symbol)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        if !matches!(kind, "t" | "T") {
            continue;
        }
        let base = symbol.split_once('.').map_or(symbol, |(b, _)| b);
        if !wanted.contains(base) || symbol.ends_with(".cold") || symbol.contains(".cold.") {
            continue;
        }
        let exact = base == symbol;
        match found.get(base) {
            Some(existing) if existing == base || !exact => {}
            _ => {
                found.insert(base.to_string(), symbol.to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_win_suffixes_are_accepted_cold_parts_are_not() {
        let text = "\
ffffffff81000000 t tcp_v4_send_reset.cold
ffffffff81000010 t tcp_v6_send_reset.isra.0
ffffffff81000020 T tcp_reset
ffffffff81000030 t tcp_send_active_reset.constprop.0
ffffffff81000040 T tcp_send_active_reset
ffffffff81000050 d tcp_v4_send_reset
ffffffff81000060 t unrelated_function
";
        let wanted: BTreeSet<&str> = [
            "tcp_v4_send_reset",
            "tcp_v6_send_reset",
            "tcp_reset",
            "tcp_send_active_reset",
        ]
        .into();
        let f = find_functions(text, &wanted);
        assert_eq!(f.get("tcp_v4_send_reset"), None, "only .cold and data");
        assert_eq!(f["tcp_v6_send_reset"], "tcp_v6_send_reset.isra.0");
        assert_eq!(f["tcp_reset"], "tcp_reset");
        assert_eq!(f["tcp_send_active_reset"], "tcp_send_active_reset");
        assert_eq!(f.len(), 3);
    }
}
