//! `rsttrace read FILE`: a JSON Lines export back into events, so the same
//! formatters and filters serve post-mortem analysis on another machine.
//! The mirror of `write.rs`: the names it accepts are `crate::model::schema`'s.
//! Parsed through serde_json's `Value` (files are read once, not under a
//! storm), unit-tested and fuzzed like the kernel decoder.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::collect::counters::KernelDrops;
use crate::enrich::containers::ContainerNames;
use crate::enrich::procinfo::{Container, ProcInfo};
use crate::enrich::stacks::Stacks;
use crate::model::cause::{Cause, CauseId, Confidence};
use crate::model::event::{
    Direction, Event, ExecContext, Owner, Packet, Socket, Task, TcpFlags, TcpState,
};
use crate::model::evidence::Evidence;
use crate::record::Classified;

/// One line of an export.
#[derive(Debug)]
pub(crate) enum Line {
    Event(Box<Classified>),
    /// `{"gap":{"lost":N, ...}}`: the kernel lost N events here, at that
    /// time, and dropped what the other keys count.
    Gap(u64, KernelDrops, std::time::SystemTime),
}

pub(crate) fn parse_line(line: &str) -> Result<Line> {
    let v: Value = serde_json::from_str(line).context("not JSON")?;
    match v.get("v").and_then(Value::as_u64) {
        Some(1) => {}
        Some(other) => bail!("schema version {other}; this rsttrace reads version 1"),
        None => bail!("no schema version (`v`): not an rsttrace export"),
    }
    if let Some(gap) = v.get("gap") {
        let at = humantime::parse_rfc3339(str_of(&v, "time")?).context("bad `time`")?;
        let mut drops = KernelDrops::default();
        for (key, n) in gap.as_object().into_iter().flatten() {
            if let Some(n) = n.as_u64() {
                drops.set(key, n);
            }
        }
        return Ok(Line::Gap(u64_of(gap, "lost")?, drops, at));
    }
    Ok(Line::Event(Box::new(event(&v)?)))
}

fn event(v: &Value) -> Result<Classified> {
    let time = humantime::parse_rfc3339(str_of(v, "time")?).context("bad `time`")?;
    let direction = match str_of(v, "direction")? {
        "sent" => Direction::Sent,
        "received" => Direction::Received,
        "abort" => Direction::Abort,
        other => bail!("unknown direction {other:?}"),
    };
    let cause = str_of(v, "cause")?;
    let id = CauseId::from_id(cause).ok_or_else(|| anyhow!("unknown cause {cause:?}"))?;
    let confidence = match str_of(v, "confidence")? {
        "certain" => Confidence::Certain,
        _ => Confidence::Likely,
    };
    let actor = v.get("actor").ok_or_else(|| anyhow!("no `actor`"))?;
    let process = match (
        v.get("pid").and_then(Value::as_u64),
        v.get("comm").and_then(Value::as_str),
    ) {
        (Some(pid), comm) => Some(Task {
            pid: pid as u32,
            tid: v["owner"]["tid"].as_u64().unwrap_or(pid) as u32,
            comm: comm.unwrap_or_default().to_owned(),
        }),
        _ => None,
    };
    let event = Event {
        time,
        direction,
        hook: crate::model::schema::hook_from_name(
            v.get("hook").and_then(Value::as_str).unwrap_or(""),
        ),
        local: addr(v, "local_addr", "local_port")?,
        remote: addr(v, "remote_addr", "remote_port")?,
        state: state(str_of(v, "state")?),
        kernel_reason: v
            .get("kernel_reason")
            .and_then(Value::as_str)
            .map(|name| (0, name.into())),
        packet: v
            .get("packet")
            .filter(|p| !p.is_null())
            .map(packet)
            .transpose()?,
        socket: v
            .get("socket")
            .filter(|s| !s.is_null())
            .map(socket)
            .transpose()?,
        context: context(actor.get("context").and_then(Value::as_str).unwrap_or("")),
        actor: Task {
            pid: u64_of(actor, "pid")? as u32,
            tid: u64_of(actor, "tid")? as u32,
            comm: str_of(actor, "comm")?.to_owned(),
        },
        exit_signal: v
            .get("exit_signal")
            .and_then(Value::as_u64)
            .map(|s| s as u8),
        process,
        owner: owner(v),
        netns: v
            .get("netns")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        // The export carries the prior close in `evidence.prior`, and
        // stacks already symbolized; the event needs neither again.
        prior: None,
        kernel_stack_id: None,
        user_stack_id: None,
        stack_skipped: false,
        // In the export only as evidence.
        device: None,
        netfilter_hook: None,
        listener_group: None,
    };
    let evidence = match v.get("evidence") {
        Some(Value::Object(map)) => Evidence::from_json(map.clone()),
        _ => Evidence::new(),
    };
    Ok(Classified {
        event,
        cause: Cause {
            id,
            confidence,
            evidence,
        },
        owner_proc: owner_proc(v).map(std::sync::Arc::new),
        stacks: Stacks {
            kernel: frames(v, "kernel_stack"),
            user: frames(v, "user_stack"),
            skipped: v.get("stack_skipped") == Some(&Value::Bool(true)),
        },
    })
}

