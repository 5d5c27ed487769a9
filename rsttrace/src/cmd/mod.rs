//! The subcommands: `trace` (the default, and `read`), `check` with what
//! rsttrace `needs` from the host. `explain` is rendered in main.rs from
//! `model::explain`.

pub mod check;
pub mod needs;
pub mod trace;
