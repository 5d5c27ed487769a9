//! The owned, decoded form of one RST, as the classifier and the outputs see it.
//!
//! `decode` turns the kernel's `abi::RstEvent` into a `Raw` view; `Event::new`
//! gives the facts names (states, flags, addresses) and `classify` adds the cause.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rsttrace_ebpf::abi::{self, RstEvent};
use rsttrace_ebpf::linux::{af, tcp_flag, tcp_state};
use serde::Serialize;

/// Who sent the RST, from this host's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Direction {
    Sent,
    Received,
    /// No RST: the kernel gave up on the connection (timeouts, ICMP errors).
    Abort,
}

impl Direction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
            Direction::Abort => "abort",
        }
    }
}

/// A Linux TCP state (`rsttrace_ebpf::linux::tcp_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TcpState(pub(crate) u8);

impl TcpState {
    // Only tests name these two: no rule decides by them.
    #[cfg(test)]
    pub(crate) const NONE: TcpState = TcpState(0);
    #[cfg(test)]
    pub(crate) const ESTABLISHED: TcpState = TcpState(tcp_state::ESTABLISHED);
    pub(crate) const SYN_SENT: TcpState = TcpState(tcp_state::SYN_SENT);
    pub(crate) const SYN_RECV: TcpState = TcpState(tcp_state::SYN_RECV);
    pub(crate) const FIN_WAIT1: TcpState = TcpState(tcp_state::FIN_WAIT1);
    pub(crate) const FIN_WAIT2: TcpState = TcpState(tcp_state::FIN_WAIT2);
    pub(crate) const TIME_WAIT: TcpState = TcpState(tcp_state::TIME_WAIT);
    pub(crate) const CLOSE: TcpState = TcpState(tcp_state::CLOSE);
    pub(crate) const CLOSE_WAIT: TcpState = TcpState(tcp_state::CLOSE_WAIT);
    pub(crate) const LAST_ACK: TcpState = TcpState(tcp_state::LAST_ACK);
    pub(crate) const LISTEN: TcpState = TcpState(tcp_state::LISTEN);
    pub(crate) const CLOSING: TcpState = TcpState(tcp_state::CLOSING);
    pub(crate) const NEW_SYN_RECV: TcpState = TcpState(tcp_state::NEW_SYN_RECV);

    pub(crate) fn name(self) -> &'static str {
        crate::model::schema::state_name(self.0)
    }
}

/// The TCP flag byte of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct TcpFlags(pub(crate) u8);

impl TcpFlags {
    pub(crate) const FIN: u8 = tcp_flag::FIN;
    pub(crate) const SYN: u8 = tcp_flag::SYN;
    pub(crate) const RST: u8 = tcp_flag::RST;
    pub(crate) const PSH: u8 = tcp_flag::PSH;
    pub(crate) const ACK: u8 = tcp_flag::ACK;
    pub(crate) const URG: u8 = tcp_flag::URG;

    pub(crate) fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// tcpdump's notation: `S`, `S.`, `P.`, `F.`, `R` ...
    pub(crate) fn tcpdump(self) -> String {
        self.notation().as_str().to_owned()
    }

    /// The same notation without allocating (the outputs' hot path).
    pub(crate) fn notation(self) -> FlagsText {
        let mut text = FlagsText {
            bytes: [0; 6],
            len: 0,
        };
        let mut push = |c: u8| {
            text.bytes[usize::from(text.len)] = c;
            text.len += 1;
        };
        for (bit, c) in [
            (Self::SYN, b'S'),
            (Self::FIN, b'F'),
            (Self::PSH, b'P'),
            (Self::RST, b'R'),
            (Self::URG, b'U'),
        ] {
            if self.has(bit) {
                push(c);
            }
        }
        if self.has(Self::ACK) {
            push(b'.');
        }
        if text.len == 0 {
            return FlagsText {
                bytes: *b"none\0\0",
                len: 4,
            };
        }
        text
    }
}

/// TCP flags in tcpdump's notation: at most `SFPRU.`, or `none`.
#[derive(Clone, Copy)]
pub(crate) struct FlagsText {
    bytes: [u8; 6],
    len: u8,
}

impl FlagsText {
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII letters and '.' are ever pushed.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }
}

/// The segment that provoked a passive RST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Packet {
    pub(crate) flags: TcpFlags,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    /// TCP payload bytes.
    pub(crate) len: u32,
    pub(crate) window: u16,
    pub(crate) ttl: u8,
    /// IPv4 identification (0 for IPv6, or when unknown).
    pub(crate) ip_id: u16,
}

