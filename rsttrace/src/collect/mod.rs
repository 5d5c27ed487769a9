//! Getting events out of the kernel: what the kernel offers (`facts`), the
//! hook table (`probes`), loading the programs (`loader`) and attaching
//! them (`attach`), how records travel (`transport`: the
//! ring buffer, or per-CPU perf buffers in `perfbuf`), reading them (`source`)
//! and how full the ring buffer is (`ringfill`),
//! validating its records (`decode`), boot-to-wall time (`clock`) and the
//! kernel's loss counters (`counters`).

pub(crate) mod attach;
pub(crate) mod clock;
pub(crate) mod counters;
pub(crate) mod decode;
pub(crate) mod facts;
pub(crate) mod loader;
pub(crate) mod perfbuf;
pub mod probes;
pub(crate) mod ringfill;
pub(crate) mod source;
pub mod transport;
