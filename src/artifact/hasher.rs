//! SHA-256 of a stream of files on threads of their own, beside the thread that moves the
//! data: the agent's tar writer (backup) and its unpacking (restore), one worker each, and the
//! driver's check of a stored tar before a restore, several, hand it each buffer once the data
//! is written (or read), and name each file when it ends.
//!
//! With more than one worker, each file goes whole to the worker with the fewest bytes still
//! to hash: a file's digest is sequential, files are not. The largest file still bounds the
//! time (its bytes come one after another, at one worker's speed), but the rest no longer waits
//! behind it, and the reader no longer waits for the hashing at all (see docs/benchmarks.md,
//! "Drain and restore, stop 13").

use std::cell::{Cell, OnceCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread;

use sha2::{Digest, Sha256};

use super::checksums::{Checksums, hex};

/// Bytes read at a time, at most.
const CHUNK: usize = 1 << 20;
/// The smallest buffer made for a small file.
const MIN_CHUNK: usize = 64 << 10;
/// The buffers' bytes a worker may be behind by, all told. Counted in bytes, not buffers, so
/// that small files (a 64 KiB buffer each, and a message to end each) keep the hasher as busy
/// as big ones; a count of 4 buffers left it waiting between small files (see
/// docs/benchmarks.md, "Figures behind the code").
const BUDGET: usize = 4 * CHUNK;
/// Workers of a hasher that hashes files side by side (the driver's check of a stored tar
/// before a restore): two already take the files beside the largest off its path.
pub const SIDE_BY_SIDE: usize = 2;

/// What a hashing thread is told, in stream order.
enum ToHasher {
    /// The first `n` bytes of the buffer belong to the current file.
    Data(Vec<u8>, usize),
    /// The current file, named so, is complete.
    End(String),
}

/// SHA-256 on threads of their own, started with the first file (an artifact with no files
/// costs no thread). Buffers go to them and come back for reuse, so there is no allocation
/// (and no page-faulting of fresh memory) per chunk.
pub struct Hasher {
    workers: usize,
    running: OnceCell<RunningHasher>,
    /// Bytes of buffers in existence (given out, in a channel, or given back).
    allocated: Cell<usize>,
    /// The worker hashing the current file, from its first data to its end.
    current: Cell<Option<usize>>,
    /// The worker of the last file.
    last: Cell<usize>,
}

struct RunningHasher {
    to: Vec<SyncSender<ToHasher>>,
    /// Bytes handed to each worker and not yet hashed.
    behind: Arc<Vec<AtomicUsize>>,
    free: Receiver<Vec<u8>>,
    threads: Vec<thread::JoinHandle<Checksums>>,
}

impl Hasher {
    /// One worker: the files are hashed one after another, beside the caller.
    pub fn new() -> Hasher {
        Hasher::with_workers(1)
    }

    /// `workers` threads (at least one), each hashing whole files.
    pub fn with_workers(workers: usize) -> Hasher {
        Hasher {
            workers: workers.max(1),
            running: OnceCell::new(),
            allocated: Cell::new(0),
            current: Cell::new(None),
            last: Cell::new(0),
        }
    }

    fn running(&self) -> &RunningHasher {
        self.running.get_or_init(|| {
            let (give_back, free) = channel::<Vec<u8>>();
            let behind: Arc<Vec<AtomicUsize>> =
                Arc::new((0..self.workers).map(|_| AtomicUsize::new(0)).collect());
            let (to, threads) = (0..self.workers)
                .map(|i| {
                    // Memory is bounded by the buffers' budget; this only keeps the ends of
                    // many small files from filling the channel before their data does.
                    let (to, work) = sync_channel::<ToHasher>(2 * BUDGET / MIN_CHUNK);
                    let (give_back, behind) = (give_back.clone(), Arc::clone(&behind));
                    (
                        to,
                        thread::spawn(move || work_on(work, give_back, &behind[i])),
                    )
                })
                .unzip();
            RunningHasher {
                to,
                behind,
                free,
                threads,
            }
        })
    }

    /// A buffer for the next chunk of a file with `left` bytes to go: one given back if it is
    /// large enough, else a new one no larger than the file needs (a 2 KiB file does not cost
    /// a zeroed megabyte). Buffers only grow, so a big file after small ones still moves in
    /// whole chunks.
    /// Within the budget, a new buffer is made only when none is free; beyond it, this waits
    /// for a worker to give one back.
    pub fn buffer(&self, left: u64) -> Vec<u8> {
        let want = (left as usize).clamp(MIN_CHUNK, CHUNK);
        let budget = BUDGET * self.workers;
        let free = &self.running().free;
        loop {
            let back = match free.try_recv() {
                Ok(buf) => Some(buf),
                Err(_) if self.allocated.get() + want <= budget => None,
                // Over budget: the workers hold every buffer; wait for one.
                Err(_) => free.recv().ok(),
            };
            match back {
                Some(buf) if buf.len() >= want => return buf,
                // Too small for this file: let it go, and count it out.
                Some(small) => self.allocated.set(self.allocated.get() - small.len()),
                None => {
                    self.allocated.set(self.allocated.get() + want);
                    return vec![0u8; want];
                }
            }
        }
    }

    /// The worker of the current file: the one least behind when the file starts, the next
    /// one after the last file's among those as little behind.
    fn worker(&self) -> usize {
        if let Some(w) = self.current.get() {
            return w;
        }
        let behind = &self.running().behind;
        let after = self.last.get() + 1;
        let w = (after..after + self.workers)
            .map(|w| w % self.workers)
            .min_by_key(|&w| behind[w].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.current.set(Some(w));
        self.last.set(w);
        w
    }

    pub fn data(&self, buf: Vec<u8>, n: usize) {
        let w = self.worker();
        let running = self.running();
        running.behind[w].fetch_add(n, Ordering::Relaxed);
        let _ = running.to[w].send(ToHasher::Data(buf, n));
    }

    pub fn end_file(&self, name: String) {
        let w = self.worker();
        self.current.set(None);
        let _ = self.running().to[w].send(ToHasher::End(name));
    }

    /// Every file's digest, once all were hashed.
    pub fn finish(self) -> Checksums {
        self.finish_by_worker().into_iter().flatten().collect()
    }

    /// Each worker's digests.
    fn finish_by_worker(self) -> Vec<Checksums> {
        let Some(running) = self.running.into_inner() else {
            return Vec::new();
        };
        drop(running.to);
        running
            .threads
            .into_iter()
            .map(|t| t.join().expect("a hashing thread does not panic"))
            .collect()
    }
}

/// A worker: hashes what it is sent, in order, giving each buffer back once hashed.
fn work_on(
    work: Receiver<ToHasher>,
    give_back: Sender<Vec<u8>>,
    behind: &AtomicUsize,
) -> Checksums {
    let mut sums = Checksums::new();
    let mut sha = Sha256::new();
    for message in work {
        match message {
            ToHasher::Data(buf, n) => {
                sha.update(&buf[..n]);
                behind.fetch_sub(n, Ordering::Relaxed);
                let _ = give_back.send(buf);
            }
            ToHasher::End(name) => {
                sums.insert(name, hex(&std::mem::take(&mut sha).finalize()));
            }
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes files of `sizes` bytes through `hasher`; returns what their digests are.
    fn feed(hasher: &Hasher, sizes: impl Iterator<Item = usize>) -> Checksums {
        let mut expected = Checksums::new();
        for (i, size) in sizes.enumerate() {
            let data: Vec<u8> = (0..size).map(|b| (b * 31 + i) as u8).collect();
            let mut left = &data[..];
            while !left.is_empty() {
                let mut buf = hasher.buffer(left.len() as u64);
                assert!(
                    hasher.allocated.get() <= BUDGET * hasher.workers,
                    "file {i}"
                );
                let n = buf.len().min(left.len());
                buf[..n].copy_from_slice(&left[..n]);
                hasher.data(buf, n);
                left = &left[n..];
            }
            let name = format!("./f{i}");
            hasher.end_file(name.clone());
            expected.insert(name, hex(&Sha256::digest(&data)));
        }
        expected
    }

    /// Small files, then big ones, then small again: buffers are reused, grown and let go.
    fn mixed() -> impl Iterator<Item = usize> {
        (0..200)
            .map(|i| 1_000 + i * 300)
            .chain((0..6).map(|i| 3 * CHUNK + i * 7))
            .chain((0..50).map(|i| 70_000 + i))
            .chain([0, 0])
    }

    #[test]
    fn digests_every_file_and_keeps_its_buffers_within_the_budget() {
        for workers in [1, SIDE_BY_SIDE, 3] {
            let hasher = Hasher::with_workers(workers);
            let expected = feed(&hasher, mixed());
            assert_eq!(hasher.finish(), expected, "{workers} workers");
        }
    }

    /// Each file whole on one worker, and every worker given files: a stored tar's files are
    /// hashed side by side, where they were hashed one after another on the reading thread.
    #[test]
    fn files_are_shared_out_whole_between_the_workers() {
        let hasher = Hasher::with_workers(SIDE_BY_SIDE);
        let expected = feed(&hasher, [9 * CHUNK + 5].into_iter().chain(mixed()));
        let by_worker = hasher.finish_by_worker();
        assert_eq!(by_worker.len(), SIDE_BY_SIDE);
        for (w, sums) in by_worker.iter().enumerate() {
            assert!(sums.len() > 10, "worker {w} hashed {} files", sums.len());
        }
        let total: usize = by_worker.iter().map(Checksums::len).sum();
        assert_eq!(total, expected.len(), "no file hashed twice, nor split");
        let merged: Checksums = by_worker.into_iter().flatten().collect();
        assert_eq!(merged, expected);
    }
}
