//! The artifact stream as `serve` sends it: chunks, as `ChunkWriter` frames them, with each
//! file's data moved from the file into stdout by the kernel (`sendfile`), not copied through
//! this process. Into a pipe (the local transport's, and sshd's), the pipe then holds the page
//! cache's own pages: the agent makes no copy, and the pipe allocates and charges no page of its
//! own for every 4 KiB (docs/benchmarks.md, "Drain, stop 18").
//!
//! The bytes were read anyway, for the digest: what the kernel does not send (an output that
//! refuses `sendfile`, a file that shrank, an error) is written from them, so the stream stays
//! in step whatever happens. A file changed between its read and its send reaches the driver
//! unlike its digest; the driver's check of the digests fails the backup.

use std::fs::File;
use std::io::{self, Write};

use nix::errno::Errno;

use crate::artifact::tar_writer::TarOut;
use crate::protocol::framing::{ChunkWriter, MAX_CHUNK, PASS_THROUGH};

pub struct FileData<'a, W: Write> {
    chunks: &'a mut ChunkWriter<W>,
    /// The output itself, for `sendfile`; `None` without one, or once it refused.
    to: Option<&'a File>,
}

impl<'a, W: Write> FileData<'a, W> {
    /// `to` is the descriptor `chunks` ends in, once its buffers are flushed.
    pub fn new(chunks: &'a mut ChunkWriter<W>, to: Option<&'a File>) -> Self {
        FileData { chunks, to }
    }
}

impl<W: Write> Write for FileData<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.chunks.write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.chunks.flush()
    }
}

impl<W: Write> TarOut for FileData<'_, W> {
    fn file_data(&mut self, bytes: &[u8], file: &File, at: u64) -> io::Result<()> {
        // Smaller pieces go with the headers around them, in one write (see `ChunkWriter`).
        let Some(to) = self.to.filter(|_| bytes.len() >= PASS_THROUGH) else {
            return self.chunks.write_all(bytes);
        };
        let mut at = at;
        for piece in bytes.chunks(MAX_CHUNK) {
            let out = self.chunks.open_chunk(piece.len())?;
            // Everything before this chunk's data is in the pipe before the data is.
            out.flush()?;
            let (sent, refused) = send(to, file, at, piece.len());
            out.write_all(&piece[sent..])?;
            if refused {
                self.to = None;
                // An output that failed fails here, with its own error, not at a later flush.
                out.flush()?;
            }
            at += piece.len() as u64;
        }
        Ok(())
    }
}

