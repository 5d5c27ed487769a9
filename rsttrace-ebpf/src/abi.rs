//! Event and configuration layouts shared by the kernel programs and userspace.
//!
//! Rules (they keep the layouts identical on both sides and free of padding):
//! `#[repr(C)]`, fixed-width integers and byte arrays only, explicit `_pad`
//! fields, no `bool`/`Option`/Rust enums (enumerations are plain integer
//! constants in the modules below), and a `const` size assertion per struct.

/// Bumped whenever a layout below changes; userspace refuses other versions.
pub const ABI_VERSION: u16 = 7;

/// Names of the maps and globals in the object file, used by the loader.
pub const EVENTS_MAP: &str = "EVENTS";
/// The per-CPU `counter::*` array.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// `Offsets`: the kernel struct layout.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// `Filter`: the in-kernel filters.
pub const FILTER_GLOBAL: &str = "FILTER";
/// `Tuning`: wake-up, stacks and context settings.
pub const TUNING_GLOBAL: &str = "TUNING";
/// Socket address → `Owner`.
pub const OWNERS_MAP: &str = "OWNERS";
/// `ListenerKey` → `Owner`: who listens on a port.
pub const LISTENERS_MAP: &str = "LISTENERS";
/// Listening ports remembered with their owner (`LISTENERS`).
pub const MAX_LISTENERS: u32 = 4096;
/// `OwnerTracepoints`: the owner tracepoint's record layout.
pub const OWNER_TP_GLOBAL: &str = "OWNER_TP";
/// Sockets whose owner is remembered at once (LRU beyond that; evictions
/// are counted, see `counter::OWNERS_ADDED`).
pub const MAX_OWNERS: u32 = 65_536;
/// `KfreeSkb`: the `skb:kfree_skb` layout and NO_SOCKET value.
pub const KFREE_SKB_GLOBAL: &str = "KFREE_SKB";
/// `HistorySet`s: the last close of a 4-tuple or port, by `HistoryKey`.
pub const HISTORY_MAP: &str = "HISTORY";
/// 4-tuples and listening ports whose last close is remembered: 16384
/// slots of 88 bytes ≈ 1.4 MiB of kernel memory, `HISTORY_WAYS` to a set.
pub const MAX_HISTORY: u32 = 16_384;
/// Slots per set of the `HISTORY` table: a key lives in the set its hash
/// names and, when the set is full, takes the place of its oldest close.
pub const HISTORY_WAYS: usize = 4;
/// `--stack`: the stack-trace map.
pub const STACKS_MAP: &str = "STACKS";
/// Distinct stacks kept by `--stack` (the map fills up; misses are counted).
pub const MAX_STACKS: u32 = 16_384;
/// Frames per stack (the kernel's `sysctl_perf_event_max_stack` default).
pub const MAX_STACK_DEPTH: usize = 127;
/// Words copied from the user stack pointer with the user stack: enough for
/// userspace to unwind the frameless libc syscall wrappers (close() and
/// friends) that the kernel's frame-pointer walk skips over.
pub const USER_STACK_TOP_WORDS: usize = 8;

/// Program names (the function names in `src/main.rs`).
pub mod program {
    /// `tp_btf/tcp_send_reset` with the reset reason (6.10+).
    pub const BTF_SEND_RESET: &str = "btf_tcp_send_reset";
    /// `tp_btf/tcp_send_reset` before 6.10 (sk, skb).
    pub const BTF_SEND_RESET_NO_REASON: &str = "btf_tcp_send_reset_no_reason";
    /// `tp_btf/tcp_receive_reset`.
    pub const BTF_RECEIVE_RESET: &str = "btf_tcp_receive_reset";
    /// The classic `tcp:tcp_send_reset` tracepoint.
    pub const TP_SEND_RESET: &str = "tp_tcp_send_reset";
    /// The classic `tcp:tcp_receive_reset` tracepoint.
    pub const TP_RECEIVE_RESET: &str = "tp_tcp_receive_reset";
    /// `sock:inet_sock_set_state` (owners, without the kernel's BTF).
    pub const OWNER_SET_STATE: &str = "owner_set_state";
    /// `tp_btf/inet_sock_set_state` (owners).
    pub const BTF_OWNER_SET_STATE: &str = "btf_owner_set_state";
    /// `tp_btf/inet_sk_error_report`: connections aborted without an RST.
    pub const BTF_ERROR_REPORT: &str = "btf_inet_sk_error_report";
    /// kprobe on `sock_def_error_report`: the same, before 5.14.
    pub const KPROBE_ERROR_REPORT: &str = "kp_error_report";
    /// `tp_btf/net_dev_queue` and `tp_btf/netif_receive_skb`: the RST
    /// segments themselves, for pcapng exports.
    pub const PACKET_TX: &str = "pkt_net_dev_queue";
    /// `tp_btf/netif_receive_skb` (received segments).
    pub const PACKET_RX: &str = "pkt_netif_receive_skb";
    /// kprobes, attached by symbol name at run time.
    pub const KPROBE_SEND_RESET: &str = "kp_send_reset";
    /// kprobe on tcp_send_active_reset.
    pub const KPROBE_SEND_ACTIVE_RESET: &str = "kp_send_active_reset";
    /// kprobe on tcp_reset.
    pub const KPROBE_TCP_RESET: &str = "kp_tcp_reset";
    /// fentry, one program per kernel function.
    pub const FENTRY_V4_SEND_RESET: &str = "fe_tcp_v4_send_reset";
    /// fentry on tcp_v6_send_reset.
    pub const FENTRY_V6_SEND_RESET: &str = "fe_tcp_v6_send_reset";
    /// fentry on tcp_send_active_reset.
    pub const FENTRY_SEND_ACTIVE_RESET: &str = "fe_tcp_send_active_reset";
    /// fentry on tcp_reset.
    pub const FENTRY_TCP_RESET: &str = "fe_tcp_reset";
    /// `skb:kfree_skb` with reason NO_SOCKET: RSTs a tracepoint-only kernel
    /// without a socketless `tcp_send_reset` would miss.
    pub const TP_KFREE_SKB: &str = "tp_kfree_skb";
    /// kprobe on `nf_send_reset` / `nf_send_reset6`: netfilter's own RSTs.
    pub const KPROBE_NF_SEND_RESET: &str = "kp_nf_send_reset";
    /// `tp_btf/net_dev_queue`: RSTs leaving a device without a socket
    /// (`--firewall`, where netfilter's functions cannot be hooked).
    pub const BTF_SOCKETLESS_RST: &str = "btf_socketless_rst";
}

