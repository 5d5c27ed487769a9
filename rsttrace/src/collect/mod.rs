//! Getting events out of the kernel: the hook table (`probes`), loading and
//! attaching the programs (`loader`), reading the ring buffer (`source`),
//! validating its records (`decode`), boot-to-wall time (`clock`) and the
//! kernel's loss counters (`counters`).

pub mod clock;
pub mod counters;
pub mod decode;
pub mod loader;
pub mod probes;
pub mod source;
