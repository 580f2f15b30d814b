//! A local tar moved to an agent's pipe as the protocol's data chunks without passing through
//! the driver's memory: each chunk's length is written, then its bytes are spliced from the
//! file's pages into the pipe (`splice(2)`). A restore sends every byte of the backup; read
//! and written again here, they were two copies of the driver's CPU each.
//!
//! The chunks say their length before their bytes, so a file that ends before the length
//! it had when the send began (cut meanwhile) has its last chunk filled with zeros: the stream
//! stays in step, the agent refuses the artifact by its checksums, and the read's failure is
//! what is told. A file whose filesystem cannot splice is read and written instead, from where
//! the splice stopped.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use indicatif::ProgressBar;
use nix::errno::Errno;
use nix::fcntl::{SpliceFFlags, splice};

use crate::artifact::handoff::RunInterrupted;
use crate::protocol::framing::MAX_CHUNK;

/// Why a send of the backup's bytes stopped: reading them (a local file, a bucket's object, its
/// decoder), or writing to the agent.
#[derive(Debug)]
pub(super) enum SendError {
    Read(io::Error),
    Write(io::Error),
}

impl SendError {
    /// What a send that ended (its terminator written) leaves to tell: the failure to read
    /// the backup's bytes (`Ok(Some)`), none, or the write that broke the stream (`Err`).
    pub(super) fn after_the_end(copied: Result<u64, SendError>) -> io::Result<Option<io::Error>> {
        match copied {
            Ok(_) => Ok(None),
            Err(SendError::Read(e)) => Ok(Some(e)),
            Err(SendError::Write(e)) => Err(e),
        }
    }
}

/// Sends the first `len` bytes of `file` to `pipe` as data chunks (not the terminator), shown
/// on `bar`; returns the bytes sent.
pub(super) fn send_file(
    file: &File,
    len: u64,
    mut pipe: &File,
    bar: Option<&ProgressBar>,
) -> Result<u64, SendError> {
    let mut at: u64 = 0;
    let mut can_splice = true;
    while at < len {
        if crate::interrupt::is_interrupted() {
            return Err(SendError::Read(RunInterrupted::io()));
        }
        let n = (len - at).min(MAX_CHUNK as u64) as usize;
        pipe.write_all(&(n as u32).to_be_bytes())
            .map_err(SendError::Write)?;
        let mut left = n;
        while left > 0 {
            let moved = match can_splice {
                true => spliced(file, &mut at, pipe, left),
                false => Err(Errno::EINVAL),
            };
            let moved = match moved {
                Ok(k) => Ok(k),
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) => return Err(SendError::Write(Errno::EPIPE.into())),
                // Not a filesystem (or a pipe) that splices: read and write from here on.
                Err(Errno::EINVAL | Errno::ENOSYS) => {
                    can_splice = false;
                    copied(file, &mut at, pipe, left)
                }
                Err(e) => Err(SendError::Read(e.into())),
            };
            match moved {
                Ok(0) => {
                    // Cut meanwhile: the chunk is filled, and the stream stays in step.
                    fill(pipe, left).map_err(SendError::Write)?;
                    return Err(SendError::Read(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the tar ended at byte {at}, before its {len} bytes"),
                    )));
                }
                Ok(k) => {
                    left -= k;
                    if let Some(bar) = bar {
                        bar.inc(k as u64);
                    }
                }
                Err(SendError::Read(e)) => {
                    fill(pipe, left).map_err(SendError::Write)?;
                    return Err(SendError::Read(e));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(len)
}

/// Up to `want` bytes of `file` from `at` spliced into `pipe`; `at` moves on.
fn spliced(file: &File, at: &mut u64, pipe: &File, want: usize) -> Result<usize, Errno> {
    let mut off = i64::try_from(*at).map_err(|_| Errno::EOVERFLOW)?;
    let k = splice(
        file,
        Some(&mut off),
        pipe,
        None,
        want,
        SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_MORE,
    )?;
    *at += k as u64;
    Ok(k)
}

/// Up to `want` bytes of `file` from `at` read and written to `pipe`; `at` moves on.
fn copied(file: &File, at: &mut u64, mut pipe: &File, want: usize) -> Result<usize, SendError> {
    let mut buf = vec![0u8; want.min(MAX_CHUNK)];
    let k = loop {
        match file.read_at(&mut buf, *at) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other.map_err(SendError::Read)?,
        }
    };
    pipe.write_all(&buf[..k]).map_err(SendError::Write)?;
    *at += k as u64;
    Ok(k)
}

/// `n` zeros into `pipe`: the rest of a chunk whose bytes could not be read.
fn fill(mut pipe: &File, n: usize) -> io::Result<()> {
    pipe.write_all(&vec![0u8; n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::framing::ChunkReader;
    use std::io::Read;

    /// A pipe's two ends as files.
    fn pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe().unwrap();
        (File::from(r), File::from(w))
    }

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(bytes).unwrap();
        let file = File::open(tmp.path()).unwrap();
        (tmp, file)
    }

    /// What the agent reads of a send of `len` bytes of `bytes`, and the send's result.
    fn sent(bytes: &[u8], len: u64) -> (Vec<u8>, Result<u64, SendError>) {
        let (_tmp, file) = file_of(bytes);
        let (mut from, to) = pipe();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut chunks = ChunkReader::new(&mut from);
            chunks.read_to_end(&mut got).map(|_| got)
        });
        let result = send_file(&file, len, &to, None);
        let mut w = &to;
        w.write_all(&0u32.to_be_bytes()).unwrap();
        drop(to);
        (reader.join().unwrap().unwrap(), result)
    }

    /// Every byte arrives as chunks the protocol's reader takes, through the pipe; a file
    /// that turns out shorter than its length is filled with zeros and said to be short.
    #[test]
    fn a_file_goes_to_the_pipe_as_chunks_and_a_short_one_is_filled_and_told() {
        let bytes: Vec<u8> = (0..(3 * MAX_CHUNK + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        let (got, result) = sent(&bytes, bytes.len() as u64);
        assert_eq!(result.unwrap(), bytes.len() as u64);
        assert!(got == bytes, "the bytes differ");

        let (got, result) = sent(&bytes, bytes.len() as u64 + 1000);
        assert!(matches!(result, Err(SendError::Read(_))), "{result:?}");
        assert_eq!(got.len(), bytes.len() + 1000);
        assert!(got[..bytes.len()] == bytes[..]);
        assert!(got[bytes.len()..].iter().all(|&b| b == 0));
    }
}
