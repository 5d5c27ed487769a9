//! Decoding BTF: the header, the string section and every type record,
//! into the `Btf` tables that the queries in `mod.rs` walk; and the cut-down
//! copy aya attaches with (`attach_names`). Every read is bounds-checked
//! (`Reader`); nothing here follows type ids.

use super::{Btf, BtfError, HEADER_LEN, MAGIC, Member, Param, Type};

impl Btf {
    /// Parses raw (little-endian) BTF, e.g. the contents of /sys/kernel/btf/vmlinux.
    pub(crate) fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let (type_sec, strings) = sections(data)?;
        let types = parse_types(type_sec, strings.len())?;
        let mut btf = Btf {
            types,
            strings: strings.to_vec(),
            ptr_size: 8,
        };
        if let Some(&Type::Int {
            size: s @ (4 | 8), ..
        }) = btf.find_type("long unsigned int", |t| matches!(t, Type::Int { .. }))
        {
            btf.ptr_size = s;
        }
        Ok(btf)
    }
}

/// Rewrites raw BTF into the part of it that attaching needs: aya's
/// fentry/fexit and tp_btf `load` look a FUNC or a TYPEDEF
/// (`btf_trace_<tracepoint>`) up by name and hand its type id to the
/// kernel. Those types keep their kind and name; every other type becomes
/// an anonymous `void *`, so that every type keeps its id. Members,
/// parameters, enumerators and all other names are left out.
pub(crate) fn attach_names(data: &[u8]) -> Result<Vec<u8>, BtfError> {
    const PTR: u32 = 2;
    const TYPEDEF: u32 = 8;
    const FUNC: u32 = 12;
    let (type_sec, strings) = sections(data)?;
    // Room for the usual input (names shared by several types aside); the
    // end never written stays untouched.
    let mut out = Vec::with_capacity(HEADER_LEN + type_sec.len() + strings.len());
    out.resize(HEADER_LEN, 0);
    let mut names = vec![0u8];
    let mut r = Reader::new(type_sec, "type section");
    let mut type_id = 0u32;
    while !r.is_empty() {
        type_id = type_id.saturating_add(1);
        let name = r.u32()?;
        let info = r.u32()?;
        let _size_or_type = r.u32()?;
        let kind = (info >> 24) & 0x1f;
        let trailer = trailer_len(kind, (info & 0xffff) as usize)
            .ok_or(BtfError::UnknownKind { type_id, kind })?;
        r.skip(trailer)?;
        let record = if matches!(kind, FUNC | TYPEDEF) && name != 0 {
            let text = strings
                .get(name as usize..)
                .and_then(|s| s.split(|&b| b == 0).next())
                .ok_or(BtfError::BadString(name))?;
            let offset = u32::try_from(names.len())
                .map_err(|_| BtfError::Malformed("string section too large"))?;
            names.extend_from_slice(text);
            names.push(0);
            [offset, info, 0]
        } else {
            [0, PTR << 24, 0]
        };
        out.extend(record.iter().flat_map(|w| w.to_le_bytes()));
    }
    let too_large = |_| BtfError::Malformed("section too large");
    let type_len = u32::try_from(out.len() - HEADER_LEN).map_err(too_large)?;
    let str_len = u32::try_from(names.len()).map_err(too_large)?;
    out.extend_from_slice(&names);
    // Header: magic, version 1, no flags, then hdr_len, type_off, type_len,
    // str_off, str_len.
    out[..2].copy_from_slice(&MAGIC.to_le_bytes());
    out[2] = 1;
    let words = [HEADER_LEN as u32, 0, type_len, type_len, str_len];
    for (slot, word) in out[4..HEADER_LEN].chunks_exact_mut(4).zip(words) {
        slot.copy_from_slice(&word.to_le_bytes());
    }
    Ok(out)
}

/// The type and string sections of raw BTF, after checking its header.
fn sections(data: &[u8]) -> Result<(&[u8], &[u8]), BtfError> {
    let mut hdr = Reader::new(data, "header");
    let magic = hdr.u16()?;
    if magic == MAGIC.swap_bytes() {
        return Err(BtfError::BigEndian);
    }
    if magic != MAGIC {
        return Err(BtfError::BadMagic(magic));
    }
    let version = hdr.u8()?;
    if version != 1 {
        return Err(BtfError::UnsupportedVersion(version));
    }
    let _flags = hdr.u8()?;
    let hdr_len = hdr.u32()? as usize;
    let type_off = hdr.u32()?;
    let type_len = hdr.u32()?;
    let str_off = hdr.u32()?;
    let str_len = hdr.u32()?;
    // Newer kernels may append header fields; the section offsets are
    // relative to the end of the header whatever its length.
    if hdr_len < HEADER_LEN {
        return Err(BtfError::Malformed("header length too small"));
    }
    let type_sec = section(data, hdr_len, type_off, type_len, "type section")?;
    let strings = section(data, hdr_len, str_off, str_len, "string section")?;
    // Offset 0 is the empty name and every string is NUL-terminated, so
    // any in-range offset yields a terminated string.
    if strings.first() != Some(&0) || strings.last() != Some(&0) {
        return Err(BtfError::Malformed(
            "string section must start and end with NUL",
        ));
    }
    Ok((type_sec, strings))
}

