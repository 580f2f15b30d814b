//! The command line (DESIGN section 7): global options and one subcommand per operation.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::contract::{DEFAULT_BBR_VERSION, ScriptKind};

#[derive(Debug, Parser)]
#[command(
    name = "bbr-agent",
    version,
    about = "Runs a VM's BOSH Backup and Restore scripts: list, plan, back up, restore, clean up",
    max_term_width = 100
)]
pub struct Cli {
    /// Where the VM's /var/vcap tree is found.
    #[arg(long, global = true, env = "BBR_AGENT_ROOT", default_value = "/")]
    pub root: PathBuf,

    /// The jobs root [default: <root>/var/vcap/jobs].
    #[arg(long, global = true)]
    pub jobs_root: Option<PathBuf>,

    /// The artifact store [default: <root>/var/vcap/store/bbr-backup].
    #[arg(long, global = true)]
    pub store: Option<PathBuf>,

    /// Stream every script's output live, prefixed with instance, job and script.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Format of the agent's own log lines on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The BBR version handed to metadata scripts as BBR_VERSION.
    #[arg(long, global = true, env = "BBR_AGENT_BBR_VERSION", default_value = DEFAULT_BBR_VERSION)]
    pub bbr_version: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the BBR jobs, their scripts and parsed metadata, and what is skipped and why.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show the ordered lock, backup/restore and unlock steps, without running them.
    Plan {
        #[arg(value_enum)]
        workflow: PlanWorkflow,
        #[arg(long)]
        json: bool,
    },
    /// Run the checks a backup starts with; nothing but metadata scripts runs.
    PreBackupCheck,
    /// Run one kind of script by hand, with the environment the workflow would give it.
    Run(RunArgs),
    /// Back this VM up into a BBR artifact directory.
    Backup(BackupArgs),
    /// Restore this VM from a BBR artifact directory.
    Restore(RestoreArgs),
    /// After a failed backup: run every post-backup-unlock script and remove the store.
    BackupCleanup(ScriptArgs),
    /// After a failed restore: run every post-restore-unlock script and remove the store.
    RestoreCleanup(ScriptArgs),
    /// Speak the stdio protocol on stdin/stdout, for the deployment driver (docs/protocol.md).
    Serve,
    /// Back up or restore a whole deployment through `bbr-agent serve` on every VM.
    Deployment(DeploymentArgs),
    /// Print the agent's version and the BBR contract it implements.
    Version,
}

#[derive(Debug, Args)]
pub struct DeploymentArgs {
    /// The inventory: deployment name, instances, and the command that reaches each agent.
    #[arg(long, value_name = "FILE")]
    pub inventory: PathBuf,

    /// How many VMs are worked on at once.
    #[arg(long, global = true, value_name = "N", default_value_t = crate::workflow::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,

    #[command(flatten)]
    pub scripts: ScriptArgs,

    #[command(subcommand)]
    pub command: DeploymentCommand,
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Check that the deployment can be backed up; nothing but metadata scripts runs.
    PreBackupCheck,
    /// Back the deployment up into a BBR artifact directory.
    Backup {
        /// Directory in which the <deployment>_<timestamp> artifact is created.
        #[arg(long, value_name = "DIR", default_value = ".")]
        artifact_path: PathBuf,
        /// Skip lock and unlock scripts: the backup may be inconsistent.
        #[arg(long)]
        unsafe_lock_free: bool,
    },
    /// Restore the deployment from a BBR artifact directory.
    Restore {
        /// The artifact directory to restore from.
        #[arg(long, value_name = "DIR")]
        artifact_path: PathBuf,
    },
    /// After a failed backup: run every post-backup-unlock script and remove the stores.
    BackupCleanup,
    /// After a failed restore: run every post-restore-unlock script and remove the stores.
    RestoreCleanup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanWorkflow {
    Backup,
    Restore,
}

/// How scripts are run.
#[derive(Debug, Clone, Args)]
pub struct ScriptArgs {
    /// End any script that runs longer than this (e.g. 30s, 5m, 2h): SIGTERM to its process
    /// group, then SIGKILL after the grace period. Default: no limit, as under BBR.
    #[arg(long, global = true, value_parser = crate::duration::parse)]
    pub script_timeout: Option<Duration>,

    /// Time between SIGTERM and SIGKILL for a script that timed out.
    #[arg(long, global = true, value_parser = crate::duration::parse, default_value = "10s")]
    pub kill_grace: Duration,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The script: metadata, pre-backup-lock, backup, post-backup-unlock, pre-restore-lock,
    /// restore or post-restore-unlock.
    pub script: ScriptKind,

    /// Only this job (repeatable) [default: every job with the script].
    #[arg(long = "job", value_name = "JOB")]
    pub jobs: Vec<String>,

    /// Parent of the jobs' artifact directories (<DIR>/<job>/) for backup and restore
    /// scripts [default: the store].
    #[arg(long, value_name = "DIR")]
    pub artifact_dir: Option<PathBuf>,

    /// BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL for post-backup-unlock.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub after_backup_successful: bool,

    #[command(flatten)]
    pub scripts: ScriptArgs,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Directory in which the <deployment>_<timestamp> artifact is created.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub artifact_path: PathBuf,

    /// Skip lock and unlock scripts: the backup may be inconsistent.
    #[arg(long)]
    pub unsafe_lock_free: bool,

    #[command(flatten)]
    pub identity: IdentityArgs,

    #[command(flatten)]
    pub scripts: ScriptArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The artifact directory to restore from.
    #[arg(long, value_name = "DIR")]
    pub artifact_path: PathBuf,

    #[command(flatten)]
    pub identity: IdentityArgs,

    #[command(flatten)]
    pub scripts: ScriptArgs,
}

/// Which instance this VM is [default: what BOSH wrote under <root>/var/vcap/instance].
#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// Deployment name.
    #[arg(long)]
    pub deployment: Option<String>,
    /// Instance group name.
    #[arg(long)]
    pub instance_group: Option<String>,
    /// Instance index [default: 0].
    #[arg(long)]
    pub index: Option<u32>,
}
