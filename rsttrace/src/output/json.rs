//! JSON Lines, schema v1 (documented in docs/schema.md).

use std::borrow::Cow;
use std::io::{self, Write};
use std::net::IpAddr;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Sink, escape_control, printable_time};
use crate::cause::Classified;
use crate::event::{Event, Owner, Task};
use crate::explain::Lang;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Record<'a> {
    v: u32,
    time: Rfc3339,
    direction: &'static str,
    cause: &'static str,
    confidence: &'static str,
    explanation: &'static str,
    kernel_reason: Option<Cow<'a, str>>,
    state: &'static str,
    local_addr: IpAddr,
    local_port: u16,
    remote_addr: IpAddr,
    remote_port: u16,
    pid: Option<u32>,
    comm: Option<String>,
    owner: Option<OwnerJson>,
    owner_unknown: Option<&'static str>,
    cmdline: Option<String>,
    container: Option<&'a crate::procinfo::Container>,
    netns: Option<u64>,
    actor: Actor,
    hook: &'static str,
    packet: Option<Packet>,
    socket: Option<Socket>,
    exit_signal: Option<u8>,
    evidence: &'a Map<String, Value>,
    /// `--stack`; absent when not captured.
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_stack: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_stack: Option<&'a [String]>,
}

/// Serialised straight into the output (no intermediate String).
struct Rfc3339(SystemTime);

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_nanos(printable_time(self.0)))
    }
}

/// `{"v":1,"time":...,"gap":{"lost":N}}`, in that order (serde_json's map
/// would sort the keys).
#[derive(Serialize)]
struct GapRecord {
    v: u32,
    time: Rfc3339,
    gap: Gap,
}

#[derive(Serialize)]
struct Gap {
    lost: u64,
}

/// The socket's owner: `source` says how it is known (`tracked`: remembered
/// from its own connect/listen/close/recv; `actor`: it ran the code).
#[derive(Serialize)]
struct OwnerJson {
    pid: u32,
    tid: u32,
    comm: String,
    uid: Option<u32>,
    cgroup_id: Option<u64>,
    source: &'static str,
}

#[derive(Serialize)]
struct Actor {
    pid: u32,
    tid: u32,
    comm: String,
    context: &'static str,
}

#[derive(Serialize)]
struct Packet {
    flags: String,
    seq: u32,
    ack: u32,
    len: u32,
    window: u16,
    ttl: u8,
}

#[derive(Serialize)]
struct Socket {
    cookie: u64,
    full: bool,
    dead: bool,
    linger: Option<u32>,
    keepalive: bool,
    peer_fin: bool,
    shutdown: u8,
    unread: u32,
    unsent: u32,
    unacked: u32,
    probes_out: u8,
    sk_err: u32,
    tw_substate: Option<&'static str>,
}

fn comm(t: &Task) -> String {
    escape_control(&t.comm).into_owned()
}

/// One event as one line of JSON (no trailing newline).
pub fn format(rec: &Classified) -> String {
    serde_json::to_string(&record(rec, Lang::En)).expect("serialising plain data cannot fail")
}

