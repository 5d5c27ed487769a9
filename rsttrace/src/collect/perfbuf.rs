//! The perf transport's buffers: one perf ring per CPU, attached to the
//! object's `EVENTS` perf event array, read through one epoll fd.
//!
//! aya's `PerfEventArray::open` wakes the reader on every sample; this opens
//! the buffers itself to set a watermark instead (the batching the ring
//! buffer transport gets from `Tuning.wakeup_bytes`), and counts the
//! kernel's lost-samples records.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::MapData;
use aya_obj::generated::{
    PERF_EVENT_IOC_ENABLE, PERF_FLAG_FD_CLOEXEC, bpf_attr, bpf_cmd, perf_event_attr,
    perf_event_header, perf_event_mmap_page,
    perf_event_sample_format::PERF_SAMPLE_RAW,
    perf_event_type::{PERF_RECORD_LOST, PERF_RECORD_SAMPLE},
    perf_sw_ids::PERF_COUNT_SW_BPF_OUTPUT,
    perf_type_id::PERF_TYPE_SOFTWARE,
};
use rsttrace_ebpf::abi::{PacketRecord, RstEvent};

pub(crate) struct PerfBuffers {
    /// The perf event array, kept open with the buffers it points at.
    _map: MapData,
    cpus: Vec<CpuBuffer>,
    epoll: OwnedFd,
    /// Samples the kernel could not write, from its lost-samples records.
    lost: u64,
    /// Where a record that wraps around the end of its ring is reassembled.
    wrapped: Vec<u8>,
    /// One drain's records, copied out of the rings to be put in time order.
    batch: Vec<u8>,
    /// (time, start, length) of each record in `batch`.
    spans: Vec<(u64, usize, usize)>,
    /// The CPU the next drain starts at, so that one busy CPU cannot keep
    /// the others waiting behind its batch limit.
    next: usize,
}

impl PerfBuffers {
    /// Opens `bytes` (a power-of-two number of pages) per online CPU, with
    /// a wake-up once `wakeup_bytes` are waiting (0: on every sample).
    pub(crate) fn open(map: MapData, bytes: usize, wakeup_bytes: u64) -> io::Result<PerfBuffers> {
        let cpus = aya::util::online_cpus().map_err(|(path, e)| {
            io::Error::new(e.kind(), format!("reading online CPUs from {path}: {e}"))
        })?;
        // SAFETY: plain syscall; the fd is owned right away.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        let mut buffers = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let buf = CpuBuffer::open(cpu, bytes, wakeup_bytes)?;
            map_update(map.fd().as_fd().as_raw_fd(), cpu, buf.fd.as_raw_fd())?;
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: u64::from(cpu),
            };
            // SAFETY: both fds are open; `ev` lives through the call.
            if unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    buf.fd.as_raw_fd(),
                    &mut ev,
                )
            } != 0
            {
                return Err(io::Error::last_os_error());
            }
            buffers.push(buf);
        }
        Ok(PerfBuffers {
            _map: map,
            cpus: buffers,
            epoll,
            lost: 0,
            wrapped: Vec::new(),
            batch: Vec::new(),
            spans: Vec::new(),
            next: 0,
        })
    }

    /// Hands up to `limit` samples to `each`, in time order; says whether
    /// every buffer was seen empty.
    ///
    /// Each CPU's ring is in time order, the rings together are not (the
    /// ring buffer transport's one ring is): a drain's records are sorted
    /// by their time before they are handed on. A record that a CPU wrote
    /// before the last drain's but that missed it still arrives late.
    pub(crate) fn drain(&mut self, mut each: impl FnMut(&[u8]), limit: usize) -> (usize, bool) {
        self.consume_wakeups();
        self.batch.clear();
        self.spans.clear();
        let (batch, spans) = (&mut self.batch, &mut self.spans);
        let mut keep = |record: &[u8]| {
            spans.push((record_time(record), batch.len(), record.len()));
            batch.extend_from_slice(record);
        };
        let mut n = 0;
        let mut empty = true;
        let count = self.cpus.len();
        for i in 0..count {
            let cpu = &mut self.cpus[(self.next + i) % count];
            let (read, drained) =
                cpu.drain(&mut keep, limit - n, &mut self.lost, &mut self.wrapped);
            n += read;
            empty &= drained;
            if n == limit {
                self.next = (self.next + i + 1) % count;
                empty = false;
                break;
            }
        }
        self.spans.sort_by_key(|&(time, _, _)| time);
        for &(_, start, len) in &self.spans {
            each(&self.batch[start..start + len]);
        }
        (n, empty)
    }

    /// Samples lost so far (the kernel's lost-samples records).
    pub(crate) fn lost(&self) -> u64 {
        self.lost
    }

    /// Empties the epoll ready list, so that the epoll fd reads as ready
    /// again only for new wake-ups.
    fn consume_wakeups(&self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 16];
        loop {
            // SAFETY: `events` has room for the count passed.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    0,
                )
            };
            if n < events.len() as i32 {
                return;
            }
        }
    }
}

