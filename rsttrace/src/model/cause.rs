//! The cause taxonomy: one table, [`CAUSES`], holds every fact about a
//! cause (its stable id, the directions it applies to, the kernel reasons
//! that name it, its texts in English and Chinese); everything else reads
//! it: the classifier's reason mapping, `rsttrace explain` and
//! docs/causes.md, `rsttrace check`, every output format, the JSON reader.
//!
//! Ids are part of the output schema: add new ones, never rename.

use crate::model::event::Direction::{self, Abort, Received, Sent};

/// A cause, by its row in [`CAUSES`]: the variants are in the table's
/// order (checked when compiling), `Unknown` last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CauseId {
    PortNotOpen,
    ConnectTimeout,
    CloseUnreadData,
    DataAfterClose,
    LingerZero,
    Linger2Abort,
    KeepaliveTimeout,
    TimeWait,
    InvalidPacket,
    HalfOpen,
    BacklogOverflow,
    MemoryPressure,
    Disconnect,
    SocketKilled,
    ListenerClosed,
    PeerRefused,
    PeerReset,
    MiddleboxSuspect,
    FirewallReject,
    RetransmitTimeout,
    Unreachable,
    Unknown,
}

/// Everything rsttrace says about one cause.
#[derive(Debug)]
pub(crate) struct CauseInfo {
    pub(crate) id: CauseId,
    /// The stable id: JSON/CSV `cause`, `--cause`, metrics and OTLP labels.
    pub(crate) name: &'static str,
    /// The event directions the classifier gives it to.
    pub(crate) directions: &'static [Direction],
    /// The `sk_rst_reason` names (6.10+) classify/sent.rs's `sent_with_reason`
    /// decides it by. The set grew over releases (6.10 has NO_SOCKET and
    /// the segment checks; TCP_STATE, TCP_ABORT_ON_CLOSE and the other
    /// active-reset names came later), so a kernel whose BTF lacks every
    /// name of a cause sends NOT_SPECIFIED there and inference decides it,
    /// as on kernels without a reason. Empty: decided by facts alone.
    pub(crate) kernel_reasons: &'static [&'static str],
    /// For a cause the reason names outright on newer kernels: the fact
    /// that tells it apart on kernels without one (`rsttrace check`).
    pub(crate) without_reason: Option<&'static str>,
    /// The Chinese heading of `explain --lang zh` and docs/causes.md.
    pub(crate) zh_title: &'static str,
    pub(crate) en: Texts,
    /// The vocabulary of the articles our users read (端口未打开, 请求超时,
    /// 接收缓冲区还有数据未被读出, 异常终止 ...).
    pub(crate) zh: Texts,
}

/// A cause's texts in one language.
#[derive(Debug)]
pub(crate) struct Texts {
    /// One line: what happened (JSON `explanation`, pcapng comments).
    pub(crate) explanation: &'static str,
    /// One line: what to change.
    pub(crate) remedy: &'static str,
    /// What the application sees.
    pub(crate) sees: &'static str,
    /// The kernel path that sends (or accepts) the RST.
    pub(crate) kernel: &'static str,
    /// What rsttrace reads to tell this cause apart.
    pub(crate) observes: &'static str,
}

