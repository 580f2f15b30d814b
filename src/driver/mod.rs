//! The remote driver: the inventory of a deployment's VMs and the instance API over the stdio
//! protocol to `bbr-agent serve` on each, through whatever command reaches it (usually SSH).

pub mod bootstrap;
pub mod connecting;
mod elf;
mod error;
pub mod inventory;
mod remote;
pub(crate) mod session_command;
mod session_watch;
mod splice_send;

pub use remote::{DEFAULT_CONNECT_TIMEOUT, RemoteInstance};
