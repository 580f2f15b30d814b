//! Every way working through a director fails, one enum over the concerns' own.

#[derive(Debug, thiserror::Error)]
pub enum DirectorError {
    #[error(transparent)]
    Api(#[from] super::api::ApiError),
    #[error(transparent)]
    Instances(#[from] super::instances::InstancesError),
    #[error(transparent)]
    Manifest(#[from] super::manifest::ManifestError),
    #[error(transparent)]
    SshAccess(#[from] super::ssh_access::SshAccessError),
    #[error(transparent)]
    Targets(#[from] super::targets::TargetsError),
    #[error(transparent)]
    Standalone(#[from] super::standalone::StandaloneError),
    #[error(transparent)]
    Jumpbox(#[from] super::jumpbox::JumpboxError),
}
