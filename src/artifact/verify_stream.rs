//! A writer that saves an artifact stream and, as it passes, reads it as a tar, so the
//! receiving side learns every file's checksum (SHA-256, and BLAKE3 when asked) without
//! reading the data again.
//!
//! The caller's thread only gathers bytes into batches; one thread writes them to the file and
//! a checker thread parses and hashes them (a plain tar's file data where it lies in the
//! batches, never copied out), so reading the stream, writing it to disk and hashing it run
//! side by side. A plain tar whose BLAKE3 is asked for too has two checkers, each parsing
//! every header, one taking the SHA-256 of every file and the other its BLAKE3: one thread
//! took both one after the other and was the drain's longest (docs/benchmarks.md, "Drain,
//! stop 21"). Bounded channels keep the memory to a few batches whatever the
//! size. A stream shorter than one batch starts no thread: it is written and checked at the
//! end, on the caller's thread.

use std::io::{self, Write};
use std::sync::{Arc, mpsc};

use super::handoff::{self, Outcome, Receiver, RunInterrupted, Sender, Stopped};
use super::tar_reader::{
    Checked, TarReadError, check_tar as read_checked, check_tar_chunks, check_tar_chunks_blake3,
};
use crate::chunk_stream::{ChunkSink, ChunkSource, ChunkStream};

/// Bytes gathered before they are handed on, for an upload: it copies them into its parts
/// anyway, within a memory budget of its own.
const BATCH: usize = 256 << 10;
/// The same for a local file (see [`VerifyingWriter::in_large_batches`]). Fewer, larger
/// hand-offs cost the pipeline's threads fewer wake-ups: in one measurement (11 rounds,
/// medians, docs/benchmarks.md, "Drain, stop 16"), 1 MiB batches in place of 256 KiB took a
/// drain of 512 MiB from 0.81 to 0.71 s, and 2 MiB ones were no faster than 1 MiB.
const LARGE_BATCH: usize = 1 << 20;
/// Batches in flight to each thread.
const IN_FLIGHT: usize = 4;
/// Where a batch's bytes start: a plain local file writes a whole aligned batch to the disk
/// from the batch itself (`WritebackFile`'s pass-through), not through a copy into its own
/// gathering buffer. (Through a driver-side codec, the codec copies it anyway.)
const ALIGN: usize = 4096;
/// What a stream may hold before its batch is a whole aligned one.
const SMALL: usize = 64 << 10;

/// A batch shared by the file-writing and the checking thread. Once both are done with it,
/// its buffer goes back to the writer for the next batch: no fresh memory, and none of this
/// machine's costly first-touch page faults, for every megabyte.
#[derive(Clone, Default)]
struct Batch(Arc<Filled>);

#[derive(Default)]
struct Filled {
    bytes: Vec<u8>,
    /// Where the batch starts in `bytes`: the first aligned byte.
    start: usize,
    /// Where it ends.
    end: usize,
    back: Option<mpsc::Sender<Vec<u8>>>,
}

impl Drop for Filled {
    fn drop(&mut self) {
        if let Some(back) = &self.back {
            let _ = back.send(std::mem::take(&mut self.bytes));
        }
    }
}

impl AsRef<[u8]> for Batch {
    fn as_ref(&self) -> &[u8] {
        &self.0.bytes[self.0.start..self.0.end]
    }
}

/// The batch being filled, and the buffers given back.
///
/// A buffer's bytes are all initialised (a new one is zeroed once, and a reused one keeps its
/// length), so a stream read straight into one ([`ChunkSink`]) needs no zeroing first; what
/// the batch holds is `start..end`.
struct Filling {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
    /// A batch's bytes: [`BATCH`] or [`LARGE_BATCH`].
    size: usize,
    /// How many whole buffers were made (not given back).
    #[cfg(test)]
    made: usize,
    back: mpsc::Sender<Vec<u8>>,
    given_back: mpsc::Receiver<Vec<u8>>,
}

