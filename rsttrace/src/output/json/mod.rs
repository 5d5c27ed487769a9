//! JSON Lines, schema v1 (docs/schema.md): the writer and the reader side
//! by side, taking their closed sets (hooks, states, runtimes) from
//! `crate::model::schema`; golden fixtures (rsttrace/tests/fixtures/) round-trip
//! every hook and every cause through both.

pub(crate) mod read;
pub(crate) mod write;

pub(crate) use write::JsonSink;
#[cfg(test)]
pub(crate) use write::{format, format_gap};
