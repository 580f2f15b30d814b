//! The BOSH director as the inventory, as `bbr deployment` uses it: its API over verified
//! TLS ([`client`]), its auth ([`auth`]), calls and tasks ([`api`]), a deployment's VMs
//! ([`instances`]) and manifest ([`manifest`]: the jobs' releases, which [`releases`] hands to
//! the lock order), SSH access through a temporary user ([`ssh_access`]), the OpenSSH command
//! line ([`openssh`]), the adapter to the driver's targets ([`targets`]), and BBR's director
//! mode, one host over plain SSH ([`standalone`]); all of it through a jumpbox when
//! `BOSH_ALL_PROXY` says so ([`jumpbox`]).

pub mod api;
pub mod auth;
pub mod client;
mod error;
pub mod instances;
pub mod jumpbox;
pub mod manifest;
pub mod openssh;
pub mod releases;
pub mod ssh_access;
pub mod standalone;
pub mod targets;

pub use api::Director;
pub use error::DirectorError;
pub use ssh_access::SshAccess;
