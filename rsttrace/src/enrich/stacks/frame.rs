//! How a stack frame reads in the outputs. Pure.
//!
//! Kernel: `tcp_send_active_reset+0x1a`, `nft_do_chain+0x42 [nf_tables]`.
//! User: `drop_connection (client.c:42)` with line info, `__close+0x10
//! (libc.so.6)` with a symbol only, `/usr/bin/app+0x1234` (the file offset,
//! for addr2line) without one. Anything unresolved: the raw address.
//! Names and paths come from files anyone can create: control characters
//! are escaped here, once, for every output.

use crate::kernel::kallsyms::KernelSymbol;
use crate::model::text::escape_control;

pub fn kernel(addr: u64, sym: Option<KernelSymbol<'_>>) -> String {
    match sym {
        Some(KernelSymbol {
            name,
            offset,
            module: Some(module),
        }) => format!("{name}+{offset:#x} [{module}]"),
        Some(KernelSymbol { name, offset, .. }) => format!("{name}+{offset:#x}"),
        None => raw(addr),
    }
}

/// A user symbol as the symbolizer found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserSymbol<'a> {
    pub name: &'a str,
    pub offset: u64,
    pub file: Option<&'a str>,
    pub line: Option<u32>,
}

/// Longest name, file or path shown in a frame: symbol names and paths
/// come from files anyone can write, and frame texts are cached by the
/// thousand, so each is bounded.
pub const MAX_PART: usize = 256;

/// `s` escaped and cut to `MAX_PART` bytes (at a character boundary), `…` marking a cut.
fn part(s: &str) -> String {
    let escaped = escape_control(s);
    if escaped.len() <= MAX_PART {
        return escaped.into_owned();
    }
    let mut end = MAX_PART;
    while !escaped.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &escaped[..end])
}

pub fn user_symbol(sym: UserSymbol<'_>, binary: &str) -> String {
    let name = part(sym.name);
    match (sym.file, sym.line) {
        (Some(file), Some(line)) => format!("{name} ({}:{line})", part(file)),
        _ => {
            let base = binary.rsplit('/').next().unwrap_or(binary);
            format!("{name}+{:#x} ({})", sym.offset, part(base))
        }
    }
}

/// A frame in a file without a usable symbol: where in the file it is.
pub fn file_offset(binary: &str, offset: u64) -> String {
    format!("{}+{offset:#x}", part(binary))
}

pub fn raw(addr: u64) -> String {
    format!("{addr:#x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_frames() {
        let sym = |name, offset, module| {
            Some(KernelSymbol {
                name,
                offset,
                module,
            })
        };
        assert_eq!(
            kernel(1, sym("tcp_send_active_reset", 0x1a, None)),
            "tcp_send_active_reset+0x1a"
        );
        assert_eq!(
            kernel(1, sym("nft_do_chain", 0, Some("nf_tables"))),
            "nft_do_chain+0x0 [nf_tables]"
        );
        assert_eq!(kernel(0xffffffff81000000, None), "0xffffffff81000000");
    }

    #[test]
    fn user_frames_prefer_source_lines() {
        let with_line = UserSymbol {
            name: "drop_connection_with_unread_data",
            offset: 0x2a,
            file: Some("close_unread.c"),
            line: Some(42),
        };
        assert_eq!(
            user_symbol(with_line, "/tmp/x/close_unread"),
            "drop_connection_with_unread_data (close_unread.c:42)"
        );
        let symbol_only = UserSymbol {
            name: "__close",
            offset: 0x10,
            file: None,
            line: None,
        };
        assert_eq!(
            user_symbol(symbol_only, "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            "__close+0x10 (libc.so.6)"
        );
        assert_eq!(file_offset("/usr/bin/app", 0x1234), "/usr/bin/app+0x1234");
    }

    #[test]
    fn hostile_names_are_escaped() {
        let evil = UserSymbol {
            name: "f\x1b[2J",
            offset: 0,
            file: Some("a\nb.c"),
            line: Some(1),
        };
        assert_eq!(user_symbol(evil, "/x"), "f\\x1b[2J (a\\x0ab.c:1)");
        assert_eq!(file_offset("/tmp/\x07bin", 1), "/tmp/\\x07bin+0x1");
    }

    #[test]
    fn hostile_names_and_paths_are_bounded() {
        let long = "é".repeat(10_000);
        let sym = UserSymbol {
            name: &long,
            offset: 1,
            file: Some(&long),
            line: Some(1),
        };
        let text = user_symbol(sym, &long);
        assert!(text.len() < 3 * MAX_PART, "{}", text.len());
        assert!(text.contains('…'));
        assert!(file_offset(&long, 0).len() < 2 * MAX_PART);
    }
}