/// Socket facts read when the RST was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Socket {
    pub(crate) addr: u64,
    pub(crate) cookie: u64,
    /// A full socket (the `tcp_sock` fields below are meaningful).
    pub(crate) full: bool,
    /// Orphaned: the application already closed it.
    pub(crate) dead: bool,
    /// SO_LINGER enabled, with this linger time in jiffies.
    pub(crate) linger: Option<u32>,
    pub(crate) keepalive: bool,
    /// The peer's FIN was received (SOCK_DONE); it counts as one unread byte.
    pub(crate) peer_fin: bool,
    pub(crate) shutdown: u8,
    pub(crate) unread: u32,
    pub(crate) unsent: u32,
    pub(crate) unacked: u32,
    pub(crate) probes_out: u8,
    pub(crate) sk_err: u32,
    /// For a TIME_WAIT socket, the state it came from.
    pub(crate) tw_substate: Option<TcpState>,
    /// The socket's own cgroup v2 id (its creator's; an accepted socket's
    /// is its listener's), read when no owner is known.
    pub(crate) cgroup_id: Option<u64>,
    /// A listener whose accept queue is full.
    pub(crate) accept_queue_full: bool,
    /// For a socket in CLOSE, the state it left in the same call.
    pub(crate) closed_from: Option<TcpState>,
    /// Time since the peer's last ACK (full sockets, when the tick rate is known).
    pub(crate) peer_idle: Option<Duration>,
    /// `rcv_nxt` and `rcv_wnd` (full sockets): where a received RST's
    /// sequence number had to fall.
    pub(crate) rcv_nxt: u32,
    pub(crate) rcv_wnd: u32,
}

/// What the CPU was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExecContext {
    Unknown,
    Task,
    Softirq(u8),
}

impl ExecContext {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ExecContext::Unknown => "unknown",
            ExecContext::Task => "task",
            ExecContext::Softirq(vec) => softirq_name(vec),
        }
    }
}

fn softirq_name(vec: u8) -> &'static str {
    crate::model::schema::SOFTIRQS
        .get(usize::from(vec))
        .copied()
        .unwrap_or(crate::model::schema::SOFTIRQ_OTHER)
}

/// A task as the kernel saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Task {
    pub(crate) pid: u32,
    pub(crate) tid: u32,
    pub(crate) comm: String,
}

/// What the 4-tuple (or the listening port) went through before an RST
/// made without a full socket: the kernel's `HISTORY` map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PriorClose {
    pub(crate) kind: PriorKind,
    /// How long before the RST it happened.
    pub(crate) ago: Duration,
    /// The state the socket left.
    pub(crate) state: TcpState,
    /// Its socket error (errno) when it was aborted.
    pub(crate) error: Option<u32>,
    /// The process that owned (or closed) it, when known.
    pub(crate) process: Option<Task>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PriorKind {
    /// The application closed its SYN_SENT socket (gave up on connect()).
    ConnectAbandoned,
    /// The listening socket on the port was closed.
    ListenerClosed,
    /// The connection was closed (`error` says whether it was aborted).
    Closed,
}

impl PriorKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PriorKind::ConnectAbandoned => "connect_abandoned",
            PriorKind::ListenerClosed => "listener_closed",
            PriorKind::Closed => "closed",
        }
    }
}

/// One decoded RST.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Event {
    pub(crate) time: SystemTime,
    pub(crate) direction: Direction,
    /// Which kernel hook saw it (`tp_btf:tcp_send_reset`, ...).
    pub(crate) hook: &'static str,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    pub(crate) state: TcpState,
    /// `enum sk_rst_reason` value and its BTF name without the `SK_RST_REASON_`
    /// prefix (shared with the name table: no copy per event).
    pub(crate) kernel_reason: Option<(u32, Arc<str>)>,
    pub(crate) packet: Option<Packet>,
    pub(crate) socket: Option<Socket>,
    pub(crate) context: ExecContext,
    /// The task that ran the code (`current`).
    pub(crate) actor: Task,
    /// The signal the actor was exiting with, if it was exiting.
    pub(crate) exit_signal: Option<u8>,
    /// The process that owns the socket, when it could be proven; `None` when
    /// no process owns it (no socket) or none was seen (see `owner`).
    pub(crate) process: Option<Task>,
    /// How the owner is known, or why it is not.
    pub(crate) owner: Owner,
    /// Network namespace inode, when the kernel could read it.
    pub(crate) netns: Option<u32>,
    /// The 4-tuple's (or port's) last close, for RSTs without a full socket.
    pub(crate) prior: Option<PriorClose>,
    /// `--stack`: ids in the kernel's stack map.
    pub(crate) kernel_stack_id: Option<u32>,
    pub(crate) user_stack_id: Option<u32>,
    /// `--stack`: the kernel took no stacks, over `--stack-budget`.
    pub(crate) stack_skipped: bool,
    /// Index of the device: the one a netfilter RST left by, or the one
    /// the trigger (or the received RST) came in on.
    pub(crate) device: Option<u32>,
    /// For an RST netfilter made (`kprobe:nf_send_reset`), the hook it
    /// was rejected at.
    pub(crate) netfilter_hook: Option<NetfilterHook>,
    /// With an owner from the listener: several processes listen on the
    /// port (SO_REUSEPORT), named here when /proc tells (filled by the
    /// pipeline, `enrich::listeners::Groups`).
    pub(crate) listener_group: Option<Vec<Task>>,
}

