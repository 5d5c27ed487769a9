//! What an RST event is and what it means, with no I/O: the event read
//! from the kernel, the cause table and its texts, the export schema's
//! closed sets. Everything else builds on these.

pub mod cause;
pub mod event;
pub mod evidence;
pub mod explain;
pub mod schema;
pub mod text;