/// The bytes that follow a type record's 12-byte header, by kind; None for
/// a kind this parser does not know.
fn trailer_len(kind: u32, vlen: usize) -> Option<usize> {
    let per_item = match kind {
        // INT's encoding, VAR's linkage, DECL_TAG's component index.
        1 | 14 | 17 => return Some(4),
        // ARRAY: element type, index type, count.
        3 => return Some(12),
        // Members, section variables, 64-bit enumerators.
        4 | 5 | 15 | 19 => 12,
        // Enumerators, parameters.
        6 | 13 => 8,
        2 | 7..=12 | 16 | 18 => 0,
        _ => return None,
    };
    Some(per_item * vlen)
}

fn section<'a>(
    data: &'a [u8],
    hdr_len: usize,
    off: u32,
    len: u32,
    what: &'static str,
) -> Result<&'a [u8], BtfError> {
    let start = hdr_len
        .checked_add(off as usize)
        .ok_or(BtfError::Truncated(what))?;
    let end = start
        .checked_add(len as usize)
        .ok_or(BtfError::Truncated(what))?;
    data.get(start..end).ok_or(BtfError::Truncated(what))
}

fn parse_types(sec: &[u8], str_len: usize) -> Result<Vec<Type>, BtfError> {
    let check_name = |off: u32| {
        if (off as usize) < str_len {
            Ok(off)
        } else {
            Err(BtfError::BadString(off))
        }
    };
    let mut r = Reader::new(sec, "type section");
    let mut types = Vec::new();
    while !r.is_empty() {
        let type_id =
            u32::try_from(types.len() + 1).map_err(|_| BtfError::Malformed("too many types"))?;
        let name = check_name(r.u32()?)?;
        let info = r.u32()?;
        let size_or_type = r.u32()?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        let trailer = trailer_len(kind, vlen).ok_or(BtfError::UnknownKind { type_id, kind })?;
        let mut t = Reader::new(r.bytes(trailer)?, "type section");
        let ty = match kind {
            1 => {
                let enc = t.u32()?;
                Type::Int {
                    name,
                    size: size_or_type,
                    bits: enc & 0xff,
                    bit_offset: (enc >> 16) & 0xff,
                }
            }
            2 => Type::Ptr {
                target: size_or_type,
            },
            3 => {
                let elem = t.u32()?;
                let _index_type = t.u32()?;
                Type::Array {
                    elem,
                    nelems: t.u32()?,
                }
            }
            4 | 5 => {
                let mut members = Vec::with_capacity(vlen);
                for _ in 0..vlen {
                    let name = check_name(t.u32()?)?;
                    let ty = t.u32()?;
                    let raw = t.u32()?;
                    let (bit_offset, bit_size) = if kind_flag {
                        (raw & 0xff_ffff, raw >> 24)
                    } else {
                        (raw, 0)
                    };
                    members.push(Member {
                        name,
                        ty,
                        bit_offset,
                        bit_size,
                    });
                }
                Type::Composite {
                    name,
                    size: size_or_type,
                    is_union: kind == 5,
                    kind_flag,
                    members,
                }
            }
            6 => {
                let mut values = Vec::with_capacity(vlen);
                for _ in 0..vlen {
                    let name = check_name(t.u32()?)?;
                    let raw = t.u32()?;
                    // kind_flag marks a signed enum.
                    let value = if kind_flag {
                        i64::from(raw as i32)
                    } else {
                        i64::from(raw)
                    };
                    values.push((name, value));
                }
                Type::Enum {
                    name,
                    size: size_or_type,
                    values,
                }
            }
            7 => Type::Fwd { name },
            8 => Type::Typedef {
                name,
                target: size_or_type,
            },
            9..=11 | 18 => Type::Qualifier {
                target: size_or_type,
            },
            12 => Type::Func {
                name,
                proto: size_or_type,
            },
            13 => {
                let mut params = Vec::with_capacity(vlen);
                for _ in 0..vlen {
                    let name = check_name(t.u32()?)?;
                    params.push(Param { name, ty: t.u32()? });
                }
                Type::FuncProto { params }
            }
            // VAR's linkage, a DATASEC's variables (type, offset, size) and
            // DECL_TAG's component index are not needed.
            14 => Type::Var { name },
            15 => Type::Datasec {
                name,
                size: size_or_type,
            },
            16 => Type::Float {
                name,
                size: size_or_type,
            },
            17 => Type::DeclTag { name },
            19 => {
                let mut values = Vec::with_capacity(vlen);
                for _ in 0..vlen {
                    let name = check_name(t.u32()?)?;
                    let lo = u64::from(t.u32()?);
                    let hi = u64::from(t.u32()?);
                    values.push((name, (hi << 32 | lo) as i64));
                }
                Type::Enum {
                    name,
                    size: size_or_type,
                    values,
                }
            }
            _ => return Err(BtfError::UnknownKind { type_id, kind }),
        };
        types.push(ty);
    }
    Ok(types)
}

/// Little-endian cursor that reports truncation instead of panicking.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Self {
        Reader { data, pos: 0, what }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next `n` bytes.
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], BtfError> {
        let start = self.pos;
        self.skip(n)?;
        Ok(&self.data[start..self.pos])
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], BtfError> {
        let end = self
            .pos
            .checked_add(N)
            .ok_or(BtfError::Truncated(self.what))?;
        let bytes = self
            .data
            .get(self.pos..end)
            .ok_or(BtfError::Truncated(self.what))?;
        self.pos = end;
        bytes.try_into().map_err(|_| BtfError::Truncated(self.what))
    }

    fn skip(&mut self, n: usize) -> Result<(), BtfError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(BtfError::Truncated(self.what))?;
        self.pos = end;
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, BtfError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, BtfError> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, BtfError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
}
