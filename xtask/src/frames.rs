//! The verifier's stack rule, checked as soon as an object is built: along
//! any chain of BPF-to-BPF calls, the frames, each rounded up to 32 bytes,
//! hold at most 512 bytes (`check_max_stack_depth`). The kernel applies it
//! only to the programs it is asked to load, and this machine cannot load
//! the fentry ones: a frame that grew past the rule would first fail in a
//! 6.1 VM.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex, SymbolKind};

/// `MAX_BPF_STACK`.
const LIMIT: u32 = 512;
const INSN: usize = 8;

/// The deepest chain of the object's programs, as (program, bytes); an
/// error naming the chain when one breaks the rule.
pub fn check(path: &Path) -> Result<(String, u32)> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let funcs = functions(&data).with_context(|| format!("parsing {}", path.display()))?;
    let mut deepest = (String::new(), 0);
    for (i, f) in funcs.iter().enumerate().filter(|(_, f)| f.program) {
        let chain = deepest_chain(&funcs, i);
        let bytes = chain_bytes(&funcs, &chain);
        if bytes > LIMIT {
            let names: Vec<String> = chain
                .iter()
                .map(|&j| format!("{} ({})", funcs[j].name, frame(funcs[j].depth)))
                .collect();
            bail!(
                "{}: program {} needs {bytes} bytes of stack along {}; the verifier allows \
                 {LIMIT} (frames rounded up to 32). Shrink a frame on that chain, e.g. a \
                 record on the stack that a callee could share",
                path.display(),
                f.name,
                names.join(" -> ")
            );
        }
        if bytes > deepest.1 {
            deepest = (f.name.clone(), bytes);
        }
    }
    Ok(deepest)
}

/// A frame as the verifier counts it.
fn frame(depth: u32) -> u32 {
    depth.max(1).div_ceil(32) * 32
}

fn chain_bytes(funcs: &[Func], chain: &[usize]) -> u32 {
    chain.iter().map(|&j| frame(funcs[j].depth)).sum()
}

struct Func {
    name: String,
    /// A program (its own section), not a subprogram in `.text`.
    program: bool,
    /// Bytes of stack it touches.
    depth: u32,
    /// Indexes of the functions it calls.
    callees: Vec<usize>,
}

/// The chain from `start` whose rounded frames sum highest (calls form a
/// DAG: BPF has no recursion).
fn deepest_chain(funcs: &[Func], start: usize) -> Vec<usize> {
    let mut best: Vec<usize> = Vec::new();
    let mut best_bytes = 0;
    for &c in &funcs[start].callees {
        let chain = deepest_chain(funcs, c);
        let bytes = chain_bytes(funcs, &chain);
        if bytes > best_bytes {
            (best, best_bytes) = (chain, bytes);
        }
    }
    std::iter::once(start).chain(best).collect()
}

/// Every function of the object with its stack depth and callees.
fn functions(data: &[u8]) -> Result<Vec<Func>> {
    let file = object::File::parse(data)?;
    // (section, offset) → function index.
    let mut at: HashMap<(SectionIndex, u64), usize> = HashMap::new();
    let mut spans = Vec::new();
    for sym in file.symbols() {
        let Some(section) = sym.section_index() else {
            continue;
        };
        if sym.kind() != SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        let name = sym.name()?.to_string();
        let program = file.section_by_index(section)?.name()? != ".text";
        at.insert((section, sym.address()), spans.len());
        spans.push((name, program, section, sym.address(), sym.size()));
    }
    let mut funcs = Vec::with_capacity(spans.len());
    for (name, program, section, start, size) in spans {
        let sec = file.section_by_index(section)?;
        let code = sec.data()?;
        let end = usize::try_from(start + size)?;
        let insns = code
            .get(usize::try_from(start)?..end)
            .with_context(|| format!("{name} lies outside its section"))?;
        let relocations: HashMap<u64, RelocationTarget> =
            sec.relocations().map(|(o, r)| (o, r.target())).collect();
        let mut callees = Vec::new();
        for (i, call_imm) in pseudo_calls(insns) {
            let offset = start + (i * INSN) as u64;
            let step = (i64::from(call_imm) + 1) * INSN as i64;
            let target = match relocations.get(&offset) {
                // Against a section or function symbol: from its address.
                Some(RelocationTarget::Symbol(s)) => {
                    let sym = file.symbol_by_index(*s)?;
                    let section = sym
                        .section_index()
                        .with_context(|| format!("{name} calls an undefined symbol"))?;
                    (section, sym.address().wrapping_add_signed(step))
                }
                Some(other) => bail!("{name}: call relocated against {other:?}"),
                // Within the section, from the next instruction.
                None => (section, offset.wrapping_add_signed(step)),
            };
            let callee = at
                .get(&target)
                .with_context(|| format!("{name} calls {target:?}, no function starts there"))?;
            callees.push(*callee);
        }
        funcs.push(Func {
            name,
            program,
            depth: stack_depth(insns),
            callees,
        });
    }
    Ok(funcs)
}

