//! SHA-256 of a stream of files on a thread of its own, beside the thread that moves the data:
//! the agent's tar writer (backup) and its unpacking (restore) hand it each buffer once the
//! data is written, and name each file when it ends.

use std::cell::{Cell, OnceCell};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread;

use sha2::{Digest, Sha256};

use super::checksums::{Checksums, hex};

/// Bytes read at a time, at most.
const CHUNK: usize = 1 << 20;
/// The smallest buffer made for a small file.
const MIN_CHUNK: usize = 64 << 10;
/// The buffers' bytes, all told: what the hasher may be behind by. Counted in bytes, not
/// buffers, so that small files (a 64 KiB buffer each, and a message to end each) keep the
/// hasher as busy as big ones; a count of 4 buffers left it waiting between small files (see
/// docs/benchmarks.md, "Figures behind the code").
const BUDGET: usize = 4 * CHUNK;

/// What the hashing thread is told, in stream order.
enum ToHasher {
    /// The first `n` bytes of the buffer belong to the current file.
    Data(Vec<u8>, usize),
    /// The current file, named so, is complete.
    End(String),
}

/// SHA-256 on a thread of its own, started with the first file (an artifact with no files
/// costs no thread). Buffers go to it and come back for reuse, so there is no allocation (and
/// no page-faulting of fresh memory) per chunk.
pub struct Hasher {
    running: OnceCell<RunningHasher>,
    /// Bytes of buffers in existence (given out, in the channel, or given back).
    allocated: Cell<usize>,
}

struct RunningHasher {
    to: SyncSender<ToHasher>,
    free: Receiver<Vec<u8>>,
    thread: thread::JoinHandle<Checksums>,
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher {
            running: OnceCell::new(),
            allocated: Cell::new(0),
        }
    }

    fn running(&self) -> &RunningHasher {
        self.running.get_or_init(|| {
            // Memory is bounded by the buffers' budget; this only keeps the ends of many small
            // files from filling the channel before their data does.
            let (to, work) = sync_channel::<ToHasher>(2 * BUDGET / MIN_CHUNK);
            let (give_back, free) = channel::<Vec<u8>>();
            let thread = thread::spawn(move || {
                let mut sums = Checksums::new();
                let mut sha = Sha256::new();
                for message in work {
                    match message {
                        ToHasher::Data(buf, n) => {
                            sha.update(&buf[..n]);
                            let _ = give_back.send(buf);
                        }
                        ToHasher::End(name) => {
                            sums.insert(name, hex(&std::mem::take(&mut sha).finalize()));
                        }
                    }
                }
                sums
            });
            RunningHasher { to, free, thread }
        })
    }

    /// A buffer for the next chunk of a file with `left` bytes to go: one given back if it is
    /// large enough, else a new one no larger than the file needs (a 2 KiB file does not cost
    /// a zeroed megabyte). Buffers only grow, so a big file after small ones still moves in
    /// whole chunks.
    /// Within the budget, a new buffer is made only when none is free; beyond it, this waits
    /// for the hasher to give one back.
    pub fn buffer(&self, left: u64) -> Vec<u8> {
        let want = (left as usize).clamp(MIN_CHUNK, CHUNK);
        let free = &self.running().free;
        loop {
            let back = match free.try_recv() {
                Ok(buf) => Some(buf),
                Err(_) if self.allocated.get() + want <= BUDGET => None,
                // Over budget: the hasher holds every buffer; wait for one.
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

    pub fn data(&self, buf: Vec<u8>, n: usize) {
        let _ = self.running().to.send(ToHasher::Data(buf, n));
    }

    pub fn end_file(&self, name: String) {
        let _ = self.running().to.send(ToHasher::End(name));
    }

    /// Every file's digest, once all were hashed.
    pub fn finish(self) -> Checksums {
        let Some(running) = self.running.into_inner() else {
            return Checksums::new();
        };
        drop(running.to);
        running
            .thread
            .join()
            .expect("the hashing thread does not panic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_every_file_and_keeps_its_buffers_within_the_budget() {
        let hasher = Hasher::new();
        let mut expected = Checksums::new();
        // Small files, then big ones, then small again: buffers are reused, grown and let go.
        let sizes = (0..200)
            .map(|i| 1_000 + i * 300)
            .chain((0..6).map(|i| 3 * CHUNK + i * 7))
            .chain((0..50).map(|i| 70_000 + i));
        for (i, size) in sizes.enumerate() {
            let data: Vec<u8> = (0..size).map(|b| (b * 31 + i) as u8).collect();
            let mut left = &data[..];
            while !left.is_empty() {
                let mut buf = hasher.buffer(left.len() as u64);
                assert!(hasher.allocated.get() <= BUDGET, "file {i}");
                let n = buf.len().min(left.len());
                buf[..n].copy_from_slice(&left[..n]);
                hasher.data(buf, n);
                left = &left[n..];
            }
            let name = format!("./f{i}");
            hasher.end_file(name.clone());
            expected.insert(name, hex(&Sha256::digest(&data)));
        }
        assert_eq!(hasher.finish(), expected);
    }
}
