//! The command line (README.md's tour shows each command): global options and one subcommand per operation.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::contract::ScriptKind;

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

    /// BBR's flag: everything there is to see, `-v` and the agent's debug log on stderr
    /// (unless BBR_AGENT_LOG says otherwise).
    #[arg(long, global = true)]
    pub debug: bool,

    /// Format of the agent's own log lines on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The BBR version handed to metadata scripts as BBR_VERSION [default: the configuration
    /// file's, else 1.9.73].
    #[arg(long, global = true, env = "BBR_AGENT_BBR_VERSION")]
    pub bbr_version: Option<String>,

    /// The agent's configuration file [default: <root>/var/vcap/jobs/bbr-agent/config/bbr-agent.yml,
    /// if it exists].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The command line, as `Cli::parse` reads it; a `serve` line first through
    /// [`ServeLine`], which builds its global options and `serve` alone. Every session of a
    /// fleet starts with `bbr-agent --root <dir> serve`, and building every subcommand's
    /// arguments to parse it was about a tenth of an idle session's CPU (docs/benchmarks.md,
    /// "Fleet, stop 14"). Anything it does not take whole (another command, `--help`,
    /// `--version`, a mistake) is parsed again by `Cli`, which answers as it always did.
    pub fn parse_args() -> Cli {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        ServeLine::try_parse_from(&args)
            .map(ServeLine::into_cli)
            .unwrap_or_else(|_| Cli::parse_from(args))
    }
}

/// `Cli`'s global options and its `serve` subcommand, nothing else: the same definitions
/// (`tests::serve_line_has_the_global_options_of_cli` holds them to it), so a line it
/// accepts is one `Cli` accepts, parsed the same.
#[derive(Debug, Parser)]
#[command(
    name = "bbr-agent",
    disable_help_flag = true,
    disable_help_subcommand = true
)]
struct ServeLine {
    #[arg(long, global = true, env = "BBR_AGENT_ROOT", default_value = "/")]
    root: PathBuf,
    #[arg(long, global = true)]
    jobs_root: Option<PathBuf>,
    #[arg(long, global = true)]
    store: Option<PathBuf>,
    #[arg(short, long, global = true)]
    verbose: bool,
    #[arg(long, global = true)]
    debug: bool,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[arg(long, global = true, env = "BBR_AGENT_BBR_VERSION")]
    bbr_version: Option<String>,
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: ServeOnly,
}

#[derive(Debug, Subcommand)]
#[command(disable_help_flag = true)]
enum ServeOnly {
    Serve,
}

impl ServeLine {
    fn into_cli(self) -> Cli {
        let ServeOnly::Serve = self.command;
        Cli {
            root: self.root,
            jobs_root: self.jobs_root,
            store: self.store,
            verbose: self.verbose,
            debug: self.debug,
            log_format: self.log_format,
            bbr_version: self.bbr_version,
            config: self.config,
            command: Command::Serve,
        }
    }
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
        /// The workflow to plan.
        #[arg(value_enum)]
        workflow: PlanWorkflow,
        /// Print the plan as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run the checks a backup starts with; nothing but metadata scripts runs.
    PreBackupCheck,
    /// Run one kind of script by hand, with the environment the workflow would give it.
    ///
    /// Nothing is unlocked for you: a pre-backup-lock or pre-restore-lock run by hand leaves
    /// its jobs locked (a failed one maybe in part) until `run post-backup-unlock` (or
    /// `run post-restore-unlock`) runs for them. After a lock, one line on stderr names each
    /// job with the exact command that unlocks it.
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
    /// Back up or restore a BOSH director VM over SSH, as `bbr director` does.
    Director(DirectorModeArgs),
    /// The backups kept in a directory or an s3:// prefix: list, verify, prune.
    Backups {
        #[command(subcommand)]
        command: BackupsCommand,
    },
    /// Print the agent's version and the BBR contract it implements.
    Version,
    /// Print the protocol version this agent speaks (the bootstrap asks an installed agent).
    #[command(hide = true)]
    ProtocolVersion,
    /// Print a shell completion script (e.g. `bbr-agent completions bash > /etc/bash_completion.d/bbr-agent`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `bbr-agent man | man -l -`.
    Man,
}

