//! Which instance this VM is: the flags, else what BOSH wrote under `/var/vcap/instance`.

use std::fs;

use crate::cli::IdentityArgs;
use crate::error::AppError;
use crate::instance::InstanceId;
use crate::layout::Layout;

/// The deployment name and instance of this VM.
pub fn local_identity(
    layout: &Layout,
    args: &IdentityArgs,
) -> Result<(String, InstanceId), AppError> {
    let read = |flag: &Option<String>, file: &str, option: &str| -> Result<String, AppError> {
        if let Some(value) = flag {
            return Ok(value.clone());
        }
        let path = layout.instance_dir().join(file);
        match fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
            Ok(_) => Err(AppError::Identity(format!(
                "{} is empty; pass {option}",
                path.display()
            ))),
            Err(e) => Err(AppError::Identity(format!(
                "cannot read {}: {e}; pass {option}",
                path.display()
            ))),
        }
    };
    let deployment = read(&args.deployment, "deployment", "--deployment")?;
    let group = read(&args.instance_group, "name", "--instance-group")?;
    Ok((
        deployment,
        InstanceId {
            group,
            index: args.index.unwrap_or(0).to_string(),
        },
    ))
}