/// `enum nf_inet_hooks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NetfilterHook(pub u8);

impl NetfilterHook {
    pub(crate) fn name(self) -> &'static str {
        match self.0 {
            0 => "prerouting",
            1 => "input",
            2 => "forward",
            3 => "output",
            4 => "postrouting",
            5 => "ingress",
            _ => "other",
        }
    }
}

/// Who owns the socket the RST was made on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Remembered in the kernel from the owner's own connect(), listen()
    /// or first close()/shutdown().
    Tracked { uid: u32, cgroup_id: u64 },
    /// The process that listens on the socket's local port: a connection
    /// accepted or queued there that has not proven an owner of its own
    /// (another process may have accepted it).
    Listener { uid: u32, cgroup_id: u64 },
    /// The RST was made in task context, by the socket's own process.
    Actor,
    /// No socket: a SYN to a closed port, a segment for a forgotten connection.
    NoSocket,
    /// A socket, but its owner was never seen (opened before rsttrace started,
    /// or a timewait/request socket).
    NotSeen,
    /// A TIME_WAIT socket: the owner of the connection it was, from the
    /// 4-tuple's close.
    Prior,
}

impl Owner {
    pub(crate) fn unknown_reason(&self) -> Option<&'static str> {
        match self {
            Owner::NoSocket => Some("no_socket"),
            Owner::NotSeen => Some("not_seen"),
            _ => None,
        }
    }
}

/// Turns kernel-side facts into names and units: the reason table comes
/// from BTF, the tick rate from a measurement (`kernel::hz`).
pub(crate) trait KernelTables {
    fn reason_name(&self, value: u32) -> Option<Arc<str>>;
    /// CONFIG_HZ, when known: jiffies → time.
    fn hz(&self) -> Option<u32>;
}

