//! Linux constants both sides need, defined once: the kernel programs test
//! them and userspace names them. Values are kernel ABI (they never change).

/// TCP states (`include/net/tcp_states.h`), as in `skc_state`.
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

/// Bits of the TCP header's flag byte.
pub mod tcp_flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// Address families (`sa_family_t`).
pub mod af {
    pub const INET: u16 = 2;
    pub const INET6: u16 = 10;
}

pub const IPPROTO_TCP: u8 = 6;

/// The errnos a TCP connection can die with (`include/uapi/asm-generic/errno*.h`).
pub mod errno {
    pub const EACCES: u32 = 13;
    pub const EPIPE: u32 = 32;
    pub const EPROTO: u32 = 71;
    pub const EMSGSIZE: u32 = 90;
    pub const ENOPROTOOPT: u32 = 92;
    pub const ENETDOWN: u32 = 100;
    pub const ENETUNREACH: u32 = 101;
    pub const ECONNABORTED: u32 = 103;
    pub const ECONNRESET: u32 = 104;
    pub const ETIMEDOUT: u32 = 110;
    pub const ECONNREFUSED: u32 = 111;
    pub const EHOSTDOWN: u32 = 112;
    pub const EHOSTUNREACH: u32 = 113;
}

/// `task_struct.flags`: the task is exiting.
pub const PF_EXITING: u64 = 0x4;

/// Softirq vectors (`include/linux/interrupt.h`), as `irq:softirq_entry` names them.
pub mod softirq {
    pub const TIMER: u8 = 1;
    pub const NET_RX: u8 = 3;
}

/// The preempt count's interrupt bits (`include/linux/preempt.h`): serving
/// a softirq (SOFTIRQ_OFFSET; the other softirq bits only count
/// local_bh_disable() in a task), in a hard irq, in an NMI. x86's top bit
/// (PREEMPT_NEED_RESCHED, inverted) stays out of the mask.
pub const PREEMPT_INTERRUPT_MASK: u32 = 0x0000_0100 | 0x000f_0000 | 0x00f0_0000;
