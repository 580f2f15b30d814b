//! Artifacts: the VM-side store, the checksum manifest, the tar streams that carry a job's
//! artifact directory, and the operator-side BBR artifact directory.

pub mod backup_dir;
pub(crate) mod base64;
pub mod checksums;
pub mod codec;
pub mod digest;
pub mod dir_walk;
mod entry_path;
mod gnu_header;
pub mod handoff;
mod hasher;
pub(crate) mod metadata_keys;
mod owner_names;
pub mod plain_name;
mod remove_tree;
mod skip_hash;
mod split_check;
pub mod store;
pub mod stored_backup;
mod tar_header;
pub mod tar_reader;
pub mod tar_writer;
pub mod verify_stream;
pub mod writeback;

pub use checksums::Checksums;
