//! Checked reads of kernel memory and of tracepoint records. A failed read
//! is counted (`counter::READ_ERRORS`) and yields nothing, never garbage.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel_buf,
        generated::{
            bpf_get_current_comm as bpf_get_current_comm_raw,
            bpf_probe_read_kernel as bpf_probe_read_kernel_raw, bpf_skc_to_tcp_sock,
            bpf_skc_to_tcp_timewait_sock,
        },
    },
    programs::TracePointContext,
};
use rsttrace_ebpf::abi::{ABSENT, Field, counter};

use crate::count;

/// A `Field` of `OFFSETS` (`off!`), its members read where they are used.
/// The verifier knows every value and drops each jump that tests one
/// against a constant, but not the instructions that computed a tested
/// value: a read of the whole struct, or a test of a value derived from
/// it, costs instructions on every field read.
#[derive(Clone, Copy)]
pub(crate) struct FieldRef(*const Field);

impl FieldRef {
    #[inline(always)]
    pub(crate) fn of(field: *const Field) -> FieldRef {
        FieldRef(field)
    }

    #[inline(always)]
    pub(crate) fn offset(self) -> u32 {
        // SAFETY: a pointer into `OFFSETS`; volatile, because the loader
        // rewrites the values after compilation (see `offsets()`).
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*self.0).offset)) }
    }

    /// `size`, `bit_shift`, `bit_width` and the zero `_pad` as one
    /// little-endian word: a whole integer's is its size alone (1, 2, 4,
    /// 8; 16 for an address), an absent field's 0.
    #[inline(always)]
    pub(crate) fn meta(self) -> u32 {
        const {
            use core::mem::offset_of;
            assert!(offset_of!(Field, size) == 4 && offset_of!(Field, bit_shift) == 5);
            assert!(offset_of!(Field, bit_width) == 6 && offset_of!(Field, _pad) == 7);
        };
        // SAFETY: as `offset`; the four bytes from `size` on, 4-aligned.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*self.0).size).cast::<u32>()) }
    }
}

/// The members of a field's meta word (`FieldRef::meta`).
mod meta {
    pub(super) const fn size(meta: u32) -> u32 {
        meta & 0xff
    }

    /// The bitfield in `value` (the load's), or all of it when the field
    /// is none.
    #[inline(always)]
    pub(super) fn bits(meta: u32, value: u64) -> u64 {
        let (shift, width) = ((meta >> 8) & 0xff, (meta >> 16) & 0xff);
        if width == 0 || width >= 64 {
            return value;
        }
        (value >> shift) & ((1u64 << width) - 1)
    }
}

/// Loads `field` from `base`; `None` when the kernel lacks it or the read fails.
#[inline(always)]
pub(crate) fn load(base: *const u8, field: FieldRef) -> Option<u64> {
    let meta = field.meta();
    let size = meta::size(meta);
    if size == 0 || size > 8 {
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
            size,
            base.wrapping_add(field.offset() as usize).cast(),
        )
    };
    if ret != 0 {
        count(counter::READ_ERRORS);
        return None;
    }
    Some(meta::bits(meta, value))
}

/// A direct load of `size` bytes at `p`; None for another size.
///
/// # Safety
/// `p` must be a pointer the verifier allows loads of that size from.
#[inline(always)]
unsafe fn load_sized(p: *const u8, size: u32) -> Option<u64> {
    // SAFETY: the caller's promise.
    unsafe {
        Some(match size {
            1 => core::ptr::read_volatile(p) as u64,
            2 => core::ptr::read_volatile(p.cast::<u16>()) as u64,
            4 => core::ptr::read_volatile(p.cast::<u32>()) as u64,
            8 => core::ptr::read_volatile(p.cast::<u64>()),
            _ => return None,
        })
    }
}

