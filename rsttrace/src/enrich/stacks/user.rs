//! User frames of the socket's owner: /proc/PID/maps read at event time,
//! the frames the kernel's walk skipped recovered (`unwind`), symbols and
//! source lines from blazesym.
//!
//! Everything expensive is cached and every cache is bounded: a process's
//! maps by pid, a frame's text and a CFA rule by (binary, file offset),
//! parsed binaries in blazesym by file (evicted oldest first), unwind info
//! by file. blazesym also runs on a time budget (`Budget`).
//!
//! Binaries are opened by `safe_open` (inside the process's root, regular
//! files only, the very inode mapped) and checked by `elfcheck` before
//! blazesym sees them, through `/proc/self/fd/N` of our open descriptor;
//! a binary that names separate debug info is symbolized from its own
//! symbol tables only, so blazesym follows no debug link.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer, evict};

use super::cache::BoundedCache;
use super::elfcheck;
use super::frame::{self, UserSymbol};
use super::procmaps::{Mapping, Maps};
use super::safe_open::{self, Root};
use super::unwind::{self, Cfa, UnwindInfo};

/// Processes whose maps are kept.
const MAX_PROCESSES: usize = 256;
/// Frames whose text is kept (per generation).
const MAX_FRAMES: usize = 8192;
/// Binaries blazesym keeps parsed (symbol tables, DWARF).
const MAX_BINARIES: usize = 32;
/// Binaries whose `.eh_frame` is kept (only libc-like wrappers need it).
const MAX_UNWIND: usize = 8;
/// Time blazesym may spend per second. The first lookup in a large debug
/// build parses its DWARF and can take seconds; under a storm of new
/// frames, events that start past this budget show binary+offset frames
/// (counted, not cached) so the reader keeps up with the ring buffer. An
/// event that starts within it is symbolized whole: a lone RST always is.
const BUDGET_PER_SECOND: Duration = Duration::from_millis(200);

/// Time spent in the current one-second window.
#[derive(Debug)]
pub(crate) struct Budget {
    window: Instant,
    spent: Duration,
}

impl Budget {
    pub(crate) fn new(now: Instant) -> Budget {
        Budget {
            window: now,
            spent: Duration::ZERO,
        }
    }

    pub(crate) fn allows(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.spent = Duration::ZERO;
        }
        self.spent < BUDGET_PER_SECOND
    }

    pub(crate) fn charge(&mut self, took: Duration) {
        self.spent += took;
    }
}

/// Maps are read again for an address they lack (a dlopen, a recycled
/// pid) at most this often: a walk through code without frame pointers
/// yields garbage addresses on every event.
const MAPS_REREAD: Duration = Duration::from_secs(1);

/// A process as seen at event time.
struct Process {
    maps: Maps,
    read_at: Instant,
    /// Its root directory, where the paths in its maps resolve.
    root: Option<Root>,
}

/// A mapped file: device (major, minor) and inode.
type FileId = ((u32, u32), u64);

fn file_id(m: &Mapping) -> FileId {
    (m.dev, m.inode)
}

/// A binary opened safely and checked, held open while blazesym has it.
struct Binary {
    file: std::fs::File,
    /// What blazesym opens: our descriptor of it.
    fd_path: String,
    links_debug_info: bool,
}

pub(crate) struct UserSymbolizer {
    symbolizer: Symbolizer,
    processes: BoundedCache<u32, Arc<Process>>,
    frames: BoundedCache<(FileId, u64), Arc<str>>,
    /// Binaries opened (None: refused), oldest first; blazesym has parsed
    /// the ones it symbolized from.
    binaries: VecDeque<(FileId, Option<Arc<Binary>>)>,
    unwind: BoundedCache<FileId, Option<Arc<UnwindInfo>>>,
    /// CFA rules by (binary, file offset).
    cfas: BoundedCache<(FileId, u64), Option<Cfa>>,
    budget: Budget,
    /// Frames shown without a symbol (file offset or raw address).
    pub(crate) unsymbolized: u64,
    /// Of those, the frames left unsymbolized for want of time.
    short_of_time: u64,
}

/// A user stack's frames, and what they depended on beyond the process's
/// maps and the stack's addresses.
pub(crate) struct UserFrames {
    pub(crate) frames: Vec<String>,
    /// The words at the stack pointer that the unwinding step read, by slot.
    pub(crate) top_read: Vec<(usize, u64)>,
    /// Every frame had its full lookup (none was cut short by the time
    /// budget): the same stack in the same process gets the same frames.
    pub(crate) complete: bool,
}

