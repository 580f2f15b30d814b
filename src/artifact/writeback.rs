//! A file that asks the kernel to start writing its pages back while it is still being
//! written, so the fsync that ends a drain waits for the last few megabytes, not for all of
//! them.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;

/// Writeback starts every this many bytes.
const STEP: u64 = 8 << 20;

pub struct WritebackFile {
    file: File,
    written: u64,
    started_to: u64,
}

impl WritebackFile {
    pub fn new(file: File) -> WritebackFile {
        WritebackFile {
            file,
            written: 0,
            started_to: 0,
        }
    }

    /// The file back; not yet durable (see `BackupDir::sync`).
    pub fn into_file(self) -> File {
        self.file
    }

    fn start_writeback(&mut self) {
        let (offset, len) = (self.started_to, self.written - self.started_to);
        // SAFETY: sync_file_range only reads its integer arguments; the descriptor is open for
        // as long as `self.file` lives. It is a hint: a failure changes nothing but speed, and
        // the final fsync still makes the data durable.
        let _ = unsafe {
            nix::libc::sync_file_range(
                self.file.as_raw_fd(),
                offset as i64,
                len as i64,
                nix::libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        self.started_to = self.written;
    }
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started_to >= STEP {
            self.start_writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
