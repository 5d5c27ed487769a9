//! Decoding BTF: the header, the string section and every type record,
//! into the `Btf` tables that the queries in `mod.rs` walk. Every read is
//! bounds-checked (`Reader`); nothing here follows type ids.

use super::{Btf, BtfError, HEADER_LEN, MAGIC, Member, Param, Type};

impl Btf {
    /// Parses raw (little-endian) BTF, e.g. the contents of /sys/kernel/btf/vmlinux.
    pub(crate) fn parse(data: &[u8]) -> Result<Btf, BtfError> {
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
        let ty = match kind {
            1 => {
                let enc = r.u32()?;
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
                let elem = r.u32()?;
                let _index_type = r.u32()?;
                Type::Array {
                    elem,
                    nelems: r.u32()?,
                }
            }
            4 | 5 => {
                let mut members = Vec::with_capacity(vlen.min(r.remaining() / 12));
                for _ in 0..vlen {
                    let name = check_name(r.u32()?)?;
                    let ty = r.u32()?;
                    let raw = r.u32()?;
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
                let mut values = Vec::with_capacity(vlen.min(r.remaining() / 8));
                for _ in 0..vlen {
                    let name = check_name(r.u32()?)?;
                    let raw = r.u32()?;
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
                let mut params = Vec::with_capacity(vlen.min(r.remaining() / 8));
                for _ in 0..vlen {
                    let name = check_name(r.u32()?)?;
                    params.push(Param { name, ty: r.u32()? });
                }
                Type::FuncProto { params }
            }
            14 => {
                let _linkage = r.u32()?;
                Type::Var { name }
            }
            15 => {
                // Section variables (type, offset, size) are not needed.
                r.skip(
                    vlen.checked_mul(12)
                        .ok_or(BtfError::Truncated("type section"))?,
                )?;
                Type::Datasec {
                    name,
                    size: size_or_type,
                }
            }
            16 => Type::Float {
                name,
                size: size_or_type,
            },
            17 => {
                let _component_idx = r.u32()?;
                Type::DeclTag { name }
            }
            19 => {
                let mut values = Vec::with_capacity(vlen.min(r.remaining() / 12));
                for _ in 0..vlen {
                    let name = check_name(r.u32()?)?;
                    let lo = u64::from(r.u32()?);
                    let hi = u64::from(r.u32()?);
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

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
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