/// `EventHeader::kind`.
pub mod kind {
    /// `RstEvent`: an RST sent or received, or an abort.
    pub const RST: u8 = 1;
    /// `PacketRecord`: the bytes of an RST segment seen on a device.
    pub const PACKET: u8 = 2;
}

/// `PacketRecord::direction`.
pub mod packet_dir {
    /// Queued for transmission (`net_dev_queue`).
    pub const TX: u8 = 1;
    /// Received (`netif_receive_skb`).
    pub const RX: u8 = 2;
}

/// Bytes of each captured RST kept (IP and TCP headers with options).
pub const PACKET_BYTES: usize = 96;

/// `RstEvent::direction`.
pub mod direction {
    /// This host sent the RST.
    pub const SENT: u8 = 1;
    /// This host received (and accepted) the RST.
    pub const RECEIVED: u8 = 2;
    /// No RST: the kernel gave up on the connection (retransmission or
    /// SYN timeout, ICMP unreachable) and reported the error to the socket.
    pub const ABORT: u8 = 3;
}

/// `RstEvent::hook`: which kernel hook produced the event.
pub mod hook {
    /// `tp_btf/tcp_send_reset`.
    pub const BTF_SEND_RESET: u8 = 1;
    /// `tp_btf/tcp_receive_reset`.
    pub const BTF_RECEIVE_RESET: u8 = 2;
    /// `tcp:tcp_send_reset`.
    pub const TP_SEND_RESET: u8 = 3;
    /// `tcp:tcp_receive_reset`.
    pub const TP_RECEIVE_RESET: u8 = 4;
    /// kprobe on tcp_v{4,6}_send_reset / tcp_send_active_reset.
    pub const KPROBE_SEND_RESET: u8 = 5;
    /// kprobe on tcp_reset (with the received RST's skb).
    pub const KPROBE_RECEIVE_RESET: u8 = 6;
    /// fentry on tcp_v{4,6}_send_reset / tcp_send_active_reset.
    pub const FENTRY_SEND_RESET: u8 = 7;
    /// fentry on tcp_reset.
    pub const FENTRY_RECEIVE_RESET: u8 = 8;
    /// `skb:kfree_skb` (reason NO_SOCKET) of a TCP segment that got an RST.
    pub const TP_KFREE_SKB_NO_SOCKET: u8 = 9;
    /// `inet_sk_error_report` (direction ABORT).
    pub const BTF_ERROR_REPORT: u8 = 10;
    /// kprobe on `sock_def_error_report` (direction ABORT), before the
    /// `inet_sk_error_report` tracepoint (5.14).
    pub const KPROBE_ERROR_REPORT: u8 = 11;
    /// kprobe on `nf_send_reset` / `nf_send_reset6`: an RST netfilter
    /// made (`reject with tcp reset`); the skb is the rejected segment.
    pub const KPROBE_NF_SEND_RESET: u8 = 12;
    /// `tp_btf/net_dev_queue`: an RST this host made without a socket,
    /// leaving a device; the skb is the RST itself.
    pub const BTF_SOCKETLESS_RST: u8 = 13;
}

/// `RstEvent::hist_kind`: what the 4-tuple (or the listening port) went
/// through before a socketless or TIME_WAIT RST.
pub mod history {
    /// No history known.
    pub const NONE: u8 = 0;
    /// The application closed a SYN_SENT socket (connect timeout, given up).
    pub const CONNECT_ABANDONED: u8 = 1;
    /// The listening socket on this port was closed.
    pub const LISTENER_CLOSED: u8 = 2;
    /// The connection was closed; `hist_err` is its error (0: orderly).
    pub const CLOSED: u8 = 3;
}

/// Bits of `Tuning::stacks`.
pub mod stacks {
    /// The kernel stack.
    pub const KERNEL: u32 = 1 << 0;
    /// The user stack, for events made in the owner's own task context.
    pub const USER: u32 = 1 << 1;
}

/// `RstEvent::context`: what the CPU was doing when the RST was made.
pub mod context {
    /// Not determined.
    pub const UNKNOWN: u8 = 0;
    /// Process context: `actor` ran the code (a syscall such as close()).
    pub const TASK: u8 = 1;
    /// Softirq: `actor` is whatever task the interrupt landed on; see `softirq_vec`.
    pub const SOFTIRQ: u8 = 2;

    /// How the kernel programs tell them apart (`Tuning::context`).
    pub mod source {
        /// Whether a task owns the socket's lock, and the call path.
        pub const SOCKET_LOCK: u32 = 0;
        /// This CPU's preempt count (`Tuning::preempt`).
        pub const PREEMPT_COUNT: u32 = 1;
    }
}

/// `Tuning::current_task`: how the programs read the task that ran the
/// hook (its ids, name, user and cgroup).
pub mod current_task {
    /// One helper call each (`bpf_get_current_pid_tgid`, `_comm`, ...).
    pub const HELPERS: u32 = 0;
    /// Loads from the task's typed pointer (`bpf_get_current_task_btf`,
    /// Linux 5.11+; the `task_*` offsets), in the programs whose hook
    /// arguments are typed too (tp_btf, fentry).
    pub const TYPED: u32 = 1;
}

/// `Tuning::echo_clock`: the clock that ages the echo slot (`LAST_RST`),
/// read by every RST and by the error report that may echo it.
pub mod echo_clock {
    /// `bpf_ktime_get_ns`: the RST's own timestamp, read anyway; the error
    /// report reads it again.
    pub const KTIME: u32 = 0;
    /// `bpf_jiffies64` (tracing programs, Linux 5.9+), which the verifier
    /// inlines into a load: the nanosecond clock is a helper call that
    /// reads the clock source, tens of ns in a VM.
    pub const JIFFIES: u32 = 1;
}

