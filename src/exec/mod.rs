//! Running one script: its own process group, the environment sudo gives, both output streams
//! drained as they come, a timeout that ends the whole group. (`spawn` also starts the
//! driver's sessions.)

mod capture;
mod cgroup;
mod clone_into;
pub(crate) mod descendants;
mod process_group;
mod run;
pub mod spawn;
mod start_error;
mod sudo_env;
mod watch;

pub use capture::{Captured, LineSink, Stream};
pub use descendants::leave_cgroups;
pub use process_group::{ChildLeader, Members, NotOurs, ProcessGroup};
pub use run::{OnSpawn, ScriptCommand, ScriptEnd, run_script};
