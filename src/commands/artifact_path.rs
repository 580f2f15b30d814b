//! `--artifact-path` as the workflows take it: parsed from the argument's bytes into a
//! [`Location`] and opened as a [`Storage`], here and nowhere else, for every backup and
//! restore (local, inventory and director forms).

use std::path::Path;

use crate::error::AppError;
use crate::storage::{Location, Storage};

/// The place `--artifact-path ARG` names, and its storage.
pub fn open(arg: &Path) -> Result<(Location, Box<dyn Storage>), AppError> {
    let location = Location::parse(arg.as_os_str())?;
    let storage = location.open()?;
    Ok((location, storage))
}
