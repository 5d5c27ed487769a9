//! One aligned, human-readable line per RST.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::UNIX_EPOCH;

use super::{Sink, TextOptions};
use crate::model::event::{Direction, Event};
use crate::model::evidence::Fact;
use crate::model::text::escape_control;
use crate::record::Classified;

/// Column widths. Endpoints fit two IPv4 ends or typical IPv6 ones (longer
/// ones push the rest of that line right); STATE fits `NEW_SYN_RECV`, CAUSE
/// every cause id, PROCESS a 7-digit pid and a 15-byte comm.
const W_TIME: usize = 12;
const W_ENDPOINTS: usize = 47;
const W_STATE: usize = 12;
const W_CAUSE: usize = 18;
const W_PROCESS: usize = 23;

/// The column titles, aligned with `line`.
pub(crate) fn header() -> String {
    format!(
        "{:<W_TIME$} {:<6} {:<W_ENDPOINTS$} {:<W_STATE$} {:<W_CAUSE$} {:<W_PROCESS$} {}",
        "TIME(UTC)", "DIR", "LOCAL -> REMOTE", "STATE", "CAUSE", "PROCESS", "DETAILS"
    )
}

/// One RST as one line (no trailing newline): time, direction, endpoints,
/// state, cause (coloured only when `opts.color`), process, details.
#[cfg(test)]
pub(crate) fn line(rec: &Classified, opts: TextOptions) -> String {
    let mut s = String::new();
    write_line(&mut s, rec, opts);
    s
}

/// `line` appended to `s`: the sink reuses one buffer for every event.
fn write_line(s: &mut String, rec: &Classified, opts: TextOptions) {
    let e = &rec.event;
    clock(s, e);
    s.push_str(match e.direction {
        Direction::Sent => " SENT > ",
        Direction::Received => " RECV < ",
        Direction::Abort => " ABORT  ",
    });
    let start = s.len();
    push_addr(s, e.local);
    s.push_str(" -> ");
    push_addr(s, e.remote);
    pad(s, start, W_ENDPOINTS);
    s.push(' ');
    let start = s.len();
    s.push_str(e.state.name());
    pad(s, start, W_STATE);
    s.push(' ');
    if opts.color {
        s.push_str(match e.direction {
            Direction::Sent => "\x1b[31m",
            Direction::Received => "\x1b[33m",
            Direction::Abort => "\x1b[35m",
        });
    }
    let start = s.len();
    s.push_str(rec.cause.id.id());
    pad(s, start, W_CAUSE);
    if opts.color {
        s.push_str("\x1b[0m");
    }
    s.push(' ');
    let start = s.len();
    match &e.process {
        Some(p) => {
            s.push_str(itoa::Buffer::new().format(p.pid));
            s.push('/');
            s.push_str(&escape_control(&p.comm));
        }
        None => s.push('-'),
    }
    pad(s, start, W_PROCESS);
    s.push(' ');
    details(s, rec);
}

/// `a.b.c.d:port` or `[v6]:port`, as `SocketAddr`'s Display writes them;
/// IPv4 without core::fmt, which cost a fifth of a text line.
fn push_addr(s: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(itoa::Buffer::new().format(octet));
            }
            s.push(':');
            s.push_str(itoa::Buffer::new().format(v4.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(s, "{addr}");
        }
    }
}

/// Pads what was written since `start` with spaces to `width` characters,
/// as `{:<width}` would.
fn pad(s: &mut String, start: usize, width: usize) {
    let written = &s[start..];
    let written = if written.is_ascii() {
        written.len()
    } else {
        written.chars().count()
    };
    for _ in written..width {
        s.push(' ');
    }
}

/// `HH:MM:SS.mmm` in UTC (always W_TIME characters).
fn clock(s: &mut String, e: &Event) {
    let d = e.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() % 86_400;
    let two = |s: &mut String, n: u64| {
        s.push(char::from(b'0' + (n / 10) as u8));
        s.push(char::from(b'0' + (n % 10) as u8));
    };
    two(s, secs / 3600);
    s.push(':');
    two(s, secs / 60 % 60);
    s.push(':');
    two(s, secs % 60);
    s.push('.');
    let ms = u64::from(d.subsec_millis());
    s.push(char::from(b'0' + (ms / 100) as u8));
    two(s, ms % 100);
}

