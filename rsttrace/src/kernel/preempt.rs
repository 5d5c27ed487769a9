//! Where each CPU's preempt count lives, so that the kernel programs tell
//! task from interrupt context at RST time by reading it, with no hook on
//! every softirq (`context.rs` in rsttrace-ebpf).
//!
//! x86-64 only. The count is a per-CPU variable: `__preempt_count`, or a
//! member of `pcpu_hot` (6.2 to 6.14); a CPU's copy is at the variable's
//! address plus `__per_cpu_offset[cpu]`. Both are data symbols, which
//! /proc/kallsyms lists only with CONFIG_KALLSYMS_ALL (Debian's kernels have
//! it); without them the programs fall back to the socket lock. Pure: the
//! caller reads the file.

use rsttrace_ebpf::abi::PreemptCount;

use crate::kernel::btf::Btf;

/// The addresses, or why they cannot be had.
pub fn locate(kallsyms: &str, btf: Option<&Btf>) -> Result<PreemptCount, String> {
    if !cfg!(target_arch = "x86_64") {
        return Err("the preempt count is read on x86-64 only".into());
    }
    let (mut per_cpu_offset, mut count, mut pcpu_hot) = (None, None, None);
    for line in kallsyms.lines() {
        // "ffffffff82a0e8c0 D __per_cpu_offset"
        let mut words = line.split_whitespace();
        let (Some(addr), Some(_kind), Some(name)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let slot = match name {
            "__per_cpu_offset" => &mut per_cpu_offset,
            "__preempt_count" => &mut count,
            "pcpu_hot" => &mut pcpu_hot,
            _ => continue,
        };
        *slot = u64::from_str_radix(addr, 16).ok();
    }
    let per_cpu_offset = per_cpu_offset.ok_or(
        "/proc/kallsyms lists no data symbols (__per_cpu_offset; CONFIG_KALLSYMS_ALL is off)",
    )?;
    let count = match (count, pcpu_hot) {
        (Some(count), _) => count,
        (None, Some(hot)) => {
            let member = btf
                .and_then(|b| b.struct_member("pcpu_hot", "preempt_count"))
                .ok_or("no BTF member pcpu_hot.preempt_count")?;
            hot + u64::from(member.bit_offset / 8)
        }
        (None, None) => return Err("kallsyms has neither __preempt_count nor pcpu_hot".into()),
    };
    if per_cpu_offset == 0 {
        return Err("/proc/kallsyms hides addresses (kptr_restrict; run as root)".into());
    }
    Ok(PreemptCount {
        per_cpu_offset,
        count,
    })
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn finds_preempt_count_and_per_cpu_offsets() {
        let text = "ffffffff81000000 T _stext\n\
                    000000000002c5c0 D __preempt_count\n\
                    ffffffff82a0e8c0 D __per_cpu_offset\n";
        let p = locate(text, None).unwrap();
        assert_eq!(p.per_cpu_offset, 0xffffffff82a0e8c0);
        assert_eq!(p.count, 0x2c5c0);
    }

    #[test]
    fn pcpu_hot_needs_btf_for_the_member() {
        let text = "0000000000032000 D pcpu_hot\nffffffff82a0e8c0 D __per_cpu_offset\n";
        assert!(
            locate(text, None)
                .unwrap_err()
                .contains("pcpu_hot.preempt_count")
        );
    }

    #[test]
    fn text_symbols_only_says_why() {
        let text = "ffffffff81000000 T _stext\nffffffff81000100 t tcp_v4_send_reset\n";
        assert!(
            locate(text, None)
                .unwrap_err()
                .contains("CONFIG_KALLSYMS_ALL")
        );
    }

    #[test]
    fn hidden_addresses_say_why() {
        let text = "0000000000000000 D __preempt_count\n0000000000000000 D __per_cpu_offset\n";
        assert!(locate(text, None).unwrap_err().contains("kptr_restrict"));
    }
}