/// Bits of `RstEvent::flags`.
pub mod flag {
    /// A socket (full, request or timewait) was involved; `sk` is non-zero.
    pub const HAS_SOCK: u32 = 1 << 0;
    /// A packet was involved (the trigger of a passive RST); the `pkt_*` fields are valid.
    pub const HAS_PACKET: u32 = 1 << 1;
    /// `reason` holds a kernel `enum sk_rst_reason` value.
    pub const HAS_REASON: u32 = 1 << 2;
    /// The socket is a full socket (not timewait/request), so the `tcp_sock` fields are valid.
    pub const FULL_SOCK: u32 = 1 << 3;
    /// `SOCK_DEAD`: the application already closed the socket (orphan).
    pub const SOCK_DEAD: u32 = 1 << 4;
    /// `SOCK_LINGER`: SO_LINGER is enabled; see `lingertime`.
    pub const SOCK_LINGER: u32 = 1 << 5;
    /// `SOCK_KEEPOPEN`: SO_KEEPALIVE is enabled.
    pub const SOCK_KEEPOPEN: u32 = 1 << 6;
    /// The current task has `PF_EXITING` set; `exit_signal` says why.
    pub const TASK_EXITING: u32 = 1 << 7;
    /// `SOCK_DONE`: the peer's FIN was received (it counts in `unread`).
    pub const PEER_FIN: u32 = 1 << 8;
    /// The socket's owner was proven earlier (`owner_*` fields are valid).
    pub const OWNER_KNOWN: u32 = 1 << 9;
    /// A listening socket whose accept queue is full (`sk_ack_backlog >
    /// sk_max_ack_backlog`): the handshake's last ACK overflowed it.
    pub const ACCEPT_QUEUE_FULL: u32 = 1 << 10;
    /// With `OWNER_KNOWN`: the owner is the listener's on the socket's
    /// local port (an accepted or queued connection nobody closed yet), not
    /// the socket's own.
    pub const OWNER_FROM_LISTENER: u32 = 1 << 11;
    /// With `OWNER_FROM_LISTENER`: several processes listen on the port
    /// (SO_REUSEPORT); the owner is the last one seen.
    pub const LISTENER_GROUP: u32 = 1 << 12;
    /// `--stack`: no stacks were taken for this event; its CPU had used
    /// its stack budget (`Tuning::stacks_per_window`).
    pub const STACK_SKIPPED: u32 = 1 << 13;
}

/// Indices into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Events that could not be reserved in the ring buffer (lost).
    pub const LOST: u32 = 0;
    /// Events dropped by the in-kernel filters.
    pub const FILTERED: u32 = 1;
    /// Events whose kernel memory reads failed (sent anyway, marked incomplete).
    pub const READ_ERRORS: u32 = 2;
    /// Events submitted to the ring buffer.
    pub const SUBMITTED: u32 = 3;
    /// `--stack`: stacks not captured (stack map full, or walk failed).
    pub const STACK_ERRORS: u32 = 4;
    /// pcapng: RST segments that could not be queued (their events get
    /// synthesised headers instead).
    pub const PACKETS_LOST: u32 = 5;
    /// A field of a tracepoint's record could not be read: that run of the
    /// hook saw nothing (an owner or a close not recorded, an RST missed).
    pub const CONTEXT_ERRORS: u32 = 6;
    /// Error reports not turned into abort events because they echo the
    /// RST just reported on the same socket (expected, not a loss).
    pub const ABORTS_MERGED: u32 = 7;
    /// Keys added to `OWNERS` (never removed: they leave by LRU
    /// eviction): userspace derives the evictions as added − live.
    pub const OWNERS_ADDED: u32 = 8;
    /// Closes pushed out of `HISTORY` by a newer close of another key
    /// in their set.
    pub const HISTORY_EVICTED: u32 = 9;
    /// `--stack`: events sent without stacks because their CPU had used
    /// its stack budget (`flag::STACK_SKIPPED`).
    pub const STACKS_SKIPPED: u32 = 10;
    /// Number of counters (the array's size).
    pub const COUNT: u32 = 11;
}

/// Sentinel for "this field does not exist on the running kernel".
pub const ABSENT: u32 = u32::MAX;

/// First bytes of every record in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// `ABI_VERSION` of the program that wrote the record.
    pub version: u16,
    /// Size in bytes of the whole record.
    pub size: u16,
    /// One of `kind::*`.
    pub kind: u8,
    /// Zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 8);

