//! Recovers the callers that the kernel's frame-pointer walk skips.
//!
//! The kernel walks a user stack by following saved frame pointers, and
//! starts from the syscall's user `ip` and `bp`. libc's syscall wrappers
//! (close(), shutdown(), setsockopt(), connect()) set up no frame, so `bp`
//! still belongs to their caller: the walk goes from the wrapper straight to
//! the caller's caller, and the function that called close() — where the
//! application decided to close — is missing.
//!
//! The missing return address is on the stack at the syscall's user `sp`,
//! where the kernel program copied a few words (`RstEvent::user_stack_top`).
//! Which word it is follows from the wrapper's unwind info (`.eh_frame`):
//! while the canonical frame address is `sp + N`, the return address sits at
//! `CFA - 8` (x86-64). The same step repeats for a chain of frameless
//! functions, until one keeps a frame pointer (the kernel's walk is right
//! from there) or the copied words run out.

use std::io;

use gimli::{
    BaseAddresses, CfaRule, EhFrame, LittleEndian, RegisterRule, UnwindContext, UnwindSection,
    X86_64,
};

use super::elf::{Bounded, Headers};

/// Where the canonical frame address of a function is, at one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cfa {
    /// `sp + offset`, and the return address is at `CFA - 8`: the function
    /// keeps no frame pointer here.
    StackPointer(u64),
    /// Anything else (usually `bp + 16`: a frame the kernel's walk follows).
    Other,
}

/// The frames to insert after `frames[0]`: return addresses read from `top`
/// (the words at the user `sp`) for as long as the code at the current
/// address is frameless by `cfa_of`. `cfa_of` gets the address to look up:
/// `frames[0]` itself, then each recovered return address minus one (the
/// call instruction).
#[cfg(test)]
pub(crate) fn recover_callers(
    frames: &[u64],
    top: &[u64],
    cfa_of: impl FnMut(u64) -> Option<Cfa>,
) -> Vec<u64> {
    recover_callers_noting(frames, top, cfa_of, &mut Vec::new())
}

/// `recover_callers`, noting in `read` each (slot, word) of `top` it read:
/// the same frames with the same words there recover the same callers.
pub(crate) fn recover_callers_noting(
    frames: &[u64],
    top: &[u64],
    mut cfa_of: impl FnMut(u64) -> Option<Cfa>,
    read: &mut Vec<(usize, u64)>,
) -> Vec<u64> {
    let mut recovered = Vec::new();
    let Some(&first) = frames.first() else {
        return recovered;
    };
    let next_known = frames.get(1).copied();
    let mut lookup = first;
    // Bytes above the captured `sp` of the current frame's stack pointer.
    let mut sp = 0u64;
    while let Some(Cfa::StackPointer(offset)) = cfa_of(lookup) {
        let cfa = sp + offset;
        let Some(slot) = cfa.checked_sub(8).map(|a| a / 8) else {
            break;
        };
        let Some(&ret) = top.get(slot as usize) else {
            break;
        };
        read.push((slot as usize, ret));
        if ret == 0 || Some(ret) == next_known || recovered.len() >= top.len() {
            break;
        }
        recovered.push(ret);
        sp = cfa;
        lookup = ret - 1;
    }
    recovered
}

/// The parts of an ELF file the unwinding step needs: `.eh_frame` and the
/// loadable segments (to turn file offsets into the addresses it uses).
#[derive(Debug)]
pub(crate) struct UnwindInfo {
    eh_frame: Vec<u8>,
    eh_frame_addr: u64,
    /// (file offset, virtual address, size in the file) of each PT_LOAD.
    segments: Vec<(u64, u64, u64)>,
}

const PT_LOAD: u32 = 1;
/// Far larger than the `.eh_frame` of the libraries whose wrappers need it
/// (libc's is ~150 KiB); the cache holds `user::MAX_UNWIND` of them, so
/// this bounds it at 128 MiB. A corrupt header must not make us allocate more.
const MAX_EH_FRAME: u64 = 16 << 20;

