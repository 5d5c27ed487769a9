//! A binary is checked before blazesym parses it: every size and offset in
//! its headers within the file (checked arithmetic), and compressed
//! sections that would not inflate past a bound. blazesym 0.2.7 allocates
//! a compressed section's declared size up front (`Vec::with_capacity` of
//! the `Elf64_Chdr` size): a hostile header asks for any amount, and a
//! failed allocation aborts the process rather than returning an error.

use std::io;

use super::elf::{Bounded, Headers, u64_at};

/// Largest size a compressed section may declare (real `.debug_info` of
/// large programs is a few hundred MiB at most).
const MAX_INFLATED_SECTION: u64 = 512 << 20;
/// All compressed sections of one file together.
const MAX_INFLATED_TOTAL: u64 = 1 << 30;
const SHF_COMPRESSED: u64 = 0x800;
const SHT_NOBITS: u32 = 8;
const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;

/// What the check learnt about a valid binary.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ElfFacts {
    /// It names separate debug info (`.gnu_debuglink`, `.gnu_debugaltlink`,
    /// `.debug_sup`), which blazesym would look for by path next to it and
    /// in debug directories: its DWARF is then not used.
    pub links_debug_info: bool,
}

/// Checks the ELF headers of a file of `len` bytes, read through `read(offset, buf)`.
pub fn check(
    len: u64,
    read: impl Fn(u64, &mut [u8]) -> io::Result<()>,
) -> Result<ElfFacts, String> {
    let file = Bounded::new(len, read);
    let headers = Headers::read(&file)
        .map_err(|e| e.to_string())?
        .ok_or("not a 64-bit little-endian ELF file")?;
    let mut facts = ElfFacts::default();
    let mut inflated = 0u64;
    for s in headers.sections() {
        let i = s.index;
        if matches!(
            s.name,
            b".gnu_debuglink" | b".gnu_debugaltlink" | b".debug_sup"
        ) {
            facts.links_debug_info = true;
        }
        if s.kind == SHT_NOBITS {
            continue;
        }
        file.check(s.offset, s.size)
            .map_err(|_| format!("section {i} lies past the end of the file"))?;
        if matches!(s.kind, SHT_SYMTAB | SHT_DYNSYM) && s.entsize != 0 && s.entsize < 24 {
            return Err(format!("symbol table {i} with {}-byte entries", s.entsize));
        }
        if s.flags & SHF_COMPRESSED != 0 {
            let chdr = file.at(s.offset, 24).map_err(|e| e.to_string())?;
            let declared = u64_at(&chdr, 8);
            inflated = inflated.saturating_add(declared);
            if declared > MAX_INFLATED_SECTION || inflated > MAX_INFLATED_TOTAL {
                return Err(format!(
                    "compressed section {i} declares {declared} bytes inflated"
                ));
            }
        }
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::enrich::stacks::elf::testing::{
        hostile_true, slice_reader, with_extended_numbering,
    };
    use crate::enrich::stacks::elf::{u16_at, u32_at};

    fn check_bytes(b: &[u8]) -> Result<ElfFacts, String> {
        check(b.len() as u64, slice_reader(b))
    }

    fn this_binary() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    /// Offset of section `name`'s header in `elf`.
    fn section_header(elf: &[u8], name: &[u8]) -> usize {
        let shoff = u64_at(elf, 0x28) as usize;
        let shnum = u16_at(elf, 0x3c) as usize;
        let strndx = u16_at(elf, 0x3e) as usize;
        let str_off = u64_at(elf, shoff + strndx * 64 + 24) as usize;
        (0..shnum)
            .map(|i| shoff + i * 64)
            .find(|&h| {
                let n = str_off + u32_at(elf, h) as usize;
                elf[n..].starts_with(name) && elf[n + name.len()] == 0
            })
            .expect("section present")
    }

    #[test]
    fn real_binaries_pass() {
        assert_eq!(check_bytes(&this_binary()), Ok(ElfFacts::default()));
        let file = std::fs::File::open("/bin/sh").unwrap();
        let len = file.metadata().unwrap().len();
        check(len, |off, buf| file.read_exact_at(buf, off)).unwrap();
    }

    #[test]
    fn an_absurd_compressed_section_is_refused() {
        let mut elf = this_binary();
        let h = section_header(&elf, b".debug_info");
        let offset = u64_at(&elf, h + 24) as usize;
        let flags = u64_at(&elf, h + 8) | SHF_COMPRESSED;
        elf[h + 8..h + 16].copy_from_slice(&flags.to_le_bytes());
        // Elf64_Chdr: ELFCOMPRESS_ZLIB, then 2^60 bytes inflated.
        elf[offset..offset + 4].copy_from_slice(&1u32.to_le_bytes());
        elf[offset + 8..offset + 16].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let err = check_bytes(&elf).unwrap_err();
        assert!(err.contains("compressed section"), "{err}");
    }

    #[test]
    fn headers_past_the_end_or_overflowing_are_refused() {
        let elf = this_binary();
        let mut huge = elf.clone();
        huge[0x3c..0x3e].copy_from_slice(&0xfff0u16.to_le_bytes());
        assert!(check_bytes(&huge).is_err());
        let mut wrap = elf.clone();
        wrap[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(check_bytes(&wrap).is_err());
        let mut section = elf.clone();
        let h = section_header(&elf, b".text");
        section[h + 24..h + 32].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        assert!(check_bytes(&section).is_err());
    }

    #[test]
    fn a_debug_link_is_noticed() {
        let mut elf = this_binary();
        // Rename `.debug_aranges` to `.gnu_debuglink` (the same length).
        let h = section_header(&elf, b".debug_aranges");
        let shoff = u64_at(&elf, 0x28) as usize;
        let strndx = u16_at(&elf, 0x3e) as usize;
        let str_off = u64_at(&elf, shoff + strndx * 64 + 24) as usize;
        let n = str_off + u32_at(&elf, h) as usize;
        elf[n..n + 14].copy_from_slice(b".gnu_debuglink");
        assert!(check_bytes(&elf).unwrap().links_debug_info);
    }

    /// e_shnum and section 0's size both 0, and a name-table index of 0:
    /// a file without sections, not a panic on an empty table.
    #[test]
    fn no_section_count_anywhere_is_not_a_panic() {
        let mut elf = with_extended_numbering(this_binary());
        let shoff = u64_at(&elf, 0x28) as usize;
        elf[shoff + 32..shoff + 40].copy_from_slice(&0u64.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(check_bytes(&elf), Ok(ElfFacts::default()));
    }

    proptest::proptest! {
        /// Random bytes over a valid header never panic the check.
        #[test]
        fn fuzz_headers(flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..32)) {
            let _ = check_bytes(&hostile_true(&flips));
        }
    }
}