/// `kernel_stack` / `user_stack`: arrays of frame strings, when present.
fn frames(v: &Value, key: &str) -> Option<Vec<String>> {
    let frames = v.get(key)?.as_array()?;
    Some(
        frames
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
    )
}

/// `cmdline`, `container` and `netns`, when the export has any of them.
fn owner_proc(v: &Value) -> Option<ProcInfo> {
    let text = |x: &Value| x.as_str().map(str::to_owned);
    let c = &v["container"];
    // Runtimes are a closed set; an unknown one came from another version.
    let container = c["runtime"]
        .as_str()
        .and_then(crate::model::schema::runtime_from_name)
        .map(|runtime| Container {
            runtime,
            id: text(&c["id"]),
            pod_uid: text(&c["pod_uid"]),
            unit: text(&c["unit"]),
            names: {
                let names = ContainerNames {
                    name: text(&c["name"]),
                    image: text(&c["image"]),
                    pod: text(&c["pod"]),
                    namespace: text(&c["namespace"]),
                };
                (names != ContainerNames::default()).then(|| std::sync::Arc::new(names))
            },
        });
    let info = ProcInfo {
        cmdline: text(&v["cmdline"]),
        cgroup: None,
        container,
        netns: v["netns"].as_u64(),
    };
    (info != ProcInfo::default()).then_some(info)
}

fn owner(v: &Value) -> Owner {
    let o = &v["owner"];
    // An owner is only known with its pid; the export writes it that way.
    let source = v["pid"].as_u64().and(o["source"].as_str());
    match source {
        Some("tracked") => Owner::Tracked {
            uid: o["uid"].as_u64().unwrap_or(0) as u32,
            cgroup_id: o["cgroup_id"].as_u64().unwrap_or(0),
        },
        Some("listener") => Owner::Listener {
            uid: o["uid"].as_u64().unwrap_or(0) as u32,
            cgroup_id: o["cgroup_id"].as_u64().unwrap_or(0),
        },
        Some("actor") => Owner::Actor,
        Some("prior") => Owner::Prior,
        _ if v["owner_unknown"] == "no_socket" => Owner::NoSocket,
        _ => Owner::NotSeen,
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("missing string `{key}`"))
}

fn u64_of(v: &Value, key: &str) -> Result<u64> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("missing number `{key}`"))
}

fn addr(v: &Value, ip: &str, port: &str) -> Result<SocketAddr> {
    let ip: IpAddr = str_of(v, ip)?
        .parse()
        .with_context(|| format!("bad `{ip}`"))?;
    let port = u16::try_from(u64_of(v, port)?).with_context(|| format!("bad `{port}`"))?;
    Ok(SocketAddr::new(ip, port))
}

/// A name outside the table reads back as a value that is named `INVALID`.
fn state(name: &str) -> TcpState {
    TcpState(crate::model::schema::state_from_name(name).unwrap_or(u8::MAX))
}

fn context(name: &str) -> ExecContext {
    match name {
        "task" => ExecContext::Task,
        _ => (0..=10)
            .map(ExecContext::Softirq)
            .find(|c| c.name() == name)
            .unwrap_or(ExecContext::Unknown),
    }
}

