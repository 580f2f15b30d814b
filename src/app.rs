//! From parsed arguments to an exit code: builds the context and dispatches the command.

use clap::CommandFactory;

use crate::cli::{Cli, Command, LogFormat};
use crate::commands::context::Context;
use crate::commands::{backups, deployment, director_mode, list, local, plan, run_script};
use crate::config;
use crate::console::{Console, Format};
use crate::error::AppError;
use crate::layout::Layout;
use crate::logging;

use crate::protocol::PROTOCOL_VERSION;

pub fn run(cli: Cli) -> Result<i32, AppError> {
    let _leave = LeaveCgroups;
    run_command(cli)
}

/// The empty script cgroups kept for later scripts: an agent leaves none behind, even when it
/// panics (dropped as the panic unwinds).
struct LeaveCgroups;

impl Drop for LeaveCgroups {
    fn drop(&mut self) {
        crate::exec::leave_cgroups();
    }
}

fn run_command(cli: Cli) -> Result<i32, AppError> {
    if let Command::ProtocolVersion = cli.command {
        // Asked by the bootstrap before anything else: no configuration, no log.
        println!("{PROTOCOL_VERSION}");
        return Ok(0);
    }
    let layout = Layout::new(&cli.root, cli.jobs_root.clone(), cli.store.clone());
    let config = match &cli.config {
        Some(path) => config::load(path, true)?,
        None => config::load(&layout.root.join(config::DEFAULT_PATH), false)?,
    };
    // Runs on a VM log there. `list` and `plan` change nothing and are not runs; the driver
    // and the generators do not run on a VM.
    let on_vm = !matches!(
        cli.command,
        Command::List { .. }
            | Command::Plan { .. }
            | Command::Deployment(_)
            | Command::Director(_)
            | Command::Backups { .. }
            | Command::Version
            | Command::ProtocolVersion
            | Command::Completions { .. }
            | Command::Man
    );
    let log_dir = on_vm.then(|| layout.log_dir());
    logging::init(
        cli.log_format,
        log_dir.as_deref(),
        config.log_level.as_deref(),
        cli.debug,
    );
    let ctx = Context {
        layout,
        config,
        bbr_version: cli.bbr_version.clone(),
        console: Console::new(
            cli.verbose || cli.debug,
            match cli.log_format {
                LogFormat::Text => Format::Human,
                LogFormat::Json => Format::Json,
            },
        ),
    };
    match &cli.command {
        Command::List { json } => list::list(&ctx, *json),
        Command::Plan { workflow, json } => plan::plan(&ctx, *workflow, *json),
        Command::PreBackupCheck => local::pre_backup_check(&ctx),
        Command::Run(args) => run_script::run(&ctx, args),
        Command::Backup(args) => local::backup(&ctx, args),
        Command::Restore(args) => local::restore(&ctx, args),
        Command::BackupCleanup(args) => local::backup_cleanup(&ctx, args),
        Command::RestoreCleanup(args) => local::restore_cleanup(&ctx, args),
        Command::Serve => {
            let (input, output) = crate::protocol::pipes::raw_stdio()?;
            Ok(crate::serve::serve(
                ctx.layout.clone(),
                ctx.config.clone(),
                input,
                output,
            ))
        }
        Command::Deployment(args) => deployment::run(&ctx, args),
        Command::Director(args) => director_mode::run(&ctx, args),
        Command::Backups { command } => backups::run(&ctx, command),
        Command::ProtocolVersion => {
            println!("{PROTOCOL_VERSION}");
            Ok(0)
        }
        Command::Version => {
            println!(
                "bbr-agent {} (BBR contract {}, protocol {PROTOCOL_VERSION})",
                env!("CARGO_PKG_VERSION"),
                ctx.settings(&Default::default()).bbr_version
            );
            Ok(0)
        }
        Command::Completions { shell } => {
            // Rendered whole first: clap_complete panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "bbr-agent", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)?;
            Ok(0)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(0)
        }
    }
}