/// One RST, sent or received, with the socket and packet facts read at that moment.
///
/// Addresses are in network byte order as 16 bytes (IPv4 in the first 4);
/// ports are in host byte order. "Local" and "remote" are from this host's view.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RstEvent {
    /// `kind::RST`.
    pub header: EventHeader,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Kernel address of the socket (0 when none), an identity for joins.
    pub sk: u64,
    /// Kernel address of the trigger skb (0 for active resets).
    pub skb: u64,
    /// Socket cookie (0 when unknown).
    pub cookie: u64,

    /// `flag::*` bits.
    pub flags: u32,
    /// Raw `enum sk_rst_reason` value, valid with `flag::HAS_REASON`.
    pub reason: u32,

    /// This host's address.
    pub local_addr: [u8; 16],
    /// The peer's address.
    pub remote_addr: [u8; 16],
    /// This host's port.
    pub local_port: u16,
    /// The peer's port.
    pub remote_port: u16,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// `direction::*`.
    pub direction: u8,
    /// `hook::*`.
    pub hook: u8,

    /// TCP state (`skc_state`) at the hook; 0 when there is no socket.
    pub state: u8,
    /// For a timewait socket, the state it came from (`tw_substate`).
    pub tw_substate: u8,
    /// `context::*` and, in softirq, the vector (NET_RX=3, TIMER=1).
    pub context: u8,
    /// The softirq vector (`linux::softirq`) with `context::SOFTIRQ`.
    pub softirq_vec: u8,
    /// `sk_shutdown` bits (RCV_SHUTDOWN=1, SEND_SHUTDOWN=2).
    pub shutdown: u8,
    /// Keepalive / zero-window probes sent without answer (`icsk_probes_out`).
    pub probes_out: u8,
    /// Signal number that made the current task exit (with `flag::TASK_EXITING`).
    pub exit_signal: u8,
    /// TCP flags of the packet (`linux::tcp_flag`).
    pub pkt_flags: u8,

    /// The packet: for a sent passive RST the segment that provoked it.
    pub pkt_seq: u32,
    /// The packet's acknowledgment number.
    pub pkt_ack: u32,
    /// TCP payload bytes of the packet.
    pub pkt_len: u32,
    /// The packet's TCP window.
    pub pkt_window: u16,
    /// The packet's IP TTL (hop limit).
    pub pkt_ttl: u8,
    /// For a socket in CLOSE, the state it left just before, when the
    /// transition ran in the same call as the RST (0: not seen).
    pub closed_from: u8,

    /// Bytes received but not read by the application (`rcv_nxt - copied_seq`).
    pub unread: u32,
    /// Bytes written but not yet sent (`write_seq - snd_nxt`).
    pub unsent: u32,
    /// Bytes sent but not acknowledged (`snd_nxt - snd_una`).
    pub unacked: u32,
    /// `sk_lingertime` in jiffies (clamped to u32).
    pub lingertime: u32,
    /// Pending socket error (`sk_err`, positive errno).
    pub sk_err: u32,

    /// The task that ran the code (`current`); in softirq it is unrelated to the socket.
    pub actor_pid: u32,
    /// The actor's thread-group id.
    pub actor_tgid: u32,
    /// The actor's task name.
    pub actor_comm: [u8; 16],

    /// The process that owns the socket (with `flag::OWNER_KNOWN`): seen in
    /// its own task context on connect(), listen(), close()/shutdown() or recv().
    pub owner_uid: u32,
    /// The owner's thread-group id.
    pub owner_tgid: u32,
    /// The owner's thread id.
    pub owner_pid: u32,
    /// The owner's cgroup v2 id.
    pub owner_cgroup: u64,
    /// The owner's task name.
    pub owner_comm: [u8; 16],

    /// Inode of the network namespace (of the socket, else of the device
    /// the trigger arrived on); 0 when unknown.
    pub netns: u32,
    /// Ids in the `STACKS` map with `--stack`; negative when not captured.
    pub kernel_stack_id: i32,
    /// User stack id in `STACKS` (negative when not captured).
    pub user_stack_id: i32,
    /// Jiffies since the last ACK from the peer (`tcp_sock.rcv_tstamp`),
    /// for full sockets: how long the peer (or the path) was silent.
    pub rcv_idle_jiffies: u32,
    /// With a user stack: the words at the user stack pointer on syscall
    /// entry (zero when unreadable), where a frameless wrapper keeps its
    /// caller's return address.
    pub user_stack_top: [u64; USER_STACK_TOP_WORDS],

    /// History of the 4-tuple (or, for a SYN to a closed port, of the
    /// listening port) when the RST has no full socket, or for a reset of
    /// an unowned child while its listener closes: `history::*`.
    /// `hist_ts_ns` is when it happened (CLOCK_MONOTONIC; 0: none).
    pub hist_ts_ns: u64,
    /// The process that owned (or closed) the socket then.
    pub hist_tgid: u32,
    /// Its thread id.
    pub hist_pid: u32,
    /// Its task name.
    pub hist_comm: [u8; 16],
    /// `history::*`.
    pub hist_kind: u8,
    /// The TCP state the socket left.
    pub hist_state: u8,
    /// Its socket error (errno), when it was aborted.
    pub hist_err: u8,
    /// Zero.
    pub _pad2: u8,
    /// IPv4 identification of the packet: forged segments often carry IDs
    /// out of the peer's sequence. Meaningless for IPv6 (no such field).
    pub pkt_ip_id: u16,
    /// Zero.
    pub _pad3: [u8; 2],
    /// The socket's own cgroup v2 id (of the task that created it; an
    /// accepted socket inherits its listener's), for a full socket without
    /// an owner; 0 otherwise or when unknown.
    pub sk_cgroup: u64,
    /// The device of the skb (`hook::BTF_SOCKETLESS_RST`: the one the RST
    /// leaves by; otherwise the one the trigger or received RST came in
    /// on); 0 when unknown.
    pub ifindex: u32,
    /// The socket's `rcv_nxt` (full sockets): where a received RST's
    /// sequence number must fall.
    pub rcv_nxt: u32,
    /// The socket's `rcv_wnd`: the window it advertised.
    pub rcv_wnd: u32,
    /// `hook::KPROBE_NF_SEND_RESET`: the netfilter hook (`enum
    /// nf_inet_hooks`) plus one; 0 when unknown.
    pub nf_hook: u8,
    /// Zero.
    pub _pad4: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<RstEvent>() == 272 + 8 * USER_STACK_TOP_WORDS);

/// An RST segment as it left or reached a device (`kind::PACKET`), for
/// pcapng exports: the real bytes, from the IP header on.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketRecord {
    /// `kind::PACKET`.
    pub header: EventHeader,
    /// `bpf_ktime_get_ns()`.
    pub ts_ns: u64,
    /// Network namespace inode of the device (0 when unknown).
    pub netns: u32,
    /// Interface index of the device.
    pub ifindex: u32,
    /// IP packet length on the wire.
    pub len: u32,
    /// Bytes of `data` that are the packet's (at most `PACKET_BYTES`).
    pub caplen: u16,
    /// `packet_dir::*`.
    pub direction: u8,
    /// Zero.
    pub _pad: u8,
    /// The packet from the IP header on; `caplen` bytes are valid.
    pub data: [u8; PACKET_BYTES],
}
const _: () = assert!(core::mem::size_of::<PacketRecord>() == 128);

/// A socket's owner, as remembered in the `OWNERS` map (key: socket address).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Thread-group id (what users call a pid).
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// In `LISTENERS`: how many processes were seen listening on the port
    /// (more than one: an SO_REUSEPORT group). Zero in `OWNERS`.
    pub listeners: u32,
    /// cgroup v2 id of the owner.
    pub cgroup: u64,
    /// Task name (`comm`).
    pub comm: [u8; 16],
    /// The socket's remote end when the owner was seen (`peer_key`). The
    /// entry outlives its socket; a later socket at the same address is
    /// another connection, and its different remote end tells them apart.
    pub peer: u64,
}
const _: () = assert!(core::mem::size_of::<Owner>() == 48);