/// Moves up to `len` bytes of `file` from `at` into `to`, and says how many, and whether `to`
/// refused (an output `sendfile` cannot write to, or any error: the write and flush of the
/// rest from the bytes in hand then meet the output's own error again, if it was the
/// output's). It stops
/// early, without refusing, where the file ends: it shrank since it was read.
fn send(to: &File, file: &File, at: u64, len: usize) -> (usize, bool) {
    let mut offset = at as i64;
    let mut sent = 0;
    while sent < len {
        match nix::sys::sendfile::sendfile64(to, file, Some(&mut offset), len - sent) {
            Ok(0) => return (sent, false),
            Ok(n) => sent += n,
            Err(Errno::EINTR) => {}
            Err(_) => return (sent, true),
        }
    }
    (sent, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::framing::ChunkReader;
    use std::io::{Read, Seek};

    /// A file of `len` bytes that never repeat in step with a power of two (an xorshift
    /// sequence): bytes sent from a wrong offset cannot look right.
    fn file_of(len: usize, seed: u8) -> (tempfile::NamedTempFile, File, Vec<u8>) {
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(seed);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let mut named = tempfile::NamedTempFile::new().unwrap();
        named.write_all(&bytes).unwrap();
        let file = File::open(named.path()).unwrap();
        (named, file, bytes)
    }

    /// Writes a header, `file`'s data from `at` (with `in_hand` as the bytes read), and a
    /// trailer through a `FileData` over `out`, and returns the data chunks read back.
    fn through(out: File, to: Option<&File>, in_hand: &[u8], file: &File, at: u64) -> Vec<u8> {
        let mut chunks = ChunkWriter::new(io::BufWriter::new(out));
        let mut data = FileData::new(&mut chunks, to);
        data.write_all(b"header").unwrap();
        data.file_data(in_hand, file, at).unwrap();
        data.write_all(b"trailer").unwrap();
        let mut out = chunks.finish().unwrap().into_inner().unwrap();
        out.flush().unwrap();
        out.rewind().unwrap();
        let mut back = Vec::new();
        let mut all = Vec::new();
        out.read_to_end(&mut all).unwrap();
        let mut framed = &all[..];
        ChunkReader::new(&mut framed)
            .read_to_end(&mut back)
            .unwrap();
        assert!(framed.is_empty(), "nothing after the terminator");
        back
    }

    fn expected(data: &[u8]) -> Vec<u8> {
        [&b"header"[..], data, b"trailer"].concat()
    }

    #[test]
    fn a_files_data_is_sent_from_the_file_in_step_with_the_writes_around_it() {
        // Three chunks' worth, from an offset: the bytes in hand are not the ones written, so
        // what arrives shows it came from the file.
        let (_named, file, bytes) = file_of(3 * MAX_CHUNK + 4097, 1);
        let at = 4097;
        let from_file = &bytes[at..];
        let stale = vec![0u8; from_file.len()];
        let out = tempfile::tempfile().unwrap();
        let to = out.try_clone().unwrap();
        assert_eq!(
            through(out, Some(&to), &stale, &file, at as u64),
            expected(from_file)
        );
    }

    #[test]
    fn without_sendfile_or_past_a_shrunk_files_end_the_bytes_in_hand_are_written() {
        let (_named, file, bytes) = file_of(2 * MAX_CHUNK, 2);
        let in_hand: Vec<u8> = bytes.iter().map(|b| !b).collect();
        // No descriptor: the bytes in hand.
        let out = tempfile::tempfile().unwrap();
        assert_eq!(through(out, None, &in_hand, &file, 0), expected(&in_hand));
        // An output sendfile refuses (appending): the bytes in hand, in step.
        let appending = tempfile::NamedTempFile::new().unwrap();
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .open(appending.path())
                .unwrap()
        };
        let (out, to) = (open(), open());
        assert_eq!(
            through(out, Some(&to), &in_hand, &file, 0),
            expected(&in_hand)
        );
        // The file shrank after its read: what is left of it, then the bytes in hand.
        let kept = MAX_CHUNK + 100;
        std::fs::OpenOptions::new()
            .write(true)
            .open(_named.path())
            .unwrap()
            .set_len(kept as u64)
            .unwrap();
        let out = tempfile::tempfile().unwrap();
        let to = out.try_clone().unwrap();
        let back = through(out, Some(&to), &in_hand, &file, 0);
        assert_eq!(back, expected(&[&bytes[..kept], &in_hand[kept..]].concat()));
    }

    /// Into a real pipe of one page, read slowly: `sendfile` moves a page at a time, and every
    /// partial send is followed on from where it stopped. A pipe whose reader is gone is an
    /// error, not a stream cut short.
    #[test]
    fn into_a_small_pipe_every_partial_send_follows_on_and_a_closed_one_fails() {
        let (_named, file, bytes) = file_of(2 * MAX_CHUNK + 12_345, 4);
        let at = 333;
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let _ = nix::fcntl::fcntl(&write_end, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096));
        let reader = std::thread::spawn(move || {
            let mut from = File::from(read_end);
            let mut all = Vec::new();
            let mut buf = [0u8; 1000];
            loop {
                std::thread::sleep(std::time::Duration::from_micros(20));
                match from.read(&mut buf).unwrap() {
                    0 => return all,
                    n => all.extend_from_slice(&buf[..n]),
                }
            }
        });
        let out = File::from(write_end);
        let to = out.try_clone().unwrap();
        let stale = vec![0u8; bytes.len() - at];
        {
            let mut chunks = ChunkWriter::new(io::BufWriter::new(out));
            let mut data = FileData::new(&mut chunks, Some(&to));
            data.file_data(&stale, &file, at as u64).unwrap();
            assert!(data.to.is_some(), "a pipe takes sendfile");
            chunks.finish().unwrap();
        }
        drop(to);
        let all = reader.join().unwrap();
        let mut framed = &all[..];
        let mut back = Vec::new();
        ChunkReader::new(&mut framed)
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == bytes[at..], "the file's bytes from {at}, in order");
        // The reader gone: the write fails.
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        drop(read_end);
        let out = File::from(write_end);
        let to = out.try_clone().unwrap();
        let mut chunks = ChunkWriter::new(io::BufWriter::new(out));
        let mut data = FileData::new(&mut chunks, Some(&to));
        assert!(data.file_data(&stale, &file, at as u64).is_err());
    }

    #[test]
    fn small_pieces_go_with_the_headers_around_them() {
        let (_named, file, bytes) = file_of(PASS_THROUGH - 1, 3);
        let stale = vec![9u8; bytes.len()];
        let out = tempfile::tempfile().unwrap();
        let to = out.try_clone().unwrap();
        // Written from the bytes in hand, not the file.
        assert_eq!(through(out, Some(&to), &stale, &file, 0), expected(&stale));
    }
}
