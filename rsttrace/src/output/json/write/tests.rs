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
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<serde::de::IgnoredAny>();
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
    let doc = include_str!("../../../../../docs/schema.md");
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

/// What `Writer::ident` copies unescaped: every string of the tables it is
/// given, in both languages.
#[test]
fn table_strings_need_no_escaping() {
    use crate::model::cause::{CAUSES, Confidence};
    use crate::model::event::{ExecContext, Owner, TcpState};
    use crate::model::schema;
    let mut all: Vec<&'static str> = Vec::new();
    for c in CAUSES {
        all.push(c.id.id());
        for lang in [Lang::En, Lang::Zh] {
            all.push(crate::model::explain::explanation(c.id, lang));
        }
    }
    for v in 0..=u8::MAX {
        all.push(schema::hook_name(v));
        all.push(TcpState(v).name());
        all.push(ExecContext::Softirq(v).name());
    }
    all.extend([ExecContext::Task.name(), ExecContext::Unknown.name()]);
    all.extend([Confidence::Certain.as_str(), Confidence::Likely.as_str()]);
    all.extend(
        [Owner::NoSocket, Owner::NotSeen]
            .iter()
            .filter_map(Owner::unknown_reason),
    );
    all.extend(schema::HOOKS.iter().map(|(_, name)| *name));
    all.extend([schema::FIREWALL_KERNEL_HOOK, schema::FIREWALL_DEVICE_HOOK]);
    all.extend(schema::OWNER_SOURCES);
    all.extend(schema::RUNTIMES);
    all.extend(schema::DIRECTIONS);
    for s in all {
        assert!(!needs_json_escape(s), "{s:?}");
        assert_eq!(json_string(s), serde_json::to_string(s).unwrap());
    }
}

proptest::proptest! {
    /// The printable-ASCII shortcut writes what both escapes would.
    #[test]
    fn hostile_text_is_escaped_as_before(s in "[\\x00-\\x7f]{0,40}|.{0,40}") {
        let mut fast = Writer::default();
        fast.hostile(&s);
        let mut slow = Writer::default();
        slow.str(&escape_control(&s));
        proptest::prop_assert_eq!(fast.into_string(), slow.into_string());
    }

    #[test]
    fn plain_is_printable_ascii_without_quote_or_backslash(
        bytes in proptest::collection::vec(0x1fu8..=0x80, 0..24),
    ) {
        let naive = bytes.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        proptest::prop_assert_eq!(is_plain(&bytes), naive);
    }
}

#[test]
fn plain_sees_every_byte_in_every_position() {
    for b in 0..=u8::MAX {
        let naive = (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
        for at in 0..19 {
            let mut bytes = *b"abcdefghijklmnopqrs";
            bytes[at] = b;
            assert_eq!(is_plain(&bytes), naive, "{b:#x} at {at}");
        }
    }
}
