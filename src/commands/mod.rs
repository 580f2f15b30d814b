//! One file per command of the CLI; each turns parsed arguments into calls on the instance
//! API or the workflows and returns an exit code.

pub mod all_deployments;
pub mod artifact_path;
pub mod backups;
pub mod backups_verify;
pub mod context;
pub mod deployment;
pub mod deployment_plan;
pub mod director_deployment;
pub mod director_mode;
pub mod identity;
pub mod list;
pub mod local;
pub mod plan;
pub mod run_script;
