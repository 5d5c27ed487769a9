//! The programs, one module per attach type. Each reads its own context
//! (BTF arguments, tracefs record offsets, probe registers) and hands plain
//! pointers to the concern that handles them; `firewall.rs` holds the
//! programs that see netfilter's RSTs, of two attach types.

mod fentry;
mod firewall;
mod kprobe;
mod tp_btf;
mod tracepoint;