/// Every cause, in `CauseId` order.
pub(crate) const CAUSES: &[CauseInfo] = &[
    CauseInfo {
        id: CauseId::PortNotOpen,
        name: "port_not_open",
        directions: &[Sent],
        kernel_reasons: &["NO_SOCKET"],
        without_reason: None,
        zh_title: "端口未打开",
        en: Texts {
            explanation: "a SYN arrived for a port with no listening socket",
            remedy: "check that the service is running and listening on this port and address",
            sees: "the client's connect() fails with ECONNREFUSED (\"Connection refused\")",
            kernel: "tcp_v4_rcv() finds no socket and calls tcp_v4_send_reset(NULL, skb); reason NO_SOCKET (6.10+)",
            observes: "a sent RST with no socket whose trigger segment is a SYN without ACK",
        },
        zh: Texts {
            explanation: "SYN 到达了一个没有进程监听的端口，内核直接回复 RST",
            remedy: "确认服务已启动并监听正确的地址和端口；检查是否只调用了 bind() 而未调用 listen()",
            sees: "客户端的 connect() 失败，返回 ECONNREFUSED（“Connection refused”，连接被拒绝）",
            kernel: "tcp_v4_rcv() 找不到套接字，调用 tcp_v4_send_reset(NULL, skb) 回复 RST；内核原因为 NO_SOCKET（6.10+）",
            observes: "本机发出的 RST 没有对应的套接字，触发它的报文是不带 ACK 的 SYN",
        },
    },
    CauseInfo {
        id: CauseId::ConnectTimeout,
        name: "connect_timeout",
        directions: &[Sent],
        kernel_reasons: &["NO_SOCKET"],
        without_reason: None,
        zh_title: "请求超时（连接超时）",
        en: Texts {
            explanation: "a SYN-ACK arrived for a connection the local side had already given up on",
            remedy: "raise the client's connect timeout or find why the server answers slowly",
            sees: "the client already reported a timeout; the server sees its half-open connection reset",
            kernel: "close() in SYN_SENT sends nothing; the late SYN-ACK finds no socket: NO_SOCKET",
            observes: "a sent RST with no socket whose trigger is a SYN-ACK",
        },
        zh: Texts {
            explanation: "本端已放弃连接（connect() 超时或调用了 close()），迟到的 SYN-ACK 被回复 RST",
            remedy: "加大客户端连接超时，或排查服务端为何响应慢（积压、丢包、SYN-ACK 重传）",
            sees: "客户端早已报告超时；服务端看到自己的半打开连接被复位",
            kernel: "在 SYN_SENT 状态 close() 不发送任何报文；迟到的 SYN-ACK 找不到套接字：NO_SOCKET",
            observes: "本机发出的 RST 没有对应的套接字，触发它的报文是 SYN-ACK",
        },
    },
    CauseInfo {
        id: CauseId::CloseUnreadData,
        name: "close_unread_data",
        directions: &[Sent],
        kernel_reasons: &["TCP_ABORT_ON_CLOSE"],
        without_reason: None,
        zh_title: "接收缓冲区还有数据未被读出",
        en: Texts {
            explanation: "the application closed the socket while received data was still unread",
            remedy: "read the request/response completely (or shutdown(SHUT_WR) and drain) before close()",
            sees: "the peer's read or write fails with ECONNRESET; the unread bytes are lost",
            kernel: "__tcp_close(): data_was_unread -> tcp_set_state(CLOSE) -> tcp_send_active_reset(); reason TCP_ABORT_ON_CLOSE",
            observes: "an active RST in state CLOSE with rcv_nxt - copied_seq > 0 (a received FIN counts one), made in the owner's close()",
        },
        zh: Texts {
            explanation: "应用在接收缓冲区仍有未读数据时调用 close()，内核发送 RST 而不是 FIN，数据丢失",
            remedy: "close() 前读完请求/响应；或先 shutdown(SHUT_WR) 再读到 EOF 后关闭",
            sees: "对端的 read() 或 write() 失败，返回 ECONNRESET；未读出的数据丢失",
            kernel: "__tcp_close()：data_was_unread -> tcp_set_state(CLOSE) -> tcp_send_active_reset()；内核原因为 TCP_ABORT_ON_CLOSE",
            observes: "主动发出的 RST，状态为 CLOSE，rcv_nxt - copied_seq > 0（收到的 FIN 计为 1 字节），发生在属主进程的 close() 中",
        },
    },
    CauseInfo {
        id: CauseId::DataAfterClose,
        name: "data_after_close",
        directions: &[Sent, Received],
        kernel_reasons: &["TCP_ABORT_ON_DATA", "TCP_TIMEWAIT_SOCKET"],
        without_reason: None,
        zh_title: "对端在本端 close() 之后继续写",
        en: Texts {
            explanation: "the peer sent data after this side closed the socket",
            remedy: "agree on who closes first; the peer should stop writing once it sees EOF",
            sees: "the writer's first write succeeds, the next one fails with EPIPE (SIGPIPE)",
            kernel: "an orphan in FIN_WAIT2/TIME_WAIT gets data: TCP_TW_RST (TCP_TIMEWAIT_SOCKET), or tcp_rcv_state_process() with RCV_SHUTDOWN (TCP_ABORT_ON_DATA)",
            observes: "a passive RST whose trigger carries payload (or a FIN) on a closed/timewait socket",
        },
        zh: Texts {
            explanation: "本端已关闭套接字，对端仍发送数据，内核回复 RST；对端下一次 write() 得到 EPIPE/SIGPIPE",
            remedy: "约定由谁先关闭；对端读到 EOF（read() 返回 0）后应停止写入",
            sees: "写入方第一次 write() 成功，下一次失败，返回 EPIPE（收到 SIGPIPE 信号）",
            kernel: "已成为孤儿的 FIN_WAIT2/TIME_WAIT 套接字收到数据：TCP_TW_RST（TCP_TIMEWAIT_SOCKET），或 tcp_rcv_state_process() 发现 RCV_SHUTDOWN（TCP_ABORT_ON_DATA）",
            observes: "被动发出的 RST，触发报文携带数据（或 FIN），落在已关闭或 TIME_WAIT 的套接字上",
        },
    },
    CauseInfo {
        id: CauseId::LingerZero,
        name: "linger_zero",
        directions: &[Sent],
        kernel_reasons: &["TCP_STATE"],
        without_reason: None,
        zh_title: "SO_LINGER 为 0",
        en: Texts {
            explanation: "the application closed the socket with SO_LINGER {on, 0}",
            remedy: "remove SO_LINGER 0 unless aborting is intended; it discards unsent data",
            sees: "the peer sees ECONNRESET; data not yet sent is discarded",
            kernel: "__tcp_close() -> tcp_disconnect() -> tcp_send_active_reset(); reason TCP_STATE (misleading); counts TCPAbortOnData",
            observes: "an active RST in state CLOSE with SOCK_LINGER set and sk_lingertime 0, in the owner's close()",
        },
        zh: Texts {
            explanation: "应用设置了 SO_LINGER {1, 0} 后 close()，内核丢弃未发数据并发送 RST（内核原因显示为 TCP_STATE）",
            remedy: "除非确实要异常终止，否则去掉 SO_LINGER 0；它会丢弃未发送的数据",
            sees: "对端收到 ECONNRESET；尚未发送的数据被丢弃",
            kernel: "__tcp_close() -> tcp_disconnect() -> tcp_send_active_reset()；内核原因为 TCP_STATE（有误导性）；计入 TCPAbortOnData",
            observes: "主动发出的 RST，状态为 CLOSE，设置了 SOCK_LINGER 且 sk_lingertime 为 0，发生在属主进程的 close() 中",
        },
    },
    CauseInfo {
        id: CauseId::Linger2Abort,
        name: "linger2_abort",
        directions: &[Sent],
        kernel_reasons: &["TCP_ABORT_ON_LINGER", "TCP_STATE"],
        without_reason: Some("the socket left FIN_WAIT2 in the same call"),
        zh_title: "TCP_LINGER2 小于 0",
        en: Texts {
            explanation: "close() in FIN_WAIT2 with TCP_LINGER2 < 0 aborts instead of waiting for the peer's FIN",
            remedy: "set TCP_LINGER2 >= 0 unless aborting in FIN_WAIT2 is intended",
            sees: "the peer sees ECONNRESET instead of a clean close",
            kernel: "__tcp_close() in FIN_WAIT2 with linger2 < 0: TCP_ABORT_ON_LINGER; the keepalive timer does the same for a dead FIN_WAIT2 (TCP_STATE)",
            observes: "reason TCP_ABORT_ON_LINGER, or TCP_STATE from the timer in a non-CLOSE state",
        },
        zh: Texts {
            explanation: "在 FIN_WAIT2 状态 close()，且 TCP_LINGER2 < 0，内核直接发送 RST",
            remedy: "把 TCP_LINGER2 设为 >= 0，除非确实希望 FIN_WAIT2 时异常终止",
            sees: "对端收到 ECONNRESET，而不是正常关闭",
            kernel: "FIN_WAIT2 状态下 __tcp_close() 且 linger2 < 0：TCP_ABORT_ON_LINGER；keepalive 定时器对已失效的 FIN_WAIT2 也会这样做（TCP_STATE）",
            observes: "内核原因 TCP_ABORT_ON_LINGER，或定时器在非 CLOSE 状态下给出的 TCP_STATE",
        },
    },
    CauseInfo {
        id: CauseId::KeepaliveTimeout,
        name: "keepalive_timeout",
        directions: &[Sent, Abort],
        kernel_reasons: &["TCP_KEEPALIVE_TIMEOUT"],
        without_reason: None,
        zh_title: "keepalive 超时",
        en: Texts {
            explanation: "keepalive probes went unanswered",
            remedy: "the peer or the path is gone; check NAT/LB idle timeouts and the peer's health",
            sees: "the application gets ETIMEDOUT on its next call",
            kernel: "tcp_keepalive_timer(): probes_out >= keepalive_probes -> tcp_send_active_reset(); reason TCP_KEEPALIVE_TIMEOUT",
            observes: "an active RST from the TIMER softirq on a socket with SO_KEEPALIVE and probes_out > 0",
        },
        zh: Texts {
            explanation: "keepalive 探测包连续无应答，内核判定连接已死并发送 RST",
            remedy: "对端或路径已失效；检查 NAT/负载均衡的空闲超时和对端健康状况",
            sees: "应用的下一次调用得到 ETIMEDOUT",
            kernel: "tcp_keepalive_timer()：probes_out >= keepalive_probes -> tcp_send_active_reset()；内核原因为 TCP_KEEPALIVE_TIMEOUT",
            observes: "由 TIMER 软中断主动发出的 RST，套接字设置了 SO_KEEPALIVE 且 probes_out > 0",
        },
    },
    CauseInfo {
        id: CauseId::TimeWait,
        name: "time_wait",
        directions: &[Sent],
        kernel_reasons: &["TCP_INVALID_ACK_SEQUENCE", "TCP_RFC7323_PAWS"],
        without_reason: None,
        zh_title: "TIME_WAIT 冲突",
        en: Texts {
            explanation: "a new connection hit a TIME_WAIT socket (or PAWS) on the same 4-tuple",
            remedy: "let the client pick ephemeral ports (no fixed source port), or enable timestamps",
            sees: "connect() usually succeeds ~10 ms later after a SYN retransmit; with tcp_rfc1337=1 it can time out",
            kernel: "the peer's TIME_WAIT answers the SYN with an ACK; our SYN_SENT socket replies RST: TCP_INVALID_ACK_SEQUENCE or TCP_RFC7323_PAWS",
            observes: "a passive RST in SYN_SENT triggered by a pure ACK or a SYN-ACK with a bad timestamp",
        },
        zh: Texts {
            explanation: "新连接使用的四元组在对端仍处于 TIME_WAIT（或 PAWS 校验失败），本端回复 RST",
            remedy: "让客户端使用随机临时端口（不要固定源端口），或开启 TCP 时间戳",
            sees: "SYN 重传后 connect() 通常约 10 毫秒后成功；若 tcp_rfc1337=1 则可能超时",
            kernel: "对端的 TIME_WAIT 套接字用 ACK 回应 SYN；本端 SYN_SENT 套接字回复 RST：TCP_INVALID_ACK_SEQUENCE 或 TCP_RFC7323_PAWS",
            observes: "SYN_SENT 状态下被动发出的 RST，触发报文是纯 ACK 或时间戳错误的 SYN-ACK",
        },
    },
    CauseInfo {
        id: CauseId::InvalidPacket,
        name: "invalid_packet",
        directions: &[Sent],
        kernel_reasons: &[
            "INVALID_SYN",
            "TCP_INVALID_ACK_SEQUENCE",
            "TCP_RFC7323_PAWS",
            "TCP_TOO_OLD_ACK",
            "TCP_ACK_UNSENT_DATA",
            "TCP_FLAGS",
            "TCP_OLD_ACK",
        ],
        without_reason: None,
        zh_title: "无效报文",
        en: Texts {
            explanation: "a segment the TCP state machine rejects (bad ACK, invalid SYN, PAWS)",
            remedy: "look for stale peers, NAT rewriting or broken TCP stacks on the path",
            sees: "usually nothing: the stray segment's sender gets the RST",
            kernel: "tcp_rcv_state_process(LISTEN) -> TCP_FLAGS; tcp_check_req() -> INVALID_SYN; other ACK checks -> TCP_*_ACK",
            observes: "the kernel reason, the state (LISTEN, SYN_RECV) and the trigger flags",
        },
        zh: Texts {
            explanation: "收到了 TCP 状态机拒绝的报文（对监听端口的错误 ACK、重复 SYN、PAWS 等）",
            remedy: "排查过期的对端、改写报文的 NAT 或有问题的 TCP 协议栈",
            sees: "通常应用无感知：收到 RST 的是发送异常报文的一方",
            kernel: "tcp_rcv_state_process(LISTEN) -> TCP_FLAGS；tcp_check_req() -> INVALID_SYN；其他 ACK 校验 -> TCP_*_ACK",
            observes: "内核原因、套接字状态（LISTEN、SYN_RECV）和触发报文的标志位",
        },
    },
    CauseInfo {
        id: CauseId::HalfOpen,
        name: "half_open",
        directions: &[Sent],
        kernel_reasons: &["NO_SOCKET"],
        without_reason: None,
        zh_title: "半打开连接",
        en: Texts {
            explanation: "a segment for a connection this host no longer has (half-open after crash, reboot or expiry)",
            remedy: "the peer holds a dead connection: enable keepalive on it and retry on ECONNRESET",
            sees: "the surviving peer gets ECONNRESET on its next send",
            kernel: "tcp_v4_rcv() finds no socket for a non-SYN segment: NO_SOCKET",
            observes: "a sent RST with no socket whose trigger is neither SYN nor SYN-ACK",
        },
        zh: Texts {
            explanation: "对端还保留着本机已经不存在的连接（本机崩溃、重启或连接已过期），其报文被回复 RST",
            remedy: "对端持有的是死连接：在对端开启 keepalive，并在 ECONNRESET 时重试",
            sees: "仍存活的一端在下一次发送时得到 ECONNRESET",
            kernel: "tcp_v4_rcv() 为非 SYN 报文找不到套接字：NO_SOCKET",
            observes: "本机发出的 RST 没有对应的套接字，触发报文既不是 SYN 也不是 SYN-ACK",
        },
    },
    CauseInfo {
        id: CauseId::BacklogOverflow,
        name: "backlog_overflow",
        directions: &[Sent],
        kernel_reasons: &["INVALID_SYN"],
        without_reason: Some("the listener's accept queue was full"),
        zh_title: "监听队列溢出",
        en: Texts {
            explanation: "the listen queue was full and tcp_abort_on_overflow=1 resets the handshake",
            remedy: "accept() faster, raise the listen backlog and net.core.somaxconn",
            sees: "the client's connect() succeeded, then its first read or write fails with ECONNRESET",
            kernel: "tcp_check_req(): syn_recv_sock() fails on a full queue -> listen_overflow -> RST; reason INVALID_SYN (misleading)",
            observes: "reason INVALID_SYN with a pure-ACK trigger on a LISTEN socket",
        },
        zh: Texts {
            explanation: "全连接队列已满且 tcp_abort_on_overflow=1，第三次握手的 ACK 被回复 RST（内核原因显示为 INVALID_SYN）",
            remedy: "加快 accept()，加大 listen() 的队列长度参数和 net.core.somaxconn",
            sees: "客户端的 connect() 已成功，随后第一次 read() 或 write() 失败，返回 ECONNRESET",
            kernel: "tcp_check_req()：队列已满时 syn_recv_sock() 失败 -> listen_overflow -> RST；内核原因为 INVALID_SYN（有误导性）",
            observes: "内核原因 INVALID_SYN，触发报文是发往 LISTEN 套接字的纯 ACK",
        },
    },
    CauseInfo {
        id: CauseId::MemoryPressure,
        name: "memory_pressure",
        directions: &[Sent],
        kernel_reasons: &["TCP_ABORT_ON_MEMORY"],
        without_reason: Some(
            "an orphan reset by the timer in FIN_WAIT1/CLOSING/LAST_ACK, or in CLOSE with nothing unread and no SO_LINGER 0",
        ),
        zh_title: "孤儿连接过多 / 内存压力",
        en: Texts {
            explanation: "too many orphaned sockets or tcp_mem pressure made the kernel abort the connection",
            remedy: "raise net.ipv4.tcp_max_orphans / tcp_mem, or close sockets less abruptly",
            sees: "peers see ECONNRESET; dmesg says \"too many orphaned sockets\"",
            kernel: "tcp_check_oom() in __tcp_close() or tcp_out_of_resources(): TCP_ABORT_ON_MEMORY",
            observes: "the kernel reason, or (without it) an orphan (SOCK_DEAD) reset in CLOSE with nothing unread",
        },
        zh: Texts {
            explanation: "孤儿套接字数量或 tcp_mem 超限，内核主动终止连接",
            remedy: "调大 net.ipv4.tcp_max_orphans / tcp_mem，或让应用更平缓地关闭连接",
            sees: "对端收到 ECONNRESET；dmesg 显示 “too many orphaned sockets”（孤儿套接字过多）",
            kernel: "__tcp_close() 或 tcp_out_of_resources() 中的 tcp_check_oom()：TCP_ABORT_ON_MEMORY",
            observes: "内核原因；或（没有内核原因时）孤儿套接字（SOCK_DEAD）在 CLOSE 状态复位，且没有未读数据",
        },
    },
    CauseInfo {
        id: CauseId::Disconnect,
        name: "disconnect",
        directions: &[Sent],
        kernel_reasons: &["TCP_DISCONNECT_WITH_DATA", "TCP_STATE"],
        without_reason: Some(
            "reset in task context on a socket close() did not orphan, without close()'s shutdown or with unsent data",
        ),
        zh_title: "connect(AF_UNSPEC) 断开",
        en: Texts {
            explanation: "the application called connect(AF_UNSPEC) (tcp_disconnect) on a live connection",
            remedy: "the reset is deliberate; check why the application disconnects with data in flight",
            sees: "the peer sees ECONNRESET",
            kernel: "__inet_stream_connect() -> tcp_disconnect(): TCP_STATE, or TCP_DISCONNECT_WITH_DATA with unsent data in CLOSING/LAST_ACK",
            observes: "an active RST in CLOSE from the owner's task without SO_LINGER 0 or unread data",
        },
        zh: Texts {
            explanation: "应用对一个活动连接调用 connect(AF_UNSPEC)（tcp_disconnect），内核发送 RST",
            remedy: "这是应用有意为之；检查它为何在数据未发完时断开",
            sees: "对端收到 ECONNRESET",
            kernel: "__inet_stream_connect() -> tcp_disconnect()：TCP_STATE；在 CLOSING/LAST_ACK 状态有未发送数据时为 TCP_DISCONNECT_WITH_DATA",
            observes: "属主进程自己主动发出的 RST，状态为 CLOSE，没有 SO_LINGER 0，也没有未读数据",
        },
    },
    CauseInfo {
        id: CauseId::SocketKilled,
        name: "socket_killed",
        directions: &[Sent],
        kernel_reasons: &["TCP_STATE"],
        without_reason: None,
        zh_title: "连接被外部强制关闭",
        en: Texts {
            explanation: "the connection was destroyed from outside (ss -K, tcp_abort, BPF sock_destroy)",
            remedy: "find the killer process (actor) and why it destroyed the socket",
            sees: "the owner gets ECONNABORTED; the peer sees ECONNRESET",
            kernel: "tcp_abort() resets in the original state (not CLOSE): TCP_STATE",
            observes: "an active RST with TCP_STATE in a state other than CLOSE, made by a task other than a timer",
        },
        zh: Texts {
            explanation: "连接被 ss -K、tcp_abort 或 BPF sock_destroy 从外部销毁",
            remedy: "找到执行销毁的进程（actor）及其原因",
            sees: "属主进程得到 ECONNABORTED；对端收到 ECONNRESET",
            kernel: "tcp_abort() 在原状态（而非 CLOSE）下复位：TCP_STATE",
            observes: "主动发出的 RST，内核原因 TCP_STATE，状态不是 CLOSE，由定时器以外的其他进程发出",
        },
    },
    CauseInfo {
        id: CauseId::ListenerClosed,
        name: "listener_closed",
        directions: &[Sent],
        kernel_reasons: &["TCP_STATE"],
        without_reason: Some("the listener on its port had just closed"),
        zh_title: "监听套接字关闭",
        en: Texts {
            explanation: "a listening socket was closed with connections still waiting in its accept queue",
            remedy: "drain the accept queue (or stop accepting gracefully) before closing the listener",
            sees: "clients whose handshake completed see ECONNRESET without ever being served",
            kernel: "inet_csk_listen_stop() -> inet_child_forget() -> tcp_disconnect(): TCP_STATE on an orphan child",
            observes: "TCP_STATE in CLOSE on an orphan child socket that no process owns",
        },
        zh: Texts {
            explanation: "监听套接字关闭时全连接队列中还有未被 accept() 取走的连接，这些连接被 RST",
            remedy: "停止监听前先把全连接队列处理完（优雅退出）",
            sees: "三次握手已完成的客户端还没被服务就收到 ECONNRESET",
            kernel: "inet_csk_listen_stop() -> inet_child_forget() -> tcp_disconnect()：孤儿子套接字上的 TCP_STATE",
            observes: "CLOSE 状态下的 TCP_STATE，落在没有任何进程持有的孤儿子套接字上",
        },
    },
    CauseInfo {
        id: CauseId::PeerRefused,
        name: "peer_refused",
        directions: &[Received],
        kernel_reasons: &[],
        without_reason: None,
        zh_title: "对端拒绝连接",
        en: Texts {
            explanation: "the peer refused the connection (RST in reply to our SYN)",
            remedy: "the remote port is closed or a firewall rejects it",
            sees: "connect() fails with ECONNREFUSED",
            kernel: "tcp_rcv_synsent_state_process() accepts the RST -> tcp_reset() in SYN_SENT",
            observes: "a received RST accepted in SYN_SENT",
        },
        zh: Texts {
            explanation: "本端的 SYN 得到 RST：对端端口未打开，或防火墙以 RST 拒绝",
            remedy: "对端端口未打开或被防火墙拒绝；在对端运行 rsttrace 可确认",
            sees: "connect() 失败，返回 ECONNREFUSED",
            kernel: "tcp_rcv_synsent_state_process() 接受了 RST -> 在 SYN_SENT 状态调用 tcp_reset()",
            observes: "在 SYN_SENT 状态被接受的 RST",
        },
    },
    CauseInfo {
        id: CauseId::PeerReset,
        name: "peer_reset",
        directions: &[Received],
        kernel_reasons: &[],
        without_reason: None,
        zh_title: "对端复位连接",
        en: Texts {
            explanation: "the peer reset an established connection",
            remedy: "look at the peer: its rsttrace/logs say why it reset",
            sees: "ECONNRESET (\"Connection reset by peer\"), or EPIPE if the RST hit CLOSE_WAIT",
            kernel: "tcp_validate_incoming() accepts an in-window RST -> tcp_reset()",
            observes: "a received RST, with the state it hit and the unacked/unread bytes",
        },
        zh: Texts {
            explanation: "对端复位了一个已建立的连接",
            remedy: "查看对端：在对端运行 rsttrace 或查看其日志可知原因",
            sees: "ECONNRESET（“Connection reset by peer”，连接被对端重置）；若 RST 落在 CLOSE_WAIT 状态则为 EPIPE",
            kernel: "tcp_validate_incoming() 接受窗口内的 RST -> tcp_reset()",
            observes: "收到的 RST，以及它落在的状态和未确认、未读出的字节数",
        },
    },
    CauseInfo {
        id: CauseId::MiddleboxSuspect,
        name: "middlebox_suspect",
        directions: &[Received],
        kernel_reasons: &[],
        without_reason: None,
        zh_title: "中间设备伪造的 RST",
        en: Texts {
            explanation: "a received RST that a NAT, load balancer or firewall on the path likely forged",
            remedy: "compare the idle gap with NAT/LB idle timeouts; enable keepalive below them",
            sees: "ECONNRESET on a connection that was idle, often on the first write after the gap",
            kernel: "tcp_validate_incoming() accepts an in-window RST that the peer host never sent",
            observes: "a received RST after an idle gap of minutes on an established connection, or whose TTL/window disagree with the flow",
        },
        zh: Texts {
            explanation: "收到的 RST 很可能由路径上的 NAT、负载均衡或防火墙发出（空闲超时后会话表项已被清除）",
            remedy: "把空闲时间与 NAT/负载均衡的空闲超时比较；开启比其更短的 keepalive",
            sees: "空闲过的连接上出现 ECONNRESET，往往是空闲之后的第一次写",
            kernel: "tcp_validate_incoming() 接受了一个窗口内的 RST，但对端主机从未发出它",
            observes: "已建立连接空闲数分钟后收到的 RST，或其 TTL、窗口与该连接的其他报文不一致",
        },
    },
    CauseInfo {
        id: CauseId::FirewallReject,
        name: "firewall_reject",
        directions: &[Sent, Received],
        kernel_reasons: &[],
        without_reason: None,
        zh_title: "防火墙以 RST 拒绝",
        en: Texts {
            explanation: "a firewall rule on this host answered the segment with its own RST (reject with tcp reset)",
            remedy: "look at the nftables/iptables rules of the namespace named (nft list ruleset); the application never saw the segment",
            sees: "connect() fails with ECONNREFUSED, or a live connection with ECONNRESET, though the server application never saw the segment",
            kernel: "an nftables `reject with tcp reset` or iptables `REJECT --reject-with tcp-reset` rule -> nf_send_reset()/nf_send_reset6() builds the RST and sends it with ip_local_out()/ip6_local_out(); no TCP socket is involved",
            observes: "a kprobe on nf_send_reset/nf_send_reset6 (certain: `netfilter_hook`, `device`); without kprobes and with --firewall, an RST leaving a device with no socket and no TCP send event (likely); a received RST paired with either",
        },
        zh: Texts {
            explanation: "本机的防火墙规则以自己构造的 RST 回应了该报文（“reject with tcp reset”）",
            remedy: "查看所指网络命名空间的 nftables/iptables 规则（“nft list ruleset”）；应用程序从未收到该报文",
            sees: "connect() 失败并返回 ECONNREFUSED，或已建立的连接收到 ECONNRESET，而服务端应用程序从未收到该报文",
            kernel: "“nftables”的“reject with tcp reset”或“iptables”的“REJECT --reject-with tcp-reset”规则 -> nf_send_reset()/nf_send_reset6() 构造 RST，经 ip_local_out()/ip6_local_out() 发出；不涉及任何 TCP 套接字",
            observes: "nf_send_reset/nf_send_reset6 上的内核探针（确定：netfilter_hook、“device”）；内核不支持内核探针且开启“--firewall”时，离开网卡、没有套接字也没有 TCP 发送事件的 RST（很可能）；以及与其配对的收到的 RST",
        },
    },
    CauseInfo {
        id: CauseId::RetransmitTimeout,
        name: "retransmit_timeout",
        directions: &[Abort],
        kernel_reasons: &[],
        without_reason: None,
        zh_title: "重传超时",
        en: Texts {
            explanation: "no RST: the peer stopped acknowledging and the kernel gave up retransmitting",
            remedy: "check the path and the peer (packet loss, a dead host, a firewall dropping); tune TCP_USER_TIMEOUT / tcp_retries2 / tcp_syn_retries",
            sees: "ETIMEDOUT (\"Connection timed out\") on the next call, after minutes of silence",
            kernel: "tcp_write_timeout() -> tcp_write_err(): sk_err = ETIMEDOUT, sk_error_report(), tcp_done(); no segment is sent",
            observes: "an inet_sk_error_report with ETIMEDOUT that no RST preceded (direction abort)",
        },
        zh: Texts {
            explanation: "没有 RST：对端不再确认，内核重传次数用尽后放弃连接（包括 SYN 重传超时）",
            remedy: "排查路径丢包、对端宕机或防火墙丢包；按需调整 TCP_USER_TIMEOUT、tcp_retries2、tcp_syn_retries",
            sees: "沉默几分钟后，下一次调用得到 ETIMEDOUT（“Connection timed out”，连接超时）",
            kernel: "tcp_write_timeout() -> tcp_write_err()：sk_err = ETIMEDOUT，sk_error_report()，tcp_done()；不发送任何报文",
            observes: "之前没有 RST 的 inet_sk_error_report，errno 为 ETIMEDOUT（方向为 abort）",
        },
    },
    CauseInfo {
        id: CauseId::Unreachable,
        name: "unreachable",
        directions: &[Abort],
        kernel_reasons: &[],
        without_reason: None,
        zh_title: "网络不可达",
        en: Texts {
            explanation: "no RST: an ICMP error (host or network unreachable, rejected) ended the connection",
            remedy: "check routes and firewalls between the hosts; the ICMP error names the hop",
            sees: "EHOSTUNREACH / ENETUNREACH (\"No route to host\"), or ECONNREFUSED from an ICMP reject",
            kernel: "tcp_v4_err()/tcp_v6_err() on a hard ICMP error in SYN_SENT (or with IP_RECVERR): sk_err, sk_error_report(), tcp_done()",
            observes: "an inet_sk_error_report with an unreachable errno that no RST preceded (direction abort)",
        },
        zh: Texts {
            explanation: "没有 RST：ICMP 差错（主机/网络不可达、被拒绝）终止了连接",
            remedy: "检查两端之间的路由和防火墙；ICMP 差错指明了是哪一跳",
            sees: "EHOSTUNREACH / ENETUNREACH（“No route to host”，没有到主机的路由），或 ICMP 拒绝带来的 ECONNREFUSED",
            kernel: "SYN_SENT 状态（或设置了 IP_RECVERR）收到严重 ICMP 差错时，tcp_v4_err()/tcp_v6_err()：sk_err，sk_error_report()，tcp_done()",
            observes: "之前没有 RST 的 inet_sk_error_report，errno 表示不可达（方向为 abort）",
        },
    },
    CauseInfo {
        id: CauseId::Unknown,
        name: "unknown",
        directions: &[Sent, Received, Abort],
        kernel_reasons: &[],
        without_reason: None,
        zh_title: "未知原因",
        en: Texts {
            explanation: "the kernel facts do not match a known cause",
            remedy: "report the event's evidence; it may be a new cause",
            sees: "an aborted connection",
            kernel: "any reset path not listed above",
            observes: "nothing matched; every raw fact is in the event",
        },
        zh: Texts {
            explanation: "内核事实与已知原因都不匹配",
            remedy: "请附上事件的 evidence 报告：这可能是新的原因",
            sees: "连接被异常终止",
            kernel: "上面没有列出的任何复位路径",
            observes: "没有匹配的规则；所有原始事实都在事件里",
        },
    },
];

