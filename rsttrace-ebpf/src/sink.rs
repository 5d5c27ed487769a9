//! Where every record goes: the `EVENTS` map, behind one reserve/submit
//! interface so that each emitter (RSTs, aborts, packets) is written once.
//!
//! Two builds of this crate share it (userspace embeds both objects):
//! - default: a BPF ring buffer (5.8+). Records are written in place;
//!   `Tuning.wakeup_bytes` batches the reader's wake-ups.
//! - feature `perf`: a perf event array, for kernels without the ring
//!   buffer (a RingBuf map cannot even be created there). Records are built
//!   in a per-CPU scratch slot and copied out by `bpf_perf_event_output`;
//!   the perf buffer's watermark, set by userspace when it opens it, does
//!   the batching.
//!
//! A record that cannot be delivered counts `lost` (the caller's counter).

use core::ffi::c_void;

use crate::count;

#[cfg(not(feature = "perf"))]
pub(crate) use ring::reserve;

#[cfg(feature = "perf")]
pub(crate) use perf::reserve;

#[cfg(not(feature = "perf"))]
mod ring {
    use aya_ebpf::{
        bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
        helpers::bpf_ktime_get_ns,
        macros::map,
        maps::{PerCpuArray, RingBuf, ring_buf::RingBufEntry},
    };

    use super::*;

    /// Default 4 MiB; userspace resizes it (`--ring-buffer`).
    #[map]
    static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

    /// Per CPU: when it last woke the reader (`paced_wake`).
    #[map]
    static LAST_WAKE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    pub(crate) struct Entry<T: 'static>(RingBufEntry<T>);

    /// A slot for one `T`, or None (counted in `lost`) when the buffer is full.
    pub(crate) fn reserve<T: 'static>(_ctx: *mut c_void, lost: u32) -> Option<Entry<T>> {
        match EVENTS.reserve::<T>(0) {
            Some(entry) => Some(Entry(entry)),
            None => {
                count(lost);
                None
            }
        }
    }

    /// Whether this record wakes the reader: once the waiting data is at
    /// the threshold, one record in every `STRIDE` bytes does, not every
    /// record (a wake-up is a self-IPI, an exit to the hypervisor in a VM,
    /// and a reader already at work needs none). Not only the record that
    /// crosses the threshold: a wake-up that lands while the reader is
    /// clearing its readiness after seeing the buffer empty is lost, and
    /// the next stride repeats it rather than leaving the buffer to fill
    /// until the drain timer.
    fn wakes(avail: u64, threshold: u64) -> bool {
        const STEP: u64 = (size_of::<rsttrace_ebpf::abi::RstEvent>() as u64 + 8 + 7) & !7;
        const STRIDE: u64 = 64 * STEP;
        avail >= threshold && (avail - threshold) % STRIDE < STEP
    }

    /// Whether an urgent record (`submit`) wakes the reader now: at most
    /// once every `wakeup_gap_ns` on this CPU. The kernel's own rule would
    /// wake a reader that keeps up on every record, and each wake-up is a
    /// self-IPI: in a VM an exit to the hypervisor, microseconds of the
    /// workload's time per event.
    fn paced_wake_due() -> bool {
        let gap = global!(tuning.wakeup_gap_ns);
        let Some(last) = LAST_WAKE.get_ptr_mut(0).filter(|_| gap != 0) else {
            return false;
        };
        // SAFETY: the helper has no preconditions; a per-CPU slot.
        unsafe {
            let now = bpf_ktime_get_ns();
            if now.wrapping_sub(*last) < gap {
                return false;
            }
            *last = now;
        }
        true
    }

    impl<T: 'static> Entry<T> {
        pub(crate) fn as_mut_ptr(&mut self) -> *mut T {
            self.0.as_mut_ptr()
        }

        /// Publishes the record; true when it reached the buffer. An
        /// `urgent` one (`Tuning::wakeup_gap_ns`) wakes the reader at once
        /// when this CPU's last such wake-up is a gap ago; every other one
        /// follows `Tuning::wakeup_bytes`.
        pub(crate) fn submit(self, urgent: bool) -> bool {
            let wakeup_bytes = global!(tuning.wakeup_bytes);
            let wake = if urgent && paced_wake_due() {
                BPF_RB_FORCE_WAKEUP as u64
            } else if wakeup_bytes == 0 {
                0
            } else if wakes(EVENTS.query(BPF_RB_AVAIL_DATA as u64), wakeup_bytes) {
                BPF_RB_FORCE_WAKEUP as u64
            } else {
                BPF_RB_NO_WAKEUP as u64
            };
            self.0.submit(wake);
            true
        }
    }
}

