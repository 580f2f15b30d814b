//! The remote driver: the inventory of a deployment's VMs and the instance API over the stdio
//! protocol to `bbr-agent serve` on each, through whatever command reaches it (usually SSH).

pub mod inventory;
mod remote;
mod session_command;
mod shell_quote;

pub use remote::RemoteInstance;
