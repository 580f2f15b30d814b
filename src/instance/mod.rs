//! The instance API: everything one VM can be asked to do, and its in-process implementation
//! on the local filesystem. The workflows talk to VMs only through the [`Instance`] trait.

mod api;
mod local;
mod script_env;
mod settings;

pub use api::{
    Description, Instance, InstanceError, InstanceId, JobInfo, JobProblem, ScriptLines,
    ScriptReport, ScriptStep, SkippedJob,
};
pub use local::{LocalInstance, Survey, local_cleanup_via};
pub use settings::{Overrides, ScriptSettings};
