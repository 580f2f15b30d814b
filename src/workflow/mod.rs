//! The BBR workflows over a deployment of instances: checks, backup, restore and the two
//! cleanups, with BBR's error routing and exit-code bits (`contract::exit_bits`). The layers
//! and what each may import: docs/architecture.md.

mod backup;
mod check;
mod checks;
mod cleanup;
mod deployment;
mod drain;
mod failure;
#[cfg(test)]
mod fake;
mod finish;
mod one_for_all;
mod outcome;
mod parallel;
mod restore;

pub use backup::{BackupOptions, backup};
pub use checks::pre_backup_check;
pub use cleanup::{backup_cleanup, restore_cleanup};
pub use deployment::{DEFAULT_MAX_IN_FLIGHT, Deployment, JobRef};
pub use one_for_all::OneForAll;
pub use outcome::{Failure, Outcome};
pub use restore::{RestoreOptions, restore};