#[derive(Debug, Args)]
pub struct DeploymentArgs {
    /// The inventory: deployment name, instances, and the command that reaches each agent
    /// (instead of a director).
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,

    #[command(flatten)]
    pub director: DirectorArgs,

    /// How many VMs are worked on at once.
    #[arg(long, global = true, value_name = "N", default_value_t = crate::workflow::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,

    /// How long each VM's command may take to start and answer, before the run stops with
    /// that VM named (before anything is locked) [default: 60s].
    #[arg(long, global = true, value_name = "DUR", value_parser = parse_connect_timeout)]
    pub connect_timeout: Option<Duration>,

    #[command(flatten)]
    pub scripts: ScriptArgs,

    #[command(flatten)]
    pub agent: AgentArgs,

    #[command(subcommand)]
    pub command: DeploymentCommand,
}

/// Which agent each VM runs, where its command starts the bootstrap (`{{ agent }}`, and
/// director modes): docs/protocol.md, "Bringing the agent".
#[derive(Debug, Clone, Default, Args)]
pub struct AgentArgs {
    /// `auto`: the VM's installed agent when it speaks this protocol, else this driver's,
    /// sent over the session; `installed`: only the VM's own; `bring`: always this driver's.
    #[arg(long, global = true, value_enum, default_value_t = crate::driver::bootstrap::AgentMode::Auto)]
    pub agent: crate::driver::bootstrap::AgentMode,

    /// The agent binary to send instead of this driver's own executable (a static Linux
    /// x86_64 build).
    #[arg(long, global = true, value_name = "FILE")]
    pub agent_binary: Option<PathBuf>,
}

/// `director`: one host over plain SSH, as `bbr director` takes it.
#[derive(Debug, Args)]
pub struct DirectorModeArgs {
    /// The director VM: HOST or HOST:PORT (port 22 unless given).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub host: String,

    /// The SSH user on it (with passwordless sudo).
    #[arg(long, value_name = "NAME")]
    pub username: String,

    /// The user's private SSH key.
    #[arg(long, value_name = "FILE")]
    pub private_key_path: PathBuf,

    /// How long the SSH command may take to start and answer [default: 60s].
    #[arg(long, global = true, value_name = "DUR", value_parser = parse_connect_timeout)]
    pub connect_timeout: Option<Duration>,

    #[command(flatten)]
    pub scripts: ScriptArgs,

    #[command(flatten)]
    pub agent: AgentArgs,

    #[command(subcommand)]
    pub command: DeploymentCommand,
}

/// The BOSH director that knows the deployment, as `bbr deployment` takes it.
#[derive(Debug, Clone, Default, Args)]
pub struct DirectorArgs {
    /// The BOSH director: https://HOST[:PORT] (port 25555 unless given).
    #[arg(short = 't', long, env = "BOSH_ENVIRONMENT", value_name = "URL")]
    pub target: Option<String>,

    /// The director's user, or with UAA its client.
    #[arg(short = 'u', long, env = "BOSH_CLIENT", value_name = "NAME")]
    pub username: Option<String>,

    /// Its password, or with UAA the client's secret.
    #[arg(
        short = 'p',
        long,
        env = "BOSH_CLIENT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub password: Option<String>,