/// Key of the `LISTENERS` map: a listening port in a network namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    /// Network namespace inode.
    pub netns: u32,
    /// The listening port (host byte order).
    pub port: u16,
    /// Zero.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<ListenerKey>() == 8);

/// A remote port and address folded into the `Owner::peer` identity.
pub const fn peer_key(remote_port: u16, remote_addr: &[u8; 16]) -> u64 {
    let mut fold = 0u32;
    let mut i = 0;
    while i < 16 {
        fold = fold.rotate_left(8) ^ remote_addr[i] as u32;
        i += 1;
    }
    ((remote_port as u64) << 32) | fold as u64
}

/// Key of the `HISTORY` map: a connection's 4-tuple, or a listening port
/// (addresses, remote port and family zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HistoryKey {
    /// Network namespace inode (0 when unknown).
    pub netns: u32,
    /// Local address (network byte order; IPv4 in the first 4 bytes).
    pub local_addr: [u8; 16],
    /// Remote address, as `local_addr`.
    pub remote_addr: [u8; 16],
    /// Local port (host byte order).
    pub local_port: u16,
    /// Remote port (host byte order).
    pub remote_port: u16,
    /// `linux::af::*`.
    pub family: u16,
    /// Zero.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<HistoryKey>() == 44);

/// The last close seen for a `HistoryKey`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct History {
    /// When (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// The process that closed the socket.
    pub tgid: u32,
    /// Its thread id.
    pub pid: u32,
    /// Its task name.
    pub comm: [u8; 16],
    /// `history::*`.
    pub kind: u8,
    /// The TCP state the socket left.
    pub state: u8,
    /// Its socket error (errno), when it was aborted.
    pub err: u8,
    /// Zero.
    pub _pad: [u8; 5],
}
const _: () = assert!(core::mem::size_of::<History>() == 40);

/// One slot of the `HISTORY` table (empty: `close.ts_ns` is 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistorySlot {
    /// The 4-tuple or port.
    pub key: HistoryKey,
    /// Zero.
    pub _pad: u32,
    /// Its last close.
    pub close: History,
}
const _: () = assert!(core::mem::size_of::<HistorySlot>() == 88);

/// Value of the `HISTORY` array: the slots of one set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistorySet {
    /// `HISTORY_WAYS` slots.
    pub slots: [HistorySlot; HISTORY_WAYS],
}

/// Offsets of the fields the owner-tracking tracepoints read (from tracefs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerTracepoints {
    /// `sock:inet_sock_set_state`: offset of `skaddr`.
    pub set_state_skaddr: u32,
    /// Offset of `oldstate`.
    pub set_state_oldstate: u32,
    /// Offset of `newstate`.
    pub set_state_newstate: u32,
    /// Offset of `protocol`.
    pub set_state_protocol: u32,
}
const _: () = assert!(core::mem::size_of::<OwnerTracepoints>() == 16);

impl OwnerTracepoints {
    /// Nothing resolved: the owner tracepoint is not attached.
    pub const UNRESOLVED: OwnerTracepoints = OwnerTracepoints {
        set_state_skaddr: ABSENT,
        set_state_oldstate: ABSENT,
        set_state_newstate: ABSENT,
        set_state_protocol: ABSENT,
    };
}

/// Where a kernel field lives, resolved from BTF by userspace at start-up.
///
/// `offset` is in bytes from the start of the containing object (e.g. a
/// `struct sock *`); `ABSENT` when the running kernel has no such field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Bytes from the start of the containing object; `ABSENT` if none.
    pub offset: u32,
    /// Size in bytes of the load (1, 2, 4 or 8; 16 for an IPv6 address),
    /// 0 when absent: `Field::ABSENT` is the only absent value (the
    /// loader checks; the programs test `size` alone).
    pub size: u8,
    /// For bitfields: shift right by this many bits after the load...
    pub bit_shift: u8,
    /// ...and keep this many bits (0 = not a bitfield).
    pub bit_width: u8,
    /// Zero.
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<Field>() == 8);

impl Field {
    /// A field the running kernel does not have.
    pub const ABSENT: Field = Field {
        offset: ABSENT,
        size: 0,
        bit_shift: 0,
        bit_width: 0,
        _pad: 0,
    };

    /// Whether the running kernel has the field.
    pub const fn is_present(&self) -> bool {
        self.offset != ABSENT
    }
}

/// How userspace loads a kernel field for the programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// An integer (or bitfield) loaded with a 1, 2, 4 or 8 byte read.
    Scalar,
    /// A 16-byte IPv6 address copied as bytes.
    Addr16,
}

/// One `Offsets` field as userspace resolves it from BTF (not shared with
/// the kernel programs: only `Offsets` itself is).
pub struct FieldSpec {
    /// The field's name in `Offsets`.
    pub name: &'static str,
    /// Whether rsttrace refuses to start without it.
    pub required: bool,
    /// How the programs read it.
    pub load: Load,
    /// (struct, member path) places to look, in order: members move
    /// between kernel versions.
    pub sources: &'static [(&'static str, &'static str)],
    /// The field in an `Offsets`.
    pub slot: fn(&mut Offsets) -> &mut Field,
}

/// One bit number of `sk_flags` in `Offsets`, from `enum sock_flags`.
pub struct BitSpec {
    /// The field's name in `Offsets`.
    pub name: &'static str,
    /// The `enum sock_flags` enumerator.
    pub enumerator: &'static str,
    /// The field in an `Offsets`.
    pub slot: fn(&mut Offsets) -> &mut u32,
}

