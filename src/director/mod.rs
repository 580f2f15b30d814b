//! The BOSH director as the inventory, as `bbr deployment` uses it: its API over verified
//! TLS ([`client`]), its auth ([`auth`]), calls and tasks ([`api`]), a deployment's VMs
//! ([`instances`]), SSH access through a temporary user ([`ssh_access`]), and the adapter to
//! the driver's targets ([`targets`]).

pub mod api;
pub mod auth;
pub mod client;
mod error;
pub mod instances;
pub mod ssh_access;
pub mod targets;

pub use api::Director;
pub use error::DirectorError;
pub use ssh_access::SshAccess;
