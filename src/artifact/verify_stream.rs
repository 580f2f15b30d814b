//! A writer that saves an artifact stream and, as it passes, reads it as a tar, so the
//! receiving side learns every file's checksum (SHA-256, and BLAKE3 when asked) without
//! reading the data again.
//!
//! The caller's thread only gathers bytes into batches; one thread writes them to the file and
//! a checker thread parses and hashes them, so reading the stream, writing it to disk and
//! hashing it run side by side. Bounded channels keep the memory to a few batches whatever the
//! size. A stream shorter than one batch starts no thread: it is written and checked at the
//! end, on the caller's thread.

use std::io::{self, Read, Write};
use std::sync::Arc;

use super::handoff::{self, Outcome, Receiver, RunInterrupted, Sender, Stopped};
use super::tar_reader::{Checked, TarReadError, check_tar as read_checked};
use crate::chunk_stream::{ChunkSource, ChunkStream};

/// Bytes gathered before they are handed on.
const BATCH: usize = 256 * 1024;
/// Batches in flight to each thread.
const IN_FLIGHT: usize = 4;

/// A batch shared by the file-writing and the checking thread.
#[derive(Clone, Default)]
struct Batch(Arc<Vec<u8>>);

impl AsRef<[u8]> for Batch {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// What checks the stream: reads it as a tar and returns its checksums, with their BLAKE3
/// too when the flag says.
type Check = fn(&mut dyn Read, bool) -> Result<Checked, TarReadError>;

fn check_tar(input: &mut dyn Read, blake3: bool) -> Result<Checked, TarReadError> {
    read_checked(input, blake3)
}

/// A zstd stream of a tar (compressed on the VM): decompressed, then read as a tar. A stream
/// cut short or damaged is an error, as a short tar is.
fn check_zstd_tar(input: &mut dyn Read, blake3: bool) -> Result<Checked, TarReadError> {
    let mut plain = super::codec::zstd::decompressor(input).map_err(TarReadError::Read)?;
    let sums = read_checked(&mut plain, blake3)?;
    // The rest of the frame (zstd's end and checksum) is read too: a frame that does not end
    // well is refused even when the tar inside looked whole.
    io::copy(&mut plain, &mut io::sink()).map_err(TarReadError::Read)?;
    Ok(sums)
}

pub struct VerifyingWriter<W> {
    batch: Vec<u8>,
    stage: Stage<W>,
    check: Check,
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
}

fn interrupted() -> io::Error {
    RunInterrupted::io()
}

impl<W: Write + Send + 'static> Threads<W> {
    fn start(mut out: W, check: Check, blake3: bool, stop: fn() -> bool) -> Self {
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
        Threads {
            to_file: Some(to_file),
            file,
            checker: Checker::start(check, blake3, stop),
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
        self.checker.send(batch)
    }

    fn finish(mut self) -> io::Result<(W, Result<Checked, TarReadError>)> {
        drop(self.to_file.take());
        let out = match self.file.wait() {
            Ok(result) => result?,
            Err(Stopped::Interrupted) => return Err(interrupted()),
            Err(Stopped::Gone) => return Err(io::Error::other("the file writer thread panicked")),
        };
        Ok((out, self.checker.finish()?))
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
            let mut input = ChunkStream::from_source(Batches(rx));
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
        VerifyingWriter::with(out, check_tar, crate::interrupt::is_interrupted)
    }

    /// As [`VerifyingWriter::new`] for a stream the VM compressed with zstd: `out` gets the
    /// compressed bytes, the checksums are those of the tar inside.
    pub fn new_zstd(out: W) -> Self {
        VerifyingWriter::with(out, check_zstd_tar, crate::interrupt::is_interrupted)
    }

    fn with(out: W, check: Check, stop: fn() -> bool) -> Self {
        VerifyingWriter {
            batch: Vec::new(),
            stage: Stage::Gathering(out),
            check,
            blake3: false,
            stop,
        }
    }

    /// The check takes every file's BLAKE3 too (before the first write).
    pub fn taking_blake3(mut self, blake3: bool) -> Self {
        self.blake3 = blake3;
        self
    }

    /// Hands the full batch on, starting the threads with the first one.
    fn send_batch(&mut self) -> io::Result<()> {
        let batch = Batch(Arc::new(std::mem::replace(
            &mut self.batch,
            Vec::with_capacity(BATCH),
        )));
        if let Stage::Gathering(_) = self.stage
            && let Stage::Gathering(out) = std::mem::replace(&mut self.stage, Stage::Switching)
        {
            self.stage = Stage::Threads(Threads::start(out, self.check, self.blake3, self.stop));
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
                out.write_all(&self.batch)?;
                out.flush()?;
                // Less than a batch: checked here, in time bounded by its size.
                Ok((out, (self.check)(&mut &self.batch[..], self.blake3)))
            }
            Stage::Threads(mut threads) => {
                if !self.batch.is_empty() {
                    threads.send(Batch(Arc::new(std::mem::take(&mut self.batch))))?;
                }
                threads.finish()
            }
            Stage::Switching => unreachable!("the stage is always restored"),
        }
    }
}

impl<W: Write + Send + 'static> Write for VerifyingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.batch.capacity() == 0 {
            self.batch.reserve_exact(BATCH.min(buf.len().max(8 * 1024)));
        }
        let n = buf.len().min(BATCH.saturating_sub(self.batch.len()).max(1));
        self.batch.extend_from_slice(&buf[..n]);
        if self.batch.len() >= BATCH {
            self.send_batch()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The batches handed to the checker, up to the sender's end.
struct Batches(Receiver<Batch>);

impl ChunkSource for Batches {
    type Chunk = Batch;

    fn next_chunk(&mut self, chunk: &mut Batch) -> io::Result<bool> {
        Ok(self.0.recv().map(|next| *chunk = next).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn endless(_: &mut dyn Read, _: bool) -> Result<Checked, TarReadError> {
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
