//! What userspace adds to an event: the owner process from /proc
//! (`procinfo`), its container's names (`containers`), which sockets are in
//! scope (`scope`), symbolized stacks (`stacks`, with --stack), the
//! owners of ports listening since before rsttrace started (`listeners`),
//! and which addresses live on this host (`hostnet`).

pub mod containers;
pub mod hostnet;
pub mod listeners;
pub mod procinfo;
pub mod scope;
pub mod stacks;
