//! Checked reads of kernel memory and of tracepoint records. A failed read
//! is counted (`counter::READ_ERRORS`) and yields nothing, never garbage.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    programs::TracePointContext,
};
use rsttrace_ebpf::abi::{ABSENT, Field, counter};

use crate::count;

/// Loads `field` from `base`; `None` when the kernel lacks it or the read fails.
#[inline(always)]
pub(crate) fn load(base: *const u8, field: Field) -> Option<u64> {
    if field.offset == ABSENT {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one yields Err.
    let raw = unsafe {
        let p = base.add(field.offset as usize);
        match field.size {
            1 => bpf_probe_read_kernel(p).map(|v: u8| v as u64),
            2 => bpf_probe_read_kernel(p.cast::<u16>()).map(|v| v as u64),
            4 => bpf_probe_read_kernel(p.cast::<u32>()).map(|v| v as u64),
            8 => bpf_probe_read_kernel(p.cast::<u64>()),
            _ => Err(-1),
        }
    };
    match raw {
        Ok(v) if field.bit_width != 0 && field.bit_width < 64 => {
            Some((v >> field.bit_shift) & ((1u64 << field.bit_width) - 1))
        }
        Ok(v) => Some(v),
        Err(_) => {
            count(counter::READ_ERRORS);
            None
        }
    }
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
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}
