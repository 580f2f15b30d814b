//! `backups verify ARTIFACT`: one backup read whole, without restoring it.

use std::path::Path;

use crate::error::AppError;

pub fn verify(_artifact: &std::ffi::OsStr, _identity: Option<&Path>) -> Result<i32, AppError> {
    Err(AppError::Usage(
        "backups verify is not built yet".to_string(),
    ))
}
