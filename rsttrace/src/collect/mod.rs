//! Getting events out of the kernel: the hook table (`probes`), loading and
//! attaching the programs (`loader`), how records travel (`transport`: the
//! ring buffer, or per-CPU perf buffers in `perfbuf`), reading them (`source`),
//! validating its records (`decode`), boot-to-wall time (`clock`) and the
//! kernel's loss counters (`counters`).

pub mod clock;
pub mod counters;
pub mod decode;
pub mod loader;
pub mod perfbuf;
pub mod probes;
pub mod source;
pub mod transport;
