//! Getting events out of the kernel: what the kernel offers (`facts`), the
//! hook table (`probes`), loading the programs (`loader`) and attaching
//! them (`attach`), how records travel (`transport`: the
//! ring buffer, or per-CPU perf buffers in `perfbuf`), reading them (`source`),
//! validating its records (`decode`), boot-to-wall time (`clock`) and the
//! kernel's loss counters (`counters`).

pub mod attach;
pub mod clock;
pub mod counters;
pub mod decode;
pub mod facts;
pub mod loader;
pub mod perfbuf;
pub mod probes;
pub mod source;
pub mod transport;
