//! The subcommands: `trace` (the default; its outputs in `outputs`), `read`
//! (an export replayed), `check` with what rsttrace `needs` from the host.
//! `explain` is rendered in main.rs from `model::explain`.

pub mod check;
pub mod needs;
mod outputs;
pub mod read;
pub mod trace;