fn record(rec: &Classified, lang: Lang) -> Record<'_> {
    let e: &Event = &rec.event;
    Record {
        v: SCHEMA_VERSION,
        time: Rfc3339(e.time),
        direction: e.direction.as_str(),
        cause: rec.cause.id.id(),
        confidence: rec.cause.confidence.as_str(),
        explanation: crate::explain::explanation(rec.cause.id, lang),
        // Names from kernel BTF; from `rsttrace read`, whatever the file says.
        kernel_reason: e.reason().map(escape_control),
        state: e.state.name(),
        local_addr: e.local.ip(),
        local_port: e.local.port(),
        remote_addr: e.remote.ip(),
        remote_port: e.remote.port(),
        pid: e.process.as_ref().map(|p| p.pid),
        comm: e.process.as_ref().map(comm),
        owner: e.process.as_ref().and_then(|p| {
            let (uid, cgroup_id, source) = match e.owner {
                Owner::Tracked { uid, cgroup_id } => (Some(uid), Some(cgroup_id), "tracked"),
                Owner::Actor => (None, None, "actor"),
                Owner::Prior => (None, None, "prior"),
                _ => return None,
            };
            Some(OwnerJson {
                pid: p.pid,
                tid: p.tid,
                comm: comm(p),
                uid,
                cgroup_id,
                source,
            })
        }),
        owner_unknown: e.owner.unknown_reason(),
        cmdline: rec
            .owner_proc
            .as_ref()
            .and_then(|p| p.cmdline.as_deref())
            .map(|c| escape_control(c).into_owned()),
        container: rec.owner_proc.as_ref().and_then(|p| p.container.as_ref()),
        netns: e
            .netns
            .map(u64::from)
            .or_else(|| rec.owner_proc.as_ref().and_then(|p| p.netns)),
        actor: Actor {
            pid: e.actor.pid,
            tid: e.actor.tid,
            comm: comm(&e.actor),
            context: e.context.name(),
        },
        hook: e.hook,
        packet: e.packet.map(|p| Packet {
            flags: p.flags.tcpdump(),
            seq: p.seq,
            ack: p.ack,
            len: p.len,
            window: p.window,
            ttl: p.ttl,
        }),
        socket: e.socket.map(|s| Socket {
            cookie: s.cookie,
            full: s.full,
            dead: s.dead,
            linger: s.linger,
            keepalive: s.keepalive,
            peer_fin: s.peer_fin,
            shutdown: s.shutdown,
            unread: s.unread,
            unsent: s.unsent,
            unacked: s.unacked,
            probes_out: s.probes_out,
            sk_err: s.sk_err,
            tw_substate: s.tw_substate.map(|t| t.name()),
        }),
        exit_signal: e.exit_signal,
        evidence: &rec.cause.evidence,
        kernel_stack: rec.stacks.kernel.as_deref(),
        user_stack: rec.stacks.user.as_deref(),
    }
}

/// Marks lost events in the stream, so a reader knows the file has a hole.
pub fn format_gap(lost: u64, now: SystemTime) -> String {
    serde_json::to_string(&gap(lost, now)).expect("serialising plain data cannot fail")
}

fn gap(lost: u64, now: SystemTime) -> GapRecord {
    GapRecord {
        v: SCHEMA_VERSION,
        time: Rfc3339(now),
        gap: Gap { lost },
    }
}

pub struct JsonSink<W: Write> {
    pub out: W,
    pub lang: Lang,
}

impl<W: Write> Sink for JsonSink<W> {
    fn write(&mut self, rec: &Classified) -> io::Result<()> {
        // Straight into the buffered writer: no per-event String.
        serde_json::to_writer(&mut self.out, &record(rec, self.lang))?;
        self.out.write_all(b"\n")
    }

    fn write_gap(&mut self, lost: u64) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, &gap(lost, SystemTime::now()))?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures::record;

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
            crate::cause::CauseId::CloseUnreadData.explanation()
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
        rec.event.state = crate::event::TcpState::NONE;
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
        use crate::event::{Socket as Sk, TcpState};
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
                "tw_substate"
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
        let crate::replay::Line::Event(back) = crate::replay::parse_line(&line).unwrap() else {
            panic!("not an event");
        };
        assert_eq!(back.stacks, rec.stacks);
    }

    #[test]
    fn the_sink_writes_what_format_returns() {
        let mut out = Vec::new();
        let mut sink = JsonSink {
            out: &mut out,
            lang: Lang::En,
        };
        sink.write(&record()).unwrap();
        sink.write(&record()).unwrap();
        sink.flush().unwrap();
        let line = format(&record());
        assert_eq!(String::from_utf8(out).unwrap(), format!("{line}\n{line}\n"));
    }
}