impl Filling {
    fn new() -> Filling {
        let (back, given_back) = mpsc::channel();
        Filling {
            bytes: Vec::new(),
            start: 0,
            end: 0,
            size: BATCH,
            #[cfg(test)]
            made: 0,
            back,
            given_back,
        }
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn filled(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// Room for up to `want` more bytes, within the batch's (at least one byte), at the end of
    /// what is filled; [`Filling::taken`] then says how much of it was filled. A stream starts
    /// in a small buffer that grows as any vector does (a fleet's empty artifacts, 10 KiB
    /// each, never fill a batch); past [`SMALL`], every batch is whole and aligned.
    fn room(&mut self, want: usize) -> &mut [u8] {
        if self.bytes.capacity() == 0 {
            match want > SMALL {
                // A stream whose first write is large (a chunk of a megabyte): whole from the
                // first batch.
                true => (self.bytes, self.start) = self.whole(),
                false => self.bytes.reserve_exact(want.max(8 * 1024)),
            }
            self.end = self.start;
        }
        let n = want.min(self.size.saturating_sub(self.len()).max(1));
        if self.end + n > self.bytes.len() {
            if self.end + n > self.bytes.capacity() && self.len() + n > SMALL {
                let (mut whole, start) = self.whole();
                let len = self.len();
                whole[start..start + len].copy_from_slice(self.filled());
                (self.bytes, self.start, self.end) = (whole, start, start + len);
            } else {
                self.bytes.resize(self.end + n, 0);
            }
        }
        &mut self.bytes[self.end..self.end + n]
    }

    /// `n` bytes of the room were filled.
    fn taken(&mut self, n: usize) {
        self.end += n;
    }

    /// An aligned buffer of a whole batch, one given back if there is one, and where its batch
    /// starts.
    fn whole(&mut self) -> (Vec<u8>, usize) {
        let mut bytes = self.given_back.try_recv().unwrap_or_else(|_| {
            #[cfg(test)]
            {
                self.made += 1;
            }
            Vec::with_capacity(self.size + ALIGN)
        });
        // Never longer than its capacity, the buffer never moves: its start stays aligned.
        bytes.resize(self.size + ALIGN, 0);
        let start = bytes.as_ptr().align_offset(ALIGN).min(ALIGN);
        (bytes, start)
    }

    /// The batch filled so far, handed on, and a whole one in its place when `more` follow.
    fn hand_on(&mut self, more: bool) -> Batch {
        let next = match more {
            true => self.whole(),
            false => (Vec::new(), 0),
        };
        let bytes = std::mem::replace(&mut self.bytes, next.0);
        let start = std::mem::replace(&mut self.start, next.1);
        let end = std::mem::replace(&mut self.end, next.1);
        Batch(Arc::new(Filled {
            bytes,
            start,
            end,
            back: Some(self.back.clone()),
        }))
    }
}

/// What checks the stream: reads it as a tar and returns its checksums, with their BLAKE3
/// too when the flag says.
type Check = fn(&mut ChunkStream<Batches>, bool) -> Result<Checked, TarReadError>;

/// The BLAKE3 half of a plain tar's check, for the checker beside (its manifest as `blake3`).
fn check_blake3_beside(
    input: &mut ChunkStream<Batches>,
    _blake3: bool,
) -> Result<Checked, TarReadError> {
    check_tar_chunks_blake3(input).map(|sums| Checked {
        sha256: Default::default(),
        blake3: Some(sums),
    })
}

/// The two halves of a check as one: the same files in each, or neither is believed.
fn joined(main: Checked, beside: Checked) -> Result<Checked, TarReadError> {
    let blake3 = beside.blake3.unwrap_or_default();
    if !main.sha256.keys().eq(blake3.keys()) {
        return Err(TarReadError::Read(io::Error::other(
            "the stream's two checks found different files",
        )));
    }
    Ok(Checked {
        sha256: main.sha256,
        blake3: Some(blake3),
    })
}

/// A zstd stream of a tar (compressed on the VM): decompressed, then read as a tar. A stream
/// cut short or damaged is an error, as a short tar is.
fn check_zstd_tar(input: &mut ChunkStream<Batches>, blake3: bool) -> Result<Checked, TarReadError> {
    let mut plain = super::codec::zstd::decompressor(input).map_err(TarReadError::Read)?;
    let sums = read_checked(&mut plain, blake3)?;
    // The rest of the frame (zstd's end and checksum) is read too: a frame that does not end
    // well is refused even when the tar inside looked whole.
    io::copy(&mut plain, &mut io::sink()).map_err(TarReadError::Read)?;
    Ok(sums)
}

pub struct VerifyingWriter<W> {
    batch: Filling,
    stage: Stage<W>,
    check: Check,
    /// Where the stream's BLAKE3 can be taken by a checker of its own: `check` then takes the
    /// SHA-256 alone.
    beside: Option<Check>,
    /// Whether the check takes every file's BLAKE3 too.
    blake3: bool,
    /// Whether to stop waiting for the threads: the run was interrupted.
    stop: fn() -> bool,
}

enum Stage<W> {
    /// Nothing handed on yet: an artifact smaller than one batch is written and checked on
    /// the caller's thread at `finish`, without starting two threads for it.
    Gathering(W),
    Threads(Threads<W>),
    /// Only while switching from one to the other.
    Switching,
}

struct Threads<W> {
    to_file: Option<Sender<Batch>>,
    file: Outcome<io::Result<W>>,
    checker: Checker,
    /// The BLAKE3 half of the check, on a thread of its own.
    beside: Option<Checker>,
}

fn interrupted() -> io::Error {
    RunInterrupted::io()
}

impl<W: Write + Send + 'static> Threads<W> {
    fn start(
        mut out: W,
        check: Check,
        beside: Option<Check>,
        blake3: bool,
        stop: fn() -> bool,
    ) -> Self {
        let (to_file, batches) = handoff::bounded::<Batch>(IN_FLIGHT, stop);
        let file = handoff::spawn(stop, move || {
            let mut failed = None;
            while let Some(batch) = batches.recv() {
                // After a failure (a full disk) the stream is still taken in to its end, so
                // the sender never blocks; the first error is the result.
                if failed.is_none()
                    && let Err(e) = out.write_all(batch.as_ref())
                {
                    failed = Some(e);
                }
            }
            match failed {
                Some(e) => Err(e),
                None => out.flush().map(|()| out),
            }
        });
        let beside = beside.filter(|_| blake3);
        Threads {
            to_file: Some(to_file),
            file,
            checker: Checker::start(check, blake3 && beside.is_none(), stop),
            beside: beside.map(|check| Checker::start(check, false, stop)),
        }
    }

    fn send(&mut self, batch: Batch) -> io::Result<()> {
        // A thread that stopped early has its reason in its result.
        if let Some(tx) = &self.to_file {
            match tx.send(batch.clone()) {
                Ok(()) => {}
                Err(Stopped::Gone) => self.to_file = None,
                Err(Stopped::Interrupted) => return Err(interrupted()),
            }
        }
        if let Some(beside) = &mut self.beside {
            beside.send(batch.clone())?;
        }
        self.checker.send(batch)
    }

    fn finish(mut self) -> io::Result<(W, Result<Checked, TarReadError>)> {
        drop(self.to_file.take());
        let out = match self.file.wait() {
            Ok(result) => result?,
            Err(Stopped::Interrupted) => return Err(interrupted()),
            Err(Stopped::Gone) => return Err(io::Error::other("the file writer thread panicked")),
        };
        let checked = self.checker.finish()?;
        let checked = match self.beside {
            Some(beside) => {
                let blake3 = beside.finish()?;
                checked.and_then(|main| joined(main, blake3?))
            }
            None => checked,
        };
        Ok((out, checked))
    }
}

/// The thread that reads batches as a tar and hashes every file.
struct Checker {
    to: Option<Sender<Batch>>,
    thread: Outcome<Result<Checked, TarReadError>>,
}

impl Checker {
    fn start(check: Check, blake3: bool, stop: fn() -> bool) -> Checker {
        let (to, rx) = handoff::bounded::<Batch>(IN_FLIGHT, stop);
        let thread = handoff::spawn(stop, move || {
            let mut input = ChunkStream::from_source(Batches::Handed(rx));
            let result = check(&mut input, blake3);
            // Take in whatever follows the archive (padding) so the sender never blocks.
            let _ = io::copy(&mut input, &mut io::sink());
            result
        });
        Checker {
            to: Some(to),
            thread,
        }
    }

