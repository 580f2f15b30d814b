//! A writer that saves an artifact stream and, as it passes, reads it as a tar, so the
//! receiving side learns every file's checksum without reading the data again.
//!
//! The caller's thread only gathers bytes into batches; one thread writes them to the file and
//! a checker thread parses and hashes them, so reading the stream, writing it to disk and
//! hashing it run side by side. Bounded channels keep the memory to a few batches whatever the
//! size. A stream shorter than one batch starts no thread: it is written and checked at the
//! end, on the caller's thread.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::checksums::Checksums;
use super::tar_reader::{TarReadError, read_tar};
use crate::protocol::framing::exhausted;

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

pub struct VerifyingWriter<W> {
    batch: Vec<u8>,
    stage: Stage<W>,
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
    to_file: Option<SyncSender<Batch>>,
    file: JoinHandle<io::Result<W>>,
    checker: Checker,
}

impl<W: Write + Send + 'static> Threads<W> {
    fn start(mut out: W) -> Self {
        let (to_file, batches) = sync_channel::<Batch>(IN_FLIGHT);
        let file = std::thread::spawn(move || {
            let mut failed = None;
            for batch in batches {
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
            checker: Checker::start(),
        }
    }

    fn send(&mut self, batch: Batch) {
        // A thread that stopped early has its reason in its result.
        if self
            .to_file
            .as_ref()
            .is_some_and(|tx| tx.send(batch.clone()).is_err())
        {
            self.to_file = None;
        }
        self.checker.send(batch);
    }

    fn finish(mut self) -> io::Result<(W, Result<Checksums, TarReadError>)> {
        drop(self.to_file.take());
        let out = self
            .file
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the file writer thread panicked")))?;
        Ok((out, self.checker.finish()))
    }
}

/// The thread that reads batches as a tar and hashes every file.
struct Checker {
    to: Option<SyncSender<Batch>>,
    thread: JoinHandle<Result<Checksums, TarReadError>>,
}

impl Checker {
    fn start() -> Checker {
        let (to, rx) = sync_channel::<Batch>(IN_FLIGHT);
        let thread = std::thread::spawn(move || {
            let mut input = ChannelReader {
                rx,
                chunk: io::Cursor::new(Batch::default()),
            };
            let result = read_tar(&mut input, None);
            // Take in whatever follows the archive (padding) so the sender never blocks.
            let _ = io::copy(&mut input, &mut io::sink());
            result
        });
        Checker {
            to: Some(to),
            thread,
        }
    }

    fn send(&mut self, batch: Batch) {
        // A checker that stopped early (a refused entry) has its reason in its result.
        if self.to.as_ref().is_some_and(|tx| tx.send(batch).is_err()) {
            self.to = None;
        }
    }

    fn finish(mut self) -> Result<Checksums, TarReadError> {
        drop(self.to.take());
        self.thread.join().unwrap_or_else(|_| {
            Err(TarReadError::Read(io::Error::other(
                "checksum thread panicked",
            )))
        })
    }
}

impl<W: Write + Send + 'static> VerifyingWriter<W> {
    pub fn new(out: W) -> Self {
        VerifyingWriter {
            batch: Vec::new(),
            stage: Stage::Gathering(out),
        }
    }

    /// Hands the full batch on, starting the threads with the first one.
    fn send_batch(&mut self) {
        let batch = Batch(Arc::new(std::mem::replace(
            &mut self.batch,
            Vec::with_capacity(BATCH),
        )));
        if let Stage::Gathering(_) = self.stage
            && let Stage::Gathering(out) = std::mem::replace(&mut self.stage, Stage::Switching)
        {
            self.stage = Stage::Threads(Threads::start(out));
        }
        if let Stage::Threads(threads) = &mut self.stage {
            threads.send(batch);
        }
    }

    /// The output, flushed, with the checksums the stream carried. The output's own error
    /// (e.g. no space left) comes first.
    pub fn finish(mut self) -> io::Result<(W, Result<Checksums, TarReadError>)> {
        match std::mem::replace(&mut self.stage, Stage::Switching) {
            Stage::Gathering(mut out) => {
                out.write_all(&self.batch)?;
                out.flush()?;
                Ok((out, read_tar(&mut &self.batch[..], None)))
            }
            Stage::Threads(mut threads) => {
                if !self.batch.is_empty() {
                    threads.send(Batch(Arc::new(std::mem::take(&mut self.batch))));
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
            self.send_batch();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct ChannelReader {
    rx: Receiver<Batch>,
    chunk: io::Cursor<Batch>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while exhausted(&self.chunk) {
            match self.rx.recv() {
                Ok(chunk) => self.chunk = io::Cursor::new(chunk),
                Err(_) => return Ok(0),
            }
        }
        self.chunk.read(buf)
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
            assert_eq!(sums.unwrap()["./big"], sum, "{size}");
        }
        let mut w = VerifyingWriter::new(Full);
        w.write_all(&one_file_tar(10).0).unwrap();
        let err = w.finish().err().expect("the disk was full");
        assert_eq!(err.raw_os_error(), Some(28));
    }

    #[test]
    fn writes_everything_and_reports_the_streams_checksums() {
        let (bytes, sum) = one_file_tar(700_000);
        let mut w = VerifyingWriter::new(Vec::new());
        for piece in bytes.chunks(100_003) {
            w.write_all(piece).unwrap();
        }
        let (out, sums) = w.finish().unwrap();
        assert_eq!(out, bytes);
        let sums = sums.unwrap();
        assert_eq!(sums.len(), 1);
        assert_eq!(sums["./big"], sum);
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
