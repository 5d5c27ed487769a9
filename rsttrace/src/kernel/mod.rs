//! What rsttrace learns from the running kernel before loading its programs.
//!
//! Rust eBPF has no CO-RE, so struct layouts come from the kernel's BTF
//! (`btf`, `offsets`) and classic tracepoint layouts from tracefs (`tracefs`).
//! Everything here runs once at start-up, in userspace.

pub mod btf;
pub mod btf_source;
pub mod hz;
pub mod kallsyms;
pub mod offsets;
pub mod preempt;
pub mod tracefs;
