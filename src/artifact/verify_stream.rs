//! A writer that saves an artifact stream and, on another thread, reads it as a tar as it
//! passes, so the receiving side learns every file's checksum without reading the data again.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::checksums::Checksums;
use super::tar_reader::{TarReadError, read_tar};

/// Bytes gathered before they are handed to the checking thread.
const BATCH: usize = 256 * 1024;
/// Batches in flight: bounds the memory between the writer and the checker.
const IN_FLIGHT: usize = 8;

pub struct VerifyingWriter<W> {
    out: W,
    batch: Vec<u8>,
    to_checker: Option<SyncSender<Vec<u8>>>,
    checker: JoinHandle<Result<Checksums, TarReadError>>,
}

impl<W: Write> VerifyingWriter<W> {
    pub fn new(out: W) -> Self {
        let (tx, rx) = sync_channel(IN_FLIGHT);
        let checker = std::thread::spawn(move || {
            let mut input = ChannelReader {
                rx,
                chunk: Vec::new(),
                pos: 0,
            };
            let result = read_tar(&mut input, None);
            // Drain whatever follows the archive (padding) so the writer never blocks.
            let _ = io::copy(&mut input, &mut io::sink());
            result
        });
        VerifyingWriter {
            out,
            batch: Vec::with_capacity(BATCH),
            to_checker: Some(tx),
            checker,
        }
    }

    fn send_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        if let Some(tx) = &self.to_checker
            && tx.send(batch).is_err()
        {
            // The checker stopped early; its result says why.
            self.to_checker = None;
        }
    }

    /// Flushes the output and returns it with the checksums the stream carried.
    pub fn finish(mut self) -> io::Result<(W, Result<Checksums, TarReadError>)> {
        self.send_batch();
        self.out.flush()?;
        drop(self.to_checker.take());
        let result = self.checker.join().unwrap_or_else(|_| {
            Err(TarReadError::Read(io::Error::other(
                "checksum thread panicked",
            )))
        });
        Ok((self.out, result))
    }
}

impl<W: Write> Write for VerifyingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.batch.extend_from_slice(&buf[..n]);
        if self.batch.len() >= BATCH {
            self.send_batch();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
