//! `backups verify ARTIFACT`: one backup read whole without restoring it, restic's
//! `check --read-data` for a BBR backup: the metadata parsed and checked (complete, every name
//! a plain one), then every tar it lists read once through the storage, parsed as a tar, and
//! every file's checksum compared (the restore's own check, `StoredBackup::corruption`). Unlike
//! the restore, it goes on past a problem: each is one line naming the file, and the exit code
//! is 0 only when there is none. An encrypted backup needs `--identity`; a compressed one is
//! decompressed as it is read. Nothing is written anywhere.

use std::path::Path;

use super::context::Context;
use crate::artifact::codec::Identities;
use crate::artifact::stored_backup::{Reader, StoredBackup, StoredBackupError, Tally};
use crate::error::AppError;

pub fn verify(
    ctx: &Context,
    artifact: &std::ffi::OsStr,
    identity: Option<&Path>,
) -> Result<i32, AppError> {
    let (location, storage) = super::artifact_path::open(Path::new(artifact))?;
    // A bad identity file is refused before anything is read.
    let identities = match identity.map(Identities::read).transpose() {
        Ok(identities) => identities,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    let backup = StoredBackup::at(storage.as_ref(), &location).with_identities(identities);
    let mut metadata = match backup.read_metadata() {
        Ok(metadata) => metadata,
        Err(e) => {
            // The reader's words are the restore's (`--artifact-path`); here it is ARTIFACT.
            eprintln!(
                "error: {}",
                e.to_string().replace("give --artifact-path ", "give ")
            );
            return Ok(1);
        }
    };
    let mut problems: Vec<String> = Vec::new();
    if let Err(e) = backup.check_complete(&metadata) {
        problems.push(e.in_words_of(Reader::Verify));
    }
    // An encrypted backup's checksums: without an identity for them, no tar can be checked.
    if let Err(e) = backup.unseal(&mut metadata) {
        problems.push(e.in_words_of(Reader::Verify));
        return Ok(report(&backup, &problems));
    }
    // A name that is not a plain one would read outside the backup: no tar is read then.
    if let Err(e) = backup.check_names(&metadata) {
        problems.push(e.in_words_of(Reader::Verify));
        return Ok(report(&backup, &problems));
    }
    let mut tally = Tally::start();
    for tar in backup.tars(&metadata) {
        match backup.check_tar(&tar, &ctx.console) {
            Ok(bytes) => tally.add(&tar, bytes),
            // Its own Display leads with the tar's owner.
            Err(p @ StoredBackupError::Corrupted { .. }) => {
                problems.push(p.in_words_of(Reader::Verify))
            }
            Err(p) => problems.push(format!("{}: {}", tar.label, p.in_words_of(Reader::Verify))),
        }
    }
    if !problems.is_empty() {
        return Ok(report(&backup, &problems));
    }
    println!("{}: {}", backup.shown(), tally.line());
    Ok(0)
}

/// Each problem on a line of its own, then how many: the exit code is 1.
fn report(backup: &StoredBackup<'_>, problems: &[String]) -> i32 {
    for problem in problems {
        eprintln!("error: {problem}");
    }
    eprintln!(
        "error: {} failed verification: {} problem{}",
        backup.shown(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    1
}
