//! What rsttrace learns from the running kernel before loading its programs.
//!
//! Rust eBPF has no CO-RE, so struct layouts come from the kernel's BTF
//! (`btf`, `offsets`) and classic tracepoint layouts from tracefs (`tracefs`).
//! Everything here runs once at start-up, in userspace.

pub mod btf;
pub mod btf_source;
pub(crate) mod helpers;
pub(crate) mod hz;
pub(crate) mod kallsyms;
pub(crate) mod offsets;
pub(crate) mod preempt;
pub(crate) mod tracefs;