/// `reason=NAME pkt=S ...`. Reason names and evidence come from the kernel
/// and the classifier, but `rsttrace read` takes them from a file: escaped too.
fn details(s: &mut String, rec: &Classified) {
    let e = &rec.event;
    s.push_str("reason=");
    s.push_str(&escape_control(e.reason().unwrap_or("-")));
    if let Some(p) = e.packet {
        s.push_str(" pkt=");
        s.push_str(p.flags.notation().as_str());
        if p.len > 0 {
            s.push_str(" len=");
            s.push_str(itoa::Buffer::new().format(p.len));
        }
    }
    // The evidence shown, in this order: one pass over the (small) map
    // rather than a lookup per key.
    const SHOWN: [&str; 11] = [
        "netfilter_hook",
        "device",
        "unread_bytes_lost",
        "errno",
        "tw_substate",
        "probes_out",
        "process_exit",
        "syn_ack_late_ms",
        "follows_abort",
        "accept_queue",
        "peer_idle_s",
    ];
    let mut shown = [None; SHOWN.len()];
    for (key, v) in rec.cause.evidence.iter() {
        if let Some(i) = SHOWN.iter().position(|k| *k == key) {
            shown[i] = Some(v);
        }
    }
    for (key, v) in SHOWN.iter().zip(shown) {
        if let Some(v) = v {
            s.push(' ');
            s.push_str(key);
            s.push('=');
            match v.as_str() {
                Some(text) => s.push_str(&escape_control(text)),
                // Numbers, or JSON text in which serde_json escaped controls.
                // serde_json escapes C0 controls but not C1 or bidi ones.
                None => s.push_str(&escape_control(&v.to_string())),
            }
        }
    }
    if let Some(prior) = rec.cause.evidence.get("prior") {
        prior_phrase(s, prior);
    }
    // Kubernetes users think in pods: ` pod=shop/checkout-7d9f5c-x2k4p`.
    let names = rec
        .owner_proc
        .as_ref()
        .and_then(|p| p.container.as_ref())
        .and_then(|c| c.names.as_deref());
    if let Some(pod) = names.and_then(|n| n.pod.as_deref()) {
        s.push_str(" pod=");
        if let Some(ns) = names.and_then(|n| n.namespace.as_deref()) {
            s.push_str(&escape_control(ns));
            s.push('/');
        }
        s.push_str(&escape_control(pod));
    }
    if rec.cause.confidence == crate::model::cause::Confidence::Likely {
        s.push_str(" (likely)");
    }
}

/// ` prior=listener_closed by 4242/nginx 3.0s ago`: who had the 4-tuple
/// (or the port) before, in the words an on-call engineer wants.
fn prior_phrase(s: &mut String, prior: &Fact) {
    let text = |k: &str| escape_control(prior[k].as_str().unwrap_or("?")).into_owned();
    let _ = write!(s, " prior={}", text("kind"));
    if let Some(pid) = prior["pid"].as_u64() {
        let _ = write!(s, " by {pid}/{}", text("comm"));
    }
    if prior["errno"].is_string() {
        let _ = write!(s, " with {}", text("errno"));
    }
    if let Some(ms) = prior["ago_ms"].as_u64() {
        let _ = write!(s, " {:.1}s ago", ms as f64 / 1000.0);
    }
}

/// `--stack`: the frames, indented under the event line, innermost first
/// (empty without stacks).
pub(crate) fn stack_lines(rec: &Classified) -> String {
    let mut s = String::new();
    if rec.stacks.skipped {
        s.push_str("    stacks skipped (--stack-budget)\n");
    }
    for (label, frames) in [("kernel", &rec.stacks.kernel), ("user", &rec.stacks.user)] {
        let Some(frames) = frames else {
            continue;
        };
        let _ = writeln!(s, "    {label} stack:");
        for f in frames {
            let _ = writeln!(s, "      {}", escape_control(f));
        }
    }
    s
}

pub(crate) struct TextSink<W: Write> {
    out: W,
    opts: TextOptions,
    header_written: bool,
    /// The line being written, reused from event to event.
    line: String,
}

impl<W: Write> TextSink<W> {
    pub(crate) fn new(out: W, opts: TextOptions) -> TextSink<W> {
        TextSink {
            out,
            opts,
            header_written: false,
            line: String::new(),
        }
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn write(&mut self, rec: &Classified) -> io::Result<()> {
        if !self.header_written {
            writeln!(self.out, "{}", header())?;
            self.header_written = true;
        }
        self.line.clear();
        write_line(&mut self.line, rec, self.opts);
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())?;
        self.out.write_all(stack_lines(rec).as_bytes())
    }

