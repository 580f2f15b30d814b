//! bbr-agent: the in-VM runtime for BOSH Backup and Restore.
//!
//! The contract (what BBR does and scripts rely on) is in [`contract`]; discovery, metadata
//! and ordering are pure enough to test alone; [`instance`] is everything one VM can do;
//! [`workflow`] drives a deployment of instances through BBR's flowcharts.

pub mod app;
pub mod artifact;
pub mod brought;
pub mod chunk_stream;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod contract;
pub mod director;
pub mod driver;
pub mod duration;
pub mod error;
pub mod exec;
pub mod instance;
pub mod interrupt;
pub mod layout;
pub mod logging;
pub mod metadata;
pub mod order;
pub mod progress;
pub mod protocol;
pub mod report;
pub mod serve;
pub mod shell_quote;
pub mod timestamp;
pub mod workflow;
