//! Running one script: its own process group, a clean environment, both output streams
//! drained concurrently, a timeout that ends the whole group.

mod capture;
mod process_group;
mod run;

pub use capture::{Captured, LineSink, Stream};
pub use process_group::ProcessGroup;
pub use run::{ScriptCommand, ScriptEnd, ScriptOutcome, run_script};
