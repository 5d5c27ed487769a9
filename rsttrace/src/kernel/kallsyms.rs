//! Kernel symbols from /proc/kallsyms: which functions exist under which
//! name (for kprobes), where the preempt count's per-CPU variables are
//! (`preempt`), and address → function (for `--stack`).
//!
//! The compiler may rename a static function it specialised
//! (`tcp_v4_send_reset.isra.0`, `.constprop.0`) or inline it away entirely;
//! a kprobe must name the symbol that exists.
//!
//! The file is ~5 MB and 10^5 lines, so it is read and scanned once per run
//! (`read`, when the loader probes the kernel, a line at a time), and with
//! `--stack` the text symbols are kept (`take_symbols`). Frames are resolved here rather
//! than by blazesym's kernel source (measured on 6.18, 122,252 lines):
//! loading takes about as long (170–230 ms here, 167–195 ms there), but
//! resolving 10^5 addresses one at a time takes 26–41 ms here against
//! 820–895 ms (305–404 ms in one batch), at half the memory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

const PROC_KALLSYMS: &str = "/proc/kallsyms";

/// The text symbols `read` scanned, until `--stack` takes them.
static KEPT: Mutex<Option<KernelSymbols>> = Mutex::new(None);
/// Whether `read` keeps the text symbols (`keep_text_symbols`).
static KEEP_TEXT: AtomicBool = AtomicBool::new(false);

/// What one pass over kallsyms gives.
#[derive(Debug, Default)]
pub(crate) struct Kallsyms {
    /// A wanted function's name → the symbol to attach to: the exact name if
    /// it is a text symbol, else the first suffixed variant (never a `.cold`
    /// split-off part).
    pub(crate) functions: BTreeMap<String, String>,
    /// The wanted data symbols that are listed, with their addresses.
    pub(crate) data: BTreeMap<&'static str, u64>,
    /// Every text symbol, for `--stack`.
    pub(crate) symbols: KernelSymbols,
}

/// Reads and scans /proc/kallsyms, line by line (the whole text would be
/// the biggest allocation of start-up). The text symbols are kept for
/// `take_symbols` rather than returned (their `symbols` is empty), and
/// only after `keep_text_symbols`: without `--stack` nothing resolves
/// addresses, and the table was a third of start-up's peak memory.
pub(crate) fn read(functions: &BTreeSet<&str>, data: &[&'static str]) -> std::io::Result<Kallsyms> {
    let keep = KEEP_TEXT.load(Ordering::Relaxed);
    let mut scan = scan_file(functions, data, keep)?;
    if keep {
        *KEPT.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::mem::take(&mut scan.symbols));
    }
    Ok(scan)
}

/// `read` keeps the text symbols from now on (`--stack`).
pub(crate) fn keep_text_symbols() {
    KEEP_TEXT.store(true, Ordering::Relaxed);
}

/// The text symbols `read` kept, or /proc/kallsyms scanned now if it was
/// not read (an unreadable file resolves nothing).
pub(crate) fn take_symbols() -> KernelSymbols {
    let kept = KEPT.lock().unwrap_or_else(|e| e.into_inner()).take();
    kept.unwrap_or_else(|| {
        scan_file(&BTreeSet::new(), &[], true)
            .map(|scan| scan.symbols)
            .unwrap_or_default()
    })
}

fn scan_file(
    functions: &BTreeSet<&str>,
    data: &[&'static str],
    text: bool,
) -> std::io::Result<Kallsyms> {
    let mut reader = BufReader::new(File::open(PROC_KALLSYMS)?);
    let mut scan = Kallsyms::default();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        scan.line(&line, functions, data, text);
    }
    scan.symbols.finish();
    Ok(scan)
}

