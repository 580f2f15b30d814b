//! `director --host HOST[:PORT] --username NAME --private-key-path FILE <command>`: BBR's
//! director mode. The director VM is one instance, `bosh/0`, reached over plain SSH with the
//! operator's key and host key; the artifact is `<host>_<timestamp>`, as BBR names it.

use super::context::Context;
use super::deployment::run_targets;
use crate::cli::{DeploymentArgs, DeploymentCommand, DirectorModeArgs};
use crate::director::DirectorError;
use crate::director::jumpbox::Jumpbox;
use crate::director::standalone::Standalone;
use crate::director::targets::{DEFAULT_REMOTE_COMMAND, REMOTE_COMMAND_ENV};
use crate::error::AppError;
use crate::shell_quote::quote;

pub fn run(ctx: &Context, args: &DirectorModeArgs) -> Result<i32, AppError> {
    let err = |e| AppError::Director(DirectorError::Standalone(e));
    let remote = std::env::var(REMOTE_COMMAND_ENV)
        .ok()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_REMOTE_COMMAND.to_string());
    if let DeploymentCommand::Backup {
        with_manifest: true,
        ..
    } = args.command
    {
        return Err(AppError::Usage(
            "--with-manifest is for a deployment: a director VM has no manifest to store".into(),
        ));
    }
    let director = Standalone::parse(&args.host).map_err(err)?;
    // BOSH_ALL_PROXY: the director VM behind a jumpbox, as BBR's director mode allows.
    let jumpbox = Jumpbox::from_env().map_err(DirectorError::from)?;
    let proxy = jumpbox.as_ref().map(Jumpbox::proxy_command);
    let target = director
        .target(
            &args.username,
            &args.private_key_path,
            &remote,
            proxy.as_deref(),
        )
        .map_err(err)?;
    let as_deployment = DeploymentArgs {
        inventory: None,
        director: Default::default(),
        max_in_flight: 1,
        connect_timeout: args.connect_timeout,
        scripts: args.scripts.clone(),
        agent: args.agent.clone(),
        command: args.command.clone(),
    };
    let cleanup_via = format!(
        "bbr-agent director --host {} --username {} --private-key-path {}",
        quote(&args.host),
        quote(&args.username),
        quote(
            &std::path::absolute(&args.private_key_path)
                .unwrap_or_else(|_| args.private_key_path.clone())
                .to_string_lossy()
        )
    );
    run_targets(
        ctx,
        &as_deployment,
        &director.host,
        &[target],
        Some(cleanup_via),
    )
}
