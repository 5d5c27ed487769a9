//! `rsttrace explain [CAUSE]` and `--lang`: the cause table's texts
//! (`model::cause::CAUSES`) rendered for people, and docs/causes.md
//! generated from them; tests keep docs/causes.md and the closed sets of
//! docs/schema.md in sync with the tables.

use std::fmt::Write as _;

use crate::model::cause::{CAUSES, CauseId, Texts};
#[cfg(test)]
use crate::model::schema;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    #[default]
    En,
    Zh,
}

/// A cause's texts in `lang`.
pub(crate) fn texts(c: CauseId, lang: Lang) -> &'static Texts {
    match lang {
        Lang::En => &c.info().en,
        Lang::Zh => &c.info().zh,
    }
}

pub fn explanation(c: CauseId, lang: Lang) -> &'static str {
    texts(c, lang).explanation
}

pub fn remedy(c: CauseId, lang: Lang) -> &'static str {
    texts(c, lang).remedy
}

/// The full entry for one cause, as `rsttrace explain CAUSE` prints it.
pub fn render(c: CauseId, lang: Lang) -> String {
    let t = texts(c, lang);
    let mut s = String::new();
    match lang {
        Lang::En => {
            let _ = writeln!(s, "{}: {}", c.id(), t.explanation);
            let _ = writeln!(s, "  the application sees: {}", t.sees);
            let _ = writeln!(s, "  the kernel:           {}", t.kernel);
            let _ = writeln!(s, "  rsttrace observes:    {}", t.observes);
            let _ = writeln!(s, "  fix:                  {}", t.remedy);
        }
        Lang::Zh => {
            let title = c.info().zh_title;
            let _ = writeln!(s, "{}（{title}）：{}", c.id(), t.explanation);
            let _ = writeln!(s, "  应用看到：{}", t.sees);
            let _ = writeln!(s, "  内核路径：{}", t.kernel);
            let _ = writeln!(s, "  rsttrace 依据：{}", t.observes);
            let _ = writeln!(s, "  解决办法：{}", t.remedy);
        }
    }
    s
}

/// Where docs/causes.md's generated text ends and the cause × kernel table
/// (written by `cargo xtask causes-doc` from the VM and host runs) begins.
pub const KERNEL_TABLE_MARKER: &str = "\n<!-- cause x kernel table: cargo xtask causes-doc -->\n";

/// docs/causes.md.
pub fn markdown() -> String {
    let mut s = String::from(
        "# Causes\n\nGenerated from the cause table in `rsttrace/src/model/cause.rs` (`rsttrace explain`, \
         `rsttrace explain --lang zh`). Ids are stable: they are part of the export schema.\n",
    );
    for c in CAUSES {
        let (en, zh) = (&c.en, &c.zh);
        let _ = write!(
            s,
            "\n## `{}` — {}\n\n{} ({})\n\n- **What the application sees:** {}\n- **What the kernel does:** {}\n- **What rsttrace observes:** {}\n- **How to fix it:** {}\n- **解决办法：** {}\n",
            c.name,
            c.zh_title,
            capitalise(en.explanation),
            zh.explanation,
            en.sees,
            en.kernel,
            en.observes,
            capitalise(en.remedy),
            zh.remedy,
        );
    }
    s.push_str(
        "\n## Received RSTs: evidence rules — 收到的 RST：证据规则\n\n\
         | evidence | rule | 规则 |\n|---|---|---|\n",
    );
    for (field, en, zh) in RECEIVED_RULES {
        let _ = writeln!(s, "| `{field}` | {en} | {zh} |");
    }
    s
}