/// (instruction index, imm) of each BPF-to-BPF call.
fn pseudo_calls(insns: &[u8]) -> Vec<(usize, i32)> {
    decode(insns)
        .filter(|(_, i)| i.code == CALL && i.src == PSEUDO_CALL)
        .map(|(n, i)| (n, i.imm))
        .collect()
}

const CALL: u8 = 0x85;
const PSEUDO_CALL: u8 = 1;
const LD_IMM64: u8 = 0x18;
const MOV64_REG: u8 = 0xbf;
const ADD64_IMM: u8 = 0x07;
const FP: u8 = 10;

struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

/// Instructions with their index; the second half of a 16-byte load is skipped.
fn decode(insns: &[u8]) -> impl Iterator<Item = (usize, Insn)> + '_ {
    let mut skip = false;
    insns
        .chunks_exact(INSN)
        .enumerate()
        .filter_map(move |(n, b)| {
            if std::mem::take(&mut skip) {
                return None;
            }
            let insn = Insn {
                code: b[0],
                dst: b[1] & 0x0f,
                src: b[1] >> 4,
                off: i16::from_le_bytes([b[2], b[3]]),
                imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            };
            skip = insn.code == LD_IMM64;
            Some((n, insn))
        })
}

/// The deepest stack byte a function touches: loads and stores through the
/// frame pointer, and pointers into the frame made for helpers (`rX = r10;
/// rX += -N`). Straight-line tracking: the compiler derives such a pointer
/// right where it passes it.
fn stack_depth(insns: &[u8]) -> u32 {
    let mut fp_offset: [Option<i64>; 11] = [None; 11];
    fp_offset[usize::from(FP)] = Some(0);
    let mut depth = 0i64;
    let mut touch = |offset: i64| depth = depth.max(-offset);
    for (_, i) in decode(insns) {
        let (dst, src) = (usize::from(i.dst), usize::from(i.src));
        if dst > 10 || src > 10 {
            continue;
        }
        match i.code & 0x07 {
            // LDX: the base is src; the loaded register is no pointer.
            0x01 => {
                if let Some(o) = fp_offset[src] {
                    touch(o + i64::from(i.off));
                }
                fp_offset[dst] = None;
            }
            // ST, STX: the base is dst.
            0x02 | 0x03 => {
                if let Some(o) = fp_offset[dst] {
                    touch(o + i64::from(i.off));
                }
            }
            _ if i.code == MOV64_REG => fp_offset[dst] = fp_offset[src],
            _ if i.code == ADD64_IMM => {
                if let Some(o) = fp_offset[dst] {
                    let o = o + i64::from(i.imm);
                    touch(o);
                    fp_offset[dst] = Some(o);
                }
            }
            // A call clobbers r0-r5.
            _ if i.code == CALL => fp_offset[..6].fill(None),
            // Any other ALU or load writes dst; jumps write nothing.
            0x00 | 0x04 | 0x07 => fp_offset[dst] = None,
            _ => {}
        }
        fp_offset[usize::from(FP)] = Some(0);
    }
    u32::try_from(depth).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Vec<u8> {
        let mut b = vec![code, dst | (src << 4)];
        b.extend(off.to_le_bytes());
        b.extend(imm.to_le_bytes());
        b
    }

    #[test]
    fn depth_counts_frame_accesses_and_helper_pointers() {
        let code: Vec<u8> = [
            insn(0x7b, FP, 1, -40, 0), // *(u64 *)(r10 - 40) = r1
            insn(0x79, 2, FP, -8, 0),  // r2 = *(u64 *)(r10 - 8)
            insn(MOV64_REG, 1, FP, 0, 0),
            insn(ADD64_IMM, 1, 0, 0, -120), // r1 = r10 - 120, for a helper
            insn(CALL, 0, 0, 0, 4),
            insn(ADD64_IMM, 1, 0, 0, -200), // r1 was clobbered by the call
            insn(0x95, 0, 0, 0, 0),
        ]
        .concat();
        assert_eq!(stack_depth(&code), 120);
        // A 16-byte load's second half is no instruction.
        let wide: Vec<u8> = [insn(LD_IMM64, 1, 0, 0, 0), insn(0x7b, FP, 1, -300, 0)].concat();
        assert_eq!(stack_depth(&wide), 0);
    }

    #[test]
    fn chains_sum_rounded_frames() {
        let f = |name: &str, program, depth, callees: Vec<usize>| Func {
            name: name.into(),
            program,
            depth,
            callees,
        };
        // 6.1's refusal: 32 + 416 + 96 = 544.
        let funcs = vec![
            f("fe_tcp_v4_send_reset", true, 0, vec![1]),
            f("on_passive_reset_call", false, 400, vec![2, 3]),
            f("read_history", false, 88, vec![]),
            f("memset", false, 0, vec![]),
        ];
        let chain = deepest_chain(&funcs, 0);
        assert_eq!(chain, vec![0, 1, 2]);
        assert_eq!(chain_bytes(&funcs, &chain), 544);
        assert_eq!((frame(0), frame(1), frame(32), frame(33)), (32, 32, 32, 64));
    }
}
