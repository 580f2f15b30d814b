//! What failed in a run, as data: a script with its instance and report, an instance's
//! failure, the interruption, an artifact's transfer, or the workflow's own check. Made text
//! only where it is printed (the console) or rendered (the report).

use std::fmt;

use super::deployment::{FailedScript, InstanceFailure};
use crate::instance::{InstanceError, InstanceId};

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
    /// A check of the workflow's own, or a local step (the artifact directory, a manifest).
    Other(String),
}

/// Why an artifact's transfer failed: the VM's side, or this machine's.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Instance(Box<InstanceError>),
    #[error("{0}")]
    Local(String),
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
            Failure::Interrupted(text) | Failure::Other(text) => f.write_str(text),
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

impl From<String> for Failure {
    fn from(text: String) -> Failure {
        Failure::Other(text)
    }
}

impl From<&str> for Failure {
    fn from(text: &str) -> Failure {
        Failure::Other(text.to_string())
    }
}