/// How a received RST is judged, and each rule that makes it
/// `middlebox_suspect`: (evidence field, English, Chinese). A received RST
/// is `certain` only when its sender's own send is seen on this host.
pub const RECEIVED_RULES: &[(&str, &str, &str)] = &[
    (
        "peer_event",
        "paired: a TCP stack on this host (loopback or another network namespace) sent it: mirrored 4-tuple, within 500 ms, the same sequence number where both sides carry one. Only then is peer_reset or peer_refused certain; the field names the sender's cause, process, namespace and the time between the two events",
        "已配对：本机（回环或另一个网络命名空间）的 TCP 协议栈发出了这个 RST：四元组互为镜像，相隔不超过 500 毫秒，双方都带序列号时序列号一致。只有这时 peer_reset 或 peer_refused 才是“certain”（确定）；该字段给出发送方的原因、进程、命名空间和两个事件的时间差",
    ),
    (
        "unpaired",
        "why no send was paired: `sender not on this host` (nothing here corroborates it: likely), `sender on this host sent no RST`, or `sender not looked for`",
        "为何没有配对的发送事件：“sender not on this host”（发送方不在本机，无从印证：“likely”）、“sender on this host sent no RST”（发送方在本机，但其协议栈没有发出 RST）或“sender not looked for”（未查找）",
    ),
    (
        "local_sender_sent_no_rst",
        "the sender's address is on this host (in some network namespace) and no TCP stack there sent a matching RST: a firewall's reject (nftables/iptables `reject with tcp reset`) or an injected segment; `suspect` is `firewall_reject`, `sender_netns` the namespace holding the address",
        "发送方地址在本机（某个网络命名空间内），但那里没有任何 TCP 协议栈发出匹配的 RST：多为防火墙以 RST 拒绝（nftables/iptables 的“reject with tcp reset”）或被注入的报文；“suspect”为 firewall_reject，sender_netns 是该地址所在的命名空间",
    ),
    (
        "peer_event.cause = firewall_reject",
        "paired with the RST a firewall on this host made (a sent `firewall_reject`): the received RST is `firewall_reject` too, with that send's confidence (certain from nf_send_reset, likely from a socketless RST seen on a device)",
        "与本机防火墙构造的 RST（发出方向的 firewall_reject）配对：收到的 RST 也判为 firewall_reject，置信度与该发送事件相同（来自 nf_send_reset 为“certain”，来自网卡上无套接字的 RST 为“likely”）",
    ),
    (
        "seq",
        "where the RST's sequence number fell against the socket's `rcv_nxt` and `rcv_wnd`: `position` is `exact`, `after_fin` (rcv_nxt - 1 after the peer's FIN), `in_window`, `outside`, or `not_checked` in SYN_SENT (the ACK number is checked there); `offset` is seq - rcv_nxt; `from` says whether the number came from the received segment (kprobe/fentry receive hooks) or from the paired sender's event. tcp_validate_incoming() (RFC 5961) passes an RST to tcp_reset() in a synchronized state only when it is exact (or after_fin, or at the right edge of a SACK block): an in-window one gets a challenge ACK and an outside one is dropped, so these never reach rsttrace. `exact` therefore proves the sender tracked the flow to the byte (the peer, or a box on the path that sees its traffic), ruling out a blind off-path guess; it cannot tell the peer from an on-path middlebox",
        "RST 的序列号相对于套接字 rcv_nxt 和 rcv_wnd 的位置：“position”为“exact”（恰好等于）、“after_fin”（对端 FIN 之后的 rcv_nxt - 1）、“in_window”（窗口内）、“outside”（窗口外），或在 SYN_SENT 状态为“not_checked”（该状态只检查确认号）；“offset”为“seq - rcv_nxt”；“from”表示序列号取自收到的报文（kprobe/fentry 接收钩子）还是配对的发送事件。tcp_validate_incoming()（RFC 5961）在已同步状态下只把恰好等于 rcv_nxt 的 RST（或 after_fin，或 SACK 块右边界）交给 tcp_reset()：窗口内但不相等的只换来挑战 ACK，窗口外的被丢弃，rsttrace 看不到它们。因此“exact”证明发送方逐字节跟踪着这条流（对端，或路径上能看到其流量的设备），排除了路径外的盲目猜测；但无法区分对端与路径上的中间设备",
    ),
    (
        "idle_past_lb_timeout",
        "the peer was silent (`peer_idle_s`) for 240 s or more, the shortest idle timeout of common NAT gateways and load balancers (Azure 240 s, AWS NLB 350 s)",
        "对端静默（peer_idle_s）达到 240 秒以上，即常见 NAT 网关和负载均衡的最短空闲超时（Azure 240 秒，AWS NLB 350 秒）",
    ),
    (
        "idle_past_conntrack_timeout",
        "the peer was silent longer than this host's own conntrack timeout for established flows (`conntrack_timeout_s`, from /proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established): a local NAT or stateful firewall forgot the flow",
        "对端静默时间超过本机连接跟踪（nf_conntrack）对已建立连接的超时（conntrack_timeout_s，读自 /proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established）：本机的 NAT 或状态防火墙已忘记这条流",
    ),
    (
        "rst_ttls_differ",
        "several RSTs received on one flow within a minute carry different TTLs or hop limits (`ttl`, `flow_rst_ttls`): the injection pattern, each forger at its own hop distance. Needs the received segment (kprobe/fentry receive hooks)",
        "一分钟内同一条流收到多个 RST，其 TTL 或跳数限制各不相同（“ttl”、flow_rst_ttls）：典型的注入特征，每个伪造者距离不同。需要收到的报文本身（kprobe/fentry 接收钩子）",
    ),
    (
        "folded_receive",
        "on a sent RST: the kernel ran tcp_reset() on this socket just before sending it (data after shutdown in FIN_WAIT); nothing was received, so no received event is reported",
        "出现在发出的 RST 上：内核在发出它之前刚对这个套接字调用了 tcp_reset()（FIN_WAIT 状态下调用 shutdown() 之后又收到数据）；并没有收到 RST，因此不报告接收事件",
    ),
    (
        "previous_connection",
        "on a sent RST in SYN_SENT: this side's previous connection on the same 4-tuple was killed or aborted (its RST lost), so the peer's stale socket answered the SYN: half_open, not time_wait. Without such a record time_wait stays",
        "出现在 SYN_SENT 状态发出的 RST 上：本端在同一四元组上的上一条连接被强制关闭或异常终止（其 RST 丢失），对端残留的套接字回应了 SYN：判为 half_open 而不是 time_wait。没有这样的记录时保持 time_wait",
    ),
];

