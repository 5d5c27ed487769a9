//! Event and configuration layouts shared by the kernel programs and userspace.
//!
//! Rules (they keep the layouts identical on both sides and free of padding):
//! `#[repr(C)]`, fixed-width integers and byte arrays only, explicit `_pad`
//! fields, no `bool`/`Option`/Rust enums (enumerations are plain integer
//! constants in the modules below), and a `const` size assertion per struct.

/// Bumped whenever a layout below changes; userspace refuses other versions.
pub const ABI_VERSION: u16 = 6;

/// Names of the maps and globals in the object file, used by the loader.
pub const EVENTS_MAP: &str = "EVENTS";
pub const COUNTERS_MAP: &str = "COUNTERS";
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
pub const FILTER_GLOBAL: &str = "FILTER";
pub const TUNING_GLOBAL: &str = "TUNING";
pub const OWNERS_MAP: &str = "OWNERS";
pub const LISTENERS_MAP: &str = "LISTENERS";
/// Listening ports remembered with their owner (`LISTENERS`).
pub const MAX_LISTENERS: u32 = 4096;
pub const OWNER_TP_GLOBAL: &str = "OWNER_TP";
/// Sockets whose owner is remembered at once (LRU beyond that; evictions
/// are counted, see `counter::OWNERS_ADDED`).
pub const MAX_OWNERS: u32 = 65_536;
pub const KFREE_SKB_GLOBAL: &str = "KFREE_SKB";
pub const HISTORY_MAP: &str = "HISTORY";
/// 4-tuples and listening ports whose last close is remembered (LRU beyond
/// that): 16384 × (44-byte key + 40-byte value) ≈ 1.4 MiB of kernel memory.
pub const MAX_HISTORY: u32 = 16_384;
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
    pub const BTF_SEND_RESET: &str = "btf_tcp_send_reset";
    pub const BTF_SEND_RESET_NO_REASON: &str = "btf_tcp_send_reset_no_reason";
    pub const BTF_RECEIVE_RESET: &str = "btf_tcp_receive_reset";
    pub const TP_SEND_RESET: &str = "tp_tcp_send_reset";
    pub const TP_RECEIVE_RESET: &str = "tp_tcp_receive_reset";
    pub const OWNER_SET_STATE: &str = "owner_set_state";
    pub const BTF_OWNER_SET_STATE: &str = "btf_owner_set_state";
    /// `tp_btf/inet_sk_error_report`: connections aborted without an RST.
    pub const BTF_ERROR_REPORT: &str = "btf_inet_sk_error_report";
    /// `tp_btf/net_dev_queue` and `tp_btf/netif_receive_skb`: the RST
    /// segments themselves, for pcapng exports.
    pub const PACKET_TX: &str = "pkt_net_dev_queue";
    pub const PACKET_RX: &str = "pkt_netif_receive_skb";
    /// kprobes, attached by symbol name at run time.
    pub const KPROBE_SEND_RESET: &str = "kp_send_reset";
    pub const KPROBE_SEND_ACTIVE_RESET: &str = "kp_send_active_reset";
    pub const KPROBE_TCP_RESET: &str = "kp_tcp_reset";
    /// fentry, one program per kernel function.
    pub const FENTRY_V4_SEND_RESET: &str = "fe_tcp_v4_send_reset";
    pub const FENTRY_V6_SEND_RESET: &str = "fe_tcp_v6_send_reset";
    pub const FENTRY_SEND_ACTIVE_RESET: &str = "fe_tcp_send_active_reset";
    pub const FENTRY_TCP_RESET: &str = "fe_tcp_reset";
    /// `skb:kfree_skb` with reason NO_SOCKET: RSTs a tracepoint-only kernel
    /// without a socketless `tcp_send_reset` would miss.
    pub const TP_KFREE_SKB: &str = "tp_kfree_skb";
}

/// `EventHeader::kind`.
pub mod kind {
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
    pub const BTF_SEND_RESET: u8 = 1;
    pub const BTF_RECEIVE_RESET: u8 = 2;
    pub const TP_SEND_RESET: u8 = 3;
    pub const TP_RECEIVE_RESET: u8 = 4;
    /// kprobe on tcp_v{4,6}_send_reset / tcp_send_active_reset.
    pub const KPROBE_SEND_RESET: u8 = 5;
    /// kprobe on tcp_reset (with the received RST's skb).
    pub const KPROBE_RECEIVE_RESET: u8 = 6;
    pub const FENTRY_SEND_RESET: u8 = 7;
    pub const FENTRY_RECEIVE_RESET: u8 = 8;
    /// `skb:kfree_skb` (reason NO_SOCKET) of a TCP segment that got an RST.
    pub const TP_KFREE_SKB_NO_SOCKET: u8 = 9;
    /// `inet_sk_error_report` (direction ABORT).
    pub const BTF_ERROR_REPORT: u8 = 10;
}

