//! The file a stored tar is written to. Where the filesystem allows it, the bytes go to the
//! disk directly (`O_DIRECT`), in whole aligned blocks (a caller's aligned megabyte as it is,
//! anything else gathered here), and not through the page cache: copying half a gigabyte into fresh page-cache pages (and reclaiming others for them
//! when memory is full of cache) was the largest CPU cost of a drain, larger than either side's
//! SHA-256, and the fsync that ends it then has nothing left to write but the last block (see
//! docs/benchmarks.md, "Drain and restore, stop 13"). Where it does not (a filesystem without
//! direct I/O, a block size this does not align to), the file is written as before, through
//! the page cache, asking the kernel to start writing its pages back while it is still being
//! written, so the fsync waits for the last few megabytes, not for all of them.
//!
//! A small file (at most `FIRST_GATHER`, 64 KiB, as an empty artifact's tar is: most of a
//! fleet's are) goes through the page cache in one write: a direct write of its whole blocks
//! was one more synchronous trip to the disk before the fsync's own, for a copy that costs
//! nothing.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// Writeback starts every this many bytes (buffered writes only).
const STEP: u64 = 8 << 20;
/// Direct writes start on, and are a multiple of, this many bytes: every logical block size
/// in common use (512 and 4096) divides it.
const ALIGN: usize = 4096;
/// Bytes gathered before a direct write, of bytes that do not pass through as they are: large
/// enough that the disk's latency per write is small beside its transfer time.
const DIRECT_CHUNK: usize = 4 << 20;

pub struct WritebackFile {
    file: File,
    /// Bytes handed to the kernel: the file's offset.
    written: u64,
    started_to: u64,
    /// Direct mode: the bytes not yet written, gathered until a whole chunk is there.
    direct: Option<Aligned>,
    /// How many direct writes were made.
    #[cfg(test)]
    direct_writes: usize,
    /// A write failed after this file had taken bytes it could not then write: every later
    /// write fails too, so no retry can go on past the hole they would leave.
    broken: bool,
}

/// A buffer whose start is aligned for direct I/O, without `unsafe`: a larger allocation and
/// the aligned slice inside it.
struct Aligned {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
    /// How many bytes it gathers now: from [`FIRST_GATHER`], doubled each time it fills, up
    /// to [`DIRECT_CHUNK`]. A driver drains many small tars at once (three a VM, fifty VMs in
    /// flight): a whole chunk each from the start was 200 MiB of a 1,000-VM fleet's peak.
    capacity: usize,
}

/// The fewest aligned bytes written directly from the caller's buffer, not gathered. Measured
/// with `dd oflag=direct conv=fsync` of a 512 MiB tar, one write after another as here
/// (docs/benchmarks.md, "Drain, stop 16"): 0.34 to 0.43 s at 1 MiB a write, 0.28 to 0.33 s
/// at 4 MiB, 0.76 to 1.62 s at 256 KiB. The drain's thread that writes is not its slowest, so
/// a megabyte without a copy beats 4 MiB with one.
const PASS_THROUGH: usize = 1 << 20;

/// What a direct file first gathers: the tar of an empty artifact fits.
const FIRST_GATHER: usize = 64 << 10;

impl Aligned {
    fn new() -> Aligned {
        Aligned::with_capacity(FIRST_GATHER)
    }

    fn with_capacity(capacity: usize) -> Aligned {
        let bytes = vec![0u8; capacity + ALIGN];
        let start = bytes.as_ptr().align_offset(ALIGN);
        Aligned {
            bytes,
            start,
            len: 0,
            capacity,
        }
    }

    /// Twice the room (at most a chunk), the bytes gathered kept.
    fn grow(&mut self) {
        let mut bigger = Aligned::with_capacity((self.capacity * 2).min(DIRECT_CHUNK));
        bigger.bytes[bigger.start..bigger.start + self.len].copy_from_slice(self.filled());
        bigger.len = self.len;
        *self = bigger;
    }

    fn room(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start + self.len..self.start + self.capacity]
    }

    fn filled(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }
}

impl WritebackFile {
    /// Writes to `file` (empty, at offset 0) directly when its filesystem takes `O_DIRECT`.
    pub fn new(file: File) -> WritebackFile {
        let direct = set_direct(&file, true).is_ok().then(Aligned::new);
        WritebackFile {
            file,
            written: 0,
            started_to: 0,
            direct,
            #[cfg(test)]
            direct_writes: 0,
            broken: false,
        }
    }

    /// Whether the bytes go to the disk directly.
    #[cfg(test)]
    fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The bytes held to gather a direct write.
    #[cfg(test)]
    fn gathering(&self) -> usize {
        self.direct.as_ref().map_or(0, |d| d.bytes.len())
    }

