//! rsttrace: who sent that TCP RST, and why.
//!
//! Layers, lowest first; a module imports only from its own layer or
//! below, and no files import each other in a circle (src/layering.rs):
//! - `model`: the event, the cause table and their texts, the export schema.
//! - `kernel`: what the running kernel offers (BTF, offsets, tracefs, HZ).
//! - `collect`: the hook table (`probes`), loading the programs, the ring
//!   buffer, decoding its records, clocks and the kernel's counters.
//! - `enrich`: owner processes, containers, `--scope`, `--stack`.
//! - `classify`, `correlate`, `filter`, `record`: an event's cause (and
//!   what the events around it say), which events to keep, and the record
//!   the outputs write.
//! - `output`: the formats, summary, metrics, OTLP and status lines.
//! - `cli`, `priority`, `signals`; `cmd`: the subcommands (trace, read, check).
//!
//! Pure logic (decode, classify, filter, output formats) is kept apart from
//! I/O so it can be unit-tested without a kernel.

pub mod model;

pub mod kernel;

pub mod collect;

pub mod enrich;

pub mod classify;
pub mod correlate;
pub mod filter;
pub mod record;

pub mod output;

pub mod cli;
pub mod priority;
pub mod signals;

pub mod cmd;

#[doc(hidden)]
pub mod test_support;

#[cfg(test)]
mod layering;