/// `RstEvent::hist_kind`: what the 4-tuple (or the listening port) went
/// through before a socketless or TIME_WAIT RST.
pub mod history {
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
    pub const KERNEL: u32 = 1 << 0;
    /// The user stack, for events made in the owner's own task context.
    pub const USER: u32 = 1 << 1;
}

/// `RstEvent::context`: what the CPU was doing when the RST was made.
pub mod context {
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
    /// Keys added to `OWNERS` and `HISTORY` (never removed: they leave by
    /// LRU eviction): userspace derives the evictions as added − live.
    pub const OWNERS_ADDED: u32 = 8;
    pub const HISTORY_ADDED: u32 = 9;
    pub const COUNT: u32 = 10;
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

    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
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
    pub softirq_vec: u8,
    /// `sk_shutdown` bits (RCV_SHUTDOWN=1, SEND_SHUTDOWN=2).
    pub shutdown: u8,
    /// Keepalive / zero-window probes sent without answer (`icsk_probes_out`).
    pub probes_out: u8,
    /// Signal number that made the current task exit (with `flag::TASK_EXITING`).
    pub exit_signal: u8,
    pub pkt_flags: u8,

    /// The packet: for a sent passive RST the segment that provoked it.
    pub pkt_seq: u32,
    pub pkt_ack: u32,
    /// TCP payload bytes of the packet.
    pub pkt_len: u32,
    pub pkt_window: u16,
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
    pub actor_tgid: u32,
    pub actor_comm: [u8; 16],

    /// The process that owns the socket (with `flag::OWNER_KNOWN`): seen in
    /// its own task context on connect(), listen(), close()/shutdown() or recv().
    pub owner_uid: u32,
    pub owner_tgid: u32,
    pub owner_pid: u32,
    pub owner_cgroup: u64,
    pub owner_comm: [u8; 16],

    /// Inode of the network namespace (of the socket, else of the device
    /// the trigger arrived on); 0 when unknown.
    pub netns: u32,
    /// Ids in the `STACKS` map with `--stack`; negative when not captured.
    pub kernel_stack_id: i32,
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
    pub hist_pid: u32,
    pub hist_comm: [u8; 16],
    pub hist_kind: u8,
    /// The TCP state the socket left.
    pub hist_state: u8,
    /// Its socket error (errno), when it was aborted.
    pub hist_err: u8,
    pub _pad2: u8,
    /// IPv4 identification of the packet: forged segments often carry IDs
    /// out of the peer's sequence. Meaningless for IPv6 (no such field).
    pub pkt_ip_id: u16,
    pub _pad3: [u8; 2],
    /// The socket's own cgroup v2 id (of the task that created it; an
    /// accepted socket inherits its listener's), for a full socket without
    /// an owner; 0 otherwise or when unknown.
    pub sk_cgroup: u64,
}
const _: () = assert!(core::mem::size_of::<RstEvent>() == 256 + 8 * USER_STACK_TOP_WORDS);

/// An RST segment as it left or reached a device (`kind::PACKET`), for
/// pcapng exports: the real bytes, from the IP header on.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketRecord {
    pub header: EventHeader,
    /// `bpf_ktime_get_ns()`.
    pub ts_ns: u64,
    /// Network namespace inode of the device (0 when unknown).
    pub netns: u32,
    pub ifindex: u32,
    /// IP packet length on the wire.
    pub len: u32,
    /// Bytes of `data` that are the packet's (at most `PACKET_BYTES`).
    pub caplen: u16,
    /// `packet_dir::*`.
    pub direction: u8,
    pub _pad: u8,
    pub data: [u8; PACKET_BYTES],
}
const _: () = assert!(core::mem::size_of::<PacketRecord>() == 128);

/// A socket's owner, as remembered in the `OWNERS` map (key: socket address).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub tgid: u32,
    pub pid: u32,
    pub uid: u32,
    pub _pad: u32,
    /// cgroup v2 id of the owner.
    pub cgroup: u64,
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
    pub netns: u32,
    pub port: u16,
    pub _pad: u16,
}

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
    pub netns: u32,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    pub family: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<HistoryKey>() == 44);

/// Value of the `HISTORY` map: the last close seen for the key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct History {
    pub ts_ns: u64,
    pub tgid: u32,
    pub pid: u32,
    pub comm: [u8; 16],
    /// `history::*`.
    pub kind: u8,
    pub state: u8,
    pub err: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(core::mem::size_of::<History>() == 40);