#[cfg(test)]
/// The "Closed sets" section of docs/schema.md, from the schema's tables
/// and the cause table (here, above both: schema.rs is below cause.rs).
fn markdown_closed_sets() -> String {
    let list = |names: &mut dyn Iterator<Item = &str>| {
        names
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = String::from(
        "## Closed sets\n\n\
         Generated from `rsttrace/src/model/schema.rs` and the cause table; the writer \
         emits only these names and `rsttrace read` accepts exactly these \
         (anything else reads back as `unknown`, or is refused for `cause`).\n\n",
    );
    s += &format!(
        "- `hook`: {}\n",
        list(&mut schema::HOOKS.iter().map(|(_, n)| *n))
    );
    s += &format!(
        "- `state`, `socket.tw_substate`: {}\n",
        list(&mut schema::TCP_STATES.iter().copied())
    );
    s += &format!(
        "- `actor.context`: `task`, {}, `{}`, `unknown`\n",
        list(&mut schema::SOFTIRQS.iter().copied()),
        schema::SOFTIRQ_OTHER
    );
    s += &format!(
        "- `container.runtime`: {}\n",
        list(&mut schema::RUNTIMES.iter().copied())
    );
    s += &format!(
        "- `direction`: {}\n",
        list(&mut schema::DIRECTIONS.iter().copied())
    );
    s += &format!("- `cause`: {}\n", list(&mut CAUSES.iter().map(|c| c.name)));
    s
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}

/// Plain English words left in a Chinese text. Code stays as it is
/// (functions, errnos, reasons, states, sysctls: anything with `_`,
/// `()`, digits or capitals), and so do the messages programs print,
/// quoted as “...”; any other lower-case word is English that should
/// have been translated, unless it is one of the few terms Chinese
/// articles on RSTs use as they are.
#[cfg(test)]
pub(crate) fn english_in(text: &str) -> Vec<String> {
    // Commands keep their names.
    const TERMS: &[&str] = &[
        "dmesg",
        "ss",
        "keepalive",
        "rsttrace",
        "errno",
        "abort",
        "evidence",
        "actor",
    ];
    let mut unquoted = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '“' => quoted = true,
            '”' => quoted = false,
            _ if !quoted => unquoted.push(c),
            _ => {}
        }
    }
    unquoted
        .split(|c: char| !c.is_ascii() || c.is_ascii_whitespace() || ",;'\"".contains(c))
        .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        .filter(|w| !TERMS.contains(w))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_both_languages() {
        for &c in CauseId::ALL {
            for lang in [Lang::En, Lang::Zh] {
                assert!(!explanation(c, lang).is_empty(), "{c:?}");
                assert!(!remedy(c, lang).is_empty(), "{c:?}");
                assert!(render(c, lang).starts_with(c.id()));
            }
        }
        assert!(render(CauseId::PortNotOpen, Lang::Zh).contains("端口未打开"));
    }

    /// `--lang zh` never falls back to English: every text of every cause,
    /// as `explain` prints it and as the JSON `explanation` carries it.
    #[test]
    fn chinese_texts_have_no_english_left() {
        for &c in CauseId::ALL {
            let (title, t) = (c.info().zh_title, &c.info().zh);
            for (field, zh) in [
                ("title", title),
                ("explanation", t.explanation),
                ("remedy", t.remedy),
                ("sees", t.sees),
                ("kernel", t.kernel),
                ("observes", t.observes),
            ] {
                assert!(
                    zh.chars().any(|ch| ('\u{4e00}'..='\u{9fff}').contains(&ch)),
                    "{}: zh {field} has no Chinese: {zh}",
                    c.id()
                );
                let english = english_in(zh);
                assert!(
                    english.is_empty(),
                    "{}: zh {field} has English {english:?}: {zh}",
                    c.id()
                );
            }
            // The rendered entry: headings and texts, past the cause id.
            let rendered = render(c, Lang::Zh);
            let body = rendered.strip_prefix(c.id()).unwrap_or(&rendered);
            let english = english_in(body);
            assert!(english.is_empty(), "{english:?} in\n{rendered}");
            assert_eq!(explanation(c, Lang::Zh), t.explanation);
        }
        for (field, _, zh) in RECEIVED_RULES {
            let english = english_in(zh);
            assert!(english.is_empty(), "rule {field}: {english:?} in {zh}");
        }
    }

    #[test]
    fn the_english_detector_catches_a_fallback() {
        assert_eq!(
            english_in("应用看到：the peer's read fails"),
            ["the", "peer", "s", "read", "fails"]
        );
        assert!(
            english_in("对端的 read() 失败，返回 ECONNRESET（“Connection reset by peer”）")
                .is_empty()
        );
        assert!(english_in("tcp_v4_rcv() 找不到套接字：NO_SOCKET，tcp_rfc1337=1").is_empty());
    }

    /// The cause × kernel table in docs/causes.md, from the integration
    /// tests on four kernels, reports each cause only in a direction the
    /// cause table gives it.
    #[test]
    fn causes_seen_on_kernels_have_their_table_directions() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/causes.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let (_, table) = doc.split_once(KERNEL_TABLE_MARKER).unwrap();
        let mut rows = 0;
        for line in table.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [_, direction, cause, ..] = cells[..] else {
                continue;
            };
            let Some(cause) = cause.strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
                continue;
            };
            let c = CauseId::from_id(cause).unwrap_or_else(|| panic!("{line}"));
            assert!(
                c.info().directions.iter().any(|d| d.as_str() == direction),
                "docs/causes.md reports {cause} {direction}; CAUSES says {:?}",
                c.info().directions
            );
            rows += 1;
        }
        assert!(rows > 10, "{rows} rows in\n{table}");
    }

    #[test]
    fn docs_causes_md_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/causes.md");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        // After the marker: the per-kernel table `cargo xtask causes-doc`
        // writes from the test runs.
        let committed = committed
            .split_once(KERNEL_TABLE_MARKER)
            .map_or(committed.as_str(), |(text, _)| text);
        assert!(
            committed == markdown(),
            "docs/causes.md is stale: regenerate it with `rsttrace explain --markdown > docs/causes.md`"
        );
    }

    #[test]
    fn docs_schema_md_lists_the_closed_sets() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/schema.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            doc.contains(&markdown_closed_sets()),
            "docs/schema.md is stale: replace its \"Closed sets\" section with \
             the output of explain::markdown_closed_sets()"
        );
    }
}
