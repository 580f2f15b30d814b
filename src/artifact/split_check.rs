//! The threads beside a check of a tar file (`tar_reader::check_tar_file`): they hash the
//! files the reading thread hands them, each read by its offset in the file, while the reading
//! thread goes on to the next header. A restore checks every byte of a backup before it
//! reaches a VM; one thread hashing them all used one core of the machine.
//!
//! What they are given is only where a file's data lies: every header is parsed and judged by
//! the reading thread alone, as in any other read of a tar. A range that runs past the end of
//! the file is an error here, as a short read is there.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::digest::{DigestKind, FileDigests, Manifests};
use super::tar_reader::TarReadError;

/// Files for a thread beside: each one's key, its data's offset in the file, its length.
pub(super) type Batch = Vec<(String, u64, u64)>;

/// Where the reading thread sends them.
pub(super) type Ranges = SyncSender<Batch>;

/// Batches queued, at most: the reading thread waits beyond.
const QUEUED_AT_MOST: usize = 4;

/// Threads beside, at most: one per core, the reading thread mostly waiting.
const THREADS_AT_MOST: usize = 4;

/// Bytes read at a time.
const CHUNK: usize = 1 << 20;

/// A tar file smaller than this is hashed by its reading thread alone: a fleet's empty
/// artifacts are not worth a thread each. (Every file gets the threads in the unit tests.)
#[cfg(not(test))]
const WORTH_THREADS: u64 = 8 << 20;
#[cfg(test)]
const WORTH_THREADS: u64 = 1;

/// Threads beside a check: one per core, looked up once (it reads the cgroup's CPU quota).
fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, THREADS_AT_MOST)
    })
}

/// Runs `read` (the reading thread's part), giving it where to send the files to hash, or
/// `None` when the file is small or the OS gives no thread (it then hashes them itself);
/// returns what it returned and the SHA-256 of the files hashed beside (with `blake3`, their
/// BLAKE3 too). `progress` is told the bytes read beside.
pub(super) fn beside<T>(
    file: &File,
    len: u64,
    blake3: bool,
    progress: &(dyn Fn(u64) + Sync),
    stop: &(dyn Fn() -> bool + Sync),
    read: impl FnOnce(Option<Ranges>) -> Result<T, TarReadError>,
) -> Result<(T, Manifests), TarReadError> {
    let none = || Manifests::new(blake3);
    if len < WORTH_THREADS {
        return read(None).map(|done| (done, none()));
    }
    let (to, work) = sync_channel(QUEUED_AT_MOST);
    let work = Mutex::new(work);
    // Set by the first thread that fails: the others stop hashing, and every thread takes the
    // batches still coming without reading them, so the reading thread never waits on a full
    // queue that nobody empties.
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let started: Vec<_> = (0..threads())
            .map_while(|_| {
                std::thread::Builder::new()
                    .name("tar check".into())
                    .spawn_scoped(scope, || {
                        let hashed = hash_ranges(file, blake3, &work, &failed, progress, stop);
                        if hashed.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        // What is still sent is taken, unread, until the reading thread ends.
                        while work
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .recv()
                            .is_ok()
                        {}
                        hashed
                    })
                    .ok()
            })
            .collect();
        if started.is_empty() {
            return read(None).map(|done| (done, none()));
        }
        // `read` drops its sender when it returns, which ends the threads' work.
        let done = read(Some(to));
        let mut sums = Ok(none());
        for thread in started {
            let hashed = thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            sums = match (sums, hashed) {
                (Ok(mut all), Ok(some)) => {
                    all.extend(some);
                    Ok(all)
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        match (done, sums) {
            // A thread beside stopped on an error of its own: that one.
            (Err(TarReadError::Read(e)), Err(side)) if e.kind() == io::ErrorKind::BrokenPipe => {
                Err(side)
            }
            (done, sums) => Ok((done?, sums?)),
        }
    })
}

/// Hashes the batches of `work` until it ends, or until this or another thread failed.
fn hash_ranges(
    file: &File,
    blake3: bool,
    work: &Mutex<Receiver<Batch>>,
    failed: &AtomicBool,
    progress: &(dyn Fn(u64) + Sync),
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Manifests, TarReadError> {
    let mut buf = vec![0u8; CHUNK];
    let mut sums = Manifests::new(blake3);
    loop {
        // One batch at a time, so that the other threads take the next ones meanwhile.
        let batch = match work.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(batch) => batch,
            Err(_) => return Ok(sums),
        };
        for (key, mut at, len) in batch {
            let mut digests = FileDigests::new(DigestKind::Sha256, blake3);
            let mut left = len;
            while left > 0 {
                if crate::interrupt::is_interrupted() {
                    return Err(TarReadError::Read(super::handoff::RunInterrupted::io()));
                }
                if failed.load(Ordering::SeqCst) {
                    // Another thread's error is the one told.
                    return Ok(sums);
                }
                if stop() {
                    return Err(TarReadError::Read(super::tar_reader::stopped()));
                }
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = match file.read_at(&mut buf[..want], at) {
                    Ok(0) => return Err(TarReadError::Read(io::ErrorKind::UnexpectedEof.into())),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(TarReadError::Read(e)),
                };
                digests.update(&buf[..n]);
                at += n as u64;
                left -= n as u64;
                progress(n as u64);
            }
            sums.insert(key, digests);
        }
    }
}
