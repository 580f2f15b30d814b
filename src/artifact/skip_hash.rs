//! The hashing of a check that skips file data in a stream (`tar_reader::check_tar_chunks`, the
//! drain's check): the tar crate parses every header and seeks past each file's data, and the
//! seek, here, walks the stream's chunks and hashes that data where it lies, so no byte is
//! copied out of the chunks first. The reader announces each file just before it is skipped
//! ([`Announced`]); [`HashingSkips`] is the archive's input.
//!
//! What a skip may be is narrow: forward only, starting exactly where the announced file's
//! data starts and covering all of it. Anything else is an error, never a digest of other
//! bytes. The tar crate (0.4.46) skips once past each entry's unread data and padding, just
//! before it reads the next header (`EntriesFields::next_entry_raw`), with `SeekFrom::Current`,
//! and takes its position from what the seek returns; a crate that did otherwise would meet
//! these errors.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

use super::checksums::shown_key;
use super::digest::{DigestKind, FileDigests, Manifests};
use super::tar_reader::{TarReadError, past_the_end, refused};
use crate::chunk_stream::{ChunkSource, ChunkStream};

/// The file whose data comes next in the stream, as (key, offset, length), and the digests of
/// those skipped so far: shared by the reader, which announces, and the skip, which hashes.
pub(super) type Announced = Rc<RefCell<Skipped>>;

pub(super) struct Skipped {
    file: Option<(String, u64, u64)>,
    sums: Manifests,
    kind: DigestKind,
    blake3: bool,
}

/// Nothing announced yet; the digests to take are of `kind`, and BLAKE3 too with `blake3`.
pub(super) fn announced(kind: DigestKind, blake3: bool) -> Announced {
    Rc::new(RefCell::new(Skipped {
        file: None,
        sums: Manifests::new(blake3),
        kind,
        blake3,
    }))
}

impl Skipped {
    /// The file `key`, whose `len` bytes of data start at `at`, is skipped next.
    pub(super) fn announce(&mut self, key: String, at: u64, len: u64) -> Result<(), TarReadError> {
        // Each file's data is skipped before the next header is read.
        if let Some((before, ..)) = &self.file {
            return Err(refused(
                &shown_key(before),
                "its data was never reached in the stream",
            ));
        }
        self.file = Some((key, at, len));
        Ok(())
    }

    /// Once the archive ended: every announced file was hashed.
    pub(super) fn all_reached(&self) -> Result<(), TarReadError> {
        match self.file {
            Some(_) => Err(TarReadError::Read(past_the_end())),
            None => Ok(()),
        }
    }

    /// The digests of the files skipped.
    pub(super) fn take_sums(&mut self) -> Manifests {
        std::mem::take(&mut self.sums)
    }
}

/// A stream of chunks as the archive's input: read for the headers, and skipped past the data,
/// which the skip hashes where it lies. A skip past the stream's end is the error a read meets
/// there.
pub(super) struct HashingSkips<'a, S: ChunkSource> {
    input: &'a mut ChunkStream<S>,
    /// Bytes of the stream read or skipped: the position the archive is told.
    at: u64,
    announced: Announced,
}

impl<'a, S: ChunkSource> HashingSkips<'a, S> {
    pub(super) fn new(input: &'a mut ChunkStream<S>, announced: Announced) -> Self {
        HashingSkips {
            input,
            at: 0,
            announced,
        }
    }

    /// Skips `n` bytes, each piece given to `each`; short only at the stream's end, an error.
    fn skip(&mut self, n: u64, each: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let skipped = self.input.skip_with(n, each)?;
        self.at += skipped;
        match skipped == n {
            true => Ok(()),
            false => Err(past_the_end()),
        }
    }
}