pub(crate) fn read_bytes<const N: usize>(base: *const u8, field: FieldRef, out: &mut [u8; N]) {
    if field.meta() == 0 {
        return;
    }
    // SAFETY: bpf_probe_read_kernel_buf checks the address.
    if unsafe { bpf_probe_read_kernel_buf(base.wrapping_add(field.offset() as usize), out) }
        .is_err()
    {
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

/// `zeroed!(name: T)` declares `name: &mut T`, a zeroed `T` on the stack,
/// where `T` is plain integers and arrays of them. `Default` or `[0; N]`
/// becomes a call to the byte-loop `memset` builtin, and so does a zeroed
/// value moved into place: LLVM copies known zeroes with `memset`. So the
/// value is zeroed where it lives (`zero_on_stack`), and borrowed.
macro_rules! zeroed {
    ($name:ident: $ty:ty) => {
        let mut $name = core::mem::MaybeUninit::<$ty>::uninit();
        // SAFETY: `zero_on_stack` writes every byte, and zeroes are a
        // valid `$ty` (the macro's contract).
        let $name = unsafe {
            crate::read::zero_on_stack($name.as_mut_ptr());
            $name.assume_init_mut()
        };
    };
}

/// A zero the verifier cannot know: a word of `.bss`, a map nothing writes.
#[unsafe(no_mangle)]
static mut UNKNOWN_ZERO: u32 = 0;

/// Zeroes `*p` with stores of `UNKNOWN_ZERO`. Unlike stores of the constant
/// zero, they leave the bytes unknown to the verifier: known zeroes are
/// values it would track along every path. (A helper call, as a failed
/// read that zeroes its destination, costs a call, a return and a memset.)
///
/// # Safety
/// `p` must be valid for writes of a `T`.
#[inline(always)]
pub(crate) unsafe fn zero_on_stack<T>(p: *mut T) {
    // SAFETY: `UNKNOWN_ZERO` is a plain word that nothing writes.
    let zero = unsafe { core::ptr::read_volatile(&raw const UNKNOWN_ZERO) };
    if align_of::<T>() >= 4 && size_of::<T>() % 4 == 0 {
        let words = p.cast::<u32>();
        for i in 0..size_of::<T>() / 4 {
            // SAFETY: in bounds of `*p` (the caller's promise), and aligned.
            unsafe { core::ptr::write_volatile(words.add(i), zero) };
        }
    } else {
        let bytes = p.cast::<u8>();
        for i in 0..size_of::<T>() {
            // SAFETY: in bounds of `*p` (the caller's promise).
            unsafe { core::ptr::write_volatile(bytes.add(i), zero as u8) };
        }
    }
}

/// A task name copied between records as two words: `=` on `[u8; 16]`
/// is a call to the byte-loop `memmove` builtin.
///
/// # Safety
/// `dst` and `src` must be 8-byte aligned, as the comm fields of `Owner`,
/// `History` and `RstEvent` are (asserted here).
#[inline(always)]
pub(crate) unsafe fn copy_comm(dst: &mut [u8; 16], src: &[u8; 16]) {
    const {
        use core::mem::offset_of;
        use rsttrace_ebpf::abi::{History, Owner, RstEvent};
        assert!(align_of::<Owner>() >= 8 && offset_of!(Owner, comm) % 8 == 0);
        assert!(align_of::<History>() >= 8 && offset_of!(History, comm) % 8 == 0);
        assert!(align_of::<RstEvent>() >= 8);
        assert!(offset_of!(RstEvent, owner_comm) % 8 == 0);
        assert!(offset_of!(RstEvent, hist_comm) % 8 == 0);
    };
    let (d, s) = (dst.as_mut_ptr().cast::<u64>(), src.as_ptr().cast::<u64>());
    // SAFETY: both are 16 bytes and 8-byte aligned (the caller's promise).
    unsafe {
        d.write(s.read());
        d.add(1).write(s.add(1).read());
    }
}

/// The current task's name, by its helper (which zeroes `out` when it
/// fails), into memory that may be uninitialised. aya's wrapper returns a
/// fresh array, which LLVM zeroes with `memset`.
///
/// # Safety
/// `out` must be valid for writes of 16 bytes.
#[inline(always)]
pub(crate) unsafe fn current_comm_into(out: *mut [u8; 16]) {
    // SAFETY: the helper writes all 16 bytes (zeroes when it fails).
    unsafe { bpf_get_current_comm_raw(out.cast(), 16) };
}

/// How a program reads the socket its hook was given, and the objects
/// reached from it. A tp_btf or fentry program's socket argument is typed
/// by the kernel's BTF: the verifier checks each load against the
/// kernel's struct (the offsets are constants to it, from the frozen
/// .rodata) and a read is one instruction. A kprobe's or a classic
/// tracepoint's is a plain number, read by bpf_probe_read_kernel, a
/// helper call each. The shared code is generic over the two.
pub(crate) trait Kmem {
    /// `field` of the object at `base`, as `load`.
    fn load(base: *const u8, field: FieldRef) -> Option<u64>;
    /// A 16-byte field (an IPv6 address), left as is when absent.
    fn bytes(base: *const u8, field: FieldRef, out: &mut [u8; 16]);
    /// The socket as a `tcp_sock`, for members past `struct sock`; null
    /// when it is not a full TCP socket (typed reads only check this).
    fn full(sk: *const u8) -> *const u8;
    /// The socket as a `tcp_timewait_sock`; null when it is not one.
    fn timewait(sk: *const u8) -> *const u8;
    /// Whether the hook's own arguments are typed: then so may be the
    /// current task (`current.rs`).
    const TYPED: bool;
}

/// Reads through bpf_probe_read_kernel: any pointer.
pub(crate) enum Probe {}

/// Direct loads: only for pointers the verifier knows the BTF type of.
pub(crate) enum Btf {}

impl Kmem for Probe {
    const TYPED: bool = false;

    #[inline(always)]
    fn load(base: *const u8, field: FieldRef) -> Option<u64> {
        load(base, field)
    }

    #[inline(always)]
    fn bytes(base: *const u8, field: FieldRef, out: &mut [u8; 16]) {
        read_bytes(base, field, out);
    }

    #[inline(always)]
    fn full(sk: *const u8) -> *const u8 {
        sk
    }

    #[inline(always)]
    fn timewait(sk: *const u8) -> *const u8 {
        sk
    }
}

impl Kmem for Btf {
    const TYPED: bool = true;

    #[inline(always)]
    fn load(base: *const u8, field: FieldRef) -> Option<u64> {
        let p = base.wrapping_add(field.offset() as usize);
        // A whole integer's meta word is its size: one load, and jumps on
        // it against constants, which the verifier drops. A bitfield's,
        // or an absent field's (0), takes the other arm.
        // SAFETY: the verifier checks each access against the kernel's
        // BTF, and a fault reads zero.
        unsafe {
            match field.meta() {
                meta @ (1 | 2 | 4 | 8) => load_sized(p, meta),
                meta => load_sized(p, meta::size(meta)).map(|v| meta::bits(meta, v)),
            }
        }
    }

    #[inline(always)]
    fn bytes(base: *const u8, field: FieldRef, out: &mut [u8; 16]) {
        if field.meta() == 0 {
            return;
        }
        // SAFETY: as in `load`; an address is two 8-byte words.
        let (lo, hi) = unsafe {
            let p = base.wrapping_add(field.offset() as usize).cast::<u64>();
            (
                core::ptr::read_volatile(p),
                core::ptr::read_volatile(p.add(1)),
            )
        };
        out[..8].copy_from_slice(&lo.to_ne_bytes());
        out[8..].copy_from_slice(&hi.to_ne_bytes());
    }

    #[inline(always)]
    fn full(sk: *const u8) -> *const u8 {
        // SAFETY: the helper checks the socket it is given.
        unsafe { bpf_skc_to_tcp_sock(sk as *mut c_void) as *const u8 }
    }

    #[inline(always)]
    fn timewait(sk: *const u8) -> *const u8 {
        // SAFETY: as above.
        unsafe { bpf_skc_to_tcp_timewait_sock(sk as *mut c_void) as *const u8 }
    }
}
