//! The thread beside a check of a tar file (`tar_reader::check_tar_file`): it hashes the
//! files the reading thread hands it, each read by its offset in the file, while the reading
//! thread goes on parsing and hashing the others. A restore checks every byte of a backup
//! before it reaches a VM, on one core otherwise.
//!
//! What it is given is only where a file's data lies: every header is parsed and judged by the
//! reading thread alone, as in any other read of a tar. A range that runs past the end of the
//! file is an error here, as a short read is there.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use sha2::{Digest, Sha256};

use super::checksums::{Checksums, hex};
use super::tar_reader::TarReadError;

/// Files for the thread beside: each one's key, its data's offset in the file, its length.
pub(super) type Batch = Vec<(String, u64, u64)>;

/// Where the reading thread sends them.
pub(super) type Ranges = SyncSender<Batch>;

/// Batches queued for the thread beside, at most: the reading thread waits beyond.
const QUEUED_AT_MOST: usize = 4;

/// Bytes read at a time.
const CHUNK: usize = 1 << 20;

/// Runs `read` (the reading thread's part), giving it where to send the files for the thread
/// beside, or `None` when the OS gives no thread (it then hashes them all itself); returns
/// what it returned and the checksums of the files hashed beside. `progress` is told the
/// bytes read beside.
pub(super) fn beside<T>(
    file: &File,
    progress: &(dyn Fn(u64) + Sync),
    read: impl FnOnce(Option<Ranges>) -> Result<T, TarReadError>,
) -> Result<(T, Checksums), TarReadError> {
    let (to, work) = sync_channel(QUEUED_AT_MOST);
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("tar check".into())
            .spawn_scoped(scope, move || hash_ranges(file, work, progress));
        let Ok(thread) = thread else {
            return read(None).map(|done| (done, Checksums::new()));
        };
        // `read` drops its sender when it returns, which ends the thread's work.
        let done = read(Some(to));
        let sums = thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match (done, sums) {
            // The thread beside stopped on an error of its own: that one.
            (Err(TarReadError::Read(e)), Err(side)) if e.kind() == io::ErrorKind::BrokenPipe => {
                Err(side)
            }
            (done, sums) => Ok((done?, sums?)),
        }
    })
}

fn hash_ranges(
    file: &File,
    work: Receiver<Batch>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Checksums, TarReadError> {
    let mut buf = vec![0u8; CHUNK];
    let mut sums = Checksums::new();
    for (key, mut at, len) in work.into_iter().flatten() {
        let mut sha = Sha256::new();
        let mut left = len;
        while left > 0 {
            if crate::interrupt::is_interrupted() {
                return Err(TarReadError::Read(super::handoff::RunInterrupted::io()));
            }
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match file.read_at(&mut buf[..want], at) {
                Ok(0) => return Err(TarReadError::Read(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TarReadError::Read(e)),
            };
            sha.update(&buf[..n]);
            at += n as u64;
            left -= n as u64;
            progress(n as u64);
        }
        sums.insert(key, hex(&sha.finalize()));
    }
    Ok(sums)
}
