//! Fills the programs' `Offsets` table from the running kernel's BTF.
//!
//! Socket offsets are from the `struct sock *`: sock_common is the first
//! member of sock, which is the first of inet_sock, inet_connection_sock and
//! tcp_sock (the kernel's own `inet_sk()`/`tcp_sk()` are plain casts), so an
//! offset within any of them is an offset from the socket pointer.

use anyhow::{Result, bail, ensure};
use rsttrace_ebpf::abi::{Field, FieldSpec, Load, Offsets};

use super::btf::{Btf, MemberLoc};

/// Resolves every `Offsets` field. Missing required fields are an error;
/// missing optional ones are `Field::ABSENT` (or `ABSENT` for bit numbers)
/// and their names are returned so the caller can say what is degraded.
pub(crate) fn resolve(btf: &Btf) -> Result<(Offsets, Vec<String>)> {
    let mut o = Offsets::UNRESOLVED;
    let mut missing = Vec::new();
    let mut absent = Vec::new();

    for s in Offsets::FIELDS {
        match lookup(btf, s) {
            Ok(field) => *(s.slot)(&mut o) = field,
            Err(why) if s.required => missing.push(format!("{} ({why})", s.name)),
            Err(why) => {
                log::debug!("{} unavailable: {why}", s.name);
                absent.push(s.name.to_owned());
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "kernel {} lacks struct members rsttrace needs: {}",
            kernel_release(),
            missing.join("; ")
        );
    }
    // The skc_* offsets are used on timewait and request sockets too.
    for (outer, member) in [
        ("sock", "__sk_common"),
        ("inet_timewait_sock", "__tw_common"),
    ] {
        if let Some(loc) = btf.struct_member(outer, member) {
            ensure!(
                loc.bit_offset == 0,
                "{outer}.{member} is not at offset 0 on kernel {}",
                kernel_release()
            );
        }
    }

    let flags = btf.enum_values("sock_flags").unwrap_or_default();
    for b in Offsets::SOCK_FLAG_BITS {
        let bit = flags
            .iter()
            .find(|(n, _)| n == b.enumerator)
            .map(|&(_, v)| v);
        // sk_flags is an unsigned long: a bit number beyond it is nonsense.
        match bit.and_then(|v| u32::try_from(v).ok()).filter(|&v| v < 64) {
            Some(v) => *(b.slot)(&mut o) = v,
            None => absent.push(b.name.to_owned()),
        }
    }

    sanity_check(&o)?;
    Ok((o, absent))
}

/// `enum sk_rst_reason` as (value, name without `SK_RST_REASON_`); empty on
/// kernels before 6.10, which have no reset reasons.
pub(crate) fn rst_reason_names(btf: &Btf) -> Vec<(u32, String)> {
    let values = btf.enum_values("sk_rst_reason").unwrap_or_default();
    values
        .into_iter()
        .filter_map(|(name, v)| {
            let v = u32::try_from(v).ok()?;
            let name = name
                .strip_prefix("SK_RST_REASON_")
                .map(str::to_owned)
                .unwrap_or(name);
            Some((v, name))
        })
        .collect()
}

/// `SKB_DROP_REASON_NO_SOCKET` on this kernel (its number differs between kernels).
pub(crate) fn drop_reason_no_socket(btf: &Btf) -> Option<u32> {
    btf.enum_values("skb_drop_reason")?
        .into_iter()
        .find(|(name, _)| name == "SKB_DROP_REASON_NO_SOCKET")
        .and_then(|(_, v)| u32::try_from(v).ok())
}

/// Rejects layouts that cannot be right. A wrong offset makes the programs
/// read garbage without any error, so absurd values must stop start-up
/// (`resolve` runs it on what it found).
fn sanity_check(o: &Offsets) -> Result<()> {
    let mut copy = *o;
    for s in Offsets::FIELDS {
        let (name, f) = (s.name, *(s.slot)(&mut copy));
        if !f.is_present() {
            // The programs take size 0 for absent (`Kmem::load`).
            ensure!(f == Field::ABSENT, "{name}: absent, but {f:?}");
            continue;
        }
        ensure!(
            matches!(f.size, 1 | 2 | 4 | 8 | 16),
            "{name}: load size {} is not 1, 2, 4, 8 or 16",
            f.size
        );
        ensure!(
            u32::from(f.bit_shift) + u32::from(f.bit_width) <= u32::from(f.size) * 8,
            "{name}: bitfield {}+{} bits does not fit a {}-byte load",
            f.bit_shift,
            f.bit_width,
            f.size
        );
        // task_struct is large (10+ KiB); sockets and skbs are a few KiB.
        let limit = if name.starts_with("task_") {
            1 << 16
        } else {
            1 << 14
        };
        ensure!(
            f.offset < limit,
            "{name}: offset {} is implausibly large",
            f.offset
        );
    }

    let sizes: [(&str, Field, &[u8]); 9] = [
        ("skc_daddr", o.skc_daddr, &[4]),
        ("skc_rcv_saddr", o.skc_rcv_saddr, &[4]),
        ("skc_dport", o.skc_dport, &[2]),
        ("skc_num", o.skc_num, &[2]),
        ("skc_family", o.skc_family, &[2]),
        ("skc_state", o.skc_state, &[1]),
        ("skb_head", o.skb_head, &[8]),
        ("skb_transport_header", o.skb_transport_header, &[2, 4]),
        ("skb_network_header", o.skb_network_header, &[2, 4]),
    ];
    for (name, f, ok) in sizes {
        ensure!(f.is_present(), "{name} is not resolved");
        ensure!(
            ok.contains(&f.size) && f.bit_width == 0,
            "{name}: unexpected size {} (expected {ok:?})",
            f.size
        );
    }
    for (name, f) in [
        ("skc_v6_daddr", o.skc_v6_daddr),
        ("skc_v6_rcv_saddr", o.skc_v6_rcv_saddr),
    ] {
        ensure!(
            !f.is_present() || f.size == 16,
            "{name}: size {} is not 16",
            f.size
        );
    }
    for (name, f) in [("skc_family", o.skc_family), ("skc_state", o.skc_state)] {
        ensure!(
            f.offset < 64,
            "{name}: offset {} is beyond the start of sock_common",
            f.offset
        );
    }

    // The socket structs nest (sock ⊂ inet_sock ⊂ inet_connection_sock ⊂
    // tcp_sock), so each level's members start after every member of the
    // levels it embeds.
    let sock = [
        o.skc_daddr,
        o.skc_rcv_saddr,
        o.skc_dport,
        o.skc_num,
        o.skc_family,
        o.skc_state,
        o.skc_v6_daddr,
        o.skc_v6_rcv_saddr,
        o.skc_cookie,
        o.sk_flags,
        o.sk_shutdown,
        o.sk_lingertime,
        o.sk_err,
    ];
    let levels: [(&str, &[Field]); 4] = [
        ("struct sock", &sock),
        ("inet_sock", &[o.inet_sport]),
        ("inet_connection_sock", &[o.icsk_probes_out]),
        (
            "tcp_sock",
            &[o.rcv_nxt, o.copied_seq, o.snd_nxt, o.snd_una, o.write_seq],
        ),
    ];
    let mut end_of_inner = 0u32;
    for (level, members) in levels {
        let present = members.iter().filter(|f| f.is_present());
        for f in present.clone() {
            ensure!(
                f.offset >= end_of_inner,
                "{level} member at offset {} overlaps the structs it embeds (which end at or after {end_of_inner})",
                f.offset
            );
        }
        end_of_inner = present
            .map(|f| f.offset + u32::from(f.size))
            .fold(end_of_inner, u32::max);
    }
    Ok(())
}

fn lookup(btf: &Btf, s: &FieldSpec) -> Result<Field, String> {
    let found = s
        .sources
        .iter()
        .find_map(|&(st, path)| btf.struct_member(st, path).map(|loc| (st, path, loc)));
    let Some((st, path, loc)) = found else {
        let tried: Vec<String> = s
            .sources
            .iter()
            .map(|(st, p)| format!("{st}.{p}"))
            .collect();
        return Err(format!("no {} in BTF", tried.join(" or ")));
    };
    to_field(loc, s.load).map_err(|why| format!("{st}.{path}: {why}"))
}

/// Converts a BTF member location into the load the programs perform.
fn to_field(loc: MemberLoc, load: Load) -> Result<Field, String> {
    if loc.is_bitfield() {
        if load != Load::Scalar {
            return Err("unexpected bitfield".into());
        }
        return bitfield(loc);
    }
    if !loc.bit_offset.is_multiple_of(8) {
        return Err(format!("not byte-aligned (bit offset {})", loc.bit_offset));
    }
    let size = match (load, loc.byte_size) {
        (Load::Scalar, s @ (1 | 2 | 4 | 8)) | (Load::Addr16, s @ 16) => s as u8,
        (_, s) => return Err(format!("unexpected size {s}")),
    };
    Ok(Field {
        offset: loc.bit_offset / 8,
        size,
        bit_shift: 0,
        bit_width: 0,
        _pad: 0,
    })
}

/// The smallest little-endian load, starting at the bitfield's first byte,
/// that contains all of its bits.
fn bitfield(loc: MemberLoc) -> Result<Field, String> {
    let offset = loc.bit_offset / 8;
    let shift = loc.bit_offset % 8;
    let bits = shift + loc.bit_size;
    let size = [1u8, 2, 4, 8]
        .into_iter()
        .find(|&s| u32::from(s) * 8 >= bits)
        .ok_or_else(|| {
            format!(
                "bitfield of {} bits at bit {} needs more than 8 bytes",
                loc.bit_size, loc.bit_offset
            )
        })?;
    Ok(Field {
        offset,
        size,
        bit_shift: shift as u8,
        bit_width: loc.bit_size as u8,
        _pad: 0,
    })
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "(unknown release)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::tests::Builder;
    use Load::{Addr16, Scalar};

    fn field(offset: u32, size: u8) -> Field {
        Field {
            offset,
            size,
            bit_shift: 0,
            bit_width: 0,
            _pad: 0,
        }
    }

    #[test]
    fn converts_member_locations() {
        // (bit offset, bit size, byte size, load) -> (offset, size, shift, width)
        let conv = |bit_offset, bit_size, byte_size, load| {
            let loc = MemberLoc {
                bit_offset,
                bit_size,
                byte_size,
            };
            to_field(loc, load)
                .ok()
                .map(|f| (f.offset, f.size, f.bit_shift, f.bit_width))
        };
        assert_eq!(conv(96, 0, 2, Scalar), Some((12, 2, 0, 0)));
        assert_eq!(conv(448, 0, 16, Addr16), Some((56, 16, 0, 0)));
        assert_eq!(conv(448, 0, 16, Scalar), None);
        assert_eq!(conv(96, 0, 4, Addr16), None);
        assert_eq!(conv(96, 0, 3, Scalar), None);
        assert_eq!(conv(97, 0, 2, Scalar), None);

        // `unsigned int sk_shutdown:2` at bit 1234 (byte 154, bit 2).
        assert_eq!(conv(1234, 2, 4, Scalar), Some((154, 1, 2, 2)));
        // Bits 6..16 fit two bytes, 6..18 need a 4-byte load, 15..35 too.
        assert_eq!(conv(6, 10, 4, Scalar), Some((0, 2, 6, 10)));
        assert_eq!(conv(6, 12, 4, Scalar), Some((0, 4, 6, 12)));
        assert_eq!(conv(15, 20, 4, Scalar), Some((1, 4, 7, 20)));
        assert_eq!(conv(7, 64, 8, Scalar), None);
        assert_eq!(conv(8, 4, 16, Addr16), None);
    }

    /// A kernel shaped like 6.1: `sk_flags` only via `__sk_common.skc_flags`,
    /// a bitfield `sk_shutdown`, no `enum sk_rst_reason`, 3-param tracepoint.
    fn old_kernel() -> Btf {
        let mut b = Builder::new();
        let u8t = b.int("unsigned char", 1);
        let u16t = b.int("short unsigned int", 2);
        let u32t = b.int("unsigned int", 4);
        let u64t = b.int("long unsigned int", 8);
        let arr = b.array(u8t, u32t, 16);
        let in6 = b.strukt("in6_addr", 16, &[("s6_addr", arr, 0)]);
        let ports = b.strukt("", 4, &[("skc_dport", u16t, 0), ("skc_num", u16t, 16)]);
        let common = b.strukt(
            "sock_common",
            136,
            &[
                ("skc_daddr", u32t, 0),
                ("skc_rcv_saddr", u32t, 32),
                ("", ports, 96),
                ("skc_family", u16t, 128),
                ("skc_state", u8t, 144),
                ("skc_v6_daddr", in6, 448),
                ("skc_v6_rcv_saddr", in6, 576),
                ("skc_cookie", u64t, 704),
                ("skc_flags", u64t, 768),
            ],
        );
        let sock = b.composite(
            false,
            "sock",
            760,
            true,
            &[
                ("__sk_common", common, 0, 0),
                ("sk_shutdown", u32t, 4100, 2),
                ("sk_lingertime", u64t, 4160, 0),
            ],
        );
        b.strukt(
            "inet_sock",
            800,
            &[("sk", sock, 0), ("inet_sport", u16t, 6400)],
        );
        b.strukt(
            "tcp_sock",
            2000,
            &[("rcv_nxt", u32t, 12000), ("snd_una", u32t, 12032)],
        );
        let ptr = b.ptr(u8t);
        let hdrs = b.strukt(
            "",
            4,
            &[("transport_header", u16t, 0), ("network_header", u16t, 16)],
        );
        b.strukt("sk_buff", 232, &[("", hdrs, 1440), ("head", ptr, 1600)]);
        b.enumeration(
            "sock_flags",
            false,
            &[("SOCK_DEAD", 0), ("SOCK_KEEPOPEN", 3), ("SOCK_LINGER", 4)],
        );
        let void_ptr = b.ptr(0);
        let proto = b.func_proto(0, &[void_ptr, ptr, ptr]);
        let fp = b.ptr(proto);
        b.typedef("btf_trace_tcp_send_reset", fp);
        Btf::parse(&b.build()).unwrap()
    }

    #[test]
    fn resolves_an_old_kernel_with_fallbacks() {
        let btf = old_kernel();
        let (o, absent) = resolve(&btf).unwrap();
        assert_eq!(o.skc_dport, field(12, 2));
        assert_eq!(o.skc_num, field(14, 2));
        assert_eq!(o.skc_v6_rcv_saddr, field(72, 16));
        assert_eq!(
            o.sk_flags,
            field(96, 8),
            "falls back to __sk_common.skc_flags"
        );
        assert_eq!(
            o.sk_shutdown,
            Field {
                offset: 512,
                size: 1,
                bit_shift: 4,
                bit_width: 2,
                _pad: 0
            }
        );
        assert_eq!(o.inet_sport, field(800, 2));
        assert_eq!(o.skb_transport_header, field(180, 2));
        assert_eq!(o.skb_head, field(200, 8));
        assert_eq!(
            (o.sock_dead_bit, o.sock_keepopen_bit, o.sock_linger_bit),
            (0, 3, 4)
        );
        assert!(!o.sk_err.is_present() && !o.tw_substate.is_present());
        for name in [
            "sk_err",
            "icsk_probes_out",
            "copied_seq",
            "tw_substate",
            "task_flags",
        ] {
            assert!(
                absent.iter().any(|a| a == name),
                "{name} not reported in {absent:?}"
            );
        }
        assert!(rst_reason_names(&btf).is_empty());
        assert_eq!(
            btf.func_proto_param_count("btf_trace_tcp_send_reset"),
            Some(3)
        );
    }

    #[test]
    fn missing_required_field_is_named() {
        let mut b = Builder::new();
        let u16t = b.int("short unsigned int", 2);
        b.strukt("sock_common", 8, &[("skc_family", u16t, 0)]);
        let err = resolve(&Btf::parse(&b.build()).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("skc_daddr") && err.contains("sock_common.skc_daddr"),
            "{err}"
        );
        assert!(err.contains("skb_head"), "{err}");
        assert!(!err.contains("skc_family"), "{err}");
    }

    #[test]
    fn strips_reason_prefix() {
        let mut b = Builder::new();
        b.enumeration(
            "sk_rst_reason",
            false,
            &[
                ("SK_RST_REASON_NOT_SPECIFIED", 0),
                ("SK_RST_REASON_NO_SOCKET", 1),
            ],
        );
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(
            rst_reason_names(&btf),
            vec![(0, "NOT_SPECIFIED".into()), (1, "NO_SOCKET".into())]
        );
        assert_eq!(btf.func_proto_param_count("btf_trace_tcp_send_reset"), None);
    }

    #[test]
    fn sanity_check_catches_absurd_layouts() {
        let (good, _) = resolve(&old_kernel()).unwrap();
        assert!(sanity_check(&good).is_ok());
        let bad = |f: fn(&mut Offsets)| {
            let mut o = good;
            f(&mut o);
            sanity_check(&o).is_err()
        };
        assert!(bad(|o| o.skc_state.offset = 200));
        assert!(bad(|o| o.skc_family.size = 4));
        assert!(bad(|o| o.skc_v6_daddr.size = 8));
        assert!(
            bad(|o| o.rcv_nxt.offset = 4),
            "tcp_sock field inside struct sock"
        );
        assert!(bad(|o| o.inet_sport.offset = 10));
        assert!(bad(|o| o.sk_shutdown.bit_width = 9));
        assert!(bad(|o| o.sk_lingertime.offset = 1 << 20));
        assert!(bad(|o| o.skb_head = Field::ABSENT));
    }

    #[test]
    fn resolves_running_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            crate::test_support::skipped("kernel::offsets", "no readable /sys/kernel/btf/vmlinux");
            return;
        };
        let (o, absent) = resolve(&btf).unwrap();
        eprintln!("absent on this kernel: {absent:?}\n{o:#?}");
        assert!(o.skc_family.offset < 32 && o.skc_state.offset < 32);
        assert!(
            o.rcv_nxt.is_present() && o.rcv_nxt.offset > 1000,
            "{:?}",
            o.rcv_nxt
        );
        assert!(o.sk_flags.is_present());
        let flags = btf.enum_values("sock_flags").unwrap();
        let bit = |n: &str| {
            flags
                .iter()
                .find(|(name, _)| name == n)
                .map(|&(_, v)| v as u32)
        };
        assert_eq!(Some(o.sock_dead_bit), bit("SOCK_DEAD"));
        assert_eq!(Some(o.sock_linger_bit), bit("SOCK_LINGER"));
        assert_eq!(Some(o.sock_keepopen_bit), bit("SOCK_KEEPOPEN"));
        let expect = |s, p| btf.struct_member(s, p).map(|l| l.bit_offset / 8);
        assert_eq!(Some(o.skc_state.offset), expect("sock_common", "skc_state"));
        // The network namespace chain, read on every event.
        for (name, f) in [
            ("skc_net", o.skc_net),
            ("skb_dev", o.skb_dev),
            ("netdev_net", o.netdev_net),
            ("net_inum", o.net_inum),
            ("sk_protocol", o.sk_protocol),
            ("sk_cgroup", o.sk_cgroup),
            ("cgroup_kn", o.cgroup_kn),
            ("kernfs_node_id", o.kernfs_node_id),
        ] {
            assert!(f.is_present(), "{name} unresolved");
        }
        assert_eq!(o.skc_net.size, 8);
        assert_eq!(o.net_inum.size, 4);
        // The current task's typed reads (5.11+ kernels have them all).
        assert!(
            o.current_task_fields().iter().all(|f| f.is_present()),
            "{o:#?}"
        );
        assert_eq!(o.task_comm.size, 16);
        assert_eq!(
            (o.task_pid.size, o.task_tgid.size, o.cred_uid.size),
            (4, 4, 4)
        );
        assert_eq!((o.task_cred.size, o.task_cgroups.size), (8, 8));
        assert_eq!((o.css_set_dfl_cgrp.size, o.kernfs_node_id.size), (8, 8));
        assert_eq!(Some(o.write_seq.offset), expect("tcp_sock", "write_seq"));
        // The hook table's needs, on the running kernel.
        match btf.func_proto_param_count("btf_trace_tcp_send_reset") {
            Some(4) => assert!(rst_reason_names(&btf).iter().any(|(_, n)| n == "NO_SOCKET")),
            Some(3) => {}
            other => panic!("btf_trace_tcp_send_reset has {other:?} parameters"),
        }
        assert!(btf.func_param_count("tcp_reset").is_some_and(|n| n >= 1));
        assert!(drop_reason_no_socket(&btf).is_some());
    }
}