fn packet(p: &Value) -> Result<Packet> {
    let flags = str_of(p, "flags")?;
    let mut bits = 0;
    for (c, bit) in [
        ('S', TcpFlags::SYN),
        ('F', TcpFlags::FIN),
        ('P', TcpFlags::PSH),
        ('R', TcpFlags::RST),
        ('U', TcpFlags::URG),
        ('.', TcpFlags::ACK),
    ] {
        if flags.contains(c) {
            bits |= bit;
        }
    }
    Ok(Packet {
        flags: TcpFlags(bits),
        seq: u64_of(p, "seq")? as u32,
        ack: u64_of(p, "ack")? as u32,
        len: u64_of(p, "len")? as u32,
        window: u64_of(p, "window")? as u16,
        ttl: u64_of(p, "ttl")? as u8,
        // Not in the export's packet object; evidence carries it.
        ip_id: 0,
    })
}

fn socket(s: &Value) -> Result<Socket> {
    let flag = |k: &str| s.get(k).and_then(Value::as_bool).unwrap_or(false);
    let num = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
    Ok(Socket {
        addr: 0,
        cookie: num("cookie"),
        full: flag("full"),
        dead: flag("dead"),
        linger: s.get("linger").and_then(Value::as_u64).map(|l| l as u32),
        keepalive: flag("keepalive"),
        peer_fin: flag("peer_fin"),
        shutdown: num("shutdown") as u8,
        unread: num("unread") as u32,
        unsent: num("unsent") as u32,
        unacked: num("unacked") as u32,
        probes_out: num("probes_out") as u8,
        sk_err: num("sk_err") as u32,
        tw_substate: s.get("tw_substate").and_then(Value::as_str).map(state),
        cgroup_id: s.get("cgroup_id").and_then(Value::as_u64),
        // In the export only as evidence of the cause already decided.
        accept_queue_full: false,
        closed_from: None,
        peer_idle: None,
        rcv_nxt: 0,
        rcv_wnd: 0,
    })
}

/// Longest line `rsttrace read` takes; an export line is a few KiB.
pub(crate) const MAX_LINE: usize = 1 << 20;

/// One line of input, read with bounded memory.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NextLine {
    Line(String),
    /// Longer than `MAX_LINE`: skipped to its end.
    TooLong,
    End,
}

