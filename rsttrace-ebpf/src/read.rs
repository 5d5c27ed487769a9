//! Checked reads of kernel memory and of tracepoint records. A failed read
//! is counted (`counter::READ_ERRORS`) and yields nothing, never garbage.

use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel_buf, generated::bpf_probe_read_kernel as bpf_probe_read_kernel_raw,
    },
    programs::TracePointContext,
};
use rsttrace_ebpf::abi::{ABSENT, Field, counter};

use crate::count;

/// Loads `field` from `base`; `None` when the kernel lacks it or the read fails.
#[inline(always)]
pub(crate) fn load(base: *const u8, field: Field) -> Option<u64> {
    if field.offset == ABSENT || field.size == 0 || field.size > 8 {
        return None;
    }
    // Zeroed, and read in place whatever the size (little-endian): one
    // helper call instead of a branch per size, and no path on which the
    // compiler carries an uninitialised value the verifier rejects.
    let mut value = 0u64;
    // SAFETY: bpf_probe_read_kernel checks the address; `value` has room
    // for `size` (at most 8) bytes.
    let ret = unsafe {
        bpf_probe_read_kernel_raw(
            (&mut value as *mut u64).cast(),
            field.size as u32,
            base.add(field.offset as usize).cast(),
        )
    };
    if ret != 0 {
        count(counter::READ_ERRORS);
        return None;
    }
    if field.bit_width != 0 && field.bit_width < 64 {
        value = (value >> field.bit_shift) & ((1u64 << field.bit_width) - 1);
    }
    Some(value)
}

pub(crate) fn read_bytes<const N: usize>(base: *const u8, field: Field, out: &mut [u8; N]) {
    if field.offset == ABSENT {
        return;
    }
    // SAFETY: bpf_probe_read_kernel_buf checks the address.
    if unsafe { bpf_probe_read_kernel_buf(base.add(field.offset as usize), out) }.is_err() {
        count(counter::READ_ERRORS);
    }
}

/// A field of a classic tracepoint's record, at an offset from its tracefs format.
pub(crate) fn read_ctx<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == ABSENT {
        return None;
    }
    // SAFETY: the offset comes from the tracepoint's own format file.
    let value = unsafe { ctx.read_at::<T>(offset as usize) };
    if value.is_err() {
        count(counter::CONTEXT_ERRORS);
    }
    value.ok()
}

/// Zeroes a record in the ring buffer with one 8-byte store per word.
/// `write_bytes` becomes a call to the `memset` builtin, a byte loop in a
/// subprogram of its own: about a tenth of the programs' time in a storm.
/// Volatile stores, so that LLVM does not turn the loop back into memset.
///
/// # Safety
/// `p` must be valid for writes of a `T`.
#[inline(always)]
pub(crate) unsafe fn zero<T>(p: *mut T) {
    const { assert!(size_of::<T>() % 8 == 0 && align_of::<T>() >= 8) };
    let words = p.cast::<u64>();
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: in bounds of `*p` (the caller's promise), and aligned.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
}
