//! What can go wrong between the driver and an agent: the session (starting it, the stream,
//! the protocol, an artifact's transfer) and what the agent answered with an error. The
//! instance API knows none of these: they reach it as one [`InstanceError::Transport`].

use crate::instance::{InstanceError, InstanceId};
use crate::protocol::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session could not be had, or was lost: `stderr` is what the command said last,
    /// already put as the tail of the sentence.
    #[error("cannot reach the agent with `{command}`: {detail}{stderr}")]
    Unreachable {
        instance: InstanceId,
        command: String,
        detail: String,
        stderr: String,
    },
    /// The agent refused or failed the request; `message` is its sentence.
    #[error("{message}")]
    Agent { code: ErrorCode, message: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("artifact transfer failed: {0}")]
    Transfer(String),
    /// A thread the session needs could not be had: the session was not started, or ended.
    #[error(transparent)]
    NoThread(crate::thread_start::NoThread),
}

impl From<SessionError> for InstanceError {
    fn from(e: SessionError) -> InstanceError {
        InstanceError::Transport(Box::new(e))
    }
}

impl SessionError {
    /// The session error behind `e`, if it is one.
    pub fn of(e: &InstanceError) -> Option<&SessionError> {
        match e {
            InstanceError::Transport(t) => t.downcast_ref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_error_is_one_instance_error_that_says_what_it_says() {
        let e = InstanceError::from(SessionError::Agent {
            code: ErrorCode::Instance,
            message: "the VM is busy".into(),
        });
        assert_eq!(e.to_string(), "the VM is busy");
        assert!(matches!(
            SessionError::of(&e),
            Some(SessionError::Agent {
                code: ErrorCode::Instance,
                ..
            })
        ));
        let local = InstanceError::UnknownJob { job: "x".into() };
        assert!(SessionError::of(&local).is_none());
    }
}
