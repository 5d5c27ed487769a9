//! The contract between rsttrace's kernel programs and its userspace loader.
//!
//! This library is the one definition of the event ABI (`abi`) and of the
//! Linux constants both sides use (`linux`): the kernel programs
//! (`src/main.rs`, built for `bpfel-unknown-none`) write these structs and
//! userspace decodes them. It is `no_std` and free of kernel-only dependencies,
//! so userspace links it with `default-features = false, features = ["user"]`.
#![no_std]
#![warn(missing_docs)]

pub mod abi;
pub mod linux;
