//! A binary is checked before blazesym parses it: every size and offset in
//! its headers within the file (checked arithmetic), and compressed
//! sections that would not inflate past a bound. blazesym 0.2.7 allocates
//! a compressed section's declared size up front (`Vec::with_capacity` of
//! the `Elf64_Chdr` size): a hostile header asks for any amount, and a
//! failed allocation aborts the process rather than returning an error.

use std::io;

/// Largest size a compressed section may declare (real `.debug_info` of
/// large programs is a few hundred MiB at most).
const MAX_INFLATED_SECTION: u64 = 512 << 20;
/// All compressed sections of one file together.
const MAX_INFLATED_TOTAL: u64 = 1 << 30;
/// More section or program headers than any real binary has.
const MAX_HEADERS: u64 = 1 << 16;
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
    let at = |offset: u64, size: u64| -> Result<Vec<u8>, String> {
        let end = offset.checked_add(size).ok_or("offset overflows")?;
        if end > len {
            return Err(format!("{size} bytes at {offset} lie past the end ({len})"));
        }
        let mut buf = vec![0; size as usize];
        read(offset, &mut buf).map_err(|e| e.to_string())?;
        Ok(buf)
    };
    let ehdr = at(0, 64)?;
    if ehdr[..4] != *b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let phoff = u64_at(&ehdr, 0x20);
    let shoff = u64_at(&ehdr, 0x28);
    let phentsize = u64::from(u16_at(&ehdr, 0x36));
    let phnum = u64::from(u16_at(&ehdr, 0x38));
    let shentsize = u64::from(u16_at(&ehdr, 0x3a));
    let mut shnum = u64::from(u16_at(&ehdr, 0x3c));
    let mut shstrndx = u64::from(u16_at(&ehdr, 0x3e));
    if phnum > 0 {
        if phentsize < 56 {
            return Err("program headers too small".into());
        }
        at(phoff, phentsize.checked_mul(phnum).ok_or("overflow")?)?;
    }
    if shoff == 0 {
        return Ok(ElfFacts::default());
    }
    if shentsize < 64 {
        return Err("section headers too small".into());
    }
    // More than 0xff00 sections: the real count and string table index
    // are in section 0.
    let first = at(shoff, 64)?;
    if shnum == 0 {
        shnum = u64_at(&first, 32);
    }
    if shstrndx == 0xffff {
        shstrndx = u64::from(u32_at(&first, 40));
    }
    if shnum > MAX_HEADERS || shstrndx >= shnum.max(1) {
        return Err(format!("{shnum} section headers, names in {shstrndx}"));
    }
    let shdrs = at(shoff, shentsize.checked_mul(shnum).ok_or("overflow")?)?;
    let section = |i: u64| &shdrs[(i * shentsize) as usize..((i + 1) * shentsize) as usize];
    let strtab = section(shstrndx);
    let names = at(u64_at(strtab, 24), u64_at(strtab, 32).min(1 << 20))?;
    let mut facts = ElfFacts::default();
    let mut inflated = 0u64;
    for i in 0..shnum {
        let sh = section(i);
        let kind = u32_at(sh, 4);
        let flags = u64_at(sh, 8);
        let (offset, size, entsize) = (u64_at(sh, 24), u64_at(sh, 32), u64_at(sh, 56));
        let name = names.get(u32_at(sh, 0) as usize..).unwrap_or_default();
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if matches!(
            name,
            b".gnu_debuglink" | b".gnu_debugaltlink" | b".debug_sup"
        ) {
            facts.links_debug_info = true;
        }
        if kind == SHT_NOBITS {
            continue;
        }
        let end = offset.checked_add(size).ok_or("section offset overflows")?;
        if end > len {
            return Err(format!("section {i} lies past the end of the file"));
        }
        if matches!(kind, SHT_SYMTAB | SHT_DYNSYM) && entsize != 0 && entsize < 24 {
            return Err(format!("symbol table {i} with {entsize}-byte entries"));
        }
        if flags & SHF_COMPRESSED != 0 {
            let chdr = at(offset, 24)?;
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

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    fn check_bytes(b: &[u8]) -> Result<ElfFacts, String> {
        check(b.len() as u64, |off, buf| {
            let off = off as usize;
            buf.copy_from_slice(&b[off..off + buf.len()]);
            Ok(())
        })
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

    proptest::proptest! {
        /// Random bytes over a valid header never panic the check.
        #[test]
        fn fuzz_headers(flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..32)) {
            let mut elf = std::fs::read("/bin/true").unwrap();
            // The ELF header and the section headers: where the sizes are.
            let shoff = u64_at(&elf, 0x28) as usize;
            let shdrs = elf.len() - shoff;
            for (at, b) in flips {
                let at = at % (64 + shdrs);
                let at = if at < 64 { at } else { shoff + at - 64 };
                elf[at] = b;
            }
            let _ = check_bytes(&elf);
        }
    }
}
