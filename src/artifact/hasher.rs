//! SHA-256 of a stream of files on a thread of its own, beside the thread that moves the data:
//! the agent's tar writer (backup) and its unpacking (restore) hand it each buffer once the
//! data is written, and name each file when it ends.

use std::cell::OnceCell;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread;

use sha2::{Digest, Sha256};

use super::checksums::{Checksums, hex};

/// Bytes read at a time, at most.
const CHUNK: usize = 1 << 20;
/// The smallest buffer made for a small file.
const MIN_CHUNK: usize = 64 << 10;

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
        }
    }

    fn running(&self) -> &RunningHasher {
        self.running.get_or_init(|| {
            // Bounded: at most a few chunks wait to be hashed.
            let (to, work) = sync_channel::<ToHasher>(4);
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
    pub fn buffer(&self, left: u64) -> Vec<u8> {
        let want = (left as usize).clamp(MIN_CHUNK, CHUNK);
        match self.running().free.try_recv() {
            Ok(buf) if buf.len() >= want => buf,
            _ => vec![0u8; want],
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