    /// The file back, with every byte written to it; not yet durable (see `BackupDir::sync`).
    /// The last bytes short of a block go through the page cache (a direct write must be whole
    /// blocks).
    pub fn into_file(mut self) -> io::Result<File> {
        self.write_gathered()?;
        Ok(self.file)
    }

    /// Writes what is gathered (see [`WritebackFile::into_file`]).
    fn write_gathered(&mut self) -> io::Result<()> {
        self.still_whole()?;
        if let Some(gathered) = self.direct.take() {
            // All of a small file is still here: one buffered write, the fsync writes it.
            if self.written == 0 && gathered.len <= FIRST_GATHER {
                self.leave_direct()?;
                return self.put(gathered.filled());
            }
            let whole = gathered.len / ALIGN * ALIGN;
            let bytes = gathered.filled();
            if self.write_direct(&bytes[..whole])? {
                self.leave_direct()?;
            }
            self.put(&bytes[whole..])?;
        }
        Ok(())
    }

    /// Writes whole aligned blocks directly; should the kernel refuse them (`EINVAL`: the
    /// device's blocks are larger than [`ALIGN`], or a short write left the offset unaligned),
    /// the rest of the file goes through the page cache. Says whether the file is still
    /// written directly.
    fn write_direct(&mut self, mut bytes: &[u8]) -> io::Result<bool> {
        while !bytes.is_empty() {
            #[cfg(test)]
            {
                self.direct_writes += 1;
            }
            match self.file.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    bytes = &bytes[n..];
                    self.written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    self.leave_direct()?;
                    self.put(bytes)?;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn leave_direct(&mut self) -> io::Result<()> {
        set_direct(&self.file, false).map_err(io::Error::from)
    }

    /// Writes through the page cache, starting writeback every [`STEP`] bytes.
    fn put(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.buffered(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A write failed after bytes it was given may have reached the file: never an error a
    /// caller may retry (`Interrupted`), and never a file that takes more after it.
    fn lost(&mut self, e: io::Error) -> io::Error {
        self.broken = true;
        match e.kind() {
            io::ErrorKind::Interrupted => io::Error::other(e),
            _ => e,
        }
    }

    fn still_whole(&self) -> io::Result<()> {
        match self.broken {
            true => Err(io::Error::other(
                "an earlier write to this file failed partway: bytes before this one may be missing",
            )),
            false => Ok(()),
        }
    }

    fn buffered(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started_to >= STEP {
            self.start_writeback();
        }
        Ok(n)
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

/// Turns `O_DIRECT` on or off for `file`'s open file description. Turning it on fails where
/// the filesystem has no direct I/O.
fn set_direct(file: &File, on: bool) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(file, FcntlArg::F_GETFL)?);
    let flags = match on {
        true => flags | OFlag::O_DIRECT,
        false => flags - OFlag::O_DIRECT,
    };
    fcntl(file, FcntlArg::F_SETFL(flags)).map(drop)
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.still_whole()?;
        let Some(gathered) = self.direct.as_mut() else {
            return self.buffered(buf);
        };
        // Nothing gathered, the file's end and the caller's bytes aligned, and at least a
        // pass-through's worth of them: their whole blocks go to the disk as they are, with no
        // copy (the drain's batches are made so; see verify_stream).
        if gathered.len == 0
            && self.written.is_multiple_of(ALIGN as u64)
            && buf.as_ptr().align_offset(ALIGN) == 0
            && buf.len() >= PASS_THROUGH
        {
            let whole = buf.len() / ALIGN * ALIGN;
            return match self.write_direct(&buf[..whole]) {
                Ok(still_direct) => {
                    if !still_direct {
                        self.direct = None;
                    }
                    Ok(whole)
                }
                Err(e) => Err(self.lost(e)),
            };
        }
        let room = gathered.room();
        let n = buf.len().min(room.len());
        room[..n].copy_from_slice(&buf[..n]);
        gathered.len += n;
        if gathered.len == gathered.capacity && gathered.capacity < DIRECT_CHUNK {
            gathered.grow();
        } else if gathered.len == DIRECT_CHUNK
            && let Some(mut full) = self.direct.take()
        {
            let written = self.write_direct(full.filled());
            full.len = 0;
            // Still direct unless the kernel refused it.
            if matches!(written, Ok(true)) {
                self.direct = Some(full);
            }
            // The `n` bytes were taken, and the chunk is lost.
            if let Err(e) = written {
                return Err(self.lost(e));
            }
        }
        Ok(n)
    }

    /// Bytes short of a direct chunk stay gathered here until [`WritebackFile::into_file`]:
    /// nothing reads the file before then.
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::path::{Path, PathBuf};

    /// The bytes of a stored tar in pieces of awkward sizes, as the codecs and batches give
    /// them.
    fn pieces(total: usize) -> (Vec<u8>, Vec<usize>) {
        let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 4093) as u8).collect();
        let mut sizes = Vec::new();
        let mut left = total;
        for i in 0.. {
            if left == 0 {
                break;
            }
            let n = [1, 511, 4096, 100_003, 262_144, 3 << 20][i % 6].min(left);
            sizes.push(n);
            left -= n;
        }
        (data, sizes)
    }

    fn flags_of(file: &File) -> OFlag {
        OFlag::from_bits_truncate(fcntl(file, FcntlArg::F_GETFL).unwrap())
    }

    #[test]
    fn every_byte_arrives_whatever_the_pieces_and_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        for total in [
            0,
            1,
            4095,
            4096,
            DIRECT_CHUNK - 1,
            DIRECT_CHUNK,
            3 * DIRECT_CHUNK + 12_345,
        ] {
            let path = dir.path().join(format!("t{total}"));
            let file = File::create(&path).unwrap();
            let mut out = WritebackFile::new(file);
            let (data, sizes) = pieces(total);
            let mut at = 0;
            for n in sizes {
                out.write_all(&data[at..at + n]).unwrap();
                at += n;
            }
            out.flush().unwrap();
            let file = out.into_file().unwrap();
            assert!(!flags_of(&file).contains(OFlag::O_DIRECT), "{total}");
            file.sync_data().unwrap();
            let mut back = Vec::new();
            File::open(&path).unwrap().read_to_end(&mut back).unwrap();
            assert!(
                back == data,
                "{total} bytes written, {} read back",
                back.len()
            );
        }
    }

