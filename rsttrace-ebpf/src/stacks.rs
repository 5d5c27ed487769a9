//! `--stack`: the kernel stack always; the user stack only where the
//! socket's own process ran the code (close(), shutdown(), setsockopt()),
//! which is where the application's decision lives.
//!
//! A stack walk costs the RST's own path microseconds, so each CPU has a
//! budget of events with stacks per window (`Tuning::stacks_per_window`):
//! in a storm of RSTs the first of each window carry stacks, the rest are
//! sent without, flagged and counted, never dropped.

use core::{
    ffi::c_void,
    ptr::{addr_of, addr_of_mut},
};

use aya_ebpf::helpers::{bpf_get_current_task_btf, bpf_get_stackid, bpf_task_pt_regs, generated};
use rsttrace_ebpf::abi::{
    ABSENT, Owner, RstEvent, STACK_BUDGET_WINDOW_NS, USER_STACK_TOP_WORDS, context, counter, flag,
    stacks,
};

use crate::{STACK_BUDGET, STACKS, count};

const BPF_F_USER_STACK: u64 = 1 << 8;

#[inline(always)]
pub(crate) fn capture_stacks(ctx: *mut c_void, owner: *const Owner, ev: &mut RstEvent) {
    ev.kernel_stack_id = -1;
    ev.user_stack_id = -1;
    let wanted = global!(tuning.stacks);
    if wanted == 0 {
        return;
    }
    if !within_budget(ev.ts_ns) {
        ev.flags |= flag::STACK_SKIPPED;
        count(counter::STACKS_SKIPPED);
        return;
    }
    let map = addr_of!(STACKS) as *mut c_void;
    if wanted & stacks::KERNEL != 0 {
        // SAFETY: ctx is the program's context, map the stack map.
        let id = unsafe { bpf_get_stackid(ctx, map, 0) };
        if id < 0 {
            count(counter::STACK_ERRORS);
        } else {
            ev.kernel_stack_id = id as i32;
        }
    }
    // SAFETY: map value, valid for this run of the program.
    let owner_ran_it = ev.context == context::TASK
        && (owner.is_null() || unsafe { (*owner).tgid } == ev.actor_tgid);
    if wanted & stacks::USER != 0 && owner_ran_it {
        // SAFETY: as above.
        let id = unsafe { bpf_get_stackid(ctx, map, BPF_F_USER_STACK) };
        if id < 0 {
            count(counter::STACK_ERRORS);
        } else {
            ev.user_stack_id = id as i32;
            read_user_stack_top(ev);
        }
    }
}

/// Whether this CPU may take one more event's stacks at `now`. A program
/// nested into another's update may count once too few: harmless.
fn within_budget(now: u64) -> bool {
    let per_window = global!(tuning.stacks_per_window);
    if per_window == 0 {
        return true;
    }
    let (Some(start), Some(taken)) = (STACK_BUDGET.get_ptr_mut(0), STACK_BUDGET.get_ptr_mut(1))
    else {
        return true;
    };
    // SAFETY: per-CPU slots, valid for this run of the program.
    unsafe {
        if now.wrapping_sub(*start) >= STACK_BUDGET_WINDOW_NS {
            *start = now;
            *taken = 0;
        }
        if *taken >= u64::from(per_window) {
            return false;
        }
        *taken += 1;
    }
    true
}

/// Copies the words at the user stack pointer saved on syscall entry. The
/// frame-pointer walk misses the caller of a frameless wrapper such as
/// libc's close(): its return address is on the stack, not behind a saved
/// frame pointer. Userspace finds it there with the wrapper's unwind info.
/// (Reached only with `--stack`, so older kernels without these helpers
/// still load the programs: the verifier prunes the branch.)
fn read_user_stack_top(ev: &mut RstEvent) {
    // Few branches on purpose: this runs inside every event path, and each
    // branch multiplies the states the verifier walks.
    let offset = off!(pt_regs_sp).offset();
    if offset == ABSENT {
        return;
    }
    // SAFETY: the helpers take the current task, whose user registers stay
    // valid while it runs this syscall; both reads are checked by the kernel
    // (a failed one zeroes its destination).
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        let mut sp = 0u64;
        generated::bpf_probe_read_kernel(
            addr_of_mut!(sp).cast(),
            8,
            regs.add(offset as usize).cast(),
        );
        generated::bpf_probe_read_user(
            addr_of_mut!(ev.user_stack_top).cast(),
            (8 * USER_STACK_TOP_WORDS) as u32,
            sp as *const c_void,
        );
    }
}