    fn write_gap(&mut self, lost: u64, _at: std::time::SystemTime) -> io::Result<()> {
        writeln!(self.out, "*** {lost} events lost (ring buffer full) ***")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fixtures::record;

    #[test]
    fn a_line_says_who_what_and_why() {
        let l = line(
            &record(),
            TextOptions {
                color: false,
                ..TextOptions::default()
            },
        );
        assert!(
            l.starts_with("11:06:40.123 SENT > 127.0.0.1:8080 -> [::1]:40000"),
            "{l}"
        );
        assert!(l.contains("CLOSE"), "{l}");
        assert!(l.contains("close_unread_data"), "{l}");
        assert!(l.contains("7/=cmd|evil\\x1b[2J"), "{l}");
        assert!(
            l.contains("reason=TCP_ABORT_ON_CLOSE pkt=P. len=9 unread_bytes_lost=100"),
            "{l}"
        );
    }

    #[test]
    fn stacks_are_indented_under_the_event() {
        let mut rec = record();
        assert_eq!(stack_lines(&rec), "");
        rec.stacks.kernel = Some(vec![
            "tcp_send_active_reset+0x1a".into(),
            "tcp_close+0x2b".into(),
        ]);
        rec.stacks.user = Some(vec!["f\x1b[2J (a.c:1)".into()]);
        assert_eq!(
            stack_lines(&rec),
            "    kernel stack:\n      tcp_send_active_reset+0x1a\n      tcp_close+0x2b\n    user stack:\n      f\\x1b[2J (a.c:1)\n"
        );
    }

    #[test]
    fn no_escape_sequences_unless_colour_is_asked_for() {
        let plain = line(
            &record(),
            TextOptions {
                color: false,
                ..TextOptions::default()
            },
        );
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let coloured = line(
            &record(),
            TextOptions {
                color: true,
                ..TextOptions::default()
            },
        );
        assert!(coloured.contains("\x1b[31m"));
    }

    const PLAIN: TextOptions = TextOptions {
        color: false,
        lang: crate::model::explain::Lang::En,
        stacks: false,
    };

    /// A SYN to a closed port, as in the README.
    fn port_not_open() -> Classified {
        let mut rec = record();
        let e = &mut rec.event;
        e.time = UNIX_EPOCH + std::time::Duration::from_millis(1_795_042_263_123);
        e.local = "127.0.0.1:45000".parse().unwrap();
        e.remote = "127.0.0.1:51234".parse().unwrap();
        e.state = crate::model::event::TcpState::NONE;
        e.kernel_reason = Some((2, "NO_SOCKET".into()));
        if let Some(p) = e.packet.as_mut() {
            p.flags = crate::model::event::TcpFlags(crate::model::event::TcpFlags::SYN);
            p.len = 0;
        }
        e.process = None;
        rec.cause.id = crate::model::cause::CauseId::PortNotOpen;
        rec.cause.evidence.clear();
        rec
    }

    #[test]
    fn the_whole_line() {
        assert_eq!(
            line(&port_not_open(), PLAIN),
            format!(
                "22:51:03.123 SENT > {:<47} NONE         port_not_open      {:<23} reason=NO_SOCKET pkt=S",
                "127.0.0.1:45000 -> 127.0.0.1:51234", "-"
            )
        );
    }

    /// Byte offsets where each column starts (after a run of spaces).
    fn column_starts(l: &str) -> Vec<usize> {
        let b = l.as_bytes();
        (1..b.len())
            .filter(|&i| b[i] != b' ' && b[i - 1] == b' ')
            .collect()
    }

    #[test]
    fn columns_line_up_with_each_other_and_the_header() {
        let mut long = record();
        long.event.state = crate::model::event::TcpState::NEW_SYN_RECV;
        long.event.direction = Direction::Received;
        long.cause.id = crate::model::cause::CauseId::KeepaliveTimeout;
        if let Some(p) = long.event.process.as_mut() {
            p.pid = 4_194_304;
            p.comm = "fifteen_chars_x".into();
        }
        long.event.remote = "192.168.100.200:65535".parse().unwrap();
        long.event.local = "192.168.100.201:65535".parse().unwrap();
        let lines = [line(&port_not_open(), PLAIN), line(&long, PLAIN)];
        // After TIME: DIR (2 words), ENDPOINTS (3), STATE, CAUSE, PROCESS, DETAILS.
        let starts = |l: &str| {
            let c = column_starts(l);
            [c[0], c[2], c[5], c[6], c[7], c[8]]
        };
        assert_eq!(starts(&lines[0]), starts(&lines[1]), "{lines:#?}");
        let h = header();
        let hc = column_starts(&h);
        // After TIME(UTC): DIR, LOCAL -> REMOTE, STATE, CAUSE, PROCESS, DETAILS.
        assert_eq!(
            [hc[0], hc[1], hc[4], hc[5], hc[6], hc[7]],
            starts(&lines[0]),
            "{h}"
        );
    }

    proptest::proptest! {
        #[test]
        fn addresses_read_as_std_writes_them(
            v4 in proptest::prelude::any::<std::net::SocketAddrV4>(),
            v6 in proptest::prelude::any::<std::net::SocketAddrV6>(),
        ) {
            for addr in [SocketAddr::V4(v4), SocketAddr::V6(v6)] {
                let mut s = String::new();
                push_addr(&mut s, addr);
                proptest::prop_assert_eq!(s, addr.to_string());
            }
        }
    }

    #[test]
    fn ipv6_ends_are_bracketed() {
        let mut rec = port_not_open();
        rec.event.local = "[2001:db8::1]:443".parse().unwrap();
        rec.event.remote = "[2001:db8::2]:51234".parse().unwrap();
        let l = line(&rec, PLAIN);
        assert!(
            l.contains(" [2001:db8::1]:443 -> [2001:db8::2]:51234 "),
            "{l}"
        );
    }

    #[test]
    fn a_hostile_comm_cannot_inject_anything() {
        let mut rec = record();
        if let Some(p) = rec.event.process.as_mut() {
            p.comm = "a\x1b[31m\n,\"b\u{9b}2J".into();
        }
        rec.event.kernel_reason = Some((0, "X\x1b]0;t\x07".into()));
        rec.cause
            .evidence
            .insert("errno".into(), serde_json::json!("E\x1b[2J"));
        for opts in [
            PLAIN,
            TextOptions {
                color: true,
                ..PLAIN
            },
        ] {
            let l = line(&rec, opts);
            assert_eq!(l.lines().count(), 1, "{l:?}");
            assert!(!l.contains('\u{9b}') && !l.contains('\x07'), "{l:?}");
            assert!(l.contains("7/a\\x1b[31m\\x0a,\"b\\x9b2J"), "{l}");
            assert!(l.contains("reason=X\\x1b]0;t\\x07"), "{l}");
            assert!(l.contains("errno=E\\x1b[2J"), "{l}");
            // Only the colour around the cause, when asked for.
            let escapes = l.matches('\x1b').count();
            assert_eq!(escapes, if opts.color { 2 } else { 0 }, "{l:?}");
        }
    }

    #[test]
    fn received_resets_are_yellow_sent_are_red() {
        let colour = TextOptions {
            color: true,
            ..PLAIN
        };
        let mut rec = record();
        let sent = line(&rec, colour);
        assert!(
            sent.contains("\x1b[31mclose_unread_data \x1b[0m"),
            "{sent:?}"
        );
        rec.event.direction = Direction::Received;
        let recv = line(&rec, colour);
        assert!(recv.contains(" RECV < "), "{recv}");
        assert!(
            recv.contains("\x1b[33mclose_unread_data \x1b[0m"),
            "{recv:?}"
        );
    }

    #[test]
    fn likely_causes_and_gaps_say_so() {
        let mut rec = record();
        rec.cause.confidence = crate::model::cause::Confidence::Likely;
        assert!(line(&rec, PLAIN).ends_with(" (likely)"));
        let mut out = Vec::new();
        TextSink::new(&mut out, PLAIN)
            .write_gap(9, std::time::SystemTime::now())
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "*** 9 events lost (ring buffer full) ***\n"
        );
    }