impl Default for UserSymbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl UserSymbolizer {
    pub(crate) fn new() -> UserSymbolizer {
        UserSymbolizer {
            symbolizer: Symbolizer::builder()
                .enable_code_info(true)
                .enable_inlined_fns(false)
                .build(),
            processes: BoundedCache::new(MAX_PROCESSES),
            frames: BoundedCache::new(MAX_FRAMES),
            binaries: VecDeque::new(),
            unwind: BoundedCache::new(MAX_UNWIND),
            cfas: BoundedCache::new(MAX_FRAMES),
            budget: Budget::new(Instant::now()),
            unsymbolized: 0,
            short_of_time: 0,
        }
    }

    /// The frames of `ips` (innermost first, from the kernel's stack map) in
    /// process `pid`; `top` holds the words at its stack pointer.
    #[cfg(test)]
    pub(crate) fn frames(&mut self, pid: u32, ips: &[u64], top: &[u64]) -> Vec<String> {
        self.frames_noting(pid, ips, top).frames
    }

    /// `frames`, with what they depended on.
    pub(crate) fn frames_noting(&mut self, pid: u32, ips: &[u64], top: &[u64]) -> UserFrames {
        let mut process = self.process(pid);
        if ips.iter().any(|&ip| process.maps.find(ip).is_none())
            && process.read_at.elapsed() >= MAPS_REREAD
        {
            // Mapped since we last looked (dlopen), or a recycled pid. Once
            // the process has exited, what we read before is all there is.
            if let Some(fresh) = read_process(pid) {
                process = Arc::new(fresh);
                self.processes.insert(pid, process.clone());
            }
        }
        let mut top_read = Vec::new();
        let recovered = unwind::recover_callers_noting(
            ips,
            top,
            |addr| {
                let m = process.maps.find(addr)?;
                let key = (file_id(m), m.file_offset(addr));
                if let Some(cfa) = self.cfas.get(&key) {
                    return *cfa;
                }
                // A linear walk of .eh_frame: done once per instruction address.
                let cfa = self.unwind_info(&process, m)?.cfa(key.1);
                self.cfas.insert(key, cfa);
                cfa
            },
            &mut top_read,
        );
        let all = ips
            .iter()
            .take(1)
            .chain(&recovered)
            .chain(ips.iter().skip(1));
        let symbolize = self.budget.allows(Instant::now());
        let short_of_time = self.short_of_time;
        let frames = all
            .enumerate()
            .map(|(i, &ip)| {
                // Callers' addresses are return addresses: the call is the
                // instruction before, and may be the last of its function.
                let lookup = if i == 0 { ip } else { ip.saturating_sub(1) };
                self.frame(&process, ip, lookup, symbolize)
            })
            .collect();
        UserFrames {
            frames,
            top_read,
            complete: self.short_of_time == short_of_time,
        }
    }

    fn process(&mut self, pid: u32) -> Arc<Process> {
        self.processes
            .get_or_insert_with(pid, || {
                Arc::new(read_process(pid).unwrap_or_else(|| Process {
                    maps: Maps::default(),
                    read_at: Instant::now(),
                    root: None,
                }))
            })
            .clone()
    }

    fn unwind_info(&mut self, process: &Process, m: &Mapping) -> Option<Arc<UnwindInfo>> {
        if !m.is_file() {
            return None;
        }
        if let Some(info) = self.unwind.get(&file_id(m)) {
            return info.clone();
        }
        let info = self.binary(process, m).and_then(|b| {
            let len = b.file.metadata().ok()?.len();
            UnwindInfo::from_reader(len, |offset, buf| b.file.read_exact_at(buf, offset))
                .ok()
                .flatten()
                .map(Arc::new)
        });
        self.unwind.insert(file_id(m), info.clone());
        info
    }

