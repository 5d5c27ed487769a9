//! The task that ran the hook: its ids, name, user, cgroup and whether it
//! is exiting. Each is a helper call, and every helper returns through the
//! kernel's return thunk. Where the kernel types the current task
//! (`Tuning::current_task`) and the program's own arguments are typed
//! (`Btf`), they are loads from the task instead, each checked by the
//! verifier against the kernel's struct. Both ways read the same values:
//! global ids, the uid as the root user namespace numbers it, the cgroup
//! v2 id.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
    bpf_get_current_task_btf, bpf_get_current_uid_gid,
};
use rsttrace_ebpf::{abi::current_task, linux::PF_EXITING};

use crate::read::{Btf, Kmem, Probe, current_comm_into};

const _: () = {
    use core::mem::offset_of;
    use rsttrace_ebpf::abi::{History, Owner, RstEvent};
    assert!(align_of::<RstEvent>() >= 4 && offset_of!(RstEvent, actor_comm) % 4 == 0);
    assert!(align_of::<Owner>() >= 4 && offset_of!(Owner, comm) % 4 == 0);
    assert!(align_of::<History>() >= 4 && offset_of!(History, comm) % 4 == 0);
};

/// The current task, typed, when its facts are loads from it (`typed`);
/// else they come from helpers. Every choice tests `typed`, a load-time
/// constant to the verifier, never the pointer: to 6.1's verifier a typed
/// pointer may be null, and it walked both ways at every test.
pub(crate) struct Current {
    task: *const u8,
    typed: bool,
}

impl Current {
    #[inline(always)]
    pub(crate) fn get<M: Kmem>() -> Current {
        let typed = M::TYPED && global!(tuning.current_task) == current_task::TYPED;
        let task = if typed {
            // SAFETY: the helper has no preconditions; on kernels without
            // it `typed` is false, and the verifier never reaches the call.
            unsafe { bpf_get_current_task_btf() as *const u8 }
        } else {
            core::ptr::null()
        };
        Current { task, typed }
    }

    /// `(tgid << 32) | pid`, as `bpf_get_current_pid_tgid`.
    #[inline(always)]
    pub(crate) fn pid_tgid(&self) -> u64 {
        if !self.typed {
            return bpf_get_current_pid_tgid();
        }
        let pid = Btf::load(self.task, off!(task_pid)).unwrap_or(0);
        let tgid = Btf::load(self.task, off!(task_tgid)).unwrap_or(0);
        (tgid << 32) | pid
    }

    /// The thread's name into `out`. The bytes after its NUL are what the
    /// task's memory holds (the helper zeroes them); readers stop at the NUL.
    ///
    /// # Safety
    /// `out` must be valid for writes of 16 bytes and 4-byte aligned, as
    /// the comm fields it is given are (asserted below).
    #[inline(always)]
    pub(crate) unsafe fn comm_into(&self, out: *mut [u8; 16]) {
        if !self.typed {
            // SAFETY: the caller's promise.
            unsafe { current_comm_into(out) };
            return;
        }
        let comm = off!(task_comm);
        // SAFETY: the verifier checks each load against task_struct.comm
        // (a fault reads zero); the stores are the caller's promise.
        unsafe {
            let src = self.task.add(comm.offset() as usize).cast::<u32>();
            let dst = out.cast::<u32>();
            for i in 0..4 {
                dst.add(i).write(core::ptr::read_volatile(src.add(i)));
            }
        }
    }

    /// The real user id.
    #[inline(always)]
    pub(crate) fn uid(&self) -> u32 {
        if !self.typed {
            return bpf_get_current_uid_gid() as u32;
        }
        Btf::load(self.task, off!(task_cred))
            .and_then(|cred| Btf::load(cred as *const u8, off!(cred_uid)))
            .unwrap_or(0) as u32
    }

    /// The cgroup v2 id, as `bpf_get_current_cgroup_id`.
    #[inline(always)]
    pub(crate) fn cgroup_id(&self) -> u64 {
        if !self.typed {
            // SAFETY: the helper has no preconditions.
            return unsafe { bpf_get_current_cgroup_id() };
        }
        Btf::load(self.task, off!(task_cgroups))
            .and_then(|set| Btf::load(set as *const u8, off!(css_set_dfl_cgrp)))
            .and_then(|cgroup| Btf::load(cgroup as *const u8, off!(cgroup_kn)))
            .and_then(|kn| Btf::load(kn as *const u8, off!(kernfs_node_id)))
            .unwrap_or(0)
    }

    /// The signal the task is exiting with, if it is exiting.
    #[inline(always)]
    pub(crate) fn exit_signal(&self) -> Option<u8> {
        if self.typed {
            return exit_signal_of::<Btf>(self.task);
        }
        // SAFETY: the helper returns the current task's address, which
        // the probe reads check.
        let task = unsafe { bpf_get_current_task() } as *const u8;
        if task.is_null() {
            return None;
        }
        exit_signal_of::<Probe>(task)
    }
}

#[inline(always)]
fn exit_signal_of<M: Kmem>(task: *const u8) -> Option<u8> {
    if M::load(task, off!(task_flags)).unwrap_or(0) & PF_EXITING == 0 {
        return None;
    }
    Some((M::load(task, off!(task_exit_code)).unwrap_or(0) & 0x7f) as u8)
}
