//! JSON Lines, schema v1 (docs/schema.md): the writer and the reader side
//! by side, taking their closed sets (hooks, states, runtimes) from
//! `crate::model::schema`; golden fixtures (rsttrace/tests/fixtures/) round-trip
//! every hook and every cause through both.

pub mod read;
pub mod write;

pub use write::{JsonSink, SCHEMA_VERSION, format, format_gap};