    fn frame(&mut self, process: &Process, ip: u64, lookup: u64, symbolize: bool) -> String {
        let Some(m) = process.maps.find(lookup) else {
            self.unsymbolized += 1;
            return frame::raw(ip);
        };
        if !m.is_file() {
            self.unsymbolized += 1;
            return frame::file_offset(&m.path, m.file_offset(ip));
        }
        let key = (file_id(m), m.file_offset(lookup));
        if let Some(text) = self.frames.get(&key) {
            return text.to_string();
        }
        if !symbolize {
            self.unsymbolized += 1;
            self.short_of_time += 1;
            return frame::file_offset(&m.path, m.file_offset(ip));
        }
        let started = Instant::now();
        let found = self
            .binary(process, m)
            .and_then(|b| self.symbolize(&b, key.1));
        self.budget.charge(started.elapsed());
        let text = match found {
            Some((name, offset, file, line)) => frame::user_symbol(
                UserSymbol {
                    name: &name,
                    offset: offset + (ip - lookup),
                    file: file.as_deref(),
                    line,
                },
                &m.path,
            ),
            None => {
                self.unsymbolized += 1;
                frame::file_offset(&m.path, m.file_offset(ip))
            }
        };
        self.frames.insert(key, Arc::from(text.as_str()));
        text
    }

    /// (function, offset in it, source file, line) of a file offset.
    fn symbolize(
        &mut self,
        binary: &Binary,
        file_offset: u64,
    ) -> Option<(String, u64, Option<String>, Option<u32>)> {
        let mut elf = Elf::new(binary.fd_path.as_str());
        // DWARF in the file itself, never a debug link to another path.
        elf.debug_syms = !binary.links_debug_info;
        match self
            .symbolizer
            .symbolize_single(&Source::Elf(elf), Input::FileOffset(file_offset))
        {
            Ok(Symbolized::Sym(sym)) => {
                let code = sym.code_info.as_deref();
                Some((
                    sym.name.to_string(),
                    sym.offset as u64,
                    code.map(|c| c.file.to_string_lossy().into_owned()),
                    code.and_then(|c| c.line),
                ))
            }
            Ok(Symbolized::Unknown(_)) | Err(_) => None,
        }
    }

    /// The binary behind `m`, opened and checked once (most recently used
    /// last); None when it cannot be opened safely or fails the check.
    fn binary(&mut self, process: &Process, m: &Mapping) -> Option<Arc<Binary>> {
        let id = file_id(m);
        if let Some(i) = self.binaries.iter().position(|(b, _)| *b == id) {
            let entry = self.binaries.remove(i)?;
            let binary = entry.1.clone();
            self.binaries.push_back(entry);
            return binary;
        }
        let binary = process.root.as_ref().and_then(|root| {
            let opened = safe_open::open_mapped(root, m).ok()?;
            let facts = elfcheck::check(opened.len, |offset, buf| {
                opened.file.read_exact_at(buf, offset)
            })
            .ok()?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&opened.file);
            Some(Arc::new(Binary {
                file: opened.file,
                fd_path: format!("/proc/self/fd/{fd}"),
                links_debug_info: facts.links_debug_info,
            }))
        });
        self.binaries.push_back((id, binary.clone()));
        while self.binaries.len() > MAX_BINARIES {
            if let Some((_, Some(old))) = self.binaries.pop_front() {
                // Before its descriptor (and so its path) can name another file.
                let _ = self
                    .symbolizer
                    .evict(&evict::Evict::Elf(evict::Elf::new(old.fd_path.as_str())));
            }
        }
        binary
    }
}

/// Most bytes of /proc/PID/maps read: tens of thousands of mappings.
const MAX_MAPS_BYTES: u64 = 4 << 20;