// The table and the enum agree: row i is variant i, and `Unknown`, the
// last variant, is the last row.
const _: () = {
    let mut i = 0;
    while i < CAUSES.len() {
        assert!(CAUSES[i].id as usize == i, "CAUSES is not in CauseId order");
        i += 1;
    }
    assert!(CAUSES.len() == CauseId::Unknown as usize + 1);
};

impl CauseId {
    /// This cause's row of [`CAUSES`].
    pub(crate) fn info(self) -> &'static CauseInfo {
        &CAUSES[self as usize]
    }

    /// Every cause, in table order.
    pub const ALL: &'static [CauseId] = &{
        let mut all = [CauseId::Unknown; CAUSES.len()];
        let mut i = 0;
        while i < all.len() {
            all[i] = CAUSES[i].id;
            i += 1;
        }
        all
    };

    /// The stable id.
    pub fn id(self) -> &'static str {
        self.info().name
    }

    pub fn from_id(id: &str) -> Option<CauseId> {
        CAUSES.iter().find(|c| c.name == id).map(|c| c.id)
    }

    /// One line: what happened, in English.
    pub fn explanation(self) -> &'static str {
        self.info().en.explanation
    }

    /// One line: what to change, in English.
    pub fn remedy(self) -> &'static str {
        self.info().en.remedy
    }
}

