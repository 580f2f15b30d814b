//! The instance API: everything one VM can be asked to do, and its in-process implementation
//! on the local filesystem. The workflows talk to VMs only through the [`Instance`] trait.
//!
//! The local side owns the files only it reads: `discover` (which scripts there are),
//! `trust` (which may run as root), `journal` (what is locked, across a SIGKILL) and
//! `run_lock` (one run at a time per VM); `serve` reaches them through [`LocalInstance`].

mod api;
pub mod discover;
pub mod journal;
mod local;
pub mod run_lock;
mod script_env;
mod settings;
pub mod trust;

pub use api::{
    Description, DigestKind, Expected, Instance, InstanceError, InstanceId, JobInfo, ScriptEvent,
    ScriptEvents, ScriptReport, ScriptStep, SkippedJob,
};
pub use local::{LocalInstance, local_cleanup_via};
pub use settings::{Overrides, ScriptSettings};
