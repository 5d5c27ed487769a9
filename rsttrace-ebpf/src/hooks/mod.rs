//! The programs, one module per attach type. Each reads its own context
//! (BTF arguments, tracefs record offsets, probe registers) and hands plain
//! pointers to the concern that handles them.

mod fentry;
mod kprobe;
mod tp_btf;
mod tracepoint;