impl<S: ChunkSource> Read for HashingSkips<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl<S: ChunkSource> io::Seek for HashingSkips<'_, S> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let by = match pos {
            io::SeekFrom::Current(by) => u64::try_from(by).ok(),
            _ => None,
        }
        .ok_or_else(|| io::Error::other("a stream is only skipped forward"))?;
        let announced = Rc::clone(&self.announced);
        let mut announced = announced.borrow_mut();
        let mut left = by;
        if let Some((key, at, len)) = announced.file.take() {
            // The data starts here, and the skip covers it (then its padding).
            if at != self.at || len > by {
                return Err(io::Error::other(format!(
                    "the skip past {} is not its data",
                    shown_key(&key)
                )));
            }
            let mut digests = FileDigests::new(announced.kind, announced.blake3);
            // Each piece whole: in pieces of 16 or 64 KiB, for the second digest to read them
            // from this core's cache, it was no faster (docs/benchmarks.md, "Drain, stop 19").
            self.skip(len, &mut |piece| digests.update(piece))?;
            announced.sums.insert(key, digests);
            left -= len;
        }
        self.skip(left, &mut |_| {})?;
        Ok(self.at)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom};

    use super::*;
    use crate::chunk_stream::testing::{Listed, listed};

    fn sha256(bytes: &[u8]) -> String {
        use sha2::Digest;
        crate::artifact::checksums::hex(&sha2::Sha256::digest(bytes))
    }

    fn skips<'a>(stream: &'a mut ChunkStream<Listed>) -> (HashingSkips<'a, Listed>, Announced) {
        let announced = announced(DigestKind::Sha256, false);
        (HashingSkips::new(stream, Rc::clone(&announced)), announced)
    }

    /// The skip hashes the announced file's bytes, across chunks, and not its padding; the
    /// position it returns counts every byte read or skipped.
    #[test]
    fn a_skip_hashes_the_announced_data_only_and_says_where_it_is() {
        let mut stream = listed(&[b"hdrab", b"cd", b"e\0\0\0next"]);
        let (mut input, announced) = skips(&mut stream);
        let mut header = [0u8; 3];
        input.read_exact(&mut header).unwrap();
        announced.borrow_mut().announce("./f".into(), 3, 5).unwrap();
        assert_eq!(input.seek(SeekFrom::Current(8)).unwrap(), 11);
        let mut next = Vec::new();
        input.read_to_end(&mut next).unwrap();
        assert_eq!(next, b"next");
        let sums = announced.borrow_mut().take_sums();
        assert_eq!(sums.main.get("./f"), Some(&sha256(b"abcde")));
        assert!(announced.borrow().all_reached().is_ok());
    }

    /// Every skip that is not the announced data, whole, from its start, is an error, and so
    /// is one past the end; no digest is taken of other bytes.
    #[test]
    fn a_skip_that_is_not_the_announced_data_is_an_error() {
        let bytes: &[&[u8]] = &[b"0123456789"];
        // Announced at 2, skipped from 0.
        let mut stream = listed(bytes);
        let (mut input, announced) = skips(&mut stream);
        announced.borrow_mut().announce("./f".into(), 2, 3).unwrap();
        let wrong = input.seek(SeekFrom::Current(5)).unwrap_err();
        assert!(wrong.to_string().contains("./f"), "{wrong}");
        assert!(announced.borrow_mut().take_sums().main.is_empty());

        // A skip shorter than the data.
        let mut stream = listed(bytes);
        let (mut input, announced) = skips(&mut stream);
        announced.borrow_mut().announce("./f".into(), 0, 6).unwrap();
        assert!(input.seek(SeekFrom::Current(5)).is_err());

        // Backwards, or anywhere but from here.
        let mut stream = listed(bytes);
        let (mut input, _) = skips(&mut stream);
        for pos in [SeekFrom::Current(-1), SeekFrom::Start(3), SeekFrom::End(0)] {
            assert!(input.seek(pos).is_err(), "{pos:?}");
        }

        // Data cut short by the stream's end: the read's error, and no digest.
        let mut stream = listed(bytes);
        let (mut input, announced) = skips(&mut stream);
        announced
            .borrow_mut()
            .announce("./f".into(), 0, 12)
            .unwrap();
        let cut = input.seek(SeekFrom::Current(12)).unwrap_err();
        assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof);
        assert!(announced.borrow_mut().take_sums().main.is_empty());
        // Padding cut short too.
        let mut stream = listed(bytes);
        let (mut input, announced) = skips(&mut stream);
        announced.borrow_mut().announce("./f".into(), 0, 4).unwrap();
        let cut = input.seek(SeekFrom::Current(11)).unwrap_err();
        assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A file announced while another's data was never skipped, and one still waiting when
    /// the archive ended, are errors: no file leaves the check without its digest.
    #[test]
    fn a_file_never_skipped_is_an_error_not_a_missing_digest() {
        let announced = announced(DigestKind::Sha256, true);
        announced
            .borrow_mut()
            .announce("./a".into(), 512, 1)
            .unwrap();
        assert!(announced.borrow().all_reached().is_err());
        let again = announced.borrow_mut().announce("./b".into(), 1536, 1);
        assert!(
            matches!(&again, Err(TarReadError::Refused { entry, .. }) if entry == "./a"),
            "{again:?}"
        );
    }
}