/// How sure the classifier is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confidence {
    /// The kernel's own reason and the socket/packet facts agree.
    Certain,
    /// Inferred from facts; the kernel did not say (or said something misleading).
    Likely,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Certain => "certain",
            Confidence::Likely => "likely",
        }
    }
}

/// The classifier's verdict for one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    pub id: CauseId,
    pub confidence: Confidence,
    /// The facts that led to the verdict, by name.
    pub evidence: super::evidence::Evidence,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant has its own row (the const check above covers the
    /// order), with a unique id and a text in both languages.
    #[test]
    fn the_table_and_the_enum_agree() {
        assert_eq!(CauseId::ALL.len(), CAUSES.len());
        for (i, c) in CAUSES.iter().enumerate() {
            assert_eq!(c.id as usize, i);
            assert_eq!(CauseId::ALL[i], c.id);
            // Ids are unique: each finds its own row.
            assert_eq!(CauseId::from_id(c.name), Some(c.id));
            assert!(!c.directions.is_empty(), "{}", c.name);
            assert!(!c.zh_title.is_empty(), "{}", c.name);
        }
        assert_eq!(CauseId::from_id("made_up"), None);
        assert_eq!(CAUSES.last().map(|c| c.id), Some(CauseId::Unknown));
    }

    #[test]
    fn only_causes_without_their_own_reason_have_an_inference_note() {
        for c in CAUSES.iter().filter(|c| c.without_reason.is_some()) {
            assert!(!c.kernel_reasons.is_empty(), "{}", c.name);
        }
    }
}
