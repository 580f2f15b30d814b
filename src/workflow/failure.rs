//! What failed in a run, as data: a script with its instance and report, an instance's
//! failure, the interruption, an artifact's transfer, or the workflow's own check. Made text
//! only where it is printed (the console) or rendered (the report).

use std::fmt;

use super::check::Problem;
use super::deployment::{FailedScript, InstanceFailure};
use crate::artifact::checksums::Mismatch;
use crate::artifact::stored_backup::{Corruption, StoredBackupError};
use crate::artifact::tar_reader::TarReadError;
use crate::instance::{InstanceError, InstanceId};
use crate::storage::StorageError;

#[derive(Debug)]
pub enum Failure {
    /// A script that failed, and what that meant for the rest of the run (`then`).
    Script {
        failed: Box<FailedScript>,
        then: Option<&'static str>,
    },
    /// Failed scripts past the ones named, counted (the console showed each).
    MoreScripts {
        count: usize,
        then: Option<&'static str>,
    },
    /// An instance could not do what it was asked (claimed, described, its store...).
    Instance(InstanceFailure),
    /// The run was interrupted: its cause, what it cut short and what was unlocked.
    Interrupted(String),
    /// A job's artifact could not be copied from (or to) its VM.
    Transfer {
        instance: InstanceId,
        job: String,
        error: TransferError,
    },
    /// A check of the workflow's own.
    Check(Problem),
    /// Where the backup is kept failed: its directory made, its metadata or manifest written.
    Storage(StorageError),
}

/// Why an artifact's transfer failed: the VM's side, or this machine's.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Instance(Box<InstanceError>),
    /// The object it goes to could not be made or completed (the storage names it).
    #[error(transparent)]
    Storage(Box<StorageError>),
    /// Writing the object, or its codecs, failed.
    #[error("cannot write {object}: {source}")]
    Write {
        object: String,
        source: std::io::Error,
    },
    /// The run was interrupted while the bytes passed.
    #[error(transparent)]
    Interrupted(std::io::Error),
    /// A thread to write or check the stream could not be had (the OS refused it).
    #[error(transparent)]
    NoThread(std::io::Error),
    /// The VM's stream is not a tar.
    #[error("the artifact stream is not a valid tar: {0}")]
    NotATar(TarReadError),
    /// What arrived does not match the checksums the VM computed (of this digest) of what it
    /// read. A plain drain's file data leaves the VM from the file itself
    /// (`serve::file_data`), so there a file changed on the VM while it was sent is found here
    /// too, and `sent_from_files` says so.
    #[error(
        "the artifact is corrupted: {} checksums do not match ({mismatch}){}",
        digest.shown(),
        if *sent_from_files { "; a file that changes on the VM while it is sent does this too: check that nothing still writes into the job's artifact directory after its backup script, then back up again" } else { "" }
    )]
    Mismatch {
        digest: crate::artifact::digest::DigestKind,
        mismatch: Box<Mismatch>,
        sent_from_files: bool,
    },
    /// The backup's tar could not be read from where it is kept, or decoded.
    #[error(transparent)]
    Read(Box<StoredBackupError>),
    /// The local backup's tar is to blame: it no longer matches its checksums.
    #[error(transparent)]
    Corrupted(Box<Corruption>),
}

impl TransferError {
    /// Whether the text already names `job`: the VM's errors about a transfer start with
    /// `job '<job>'`, and through a driver they arrive as that sentence.
    fn names(&self, job: &str) -> bool {
        match self {
            TransferError::Instance(e) => e.to_string().starts_with(&format!("job '{job}'")),
            _ => false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let then = |then: &Option<&str>| then.map(|t| format!(": {t}")).unwrap_or_default();
        match self {
            Failure::Script { failed, then: t } => write!(f, "{failed}{}", then(t)),
            Failure::MoreScripts { count, then: t } => {
                write!(f, "and {count} more failed (see FAILED above){}", then(t))
            }
            Failure::Instance(failure) => write!(f, "{failure}"),
            Failure::Interrupted(text) => f.write_str(text),
            Failure::Storage(e) => write!(f, "{e}"),
            Failure::Check(problem) => write!(f, "{problem}"),
            // The instance and its job once each: the VM's own sentence may name the job.
            Failure::Transfer {
                instance,
                job,
                error,
            } if error.names(job) => write!(f, "{instance}: {error}"),
            Failure::Transfer {
                instance,
                job,
                error,
            } => write!(f, "{instance} {job}: {error}"),
        }
    }
}

impl From<InstanceFailure> for Failure {
    fn from(failure: InstanceFailure) -> Failure {
        Failure::Instance(failure)
    }
}

impl From<Problem> for Failure {
    fn from(problem: Problem) -> Failure {
        Failure::Check(problem)
    }
}
