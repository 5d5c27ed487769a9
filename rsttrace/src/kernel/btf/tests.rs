use aya_obj::btf::BtfKind;
use std::path::Path;

use super::*;

/// Assembles BTF blobs for tests; ids are assigned in call order from 1.
#[derive(Default)]
pub(crate) struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Builder {
    pub(crate) fn new() -> Self {
        Builder {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    fn name(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn words(&mut self, words: &[u32]) {
        for w in words {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
    }

    fn header(
        &mut self,
        name: &str,
        kind: u32,
        vlen: usize,
        kind_flag: bool,
        size_or_type: u32,
    ) -> u32 {
        let name = self.name(name);
        let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen as u32;
        self.words(&[name, info, size_or_type]);
        self.next_id += 1;
        self.next_id - 1
    }

    pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
        let id = self.header(name, 1, 0, false, size);
        self.words(&[size.wrapping_mul(8)]);
        id
    }

    /// An INT that encodes a bitfield (the pre-kind_flag encoding).
    pub(crate) fn int_bits(&mut self, name: &str, size: u32, bit_offset: u32, bits: u32) -> u32 {
        let id = self.header(name, 1, 0, false, size);
        self.words(&[(bit_offset << 16) | bits]);
        id
    }

    pub(crate) fn ptr(&mut self, target: u32) -> u32 {
        self.header("", 2, 0, false, target)
    }

    pub(crate) fn array(&mut self, elem: u32, index: u32, nelems: u32) -> u32 {
        let id = self.header("", 3, 0, false, 0);
        self.words(&[elem, index, nelems]);
        id
    }

    /// Members are (name, type, bit offset, bitfield size); a non-zero
    /// bitfield size requires `kind_flag`.
    pub(crate) fn composite(
        &mut self,
        union: bool,
        name: &str,
        size: u32,
        kind_flag: bool,
        members: &[(&str, u32, u32, u32)],
    ) -> u32 {
        let names: Vec<u32> = members.iter().map(|m| self.name(m.0)).collect();
        let id = self.header(
            name,
            if union { 5 } else { 4 },
            members.len(),
            kind_flag,
            size,
        );
        for (m, n) in members.iter().zip(names) {
            let off = if kind_flag { (m.3 << 24) | m.2 } else { m.2 };
            self.words(&[n, m.1, off]);
        }
        id
    }

    pub(crate) fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        let members: Vec<_> = members.iter().map(|&(n, t, o)| (n, t, o, 0)).collect();
        self.composite(false, name, size, false, &members)
    }

    pub(crate) fn enumeration(&mut self, name: &str, signed: bool, values: &[(&str, i32)]) -> u32 {
        let names: Vec<u32> = values.iter().map(|v| self.name(v.0)).collect();
        let id = self.header(name, 6, values.len(), signed, 4);
        for (v, n) in values.iter().zip(names) {
            self.words(&[n, v.1 as u32]);
        }
        id
    }

    pub(crate) fn enum64(&mut self, name: &str, values: &[(&str, u64)]) -> u32 {
        let names: Vec<u32> = values.iter().map(|v| self.name(v.0)).collect();
        let id = self.header(name, 19, values.len(), false, 8);
        for (v, n) in values.iter().zip(names) {
            self.words(&[n, v.1 as u32, (v.1 >> 32) as u32]);
        }
        id
    }

    pub(crate) fn typedef(&mut self, name: &str, target: u32) -> u32 {
        self.header(name, 8, 0, false, target)
    }

    /// kind 9 volatile, 10 const, 11 restrict, 18 type tag.
    pub(crate) fn qualifier(&mut self, kind: u32, target: u32) -> u32 {
        self.header("", kind, 0, false, target)
    }

    pub(crate) fn func_proto(&mut self, ret: u32, params: &[u32]) -> u32 {
        let id = self.header("", 13, params.len(), false, ret);
        for &p in params {
            self.words(&[0, p]);
        }
        id
    }

    pub(crate) fn raw(
        &mut self,
        name: &str,
        kind: u32,
        vlen: usize,
        size_or_type: u32,
        trailer: &[u32],
    ) -> u32 {
        let id = self.header(name, kind, vlen, false, size_or_type);
        self.words(trailer);
        id
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            HEADER_LEN as u32,
            0,
            self.types.len() as u32,
            self.types.len() as u32,
            self.strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// A miniature `struct sock_common` with the real nesting:
/// union { u64 addrpair; struct { u32 daddr; u32 rcv_saddr; }; } at 0,
/// then u16 family at 8, a bitfield group, and a typedef'd in6_addr.
fn sock_blob() -> Vec<u8> {
    let mut b = Builder::new();
    let u8t = b.int("unsigned char", 1);
    let u16t = b.int("short unsigned int", 2);
    let u32t = b.int("unsigned int", 4);
    let u64t = b.int("long long unsigned int", 8);
    let be32 = b.typedef("__be32", u32t);
    let anon_s = b.strukt(
        "",
        8,
        &[("skc_daddr", be32, 0), ("skc_rcv_saddr", be32, 32)],
    );
    let anon_u = b.composite(
        true,
        "",
        8,
        false,
        &[("skc_addrpair", u64t, 0, 0), ("", anon_s, 0, 0)],
    );
    let vol_u8 = b.qualifier(9, u8t);
    let idx = b.int("int", 4);
    let arr = b.array(u8t, idx, 16);
    let in6 = b.strukt("in6_addr", 16, &[("s6_addr", arr, 0)]);
    let common = b.composite(
        false,
        "sock_common",
        48,
        true,
        &[
            ("", anon_u, 0, 0),
            ("skc_family", u16t, 64, 0),
            ("skc_state", vol_u8, 80, 0),
            ("skc_reuse", u8t, 88, 4),
            ("skc_reuseport", u8t, 92, 1),
            ("skc_v6_daddr", in6, 128, 0),
        ],
    );
    let cv = b.qualifier(10, common);
    let td = b.typedef("sock_common_t", cv);
    b.strukt("sock", 64, &[("__sk_common", td, 0), ("sk_err", idx, 384)]);
    b.build()
}

#[test]
fn finds_members_through_anonymous_unions() {
    let btf = Btf::parse(&sock_blob()).unwrap();
    let loc = |s, p| btf.struct_member(s, p);
    assert_eq!(
        loc("sock_common", "skc_daddr"),
        Some(MemberLoc {
            bit_offset: 0,
            bit_size: 0,
            byte_size: 4
        })
    );
    assert_eq!(
        loc("sock_common", "skc_rcv_saddr"),
        Some(MemberLoc {
            bit_offset: 32,
            bit_size: 0,
            byte_size: 4
        })
    );
    assert_eq!(
        loc("sock_common", "skc_addrpair").map(|l| l.byte_size),
        Some(8)
    );
    assert_eq!(
        loc("sock_common", "skc_state"),
        Some(MemberLoc {
            bit_offset: 80,
            bit_size: 0,
            byte_size: 1
        })
    );
    assert_eq!(
        loc("sock_common", "skc_v6_daddr").map(|l| (l.bit_offset, l.byte_size)),
        Some((128, 16))
    );
    assert_eq!(
        loc("sock_common", "skc_v6_daddr.s6_addr").map(|l| l.byte_size),
        Some(16)
    );
    // Through a typedef and a const into a named nested struct.
    assert_eq!(
        loc("sock", "__sk_common.skc_rcv_saddr").map(|l| l.bit_offset),
        Some(32)
    );
    assert_eq!(loc("sock", "sk_err").map(|l| l.bit_offset), Some(384));
    assert_eq!(
        loc("sock", "skc_daddr"),
        None,
        "named members are not searched transparently"
    );
    assert_eq!(loc("sock", "__sk_common.nope"), None);
    assert_eq!(loc("sock", "sk_err.x"), None);
    assert_eq!(loc("sock", ""), None);
    assert_eq!(loc("sock", "__sk_common."), None);
    assert_eq!(loc("nope", "sk_err"), None);
    assert!(btf.has_type("in6_addr"));
    assert_eq!(btf.struct_size("sock"), Some(64));
}

#[test]
fn decodes_bitfields() {
    let btf = Btf::parse(&sock_blob()).unwrap();
    assert_eq!(
        btf.struct_member("sock_common", "skc_reuse"),
        Some(MemberLoc {
            bit_offset: 88,
            bit_size: 4,
            byte_size: 1
        })
    );
    assert_eq!(
        btf.struct_member("sock_common", "skc_reuseport"),
        Some(MemberLoc {
            bit_offset: 92,
            bit_size: 1,
            byte_size: 1
        })
    );

    // Without kind_flag the width and extra offset live in the INT.
    let mut b = Builder::new();
    let bits = b.int_bits("unsigned int", 4, 3, 5);
    let plain = b.int("unsigned int", 4);
    b.strukt("old", 8, &[("a", plain, 0), ("flags", bits, 32)]);
    let btf = Btf::parse(&b.build()).unwrap();
    assert_eq!(
        btf.struct_member("old", "flags"),
        Some(MemberLoc {
            bit_offset: 35,
            bit_size: 5,
            byte_size: 4
        })
    );
    assert_eq!(btf.struct_member("old", "a").map(|l| l.bit_size), Some(0));
}

#[test]
fn reads_enums() {
    let mut b = Builder::new();
    b.enumeration("sock_flags", false, &[]); // a forward declaration
    b.enumeration("sock_flags", false, &[("SOCK_DEAD", 0), ("SOCK_LINGER", 4)]);
    b.enumeration("signed_e", true, &[("NEG", -2)]);
    b.enumeration("unsigned_e", false, &[("BIG", -2)]);
    b.enum64("wide", &[("W", 1 << 40), ("ALL", u64::MAX)]);
    let btf = Btf::parse(&b.build()).unwrap();
    assert_eq!(
        btf.enum_values("sock_flags"),
        Some(vec![("SOCK_DEAD".into(), 0), ("SOCK_LINGER".into(), 4)])
    );
    assert_eq!(btf.enum_values("signed_e"), Some(vec![("NEG".into(), -2)]));
    assert_eq!(
        btf.enum_values("unsigned_e"),
        Some(vec![("BIG".into(), 0xffff_fffe)])
    );
    assert_eq!(
        btf.enum_values("wide"),
        Some(vec![("W".into(), 1 << 40), ("ALL".into(), -1)])
    );
    assert_eq!(btf.enum_values("missing"), None);
}

#[test]
fn counts_func_proto_params_through_typedef() {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    let vp = b.ptr(0);
    let sk = b.strukt("sock", 8, &[]);
    let skp = b.ptr(sk);
    let csk = b.qualifier(10, skp);
    let proto4 = b.func_proto(0, &[vp, csk, skp, int]);
    let p4 = b.ptr(proto4);
    b.typedef("btf_trace_tcp_send_reset", p4);
    let proto3 = b.func_proto(0, &[vp, skp, 0]); // trailing 0 = varargs
    let p3 = b.ptr(proto3);
    b.typedef("btf_trace_varargs", p3);
    b.typedef("not_a_fn", int);
    let btf = Btf::parse(&b.build()).unwrap();
    assert_eq!(
        btf.func_proto_param_count("btf_trace_tcp_send_reset"),
        Some(4)
    );
    assert_eq!(btf.func_proto_param_count("btf_trace_varargs"), Some(2));
    assert_eq!(btf.func_proto_param_count("not_a_fn"), None);
    assert_eq!(btf.func_proto_param_count("missing"), None);
}

#[test]
fn walks_every_kind() {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    b.raw("fwd", 7, 0, 0, &[]);
    b.qualifier(11, int);
    b.raw("f", 12, 0, 0, &[]);
    b.raw("v", 14, 0, int, &[1]);
    b.raw(".data", 15, 2, 8, &[int, 0, 4, int, 4, 4]);
    b.raw("double", 16, 0, 8, &[]);
    b.raw("tag", 17, 0, int, &[u32::MAX]);
    let tagged = b.qualifier(18, int);
    b.strukt("after", 4, &[("x", tagged, 0)]);
    let btf = Btf::parse(&b.build()).unwrap();
    assert_eq!(
        btf.struct_member("after", "x").map(|l| l.byte_size),
        Some(4)
    );
    assert!(btf.has_type(".data") && btf.has_type("double") && !btf.has_type(""));
}

#[test]
fn rejects_malformed_input() {
    let good = sock_blob();
    assert!(Btf::parse(&good).is_ok());
    for len in 0..good.len() {
        assert!(
            Btf::parse(&good[..len]).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
    assert!(matches!(
        Btf::parse(&[0x9f, 0xeb]),
        Err(BtfError::Truncated(_))
    ));
    assert!(matches!(
        Btf::parse(b"\xeb\x9f\x01\x00"),
        Err(BtfError::BigEndian)
    ));
    assert!(matches!(
        Btf::parse(b"garbage garbage garbage garbage"),
        Err(BtfError::BadMagic(_))
    ));

    let mut bad = good.clone();
    bad[2] = 2;
    assert!(matches!(
        Btf::parse(&bad),
        Err(BtfError::UnsupportedVersion(2))
    ));
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes()); // hdr_len
    assert!(Btf::parse(&bad).is_err());
    let mut bad = good.clone();
    bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes()); // str_len
    assert!(Btf::parse(&bad).is_err());

    let mut b = Builder::new();
    b.raw("x", 20, 0, 0, &[]);
    assert!(matches!(
        Btf::parse(&b.build()),
        Err(BtfError::UnknownKind {
            type_id: 1,
            kind: 20
        })
    ));
    let mut b = Builder::new();
    b.raw("x", 4, 1, 4, &[1000, 0, 0]); // member name beyond the strings
    assert!(matches!(
        Btf::parse(&b.build()),
        Err(BtfError::BadString(1000))
    ));
}

#[test]
fn survives_cycles_and_corruption() {
    // typedef a -> typedef b -> typedef a, and a struct embedding itself anonymously.
    let mut b = Builder::new();
    b.typedef("a", 2);
    b.typedef("b", 1);
    b.strukt("loop", 4, &[("", 3, 0), ("t", 1, 0)]);
    b.strukt("dangling", 4, &[("p", 999, 0)]);
    let arr = b.array(6, 0, u32::MAX);
    b.int("big", u32::MAX);
    b.strukt("huge", 4, &[("h", arr, 0)]);
    let btf = Btf::parse(&b.build()).unwrap();
    assert_eq!(btf.struct_member("loop", "t"), None);
    assert_eq!(btf.struct_member("loop", "missing"), None);
    assert_eq!(btf.struct_member("dangling", "p"), None);
    assert_eq!(btf.struct_member("huge", "h"), None);

    // Flip every byte of a valid blob: parse and lookups must not panic.
    let good = sock_blob();
    for i in 0..good.len() {
        for v in [0x00, 0xff, 0x80, 0x01] {
            let mut bad = good.clone();
            bad[i] = v;
            if let Ok(btf) = Btf::parse(&bad) {
                let _ = btf.struct_member("sock", "__sk_common.skc_state");
                let _ = btf.struct_member("sock_common", "skc_reuse");
                let _ = btf.enum_values("sock_flags");
                let _ = btf.func_proto_param_count("sock_common_t");
            }
        }
    }
}

#[test]
fn parses_running_kernel() {
    if !Path::new(SYS_FS_VMLINUX).exists() {
        crate::test_support::skipped("kernel::btf", &format!("no {SYS_FS_VMLINUX}"));
        return;
    }
    let btf = Btf::from_sys_fs().unwrap();
    let state = btf.struct_member("sock_common", "skc_state").unwrap();
    assert_eq!(state.byte_size, 1);
    assert!(state.bit_offset / 8 < 64);
    assert_eq!(
        btf.struct_member("sock", "__sk_common.skc_state"),
        Some(state)
    );
    let daddr = btf.struct_member("sock_common", "skc_daddr").unwrap();
    assert_eq!(daddr.byte_size, 4);
    assert_eq!(
        btf.struct_member("sock_common", "skc_v6_daddr")
            .map(|l| l.byte_size),
        Some(16)
    );
    if let Some(reasons) = btf.enum_values("sk_rst_reason") {
        assert!(
            reasons.iter().any(|(n, _)| n == "SK_RST_REASON_NO_SOCKET"),
            "{reasons:?}"
        );
    } else {
        eprintln!("kernel has no enum sk_rst_reason (before 6.10)");
    }
    let params = btf
        .func_proto_param_count("btf_trace_tcp_send_reset")
        .unwrap();
    assert!(params == 3 || params == 4, "{params}");
}

/// aya's type id for `name` of `kind` in `blob`, as its attach calls find it.
fn aya_id(blob: &[u8], name: &str, kind: BtfKind) -> Option<u32> {
    aya::Btf::parse(blob, aya::Endianness::Little)
        .unwrap()
        .id_by_type_name_kind(name, kind)
        .ok()
}

#[test]
fn attach_names_keep_every_func_and_typedef_id() {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    let sock = b.strukt("sock", 8, &[("sk_err", int, 0), ("sk_state", int, 32)]);
    b.enumeration("sk_rst_reason", false, &[("A", 1), ("B", 2)]);
    let ptr = b.ptr(sock);
    let proto = b.func_proto(int, &[ptr, int]);
    b.raw("tcp_send_active_reset", 12, 1, proto, &[]);
    b.typedef("btf_trace_tcp_send_reset", ptr);
    b.raw(".data", 15, 2, 8, &[int, 0, 4, int, 4, 4]);
    b.enum64("big", &[("X", u64::MAX)]);
    b.raw("tcp_reset", 12, 0, proto, &[]);
    // Two types may share a name; aya takes the first of the kind asked.
    b.typedef("sock", int);
    let full = b.build();
    let reduced = attach_names(&full).unwrap();
    assert!(
        reduced.len() < full.len(),
        "{} >= {}",
        reduced.len(),
        full.len()
    );

    use BtfKind::{Func, Struct, Typedef};
    for (name, kind) in [
        ("tcp_send_active_reset", Func),
        ("tcp_reset", Func),
        ("btf_trace_tcp_send_reset", Typedef),
        ("sock", Typedef),
    ] {
        let id = aya_id(&full, name, kind);
        assert!(id.is_some(), "{name} missing from the test blob");
        assert_eq!(aya_id(&reduced, name, kind), id, "{name}");
    }
    // What attaching never asks for is gone.
    assert_eq!(aya_id(&reduced, "sock", Struct), None);
    assert_eq!(aya_id(&reduced, "btf_trace_tcp_send_reset", Func), None);
    // Still well-formed for our own parser, with the same number of types.
    assert_eq!(
        Btf::parse(&reduced).unwrap().types.len(),
        Btf::parse(&full).unwrap().types.len()
    );
}

#[test]
fn attach_names_reject_malformed_input() {
    let good = sock_blob();
    assert!(attach_names(&good).is_ok());
    for len in 0..good.len() {
        assert!(
            attach_names(&good[..len]).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
    let mut b = Builder::new();
    b.raw("x", 20, 0, 0, &[]);
    assert!(matches!(
        attach_names(&b.build()),
        Err(BtfError::UnknownKind {
            type_id: 1,
            kind: 20
        })
    ));
    let mut b = Builder::new();
    b.raw("f", 12, 0, 0, &[]);
    let mut bad = b.build();
    bad[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(attach_names(&bad), Err(BtfError::BadString(1000))));
    for i in 0..good.len() {
        for v in [0x00, 0xff, 0x80, 0x01] {
            let mut bad = good.clone();
            bad[i] = v;
            if let Ok(reduced) = attach_names(&bad) {
                assert!(Btf::parse(&reduced).is_ok(), "byte {i} = {v:#x}");
            }
        }
    }
}

#[test]
fn attach_names_of_running_kernel_match_aya() {
    if !Path::new(SYS_FS_VMLINUX).exists() {
        crate::test_support::skipped("kernel::btf", &format!("no {SYS_FS_VMLINUX}"));
        return;
    }
    let full = std::fs::read(SYS_FS_VMLINUX).unwrap();
    let reduced = attach_names(&full).unwrap();
    let (full, reduced) = (
        aya::Btf::parse(&full, aya::Endianness::Little).unwrap(),
        aya::Btf::parse(&reduced, aya::Endianness::Little).unwrap(),
    );
    for (name, kind) in [
        ("btf_trace_tcp_send_reset", BtfKind::Typedef),
        ("btf_trace_inet_sock_set_state", BtfKind::Typedef),
        ("btf_trace_netif_receive_skb", BtfKind::Typedef),
        ("tcp_send_active_reset", BtfKind::Func),
        ("tcp_v4_send_reset", BtfKind::Func),
    ] {
        let id = full.id_by_type_name_kind(name, kind).unwrap();
        assert_eq!(
            reduced.id_by_type_name_kind(name, kind).unwrap(),
            id,
            "{name}"
        );
    }
}
