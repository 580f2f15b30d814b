//! `bbr-agent serve`: the agent end of the stdio protocol, a thin loop around the in-process
//! instance. One process serves one VM for a whole run.

mod file_data;
pub mod input;
mod output_queue;
mod session;

pub(crate) use session::serve;
