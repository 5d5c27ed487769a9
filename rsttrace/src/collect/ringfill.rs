//! How full the BPF ring buffer is, read from its position pages: a reader
//! that may wait (for user frames, `--stack`) stops waiting before the
//! buffer overflows, whatever the rate of events.
//!
//! A ring buffer map's first page holds the consumer's position, the second
//! the producer's; both map read-only from the map's fd (5.8+). Each is a
//! byte count that only grows: the waiting bytes are their difference.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// One read-only page of the ring buffer's fd.
struct Page(NonNull<libc::c_void>);

impl Page {
    fn map(fd: BorrowedFd<'_>, index: usize) -> io::Result<Page> {
        let size = page_size();
        // SAFETY: a new read-only shared mapping of one page of the fd;
        // the kernel checks the offset against the map.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                (index * size) as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p)
            .map(Page)
            .ok_or_else(|| io::Error::other("mmap gave NULL"))
    }

    /// The position at the start of the page, as the kernel publishes it.
    fn position(&self) -> u64 {
        // SAFETY: the page is mapped and 8-byte aligned for as long as
        // `self` lives; the kernel updates the word atomically.
        unsafe { (*self.0.as_ptr().cast::<AtomicU64>()).load(Ordering::Acquire) }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: unmaps the page `map` mapped, once.
        unsafe { libc::munmap(self.0.as_ptr(), page_size()) };
    }
}

// SAFETY: read-only memory the kernel writes; reading it from any thread is
// what the atomic loads are for.
unsafe impl Send for Page {}
// SAFETY: as above.
unsafe impl Sync for Page {}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// The fill level of one BPF ring buffer.
pub(crate) struct RingFill {
    consumer: Page,
    producer: Page,
    capacity: u64,
}

impl RingFill {
    /// `fd`: the ring buffer map's; `capacity`: its size in bytes.
    pub(crate) fn new(fd: BorrowedFd<'_>, capacity: u64) -> io::Result<RingFill> {
        Ok(RingFill {
            consumer: Page::map(fd, 0)?,
            producer: Page::map(fd, 1)?,
            capacity: capacity.max(1),
        })
    }

    /// The share of the buffer waiting to be read, 0.0 to 1.0.
    pub(crate) fn fill(&self) -> f64 {
        let (consumer, producer) = (self.consumer.position(), self.producer.position());
        (producer.saturating_sub(consumer) as f64 / self.capacity as f64).min(1.0)
    }
}