/// Offsets of the fields the owner-tracking tracepoints read (from tracefs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerTracepoints {
    /// `sock:inet_sock_set_state`
    pub set_state_skaddr: u32,
    pub set_state_oldstate: u32,
    pub set_state_newstate: u32,
    pub set_state_protocol: u32,
}
const _: () = assert!(core::mem::size_of::<OwnerTracepoints>() == 16);

impl OwnerTracepoints {
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
    pub offset: u32,
    /// Size in bytes of the load (1, 2, 4 or 8).
    pub size: u8,
    /// For bitfields: shift right by this many bits after the load...
    pub bit_shift: u8,
    /// ...and keep this many bits (0 = not a bitfield).
    pub bit_width: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<Field>() == 8);

impl Field {
    pub const ABSENT: Field = Field {
        offset: ABSENT,
        size: 0,
        bit_shift: 0,
        bit_width: 0,
        _pad: 0,
    };

    pub const fn is_present(&self) -> bool {
        self.offset != ABSENT
    }
}

/// Kernel struct layout of the running kernel, handed to the programs as a
/// read-only global so the verifier sees constants. Offsets of socket fields
/// are from the `struct sock *` (the structs nest: sock_common ⊂ sock ⊂
/// inet_sock ⊂ inet_connection_sock ⊂ tcp_sock).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    // struct sock_common (shared by full, request and timewait sockets)
    pub skc_daddr: Field,
    pub skc_rcv_saddr: Field,
    pub skc_dport: Field,
    pub skc_num: Field,
    pub skc_family: Field,
    pub skc_state: Field,
    pub skc_v6_daddr: Field,
    pub skc_v6_rcv_saddr: Field,
    pub skc_cookie: Field,
    // struct sock / inet_sock
    pub sk_flags: Field,
    pub sk_shutdown: Field,
    pub sk_lingertime: Field,
    pub sk_err: Field,
    pub sk_err_soft: Field,
    /// `sk_lock.owned`: a task holds the socket lock (`context.rs`).
    pub sk_lock_owned: Field,
    /// `sk_cgrp_data.cgroup` (5.10: `sk_cgrp_data.val`, the pointer when
    /// bit 0 is clear), `cgroup.kn` and `kernfs_node.id`: the socket's
    /// cgroup v2 id.
    pub sk_cgroup: Field,
    pub cgroup_kn: Field,
    pub kernfs_node_id: Field,
    pub sk_protocol: Field,
    pub sk_ack_backlog: Field,
    pub sk_max_ack_backlog: Field,
    pub inet_sport: Field,
    // struct inet_connection_sock / tcp_sock
    pub icsk_probes_out: Field,
    pub rcv_nxt: Field,
    pub copied_seq: Field,
    pub snd_nxt: Field,
    pub snd_una: Field,
    pub write_seq: Field,
    pub rcv_tstamp: Field,
    // struct inet_timewait_sock
    pub tw_substate: Field,
    // struct sk_buff
    pub skb_head: Field,
    pub skb_transport_header: Field,
    pub skb_network_header: Field,
    pub skb_data: Field,
    pub netdev_ifindex: Field,
    // struct task_struct
    pub task_flags: Field,
    pub task_exit_code: Field,
    // network namespace: sock_common.skc_net.net, sk_buff.dev,
    // net_device.nd_net.net, net.ns.inum
    pub skc_net: Field,
    pub skb_dev: Field,
    pub netdev_net: Field,
    pub net_inum: Field,
    /// `pt_regs.sp`: the user stack pointer saved on syscall entry.
    pub pt_regs_sp: Field,
    /// Bit numbers in `sk_flags` (enum sock_flags), from BTF.
    pub sock_dead_bit: u32,
    pub sock_linger_bit: u32,
    pub sock_keepopen_bit: u32,
    /// SOCK_DONE: the peer's FIN was received.
    pub sock_done_bit: u32,
}
const _: () = assert!(core::mem::size_of::<Offsets>() == 42 * 8 + 16);