#[cfg(feature = "perf")]
mod perf {
    use core::marker::PhantomData;

    use aya_ebpf::{
        bindings::BPF_F_CURRENT_CPU,
        helpers::generated::bpf_perf_event_output,
        macros::map,
        maps::{PerCpuArray, PerfEventByteArray},
    };
    use rsttrace_ebpf::abi::{PacketRecord, RstEvent};

    use super::*;

    /// One perf buffer per CPU, opened and attached by userspace.
    #[map]
    static EVENTS: PerfEventByteArray = PerfEventByteArray::new(0);

    /// Scratch slots: programs nest on a CPU (a softirq interrupts a
    /// task's hook mid-record; raw and BTF tracepoints have no recursion
    /// guard), so each level of nesting gets its own.
    const NEST: u32 = 3;
    const SCRATCH_BYTES: usize = max(size_of::<RstEvent>(), size_of::<PacketRecord>());

    const fn max(a: usize, b: usize) -> usize {
        if a > b { a } else { b }
    }

    #[repr(C, align(8))]
    pub(crate) struct Scratch([u8; SCRATCH_BYTES]);

    #[map]
    static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(NEST, 0);
    /// Per CPU: the nesting level, i.e. the next free scratch slot.
    #[map]
    static DEPTH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

    pub(crate) struct Entry<T> {
        ctx: *mut c_void,
        slot: *mut T,
        depth: *mut u32,
        level: u32,
        lost: u32,
        _record: PhantomData<T>,
    }

    /// This nesting level's scratch slot, or None (counted in `lost`)
    /// when nested deeper than `NEST`.
    pub(crate) fn reserve<T: 'static>(ctx: *mut c_void, lost: u32) -> Option<Entry<T>> {
        const { assert!(size_of::<T>() <= SCRATCH_BYTES) };
        let depth = DEPTH.get_ptr_mut(0)?;
        // SAFETY: a per-CPU map value. A program that interrupts this one
        // between the load and the store takes the same level and releases
        // it before this one resumes, so no two live records share a slot.
        let level = unsafe { *depth };
        let Some(slot) = SCRATCH.get_ptr_mut(level) else {
            count(lost);
            return None;
        };
        // SAFETY: as above.
        unsafe { *depth = level + 1 };
        Some(Entry {
            ctx,
            slot: slot.cast(),
            depth,
            level,
            lost,
            _record: PhantomData,
        })
    }

    impl<T> Entry<T> {
        pub(crate) fn as_mut_ptr(&mut self) -> *mut T {
            self.slot
        }

        /// Copies the record into this CPU's perf buffer and frees the slot;
        /// true when it got there. A full buffer fails the helper (counted
        /// here, on kernels whose helper passes perf's error on) and leaves
        /// a lost-samples record that userspace counts too; it keeps
        /// whichever total is larger. `urgent` is for the ring buffer: a
        /// perf buffer's watermark wakes the reader for every record alike
        /// (with `--stack`, userspace sets it to wake on each one).
        pub(crate) fn submit(self, _urgent: bool) -> bool {
            // SAFETY: ctx is the program's context, EVENTS a perf event
            // array, and `slot` holds size_of::<T>() initialised bytes.
            let ret = unsafe {
                bpf_perf_event_output(
                    self.ctx,
                    core::ptr::addr_of!(EVENTS) as *mut c_void,
                    BPF_F_CURRENT_CPU,
                    self.slot.cast(),
                    size_of::<T>() as u64,
                )
            };
            // SAFETY: the per-CPU slot reserve() took the level from.
            unsafe { *self.depth = self.level };
            if ret != 0 {
                count(self.lost);
            }
            ret == 0
        }
    }
}
