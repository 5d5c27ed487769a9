//! A small, read-only parser for the kernel's BTF type information.
//!
//! Rust eBPF has no CO-RE relocations, so userspace looks up struct member
//! offsets in `/sys/kernel/btf/vmlinux` and hands them to the programs.
//! Only what that needs is decoded: composite members, enums, typedefs and
//! function prototypes. Every kind is still walked so the type section can be
//! traversed. The input is untrusted: every read is bounds-checked and every
//! walk of the type graph is bounded, so malformed data yields an error or
//! `None`, never a panic or a hang.
//!
//! `parse` decodes the raw data into the type table; this module holds the
//! table and the queries (members, enums, prototypes) that walk it.
//!
//! Format reference: <https://docs.kernel.org/bpf/btf.html>.

use std::fmt;

mod parse;

pub(crate) use parse::attach_names;

/// Where the running kernel exposes its own BTF.
pub(crate) const SYS_FS_VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

/// Bounds on walks of the type graph, which malformed input can make cyclic
/// (typedef loops) or exponential (shared anonymous members).
const MAX_DEPTH: u32 = 32;
const MAX_MEMBER_VISITS: u32 = 1 << 20;

/// Where a struct member lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MemberLoc {
    /// Offset in bits from the start of the outermost struct of the lookup.
    pub(crate) bit_offset: u32,
    /// Width of a bitfield in bits; 0 when the member is not a bitfield.
    pub(crate) bit_size: u32,
    /// Size in bytes of the member's type (after typedefs and qualifiers).
    pub(crate) byte_size: u32,
}

impl MemberLoc {
    pub(crate) fn is_bitfield(&self) -> bool {
        self.bit_size != 0
    }
}

#[derive(Debug)]
pub(crate) enum BtfError {
    /// The data ends before the named structure does.
    Truncated(&'static str),
    BadMagic(u16),
    /// Byte-swapped magic: BTF of a big-endian machine.
    BigEndian,
    UnsupportedVersion(u8),
    /// A header or section field is inconsistent.
    Malformed(&'static str),
    UnknownKind {
        type_id: u32,
        kind: u32,
    },
    /// A name offset points outside the string section.
    BadString(u32),
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BtfError::Truncated(what) => write!(f, "BTF data truncated in {what}"),
            BtfError::BadMagic(m) => {
                write!(f, "not BTF data (magic {m:#06x}, expected {MAGIC:#06x})")
            }
            BtfError::BigEndian => write!(f, "big-endian BTF is not supported"),
            BtfError::UnsupportedVersion(v) => write!(f, "unsupported BTF version {v}"),
            BtfError::Malformed(what) => write!(f, "malformed BTF: {what}"),
            BtfError::UnknownKind { type_id, kind } => {
                write!(f, "malformed BTF: type {type_id} has unknown kind {kind}")
            }
            BtfError::BadString(off) => {
                write!(f, "malformed BTF: string offset {off} out of range")
            }
        }
    }
}

impl std::error::Error for BtfError {}

/// Parsed BTF: the type table (type id `n` is `types[n - 1]`; 0 is void)
/// and the string section that names refer to by offset.
#[derive(Debug)]
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    /// BTF has no size for pointers; taken from `long` (8 when absent).
    ptr_size: u32,
}

#[derive(Debug)]
enum Type {
    Int {
        name: u32,
        size: u32,
        bits: u32,
        bit_offset: u32,
    },
    Ptr {
        target: u32,
    },
    Array {
        elem: u32,
        nelems: u32,
    },
    Composite {
        name: u32,
        size: u32,
        is_union: bool,
        kind_flag: bool,
        members: Vec<Member>,
    },
    Enum {
        name: u32,
        size: u32,
        values: Vec<(u32, i64)>,
    },
    Fwd {
        name: u32,
    },
    Typedef {
        name: u32,
        target: u32,
    },
    /// VOLATILE, CONST, RESTRICT and TYPE_TAG: transparent for layout.
    Qualifier {
        target: u32,
    },
    Func {
        name: u32,
        /// The FUNC_PROTO type id.
        proto: u32,
    },
    FuncProto {
        params: Vec<Param>,
    },
    Var {
        name: u32,
    },
    Datasec {
        name: u32,
        size: u32,
    },
    Float {
        name: u32,
        size: u32,
    },
    DeclTag {
        name: u32,
    },
}

#[derive(Debug)]
struct Member {
    name: u32,
    ty: u32,
    /// Decoded from the raw offset word according to the struct's kind_flag.
    bit_offset: u32,
    bit_size: u32,
}