    /// The director's CA certificate: a PEM file or the PEM itself (also CA_CERT) [default:
    /// the system's roots].
    #[arg(
        long,
        env = "BOSH_CA_CERT",
        allow_hyphen_values = true,
        value_name = "PATH|PEM",
        hide_env_values = true
    )]
    pub ca_cert: Option<String>,

    /// The deployment's name on the director.
    #[arg(short = 'd', long, env = "BOSH_DEPLOYMENT", value_name = "NAME")]
    pub deployment: Option<String>,

    /// Every deployment of the director with BBR scripts, one after another (pre-backup-check,
    /// backup and backup-cleanup).
    #[arg(long)]
    pub all_deployments: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DeploymentCommand {
    /// Check that the deployment can be backed up; nothing but metadata scripts runs.
    PreBackupCheck,
    /// Back the deployment up into a BBR artifact directory.
    Backup {
        /// Directory in which the <deployment>_<timestamp> artifact is created.
        #[arg(short = 'a', long, value_name = "DIR", default_value = ".")]
        artifact_path: PathBuf,
        /// Skip lock and unlock scripts: the backup may be inconsistent.
        #[arg(long)]
        unsafe_lock_free: bool,
        /// Store the deployment's manifest in the artifact as manifest.yml (with a director).
        #[arg(long)]
        with_manifest: bool,
        #[command(flatten)]
        codecs: CodecArgs,
    },
    /// Restore the deployment from a BBR artifact directory.
    Restore {
        /// The artifact directory to restore from (only read, never written).
        #[arg(short = 'a', long, value_name = "DIR")]
        artifact_path: PathBuf,
        /// Write the HTML run report (timeline, lock windows, failures) to this file.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        #[command(flatten)]
        decode: DecodeArgs,
    },
    /// Show the lock order over every VM and which jobs run side by side; nothing but
    /// metadata scripts runs.
    Plan {
        /// The workflow to plan.
        #[arg(value_enum)]
        workflow: PlanWorkflow,
        /// Print the plan as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// After a failed backup: run every post-backup-unlock script and remove the stores.
    BackupCleanup,
    /// After a failed restore: run every post-restore-unlock script and remove the stores.
    RestoreCleanup,
}

/// `backups`: the catalogue of a place that holds backups (docs/catalogue.md).
#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// Every backup under DEST, newest first: deployment, time, complete or not, size, and
    /// whether it is compressed or encrypted.
    List {
        /// A directory, or s3://BUCKET/PREFIX, holding <deployment>_<timestamp> backups.
        #[arg(value_name = "DEST")]
        dest: std::ffi::OsString,
        /// Print one JSON document on stdout (its fields: docs/catalogue.md).
        #[arg(long)]
        json: bool,
    },
    /// Read one backup whole without restoring it: every checksum, every tar parsed; exit 0
    /// only when all is good, else one line per problem naming the file.
    Verify {
        /// The backup: its <deployment>_<timestamp> directory, or an s3:// URL of it.
        #[arg(value_name = "ARTIFACT")]
        artifact: std::ffi::OsString,
        /// The age identity that decrypts an encrypted backup.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
    /// Remove the backups a retention policy does not keep (restic's `forget` rules, per
    /// deployment, on complete backups; the newest complete one always stays), and incomplete
    /// ones older than a day.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// A directory, or s3://BUCKET/PREFIX, holding <deployment>_<timestamp> backups.
    #[arg(value_name = "DEST")]
    pub dest: std::ffi::OsString,
    /// Keep the N newest complete backups of each deployment.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N days that have one (UTC days).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N weeks that have one (ISO weeks).
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Print what would be kept and removed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanWorkflow {
    Backup,
    Restore,
}

/// How scripts are run. Each flag overrides the configuration file, which overrides the
/// defaults: 30m for lock and unlock scripts, 1m for metadata, no limit for backup and restore.
#[derive(Debug, Clone, Default, Args)]
pub struct ScriptArgs {
    /// End any script that runs longer than this (e.g. 30s, 5m, 2h, or none): SIGTERM to its
    /// process group, then SIGKILL after the grace period. Applies to every kind of script.
    #[arg(long, global = true, value_name = "DUR", value_parser = parse_limit)]
    pub script_timeout: Option<Limit>,

    /// The timeout of one kind of script, e.g. `--timeout pre-backup-lock=5m` or
    /// `--timeout backup=none` (repeatable); wins over --script-timeout.
    #[arg(long = "timeout", global = true, value_name = "KIND=DUR", value_parser = parse_kind_limit)]
    pub timeouts: Vec<(ScriptKind, Limit)>,

    /// Time between SIGTERM and SIGKILL for a script that timed out or was interrupted
    /// [default: 10s].
    #[arg(long, global = true, value_name = "DUR", value_parser = crate::duration::parse)]
    pub kill_grace: Option<Duration>,
}

/// A timeout, or `none` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<Duration>);

fn parse_limit(text: &str) -> Result<Limit, String> {
    match text {
        "none" => Ok(Limit(None)),
        _ => crate::duration::parse(text).map(|d| Limit(Some(d))),
    }
}

/// A duration more than zero: a zero limit would end every session before it could answer.
fn parse_connect_timeout(text: &str) -> Result<Duration, String> {
    match crate::duration::parse(text)? {
        d if d.is_zero() => Err(format!(
            "'{text}' would end every session at once: give more than 0s, like 30s or 2m"
        )),
        d => Ok(d),
    }
}

fn parse_kind_limit(text: &str) -> Result<(ScriptKind, Limit), String> {
    let (kind, limit) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not KIND=DUR, like pre-backup-lock=5m"))?;
    Ok((kind.parse()?, parse_limit(limit)?))
}

impl ScriptArgs {
    /// The operator's overrides: --script-timeout for every kind, then each --timeout.
    pub(crate) fn overrides(&self, bbr_version: Option<String>) -> crate::instance::Overrides {
        let mut timeouts = std::collections::BTreeMap::new();
        if let Some(Limit(all)) = self.script_timeout {
            timeouts.extend(ScriptKind::ALL.iter().map(|k| (*k, all)));
        }
        timeouts.extend(self.timeouts.iter().map(|(k, Limit(l))| (*k, *l)));
        crate::instance::Overrides {
            timeouts,
            kill_grace: self.kill_grace,
            bbr_version,
        }
    }
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
    pub codecs: CodecArgs,

    #[command(flatten)]
    pub identity: IdentityArgs,

    #[command(flatten)]
    pub scripts: ScriptArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The artifact directory to restore from (only read, never written).
    #[arg(long, value_name = "DIR")]
    pub artifact_path: PathBuf,

    /// Write the HTML run report (timeline, lock windows, failures) to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    #[command(flatten)]
    pub decode: DecodeArgs,

    #[command(flatten)]
    pub identity: IdentityArgs,

    #[command(flatten)]
    pub scripts: ScriptArgs,
}

/// How a backup's tars are stored: compressed, encrypted (docs/behaviour.md).
#[derive(Debug, Clone, Default, Args)]
pub struct CodecArgs {
    /// Compress each job's tar with zstd (LEVEL 1 to 19, default 3); stored as <name>.tar.zst
    #[arg(long, value_name = "zstd[:LEVEL]")]
    pub compress: Option<crate::artifact::codec::Zstd>,
    /// Where --compress runs: on each VM as it streams (the network carries less) or on the
    /// driver (the VMs' CPUs are spared)
    #[arg(long, value_enum, value_name = "WHERE", default_value_t = CompressOn::Vm, requires = "compress")]
    pub compress_on: CompressOn,
    /// Encrypt every tar and the checksums with age to this recipient (age1..., repeatable);
    /// stored as <name>.tar.age
    #[arg(long = "encrypt-to", value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// Encrypt to every age recipient in FILE (one a line, # comments; repeatable)
    #[arg(long, value_name = "FILE")]
    pub recipients_file: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum CompressOn {
    #[default]
    Vm,
    Driver,
}

impl CodecArgs {
    /// What the backup does to each tar; a bad recipient or file is refused naming it.
    pub(crate) fn codecs(
        &self,
    ) -> Result<crate::artifact::codec::Codecs, crate::artifact::codec::age::KeyError> {
        use crate::artifact::codec;
        let mut recipients = codec::Recipients::default();
        for r in &self.encrypt_to {
            recipients.add(r)?;
        }
        for file in &self.recipients_file {
            recipients.add_file(file)?;
        }
        Ok(codec::Codecs {
            compression: self.compress,
            compress_on: match self.compress_on {
                CompressOn::Vm => codec::CompressOn::Vm,
                CompressOn::Driver => codec::CompressOn::Driver,
            },
            recipients,
        })
    }
}

/// How an encrypted backup is read back.
#[derive(Debug, Clone, Default, Args)]
pub struct DecodeArgs {
    /// The age identity file (AGE-SECRET-KEY-1... lines, as age-keygen writes) to decrypt an
    /// encrypted backup with
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

impl DecodeArgs {
    /// The identities of `--identity`, read now: a bad file is refused before anything runs.
    pub(crate) fn identities(
        &self,
    ) -> Result<Option<crate::artifact::codec::Identities>, crate::artifact::codec::KeyError> {
        self.identity
            .as_deref()
            .map(crate::artifact::codec::Identities::read)
            .transpose()
    }
}

/// Which instance this VM is [default: what BOSH wrote under <root>/var/vcap/instance].
#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// The deployment's name [default: what BOSH wrote in <root>/var/vcap/instance/deployment]
    #[arg(long, value_name = "NAME")]
    pub deployment: Option<String>,
    /// This VM's instance group [default: what BOSH wrote in <root>/var/vcap/instance/name]
    #[arg(long, value_name = "NAME")]
    pub instance_group: Option<String>,
    /// This VM's index in its instance group [default: 0]
    #[arg(long, value_name = "N")]
    pub index: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// What a parse of `args` gives, compared by its debug form (`Cli` holds no secrets).
    fn parsed(args: &[&str]) -> Option<String> {
        Cli::try_parse_from(args).ok().map(|cli| format!("{cli:?}"))
    }

    fn fast(args: &[&str]) -> Option<String> {
        ServeLine::try_parse_from(args)
            .ok()
            .map(|line| format!("{:?}", line.into_cli()))
    }

    /// Every global option of `Cli`, as `ServeLine` must have it: name, flags, environment
    /// variable, defaults, possible values. An option added to `Cli` and not here fails this.
    #[test]
    fn serve_line_has_the_global_options_of_cli() {
        let describe = |cmd: &clap::Command| -> Vec<String> {
            let mut args: Vec<String> = cmd
                .get_arguments()
                .filter(|a| a.is_global_set())
                .map(|a| {
                    format!(
                        "{} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                        a.get_id(),
                        a.get_long(),
                        a.get_short(),
                        a.get_env(),
                        a.get_default_values(),
                        a.get_num_args(),
                        a.get_action(),
                        a.get_possible_values()
                            .iter()
                            .map(|v| v.get_name().to_string())
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            args.sort();
            args
        };
        let (cli, line) = (Cli::command(), ServeLine::command());
        assert_eq!(describe(&line), describe(&cli));
        assert_eq!(describe(&cli).len(), 8, "Cli's global options");
        assert!(cli.find_subcommand("serve").is_some());
    }

    /// A serve line is parsed as `Cli` parses it; anything else is left to `Cli`.
    #[test]
    fn serve_lines_parse_as_cli_parses_them_and_others_are_left_to_it() {
        for args in [
            &["bbr-agent", "serve"][..],
            &["bbr-agent", "--root", "/vm", "serve"],
            &["bbr-agent", "serve", "--root", "/vm", "--debug"],
            &[
                "bbr-agent",
                "--root=/vm",
                "-v",
                "--log-format",
                "json",
                "serve",
            ],
            &["bbr-agent", "--jobs-root", "/j", "--store", "/s", "serve"],
            &[
                "bbr-agent",
                "--bbr-version",
                "1.9.0",
                "--config",
                "/c.yml",
                "serve",
            ],
        ] {
            assert!(parsed(args).is_some(), "{args:?}");
            assert_eq!(fast(args), parsed(args), "{args:?}");
        }
        for args in [
            &["bbr-agent", "list"][..],
            &["bbr-agent", "--root", "/vm", "list", "--json"],
            &["bbr-agent", "serve", "--help"],
            &["bbr-agent", "--version"],
            &["bbr-agent", "serve", "extra"],
            &["bbr-agent", "--log-format", "yaml", "serve"],
            &["bbr-agent", "--root"],
            &["bbr-agent"],
        ] {
            assert_eq!(fast(args), None, "{args:?} is Cli's to answer");
        }
    }
}
