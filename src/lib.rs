//! bbr-agent: the in-VM runtime for BOSH Backup and Restore.
//!
//! The contract (what BBR does and scripts rely on) is in `contract`; discovery, metadata
//! and ordering are pure enough to test alone; `instance` is everything one VM can do;
//! `workflow` drives a deployment of instances through BBR's flowcharts. The layers and what
//! each may import: docs/architecture.md.
//!
//! The library is the binary's: public are only what `src/main.rs` calls ([`cli`], [`app`],
//! [`error`], [`interrupt`]) and what the integration tests read ([`protocol`]'s messages and
//! framing, [`serve`]'s input decoder); everything else is `pub(crate)`, so the compiler
//! finds what is dead.

pub mod app;
pub(crate) mod artifact;
pub mod brought;
pub(crate) mod catalogue;
pub(crate) mod chunk_stream;
pub mod cli;
pub(crate) mod commands;
pub(crate) mod config;
pub(crate) mod console;
pub(crate) mod contract;
pub(crate) mod director;
pub(crate) mod driver;
pub(crate) mod duration;
pub mod error;
pub(crate) mod exec;
pub(crate) mod instance;
pub mod interrupt;
pub(crate) mod layout;
pub(crate) mod logging;
pub(crate) mod metadata;
pub(crate) mod order;
pub(crate) mod printable;
pub(crate) mod progress;
pub mod protocol;
pub(crate) mod report;
pub mod serve;
pub(crate) mod shell_quote;
pub(crate) mod storage;
pub(crate) mod thread_start;
pub(crate) mod timestamp;
pub(crate) mod workflow;
