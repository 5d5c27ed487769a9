//! The programs, one module per attach type. Each reads its own context
//! (BTF arguments, tracefs record offsets, probe registers) and hands plain
//! pointers to the concern that handles them; `firewall.rs` holds the
//! programs that see netfilter's RSTs, of two attach types.
//!
//! Each program function is `#[inline(always)]`: aya's attribute makes it
//! the body of a wrapper in the program's section, and LLVM, left to
//! itself, calls the body once it grows, a BPF-to-BPF call per run and 32
//! more bytes of the 512 the verifier allows a chain of frames.

mod fentry;
mod firewall;
mod kprobe;
mod tp_btf;
mod tracepoint;