#[derive(Debug)]
struct Param {
    name: u32,
    ty: u32,
}

impl Btf {
    /// For tests: the running kernel's BTF (rsttrace itself reads it
    /// through `btf_source`, which also serves `--btf`).
    #[cfg(test)]
    pub(crate) fn from_sys_fs() -> Result<Btf, Box<dyn std::error::Error>> {
        Ok(Btf::parse(&std::fs::read(SYS_FS_VMLINUX)?)?)
    }

    /// Looks up a member of `struct struct_name` (or union) by a dotted path
    /// such as `"__sk_common.skc_state"`. Each path component may sit inside
    /// anonymous structs/unions, which are searched transparently, as in C.
    pub(crate) fn struct_member(&self, struct_name: &str, path: &str) -> Option<MemberLoc> {
        let mut comp = self
            .find_type(struct_name, |t| {
                matches!(
                    t,
                    Type::Composite {
                        is_union: false,
                        ..
                    }
                )
            })
            .or_else(|| {
                self.find_type(struct_name, |t| {
                    matches!(t, Type::Composite { is_union: true, .. })
                })
            })?;
        let mut base = 0u32;
        let mut budget = MAX_MEMBER_VISITS;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            if part.is_empty() {
                return None;
            }
            let (member, kind_flag, offset) = self.find_member(comp, part, base, &mut budget, 0)?;
            let loc = self.member_loc(member, kind_flag, offset)?;
            if parts.peek().is_none() {
                return Some(loc);
            }
            if loc.is_bitfield() {
                return None;
            }
            comp = self.get(self.skip_qualifiers(member.ty)?)?;
            if !matches!(comp, Type::Composite { .. }) {
                return None;
            }
            base = loc.bit_offset;
        }
        None
    }

    /// Enumerators of `enum enum_name` (ENUM or ENUM64). Values are read with
    /// the enum's signedness; unsigned 64-bit values above `i64::MAX` wrap.
    pub(crate) fn enum_values(&self, enum_name: &str) -> Option<Vec<(String, i64)>> {
        // Prefer a definition with enumerators over a forward-declared enum.
        let ty = self
            .find_type(
                enum_name,
                |t| matches!(t, Type::Enum { values, .. } if !values.is_empty()),
            )
            .or_else(|| self.find_type(enum_name, |t| matches!(t, Type::Enum { .. })))?;
        let Type::Enum { values, .. } = ty else {
            return None;
        };
        values
            .iter()
            .map(|&(name, value)| Some((self.str_at(name)?.to_owned(), value)))
            .collect()
    }

    /// Number of parameters of the function-pointer typedef `typedef_name`
    /// (e.g. `btf_trace_tcp_send_reset`: typedef -> PTR -> FUNC_PROTO). A
    /// trailing varargs marker is not counted.
    pub(crate) fn func_proto_param_count(&self, typedef_name: &str) -> Option<usize> {
        let Type::Typedef { target, .. } =
            self.find_type(typedef_name, |t| matches!(t, Type::Typedef { .. }))?
        else {
            return None;
        };
        let Type::Ptr { target } = self.get(self.skip_qualifiers(*target)?)? else {
            return None;
        };
        let Type::FuncProto { params } = self.get(self.skip_qualifiers(*target)?)? else {
            return None;
        };
        let varargs = params.last().is_some_and(|p| p.name == 0 && p.ty == 0);
        Some(params.len() - usize::from(varargs))
    }

    /// Number of parameters of the kernel function `name` (BTF FUNC), which
    /// exists only when the function was not inlined away.
    pub(crate) fn func_param_count(&self, name: &str) -> Option<usize> {
        let Type::Func { proto, .. } = self.find_type(name, |t| matches!(t, Type::Func { .. }))?
        else {
            return None;
        };
        let Type::FuncProto { params } = self.get(*proto)? else {
            return None;
        };
        let varargs = params.last().is_some_and(|p| p.name == 0 && p.ty == 0);
        Some(params.len() - usize::from(varargs))
    }

    /// Whether any type (struct, enum, typedef, function, ...) has this name.
    #[cfg(test)]
    pub(crate) fn has_type(&self, name: &str) -> bool {
        self.find_type(name, |_| true).is_some()
    }

    /// Size in bytes of `struct name` (or union).
    #[cfg(test)]
    pub(crate) fn struct_size(&self, name: &str) -> Option<u32> {
        match self.find_type(name, |t| matches!(t, Type::Composite { .. }))? {
            Type::Composite { size, .. } => Some(*size),
            _ => None,
        }
    }

    /// Depth-first search for a named member in declaration order, entering
    /// anonymous struct/union members. Returns the member, its struct's
    /// kind_flag, and the bit offset of that struct.
    fn find_member<'a>(
        &'a self,
        comp: &'a Type,
        name: &str,
        base: u32,
        budget: &mut u32,
        depth: u32,
    ) -> Option<(&'a Member, bool, u32)> {
        let Type::Composite {
            members, kind_flag, ..
        } = comp
        else {
            return None;
        };
        if depth > MAX_DEPTH {
            return None;
        }
        for m in members {
            *budget = budget.checked_sub(1)?;
            if m.name != 0 {
                if self.name_is(m.name, name) {
                    return Some((m, *kind_flag, base));
                }
                continue;
            }
            let Some(inner) = self.skip_qualifiers(m.ty).and_then(|id| self.get(id)) else {
                continue;
            };
            if matches!(inner, Type::Composite { .. }) {
                let inner_base = base.checked_add(m.bit_offset)?;
                if let Some(found) = self.find_member(inner, name, inner_base, budget, depth + 1) {
                    return Some(found);
                }
            }
        }
        None
    }

    fn member_loc(&self, m: &Member, kind_flag: bool, base: u32) -> Option<MemberLoc> {
        let mut bit_offset = base.checked_add(m.bit_offset)?;
        let mut bit_size = m.bit_size;
        // Without kind_flag a bitfield is encoded in its INT type instead.
        if !kind_flag
            && let Some(&Type::Int {
                size,
                bits,
                bit_offset: int_off,
                ..
            }) = self.skip_qualifiers(m.ty).and_then(|id| self.get(id))
            && (bits != size.saturating_mul(8) || int_off != 0)
        {
            bit_size = bits;
            bit_offset = bit_offset.checked_add(int_off)?;
        }
        Some(MemberLoc {
            bit_offset,
            bit_size,
            byte_size: self.type_size(m.ty, 0)?,
        })
    }

    fn type_size(&self, id: u32, depth: u32) -> Option<u32> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.get(id)? {
            Type::Int { size, .. }
            | Type::Composite { size, .. }
            | Type::Enum { size, .. }
            | Type::Datasec { size, .. }
            | Type::Float { size, .. } => Some(*size),
            Type::Ptr { .. } => Some(self.ptr_size),
            Type::Array { elem, nelems } => self.type_size(*elem, depth + 1)?.checked_mul(*nelems),
            Type::Typedef { target, .. } | Type::Qualifier { target } => {
                self.type_size(*target, depth + 1)
            }
            Type::Fwd { .. }
            | Type::Func { .. }
            | Type::FuncProto { .. }
            | Type::Var { .. }
            | Type::DeclTag { .. } => None,
        }
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn skip_qualifiers(&self, mut id: u32) -> Option<u32> {
        for _ in 0..MAX_DEPTH {
            match self.get(id)? {
                Type::Typedef { target, .. } | Type::Qualifier { target } => id = *target,
                _ => return Some(id),
            }
        }
        None
    }

    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get(usize::try_from(id).ok()?.checked_sub(1)?)
    }

    /// First type of the wanted kind with this name. A linear scan: vmlinux
    /// BTF is deduplicated and callers make a few dozen lookups at start-up.
    fn find_type(&self, name: &str, want: impl Fn(&Type) -> bool) -> Option<&Type> {
        if name.is_empty() {
            return None;
        }
        self.types
            .iter()
            .find(|t| t.name().is_some_and(|n| self.name_is(n, name)) && want(t))
    }

    fn name_is(&self, off: u32, name: &str) -> bool {
        self.str_bytes(off) == Some(name.as_bytes())
    }

    fn str_bytes(&self, off: u32) -> Option<&[u8]> {
        let rest = self.strings.get(usize::try_from(off).ok()?..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..end])
    }

    fn str_at(&self, off: u32) -> Option<&str> {
        std::str::from_utf8(self.str_bytes(off)?).ok()
    }
}

impl Type {
    fn name(&self) -> Option<u32> {
        match self {
            Type::Int { name, .. }
            | Type::Composite { name, .. }
            | Type::Enum { name, .. }
            | Type::Fwd { name }
            | Type::Typedef { name, .. }
            | Type::Func { name, .. }
            | Type::Var { name }
            | Type::Datasec { name, .. }
            | Type::Float { name, .. }
            | Type::DeclTag { name } => Some(*name),
            Type::Ptr { .. }
            | Type::Array { .. }
            | Type::Qualifier { .. }
            | Type::FuncProto { .. } => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