impl UnwindInfo {
    /// Reads a 64-bit little-endian ELF file's unwind info; `Ok(None)` when
    /// it is another kind of file or has no `.eh_frame`.
    #[cfg(test)]
    pub(crate) fn read(path: &std::path::Path) -> io::Result<Option<UnwindInfo>> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Self::from_reader(len, |offset, buf| file.read_exact_at(buf, offset))
    }

    /// The same from a file of `len` bytes read through `read(offset, buf)`.
    /// Every range is checked against `len` before anything is allocated.
    pub(crate) fn from_reader(
        len: u64,
        read: impl Fn(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<Option<UnwindInfo>> {
        let file = Bounded::new(len, read);
        let Some(headers) = Headers::read(&file)? else {
            return Ok(None);
        };
        let Some(eh_frame) = headers.sections().find(|s| s.name == b".eh_frame") else {
            return Ok(None);
        };
        if eh_frame.size > MAX_EH_FRAME {
            return Ok(None);
        }
        Ok(Some(UnwindInfo {
            eh_frame: file.at(eh_frame.offset, eh_frame.size)?,
            eh_frame_addr: eh_frame.addr,
            segments: headers
                .segments()
                .filter(|p| p.kind == PT_LOAD)
                .map(|p| (p.offset, p.vaddr, p.file_size))
                .collect(),
        }))
    }

    /// The virtual address (as `.eh_frame` counts) of a file offset.
    fn vaddr(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(off, _, size)| file_offset >= *off && file_offset - off < *size)
            .map(|(off, vaddr, _)| (file_offset - off).wrapping_add(*vaddr))
    }

    /// The CFA rule at `file_offset`; None without unwind info there.
    pub(crate) fn cfa(&self, file_offset: u64) -> Option<Cfa> {
        let addr = self.vaddr(file_offset)?;
        let eh = EhFrame::new(&self.eh_frame, LittleEndian);
        let bases = BaseAddresses::default().set_eh_frame(self.eh_frame_addr);
        let mut ctx = Box::new(UnwindContext::new());
        let row = eh
            .unwind_info_for_address(&bases, &mut ctx, addr, EhFrame::cie_from_offset)
            .ok()?;
        let ret_at_cfa_minus_8 = row.register(X86_64::RA) == Some(RegisterRule::Offset(-8));
        Some(match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset }
                if *register == X86_64::RSP && *offset > 0 && ret_at_cfa_minus_8 =>
            {
                Cfa::StackPointer(*offset as u64)
            }
            _ => Cfa::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::enrich::stacks::elf::testing::{
        hostile_true, slice_reader, with_extended_numbering,
    };

    /// The glibc 2.36 close(): frameless, CFA = sp + 8 on the single-threaded
    /// path and sp + 0x20 on the cancellable one.
    #[test]
    fn the_caller_of_a_frameless_wrapper_comes_from_the_stack() {
        let close_ip = 0x7f00_0000_89f0;
        let caller_ret = 0x5555_0000_1234; // into drop_connection()
        let callers_caller = 0x5555_0000_1400; // into main(), via bp
        let frames = [close_ip, callers_caller, 0x7f00_0000_0100];
        let cfa = |ip: u64| match ip {
            0x7f00_0000_89f0 => Some(Cfa::StackPointer(8)),
            _ => Some(Cfa::Other),
        };
        let top = [caller_ret, 0xdead, 0, 0];
        assert_eq!(recover_callers(&frames, &top, cfa), [caller_ret]);

        let cancellable = |ip: u64| (ip == close_ip).then_some(Cfa::StackPointer(0x20));
        let top = [0x1111, 0x2222, 0x3333, caller_ret];
        assert_eq!(recover_callers(&frames, &top, cancellable), [caller_ret]);
    }

    #[test]
    fn chains_of_frameless_code_are_followed_and_bounded() {
        let frames = [0x1000, 0x9000];
        // 0x1000 → ret 0x2001 (frameless, 16 bytes of frame) → ret 0x3001.
        let cfa = |ip: u64| match ip {
            0x1000 => Some(Cfa::StackPointer(8)),
            0x2000 => Some(Cfa::StackPointer(16)),
            _ => Some(Cfa::Other),
        };
        let top = [0x2001, 0xaaaa, 0x3001, 0];
        assert_eq!(recover_callers(&frames, &top, cfa), [0x2001, 0x3001]);
        // What the answer depended on: the words it read, not the others.
        let mut read = Vec::new();
        recover_callers_noting(&frames, &top, cfa, &mut read);
        assert_eq!(read, [(0, 0x2001), (2, 0x3001)]);
        // The words run out before the return address: nothing is guessed.
        assert_eq!(recover_callers(&frames, &top[..2], cfa), [0x2001]);
        assert!(recover_callers(&frames, &[], cfa).is_empty());
    }

    #[test]
    fn nothing_is_inserted_when_the_walk_was_right() {
        let frames = [0x1000, 0x2001];
        // A function with a frame: the kernel's walk already has its caller.
        assert!(recover_callers(&frames, &[0x2001], |_| Some(Cfa::Other)).is_empty());
        // No unwind info at all.
        assert!(recover_callers(&frames, &[0x2001], |_| None).is_empty());
        // The word on the stack is the caller the walk found: no duplicate.
        let frameless = |_| Some(Cfa::StackPointer(8));
        assert!(recover_callers(&frames, &[0x2001], frameless).is_empty());
        // An unreadable stack reads as zeros.
        assert!(recover_callers(&frames, &[0, 0], frameless).is_empty());
        assert!(recover_callers(&[], &[1], frameless).is_empty());
    }

    #[test]
    fn reads_cfa_rules_from_a_real_eh_frame() {
        // This test binary's own code: at a function's first instruction the
        // return address was just pushed, so CFA = sp + 8 on x86-64.
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let maps = crate::enrich::stacks::procmaps::Maps::parse(&maps);
        let entry = crate::enrich::stacks::elf::u64_at as fn(&[u8], usize) -> u64;
        let addr = entry as usize as u64;
        let mapping = maps.find(addr).expect("the test's code is mapped");
        let info = UnwindInfo::read(Path::new(&*mapping.path))
            .unwrap()
            .expect("a Rust binary has .eh_frame");
        assert_eq!(
            info.cfa(mapping.file_offset(addr)),
            Some(Cfa::StackPointer(8))
        );
        assert_eq!(info.cfa(u64::MAX - 1), None, "outside every segment");
        assert!(
            UnwindInfo::read(Path::new("/proc/self/status")).map_or(true, |i| i.is_none()),
            "not an ELF file"
        );
    }

    /// A binary that numbers its sections in section 0 (as those with more
    /// than 0xff00 sections do) still has its `.eh_frame` found.
    #[test]
    fn extended_section_numbering_is_read() {
        let elf = with_extended_numbering(std::fs::read("/bin/true").unwrap());
        let info = UnwindInfo::from_reader(elf.len() as u64, slice_reader(&elf))
            .unwrap()
            .expect("/bin/true has .eh_frame");
        assert!(!info.eh_frame.is_empty());
    }

    proptest::proptest! {
        /// Hostile headers (sizes, counts, offsets) over a real binary:
        /// never a panic, never an allocation past the file.
        #[test]
        fn fuzz_from_reader(flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..24)) {
            let elf = hostile_true(&flips);
            if let Ok(Some(info)) = UnwindInfo::from_reader(elf.len() as u64, slice_reader(&elf)) {
                for offset in [0, 0x1000, u64::MAX - 1] {
                    let _ = info.cfa(offset);
                }
            }
        }
    }
}
