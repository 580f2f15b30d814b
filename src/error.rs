//! The one top-level error, and how every failure maps to the documented exit codes.

use crate::contract::exit_bits;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Instance(#[from] crate::instance::InstanceError),
    #[error(transparent)]
    Cycle(#[from] crate::order::CycleError),
    #[error(transparent)]
    Discover(#[from] crate::instance::discover::DiscoverError),
    #[error(transparent)]
    BackupDir(#[from] crate::artifact::backup_dir::BackupDirError),
    /// `--artifact-path` names no place a backup can be kept in (a bad `s3://` URL).
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// A bad `--encrypt-to`, `--recipients-file` or `--identity`.
    #[error(transparent)]
    Keys(#[from] crate::artifact::codec::KeyError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Inventory(#[from] crate::driver::inventory::InventoryError),
    #[error(transparent)]
    Director(#[from] crate::director::DirectorError),
    #[error(transparent)]
    Catalogue(#[from] crate::commands::backups::CatalogueError),
    #[error("cannot tell which instance this is: {0}")]
    Identity(String),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl AppError {
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Usage(_) => 2,
            _ => exit_bits::GENERAL,
        }
    }
}