impl AsRawFd for PerfBuffers {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

struct CpuBuffer {
    fd: OwnedFd,
    /// The mapping: one metadata page, then `size` bytes of ring.
    base: *mut u8,
    len: usize,
    size: usize,
}

// SAFETY: the mapping belongs to this value alone; nothing in it is tied to
// the thread that created it.
unsafe impl Send for CpuBuffer {}

impl CpuBuffer {
    fn open(cpu: u32, size: usize, wakeup_bytes: u64) -> io::Result<CpuBuffer> {
        let page = page_size();
        if size < page || !size.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("perf buffer of {size} bytes is not a power-of-two number of pages"),
            ));
        }
        // SAFETY: all-zero is a valid perf_event_attr.
        let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
        attr.type_ = PERF_TYPE_SOFTWARE as u32;
        attr.config = PERF_COUNT_SW_BPF_OUTPUT as u64;
        attr.size = size_of::<perf_event_attr>() as u32;
        attr.sample_type = PERF_SAMPLE_RAW as u64;
        attr.__bindgen_anon_1.sample_period = 1;
        if wakeup_bytes == 0 {
            attr.__bindgen_anon_2.wakeup_events = 1;
        } else {
            attr.set_watermark(1);
            attr.__bindgen_anon_2.wakeup_watermark = wakeup_bytes.min(size as u64 / 2) as u32;
        }
        // SAFETY: `attr` is a valid attribute of the size it declares.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                std::ptr::addr_of!(attr),
                -1,
                cpu as libc::c_int,
                -1,
                PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("perf_event_open on CPU {cpu}: {e}"),
            ));
        }
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let len = page + size;
        // SAFETY: maps the perf buffer of an open perf fd, shared.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "mapping {len} bytes of perf buffer on CPU {cpu} (RLIMIT_MEMLOCK, \
                     perf_event_mlock_kb): {e}"
                ),
            ));
        }
        let buffer = CpuBuffer {
            fd,
            base: base.cast(),
            len,
            size,
        };
        // SAFETY: an ioctl without argument on our perf fd.
        if unsafe { libc::ioctl(buffer.fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(buffer)
    }

    fn head(&self) -> &AtomicU64 {
        let page = self.base.cast::<perf_event_mmap_page>();
        // SAFETY: the metadata page is mapped for as long as `self`; the
        // kernel writes data_head, only we write data_tail, both aligned u64.
        unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*page).data_head)) }
    }

    fn tail(&self) -> &AtomicU64 {
        let page = self.base.cast::<perf_event_mmap_page>();
        // SAFETY: as in `head`.
        unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*page).data_tail)) }
    }

    fn ring(&self) -> &[u8] {
        // SAFETY: the ring follows the metadata page and is mapped for as
        // long as `self`. The kernel writes only between data_head and
        // data_tail (our part is stable until data_tail moves past it).
        unsafe { std::slice::from_raw_parts(self.base.add(self.len - self.size), self.size) }
    }

    fn drain(
        &mut self,
        each: &mut impl FnMut(&[u8]),
        limit: usize,
        lost: &mut u64,
        wrapped: &mut Vec<u8>,
    ) -> (usize, bool) {
        let head = self.head().load(Ordering::Acquire);
        let mut tail = self.tail().load(Ordering::Relaxed);
        let ring = self.ring();
        let mut n = 0;
        while tail < head && n < limit {
            let at = (tail as usize) & (self.size - 1);
            // Records are 8-byte aligned: a header never wraps.
            let header: perf_event_header =
                // SAFETY: 8 readable bytes at `at`; any bits are a valid header.
                unsafe { std::ptr::read_unaligned(ring[at..at + 8].as_ptr().cast()) };
            let len = usize::from(header.size);
            if len < size_of::<perf_event_header>() || (head - tail) < len as u64 {
                // Corrupt: skip what is there rather than loop on it.
                log::warn!("perf buffer record of {len} bytes is malformed; skipping the buffer");
                tail = head;
                break;
            }
            let record: &[u8] = if at + len <= self.size {
                &ring[at..at + len]
            } else {
                wrapped.clear();
                wrapped.extend_from_slice(&ring[at..]);
                wrapped.extend_from_slice(&ring[..len - (self.size - at)]);
                wrapped
            };
            match header.type_ {
                t if t == PERF_RECORD_SAMPLE as u32 => {
                    if let Some(sample) = raw_sample(record) {
                        each(sample);
                        n += 1;
                    }
                }
                t if t == PERF_RECORD_LOST as u32 => *lost += lost_count(record),
                _ => {}
            }
            tail += len as u64;
        }
        self.tail().store(tail, Ordering::Release);
        (n, tail >= head)
    }
}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// Where every record kind keeps its `bpf_ktime_get_ns()` time.
const TIME_OFFSET: usize = std::mem::offset_of!(RstEvent, ts_ns);
const _: () = assert!(std::mem::offset_of!(PacketRecord, ts_ns) == TIME_OFFSET);

