//! `rsttrace explain [CAUSE]` and `--lang`: what each cause means, how the
//! kernel gets there, what rsttrace looks at, and what to change.
//!
//! The Chinese texts use the vocabulary of the articles our users read
//! (端口未打开, 请求超时, 接收缓冲区还有数据未被读出, 异常终止 ...).
//! docs/causes.md is generated from this table (a test keeps it in sync).

use std::fmt::Write as _;

use crate::model::cause::CauseId;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    #[default]
    En,
    Zh,
}

struct Text {
    zh_title: &'static str,
    zh_explanation: &'static str,
    zh_remedy: &'static str,
    /// What the application sees.
    sees: &'static str,
    /// The kernel path that sends (or accepts) the RST.
    kernel: &'static str,
    /// What rsttrace reads to tell this cause apart.
    observes: &'static str,
    zh_sees: &'static str,
    zh_kernel: &'static str,
    zh_observes: &'static str,
}

fn text(c: CauseId) -> Text {
    use CauseId::*;
    #[allow(clippy::too_many_arguments)]
    fn t(
        zh_title: &'static str,
        zh_explanation: &'static str,
        zh_remedy: &'static str,
        sees: &'static str,
        kernel: &'static str,
        observes: &'static str,
        [zh_sees, zh_kernel, zh_observes]: [&'static str; 3],
    ) -> Text {
        Text {
            zh_title,
            zh_explanation,
            zh_remedy,
            sees,
            kernel,
            observes,
            zh_sees,
            zh_kernel,
            zh_observes,
        }
    }
    match c {
        PortNotOpen => t(
            "端口未打开",
            "SYN 到达了一个没有进程监听的端口，内核直接回复 RST",
            "确认服务已启动并监听正确的地址和端口；检查是否只调用了 bind() 而未调用 listen()",
            "the client's connect() fails with ECONNREFUSED (\"Connection refused\")",
            "tcp_v4_rcv() finds no socket and calls tcp_v4_send_reset(NULL, skb); reason NO_SOCKET (6.10+)",
            "a sent RST with no socket whose trigger segment is a SYN without ACK",
            [
                "客户端的 connect() 失败，返回 ECONNREFUSED（“Connection refused”，连接被拒绝）",
                "tcp_v4_rcv() 找不到套接字，调用 tcp_v4_send_reset(NULL, skb) 回复 RST；内核原因为 NO_SOCKET（6.10+）",
                "本机发出的 RST 没有对应的套接字，触发它的报文是不带 ACK 的 SYN",
            ],
        ),
        ConnectTimeout => t(
            "请求超时（连接超时）",
            "本端已放弃连接（connect() 超时或调用了 close()），迟到的 SYN-ACK 被回复 RST",
            "加大客户端连接超时，或排查服务端为何响应慢（积压、丢包、SYN-ACK 重传）",
            "the client already reported a timeout; the server sees its half-open connection reset",
            "close() in SYN_SENT sends nothing; the late SYN-ACK finds no socket: NO_SOCKET",
            "a sent RST with no socket whose trigger is a SYN-ACK",
            [
                "客户端早已报告超时；服务端看到自己的半打开连接被复位",
                "在 SYN_SENT 状态 close() 不发送任何报文；迟到的 SYN-ACK 找不到套接字：NO_SOCKET",
                "本机发出的 RST 没有对应的套接字，触发它的报文是 SYN-ACK",
            ],
        ),
        CloseUnreadData => t(
            "接收缓冲区还有数据未被读出",
            "应用在接收缓冲区仍有未读数据时调用 close()，内核发送 RST 而不是 FIN，数据丢失",
            "close() 前读完请求/响应；或先 shutdown(SHUT_WR) 再读到 EOF 后关闭",
            "the peer's read or write fails with ECONNRESET; the unread bytes are lost",
            "__tcp_close(): data_was_unread -> tcp_set_state(CLOSE) -> tcp_send_active_reset(); reason TCP_ABORT_ON_CLOSE",
            "an active RST in state CLOSE with rcv_nxt - copied_seq > 0 (a received FIN counts one), made in the owner's close()",
            [
                "对端的 read() 或 write() 失败，返回 ECONNRESET；未读出的数据丢失",
                "__tcp_close()：data_was_unread -> tcp_set_state(CLOSE) -> tcp_send_active_reset()；内核原因为 TCP_ABORT_ON_CLOSE",
                "主动发出的 RST，状态为 CLOSE，rcv_nxt - copied_seq > 0（收到的 FIN 计为 1 字节），发生在属主进程的 close() 中",
            ],
        ),
        DataAfterClose => t(
            "对端在本端 close() 之后继续写",
            "本端已关闭套接字，对端仍发送数据，内核回复 RST；对端下一次 write() 得到 EPIPE/SIGPIPE",
            "约定由谁先关闭；对端读到 EOF（read() 返回 0）后应停止写入",
            "the writer's first write succeeds, the next one fails with EPIPE (SIGPIPE)",
            "an orphan in FIN_WAIT2/TIME_WAIT gets data: TCP_TW_RST (TCP_TIMEWAIT_SOCKET), or tcp_rcv_state_process() with RCV_SHUTDOWN (TCP_ABORT_ON_DATA)",
            "a passive RST whose trigger carries payload (or a FIN) on a closed/timewait socket",
            [
                "写入方第一次 write() 成功，下一次失败，返回 EPIPE（收到 SIGPIPE 信号）",
                "已成为孤儿的 FIN_WAIT2/TIME_WAIT 套接字收到数据：TCP_TW_RST（TCP_TIMEWAIT_SOCKET），或 tcp_rcv_state_process() 发现 RCV_SHUTDOWN（TCP_ABORT_ON_DATA）",
                "被动发出的 RST，触发报文携带数据（或 FIN），落在已关闭或 TIME_WAIT 的套接字上",
            ],
        ),
        LingerZero => t(
            "SO_LINGER 为 0",
            "应用设置了 SO_LINGER {1, 0} 后 close()，内核丢弃未发数据并发送 RST（内核原因显示为 TCP_STATE）",
            "除非确实要异常终止，否则去掉 SO_LINGER 0；它会丢弃未发送的数据",
            "the peer sees ECONNRESET; data not yet sent is discarded",
            "__tcp_close() -> tcp_disconnect() -> tcp_send_active_reset(); reason TCP_STATE (misleading); counts TCPAbortOnData",
            "an active RST in state CLOSE with SOCK_LINGER set and sk_lingertime 0, in the owner's close()",
            [
                "对端收到 ECONNRESET；尚未发送的数据被丢弃",
                "__tcp_close() -> tcp_disconnect() -> tcp_send_active_reset()；内核原因为 TCP_STATE（有误导性）；计入 TCPAbortOnData",
                "主动发出的 RST，状态为 CLOSE，设置了 SOCK_LINGER 且 sk_lingertime 为 0，发生在属主进程的 close() 中",
            ],
        ),
        Linger2Abort => t(
            "TCP_LINGER2 小于 0",
            "在 FIN_WAIT2 状态 close()，且 TCP_LINGER2 < 0，内核直接发送 RST",
            "把 TCP_LINGER2 设为 >= 0，除非确实希望 FIN_WAIT2 时异常终止",
            "the peer sees ECONNRESET instead of a clean close",
            "__tcp_close() in FIN_WAIT2 with linger2 < 0: TCP_ABORT_ON_LINGER; the keepalive timer does the same for a dead FIN_WAIT2 (TCP_STATE)",
            "reason TCP_ABORT_ON_LINGER, or TCP_STATE from the timer in a non-CLOSE state",
            [
                "对端收到 ECONNRESET，而不是正常关闭",
                "FIN_WAIT2 状态下 __tcp_close() 且 linger2 < 0：TCP_ABORT_ON_LINGER；keepalive 定时器对已失效的 FIN_WAIT2 也会这样做（TCP_STATE）",
                "内核原因 TCP_ABORT_ON_LINGER，或定时器在非 CLOSE 状态下给出的 TCP_STATE",
            ],
        ),
        KeepaliveTimeout => t(
            "keepalive 超时",
            "keepalive 探测包连续无应答，内核判定连接已死并发送 RST",
            "对端或路径已失效；检查 NAT/负载均衡的空闲超时和对端健康状况",
            "the application gets ETIMEDOUT on its next call",
            "tcp_keepalive_timer(): probes_out >= keepalive_probes -> tcp_send_active_reset(); reason TCP_KEEPALIVE_TIMEOUT",
            "an active RST from the TIMER softirq on a socket with SO_KEEPALIVE and probes_out > 0",
            [
                "应用的下一次调用得到 ETIMEDOUT",
                "tcp_keepalive_timer()：probes_out >= keepalive_probes -> tcp_send_active_reset()；内核原因为 TCP_KEEPALIVE_TIMEOUT",
                "由 TIMER 软中断主动发出的 RST，套接字设置了 SO_KEEPALIVE 且 probes_out > 0",
            ],
        ),
        TimeWait => t(
            "TIME_WAIT 冲突",
            "新连接使用的四元组在对端仍处于 TIME_WAIT（或 PAWS 校验失败），本端回复 RST",
            "让客户端使用随机临时端口（不要固定源端口），或开启 TCP 时间戳",
            "connect() usually succeeds ~10 ms later after a SYN retransmit; with tcp_rfc1337=1 it can time out",
            "the peer's TIME_WAIT answers the SYN with an ACK; our SYN_SENT socket replies RST: TCP_INVALID_ACK_SEQUENCE or TCP_RFC7323_PAWS",
            "a passive RST in SYN_SENT triggered by a pure ACK or a SYN-ACK with a bad timestamp",
            [
                "SYN 重传后 connect() 通常约 10 毫秒后成功；若 tcp_rfc1337=1 则可能超时",
                "对端的 TIME_WAIT 套接字用 ACK 回应 SYN；本端 SYN_SENT 套接字回复 RST：TCP_INVALID_ACK_SEQUENCE 或 TCP_RFC7323_PAWS",
                "SYN_SENT 状态下被动发出的 RST，触发报文是纯 ACK 或时间戳错误的 SYN-ACK",
            ],
        ),
        InvalidPacket => t(
            "无效报文",
            "收到了 TCP 状态机拒绝的报文（对监听端口的错误 ACK、重复 SYN、PAWS 等）",
            "排查过期的对端、改写报文的 NAT 或有问题的 TCP 协议栈",
            "usually nothing: the stray segment's sender gets the RST",
            "tcp_rcv_state_process(LISTEN) -> TCP_FLAGS; tcp_check_req() -> INVALID_SYN; other ACK checks -> TCP_*_ACK",
            "the kernel reason, the state (LISTEN, SYN_RECV) and the trigger flags",
            [
                "通常应用无感知：收到 RST 的是发送异常报文的一方",
                "tcp_rcv_state_process(LISTEN) -> TCP_FLAGS；tcp_check_req() -> INVALID_SYN；其他 ACK 校验 -> TCP_*_ACK",
                "内核原因、套接字状态（LISTEN、SYN_RECV）和触发报文的标志位",
            ],
        ),
        HalfOpen => t(
            "半打开连接",
            "对端还保留着本机已经不存在的连接（本机崩溃、重启或连接已过期），其报文被回复 RST",
            "对端持有的是死连接：在对端开启 keepalive，并在 ECONNRESET 时重试",
            "the surviving peer gets ECONNRESET on its next send",
            "tcp_v4_rcv() finds no socket for a non-SYN segment: NO_SOCKET",
            "a sent RST with no socket whose trigger is neither SYN nor SYN-ACK",
            [
                "仍存活的一端在下一次发送时得到 ECONNRESET",
                "tcp_v4_rcv() 为非 SYN 报文找不到套接字：NO_SOCKET",
                "本机发出的 RST 没有对应的套接字，触发报文既不是 SYN 也不是 SYN-ACK",
            ],
        ),
        BacklogOverflow => t(
            "监听队列溢出",
            "全连接队列已满且 tcp_abort_on_overflow=1，第三次握手的 ACK 被回复 RST（内核原因显示为 INVALID_SYN）",
            "加快 accept()，加大 listen() 的队列长度参数和 net.core.somaxconn",
            "the client's connect() succeeded, then its first read or write fails with ECONNRESET",
            "tcp_check_req(): syn_recv_sock() fails on a full queue -> listen_overflow -> RST; reason INVALID_SYN (misleading)",
            "reason INVALID_SYN with a pure-ACK trigger on a LISTEN socket",
            [
                "客户端的 connect() 已成功，随后第一次 read() 或 write() 失败，返回 ECONNRESET",
                "tcp_check_req()：队列已满时 syn_recv_sock() 失败 -> listen_overflow -> RST；内核原因为 INVALID_SYN（有误导性）",
                "内核原因 INVALID_SYN，触发报文是发往 LISTEN 套接字的纯 ACK",
            ],
        ),
        MemoryPressure => t(
            "孤儿连接过多 / 内存压力",
            "孤儿套接字数量或 tcp_mem 超限，内核主动终止连接",
            "调大 net.ipv4.tcp_max_orphans / tcp_mem，或让应用更平缓地关闭连接",
            "peers see ECONNRESET; dmesg says \"too many orphaned sockets\"",
            "tcp_check_oom() in __tcp_close() or tcp_out_of_resources(): TCP_ABORT_ON_MEMORY",
            "the kernel reason, or (without it) an orphan (SOCK_DEAD) reset in CLOSE with nothing unread",
            [
                "对端收到 ECONNRESET；dmesg 显示 “too many orphaned sockets”（孤儿套接字过多）",
                "__tcp_close() 或 tcp_out_of_resources() 中的 tcp_check_oom()：TCP_ABORT_ON_MEMORY",
                "内核原因；或（没有内核原因时）孤儿套接字（SOCK_DEAD）在 CLOSE 状态复位，且没有未读数据",
            ],
        ),
        Disconnect => t(
            "connect(AF_UNSPEC) 断开",
            "应用对一个活动连接调用 connect(AF_UNSPEC)（tcp_disconnect），内核发送 RST",
            "这是应用有意为之；检查它为何在数据未发完时断开",
            "the peer sees ECONNRESET",
            "__inet_stream_connect() -> tcp_disconnect(): TCP_STATE, or TCP_DISCONNECT_WITH_DATA with unsent data in CLOSING/LAST_ACK",
            "an active RST in CLOSE from the owner's task without SO_LINGER 0 or unread data",
            [
                "对端收到 ECONNRESET",
                "__inet_stream_connect() -> tcp_disconnect()：TCP_STATE；在 CLOSING/LAST_ACK 状态有未发送数据时为 TCP_DISCONNECT_WITH_DATA",
                "属主进程自己主动发出的 RST，状态为 CLOSE，没有 SO_LINGER 0，也没有未读数据",
            ],
        ),
        SocketKilled => t(
            "连接被外部强制关闭",
            "连接被 ss -K、tcp_abort 或 BPF sock_destroy 从外部销毁",
            "找到执行销毁的进程（actor）及其原因",
            "the owner gets ECONNABORTED; the peer sees ECONNRESET",
            "tcp_abort() resets in the original state (not CLOSE): TCP_STATE",
            "an active RST with TCP_STATE in a state other than CLOSE, made by a task other than a timer",
            [
                "属主进程得到 ECONNABORTED；对端收到 ECONNRESET",
                "tcp_abort() 在原状态（而非 CLOSE）下复位：TCP_STATE",
                "主动发出的 RST，内核原因 TCP_STATE，状态不是 CLOSE，由定时器以外的其他进程发出",
            ],
        ),
        ListenerClosed => t(
            "监听套接字关闭",
            "监听套接字关闭时全连接队列中还有未被 accept() 取走的连接，这些连接被 RST",
            "停止监听前先把全连接队列处理完（优雅退出）",
            "clients whose handshake completed see ECONNRESET without ever being served",
            "inet_csk_listen_stop() -> inet_child_forget() -> tcp_disconnect(): TCP_STATE on an orphan child",
            "TCP_STATE in CLOSE on an orphan child socket that no process owns",
            [
                "三次握手已完成的客户端还没被服务就收到 ECONNRESET",
                "inet_csk_listen_stop() -> inet_child_forget() -> tcp_disconnect()：孤儿子套接字上的 TCP_STATE",
                "CLOSE 状态下的 TCP_STATE，落在没有任何进程持有的孤儿子套接字上",
            ],
        ),
        PeerRefused => t(
            "对端拒绝连接",
            "本端的 SYN 得到 RST：对端端口未打开，或防火墙以 RST 拒绝",
            "对端端口未打开或被防火墙拒绝；在对端运行 rsttrace 可确认",
            "connect() fails with ECONNREFUSED",
            "tcp_rcv_synsent_state_process() accepts the RST -> tcp_reset() in SYN_SENT",
            "a received RST accepted in SYN_SENT",
            [
                "connect() 失败，返回 ECONNREFUSED",
                "tcp_rcv_synsent_state_process() 接受了 RST -> 在 SYN_SENT 状态调用 tcp_reset()",
                "在 SYN_SENT 状态被接受的 RST",
            ],
        ),
        PeerReset => t(
            "对端复位连接",
            "对端复位了一个已建立的连接",
            "查看对端：在对端运行 rsttrace 或查看其日志可知原因",
            "ECONNRESET (\"Connection reset by peer\"), or EPIPE if the RST hit CLOSE_WAIT",
            "tcp_validate_incoming() accepts an in-window RST -> tcp_reset()",
            "a received RST, with the state it hit and the unacked/unread bytes",
            [
                "ECONNRESET（“Connection reset by peer”，连接被对端重置）；若 RST 落在 CLOSE_WAIT 状态则为 EPIPE",
                "tcp_validate_incoming() 接受窗口内的 RST -> tcp_reset()",
                "收到的 RST，以及它落在的状态和未确认、未读出的字节数",
            ],
        ),
        MiddleboxSuspect => t(
            "中间设备伪造的 RST",
            "收到的 RST 很可能由路径上的 NAT、负载均衡或防火墙发出（空闲超时后会话表项已被清除）",
            "把空闲时间与 NAT/负载均衡的空闲超时比较；开启比其更短的 keepalive",
            "ECONNRESET on a connection that was idle, often on the first write after the gap",
            "tcp_validate_incoming() accepts an in-window RST that the peer host never sent",
            "a received RST after an idle gap of minutes on an established connection, or whose TTL/window disagree with the flow",
            [
                "空闲过的连接上出现 ECONNRESET，往往是空闲之后的第一次写",
                "tcp_validate_incoming() 接受了一个窗口内的 RST，但对端主机从未发出它",
                "已建立连接空闲数分钟后收到的 RST，或其 TTL、窗口与该连接的其他报文不一致",
            ],
        ),
        FirewallReject => t(
            "防火墙以 RST 拒绝",
            "本机的防火墙规则以自己构造的 RST 回应了该报文（“reject with tcp reset”）",
            "查看所指网络命名空间的 nftables/iptables 规则（“nft list ruleset”）；应用程序从未收到该报文",
            "connect() fails with ECONNREFUSED, or a live connection with ECONNRESET, though the server application never saw the segment",
            "an nftables `reject with tcp reset` or iptables `REJECT --reject-with tcp-reset` rule -> nf_send_reset()/nf_send_reset6() builds the RST and sends it with ip_local_out()/ip6_local_out(); no TCP socket is involved",
            "a kprobe on nf_send_reset/nf_send_reset6 (certain: `netfilter_hook`, `device`); without kprobes and with --firewall, an RST leaving a device with no socket and no TCP send event (likely); a received RST paired with either",
            [
                "connect() 失败并返回 ECONNREFUSED，或已建立的连接收到 ECONNRESET，而服务端应用程序从未收到该报文",
                "“nftables”的“reject with tcp reset”或“iptables”的“REJECT --reject-with tcp-reset”规则 -> nf_send_reset()/nf_send_reset6() 构造 RST，经 ip_local_out()/ip6_local_out() 发出；不涉及任何 TCP 套接字",
                "nf_send_reset/nf_send_reset6 上的内核探针（确定：netfilter_hook、“device”）；内核不支持内核探针且开启“--firewall”时，离开网卡、没有套接字也没有 TCP 发送事件的 RST（很可能）；以及与其配对的收到的 RST",
            ],
        ),
        RetransmitTimeout => t(
            "重传超时",
            "没有 RST：对端不再确认，内核重传次数用尽后放弃连接（包括 SYN 重传超时）",
            "排查路径丢包、对端宕机或防火墙丢包；按需调整 TCP_USER_TIMEOUT、tcp_retries2、tcp_syn_retries",
            "ETIMEDOUT (\"Connection timed out\") on the next call, after minutes of silence",
            "tcp_write_timeout() -> tcp_write_err(): sk_err = ETIMEDOUT, sk_error_report(), tcp_done(); no segment is sent",
            "an inet_sk_error_report with ETIMEDOUT that no RST preceded (direction abort)",
            [
                "沉默几分钟后，下一次调用得到 ETIMEDOUT（“Connection timed out”，连接超时）",
                "tcp_write_timeout() -> tcp_write_err()：sk_err = ETIMEDOUT，sk_error_report()，tcp_done()；不发送任何报文",
                "之前没有 RST 的 inet_sk_error_report，errno 为 ETIMEDOUT（方向为 abort）",
            ],
        ),
        Unreachable => t(
            "网络不可达",
            "没有 RST：ICMP 差错（主机/网络不可达、被拒绝）终止了连接",
            "检查两端之间的路由和防火墙；ICMP 差错指明了是哪一跳",
            "EHOSTUNREACH / ENETUNREACH (\"No route to host\"), or ECONNREFUSED from an ICMP reject",
            "tcp_v4_err()/tcp_v6_err() on a hard ICMP error in SYN_SENT (or with IP_RECVERR): sk_err, sk_error_report(), tcp_done()",
            "an inet_sk_error_report with an unreachable errno that no RST preceded (direction abort)",
            [
                "EHOSTUNREACH / ENETUNREACH（“No route to host”，没有到主机的路由），或 ICMP 拒绝带来的 ECONNREFUSED",
                "SYN_SENT 状态（或设置了 IP_RECVERR）收到严重 ICMP 差错时，tcp_v4_err()/tcp_v6_err()：sk_err，sk_error_report()，tcp_done()",
                "之前没有 RST 的 inet_sk_error_report，errno 表示不可达（方向为 abort）",
            ],
        ),
        Unknown => t(
            "未知原因",
            "内核事实与已知原因都不匹配",
            "请附上事件的 evidence 报告：这可能是新的原因",
            "an aborted connection",
            "any reset path not listed above",
            "nothing matched; every raw fact is in the event",
            [
                "连接被异常终止",
                "上面没有列出的任何复位路径",
                "没有匹配的规则；所有原始事实都在事件里",
            ],
        ),
    }
}

pub fn explanation(c: CauseId, lang: Lang) -> &'static str {
    match lang {
        Lang::En => c.explanation(),
        Lang::Zh => text(c).zh_explanation,
    }
}

