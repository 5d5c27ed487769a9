//! The JSON Lines writer, schema v1 (documented in docs/schema.md).
//!
//! Written by hand into one reused buffer rather than through serde: under
//! an RST storm this is the tracer's hottest code, and serde's per-field
//! machinery and escaping cost more than everything else in userspace.
//! The output is byte for byte what serde_json writes (tests check it).

use std::io::{self, Write};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::collect::counters::KernelDrops;
use crate::enrich::procinfo::Container;
use crate::model::event::{Event, Owner, Task};
use crate::model::evidence::{Evidence, Fact};
use crate::model::explain::Lang;
use crate::model::text::escape_control;
use crate::output::{Sink, printable_time};
use crate::record::Classified;

pub(crate) const SCHEMA_VERSION: u32 = 1;

/// One event as one line of JSON (no trailing newline). The tests' form:
/// the sink writes into its reused buffer instead.
#[cfg(test)]
pub(crate) fn format(rec: &Classified) -> String {
    let mut w = Writer::default();
    w.record(rec, Lang::En);
    w.into_string()
}

/// Marks lost events in the stream, so a reader knows the file has a hole.
#[cfg(test)]
pub(crate) fn format_gap(lost: u64, now: SystemTime) -> String {
    format_drops(lost, &KernelDrops::default(), now)
}

/// A gap record with the other kernel drops since the last one: each kind
/// that is not zero, by its key (`packets_lost`, `owners_evicted`, ...).
#[cfg(test)]
pub(crate) fn format_drops(lost: u64, drops: &KernelDrops, now: SystemTime) -> String {
    let mut w = Writer::default();
    w.gap(lost, drops, now);
    w.into_string()
}

pub(crate) struct JsonSink<W: Write> {
    out: W,
    lang: Lang,
    line: Writer,
}

