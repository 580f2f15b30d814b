//! Which instance this VM is: the flags, else what BOSH wrote under `/var/vcap/instance`.

use std::fs;

use crate::artifact::backup_dir::DEPLOYMENT_NAME_MAX;
use crate::artifact::plain_name;
use crate::cli::IdentityArgs;
use crate::error::AppError;
use crate::instance::InstanceId;
use crate::layout::Layout;

/// The deployment name and instance of this VM.
pub fn local_identity(
    layout: &Layout,
    args: &IdentityArgs,
) -> Result<(String, InstanceId), AppError> {
    let deployment = local_deployment(layout, args);
    let group = read_name(layout, &args.instance_group, "name", "--instance-group");
    // Neither is known (not a BOSH VM, or --root points elsewhere): both flags are needed,
    // said at once rather than one failed run at a time.
    if let (Err(_), Err(_)) = (&deployment, &group)
        && args.deployment.is_none()
        && args.instance_group.is_none()
    {
        return Err(AppError::Identity(format!(
            "{} holds no deployment and name files (is this a BOSH VM, and is --root right?); pass --deployment NAME and --instance-group NAME (and --index N, 0 unless given)",
            layout.instance_dir().display()
        )));
    }
    let (deployment, group) = (deployment?, group?);
    Ok((
        deployment,
        InstanceId {
            group,
            index: args.index.unwrap_or(0).to_string(),
        },
    ))
}

/// The deployment this VM belongs to: `--deployment`, else what BOSH wrote.
pub fn local_deployment(layout: &Layout, args: &IdentityArgs) -> Result<String, AppError> {
    read_name(layout, &args.deployment, "deployment", "--deployment")
}

/// `flag`, else the file `file` under `/var/vcap/instance`; a plain name either way.
fn read_name(
    layout: &Layout,
    flag: &Option<String>,
    file: &str,
    option: &str,
) -> Result<String, AppError> {
    // Both names become file names (the artifact directory, the tars): plain names only.
    let plain = |value: String, from: &dyn std::fmt::Display, max| {
        plain_name::check(&value, max)
            .map(|()| value.clone())
            .map_err(|why| {
                AppError::Identity(format!(
                    "{from} {value:?} {why}, so it cannot be part of a file name (the artifact directory and its tars are named after it)"
                ))
            })
    };
    let max = match file {
        "deployment" => DEPLOYMENT_NAME_MAX,
        _ => plain_name::NAME_MAX,
    };
    if let Some(value) = flag {
        return plain(value.clone(), &option, max);
    }
    let path = layout.instance_dir().join(file);
    match fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => plain(text.trim().to_string(), &path.display(), max),
        Ok(_) => Err(AppError::Identity(format!(
            "{} is empty; pass {option}",
            path.display()
        ))),
        Err(e) => Err(AppError::Identity(format!(
            "cannot read {}: {e}; pass {option}",
            path.display()
        ))),
    }
}