/// The one table of kernel fields: each row gives the `Offsets` struct a
/// field, `Offsets::UNRESOLVED` its `ABSENT` value, and userspace's
/// `Offsets::FIELDS` / `Offsets::SOCK_FLAG_BITS` the places to find it in
/// BTF. Adding a field is adding a row.
macro_rules! offsets_table {
    (
        fields {
            $( $(#[$fdoc:meta])* $field:ident: $need:ident $load:ident
                $( ($st:literal, $path:literal) )+ ),* $(,)?
        }
        sock_flag_bits {
            $( $(#[$bdoc:meta])* $bit:ident: $enumerator:literal ),* $(,)?
        }
    ) => {
        /// Kernel struct layout of the running kernel, handed to the programs as a
        /// read-only global so the verifier sees constants. Offsets of socket fields
        /// are from the `struct sock *` (the structs nest: sock_common ⊂ sock ⊂
        /// inet_sock ⊂ inet_connection_sock ⊂ tcp_sock).
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct Offsets {
            $( $(#[$fdoc])* pub $field: Field, )*
            $( $(#[$bdoc])* pub $bit: u32, )*
        }

        impl Offsets {
            /// Nothing resolved (every field `Field::ABSENT`).
            pub const UNRESOLVED: Offsets = Offsets {
                $( $field: Field::ABSENT, )*
                $( $bit: ABSENT, )*
            };

            /// Every `Field` member, in declaration order.
            pub const FIELDS: &'static [FieldSpec] = &[$(
                FieldSpec {
                    name: stringify!($field),
                    required: offsets_table!(@need $need),
                    load: Load::$load,
                    sources: &[$( ($st, $path) ),+],
                    slot: {
                        fn slot(o: &mut Offsets) -> &mut Field {
                            &mut o.$field
                        }
                        slot
                    },
                },
            )*];

            /// Every bit number member, in declaration order.
            pub const SOCK_FLAG_BITS: &'static [BitSpec] = &[$(
                BitSpec {
                    name: stringify!($bit),
                    enumerator: $enumerator,
                    slot: {
                        fn slot(o: &mut Offsets) -> &mut u32 {
                            &mut o.$bit
                        }
                        slot
                    },
                },
            )*];
        }
    };
    (@need Required) => { true };
    (@need Optional) => { false };
}

offsets_table! {
    fields {
        // struct sock_common (shared by full, request and timewait sockets)
        /// IPv4 remote address.
        skc_daddr: Required Scalar ("sock_common", "skc_daddr"),
        /// IPv4 local address.
        skc_rcv_saddr: Required Scalar ("sock_common", "skc_rcv_saddr"),
        /// Remote port (network byte order).
        skc_dport: Required Scalar ("sock_common", "skc_dport"),
        /// Local port (host byte order).
        skc_num: Required Scalar ("sock_common", "skc_num"),
        /// Address family.
        skc_family: Required Scalar ("sock_common", "skc_family"),
        /// TCP state.
        skc_state: Required Scalar ("sock_common", "skc_state"),
        /// IPv6 remote address (only with CONFIG_IPV6).
        skc_v6_daddr: Optional Addr16 ("sock_common", "skc_v6_daddr"),
        /// IPv6 local address (only with CONFIG_IPV6).
        skc_v6_rcv_saddr: Optional Addr16 ("sock_common", "skc_v6_rcv_saddr"),
        /// Socket cookie (0 until someone asked for it).
        skc_cookie: Optional Scalar ("sock_common", "skc_cookie"),
        // struct sock / inet_sock
        /// `enum sock_flags` bits (`sock_*_bit`); a #define for
        /// `__sk_common.skc_flags` on most kernels.
        sk_flags: Optional Scalar ("sock", "sk_flags") ("sock", "__sk_common.skc_flags"),
        /// Shutdown bits.
        sk_shutdown: Optional Scalar ("sock", "sk_shutdown"),
        /// SO_LINGER time in jiffies.
        sk_lingertime: Optional Scalar ("sock", "sk_lingertime"),
        /// Pending error.
        sk_err: Optional Scalar ("sock", "sk_err"),
        /// Soft error (ICMP) kept while retrying.
        sk_err_soft: Optional Scalar ("sock", "sk_err_soft"),
        /// `sk_lock.owned`: a task holds the socket lock (`context.rs`).
        sk_lock_owned: Optional Scalar ("sock", "sk_lock.owned"),
        /// `sk_cgrp_data.cgroup` (5.10: `sk_cgrp_data.val`, the pointer when
        /// bit 0 is clear), `cgroup.kn` and `kernfs_node.id`: the socket's
        /// cgroup v2 id.
        sk_cgroup: Optional Scalar ("sock", "sk_cgrp_data.cgroup") ("sock", "sk_cgrp_data.val"),
        /// `cgroup.kn`.
        cgroup_kn: Optional Scalar ("cgroup", "kn"),
        /// `kernfs_node.id`.
        kernfs_node_id: Optional Scalar ("kernfs_node", "id"),
        /// IP protocol (a bitfield before 5.6, a u16 since).
        sk_protocol: Optional Scalar ("sock", "sk_protocol"),
        /// Accept queue length.
        sk_ack_backlog: Optional Scalar ("sock", "sk_ack_backlog"),
        /// Accept queue limit.
        sk_max_ack_backlog: Optional Scalar ("sock", "sk_max_ack_backlog"),
        /// `inet_sock.inet_sport`: local port (network byte order).
        inet_sport: Optional Scalar ("inet_sock", "inet_sport"),
        // struct inet_connection_sock / tcp_sock
        /// Unanswered keepalive or zero-window probes.
        icsk_probes_out: Optional Scalar ("inet_connection_sock", "icsk_probes_out"),
        /// `tcp_sock.rcv_nxt`: next sequence number expected.
        rcv_nxt: Optional Scalar ("tcp_sock", "rcv_nxt"),
        /// `tcp_sock.copied_seq`: head of the unread data.
        copied_seq: Optional Scalar ("tcp_sock", "copied_seq"),
        /// `tcp_sock.snd_nxt`: next sequence number to send.
        snd_nxt: Optional Scalar ("tcp_sock", "snd_nxt"),
        /// `tcp_sock.snd_una`: first unacknowledged byte.
        snd_una: Optional Scalar ("tcp_sock", "snd_una"),
        /// `tcp_sock.write_seq`: tail of the written data.
        write_seq: Optional Scalar ("tcp_sock", "write_seq"),
        /// `tcp_sock.rcv_tstamp`: jiffies of the last ACK received.
        rcv_tstamp: Optional Scalar ("tcp_sock", "rcv_tstamp"),
        /// `tcp_sock.rcv_wnd`: the receive window advertised.
        rcv_wnd: Optional Scalar ("tcp_sock", "rcv_wnd"),
        // struct inet_timewait_sock
        /// The state a timewait socket came from.
        tw_substate: Optional Scalar ("inet_timewait_sock", "tw_substate"),
        // struct sk_buff. Modern kernels wrap the headers in
        // struct_group(headers, ...): an anonymous struct (found first)
        // mirrored by a named `headers` struct.
        /// `sk_buff.head`: start of the buffer.
        skb_head: Required Scalar ("sk_buff", "head"),
        /// `sk_buff.transport_header`: offset from `head`.
        skb_transport_header: Required Scalar
            ("sk_buff", "transport_header") ("sk_buff", "headers.transport_header"),
        /// `sk_buff.network_header`: offset from `head`.
        skb_network_header: Required Scalar
            ("sk_buff", "network_header") ("sk_buff", "headers.network_header"),
        /// `sk_buff.data`.
        skb_data: Optional Scalar ("sk_buff", "data"),
        /// `net_device.ifindex`.
        netdev_ifindex: Optional Scalar ("net_device", "ifindex"),
        /// `sk_buff.sk`: the owning socket (NULL for netfilter's RSTs).
        skb_sk: Optional Scalar ("sk_buff", "sk"),
        /// `sk_buff.skb_iif`: the device a packet came in on (0 for one
        /// made on this host).
        skb_iif: Optional Scalar ("sk_buff", "skb_iif"),
        // struct task_struct
        /// `task_struct.flags` (`PF_EXITING`).
        task_flags: Optional Scalar ("task_struct", "flags"),
        /// `task_struct.exit_code` (the signal of an exit).
        task_exit_code: Optional Scalar ("task_struct", "exit_code"),
        // The current task's identity, read through its typed pointer
        // (`Tuning::current_task`): `task_struct.pid`, `.tgid`, `.comm`,
        // `.cred`, `cred.uid.val`, `task_struct.cgroups` and
        // `css_set.dfl_cgrp` (then `cgroup.kn`, `kernfs_node.id` as above).
        /// `task_struct.pid`: the thread id.
        task_pid: Optional Scalar ("task_struct", "pid"),
        /// `task_struct.tgid`: the process id.
        task_tgid: Optional Scalar ("task_struct", "tgid"),
        /// `task_struct.comm`: the thread's name.
        task_comm: Optional Addr16 ("task_struct", "comm"),
        /// `task_struct.cred`: the task's credentials.
        task_cred: Optional Scalar ("task_struct", "cred"),
        /// `cred.uid.val`: the real user id, as the kernel's root user
        /// namespace numbers it.
        cred_uid: Optional Scalar ("cred", "uid.val"),
        /// `task_struct.cgroups`: the task's css_set.
        task_cgroups: Optional Scalar ("task_struct", "cgroups"),
        /// `css_set.dfl_cgrp`: its cgroup v2 cgroup.
        css_set_dfl_cgrp: Optional Scalar ("css_set", "dfl_cgrp"),
        // network namespace: sock_common.skc_net.net, sk_buff.dev,
        // net_device.nd_net.net, net.ns.inum (possible_net_t is a struct
        // holding `struct net *net` with CONFIG_NET_NS)
        /// `sock_common.skc_net.net`.
        skc_net: Optional Scalar ("sock_common", "skc_net.net"),
        /// `sk_buff.dev`.
        skb_dev: Optional Scalar ("sk_buff", "dev"),
        /// `net_device.nd_net.net`.
        netdev_net: Optional Scalar ("net_device", "nd_net.net"),
        /// `net.ns.inum`.
        net_inum: Optional Scalar ("net", "ns.inum"),
        /// `pt_regs.sp`: the user stack pointer saved on syscall entry
        /// (x86-64; other architectures name it differently and go without).
        pt_regs_sp: Optional Scalar ("pt_regs", "sp"),
    }
    sock_flag_bits {
        /// Bit numbers in `sk_flags` (enum sock_flags), from BTF. SOCK_DEAD:
        /// the application closed the socket.
        sock_dead_bit: "SOCK_DEAD",
        /// SOCK_LINGER: SO_LINGER is on.
        sock_linger_bit: "SOCK_LINGER",
        /// SOCK_KEEPOPEN: SO_KEEPALIVE is on.
        sock_keepopen_bit: "SOCK_KEEPOPEN",
        /// SOCK_DONE: the peer's FIN was received.
        sock_done_bit: "SOCK_DONE",
    }
}
impl Offsets {
    /// The fields that `current_task::TYPED` loads.
    pub fn current_task_fields(&self) -> [Field; 9] {
        [
            self.task_pid,
            self.task_tgid,
            self.task_comm,
            self.task_cred,
            self.cred_uid,
            self.task_cgroups,
            self.css_set_dfl_cgrp,
            self.cgroup_kn,
            self.kernfs_node_id,
        ]
    }
}

// No implicit padding, whatever the rows.
const _: () = assert!(
    core::mem::size_of::<Offsets>()
        == 8 * Offsets::FIELDS.len() + 4 * Offsets::SOCK_FLAG_BITS.len()
);

/// Byte offsets of the classic tracepoint fields, parsed from tracefs
/// `format` files at run time (layouts differ between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointLayout {
    /// Offset of `skaddr` in `tcp:tcp_send_reset`.
    pub send_skaddr: u32,
    /// Offset of `skbaddr` in `tcp:tcp_send_reset`.
    pub send_skbaddr: u32,
    /// Offset of `reason` in `tcp:tcp_send_reset` (`ABSENT` before 6.10).
    pub send_reason: u32,
    /// Offset of `skaddr` in `tcp:tcp_receive_reset`.
    pub recv_skaddr: u32,
}
const _: () = assert!(core::mem::size_of::<TracepointLayout>() == 16);

/// `skb:kfree_skb` layout (from tracefs) and the value of
/// `SKB_DROP_REASON_NO_SOCKET` (from BTF; it differs between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KfreeSkb {
    /// Offset of `skbaddr` in the record.
    pub skbaddr: u32,
    /// Offset of `reason` in the record (`ABSENT` without drop reasons).
    pub reason: u32,
    /// `SKB_DROP_REASON_NO_SOCKET` on the running kernel.
    pub no_socket: u32,
    /// Zero.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<KfreeSkb>() == 16);

impl KfreeSkb {
    /// Nothing resolved: the kfree_skb hook is not attached.
    pub const UNRESOLVED: KfreeSkb = KfreeSkb {
        skbaddr: ABSENT,
        reason: ABSENT,
        no_socket: ABSENT,
        _pad: 0,
    };
}

/// Maximum number of values per in-kernel filter list.
pub const MAX_FILTER_PORTS: usize = 16;
/// Maximum pids in `Filter::pids`.
pub const MAX_FILTER_PIDS: usize = 16;
/// `--cgroup` / `--container` expand to a cgroup and its descendants.
pub const MAX_FILTER_CGROUPS: usize = 32;
/// Maximum namespaces in `Filter::netns`.
pub const MAX_FILTER_NETNS: usize = 8;

/// In-kernel filters. An empty list matches everything; lists are ORed
/// within and ANDed across.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Local or remote port, host byte order.
    pub ports: [u16; MAX_FILTER_PORTS],
    /// Thread-group ids (what users call a pid).
    pub pids: [u32; MAX_FILTER_PIDS],
    /// Entries of `ports` in use.
    pub n_ports: u32,
    /// Entries of `pids` in use.
    pub n_pids: u32,
    /// cgroup v2 ids (inode numbers) of the owner, or of the actor in its
    /// own task context where there is no owner.
    pub cgroups: [u64; MAX_FILTER_CGROUPS],
    /// Network namespace inodes (`RstEvent::netns`).
    pub netns: [u32; MAX_FILTER_NETNS],
    /// Entries of `cgroups` in use.
    pub n_cgroups: u32,
    /// Entries of `netns` in use.
    pub n_netns: u32,
}
const _: () = assert!(core::mem::size_of::<Filter>() == 2 * 16 + 4 * 16 + 8 + 8 * 32 + 4 * 8 + 8);

impl Filter {
    /// No filter: every event passes.
    pub const ALL: Filter = Filter {
        ports: [0; MAX_FILTER_PORTS],
        pids: [0; MAX_FILTER_PIDS],
        n_ports: 0,
        n_pids: 0,
        cgroups: [0; MAX_FILTER_CGROUPS],
        netns: [0; MAX_FILTER_NETNS],
        n_cgroups: 0,
        n_netns: 0,
    };
}

/// Ring-buffer and wake-up tuning, set by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Force a reader wake-up once this many bytes are waiting; below it
    /// events are submitted with BPF_RB_NO_WAKEUP and the reader's periodic
    /// drain picks them up. 0 wakes on every event.
    pub wakeup_bytes: u64,
    /// The tracepoint layout for the classic tracepoint programs.
    pub tp: TracepointLayout,
    /// `stacks::*` bits (`--stack`).
    pub stacks: u32,
    /// `context::source::*`.
    pub context: u32,
    /// Where this CPU's preempt count lives, to tell task from interrupt
    /// context at RST time without hooking every softirq.
    pub preempt: PreemptCount,
    /// An event carrying a user stack (`--stack`) wakes the reader at
    /// once, whatever is waiting, but at most this often per CPU (ns; 0:
    /// such events follow `wakeup_bytes` like the rest). Its frames are
    /// symbolized from /proc/PID/maps, gone once the process exits. The
    /// reader drains again this soon after a batch that had one, so the
    /// ones in between wait no longer.
    pub wakeup_gap_ns: u64,
    /// `--stack`: at most this many events per CPU take stacks in each
    /// `STACK_BUDGET_WINDOW_NS`; the others are sent without (0: all take them).
    pub stacks_per_window: u32,
    /// `current_task::*`.
    pub current_task: u32,
    /// `echo_clock::*`.
    pub echo_clock: u32,
    /// Zero.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Tuning>() == 72);

/// The window of `Tuning::stacks_per_window`: short, so that a burst
/// cannot take a second's budget at once and the next RSTs still get stacks
/// a moment later.
pub const STACK_BUDGET_WINDOW_NS: u64 = 100_000_000;

/// x86-64 addresses from /proc/kallsyms: `per_cpu_offset` is the
/// `__per_cpu_offset` array, `count` the per-CPU address of the preempt
/// count (`__preempt_count`, or `pcpu_hot.preempt_count` on 6.2–6.14).
/// Zero when unresolved (then `context::source::SOCKET_LOCK`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreemptCount {
    /// Address of `__per_cpu_offset`.
    pub per_cpu_offset: u64,
    /// Per-CPU address of the preempt count.
    pub count: u64,
}

