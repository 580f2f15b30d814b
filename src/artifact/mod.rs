//! Artifacts: the VM-side store, the checksum manifest, the tar streams that carry a job's
//! artifact directory, and the operator-side BBR artifact directory.

pub mod backup_dir;
pub mod checksums;
pub mod dir_walk;
mod entry_path;
mod gnu_header;
pub mod handoff;
mod hasher;
mod owner_names;
mod remove_tree;
pub mod store;
pub mod tar_reader;
pub mod tar_writer;
pub mod verify_stream;
pub mod writeback;

pub use checksums::Checksums;