    fn send(&mut self, batch: Batch) -> io::Result<()> {
        // A checker that stopped early (a refused entry) has its reason in its result.
        if let Some(tx) = &self.to {
            match tx.send(batch) {
                Ok(()) => {}
                Err(Stopped::Gone) => self.to = None,
                Err(Stopped::Interrupted) => return Err(interrupted()),
            }
        }
        Ok(())
    }

    /// The checksums, or why the stream is refused; an interruption is the outer error.
    fn finish(mut self) -> io::Result<Result<Checked, TarReadError>> {
        drop(self.to.take());
        match self.thread.wait() {
            Ok(result) => Ok(result),
            Err(Stopped::Interrupted) => Err(interrupted()),
            Err(Stopped::Gone) => Ok(Err(TarReadError::Read(io::Error::other(
                "checksum thread panicked",
            )))),
        }
    }
}

impl<W: Write + Send + 'static> VerifyingWriter<W> {
    pub fn new(out: W) -> Self {
        // A plain tar: each file hashed where it lies in the batches.
        VerifyingWriter::with(out, check_tar_chunks, crate::interrupt::is_interrupted)
            .with_beside(check_blake3_beside)
    }

    /// As [`VerifyingWriter::new`] for a stream the VM compressed with zstd: `out` gets the
    /// compressed bytes, the checksums are those of the tar inside.
    pub fn new_zstd(out: W) -> Self {
        VerifyingWriter::with(out, check_zstd_tar, crate::interrupt::is_interrupted)
    }