/// Maps and root of `pid`; None when it already exited.
fn read_process(pid: u32) -> Option<Process> {
    use std::io::Read;
    let file = std::fs::File::open(format!("/proc/{pid}/maps")).ok()?;
    let mut text = String::new();
    file.take(MAX_MAPS_BYTES).read_to_string(&mut text).ok()?;
    Some(Process {
        maps: Maps::parse(&text),
        read_at: Instant::now(),
        root: Root::of(pid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn distinctive_test_function() -> u64 {
        distinctive_test_function as fn() -> u64 as usize as u64
    }

    #[test]
    fn symbolizes_this_process_with_source_lines() {
        let addr = distinctive_test_function();
        let mut sym = UserSymbolizer::new();
        let frames = sym.frames(std::process::id(), &[addr + 1], &[]);
        assert_eq!(frames.len(), 1);
        assert!(
            frames[0].contains("distinctive_test_function") && frames[0].contains("user.rs:"),
            "{frames:?}"
        );
        assert_eq!(sym.unsymbolized, 0);
        // Cached: the same text again.
        assert_eq!(sym.frames(std::process::id(), &[addr + 1], &[]), frames);
    }

    #[test]
    fn an_exited_process_falls_back_to_raw_addresses_and_counts_it() {
        let mut sym = UserSymbolizer::new();
        // Pid numbers stop well below this (pid_max ≤ 2^22).
        let frames = sym.frames(u32::MAX - 1, &[0x5555_0000_1234, 0x7f00_0000_0010], &[]);
        assert_eq!(frames, ["0x555500001234", "0x7f0000000010"]);
        assert_eq!(sym.unsymbolized, 2);
    }

    #[test]
    fn maps_read_while_alive_outlive_the_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        // Its code is mapped once exec is done: wait for the maps to name sleep.
        let mut maps = Maps::default();
        for _ in 0..100 {
            let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
            if text.contains("sleep") {
                maps = Maps::parse(&text);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("r-xp") && l.contains('/'))
            .unwrap();
        let start = u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap();
        assert!(maps.find(start).is_some());
        let mut sym = UserSymbolizer::new();
        let alive = sym.frames(pid, &[start + 0x10], &[]);
        child.kill().unwrap();
        child.wait().unwrap();
        std::thread::sleep(MAPS_REREAD);
        // An address outside the maps asks for a re-read, which fails now.
        let gone = sym.frames(pid, &[start + 0x10, 0x10], &[]);
        assert_eq!(gone[0], alive[0]);
        assert!(!gone[0].starts_with("0x"), "{gone:?}");
        assert_eq!(gone[1], "0x10");
    }

    #[test]
    fn the_budget_refills_every_second() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        assert!(b.allows(t0));
        b.charge(BUDGET_PER_SECOND);
        assert!(!b.allows(t0 + Duration::from_millis(999)));
        assert!(b.allows(t0 + Duration::from_secs(1)));
        b.charge(BUDGET_PER_SECOND / 2);
        assert!(b.allows(t0 + Duration::from_millis(1500)));
    }

    #[test]
    fn binaries_stay_bounded_and_held_open() {
        let mut sym = UserSymbolizer::new();
        let process = read_process(std::process::id()).unwrap();
        let m = process
            .maps
            .find(distinctive_test_function())
            .unwrap()
            .clone();
        assert!(sym.binary(&process, &m).is_some());
        for i in 0..(MAX_BINARIES * 2) as u64 {
            let mut other = m.clone();
            other.inode = u64::MAX - i;
            // The path names another inode than the mapping: refused.
            assert!(sym.binary(&process, &other).is_none());
        }
        assert_eq!(sym.binaries.len(), MAX_BINARIES);
    }

    #[test]
    fn a_fifo_in_the_maps_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("lib.so");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&fifo).unwrap();
        let maps = format!(
            "7f0000000000-7f0000001000 r-xp 00000000 {:02x}:{:02x} {} {}\n",
            libc::major(md.dev()),
            libc::minor(md.dev()),
            md.ino(),
            fifo.display()
        );
        let process = Process {
            maps: Maps::parse(&maps),
            read_at: Instant::now(),
            root: Root::of(std::process::id()),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sym = UserSymbolizer::new();
            let f = sym.frame(&process, 0x7f0000000010, 0x7f0000000010, true);
            let _ = tx.send(f);
        });
        let f = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("symbolizing through a FIFO blocked");
        assert!(f.contains("lib.so+0x10"), "{f}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Malformed ELF files (headers of a real one with random bytes)
        /// that pass the check go through blazesym and the unwinder
        /// without a panic or an abort.
        #[test]
        fn fuzz_symbolizing_malformed_elf(
            flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..16),
            offsets in proptest::collection::vec(0u64..0x8000, 1..4),
        ) {
            let elf = crate::enrich::stacks::elf::testing::hostile_true(&flips);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("hostile");
            std::fs::write(&path, &elf).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            let len = elf.len() as u64;
            let Ok(facts) = elfcheck::check(len, |o, b| file.read_exact_at(b, o)) else {
                return Ok(());
            };
            let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
            let binary = Binary {
                fd_path: format!("/proc/self/fd/{fd}"),
                links_debug_info: facts.links_debug_info,
                file,
            };
            let mut sym = UserSymbolizer::new();
            for &offset in &offsets {
                let _ = sym.symbolize(&binary, offset);
            }
            if let Ok(Some(info)) = UnwindInfo::from_reader(len, |o, b| binary.file.read_exact_at(b, o)) {
                for &offset in &offsets {
                    let _ = info.cfa(offset);
                }
            }
        }
    }
}
