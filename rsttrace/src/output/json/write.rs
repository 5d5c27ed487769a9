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
use crate::model::explain::Lang;
use crate::model::text::escape_control;
use crate::output::{Sink, printable_time};
use crate::record::Classified;

pub const SCHEMA_VERSION: u32 = 1;

/// One event as one line of JSON (no trailing newline).
pub fn format(rec: &Classified) -> String {
    let mut w = Writer::default();
    w.record(rec, Lang::En);
    w.into_string()
}

/// Marks lost events in the stream, so a reader knows the file has a hole.
pub fn format_gap(lost: u64, now: SystemTime) -> String {
    format_drops(lost, &KernelDrops::default(), now)
}

/// A gap record with the other kernel drops since the last one: each kind
/// that is not zero, by its key (`packets_lost`, `owners_evicted`, ...).
pub fn format_drops(lost: u64, drops: &KernelDrops, now: SystemTime) -> String {
    let mut w = Writer::default();
    w.gap(lost, drops, now);
    w.into_string()
}

pub struct JsonSink<W: Write> {
    out: W,
    lang: Lang,
    line: Writer,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W, lang: Lang) -> JsonSink<W> {
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
        self.str(e.direction.as_str());
        key!(self, "cause");
        self.str(rec.cause.id.id());
        key!(self, "confidence");
        self.str(rec.cause.confidence.as_str());
        key!(self, "explanation");
        self.str(crate::model::explain::explanation(rec.cause.id, lang));
        // Names from kernel BTF; from `rsttrace read`, whatever the file says.
        key!(self, "kernel_reason");
        self.opt_hostile(e.reason());
        key!(self, "state");
        self.str(e.state.name());
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
        self.opt_str(e.owner.unknown_reason());
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
        self.str(e.context.name());
        self.raw(b"}");
        key!(self, "hook");
        self.str(e.hook);
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
                self.opt_str(s.tw_substate.map(|t| t.name()));
                key!(self, "cgroup_id");
                self.opt_uint(s.cgroup_id);
                self.raw(b"}");
            }
            None => self.null(),
        }
        key!(self, "exit_signal");
        self.opt_uint(e.exit_signal.map(u64::from));
        key!(self, "evidence");
        self.object(&rec.cause.evidence);
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
        self.str(source);
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
        self.str(c.runtime);
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

    fn object(&mut self, map: &Map<String, Value>) {
        self.buf.push(b'{');
        for (i, (k, v)) in map.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.hostile(k);
            self.buf.push(b':');
            self.value(v);
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
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    fn opt_uint(&mut self, n: Option<u64>) {
        match n {
            Some(n) => self.uint(n),
            None => self.null(),
        }
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.null(),
        }
    }

    /// Text chosen by whoever runs a process (names, command lines) or
    /// read from a file: control characters become `\xNN` first, then the
    /// JSON escaping applies, so a terminal showing the file sees none.
    fn hostile(&mut self, s: &str) {
        self.str(&escape_control(s));
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
mod tests {
    use super::*;
    use crate::record::fixtures::record;

    #[test]
    fn one_valid_line_with_the_schema_fields() {
        let line = format(&record());
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["time"], "2026-11-18T11:06:40.123456789Z");
        assert_eq!(v["direction"], "sent");
        assert_eq!(v["cause"], "close_unread_data");
        assert_eq!(v["confidence"], "certain");
        assert_eq!(v["kernel_reason"], "TCP_ABORT_ON_CLOSE");
        assert_eq!(v["state"], "CLOSE");
        assert_eq!(v["local_addr"], "127.0.0.1");
        assert_eq!(v["local_port"], 8080);
        assert_eq!(v["remote_addr"], "::1");
        assert_eq!(v["remote_port"], 40000);
        assert_eq!(v["pid"], 7);
        assert_eq!(v["packet"]["flags"], "P.");
        assert_eq!(v["socket"], Value::Null);
        assert_eq!(v["evidence"]["unread_bytes_lost"], 100);
        assert_eq!(v["actor"]["context"], "task");
    }

    #[test]
    fn hostile_names_stay_inert() {
        let line = format(&record());
        assert!(!line.contains('\x1b'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["comm"], "=cmd|evil\\x1b[2J");
        assert_eq!(v["actor"]["comm"], "evil\\x1b[31m,\"x\"\\x0aname");
    }

    #[test]
    fn unknown_owner_is_null() {
        let mut rec = record();
        rec.event.process = None;
        rec.event.kernel_reason = None;
        let v: Value = serde_json::from_str(&format(&rec)).unwrap();
        assert_eq!(v["pid"], Value::Null);
        assert_eq!(v["comm"], Value::Null);
        assert_eq!(v["kernel_reason"], Value::Null);
    }

    #[test]
    fn gap_records_name_the_other_kernel_drops() {
        let drops = KernelDrops {
            packets_lost: 2,
            history_evicted: 7,
            ..KernelDrops::default()
        };
        let line = format_drops(0, &drops, SystemTime::UNIX_EPOCH);
        assert_eq!(
            line,
            r#"{"v":1,"time":"1970-01-01T00:00:00.000000000Z","gap":{"lost":0,"packets_lost":2,"history_evicted":7}}"#
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["gap"]["history_evicted"], 7);
    }

    #[test]
    fn gap_records_count_the_loss() {
        let line = format_gap(12, SystemTime::UNIX_EPOCH);
        assert_eq!(
            line,
            r#"{"v":1,"time":"1970-01-01T00:00:00.000000000Z","gap":{"lost":12}}"#
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["gap"]["lost"], 12);
        assert_eq!(v["v"], 1);
    }

    /// The keys of a JSON object in the order they were written.
    fn keys_in_order(json: &str) -> Vec<String> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Vec<String>, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(keys)
            }
        }
        use serde::Deserializer as _;
        serde_json::Deserializer::from_str(json)
            .deserialize_map(Keys)
            .unwrap()
    }

    /// The raw text of the object under the first `"key":` in `line`.
    fn raw_object<'a>(line: &'a str, key: &str) -> &'a str {
        let start = line.find(&format!("\"{key}\":{{")).unwrap() + key.len() + 3;
        let rest = &line[start..];
        let mut values =
            serde_json::Deserializer::from_str(rest).into_iter::<serde::de::IgnoredAny>();
        values.next().unwrap().unwrap();
        &rest[..values.byte_offset()]
    }

    #[test]
    fn keys_follow_the_schema_order() {
        assert_eq!(
            keys_in_order(&format(&record())),
            [
                "v",
                "time",
                "direction",
                "cause",
                "confidence",
                "explanation",
                "kernel_reason",
                "state",
                "local_addr",
                "local_port",
                "remote_addr",
                "remote_port",
                "pid",
                "comm",
                "owner",
                "owner_unknown",
                "cmdline",
                "container",
                "netns",
                "actor",
                "hook",
                "packet",
                "socket",
                "exit_signal",
                "evidence",
            ]
        );
        let v: Value = serde_json::from_str(&format(&record())).unwrap();
        assert_eq!(
            v["explanation"],
            crate::model::cause::CauseId::CloseUnreadData.explanation()
        );
        let line = format(&record());
        assert_eq!(
            keys_in_order(raw_object(&line, "actor")),
            ["pid", "tid", "comm", "context"]
        );
        assert_eq!(
            keys_in_order(raw_object(&line, "packet")),
            ["flags", "seq", "ack", "len", "window", "ttl"]
        );
        assert_eq!(
            keys_in_order(&format_gap(1, SystemTime::UNIX_EPOCH)),
            ["v", "time", "gap"]
        );
    }

    /// Every key the writer emits, nested ones too, is documented.
    #[test]
    fn docs_schema_md_names_every_key() {
        let doc = include_str!("../../../../docs/schema.md");
        let mut rec = record();
        rec.stacks.kernel = Some(vec![]);
        rec.stacks.user = Some(vec![]);
        let line = format(&rec);
        let mut keys = keys_in_order(&line);
        for object in ["owner", "actor", "packet", "container"] {
            keys.extend(keys_in_order(raw_object(&line, object)));
        }
        for key in keys {
            assert!(
                doc.contains(&format!("`{key}`")),
                "docs/schema.md does not name `{key}`"
            );
        }
    }

    #[test]
    fn ipv6_addresses_are_plain_strings() {
        let mut rec = record();
        rec.event.local = "[2001:db8::1]:443".parse().unwrap();
        rec.event.remote = "[fe80::2]:51234".parse().unwrap();
        let v: Value = serde_json::from_str(&format(&rec)).unwrap();
        assert_eq!(v["local_addr"], "2001:db8::1");
        assert_eq!(v["local_port"], 443);
        assert_eq!(v["remote_addr"], "fe80::2");
        assert_eq!(v["remote_port"], 51234);
    }

    #[test]
    fn absent_facts_are_null() {
        let mut rec = record();
        rec.event.packet = None;
        rec.event.socket = None;
        rec.event.exit_signal = None;
        rec.event.process = None;
        rec.event.owner = Owner::NoSocket;
        rec.event.state = crate::model::event::TcpState::NONE;
        rec.cause.evidence.clear();
        let v: Value = serde_json::from_str(&format(&rec)).unwrap();
        for key in ["packet", "socket", "exit_signal", "pid", "comm", "owner"] {
            assert_eq!(v[key], Value::Null, "{key}");
        }
        assert_eq!(v["owner_unknown"], "no_socket");
        assert_eq!(v["state"], "NONE");
        assert_eq!(v["evidence"], serde_json::json!({}));
    }

    #[test]
    fn socket_facts_and_exit_signal() {
        use crate::model::event::{Socket as Sk, TcpState};
        let mut rec = record();
        rec.event.state = TcpState::TIME_WAIT;
        rec.event.exit_signal = Some(9);
        rec.event.socket = Some(Sk {
            addr: 0xffff_8880_0000_1000,
            cookie: 77,
            full: false,
            dead: true,
            linger: None,
            keepalive: true,
            peer_fin: false,
            shutdown: 3,
            unread: 100,
            unsent: 2,
            unacked: 1,
            probes_out: 4,
            sk_err: 104,
            tw_substate: Some(TcpState::FIN_WAIT2),
            cgroup_id: Some(7301),
            accept_queue_full: false,
            closed_from: None,
            peer_idle: None,
            rcv_nxt: 0,
            rcv_wnd: 0,
        });
        let line = format(&rec);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["state"], "TIME_WAIT");
        assert_eq!(v["exit_signal"], 9);
        let s = &v["socket"];
        assert_eq!(s["cookie"], 77);
        assert_eq!(s["linger"], Value::Null);
        assert_eq!(s["dead"], true);
        assert_eq!(s["unread"], 100);
        assert_eq!(s["tw_substate"], "FIN_WAIT2");
        assert_eq!(s["cgroup_id"], 7301);
        // The kernel address is not exported.
        assert!(s.get("addr").is_none());
        assert_eq!(
            keys_in_order(raw_object(&line, "socket")),
            [
                "cookie",
                "full",
                "dead",
                "linger",
                "keepalive",
                "peer_fin",
                "shutdown",
                "unread",
                "unsent",
                "unacked",
                "probes_out",
                "sk_err",
                "tw_substate",
                "cgroup_id"
            ]
        );
        if let Some(sk) = rec.event.socket.as_mut() {
            sk.linger = Some(0);
        }
        let v: Value = serde_json::from_str(&format(&rec)).unwrap();
        assert_eq!(v["socket"]["linger"], 0);
    }

    #[test]
    fn a_hostile_comm_with_newline_comma_and_quote_stays_one_line() {
        let mut rec = record();
        if let Some(p) = rec.event.process.as_mut() {
            p.comm = "a\x1b[31m\n,\"b\u{7f}".into();
        }
        // A replayed file can carry anything in kernel_reason.
        rec.event.kernel_reason = Some((0, "X\x1b]0;t\x07".into()));
        let line = format(&rec);
        assert_eq!(line.lines().count(), 1);
        assert!(!line.contains('\x1b') && !line.contains('\x7f'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["comm"], "a\\x1b[31m\\x0a,\"b\\x7f");
        assert_eq!(v["owner"]["comm"], v["comm"]);
        assert_eq!(v["kernel_reason"], "X\\x1b]0;t\\x07");
    }

    #[test]
    fn stacks_are_arrays_and_absent_when_not_captured() {
        let v: Value = serde_json::from_str(&format(&record())).unwrap();
        assert!(v.get("kernel_stack").is_none() && v.get("user_stack").is_none());
        let mut rec = record();
        rec.stacks.kernel = Some(vec!["tcp_close+0x2b".into()]);
        rec.stacks.user = Some(vec![
            "__close+0x10 (libc.so.6)".into(),
            "main (a.c:3)".into(),
        ]);
        let line = format(&rec);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["kernel_stack"], serde_json::json!(["tcp_close+0x2b"]));
        assert_eq!(v["user_stack"][1], "main (a.c:3)");
        assert_eq!(
            keys_in_order(&line).last().map(String::as_str),
            Some("user_stack")
        );
        // `rsttrace read` gets them back.
        let super::super::read::Line::Event(back) = super::super::read::parse_line(&line).unwrap()
        else {
            panic!("not an event");
        };
        assert_eq!(back.stacks, rec.stacks);
    }

    #[test]
    fn the_sink_writes_what_format_returns() {
        let mut out = Vec::new();
        let mut sink = JsonSink::new(&mut out, Lang::En);
        sink.write(&record()).unwrap();
        sink.write(&record()).unwrap();
        sink.flush().unwrap();
        let line = format(&record());
        assert_eq!(String::from_utf8(out).unwrap(), format!("{line}\n{line}\n"));
    }

    /// The whole line, byte for byte: what the serde-derived writer this
    /// one replaced wrote for the same record.
    #[test]
    fn the_whole_line() {
        assert_eq!(
            format(&record()),
            concat!(
                r#"{"v":1,"time":"2026-11-18T11:06:40.123456789Z","direction":"sent","#,
                r#""cause":"close_unread_data","confidence":"certain","#,
                r#""explanation":"the application closed the socket while received data was still unread","#,
                r#""kernel_reason":"TCP_ABORT_ON_CLOSE","state":"CLOSE","local_addr":"127.0.0.1","#,
                r#""local_port":8080,"remote_addr":"::1","remote_port":40000,"pid":7,"#,
                r#""comm":"=cmd|evil\\x1b[2J","owner":{"pid":7,"tid":8,"comm":"=cmd|evil\\x1b[2J","#,
                r#""uid":1000,"cgroup_id":42,"source":"tracked"},"owner_unknown":null,"#,
                r#""cmdline":"/usr/sbin/app --serve","#,
                r#""container":{"runtime":"systemd","id":null,"pod_uid":null,"unit":"app.service","#,
                r#""name":null,"image":null,"pod":null,"namespace":null},"#,
                r#""netns":4026531840,"actor":{"pid":7,"tid":8,"comm":"evil\\x1b[31m,\"x\"\\x0aname","#,
                r#""context":"task"},"hook":"tp_btf:tcp_send_reset","#,
                r#""packet":{"flags":"P.","seq":1,"ack":2,"len":9,"window":512,"ttl":64},"#,
                r#""socket":null,"exit_signal":null,"evidence":{"unread_bytes_lost":100}}"#
            )
        );
    }

    fn json_string(s: &str) -> String {
        let mut w = Writer::default();
        w.str(s);
        w.into_string()
    }

    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        for s in [
            "",
            "plain",
            "q\"uote\\back",
            "\0\x01\x08\t\n\x0b\x0c\r\x1b\x1f\x7f",
            "wörk \u{202e} 😀 \u{85}",
        ] {
            assert_eq!(json_string(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    /// The word test never misses a byte the table flags, whatever the
    /// lane and whatever the other lanes hold (borrows cross lanes).
    #[test]
    fn the_word_test_agrees_with_the_table() {
        let fillers = [
            0x00, 0x1f, 0x20, 0x21, 0x22, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xa2, 0xff,
        ];
        for b in 0..=255u8 {
            for lane in 0..8 {
                for &fill in &fillers {
                    let mut bytes = [fill; 8];
                    bytes[lane] = b;
                    let naive = bytes.iter().any(|&x| NEEDS_ESCAPE[usize::from(x)]);
                    assert_eq!(
                        word_needs_escape(u64::from_le_bytes(bytes)),
                        naive,
                        "{bytes:02x?}"
                    );
                }
            }
        }
    }

    /// Escapes at every offset of strings longer than a word.
    #[test]
    fn escapes_anywhere_in_long_strings() {
        for c in (0..0x80u8).map(char::from).chain(['é', '\u{85}', '😀']) {
            for filler in ['a', 'é'] {
                for at in 0..20 {
                    let mut s: String = std::iter::repeat_n(filler, 20).collect();
                    s.insert(s.char_indices().nth(at).map_or(s.len(), |(i, _)| i), c);
                    assert_eq!(json_string(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_word_test_agrees_with_the_table_on_any_word(word in proptest::num::u64::ANY) {
            let naive = word.to_le_bytes().iter().any(|&x| NEEDS_ESCAPE[usize::from(x)]);
            proptest::prop_assert_eq!(word_needs_escape(word), naive);
        }

        #[test]
        fn any_string_is_escaped_as_serde_json_does(s in ".*") {
            proptest::prop_assert_eq!(json_string(&s), serde_json::to_string(&s).unwrap());
        }

        /// Evidence comes from the classifier, or from a file being replayed.
        #[test]
        fn any_evidence_is_written_as_serde_json_does(
            key in ".{0,8}",
            text in ".{0,8}",
            n in proptest::num::i64::ANY,
            u in proptest::num::u64::ANY,
            f in proptest::num::f64::ANY,
        ) {
            // Strings have their control characters escaped first.
            let (key, text) = (escape_control(&key).into_owned(), escape_control(&text));
            let value = serde_json::json!({
                key.clone(): text,
                "n": n,
                "u": u,
                "f": f,
                "nested": [null, true, false, {"k": [n, f]}],
            });
            let mut w = Writer::default();
            w.value(&value);
            proptest::prop_assert_eq!(w.into_string(), serde_json::to_string(&value).unwrap());
        }
    }

    #[test]
    fn non_utf8_and_control_bytes_in_comm_stay_inert() {
        let mut rec = record();
        // comm arrives as raw bytes and is decoded lossily (event::comm_string).
        let comm = String::from_utf8_lossy(b"\xff\xfe\x1b[2J\"\\\x00x").into_owned();
        if let Some(p) = rec.event.process.as_mut() {
            p.comm = comm.clone();
        }
        rec.event.actor.comm = comm;
        let line = format(&rec);
        assert_eq!(line.lines().count(), 1);
        assert!(!line.bytes().any(|b| b < 0x20 || b == 0x7f), "{line:?}");
        let v: Value = serde_json::from_str(&line).unwrap();
        let expected = "\u{fffd}\u{fffd}\\x1b[2J\"\\\\x00x";
        assert_eq!(v["comm"], expected);
        assert_eq!(v["owner"]["comm"], expected);
        assert_eq!(v["actor"]["comm"], expected);
    }

    #[test]
    fn times_share_a_date_but_never_a_stale_one() {
        let mut w = Writer::default();
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_795_000_000, 5);
        for (time, text) in [
            (t, "2026-11-18T11:06:40.000000005Z"),
            (
                t + Duration::from_nanos(999_999_990),
                "2026-11-18T11:06:40.999999995Z",
            ),
            (t + Duration::from_secs(1), "2026-11-18T11:06:41.000000005Z"),
            (
                t + Duration::from_secs(86_400),
                "2026-11-19T11:06:40.000000005Z",
            ),
            (
                UNIX_EPOCH - Duration::from_secs(1),
                "1970-01-01T00:00:00.000000000Z",
            ),
        ] {
            w.buf.clear();
            w.time(time);
            assert_eq!(w.buf, format!("\"{text}\"").as_bytes());
        }
    }
}