    #[test]
    fn times_before_the_epoch_do_not_panic() {
        let mut rec = record();
        rec.event.time = UNIX_EPOCH - std::time::Duration::from_secs(5);
        assert!(line(&rec, PLAIN).starts_with("00:00:00.000 "));
    }

    #[test]
    fn the_prior_close_is_told_in_words_and_escaped() {
        let mut rec = record();
        rec.cause.evidence.insert(
            "prior".into(),
            serde_json::json!({"kind": "listener_closed", "ago_ms": 3000,
                               "pid": 4242, "comm": "ng\u{1b}inx"}),
        );
        rec.cause
            .evidence
            .insert("process_exit".into(), serde_json::json!("SIGKILL"));
        let mut d = String::new();
        details(&mut d, &rec);
        assert!(
            d.contains(" prior=listener_closed by 4242/ng\\x1binx 3.0s ago"),
            "{d}"
        );
        assert!(d.contains(" process_exit=SIGKILL"), "{d}");
        assert!(!d.contains('\x1b'));
    }

    #[test]
    fn ownerless_events_show_a_dash() {
        let mut rec = record();
        rec.event.process = None;
        rec.event.kernel_reason = None;
        let l = line(&rec, TextOptions::default());
        assert!(l.contains(" - "), "{l}");
        assert!(l.contains("reason=-"), "{l}");
    }
}