/// A record's time; 0 (first) for one too short to have it, which the
/// decoder rejects anyway.
fn record_time(record: &[u8]) -> u64 {
    record
        .get(TIME_OFFSET..TIME_OFFSET + 8)
        .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
}

/// A PERF_SAMPLE_RAW sample: header, u32 size, the bytes (padded to 8).
fn raw_sample(record: &[u8]) -> Option<&[u8]> {
    let size = u32::from_ne_bytes(record.get(8..12)?.try_into().ok()?) as usize;
    record.get(12..12 + size)
}

/// PERF_RECORD_LOST: header, u64 id, u64 lost.
fn lost_count(record: &[u8]) -> u64 {
    record
        .get(16..24)
        .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
}

/// `BPF_MAP_UPDATE_ELEM` of the perf event array: CPU → its perf fd.
/// (aya keeps its own update for this map type private.)
fn map_update(map_fd: RawFd, cpu: u32, perf_fd: RawFd) -> io::Result<()> {
    let value = perf_fd as u32;
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: `attr` points at key and value, which live through the call.
    let rc = unsafe {
        attr.__bindgen_anon_2.map_fd = map_fd as u32;
        attr.__bindgen_anon_2.key = std::ptr::addr_of!(cpu) as u64;
        attr.__bindgen_anon_2.__bindgen_anon_1.value = std::ptr::addr_of!(value) as u64;
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_MAP_UPDATE_ELEM as libc::c_int,
            std::ptr::addr_of_mut!(attr),
            size_of::<bpf_attr>() as u32,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("attaching CPU {cpu}'s perf buffer: {e}"),
        ));
    }
    Ok(())
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u32, body: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&kind.to_ne_bytes());
        r.extend_from_slice(&0u16.to_ne_bytes());
        r.extend_from_slice(&((8 + body.len()) as u16).to_ne_bytes());
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn raw_samples_are_cut_to_their_declared_size() {
        let mut body = 5u32.to_ne_bytes().to_vec();
        body.extend_from_slice(b"hello\0\0\0");
        let r = record(PERF_RECORD_SAMPLE as u32, &body);
        assert_eq!(raw_sample(&r), Some(&b"hello"[..]));
        // A size past the record's end is refused, not read.
        let mut lying = r.clone();
        lying[8..12].copy_from_slice(&64u32.to_ne_bytes());
        assert_eq!(raw_sample(&lying), None);
    }

    #[test]
    fn record_times_are_read_where_the_abi_puts_them() {
        let mut record = vec![0u8; TIME_OFFSET + 8];
        record[TIME_OFFSET..].copy_from_slice(&42u64.to_ne_bytes());
        assert_eq!(record_time(&record), 42);
        assert_eq!(record_time(&record[..4]), 0);
    }

    #[test]
    fn lost_records_give_their_count() {
        let mut body = 7u64.to_ne_bytes().to_vec();
        body.extend_from_slice(&42u64.to_ne_bytes());
        assert_eq!(lost_count(&record(PERF_RECORD_LOST as u32, &body)), 42);
        assert_eq!(lost_count(&record(PERF_RECORD_LOST as u32, &[0; 4])), 0);
    }
}