pub fn remedy(c: CauseId, lang: Lang) -> &'static str {
    match lang {
        Lang::En => c.remedy(),
        Lang::Zh => text(c).zh_remedy,
    }
}

/// The full entry for one cause, as `rsttrace explain CAUSE` prints it.
pub fn render(c: CauseId, lang: Lang) -> String {
    let t = text(c);
    let mut s = String::new();
    match lang {
        Lang::En => {
            let _ = writeln!(s, "{}: {}", c.id(), c.explanation());
            let _ = writeln!(s, "  the application sees: {}", t.sees);
            let _ = writeln!(s, "  the kernel:           {}", t.kernel);
            let _ = writeln!(s, "  rsttrace observes:    {}", t.observes);
            let _ = writeln!(s, "  fix:                  {}", c.remedy());
        }
        Lang::Zh => {
            let _ = writeln!(s, "{}（{}）：{}", c.id(), t.zh_title, t.zh_explanation);
            let _ = writeln!(s, "  应用看到：{}", t.zh_sees);
            let _ = writeln!(s, "  内核路径：{}", t.zh_kernel);
            let _ = writeln!(s, "  rsttrace 依据：{}", t.zh_observes);
            let _ = writeln!(s, "  解决办法：{}", t.zh_remedy);
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
        "# Causes\n\nGenerated from `rsttrace/src/model/explain.rs` (`rsttrace explain`, \
         `rsttrace explain --lang zh`). Ids are stable: they are part of the export schema.\n",
    );
    for &c in CauseId::ALL {
        let t = text(c);
        let _ = write!(
            s,
            "\n## `{}` — {}\n\n{} ({})\n\n- **What the application sees:** {}\n- **What the kernel does:** {}\n- **What rsttrace observes:** {}\n- **How to fix it:** {}\n- **解决办法：** {}\n",
            c.id(),
            t.zh_title,
            capitalise(c.explanation()),
            t.zh_explanation,
            t.sees,
            t.kernel,
            t.observes,
            capitalise(c.remedy()),
            t.zh_remedy,
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
            assert!(!text(c).zh_title.is_empty());
        }
        assert!(render(CauseId::PortNotOpen, Lang::Zh).contains("端口未打开"));
    }

    /// `--lang zh` never falls back to English: every text of every cause,
    /// as `explain` prints it and as the JSON `explanation` carries it.
    #[test]
    fn chinese_texts_have_no_english_left() {
        for &c in CauseId::ALL {
            let t = text(c);
            for (field, zh) in [
                ("title", t.zh_title),
                ("explanation", t.zh_explanation),
                ("remedy", t.zh_remedy),
                ("sees", t.zh_sees),
                ("kernel", t.zh_kernel),
                ("observes", t.zh_observes),
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
            assert_eq!(explanation(c, Lang::Zh), t.zh_explanation);
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
}