    fn with(out: W, check: Check, stop: fn() -> bool) -> Self {
        VerifyingWriter {
            batch: Filling::new(),
            stage: Stage::Gathering(out),
            check,
            beside: None,
            blake3: false,
            stop,
        }
    }

    fn with_beside(mut self, beside: Check) -> Self {
        self.beside = Some(beside);
        self
    }

    /// Batches of [`LARGE_BATCH`] when `large` says (before the first write): for a local
    /// file, whose memory is not an upload's budget and which, plain, writes each batch to
    /// the disk as it is.
    pub fn in_large_batches(mut self, large: bool) -> Self {
        self.batch.size = if large { LARGE_BATCH } else { BATCH };
        self
    }

    /// The check takes every file's BLAKE3 too (before the first write).
    pub fn taking_blake3(mut self, blake3: bool) -> Self {
        self.blake3 = blake3;
        self
    }

    /// Hands the full batch on, starting the threads with the first one.
    fn send_batch(&mut self) -> io::Result<()> {
        let batch = self.batch.hand_on(true);
        if let Stage::Gathering(_) = self.stage
            && let Stage::Gathering(out) = std::mem::replace(&mut self.stage, Stage::Switching)
        {
            self.stage = Stage::Threads(Threads::start(
                out,
                self.check,
                self.beside,
                self.blake3,
                self.stop,
            ));
        }
        match &mut self.stage {
            Stage::Threads(threads) => threads.send(batch),
            _ => Ok(()),
        }
    }

    /// The output, flushed, with the checksums the stream carried. The output's own error
    /// (e.g. no space left) comes first; an interrupted run is a [`RunInterrupted`] error, at
    /// once, whatever the threads are doing.
    pub fn finish(mut self) -> io::Result<(W, Result<Checked, TarReadError>)> {
        match std::mem::replace(&mut self.stage, Stage::Switching) {
            Stage::Gathering(mut out) => {
                out.write_all(self.batch.filled())?;
                out.flush()?;
                // Less than a batch: checked here, in time bounded by its size.
                let one = Batches::One(Some(self.batch.hand_on(false)));
                Ok((
                    out,
                    (self.check)(&mut ChunkStream::from_source(one), self.blake3),
                ))
            }
            Stage::Threads(mut threads) => {
                if self.batch.len() > 0 {
                    threads.send(self.batch.hand_on(false))?;
                }
                threads.finish()
            }
            Stage::Switching => unreachable!("the stage is always restored"),
        }
    }
}

