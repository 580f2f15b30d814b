//! `backups verify ARTIFACT`: one backup read whole without restoring it, restic's
//! `check --read-data` for a BBR backup: the metadata parsed and checked (complete, every name
//! a plain one), then every tar it lists read once through the storage, parsed as a tar, and
//! every file's checksum compared (the restore's own check, `StoredBackup::corruption`). Unlike
//! the restore, it goes on past a problem: each is one line naming the file, and the exit code
//! is 0 only when there is none. Nothing is written anywhere.

use std::path::Path;

use super::context::Context;
use crate::artifact::stored_backup::{StoredBackup, StoredBackupError};
use crate::catalogue::summary;
use crate::contract::METADATA_FILE;
use crate::error::AppError;
use crate::progress;

pub fn verify(
    ctx: &Context,
    artifact: &std::ffi::OsStr,
    identity: Option<&Path>,
) -> Result<i32, AppError> {
    let started = std::time::Instant::now();
    let (location, storage) = super::artifact_path::open(Path::new(artifact))?;
    let backup = StoredBackup::at(storage.as_ref(), &location);
    if let Some(refusal) = codecs_refusal(&backup, identity) {
        eprintln!("error: {refusal}");
        return Ok(1);
    }
    let metadata = match backup.read_metadata() {
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
        problems.push(e.to_string());
    }
    // A name that is not a plain one would read outside the backup: no tar is read then.
    if let Err(e) = backup.check_names(&metadata) {
        problems.push(e.to_string());
        return Ok(report(&backup, &problems));
    }
    let (mut tars, mut files, mut bytes) = (0, 0, 0u64);
    for tar in backup.tars(&metadata) {
        let problem = match backup.size(&tar.key) {
            Ok(None) => Some(StoredBackupError::Missing {
                tar: backup.describe(&tar.key),
            }),
            Err(source) => Some(StoredBackupError::Unreachable { source }),
            Ok(Some(size)) => {
                let bar = progress::transfer_bar(
                    &ctx.console,
                    format!("{} check", tar.label),
                    Some(size),
                );
                let corruption = backup.corruption(&tar.key, tar.checksums, bar);
                if corruption.is_none() {
                    tars += 1;
                    files += tar.checksums.len();
                    bytes += size;
                }
                corruption.map(|corruption| StoredBackupError::Corrupted {
                    owner: Box::new(tar.owner.clone()),
                    corruption: Box::new(corruption),
                })
            }
        };
        match problem {
            // Its own Display leads with the tar's owner.
            Some(p @ StoredBackupError::Corrupted { .. }) => problems.push(p.to_string()),
            Some(p) => problems.push(format!("{}: {p}", tar.label)),
            None => {}
        }
    }
    if !problems.is_empty() {
        return Ok(report(&backup, &problems));
    }
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    println!(
        "{}: {}, {}, {}, every checksum matches ({})",
        backup.shown(),
        count(tars, "tar"),
        count(files, "file"),
        crate::console::human_bytes(bytes),
        crate::duration::format(started.elapsed())
    );
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

/// Why this build cannot verify the backup, if the metadata's `bbr_agent` key says it is
/// encrypted or compressed (the codecs that read those are not in this build).
fn codecs_refusal(backup: &StoredBackup<'_>, identity: Option<&Path>) -> Option<String> {
    let key = backup.key(METADATA_FILE);
    let size = backup.size(&key).ok()??;
    let input = backup.open(&key).ok()?;
    let codecs = summary::read(size, input).ok()?.bbr_agent?;
    let shown = backup.shown();
    if let Some(encryption) = &codecs.encryption {
        let to = match codecs.recipients.is_empty() {
            true => String::new(),
            false => format!(", to {}", codecs.recipients.join(", ")),
        };
        let identity = match identity {
            Some(_) => " (--identity was given, but",
            None => " (",
        };
        return Some(crate::printable::printable(
            &format!(
                "{shown} is encrypted ({encryption}{to}){identity}this build of bbr-agent cannot decrypt a backup); nothing was checked"
            ),
            1000,
        ));
    }
    if let Some(compression) = &codecs.compression {
        return Some(crate::printable::printable(
            &format!(
                "{shown} is compressed ({compression}): this build of bbr-agent cannot read a compressed backup; nothing was checked"
            ),
            1000,
        ));
    }
    None
}