impl PreemptCount {
    /// Unresolved (zero).
    pub const UNRESOLVED: PreemptCount = PreemptCount {
        per_cpu_offset: 0,
        count: 0,
    };
}

impl Tuning {
    /// No wake-up threshold, no stacks, context from the socket lock, the
    /// current task through helpers.
    pub const DEFAULT: Tuning = Tuning {
        wakeup_bytes: 0,
        tp: TracepointLayout {
            send_skaddr: ABSENT,
            send_skbaddr: ABSENT,
            send_reason: ABSENT,
            recv_skaddr: ABSENT,
        },
        stacks: 0,
        context: context::source::SOCKET_LOCK,
        preempt: PreemptCount::UNRESOLVED,
        wakeup_gap_ns: 0,
        stacks_per_window: 0,
        current_task: current_task::HELPERS,
        echo_clock: echo_clock::KTIME,
        _pad: 0,
    };
}

#[cfg(feature = "user")]
mod pod {
    /// Every type given here is #[repr(C)], made only of integers and byte
    /// arrays, with explicit padding fields and a size assertion.
    macro_rules! pod {
        ($($t:ident),* $(,)?) => {$(
            // SAFETY: as above: any bit pattern is a valid value and there
            // are no uninitialised bytes.
            unsafe impl aya::Pod for super::$t {}
        )*};
    }
    pod!(
        Offsets,
        Filter,
        Tuning,
        Owner,
        ListenerKey,
        OwnerTracepoints,
        KfreeSkb,
        HistoryKey,
        History
    );
}