impl<W: Write> JsonSink<W> {
    pub(crate) fn new(out: W, lang: Lang) -> JsonSink<W> {
        JsonSink {
            out,
            lang,
            line: Writer::default(),
        }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn write(&mut self, rec: &Classified) -> io::Result<()> {
        self.line.buf.clear();
        self.line.record(rec, self.lang);
        self.line.buf.push(b'\n');
        self.out.write_all(&self.line.buf)
    }

    fn write_gap(&mut self, lost: u64, at: SystemTime) -> io::Result<()> {
        self.line.buf.clear();
        self.line.gap(lost, &KernelDrops::default(), at);
        self.line.buf.push(b'\n');
        self.out.write_all(&self.line.buf)
    }

    fn write_drops(&mut self, drops: &KernelDrops, at: SystemTime) -> io::Result<()> {
        self.line.buf.clear();
        self.line.gap(0, drops, at);
        self.line.buf.push(b'\n');
        self.out.write_all(&self.line.buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// `,"name":` as one literal, copied in one go (names need no escaping).
macro_rules! key {
    ($w:expr, $name:literal) => {
        $w.raw(concat!(",\"", $name, "\":").as_bytes())
    };
}

/// A line under construction, and the formatted date of the last second
/// seen: a storm's events share it, so it is formatted once per second.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
    /// `YYYY-MM-DDTHH:MM:SS.` of `second` (seconds since the epoch).
    date: Option<(u64, [u8; 20])>,
}

impl Writer {
    #[cfg(test)]
    fn into_string(self) -> String {
        // Only `str`s and ASCII go in, so this is UTF-8; lossy is never lossy.
        String::from_utf8(self.buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Keys and their order follow docs/schema.md; `{"v":1,"time":...`.
    fn record(&mut self, rec: &Classified, lang: Lang) {
        let e: &Event = &rec.event;
        let proc_info = rec.owner_proc.as_ref();
        self.raw(b"{\"v\":");
        self.uint(SCHEMA_VERSION.into());
        self.raw(b",\"time\":");
        self.time(e.time);
        key!(self, "direction");
        self.ident(e.direction.as_str());
        key!(self, "cause");
        self.ident(rec.cause.id.id());
        key!(self, "confidence");
        self.ident(rec.cause.confidence.as_str());
        key!(self, "explanation");
        self.ident(crate::model::explain::explanation(rec.cause.id, lang));
        // Names from kernel BTF; from `rsttrace read`, whatever the file says.
        key!(self, "kernel_reason");
        self.opt_hostile(e.reason());
        key!(self, "state");
        self.ident(e.state.name());
        key!(self, "local_addr");
        self.ip(e.local.ip());
        key!(self, "local_port");
        self.uint(e.local.port().into());
        key!(self, "remote_addr");
        self.ip(e.remote.ip());
        key!(self, "remote_port");
        self.uint(e.remote.port().into());
        key!(self, "pid");
        self.opt_uint(e.process.as_ref().map(|p| p.pid.into()));
        key!(self, "comm");
        self.opt_hostile(e.process.as_ref().map(|p| p.comm.as_str()));
        key!(self, "owner");
        self.owner(e);
        key!(self, "owner_unknown");
        self.opt_ident(e.owner.unknown_reason());
        key!(self, "cmdline");
        self.opt_hostile(proc_info.and_then(|p| p.cmdline.as_deref()));
        key!(self, "container");
        match proc_info.and_then(|p| p.container.as_ref()) {
            Some(c) => self.container(c),
            None => self.null(),
        }
        key!(self, "netns");
        // The kernel's view (socket or device); the owner's /proc otherwise.
        self.opt_uint(
            e.netns
                .map(u64::from)
                .or_else(|| proc_info.and_then(|p| p.netns)),
        );
        key!(self, "actor");
        self.task(&e.actor);
        key!(self, "context");
        self.ident(e.context.name());
        self.raw(b"}");
        key!(self, "hook");
        self.ident(e.hook);
        key!(self, "packet");
        match e.packet {
            Some(p) => {
                self.raw(b"{\"flags\":");
                self.str(p.flags.notation().as_str());
                key!(self, "seq");
                self.uint(p.seq.into());
                key!(self, "ack");
                self.uint(p.ack.into());
                key!(self, "len");
                self.uint(p.len.into());
                key!(self, "window");
                self.uint(p.window.into());
                key!(self, "ttl");
                self.uint(p.ttl.into());
                self.raw(b"}");
            }
            None => self.null(),
        }
        key!(self, "socket");
        match e.socket {
            Some(s) => {
                self.raw(b"{\"cookie\":");
                self.uint(s.cookie);
                key!(self, "full");
                self.bool(s.full);
                key!(self, "dead");
                self.bool(s.dead);
                key!(self, "linger");
                self.opt_uint(s.linger.map(u64::from));
                key!(self, "keepalive");
                self.bool(s.keepalive);
                key!(self, "peer_fin");
                self.bool(s.peer_fin);
                key!(self, "shutdown");
                self.uint(s.shutdown.into());
                key!(self, "unread");
                self.uint(s.unread.into());
                key!(self, "unsent");
                self.uint(s.unsent.into());
                key!(self, "unacked");
                self.uint(s.unacked.into());
                key!(self, "probes_out");
                self.uint(s.probes_out.into());
                key!(self, "sk_err");
                self.uint(s.sk_err.into());
                key!(self, "tw_substate");
                self.opt_ident(s.tw_substate.map(|t| t.name()));
                key!(self, "cgroup_id");
                self.opt_uint(s.cgroup_id);
                self.raw(b"}");
            }
            None => self.null(),
        }
        key!(self, "exit_signal");
        self.opt_uint(e.exit_signal.map(u64::from));
        key!(self, "evidence");
        self.evidence(&rec.cause.evidence);
        // --stack; absent when not captured. Frames name files and symbols
        // of the traced programs: hostile text.
        if let Some(frames) = &rec.stacks.kernel {
            key!(self, "kernel_stack");
            self.frames(frames);
        }
        if let Some(frames) = &rec.stacks.user {
            key!(self, "user_stack");
            self.frames(frames);
        }
        if rec.stacks.skipped {
            key!(self, "stack_skipped");
            self.raw(b"true");
        }
        self.raw(b"}");
    }

    fn frames(&mut self, frames: &[String]) {
        self.raw(b"[");
        for (i, f) in frames.iter().enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            self.hostile(f);
        }
        self.raw(b"]");
    }

    /// `{"v":1,"time":...,"gap":{"lost":N}}`.
    fn gap(&mut self, lost: u64, drops: &KernelDrops, now: SystemTime) {
        self.raw(b"{\"v\":");
        self.uint(SCHEMA_VERSION.into());
        self.raw(b",\"time\":");
        self.time(now);
        self.raw(b",\"gap\":{\"lost\":");
        self.uint(lost);
        for (key, _, n) in drops.kinds() {
            if n > 0 {
                self.raw(b",\"");
                self.raw(key.as_bytes());
                self.raw(b"\":");
                self.uint(n);
            }
        }
        self.raw(b"}}");
    }

    /// The socket's owner: `source` says how it is known (`tracked`:
    /// remembered from its own connect/listen/close; `listener`: the
    /// listener's on its port; `actor`: it ran the code).
    fn owner(&mut self, e: &Event) {
        let (uid, cgroup_id, source) = match e.owner {
            Owner::Tracked { uid, cgroup_id } => (Some(uid), Some(cgroup_id), "tracked"),
            Owner::Listener { uid, cgroup_id } => (Some(uid), Some(cgroup_id), "listener"),
            Owner::Actor => (None, None, "actor"),
            Owner::Prior => (None, None, "prior"),
            _ => return self.null(),
        };
        let Some(p) = &e.process else {
            return self.null();
        };
        self.task(p);
        key!(self, "uid");
        self.opt_uint(uid.map(u64::from));
        key!(self, "cgroup_id");
        self.opt_uint(cgroup_id);
        key!(self, "source");
        self.ident(source);
        self.raw(b"}");
    }

    /// `{"pid":N,"tid":N,"comm":"..."`, left open for the caller's fields.
    fn task(&mut self, t: &Task) {
        self.raw(b"{\"pid\":");
        self.uint(t.pid.into());
        key!(self, "tid");
        self.uint(t.tid.into());
        key!(self, "comm");
        self.hostile(&t.comm);
    }

    fn container(&mut self, c: &Container) {
        self.raw(b"{\"runtime\":");
        self.ident(c.runtime);
        key!(self, "id");
        self.opt_hostile(c.id.as_deref());
        key!(self, "pod_uid");
        self.opt_hostile(c.pod_uid.as_deref());
        key!(self, "unit");
        self.opt_hostile(c.unit.as_deref());
        // Chosen by whoever deploys the container: hostile text.
        let names = c.names.as_deref();
        key!(self, "name");
        self.opt_hostile(names.and_then(|n| n.name.as_deref()));
        key!(self, "image");
        self.opt_hostile(names.and_then(|n| n.image.as_deref()));
        key!(self, "pod");
        self.opt_hostile(names.and_then(|n| n.pod.as_deref()));
        key!(self, "namespace");
        self.opt_hostile(names.and_then(|n| n.namespace.as_deref()));
        self.raw(b"}");
    }

    /// RFC 3339 UTC with nanoseconds, clamped to what RFC 3339 can print.
    fn time(&mut self, t: SystemTime) {
        let d = printable_time(t)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let second = d.as_secs();
        let date = match self.date {
            Some((s, date)) if s == second => date,
            _ => {
                let whole = UNIX_EPOCH + Duration::from_secs(second);
                let text = humantime::format_rfc3339_nanos(whole).to_string();
                let mut date = [0u8; 20];
                date.copy_from_slice(&text.as_bytes()[..20]);
                self.date = Some((second, date));
                date
            }
        };
        self.buf.push(b'"');
        self.buf.extend_from_slice(&date);
        let mut nanos = [b'0'; 9];
        let mut n = d.subsec_nanos();
        for digit in nanos.iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        self.buf.extend_from_slice(&nanos);
        self.buf.extend_from_slice(b"Z\"");
    }

    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                self.buf.push(b'"');
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b'.');
                    }
                    self.uint(octet.into());
                }
                self.buf.push(b'"');
            }
            // Rare, and hexadecimal with `::` compression: leave it to std.
            IpAddr::V6(v6) => {
                let _ = write!(self.buf, "\"{v6}\"");
            }
        }
    }

    /// A JSON value as serde_json writes it (evidence is small and mostly
    /// strings and integers).
    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.null(),
            Value::Bool(b) => self.bool(*b),
            Value::Number(n) => match n.as_u64() {
                Some(u) => self.uint(u),
                None => {
                    let _ = serde_json::to_writer(&mut self.buf, n);
                }
            },
            // Evidence replayed from a file carries anything.
            Value::String(s) => self.hostile(s),
            Value::Array(items) => {
                self.buf.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b',');
                    }
                    self.value(item);
                }
                self.buf.push(b']');
            }
            Value::Object(map) => self.object(map),
        }
    }

    fn evidence(&mut self, facts: &Evidence) {
        self.members(facts.iter(), Self::fact);
    }

    fn fact(&mut self, fact: &Fact) {
        match fact {
            Fact::Text(s) => self.hostile(s),
            Fact::Uint(n) => self.uint(*n),
            Fact::Int(n) => self.raw(itoa::Buffer::new().format(*n).as_bytes()),
            Fact::Bool(b) => self.bool(*b),
            Fact::Facts(facts) => self.evidence(facts),
            Fact::Json(v) => self.value(v),
        }
    }

    fn object(&mut self, map: &Map<String, Value>) {
        self.members(map.iter().map(|(k, v)| (k.as_str(), v)), Self::value);
    }

    /// `{"name":value,...}`; names read back from a file are anyone's text.
    fn members<'a, V>(
        &mut self,
        members: impl Iterator<Item = (&'a str, V)>,
        mut value: impl FnMut(&mut Self, V),
    ) {
        self.buf.push(b'{');
        for (i, (name, v)) in members.enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.hostile(name);
            self.buf.push(b':');
            value(self, v);
        }
        self.buf.push(b'}');
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn null(&mut self) {
        self.raw(b"null");
    }

    fn bool(&mut self, b: bool) {
        self.raw(if b { b"true" } else { b"false" });
    }

    fn uint(&mut self, n: u64) {
        // Most of a line's numbers (flags, counts, the version) are one digit.
        if n < 10 {
            self.buf.push(b'0' + n as u8);
            return;
        }
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    fn opt_uint(&mut self, n: Option<u64>) {
        match n {
            Some(n) => self.uint(n),
            None => self.null(),
        }
    }

    /// A string from this program's own tables (ids, enum and hook names,
    /// explanations): none holds anything to escape (a test checks every
    /// table), so it is copied without a scan.
    fn ident(&mut self, s: &'static str) {
        debug_assert!(!needs_json_escape(s), "{s:?}");
        self.quoted(s.as_bytes());
    }

    fn opt_ident(&mut self, s: Option<&'static str>) {
        match s {
            Some(s) => self.ident(s),
            None => self.null(),
        }
    }

    fn quoted(&mut self, bytes: &[u8]) {
        self.buf.push(b'"');
        self.buf.extend_from_slice(bytes);
        self.buf.push(b'"');
    }

    /// Text chosen by whoever runs a process (names, command lines) or
    /// read from a file: control characters become `\xNN` first, then the
    /// JSON escaping applies, so a terminal showing the file sees none.
    /// Printable ASCII, nearly all of it, needs neither: one scan.
    fn hostile(&mut self, s: &str) {
        if is_plain(s.as_bytes()) {
            self.quoted(s.as_bytes());
        } else {
            self.str(&escape_control(s));
        }
    }

    fn opt_hostile(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.hostile(s),
            None => self.null(),
        }
    }

    /// A JSON string: `"` and `\` escaped, control characters below 0x20
    /// as `\n`-style or `\u00XX` escapes (as serde_json does), the rest of
    /// the UTF-8 as is.
    fn str(&mut self, s: &str) {
        self.buf.push(b'"');
        let bytes = s.as_bytes();
        let mut plain = 0;
        let mut i = 0;
        while i < bytes.len() {
            // Eight bytes at a time while none needs escaping, the common
            // case; any doubt goes to the byte test below.
            if let Some(chunk) = bytes.get(i..i + 8)
                && let Ok(word) = <[u8; 8]>::try_from(chunk)
                && !word_needs_escape(u64::from_le_bytes(word))
            {
                i += 8;
                continue;
            }
            let b = bytes[i];
            i += 1;
            if !NEEDS_ESCAPE[usize::from(b)] {
                continue;
            }
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                _ => &[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ],
            };
            self.buf.extend_from_slice(&bytes[plain..i - 1]);
            self.buf.extend_from_slice(escape);
            plain = i;
        }
        self.buf.extend_from_slice(&bytes[plain..]);
        self.buf.push(b'"');
    }
}

/// Whether any of the eight bytes of `word` is in NEEDS_ESCAPE: a byte
/// below 0x20, `"` or `\` (the exact "has less than" and "has zero byte"
/// tests of Bit Twiddling Hacks; a test checks every byte in every lane).
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    (below(0x20) | zero(word ^ (ONES * u64::from(b'"'))) | zero(word ^ (ONES * u64::from(b'\\'))))
        != 0
}

fn needs_json_escape(s: &str) -> bool {
    s.bytes().any(|b| NEEDS_ESCAPE[usize::from(b)])
}

/// Whether `bytes` are printable ASCII (0x20..=0x7e) without `"` or `\`:
/// what both escapes, `escape_control` and JSON's, leave as it is.
fn is_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for chunk in words.by_ref() {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let del = word ^ (ONES * 0x7f);
        // Non-ASCII, then the JSON escapes, then DEL (a zero byte in `del`).
        if word & HIGHS != 0
            || word_needs_escape(word)
            || del.wrapping_sub(ONES) & !del & HIGHS != 0
        {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| b < 0x7f && !NEEDS_ESCAPE[usize::from(b)])
}

/// Bytes a JSON string cannot hold as they are: `"`, `\` and C0 controls.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests;