impl Offsets {
    pub const UNRESOLVED: Offsets = Offsets {
        skc_daddr: Field::ABSENT,
        skc_rcv_saddr: Field::ABSENT,
        skc_dport: Field::ABSENT,
        skc_num: Field::ABSENT,
        skc_family: Field::ABSENT,
        skc_state: Field::ABSENT,
        skc_v6_daddr: Field::ABSENT,
        skc_v6_rcv_saddr: Field::ABSENT,
        skc_cookie: Field::ABSENT,
        sk_flags: Field::ABSENT,
        sk_shutdown: Field::ABSENT,
        sk_lingertime: Field::ABSENT,
        sk_err: Field::ABSENT,
        sk_err_soft: Field::ABSENT,
        sk_lock_owned: Field::ABSENT,
        sk_cgroup: Field::ABSENT,
        cgroup_kn: Field::ABSENT,
        kernfs_node_id: Field::ABSENT,
        sk_protocol: Field::ABSENT,
        sk_ack_backlog: Field::ABSENT,
        sk_max_ack_backlog: Field::ABSENT,
        inet_sport: Field::ABSENT,
        icsk_probes_out: Field::ABSENT,
        rcv_nxt: Field::ABSENT,
        copied_seq: Field::ABSENT,
        snd_nxt: Field::ABSENT,
        snd_una: Field::ABSENT,
        write_seq: Field::ABSENT,
        rcv_tstamp: Field::ABSENT,
        tw_substate: Field::ABSENT,
        skb_head: Field::ABSENT,
        skb_transport_header: Field::ABSENT,
        skb_network_header: Field::ABSENT,
        skb_data: Field::ABSENT,
        netdev_ifindex: Field::ABSENT,
        task_flags: Field::ABSENT,
        task_exit_code: Field::ABSENT,
        skc_net: Field::ABSENT,
        skb_dev: Field::ABSENT,
        netdev_net: Field::ABSENT,
        net_inum: Field::ABSENT,
        pt_regs_sp: Field::ABSENT,
        sock_dead_bit: ABSENT,
        sock_linger_bit: ABSENT,
        sock_keepopen_bit: ABSENT,
        sock_done_bit: ABSENT,
    };
}

/// Byte offsets of the classic tracepoint fields, parsed from tracefs
/// `format` files at run time (layouts differ between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointLayout {
    /// `tcp:tcp_send_reset`: `skaddr`, `skbaddr`, and `reason` (ABSENT before 6.10).
    pub send_skaddr: u32,
    pub send_skbaddr: u32,
    pub send_reason: u32,
    /// `tcp:tcp_receive_reset`: `skaddr`.
    pub recv_skaddr: u32,
}
const _: () = assert!(core::mem::size_of::<TracepointLayout>() == 16);

/// `skb:kfree_skb` layout (from tracefs) and the value of
/// `SKB_DROP_REASON_NO_SOCKET` (from BTF; it differs between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KfreeSkb {
    pub skbaddr: u32,
    pub reason: u32,
    pub no_socket: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<KfreeSkb>() == 16);

impl KfreeSkb {
    pub const UNRESOLVED: KfreeSkb = KfreeSkb {
        skbaddr: ABSENT,
        reason: ABSENT,
        no_socket: ABSENT,
        _pad: 0,
    };
}

/// Maximum number of values per in-kernel filter list.
pub const MAX_FILTER_PORTS: usize = 16;
pub const MAX_FILTER_PIDS: usize = 16;
/// `--cgroup` / `--container` expand to a cgroup and its descendants.
pub const MAX_FILTER_CGROUPS: usize = 32;
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
    pub n_ports: u32,
    pub n_pids: u32,
    /// cgroup v2 ids (inode numbers) of the owner, or of the actor in its
    /// own task context where there is no owner.
    pub cgroups: [u64; MAX_FILTER_CGROUPS],
    /// Network namespace inodes (`RstEvent::netns`).
    pub netns: [u32; MAX_FILTER_NETNS],
    pub n_cgroups: u32,
    pub n_netns: u32,
}
const _: () = assert!(core::mem::size_of::<Filter>() == 2 * 16 + 4 * 16 + 8 + 8 * 32 + 4 * 8 + 8);

impl Filter {
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
}
const _: () = assert!(core::mem::size_of::<Tuning>() == 48);

/// x86-64 addresses from /proc/kallsyms: `per_cpu_offset` is the
/// `__per_cpu_offset` array, `count` the per-CPU address of the preempt
/// count (`__preempt_count`, or `pcpu_hot.preempt_count` on 6.2–6.14).
/// Zero when unresolved (then `context::source::SOCKET_LOCK`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreemptCount {
    pub per_cpu_offset: u64,
    pub count: u64,
}

impl PreemptCount {
    pub const UNRESOLVED: PreemptCount = PreemptCount {
        per_cpu_offset: 0,
        count: 0,
    };
}

impl Tuning {
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
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type here is #[repr(C)], made only of integers and byte
    // arrays, with explicit padding fields and a size assertion: any bit
    // pattern is a valid value and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::Filter {}
    unsafe impl aya::Pod for super::Tuning {}
    unsafe impl aya::Pod for super::Owner {}
    unsafe impl aya::Pod for super::ListenerKey {}
    unsafe impl aya::Pod for super::OwnerTracepoints {}
    unsafe impl aya::Pod for super::KfreeSkb {}
    unsafe impl aya::Pod for super::HistoryKey {}
    unsafe impl aya::Pod for super::History {}
}