impl<W: Write + Send + 'static> Write for VerifyingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.batch.room(buf.len());
        let n = room.len();
        room.copy_from_slice(&buf[..n]);
        self.batch.taken(n);
        if self.batch.len() >= self.batch.size {
            self.send_batch()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The stream read straight into the batches: a drain's chunks are never copied on the
/// caller's thread. (That copy was 108 ms of the driver's main thread's 225 ms in a profile of
/// a drain of 512 MiB: docs/benchmarks.md, "Drain, stop 17".)
impl<W: Write + Send + 'static> ChunkSink for VerifyingWriter<W> {
    fn take_from(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut left = len;
        while left > 0 {
            let room = self.batch.room(left);
            let n = room.len();
            fill(room)?;
            self.batch.taken(n);
            left -= n;
            if self.batch.len() >= self.batch.size {
                self.send_batch()?;
            }
        }
        Ok(())
    }
}

/// What the check reads: the batches handed to its thread, up to the sender's end, or the
/// one batch of a stream that never filled one.
enum Batches {
    Handed(Receiver<Batch>),
    One(Option<Batch>),
}

impl ChunkSource for Batches {
    type Chunk = Batch;

    fn next_chunk(&mut self, chunk: &mut Batch) -> io::Result<bool> {
        let next = match self {
            Batches::Handed(rx) => rx.recv(),
            Batches::One(one) => one.take(),
        };
        Ok(next.map(|next| *chunk = next).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A tar of one file `big` holding `size` bytes of 7s, and that file's checksum.
    fn one_file_tar(size: usize) -> (Vec<u8>, String) {
        let mut tar = tar::Builder::new(Vec::new());
        let data = vec![7u8; size];
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "big", &data[..]).unwrap();
        let sum = super::super::checksums::hex(&{
            use sha2::Digest;
            sha2::Sha256::digest(&data)
        });
        (tar.into_inner().unwrap(), sum)
    }

    #[test]
    fn a_stream_of_less_than_a_batch_is_written_and_checked_the_same() {
        for size in [0, 1, 2_000, BATCH - 2_048] {
            let (bytes, sum) = one_file_tar(size);
            assert!(bytes.len() <= BATCH, "{size}");
            let mut w = VerifyingWriter::new(Vec::new());
            for piece in bytes.chunks(1_000) {
                w.write_all(piece).unwrap();
            }
            let (out, sums) = w.finish().unwrap();
            assert_eq!(out, bytes, "{size}");
            assert_eq!(sums.unwrap().sha256["./big"], sum, "{size}");
        }
        let mut w = VerifyingWriter::new(Full);
        w.write_all(&one_file_tar(10).0).unwrap();
        let err = w.finish().err().expect("the disk was full");
        assert_eq!(err.raw_os_error(), Some(28));
    }

    #[test]
    fn writes_everything_and_reports_the_streams_checksums() {
        let (bytes, sum) = one_file_tar(700_000);
        let blake3 = blake3::hash(&vec![7u8; 700_000]).to_hex().to_string();
        for (size, taking_blake3) in [(700_000, false), (700_000, true), (1_000, true)] {
            let (bytes, sum, blake3) = match size {
                700_000 => (bytes.clone(), sum.clone(), blake3.clone()),
                _ => {
                    let (bytes, sum) = one_file_tar(size);
                    (
                        bytes,
                        sum,
                        blake3::hash(&vec![7u8; size]).to_hex().to_string(),
                    )
                }
            };
            let mut w = VerifyingWriter::new(Vec::new()).taking_blake3(taking_blake3);
            for piece in bytes.chunks(100_003) {
                w.write_all(piece).unwrap();
            }
            let (out, sums) = w.finish().unwrap();
            assert_eq!(out, bytes);
            let sums = sums.unwrap();
            assert_eq!(sums.sha256.len(), 1);
            assert_eq!(sums.sha256["./big"], sum);
            let want_blake3 = taking_blake3.then(|| [("./big".to_string(), blake3)].into());
            assert_eq!(sums.blake3, want_blake3, "{size} bytes");
        }
    }

    /// A tar of many files, some empty, one a hard link and one a symlink, through the two
    /// checkers (SHA-256 on one, BLAKE3 on the other) and through one read on this thread:
    /// the same manifests, the link's digests its target's. And a stream the BLAKE3 half
    /// refuses alone (its own parse) is refused: neither half's verdict is dropped.
    #[test]
    fn the_two_halves_of_a_check_give_what_one_read_gives() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: Vec<u8>| {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, &data[..]).unwrap();
        };
        for i in 0..40u32 {
            let size = [0, 1, 511, 512, 70_000, 300_000][i as usize % 6];
            add(
                &format!("d/f{i}"),
                (0..size).map(|b| (b ^ i) as u8).collect(),
            );
        }
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Link);
        link.set_size(0);
        link.set_mode(0o644);
        tar.append_link(&mut link, "d/hard", "d/f4").unwrap();
        let mut sym = tar::Header::new_gnu();
        sym.set_entry_type(tar::EntryType::Symlink);
        sym.set_size(0);
        sym.set_mode(0o777);
        tar.append_link(&mut sym, "d/soft", "f4").unwrap();
        let bytes = tar.into_inner().unwrap();
        assert!(
            bytes.len() > 2 * LARGE_BATCH,
            "more than a batch: the threads run"
        );

        let once = read_checked(&mut &bytes[..], true).unwrap();
        let mut w = VerifyingWriter::new(Vec::new())
            .in_large_batches(true)
            .taking_blake3(true);
        w.write_all(&bytes).unwrap();
        let (out, halves) = w.finish().unwrap();
        assert!(out == bytes);
        let halves = halves.unwrap();
        assert_eq!(halves, once);
        assert_eq!(halves.sha256.len(), 41, "40 files and the hard link");
        let b3 = halves.blake3.as_ref().unwrap();
        assert_eq!(b3["./d/hard"], b3["./d/f4"]);

        // The SHA-256 half cannot see a refusal only the BLAKE3 half makes, so one is made to
        // be seen by it alone: each checker is started with its own check.
        fn refusing(_: &mut ChunkStream<Batches>, _: bool) -> Result<Checked, TarReadError> {
            Err(TarReadError::Refused {
                entry: "./d/f1".into(),
                why: "refused by the BLAKE3 half".into(),
            })
        }
        let mut w = VerifyingWriter::new(Vec::new())
            .with_beside(refusing)
            .taking_blake3(true);
        w.write_all(&bytes).unwrap();
        let (_, refused) = w.finish().unwrap();
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("refused by the BLAKE3 half")
        );
    }

    /// What the file's thread is handed: each write's address and length, and the bytes.
    #[derive(Default)]
    struct Recording {
        writes: Vec<(usize, usize)>,
        bytes: Vec<u8>,
    }

    impl Write for Recording {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes.push((buf.as_ptr() as usize, buf.len()));
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The file's thread of a local file writes whole batches of a megabyte, aligned, so that
    /// a direct write takes them as they are (`WritebackFile`'s pass-through), and their
    /// buffers come back for the next batches: a long stream costs a few buffers, not one a
    /// megabyte. Whether its first write is small or a whole chunk, written or read in.
    #[test]
    fn a_long_streams_batches_reach_the_file_whole_aligned_and_in_reused_buffers() {
        // Pieces of 512 bytes: a drain's usual start (a header), then a megabyte each.
        let firsts = [100_003, 1 << 20, 512, 1_000];
        for (first, read_in) in firsts.iter().flat_map(|&f| [(f, false), (f, true)]) {
            let (out, made) = recorded_stream(LARGE_BATCH, first, read_in);
            let (last, whole) = out.writes.split_last().unwrap();
            assert!(last.1 < LARGE_BATCH && last.0 % ALIGN == 0, "last {last:?}");
            assert!(whole.len() >= 40, "{} batches", whole.len());
            for (at, len) in whole {
                assert_eq!((at % ALIGN, *len), (0, LARGE_BATCH), "a batch at {at:#x}");
            }
            assert!(
                made <= 2 * IN_FLIGHT + 4,
                "{made} buffers made for 40 batches"
            );
        }
    }

    /// An upload's batches are the smaller ones: its memory is its parts' budget.
    #[test]
    fn an_uploads_batches_are_the_small_ones() {
        let (out, _) = recorded_stream(BATCH, 100_003, true);
        let (_, whole) = out.writes.split_last().unwrap();
        assert!(whole.iter().all(|(_, len)| *len == BATCH), "{whole:?}");
    }

    /// A stream of about 40 large batches through a recording file, written in pieces of
    /// `first` bytes (with `read_in`, read into the writer's room as a drain's chunks are),
    /// in batches of `size`; what the file was handed, and how many whole buffers were made
    /// for it.
    fn recorded_stream(size: usize, first: usize, read_in: bool) -> (Recording, usize) {
        let (bytes, sum) = one_file_tar(40 * LARGE_BATCH + 12_345);
        let mut w =
            VerifyingWriter::new(Recording::default()).in_large_batches(size == LARGE_BATCH);
        let (head, tail) = bytes.split_at(if first == 512 { 512 } else { 0 });
        let rest = if first == 512 { 1 << 20 } else { first };
        for piece in std::iter::once(head).chain(tail.chunks(rest)) {
            match read_in {
                false => w.write_all(piece).unwrap(),
                true => {
                    let mut rest = piece;
                    w.take_from(piece.len(), &mut |room| rest.read_exact(room))
                        .unwrap();
                    assert!(rest.is_empty());
                }
            }
        }
        let made = w.batch.made;
        let (out, sums) = w.finish().unwrap();
        assert!(
            out.bytes == bytes,
            "the file got other bytes than the stream's"
        );
        assert_eq!(sums.unwrap().sha256["./big"], sum);
        (out, made)
    }

    /// What a compromised VM can send the driver: a GNU long-name record claiming 2 GiB. The
    /// check refuses it from its header, and the stream is still taken in to its end.
    #[test]
    fn a_2_gib_long_name_record_in_the_stream_is_refused_from_its_header() {
        let mut long = tar::Header::new_gnu();
        long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        long.set_entry_type(tar::EntryType::GNULongName);
        long.set_size(2 << 30);
        long.set_cksum();
        let mut w = VerifyingWriter::new(io::sink());
        w.write_all(long.as_bytes()).unwrap();
        for _ in 0..32 {
            w.write_all(&[b'n'; BATCH]).unwrap();
        }
        let (_, sums) = w.finish().unwrap();
        assert_eq!(
            sums.unwrap_err().to_string(),
            "entry '././@LongLink' is refused: its GNU long name is 2147483648 bytes, more than the 4096 bytes allowed"
        );
    }

    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    fn stop() -> bool {
        STOP.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A check that never ends and never reads, as the exponential symlink check did.
    fn endless(_: &mut ChunkStream<Batches>, _: bool) -> Result<Checked, TarReadError> {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_check_that_never_ends_does_not_keep_an_interrupted_run_waiting() {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Stuck handing on batches the check never takes...
            let mut w = VerifyingWriter::with(Vec::new(), endless, stop);
            let writing = w
                .write_all(&vec![0u8; 10 * BATCH])
                .map_err(|e| RunInterrupted::is(&e));
            // ...and waiting for a check that never ends.
            let mut w = VerifyingWriter::with(Vec::new(), endless, stop);
            w.write_all(&vec![0u8; BATCH + 1]).unwrap();
            let finishing = w.finish().err().map(|e| RunInterrupted::is(&e));
            let _ = done.send((writing, finishing));
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        STOP.store(true, std::sync::atomic::Ordering::SeqCst);
        // What an interruption does: set the flag, then wake the waiters.
        crate::interrupt::wake_waiters();
        let (writing, finishing) = result
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("still waiting for the check 20 s after the run was interrupted");
        assert_eq!(writing, Err(true));
        assert_eq!(finishing, Some(true));
    }

    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_outputs_error_is_reported_after_the_whole_stream_was_taken() {
        let mut w = VerifyingWriter::new(Full);
        for _ in 0..64 {
            w.write_all(&[0u8; 100_000]).unwrap();
        }
        let err = w.finish().err().expect("the disk was full");
        assert_eq!(err.raw_os_error(), Some(28));
    }
}
