//! Linux constants both sides need, defined once: the kernel programs test
//! them and userspace names them. Values are kernel ABI (they never change).

/// TCP states (`include/net/tcp_states.h`), as in `skc_state`.
pub mod tcp_state {
    /// Open: data flows both ways.
    pub const ESTABLISHED: u8 = 1;
    /// connect() sent a SYN and waits for the SYN-ACK.
    pub const SYN_SENT: u8 = 2;
    /// A SYN was answered; waiting for the handshake's last ACK.
    pub const SYN_RECV: u8 = 3;
    /// This side closed and sent a FIN.
    pub const FIN_WAIT1: u8 = 4;
    /// This side's FIN was acknowledged; waiting for the peer's.
    pub const FIN_WAIT2: u8 = 5;
    /// Both FINs exchanged; lingering to absorb late segments.
    pub const TIME_WAIT: u8 = 6;
    /// Closed (or not yet connected).
    pub const CLOSE: u8 = 7;
    /// The peer closed; the application has not yet.
    pub const CLOSE_WAIT: u8 = 8;
    /// Both closed, this side last; waiting for the final ACK.
    pub const LAST_ACK: u8 = 9;
    /// A listening socket.
    pub const LISTEN: u8 = 10;
    /// Both sides closed at once; waiting for the ACK of our FIN.
    pub const CLOSING: u8 = 11;
    /// A request socket (a SYN answered by a listener).
    pub const NEW_SYN_RECV: u8 = 12;
}

/// Bits of the TCP header's flag byte.
pub mod tcp_flag {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers (handshake).
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push buffered data to the application.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment field is valid.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is valid.
    pub const URG: u8 = 0x20;
}

/// Address families (`sa_family_t`).
pub mod af {
    /// IPv4.
    pub const INET: u16 = 2;
    /// IPv6.
    pub const INET6: u16 = 10;
}

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;

/// The errnos a TCP connection can die with (`include/uapi/asm-generic/errno*.h`).
pub mod errno {
    /// Permission denied.
    pub const EACCES: u32 = 13;
    /// Broken pipe.
    pub const EPIPE: u32 = 32;
    /// Protocol error.
    pub const EPROTO: u32 = 71;
    /// Message too long.
    pub const EMSGSIZE: u32 = 90;
    /// Protocol not available.
    pub const ENOPROTOOPT: u32 = 92;
    /// Network is down.
    pub const ENETDOWN: u32 = 100;
    /// Network is unreachable.
    pub const ENETUNREACH: u32 = 101;
    /// Connection aborted.
    pub const ECONNABORTED: u32 = 103;
    /// Connection reset by peer.
    pub const ECONNRESET: u32 = 104;
    /// Connection timed out.
    pub const ETIMEDOUT: u32 = 110;
    /// Connection refused.
    pub const ECONNREFUSED: u32 = 111;
    /// Host is down.
    pub const EHOSTDOWN: u32 = 112;
    /// No route to host.
    pub const EHOSTUNREACH: u32 = 113;
}

/// `task_struct.flags`: the task is exiting.
pub const PF_EXITING: u64 = 0x4;

/// Softirq vectors (`include/linux/interrupt.h`), as `irq:softirq_entry` names them.
pub mod softirq {
    /// TIMER_SOFTIRQ: the timer wheel (TCP's retransmission and keepalive timers).
    pub const TIMER: u8 = 1;
    /// NET_RX_SOFTIRQ: packet receive.
    pub const NET_RX: u8 = 3;
}

/// The preempt count's interrupt bits (`include/linux/preempt.h`): serving
/// a softirq (SOFTIRQ_OFFSET; the other softirq bits only count
/// local_bh_disable() in a task), in a hard irq, in an NMI. x86's top bit
/// (PREEMPT_NEED_RESCHED, inverted) stays out of the mask.
pub const PREEMPT_INTERRUPT_MASK: u32 = 0x0000_0100 | 0x000f_0000 | 0x00f0_0000;
