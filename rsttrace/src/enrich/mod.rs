//! What userspace adds to an event: the owner process from /proc
//! (`procinfo`), its container's names (`containers`), which sockets are in
//! scope (`scope`), and symbolized stacks (`stacks`, with --stack).

pub mod containers;
pub mod procinfo;
pub mod scope;
pub mod stacks;
