//! The headers of a 64-bit little-endian ELF file, read with every range
//! checked against the file's length before anything is allocated: the one
//! reading of a possibly hostile binary, for the check before blazesym
//! parses it (`elfcheck`) and for the unwinder (`unwind`).

use std::io;

/// More section headers than any real binary has.
const MAX_SECTIONS: u64 = 1 << 16;
/// Longest section-name table read (real ones are a few KiB).
const MAX_NAMES: u64 = 1 << 20;
const EHDR_SIZE: u64 = 64;
const PHDR_MIN: u64 = 56;
const SHDR_MIN: u64 = 64;

/// A file of `len` bytes, read through `read(offset, buf)`.
pub struct Bounded<F> {
    len: u64,
    read: F,
}

impl<F: Fn(u64, &mut [u8]) -> io::Result<()>> Bounded<F> {
    pub fn new(len: u64, read: F) -> Bounded<F> {
        Bounded { len, read }
    }

    /// `size` bytes at `offset`; an error, before any allocation, when they
    /// do not lie within the file.
    pub fn at(&self, offset: u64, size: u64) -> io::Result<Vec<u8>> {
        self.check(offset, size)?;
        let mut buf = vec![0; size as usize];
        (self.read)(offset, &mut buf)?;
        Ok(buf)
    }

    /// Whether `size` bytes at `offset` lie within the file.
    pub fn check(&self, offset: u64, size: u64) -> io::Result<()> {
        match offset.checked_add(size) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(invalid(format!(
                "{size} bytes at {offset} lie past the end ({})",
                self.len
            ))),
        }
    }
}

/// The program and section header tables and the section names.
pub struct Headers {
    phdrs: Vec<u8>,
    phentsize: usize,
    shdrs: Vec<u8>,
    shentsize: usize,
    names: Vec<u8>,
}

/// A `PT_LOAD` or other program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub kind: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub file_size: u64,
}

/// A section header, with its name (empty when the name is out of range).
#[derive(Clone, Copy, Debug)]
pub struct Section<'a> {
    pub index: usize,
    pub name: &'a [u8],
    pub kind: u32,
    pub flags: u64,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
    pub entsize: u64,
}

impl Headers {
    /// `Ok(None)`: not a 64-bit little-endian ELF file. An error: one that
    /// claims to be, with a header that does not fit the file or the
    /// format.
    pub fn read<F>(file: &Bounded<F>) -> io::Result<Option<Headers>>
    where
        F: Fn(u64, &mut [u8]) -> io::Result<()>,
    {
        let ehdr = file.at(0, EHDR_SIZE)?;
        // \x7fELF, ELFCLASS64, ELFDATA2LSB
        if ehdr[..4] != *b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
            return Ok(None);
        }
        let phoff = u64_at(&ehdr, 0x20);
        let shoff = u64_at(&ehdr, 0x28);
        let phentsize = u64::from(u16_at(&ehdr, 0x36));
        let phnum = u64::from(u16_at(&ehdr, 0x38));
        let shentsize = u64::from(u16_at(&ehdr, 0x3a));
        let mut shnum = u64::from(u16_at(&ehdr, 0x3c));
        let mut shstrndx = u64::from(u16_at(&ehdr, 0x3e));
        if phnum > 0 && phentsize < PHDR_MIN {
            return Err(invalid("program headers too small"));
        }
        // Both are at most 0xffff: the product cannot overflow.
        let phdrs = file.at(phoff, phentsize * phnum)?;
        let mut headers = Headers {
            phdrs,
            phentsize: phentsize as usize,
            shdrs: Vec::new(),
            shentsize: shentsize as usize,
            names: Vec::new(),
        };
        if shoff == 0 {
            return Ok(Some(headers));
        }
        if shentsize < SHDR_MIN {
            return Err(invalid("section headers too small"));
        }
        // More than 0xff00 sections: the real count and name-table index
        // are in section 0.
        let first = file.at(shoff, shentsize)?;
        if shnum == 0 {
            shnum = u64_at(&first, 32);
        }
        if shstrndx == 0xffff {
            shstrndx = u64::from(u32_at(&first, 40));
        }
        if shnum == 0 {
            return Ok(Some(headers));
        }
        if shnum > MAX_SECTIONS || shstrndx >= shnum {
            return Err(invalid(format!(
                "{shnum} section headers, names in {shstrndx}"
            )));
        }
        headers.shdrs = file.at(shoff, shentsize * shnum)?;
        let names = headers.section_header(shstrndx as usize);
        let (offset, size) = (u64_at(names, 24), u64_at(names, 32));
        headers.names = file.at(offset, size.min(MAX_NAMES))?;
        Ok(Some(headers))
    }

    pub fn segments(&self) -> impl Iterator<Item = Segment> + '_ {
        self.phdrs
            .chunks_exact(self.phentsize.max(1))
            .map(|p| Segment {
                kind: u32_at(p, 0),
                offset: u64_at(p, 8),
                vaddr: u64_at(p, 16),
                file_size: u64_at(p, 32),
            })
    }

    pub fn sections(&self) -> impl Iterator<Item = Section<'_>> + '_ {
        (0..self.shdrs.len() / self.shentsize.max(1)).map(|index| {
            let sh = self.section_header(index);
            let name = self.names.get(u32_at(sh, 0) as usize..).unwrap_or_default();
            Section {
                index,
                name: &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())],
                kind: u32_at(sh, 4),
                flags: u64_at(sh, 8),
                addr: u64_at(sh, 16),
                offset: u64_at(sh, 24),
                size: u64_at(sh, 32),
                entsize: u64_at(sh, 56),
            }
        })
    }

    fn section_header(&self, index: usize) -> &[u8] {
        &self.shdrs[index * self.shentsize..(index + 1) * self.shentsize]
    }
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