impl Event {
    /// `boot_to_wall` converts the kernel's CLOCK_MONOTONIC nanoseconds to wall time.
    pub(crate) fn new(
        raw: &RstEvent,
        kernel: &dyn KernelTables,
        boot_to_wall: impl Fn(u64) -> SystemTime,
    ) -> Event {
        let has = |bit: u32| raw.flags & bit != 0;
        let direction = match raw.direction {
            abi::direction::RECEIVED => Direction::Received,
            abi::direction::ABORT => Direction::Abort,
            _ => Direction::Sent,
        };
        let hook = crate::model::schema::hook_name(raw.hook);
        let ip = |bytes: &[u8; 16]| -> IpAddr {
            if raw.family == af::INET6 {
                let v6 = Ipv6Addr::from(*bytes);
                // Dual-stack sockets carry IPv4 peers as ::ffff:a.b.c.d.
                match v6.to_ipv4_mapped() {
                    Some(v4) => IpAddr::V4(v4),
                    None => IpAddr::V6(v6),
                }
            } else {
                IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
            }
        };
        let kernel_reason = has(abi::flag::HAS_REASON).then(|| {
            let name = kernel
                .reason_name(raw.reason)
                .unwrap_or_else(|| format!("UNKNOWN_{}", raw.reason).into());
            (raw.reason, name)
        });
        let packet = has(abi::flag::HAS_PACKET).then_some(Packet {
            flags: TcpFlags(raw.pkt_flags),
            seq: raw.pkt_seq,
            ack: raw.pkt_ack,
            len: raw.pkt_len,
            window: raw.pkt_window,
            ttl: raw.pkt_ttl,
            ip_id: if raw.family == af::INET {
                raw.pkt_ip_id
            } else {
                0
            },
        });
        let socket = has(abi::flag::HAS_SOCK).then_some(Socket {
            addr: raw.sk,
            cookie: raw.cookie,
            full: has(abi::flag::FULL_SOCK),
            dead: has(abi::flag::SOCK_DEAD),
            linger: has(abi::flag::SOCK_LINGER).then_some(raw.lingertime),
            keepalive: has(abi::flag::SOCK_KEEPOPEN),
            peer_fin: has(abi::flag::PEER_FIN),
            shutdown: raw.shutdown,
            unread: raw.unread,
            unsent: raw.unsent,
            unacked: raw.unacked,
            probes_out: raw.probes_out,
            sk_err: raw.sk_err,
            tw_substate: (raw.state == TcpState::TIME_WAIT.0).then_some(TcpState(raw.tw_substate)),
            cgroup_id: (raw.sk_cgroup != 0).then_some(raw.sk_cgroup),
            accept_queue_full: has(abi::flag::ACCEPT_QUEUE_FULL),
            closed_from: (raw.closed_from != 0).then_some(TcpState(raw.closed_from)),
            peer_idle: kernel.hz().filter(|_| has(abi::flag::FULL_SOCK)).map(|hz| {
                Duration::from_millis(u64::from(raw.rcv_idle_jiffies) * 1000 / u64::from(hz))
            }),
            rcv_nxt: raw.rcv_nxt,
            rcv_wnd: raw.rcv_wnd,
        });
        let context = match raw.context {
            abi::context::TASK => ExecContext::Task,
            abi::context::SOFTIRQ => ExecContext::Softirq(raw.softirq_vec),
            _ => ExecContext::Unknown,
        };
        let actor = Task {
            pid: raw.actor_tgid,
            tid: raw.actor_pid,
            comm: comm_string(&raw.actor_comm),
        };
        let prior = prior_close(raw);
        // The kernel remembers owners from moments that prove them. Failing
        // that, in task context the actor of an RST on a socket is its owner
        // (the kernel runs the owner's syscall, or its backlog under the
        // socket lock). In softirq `current` is whoever the interrupt landed on.
        let (process, owner) = if has(abi::flag::OWNER_KNOWN) {
            let task = Task {
                pid: raw.owner_tgid,
                tid: raw.owner_pid,
                comm: comm_string(&raw.owner_comm),
            };
            let (uid, cgroup_id) = (raw.owner_uid, raw.owner_cgroup);
            let owner = if has(abi::flag::OWNER_FROM_LISTENER) {
                Owner::Listener { uid, cgroup_id }
            } else {
                Owner::Tracked { uid, cgroup_id }
            };
            (Some(task), owner)
        } else if socket.is_none() {
            (None, Owner::NoSocket)
        } else if raw.state == TcpState::TIME_WAIT.0
            && let Some(task) = prior
                .as_ref()
                .filter(|p| p.kind == PriorKind::Closed)
                .and_then(|p| p.process.clone())
        {
            (Some(task), Owner::Prior)
        } else if context == ExecContext::Task && actor.pid != 0 {
            (Some(actor.clone()), Owner::Actor)
        } else {
            (None, Owner::NotSeen)
        };
        Event {
            time: boot_to_wall(raw.ts_ns),
            direction,
            hook,
            local: SocketAddr::new(ip(&raw.local_addr), raw.local_port),
            remote: SocketAddr::new(ip(&raw.remote_addr), raw.remote_port),
            state: TcpState(raw.state),
            kernel_reason,
            packet,
            socket,
            context,
            actor,
            exit_signal: has(abi::flag::TASK_EXITING).then_some(raw.exit_signal),
            process,
            owner,
            netns: (raw.netns != 0).then_some(raw.netns),
            prior,
            kernel_stack_id: u32::try_from(raw.kernel_stack_id).ok(),
            user_stack_id: u32::try_from(raw.user_stack_id).ok(),
            stack_skipped: has(abi::flag::STACK_SKIPPED),
            device: (raw.ifindex != 0).then_some(raw.ifindex),
            netfilter_hook: raw.nf_hook.checked_sub(1).map(NetfilterHook),
            listener_group: has(abi::flag::LISTENER_GROUP).then(Vec::new),
        }
    }

    /// The kernel reason name, if the kernel reported one.
    pub(crate) fn reason(&self) -> Option<&str> {
        self.kernel_reason.as_ref().map(|(_, name)| &**name)
    }
}

fn prior_close(raw: &RstEvent) -> Option<PriorClose> {
    let kind = match raw.hist_kind {
        abi::history::CONNECT_ABANDONED => PriorKind::ConnectAbandoned,
        abi::history::LISTENER_CLOSED => PriorKind::ListenerClosed,
        abi::history::CLOSED => PriorKind::Closed,
        _ => return None,
    };
    let process = (raw.hist_tgid != 0).then(|| Task {
        pid: raw.hist_tgid,
        tid: raw.hist_pid,
        comm: comm_string(&raw.hist_comm),
    });
    Some(PriorClose {
        kind,
        ago: Duration::from_nanos(raw.ts_ns.saturating_sub(raw.hist_ts_ns)),
        state: TcpState(raw.hist_state),
        error: (raw.hist_err != 0).then_some(u32::from(raw.hist_err)),
        process,
    })
}

/// `comm` is NUL-padded and chosen by the process; keep it as lossy UTF-8.
/// Escaping for terminals and files is the outputs' job.
fn comm_string(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    // Valid UTF-8 (nearly always ASCII) is checked faster than it is
    // replaced.
    match std::str::from_utf8(&raw[..end]) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(&raw[..end]).into_owned(),
    }
}
