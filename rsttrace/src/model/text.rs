//! Text that came from other users (process names, command lines, paths,
//! replayed files) made safe to print: every output format and the stack
//! symbolizer escape through here.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Process names and command lines are chosen by whoever runs the process:
/// never let them reach a terminal or a file with control characters in them.
///
/// C0 controls, DEL and C1 controls (`U+0080..=U+009F`; `U+009B` is a CSI in
/// some terminals) become `\xNN`; Unicode bidirectional controls, which can
/// visually reorder the rest of a line, become `\u{NNNN}`. Idempotent: an
/// escaped string contains nothing left to escape.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    // Names and command lines are nearly always ASCII, where only C0 and
    // DEL need escaping; this runs on several strings of every event.
    let clean = if s.is_ascii() {
        !s.bytes().any(|b| b < 0x20 || b == 0x7f)
    } else {
        !s.chars().any(needs_escape)
    };
    if clean {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            let n = c as u32;
            if n <= 0xff {
                let _ = write!(out, "\\x{n:02x}");
            } else {
                let _ = write!(out, "\\u{{{n:04x}}}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

pub(crate) fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("nginx"), "nginx");
        assert_eq!(
            escape_control("a\x1b[31mb\nc\x7f"),
            "a\\x1b[31mb\\x0ac\\x7f"
        );
        assert_eq!(escape_control("x\u{9b}y"), "x\\x9by");
        assert_eq!(escape_control("\0\t\r\x1f"), "\\x00\\x09\\x0d\\x1f");
        // Bidi overrides could reorder the rest of a text line.
        assert_eq!(escape_control("a\u{202e}b"), "a\\u{202e}b");
        // Printable non-ASCII is kept; nothing allocates when nothing changes.
        assert!(matches!(escape_control("nginx: wörker"), Cow::Borrowed(_)));
    }

    proptest::proptest! {
        /// The ASCII shortcut decides as the per-character rule does.
        #[test]
        fn the_ascii_shortcut_changes_nothing(s in "[\\x00-\\x7f]{0,12}|.{0,12}") {
            let reference: String = s
                .chars()
                .map(|c| match c {
                    c if needs_escape(c) && (c as u32) <= 0xff => format!("\\x{:02x}", c as u32),
                    c if needs_escape(c) => format!("\\u{{{:04x}}}", c as u32),
                    c => c.to_string(),
                })
                .collect();
            proptest::prop_assert_eq!(escape_control(&s), reference);
        }
    }

    #[test]
    fn escaping_is_idempotent() {
        let once = escape_control("ev\x1b[31mil\n,\"\u{202e}\x7f").into_owned();
        assert_eq!(escape_control(&once), once);
        assert!(once.chars().all(|c| !c.is_control()));
    }
}
