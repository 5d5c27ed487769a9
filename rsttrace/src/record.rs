//! The record the outputs write: an event, its cause, and what userspace
//! added (the owner process, the stacks). It sits above `enrich` because it
//! carries enrich's facts, so `model` stays free of them.

use std::sync::Arc;

use crate::enrich::procinfo::ProcInfo;
use crate::enrich::stacks::Stacks;
use crate::model::cause::Cause;
use crate::model::event::Event;

/// An event with its cause: what the outputs write.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Classified {
    pub(crate) event: Event,
    pub(crate) cause: Cause,
    /// Command line, container and network namespace of the owner, read
    /// from /proc (None when there is no owner or it already exited).
    /// Shared with the /proc cache: no copy per event.
    pub(crate) owner_proc: Option<Arc<ProcInfo>>,
    /// `--stack`: symbolized frames (both None without it).
    pub(crate) stacks: Stacks,
}

#[cfg(test)]
pub(crate) mod fixtures {
    use std::net::SocketAddr;
    use std::time::{Duration, SystemTime};

    use super::Classified;
    use crate::model::cause::{Cause, CauseId, Confidence};
    use crate::model::event::*;

    /// An open, full socket at `addr` with nothing pending.
    pub(crate) fn full_socket(addr: u64) -> Socket {
        Socket {
            addr,
            cookie: 1,
            full: true,
            dead: false,
            linger: None,
            keepalive: false,
            peer_fin: false,
            shutdown: 0,
            unread: 0,
            unsent: 0,
            unacked: 0,
            probes_out: 0,
            sk_err: 0,
            tw_substate: None,
            cgroup_id: None,
            accept_queue_full: false,
            closed_from: None,
            peer_idle: None,
            rcv_nxt: 0,
            rcv_wnd: 0,
        }
    }

    pub(crate) fn record() -> Classified {
        let evidence = crate::model::evidence::Evidence::new().with("unread_bytes_lost", 100u32);
        Classified {
            event: Event {
                time: SystemTime::UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789),
                direction: Direction::Sent,
                hook: "tp_btf:tcp_send_reset",
                local: "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
                remote: "[::1]:40000".parse::<SocketAddr>().unwrap(),
                state: TcpState::CLOSE,
                kernel_reason: Some((11, "TCP_ABORT_ON_CLOSE".into())),
                packet: Some(Packet {
                    flags: TcpFlags(TcpFlags::PSH | TcpFlags::ACK),
                    seq: 1,
                    ack: 2,
                    len: 9,
                    window: 512,
                    ttl: 64,
                    ip_id: 0,
                }),
                socket: None,
                context: ExecContext::Task,
                actor: Task {
                    pid: 7,
                    tid: 8,
                    comm: "evil\x1b[31m,\"x\"\nname".into(),
                },
                exit_signal: None,
                process: Some(Task {
                    pid: 7,
                    tid: 8,
                    comm: "=cmd|evil\x1b[2J".into(),
                }),
                owner: Owner::Tracked {
                    uid: 1000,
                    cgroup_id: 42,
                },
                netns: None,
                prior: None,
                kernel_stack_id: None,
                user_stack_id: None,
                stack_skipped: false,
                device: None,
                netfilter_hook: None,
                listener_group: None,
            },
            cause: Cause {
                id: CauseId::CloseUnreadData,
                confidence: Confidence::Certain,
                evidence,
            },
            owner_proc: Some(std::sync::Arc::new(crate::enrich::procinfo::ProcInfo {
                cmdline: Some("/usr/sbin/app --serve".into()),
                cgroup: Some("/system.slice/app.service".into()),
                container: crate::enrich::procinfo::container_from_cgroup(
                    "/system.slice/app.service",
                ),
                netns: Some(4026531840),
            })),
            stacks: crate::enrich::stacks::Stacks::default(),
        }
    }
}