    /// Unmounts its directory when dropped.
    struct Unmount(PathBuf);

    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    /// A 2 MiB tmpfs (a disk to fill), mounted on a temporary directory, as root; `None` (said)
    /// where it cannot be mounted. Unmounted before the directory goes.
    fn small_tmpfs() -> Option<(tempfile::TempDir, Unmount)> {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs");
            return None;
        }
        let unmount = Unmount(dir.path().to_path_buf());
        Some((dir, unmount))
    }

    /// A file in `dir` to write directly, or `None` (said) where its filesystem has no direct
    /// I/O.
    fn direct_io_file(dir: &Path) -> Option<PathBuf> {
        let path = dir.join("t");
        let probe = File::create(&path).unwrap();
        if set_direct(&probe, true).is_err() {
            eprintln!("skipped: {} has no direct I/O", dir.display());
            return None;
        }
        Some(path)
    }

    /// Where the filesystem takes direct I/O (the temp dir's ext4 does; tmpfs did not before
    /// Linux 6.6), the tar bypasses the page cache: written before through it, it cost more
    /// CPU than hashing it.
    #[test]
    fn a_filesystem_with_direct_io_gets_the_bytes_directly() {
        let dir = tempfile::tempdir().unwrap();
        let Some(path) = direct_io_file(dir.path()) else {
            return;
        };
        let mut out = WritebackFile::new(File::create(&path).unwrap());
        assert!(out.is_direct());
        let (data, _) = pieces(2 * DIRECT_CHUNK + 100);
        out.write_all(&data).unwrap();
        // Two whole chunks went out directly, and the kernel took them so.
        assert_eq!(out.written, 2 * DIRECT_CHUNK as u64);
        assert!(out.is_direct() && flags_of(&out.file).contains(OFlag::O_DIRECT));
        let file = out.into_file().unwrap();
        assert_eq!(file.metadata().unwrap().len(), data.len() as u64);
    }

    /// Bytes at an aligned address, as the drain's batches are.
    fn aligned_copy(data: &[u8]) -> (Vec<u8>, usize) {
        let mut bytes: Vec<u8> = Vec::with_capacity(data.len() + ALIGN);
        let start = bytes.as_ptr().align_offset(ALIGN);
        bytes.resize(start, 0);
        bytes.extend_from_slice(data);
        (bytes, start)
    }

    /// A megabyte or more at an aligned address, when nothing is gathered and the file's end
    /// is aligned, goes to the disk from the caller's buffer: no copy into the gathering
    /// buffer, which stays small. Anything else is gathered as before, and every byte lands.
    #[test]
    fn aligned_megabytes_go_directly_from_the_callers_buffer_and_the_rest_is_gathered() {
        let dir = tempfile::tempdir().unwrap();
        let Some(path) = direct_io_file(dir.path()) else {
            return;
        };
        let (data, _) = pieces(2 * PASS_THROUGH + 100 + DIRECT_CHUNK + 7);
        let (first, second) = data.split_at(2 * PASS_THROUGH + 100);
        let mut out = WritebackFile::new(File::create(&path).unwrap());
        let (aligned, at) = aligned_copy(first);
        assert_eq!(out.write(&aligned[at..]).unwrap(), 2 * PASS_THROUGH);
        assert_eq!(
            (out.direct_writes, out.written),
            (1, 2 * PASS_THROUGH as u64)
        );
        assert!(
            out.gathering() <= FIRST_GATHER + ALIGN,
            "{}",
            out.gathering()
        );
        out.write_all(&aligned[at + 2 * PASS_THROUGH..]).unwrap();
        // 100 bytes gathered: the next aligned megabytes are gathered behind them.
        let (aligned, at) = aligned_copy(second);
        out.write_all(&aligned[at..]).unwrap();
        assert_eq!(out.written, 2 * PASS_THROUGH as u64 + DIRECT_CHUNK as u64);
        let file = out.into_file().unwrap();
        file.sync_data().unwrap();
        assert!(
            std::fs::read(&path).unwrap() == data,
            "the bytes read back differ"
        );
    }

    /// A small file (an empty artifact's tar) is written through the page cache in one go,
    /// not its whole blocks directly and then its tail; a larger one still goes directly.
    #[test]
    fn a_small_file_is_one_buffered_write_and_a_larger_one_goes_directly() {
        let dir = tempfile::tempdir().unwrap();
        let Some(path) = direct_io_file(dir.path()) else {
            return;
        };
        for (total, direct_writes) in [(10_240, 0), (FIRST_GATHER, 0), (FIRST_GATHER + 1, 1)] {
            let file = File::options()
                .write(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            let mut out = WritebackFile::new(file);
            assert!(out.is_direct());
            let (data, sizes) = pieces(total);
            let mut at = 0;
            for n in sizes {
                out.write_all(&data[at..at + n]).unwrap();
                at += n;
            }
            out.write_gathered().unwrap();
            assert_eq!(out.direct_writes, direct_writes, "{total}");
            let file = out.into_file().unwrap();
            assert!(!flags_of(&file).contains(OFlag::O_DIRECT), "{total}");
            file.sync_data().unwrap();
            let mut back = Vec::new();
            File::open(&path).unwrap().read_to_end(&mut back).unwrap();
            assert!(back == data, "{total}: the bytes read back differ");
        }
    }

    /// A chunk whose direct write fails (here a full disk) is lost with the bytes the last
    /// write took: the file fails every write after it, even once there is room again, so
    /// nothing goes on past the hole.
    #[test]
    fn a_write_that_failed_after_taking_bytes_fails_every_later_one() {
        on_a_filling_disk(|out| {
            let (data, _) = pieces(DIRECT_CHUNK + 10);
            out.write_all(&data).unwrap_err();
        });
    }

    /// The same for an aligned megabyte written from the caller's buffer: the disk fills
    /// partway through it, and nothing is written after the hole.
    #[test]
    fn a_direct_write_from_the_callers_buffer_that_failed_fails_every_later_one() {
        on_a_filling_disk(|out| {
            let (data, _) = pieces(2 * PASS_THROUGH);
            let (aligned, at) = aligned_copy(&data);
            out.write_all(&aligned[at..]).unwrap_err();
            let gathered = out.gathering();
            assert_eq!(gathered, FIRST_GATHER + ALIGN, "the bytes were gathered");
        });
    }

    /// `fail` writes to a direct file on a disk with about 1 MiB left, and sees its write
    /// fail; then, the disk freed, the file must refuse any more and not be kept.
    fn on_a_filling_disk(fail: impl FnOnce(&mut WritebackFile)) {
        let Some((dir, _unmount)) = small_tmpfs() else {
            return;
        };
        let Some(path) = direct_io_file(dir.path()) else {
            return;
        };
        std::fs::write(dir.path().join("filler"), vec![1u8; 1 << 20]).unwrap();
        let mut out = WritebackFile::new(File::create(&path).unwrap());
        fail(&mut out);
        std::fs::remove_file(dir.path().join("filler")).unwrap();
        assert!(
            out.write(b"more").is_err(),
            "a write went on past the bytes the failed one lost"
        );
        assert!(out.into_file().is_err());
    }

    /// A driver drains many small tars at once: each holds what its bytes need, not a chunk.
    #[test]
    fn a_small_tar_holds_a_small_buffer_and_a_big_one_grows_to_a_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let Some(path) = direct_io_file(dir.path()) else {
            return;
        };
        let mut out = WritebackFile::new(File::create(&path).unwrap());
        let (data, _) = pieces(3 * DIRECT_CHUNK / 2);
        out.write_all(&data[..10 << 10]).unwrap();
        assert!(
            out.gathering() <= FIRST_GATHER + ALIGN,
            "{} bytes held for a 10 KiB tar",
            out.gathering()
        );
        out.write_all(&data[10 << 10..]).unwrap();
        assert_eq!(out.gathering(), DIRECT_CHUNK + ALIGN);
        assert_eq!(out.written, DIRECT_CHUNK as u64);
        let file = out.into_file().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        drop(file);
    }
}