impl Kallsyms {
    /// One pass over a kallsyms text. Without privileges every address
    /// reads 0 (kptr_restrict): names are still found, addresses are 0 and
    /// the symbol table resolves nothing.
    pub(crate) fn scan(text: &str, functions: &BTreeSet<&str>, data: &[&'static str]) -> Kallsyms {
        let mut scan = Kallsyms::default();
        for line in text.lines() {
            scan.line(line, functions, data, true);
        }
        scan.symbols.finish();
        scan
    }

    /// One line: "ffffffff81a2b3c0 t tcp_v4_send_reset\t[module]".
    fn line(&mut self, line: &str, functions: &BTreeSet<&str>, data: &[&'static str], text: bool) {
        let mut words = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (words.next(), words.next(), words.next())
        else {
            return;
        };
        if let Some(&wanted) = data.iter().find(|&&d| d == name)
            && let Ok(addr) = u64::from_str_radix(addr, 16)
        {
            self.data.insert(wanted, addr);
        }
        if !matches!(kind, "t" | "T" | "w" | "W") {
            return;
        }
        if matches!(kind, "t" | "T") {
            pick_function(&mut self.functions, functions, name);
        }
        if text {
            let module = words
                .next()
                .and_then(|m| m.strip_prefix('[')?.strip_suffix(']'))
                .unwrap_or("");
            self.symbols.push(addr, name, module);
        }
    }
}

fn pick_function(found: &mut BTreeMap<String, String>, wanted: &BTreeSet<&str>, symbol: &str) {
    let base = symbol.split_once('.').map_or(symbol, |(b, _)| b);
    if !wanted.contains(base) || symbol.ends_with(".cold") || symbol.contains(".cold.") {
        return;
    }
    let exact = base == symbol;
    match found.get(base) {
        Some(existing) if existing == base || !exact => {}
        _ => {
            found.insert(base.to_string(), symbol.to_string());
        }
    }
}

/// Kernel text symbols sorted by address, for resolving stack frames.
///
/// kallsyms has ~10^5 text symbols: names live in one string and each entry
/// is an address and a span, about a third of the memory of one String each.
#[derive(Debug, Default)]
pub(crate) struct KernelSymbols {
    /// Sorted by address.
    entries: Vec<SymbolEntry>,
    text: String,
}

#[derive(Debug, Clone, Copy)]
struct SymbolEntry {
    addr: u64,
    start: u32,
    name_len: u16,
    module_len: u16,
}

/// A resolved kernel address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelSymbol<'a> {
    pub(crate) name: &'a str,
    /// Bytes from the start of the symbol.
    pub(crate) offset: u64,
    /// The module, for symbols not in vmlinux.
    pub(crate) module: Option<&'a str>,
}

impl KernelSymbols {
    fn push(&mut self, addr: &str, name: &str, module: &str) {
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            return;
        };
        let (Ok(name_len), Ok(module_len), Ok(start)) = (
            u16::try_from(name.len()),
            u16::try_from(module.len()),
            u32::try_from(self.text.len()),
        ) else {
            return;
        };
        if addr == 0 {
            return;
        }
        self.text.push_str(name);
        self.text.push_str(module);
        self.entries.push(SymbolEntry {
            addr,
            start,
            name_len,
            module_len,
        });
    }

    fn finish(&mut self) {
        self.entries.sort_by_key(|e| e.addr);
        self.entries.shrink_to_fit();
        self.text.shrink_to_fit();
    }

    /// For tests: the text symbols of a kallsyms text.
    #[cfg(test)]
    pub(crate) fn parse(kallsyms: &str) -> KernelSymbols {
        Kallsyms::scan(kallsyms, &BTreeSet::new(), &[]).symbols
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The symbol `addr` falls in: the last one starting at or below it.
    /// kallsyms has no sizes, so an address past the last symbol is
    /// attributed to it; one below the first is unknown.
    pub(crate) fn resolve(&self, addr: u64) -> Option<KernelSymbol<'_>> {
        let i = self
            .entries
            .partition_point(|e| e.addr <= addr)
            .checked_sub(1)?;
        let e = self.entries[i];
        let start = e.start as usize;
        let name_end = start + usize::from(e.name_len);
        let module = &self.text[name_end..name_end + usize::from(e.module_len)];
        Some(KernelSymbol {
            name: &self.text[start..name_end],
            offset: addr - e.addr,
            module: (!module.is_empty()).then_some(module),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
ffffffff81000100 T tcp_reset
ffffffff81000000 T _stext
ffffffff81000200 t tcp_send_active_reset
ffffffff81000180 d some_data
0000000000000000 A fixed_percpu_data
ffffffffc0001000 t nft_do_chain\t[nf_tables]
ffffffff81000300 W weak_function
";

    #[test]
    fn addresses_resolve_to_the_enclosing_symbol() {
        let syms = KernelSymbols::parse(TABLE);
        assert_eq!(syms.len(), 5, "data and absolute symbols are skipped");
        let at = |addr| syms.resolve(addr).map(|s| (s.name, s.offset, s.module));
        assert_eq!(at(0xffffffff81000100), Some(("tcp_reset", 0, None)));
        assert_eq!(at(0xffffffff810001ff), Some(("tcp_reset", 0xff, None)));
        // The data symbol in between does not end tcp_reset.
        assert_eq!(at(0xffffffff81000180), Some(("tcp_reset", 0x80, None)));
        assert_eq!(
            at(0xffffffff81000210),
            Some(("tcp_send_active_reset", 0x10, None))
        );
        assert_eq!(at(0xffffffff81000300), Some(("weak_function", 0, None)));
        assert_eq!(
            at(0xffffffffc0001042),
            Some(("nft_do_chain", 0x42, Some("nf_tables")))
        );
    }

    #[test]
    fn below_the_first_symbol_or_unprivileged_is_unknown() {
        let syms = KernelSymbols::parse(TABLE);
        assert_eq!(syms.resolve(0xffffffff80ffffff), None);
        assert_eq!(syms.resolve(0), None);
        assert_eq!(
            syms.resolve(0xffffffff81000000).map(|s| s.name),
            Some("_stext")
        );
        // kptr_restrict hides every address.
        let hidden = KernelSymbols::parse(
            "0000000000000000 T tcp_reset\n0000000000000000 t tcp_send_active_reset\n",
        );
        assert!(hidden.is_empty());
        assert_eq!(hidden.resolve(0xffffffff81000100), None);
    }

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
        let f = Kallsyms::scan(text, &wanted, &[]).functions;
        assert_eq!(f.get("tcp_v4_send_reset"), None, "only .cold and data");
        assert_eq!(f["tcp_v6_send_reset"], "tcp_v6_send_reset.isra.0");
        assert_eq!(f["tcp_reset"], "tcp_reset");
        assert_eq!(f["tcp_send_active_reset"], "tcp_send_active_reset");
        assert_eq!(f.len(), 3);
    }
}
