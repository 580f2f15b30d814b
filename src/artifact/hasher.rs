//! The digest of every file of a stream, on a thread of its own beside the thread that moves
//! the data: the agent's tar writer (backup) and its unpacking (restore) hand it each buffer
//! once the data is written, and name each file when it ends. When the OS gives no thread, the
//! files are hashed on the calling thread instead, as they come.

use std::cell::{Cell, OnceCell, RefCell};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread;

use super::checksums::Checksums;
use super::digest::{DigestKind, FileDigest};

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

/// The digests on a thread of its own, started with the first file (an artifact with no files
/// costs no thread). Buffers go to it and come back for reuse, so there is no allocation (and
/// no page-faulting of fresh memory) per chunk.
pub struct Hasher {
    kind: DigestKind,
    running: OnceCell<Running>,
    /// Bytes of buffers in existence (given out, in the channel, or given back).
    allocated: Cell<usize>,
}

enum Running {
    Thread(HashingThread),
    /// The OS gave no thread: each buffer is hashed as it is handed over, and kept for the
    /// next chunk.
    Inline {
        digesting: RefCell<Digesting>,
        spare: RefCell<Option<Vec<u8>>>,
    },
}

/// The file being hashed, and the digests of those before it: the hashing thread's state, or
/// the calling thread's without one.
struct Digesting {
    kind: DigestKind,
    digest: FileDigest,
    sums: Checksums,
}

impl Digesting {
    fn new(kind: DigestKind) -> Digesting {
        Digesting {
            kind,
            digest: FileDigest::new(kind),
            sums: Checksums::new(),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
    }

    /// The current file, named so, is complete.
    fn end(&mut self, name: String) {
        let done = std::mem::replace(&mut self.digest, FileDigest::new(self.kind));
        self.sums.insert(name, done.finish());
    }
}

struct HashingThread {
    to: SyncSender<ToHasher>,
    free: Receiver<Vec<u8>>,
    thread: thread::JoinHandle<Checksums>,
}

impl Hasher {
    /// Digests of `kind`: SHA-256 for a backup's checksums, or what a restore was asked to check.
    pub fn new(kind: DigestKind) -> Hasher {
        Hasher {
            kind,
            running: OnceCell::new(),
            allocated: Cell::new(0),
        }
    }

    fn running(&self) -> &Running {
        self.running.get_or_init(|| {
            let kind = self.kind;
            // Memory is bounded by the buffers' budget; this only keeps the ends of many small
            // files from filling the channel before their data does.
            let (to, work) = sync_channel::<ToHasher>(2 * BUDGET / MIN_CHUNK);
            let (give_back, free) = channel::<Vec<u8>>();
            let started = crate::thread_start::start(
                || "hash the artifact's files".into(),
                move || {
                    let mut digesting = Digesting::new(kind);
                    for message in work {
                        match message {
                            ToHasher::Data(buf, n) => {
                                digesting.update(&buf[..n]);
                                let _ = give_back.send(buf);
                            }
                            ToHasher::End(name) => digesting.end(name),
                        }
                    }
                    digesting.sums
                },
            );
            match started {
                Ok(thread) => Running::Thread(HashingThread { to, free, thread }),
                Err(_) => Running::Inline {
                    digesting: RefCell::new(Digesting::new(kind)),
                    spare: RefCell::new(None),
                },
            }
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
        let free = match self.running() {
            Running::Thread(t) => &t.free,
            Running::Inline { spare, .. } => {
                return match spare.take() {
                    Some(buf) if buf.len() >= want => buf,
                    _ => vec![0u8; want],
                };
            }
        };
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
        match self.running() {
            Running::Thread(t) => {
                let _ = t.to.send(ToHasher::Data(buf, n));
            }
            Running::Inline { digesting, spare } => {
                digesting.borrow_mut().update(&buf[..n]);
                *spare.borrow_mut() = Some(buf);
            }
        }
    }

    pub fn end_file(&self, name: String) {
        match self.running() {
            Running::Thread(t) => {
                let _ = t.to.send(ToHasher::End(name));
            }
            Running::Inline { digesting, .. } => digesting.borrow_mut().end(name),
        }
    }

    /// Every file's digest, once all were hashed.
    pub fn finish(self) -> Checksums {
        match self.running.into_inner() {
            None => Checksums::new(),
            Some(Running::Inline { digesting, .. }) => digesting.into_inner().sums,
            Some(Running::Thread(running)) => {
                drop(running.to);
                running
                    .thread
                    .join()
                    .expect("the hashing thread does not panic")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::checksums::hex;
    use sha2::{Digest, Sha256};

    /// Feeds `hasher` small files, then big ones, then small again (buffers are reused, grown
    /// and let go), checking its buffers stay within the budget; returns each file's bytes.
    fn feed(hasher: &Hasher) -> Vec<(String, Vec<u8>)> {
        let sizes = (0..200)
            .map(|i| 1_000 + i * 300)
            .chain((0..6).map(|i| 3 * CHUNK + i * 7))
            .chain((0..50).map(|i| 70_000 + i));
        let mut files = Vec::new();
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
            files.push((name, data));
        }
        files
    }

    #[test]
    fn digests_every_file_and_keeps_its_buffers_within_the_budget() {
        let hasher = Hasher::new(DigestKind::Sha256);
        let files = feed(&hasher);
        assert!(matches!(hasher.running.get(), Some(Running::Thread(_))));
        let expected: Checksums = files
            .into_iter()
            .map(|(name, data)| (name, hex(&Sha256::digest(&data))))
            .collect();
        assert_eq!(hasher.finish(), expected);
    }

    #[test]
    fn without_a_thread_the_calling_thread_gives_the_same_digests_of_either_kind() {
        for kind in [DigestKind::Sha256, DigestKind::Blake3] {
            let inline = Hasher::new(kind);
            // The OS refuses the thread it starts with the first file.
            let files = crate::thread_start::with_threads_allowed(0, || feed(&inline));
            assert!(matches!(inline.running.get(), Some(Running::Inline { .. })));
            let threaded = Hasher::new(kind);
            assert_eq!(feed(&threaded).len(), files.len());
            let expected: Checksums = files
                .into_iter()
                .map(|(name, data)| {
                    let mut digest = FileDigest::new(kind);
                    digest.update(&data);
                    (name, digest.finish())
                })
                .collect();
            assert_eq!(inline.finish(), expected, "{}", kind.name());
            assert_eq!(threaded.finish(), expected, "{}", kind.name());
        }
    }
}
