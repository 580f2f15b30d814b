//! The workflows on this VM alone: a deployment of one in-process instance, so a local
//! backup takes exactly the code path a whole deployment takes.

use super::context::Context;
use super::identity::{local_deployment, local_identity};
use crate::artifact::stored_backup::StoredBackup;
use crate::cli::{BackupArgs, IdentityArgs, RestoreArgs, ScriptArgs};
use crate::error::AppError;
use crate::instance::{InstanceId, local_cleanup_via};
use crate::workflow::{self, BackupOptions, Deployment, RestoreOptions};

impl IdentityArgs {
    pub fn none() -> IdentityArgs {
        IdentityArgs {
            deployment: None,
            instance_group: None,
            index: None,
        }
    }
}

pub fn pre_backup_check(ctx: &Context) -> Result<i32, AppError> {
    let mut dep = ctx.deployment(&ScriptArgs::default());
    Ok(ctx.report(&workflow::pre_backup_check(&mut dep, &ctx.console)))
}

pub fn backup(ctx: &Context, args: &BackupArgs) -> Result<i32, AppError> {
    let (name, id) = local_identity(&ctx.layout, &args.identity)?;
    let instance = ctx.instance(id, ctx.settings(&args.scripts));
    let mut dep = Deployment::new(name, vec![Box::new(instance)])
        .with_cleanup_via(Some(local_cleanup_via(&ctx.layout)));
    let (_, storage) = super::artifact_path::open(&args.artifact_path)?;
    let opts = BackupOptions {
        storage: &*storage,
        lock_free: args.unsafe_lock_free,
    };
    let (outcome, _) = workflow::backup(&mut dep, &opts, &ctx.console);
    Ok(ctx.report(&outcome))
}

pub fn restore(ctx: &Context, args: &RestoreArgs) -> Result<i32, AppError> {
    let (location, storage) = super::artifact_path::open(&args.artifact_path)?;
    let backup = StoredBackup::at(&*storage, &location);
    let metadata = backup.read_metadata()?;
    // An incomplete backup holds no instance to pick: the workflow refuses it first thing,
    // saying so, whichever instance this VM is taken to be.
    let id = if backup.check_complete(&metadata).is_err() {
        ctx.local_identity().1
    } else {
        restore_identity(
            &args.identity,
            &metadata
                .instances
                .iter()
                .map(|i| InstanceId {
                    group: i.name.clone(),
                    index: i.index.clone(),
                })
                .collect::<Vec<_>>(),
        )?
    };
    // The deployment is the VM's (the metadata names none), never the artifact directory's
    // name: an operator may have renamed it. A VM BOSH did not set up is `local`.
    let name = match local_deployment(&ctx.layout, &args.identity) {
        Ok(name) => name,
        Err(e) if args.identity.deployment.is_some() => return Err(e),
        Err(_) => "local".to_string(),
    };
    let instance = ctx.instance(id, ctx.settings(&args.scripts));
    let mut dep = Deployment::new(name, vec![Box::new(instance)])
        .with_cleanup_via(Some(local_cleanup_via(&ctx.layout)));
    let opts = RestoreOptions {
        backup: &backup,
        only: Some(dep.id(0).clone()),
        report: args.report.clone(),
    };
    Ok(ctx.report(&workflow::restore(&mut dep, &opts, &ctx.console)))
}

pub fn backup_cleanup(ctx: &Context, scripts: &ScriptArgs) -> Result<i32, AppError> {
    let mut dep = ctx.deployment(scripts);
    Ok(ctx.report(&workflow::backup_cleanup(&mut dep, &ctx.console)))
}

pub fn restore_cleanup(ctx: &Context, scripts: &ScriptArgs) -> Result<i32, AppError> {
    let mut dep = ctx.deployment(scripts);
    Ok(ctx.report(&workflow::restore_cleanup(&mut dep, &ctx.console)))
}

/// Which instance of the backup this VM restores: the only one, or the one the flags name.
fn restore_identity(args: &IdentityArgs, in_backup: &[InstanceId]) -> Result<InstanceId, AppError> {
    let listed = || {
        in_backup
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (&args.instance_group, in_backup) {
        (None, [only]) => Ok(only.clone()),
        (None, []) => Err(AppError::Identity(
            "the backup holds no instance to restore".into(),
        )),
        (None, _) => Err(AppError::Identity(format!(
            "the backup holds several instances ({}); pass --instance-group and --index",
            listed()
        ))),
        (Some(group), _) => {
            let wanted = InstanceId {
                group: group.clone(),
                index: args.index.unwrap_or(0).to_string(),
            };
            if in_backup.contains(&wanted) {
                Ok(wanted)
            } else {
                Err(AppError::Identity(format!(
                    "the backup holds no instance {wanted}; it holds {}",
                    listed()
                )))
            }
        }
    }
}