/// Reads the next line into `buf` (reused), never holding more than
/// `MAX_LINE` bytes of it; invalid UTF-8 is replaced, not fatal.
pub(crate) fn next_line(
    input: &mut impl std::io::BufRead,
    buf: &mut Vec<u8>,
) -> std::io::Result<NextLine> {
    use std::io::{BufRead, Read};
    buf.clear();
    let n = input
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(NextLine::End);
    }
    if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
        // Skip the rest of the line a buffer at a time.
        loop {
            let chunk = input.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            match chunk.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    input.consume(at + 1);
                    break;
                }
                None => {
                    let len = chunk.len();
                    input.consume(len);
                }
            }
        }
        return Ok(NextLine::TooLong);
    }
    Ok(NextLine::Line(String::from_utf8_lossy(buf).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::json;
    use crate::record::fixtures::record;

    #[test]
    fn an_export_line_reads_back_to_the_same_line() {
        let mut rec = record();
        rec.event.remote = "10.1.2.3:40000".parse().unwrap();
        let line = json::format(&rec);
        let Line::Event(back) = parse_line(&line).unwrap() else {
            panic!("not an event")
        };
        // Everything the export carries survives the round trip.
        assert_eq!(json::format(&back), line);
    }

    #[test]
    fn kernel_drops_survive_the_round_trip() {
        let drops = KernelDrops {
            packets_lost: 3,
            recursion_misses: 1,
            ..KernelDrops::default()
        };
        let line = json::write::format_drops(0, &drops, std::time::SystemTime::UNIX_EPOCH);
        let Line::Gap(0, back, at) = parse_line(&line).unwrap() else {
            panic!("not a drops record: {line}")
        };
        assert_eq!(back, drops);
        assert_eq!(json::write::format_drops(0, &back, at), line);
    }

    #[test]
    fn gaps_and_bad_lines() {
        let gap = json::format_gap(7, std::time::SystemTime::UNIX_EPOCH);
        assert!(matches!(parse_line(&gap).unwrap(), Line::Gap(7, _, _)));
        for bad in [
            "",
            "{",
            "[]",
            r#"{"v":2}"#,
            r#"{"time":"x"}"#,
            r#"{"v":1,"time":"nope"}"#,
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?} accepted");
        }
        let line = json::format(&record()).replace("close_unread_data", "made_up");
        let err = parse_line(&line).unwrap_err().to_string();
        assert!(err.contains("made_up"), "{err}");
    }

    proptest::proptest! {
        /// Untrusted files: no input panics the reader.
        #[test]
        fn fuzz_lines(line in ".{0,300}") {
            let _ = parse_line(&line);
        }

        /// Valid events with random values in random fields (nested ones
        /// too): never a panic, and whatever is accepted exports to a line
        /// that reads back to itself.
        #[test]
        fn fuzz_events_with_random_fields(
            changes in proptest::collection::vec((proptest::num::usize::ANY, random_value()), 1..6),
        ) {
            let serde_json::Value::Object(mut event) =
                serde_json::from_str(&json::format(&record())).unwrap()
            else {
                unreachable!()
            };
            // Fields of the event and of its nested objects.
            let mut paths: Vec<(String, Option<String>)> = Vec::new();
            for (k, v) in &event {
                paths.push((k.clone(), None));
                if let Some(o) = v.as_object() {
                    paths.extend(o.keys().map(|n| (k.clone(), Some(n.clone()))));
                }
            }
            for (pick, value) in changes {
                let (k, nested) = &paths[pick % paths.len()];
                match nested {
                    None => {
                        event.insert(k.clone(), value);
                    }
                    Some(n) => {
                        if let Some(o) = event.get_mut(k).and_then(|v| v.as_object_mut()) {
                            o.insert(n.clone(), value);
                        }
                    }
                }
            }
            let line = serde_json::Value::Object(event).to_string();
            if let Ok(Line::Event(rec)) = parse_line(&line) {
                let exported = json::format(&rec);
                let Ok(Line::Event(again)) = parse_line(&exported) else {
                    return Err(proptest::test_runner::TestCaseError::fail(format!(
                        "export of an accepted line does not read back: {exported}"
                    )));
                };
                proptest::prop_assert_eq!(json::format(&again), exported);
            }
        }

        /// Mutated valid lines: still no panic.
        #[test]
        fn fuzz_mutated_export(cut in 0usize..600, byte in proptest::num::u8::ANY) {
            let mut line = json::format(&record()).into_bytes();
            if cut < line.len() {
                line[cut] = byte;
            }
            let _ = parse_line(&String::from_utf8_lossy(&line));
        }
    }

    fn random_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::{Value, json};
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,40}".prop_map(Value::String),
            // Plausible strings: the shapes real fields have.
            proptest::sample::select(vec![
                "sent",
                "received",
                "abort",
                "likely",
                "certain",
                "unknown",
                "1970-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999999999Z",
                "127.0.0.1",
                "::1",
                "ESTABLISHED",
                "close_unread_data",
                "",
            ])
            .prop_map(|s| json!(s)),
            Just(json!({})),
            Just(json!([1, "x", null])),
        ]
    }

    #[test]
    fn lines_are_read_with_bounded_memory() {
        let mut input = Vec::new();
        input.extend_from_slice(b"first\n");
        input.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE));
        input.extend_from_slice(b"\nthird \xff\n");
        input.extend(std::iter::repeat_n(b'y', MAX_LINE + 1));
        let mut r = std::io::BufReader::new(&input[..]);
        let mut buf = Vec::new();
        let mut next = || next_line(&mut r, &mut buf).unwrap();
        assert_eq!(next(), NextLine::Line("first\n".into()));
        assert_eq!(next(), NextLine::TooLong);
        assert_eq!(next(), NextLine::Line("third \u{fffd}\n".into()));
        assert_eq!(next(), NextLine::TooLong);
        assert_eq!(next(), NextLine::End);
        assert!(buf.capacity() <= 2 * MAX_LINE + 64, "{}", buf.capacity());
    }
}
