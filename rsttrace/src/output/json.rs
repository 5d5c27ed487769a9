//! JSON Lines, schema v1 (documented in docs/schema.md).

use std::io::{self, Write};
use std::net::IpAddr;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Sink, escape_control, rfc3339};
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
    kernel_reason: Option<&'a str>,
    state: &'static str,
    local_addr: IpAddr,
    local_port: u16,
    remote_addr: IpAddr,
    remote_port: u16,
    pid: Option<u32>,
    comm: Option<String>,
    owner: Option<OwnerJson>,
    owner_unknown: Option<&'static str>,
    actor: Actor,
    hook: &'static str,
    packet: Option<Packet>,
    socket: Option<Socket>,
    exit_signal: Option<u8>,
    evidence: &'a Map<String, Value>,
}

/// Serialised straight into the output (no intermediate String).
struct Rfc3339(std::time::SystemTime);

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_nanos(self.0))
    }
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
        kernel_reason: e.reason(),
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
    }
}

/// Marks lost events in the stream, so a reader knows the file has a hole.
pub fn format_gap(lost: u64, now: std::time::SystemTime) -> String {
    serde_json::json!({"v": SCHEMA_VERSION, "time": rfc3339(now), "gap": {"lost": lost}})
        .to_string()
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
        writeln!(
            self.out,
            "{}",
            format_gap(lost, std::time::SystemTime::now())
        )
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
        let v: Value =
            serde_json::from_str(&format_gap(12, std::time::SystemTime::UNIX_EPOCH)).unwrap();
        assert_eq!(v["gap"]["lost"], 12);
        assert_eq!(v["v"], 1);
    }
}
