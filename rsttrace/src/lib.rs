//! rsttrace: who sent that TCP RST, and why.
//!
//! Pipeline: `loader` attaches the kernel programs chosen by `probes`;
//! `source` reads the ring buffer; `decode` validates records; `event` names
//! the facts; `classify` maps them to a `cause`; `stacks` (with --stack)
//! symbolizes the stacks; `output` writes them.
//! Pure logic (decode, classify, filter, output formats) is kept apart from
//! I/O so it can be unit-tested without a kernel.

pub mod app;
pub mod capture;
pub mod cause;
pub mod check;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod containers;
pub mod correlate;
pub mod counters;
pub mod decode;
pub mod event;
pub mod explain;
pub mod filter;
pub mod hostnet;
pub mod kernel;
pub mod listeners;
pub mod loader;
pub mod metrics;
pub mod needs;
pub mod otlp;
pub mod output;
pub mod probes;
pub mod procinfo;
pub mod schema;
pub mod scope;
pub mod signals;
pub mod source;
pub mod stacks;
pub mod status;
pub mod summary;
#[doc(hidden)]
pub mod test_support;