pub fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// For tests of the readers of hostile binaries.
#[cfg(test)]
pub mod testing {
    use std::io;

    use super::u64_at;

    /// Reads from `b`, as a file would.
    pub fn slice_reader(b: &[u8]) -> impl Fn(u64, &mut [u8]) -> io::Result<()> + '_ {
        |offset, buf| {
            let offset = offset as usize;
            buf.copy_from_slice(&b[offset..offset + buf.len()]);
            Ok(())
        }
    }

    /// /bin/true with bytes of its ELF header and section headers (where
    /// the sizes, counts and offsets are) replaced: `(position, byte)`.
    pub fn hostile_true(flips: &[(usize, u8)]) -> Vec<u8> {
        let mut elf = std::fs::read("/bin/true").unwrap();
        let shoff = u64_at(&elf, 0x28) as usize;
        let shdrs = elf.len() - shoff;
        for &(at, b) in flips {
            let at = at % (64 + shdrs);
            let at = if at < 64 { at } else { shoff + at - 64 };
            elf[at] = b;
        }
        elf
    }

    /// `elf` rewritten to number its sections the way files with more than
    /// 0xff00 do: count and name-table index in section 0.
    pub fn with_extended_numbering(mut elf: Vec<u8>) -> Vec<u8> {
        let shoff = u64_at(&elf, 0x28) as usize;
        let shnum = u64::from(super::u16_at(&elf, 0x3c));
        let shstrndx = u32::from(super::u16_at(&elf, 0x3e));
        elf[0x3c..0x3e].copy_from_slice(&0u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&0xffffu16.to_le_bytes());
        elf[shoff + 32..shoff + 40].copy_from_slice(&shnum.to_le_bytes());
        elf[shoff + 40..shoff + 44].copy_from_slice(&shstrndx.to_le_bytes());
        elf
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn headers(elf: &[u8]) -> io::Result<Option<Headers>> {
        Headers::read(&Bounded::new(elf.len() as u64, slice_reader(elf)))
    }

    fn section_names(h: &Headers) -> Vec<String> {
        h.sections()
            .map(|s| String::from_utf8_lossy(s.name).into_owned())
            .collect()
    }

    #[test]
    fn ranges_past_the_end_or_overflowing_are_refused_before_allocating() {
        let never = |_: u64, _: &mut [u8]| -> io::Result<()> { panic!("read out of range") };
        let file = Bounded::new(100, never);
        assert!(file.at(90, 11).is_err());
        assert!(file.at(u64::MAX, 2).is_err());
        assert!(file.at(1, u64::MAX).is_err());
        assert!(file.check(0, 100).is_ok());
    }

    #[test]
    fn a_real_binary_and_its_extended_numbering_read_alike() {
        let elf = std::fs::read("/bin/true").unwrap();
        let plain = headers(&elf).unwrap().unwrap();
        let names = section_names(&plain);
        assert!(names.iter().any(|n| n == ".eh_frame"), "{names:?}");
        assert!(plain.segments().any(|s| s.kind == 1));
        let extended = headers(&with_extended_numbering(elf)).unwrap().unwrap();
        assert_eq!(section_names(&extended), names);
        assert!(headers(&[b'#'; 64]).unwrap().is_none(), "not an ELF file");
    }

    /// No section count anywhere (e_shnum and section 0's size both 0):
    /// no sections, rather than the name table of an empty table.
    #[test]
    fn zero_sections_in_both_places_means_none() {
        let mut elf = with_extended_numbering(std::fs::read("/bin/true").unwrap());
        let shoff = u64_at(&elf, 0x28) as usize;
        elf[shoff + 32..shoff + 40].copy_from_slice(&0u64.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&0u16.to_le_bytes());
        let h = headers(&elf).unwrap().unwrap();
        assert_eq!(h.sections().count(), 0);
    }
}
