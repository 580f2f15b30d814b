//! Reading a stream that arrives in chunks as one `Read`: the protocol's data frames
//! (`protocol::framing::ChunkReader`), the data chunks `serve`'s reader thread passes on, and
//! the batches `artifact::verify_stream`'s checker thread is handed. Each says only how to get
//! its next chunk ([`ChunkSource`]); [`ChunkStream`] does the reading, or hands a stretch of
//! the stream over where it lies in the chunks ([`ChunkStream::skip_with`]: the drain's check
//! hashes file data so). A [`ChunkSink`] is the other end: a writer whose room the chunks are
//! read into.

use std::io::{self, Read, Write};

/// Where the chunks come from.
pub trait ChunkSource {
    type Chunk: AsRef<[u8]> + Default;

    /// Puts the next chunk in `chunk` (whose old contents are all read) and says whether there
    /// was one: `false` is the end of the stream. An error leaves the stream where it was.
    fn next_chunk(&mut self, chunk: &mut Self::Chunk) -> io::Result<bool>;
}

/// A `Read` over the chunks of a [`ChunkSource`], ending where the source says it ends.
pub struct ChunkStream<S: ChunkSource> {
    source: S,
    chunk: io::Cursor<S::Chunk>,
    done: bool,
}

impl<S: ChunkSource> ChunkStream<S> {
    pub fn from_source(source: S) -> Self {
        ChunkStream {
            source,
            chunk: io::Cursor::new(S::Chunk::default()),
            done: false,
        }
    }

    /// The source, to learn how the stream ended.
    pub fn into_source(self) -> S {
        self.source
    }

    /// Moves to the next chunk; `false` at the end of the stream.
    fn advance(&mut self) -> io::Result<bool> {
        if self.done {
            return Ok(false);
        }
        if self.source.next_chunk(self.chunk.get_mut())? {
            self.chunk.set_position(0);
            Ok(true)
        } else {
            self.done = true;
            Ok(false)
        }
    }

    /// Reads and drops whatever is left up to the end, keeping the stream in step.
    pub fn drain(&mut self) -> io::Result<()> {
        while self.advance()? {}
        Ok(())
    }

    /// Passes the next `n` bytes of the stream to `each`, in place in its chunks (one call a
    /// piece, nothing copied), and says how many there were: fewer than `n` only where the
    /// stream ended. An error of the source is returned as it is, after the pieces before it
    /// were handed over.
    pub fn skip_with(&mut self, n: u64, each: &mut dyn FnMut(&[u8])) -> io::Result<u64> {
        let mut left = n;
        while left > 0 {
            if exhausted(&self.chunk) {
                if !self.advance()? {
                    break;
                }
                continue;
            }
            let at = self.chunk.position() as usize;
            let rest = &self.chunk.get_ref().as_ref()[at..];
            let len = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            each(&rest[..len]);
            self.chunk.set_position((at + len) as u64);
            left -= len as u64;
        }
        Ok(n - left)
    }
}

impl<S: ChunkSource> Read for ChunkStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while exhausted(&self.chunk) {
            if !self.advance()? {
                break;
            }
        }
        self.chunk.read(buf)
    }
}

/// Where a stream's chunks are read straight into: the sink gives the room, the reader fills
/// it, and nothing is copied between them (the drain's batches, read from the VM's pipe).
pub trait ChunkSink: Write {
    /// Takes the next `len` bytes of the stream from `fill`, which is handed the sink's room
    /// for them in order, in one or more pieces, and fills each whole or fails. A failure of
    /// `fill` is returned as it is, and nothing of that piece is taken; a failure of the sink
    /// comes only after a piece was filled whole and taken.
    fn take_from(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
    ) -> io::Result<()>;
}

impl<T: ChunkSink + ?Sized> ChunkSink for &mut T {
    fn take_from(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        (**self).take_from(len, fill)
    }
}

/// Any writer as a sink: a chunk is read into a buffer of this sink's, then written (the one
/// copy a [`ChunkStream`] makes too), so every stream is read the one way.
pub struct WriteSink<'a> {
    out: &'a mut dyn Write,
    room: Vec<u8>,
}

impl<'a> WriteSink<'a> {
    pub fn new(out: &'a mut dyn Write) -> Self {
        WriteSink {
            out,
            room: Vec::new(),
        }
    }
}

impl Write for WriteSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl ChunkSink for WriteSink<'_> {
    fn take_from(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        // Grown to the largest chunk seen (the framing bounds it), then reused.
        if self.room.len() < len {
            self.room.resize(len, 0);
        }
        fill(&mut self.room[..len])?;
        self.out.write_all(&self.room[..len])
    }
}

/// Whether everything in the chunk was read.
fn exhausted<T: AsRef<[u8]>>(chunk: &io::Cursor<T>) -> bool {
    chunk.position() >= chunk.get_ref().as_ref().len() as u64
}

/// A stream of listed chunks, for the tests of what reads one.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Chunks from a list, some of them empty.
    pub(crate) struct Listed(std::vec::IntoIter<Vec<u8>>);

    impl ChunkSource for Listed {
        type Chunk = Vec<u8>;
        fn next_chunk(&mut self, chunk: &mut Vec<u8>) -> io::Result<bool> {
            Ok(self.0.next().map(|next| *chunk = next).is_some())
        }
    }

    pub(crate) fn listed(chunks: &[&[u8]]) -> ChunkStream<Listed> {
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        ChunkStream::from_source(Listed(chunks.into_iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::listed;
    use super::*;

    #[test]
    fn reads_across_chunks_and_past_empty_ones() {
        let mut all = Vec::new();
        listed(&[b"ab", b"", b"c", b"def"])
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all, b"abcdef");
        let mut stream = listed(&[b"ab", b"", b"cde"]);
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).unwrap();
        let mut rest = Vec::new();
        assert_eq!(stream.read_to_end(&mut rest).unwrap(), 4);
        assert_eq!((&first, &rest[..]), (b"a", &b"bcde"[..]));
        assert_eq!(stream.read(&mut first).unwrap(), 0);
    }

    #[test]
    fn a_skip_hands_over_each_piece_in_place_and_stops_where_the_stream_ends() {
        let mut stream = listed(&[b"abc", b"", b"defg", b"hi"]);
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).unwrap();
        let mut pieces = Vec::new();
        let skipped = stream
            .skip_with(5, &mut |piece| pieces.push(piece.to_vec()))
            .unwrap();
        // From where the read left off, in the chunks' own pieces, the last one cut at `n`.
        assert_eq!(skipped, 5);
        assert_eq!(pieces, [b"bc".to_vec(), b"def".to_vec()]);
        let mut next = [0u8; 1];
        stream.read_exact(&mut next).unwrap();
        assert_eq!(&next, b"g");
        // Past the end: what there was, and the count says it was short.
        pieces.clear();
        let skipped = stream
            .skip_with(10, &mut |piece| pieces.push(piece.to_vec()))
            .unwrap();
        assert_eq!((skipped, pieces), (2, vec![b"hi".to_vec()]));
        assert_eq!(stream.skip_with(1, &mut |_| panic!("no bytes")).unwrap(), 0);
        // Nothing asked, nothing handed over, and the stream stays where it was.
        let mut stream = listed(&[b"ab"]);
        assert_eq!(stream.skip_with(0, &mut |_| panic!("no bytes")).unwrap(), 0);
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"ab");
    }
}
