//! Framing: bounded JSON lines for control, length-prefixed raw chunks for bulk data.

use std::io::{self, BufRead, IoSlice, Read, Write};

use crate::chunk_stream::{ChunkSink, ChunkSource, ChunkStream};

/// Longest control line accepted, newline excluded.
pub const MAX_LINE: usize = 4 << 20;
/// Largest data chunk.
pub const MAX_CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the stream ended")]
    Eof,
    #[error("a line is longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("a data chunk of {0} bytes is larger than {MAX_CHUNK}")]
    ChunkTooLarge(usize),
    #[error("the stream ended inside a data chunk")]
    TruncatedChunk,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<FrameError> for io::Error {
    /// For `Read` implementations over frames: a broken frame is invalid data.
    fn from(e: FrameError) -> io::Error {
        match e {
            FrameError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// Reads one line (without its newline), refusing one longer than [`MAX_LINE`] without
/// buffering more than that. A last line without a newline counts as truncated input.
pub fn read_line(input: &mut impl BufRead) -> Result<Vec<u8>, FrameError> {
    let mut line = Vec::new();
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if available.is_empty() {
            return Err(FrameError::Eof);
        }
        let (used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&available[..i]);
                (i + 1, true)
            }
            None => {
                line.extend_from_slice(available);
                (available.len(), false)
            }
        };
        input.consume(used);
        if line.len() > MAX_LINE {
            return Err(FrameError::LineTooLong);
        }
        if done {
            return Ok(line);
        }
    }
}

/// Writes one value as a JSON line and flushes it.
pub(crate) fn write_json_line(
    out: &mut impl Write,
    value: &impl serde::Serialize,
) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

/// Reads the next chunk into `buf`; an empty result is the terminator.
pub(crate) fn read_chunk(input: &mut impl Read, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = read_chunk_len(input)?;
    buf.resize(len, 0);
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::TruncatedChunk,
        _ => FrameError::Io(e),
    })
}

/// Reads one chunk into a new buffer of exactly its length, without zeroing it first: for a
/// chunk that is handed on to another thread, so no buffer can be reused.
pub(crate) fn read_chunk_owned(input: &mut impl Read) -> Result<Vec<u8>, FrameError> {
    let len = read_chunk_len(input)?;
    let mut buf = Vec::with_capacity(len);
    input.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(FrameError::TruncatedChunk);
    }
    Ok(buf)
}

/// Why [`copy_chunks_into`] stopped.
#[derive(Debug)]
pub(crate) enum IntoSinkError {
    /// The stream broke or lied: it is out of step.
    Stream(FrameError),
    /// The sink refused a piece; the stream was kept in step to the end of that chunk.
    Sink(io::Error),
}

/// Reads every data chunk of `input` up to the terminator straight into `sink`'s room (see
/// [`ChunkSink`]): the copy a [`ChunkReader`] makes from its own buffer is not made.
pub(crate) fn copy_chunks_into(
    input: &mut impl Read,
    sink: &mut dyn ChunkSink,
) -> Result<u64, IntoSinkError> {
    let mut copied = 0u64;
    loop {
        let len = read_chunk_len(input).map_err(IntoSinkError::Stream)?;
        if len == 0 {
            return Ok(copied);
        }
        let mut taken = 0;
        let mut broke = None;
        let sunk = sink.take_from(len, &mut |piece| match input.read_exact(piece) {
            Ok(()) => {
                taken += piece.len();
                Ok(())
            }
            Err(e) => {
                let said = io::Error::new(e.kind(), e.to_string());
                broke = Some(e);
                Err(said)
            }
        });
        if let Some(e) = broke {
            return Err(IntoSinkError::Stream(match e.kind() {
                io::ErrorKind::UnexpectedEof => FrameError::TruncatedChunk,
                _ => FrameError::Io(e),
            }));
        }
        if let Err(e) = sunk {
            // The rest of this chunk is read and dropped: the stream stays in step.
            let rest = (len - taken) as u64;
            let skipped = io::copy(&mut input.take(rest), &mut io::sink());
            // A stream that breaks meanwhile is out of step: that is what the caller must
            // know (the session is lost), with the sink's refusal said beside it.
            return match skipped {
                Ok(n) if n == rest => Err(IntoSinkError::Sink(e)),
                Ok(_) => Err(IntoSinkError::Stream(FrameError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the stream ended inside a data chunk, after: {e}"),
                )))),
                Err(broke) => Err(IntoSinkError::Stream(FrameError::Io(io::Error::new(
                    broke.kind(),
                    format!("{broke}, after: {e}"),
                )))),
            };
        }
        copied += len as u64;
    }
}

/// A chunk's 4-byte length, checked against the limit.
fn read_chunk_len(input: &mut impl Read) -> Result<usize, FrameError> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(FrameError::TruncatedChunk);
        }
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_CHUNK {
        return Err(FrameError::ChunkTooLarge(len));
    }
    Ok(len)
}

/// A `Write` that sends everything written as data chunks of up to [`MAX_CHUNK`] bytes;
/// [`ChunkWriter::finish`] sends the terminator.
pub(crate) struct ChunkWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> ChunkWriter<W> {
    pub fn new(out: W) -> Self {
        ChunkWriter {
            out,
            buf: Vec::with_capacity(MAX_CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(&(self.buf.len() as u32).to_be_bytes())?;
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends what is buffered, then the length of a chunk of `len` bytes (1 to [`MAX_CHUNK`]),
    /// in one write. The caller then writes those `len` bytes itself, into the writer returned,
    /// before anything else: data that reaches the stream by another way than this writer (a
    /// file the kernel moves into the pipe, `serve::file_data`).
    pub fn open_chunk(&mut self, len: usize) -> io::Result<&mut W> {
        assert!((1..=MAX_CHUNK).contains(&len), "a chunk of {len} bytes");
        self.send_opening(len, &[])?;
        Ok(&mut self.out)
    }

    /// What is buffered as a chunk, then the length of the next chunk, `len` bytes, and
    /// `data`, its first bytes: all in one vectored write, one system call.
    fn send_opening(&mut self, len: usize, data: &[u8]) -> io::Result<()> {
        let (held, len) = (
            (self.buf.len() as u32).to_be_bytes(),
            (len as u32).to_be_bytes(),
        );
        let held: &[u8] = match self.buf.is_empty() {
            true => &[],
            false => &held,
        };
        let mut pieces = [
            IoSlice::new(held),
            IoSlice::new(&self.buf),
            IoSlice::new(&len),
            IoSlice::new(data),
        ];
        write_all_vectored(&mut self.out, &mut pieces)?;
        self.buf.clear();
        Ok(())
    }

    /// Sends what is buffered and the zero-length terminator.
    pub fn finish(mut self) -> io::Result<W> {
        self.send()?;
        self.out.write_all(&0u32.to_be_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A write at least this large goes out as chunks of its own, not through the buffer.
pub(crate) const PASS_THROUGH: usize = 64 * 1024;

impl<W: Write> Write for ChunkWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // Big writes (a file's data) are not copied into the buffer first: what is buffered
        // (a tar header, say) goes as a chunk, then the data as another, all four pieces in
        // one vectored write: one system call, and one wakeup of the reader, where there were
        // two (the lengths and the header, then the data) for every file and every megabyte.
        if data.len() >= PASS_THROUGH {
            let n = data.len().min(MAX_CHUNK);
            self.send_opening(n, &data[..n])?;
            return Ok(n);
        }
        let n = data.len().min(MAX_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()?;
        self.out.flush()
    }
}

/// `write_vectored` until every piece is written (`Write::write_all_vectored` is unstable).
fn write_all_vectored(out: &mut impl Write, mut pieces: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut pieces, 0);
    while !pieces.is_empty() {
        match out.write_vectored(pieces) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut pieces, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A `Read` over data chunks, ending at the terminator. [`ChunkStream::drain`] skips to it.
pub type ChunkReader<'a, R> = ChunkStream<Frames<'a, R>>;

impl<'a, R: Read> ChunkReader<'a, R> {
    pub fn new(input: &'a mut R) -> Self {
        ChunkStream::from_source(Frames(input))
    }
}

/// The data chunks of a stream, up to the zero-length terminator.
pub struct Frames<'a, R: Read>(&'a mut R);

impl<R: Read> ChunkSource for Frames<'_, R> {
    type Chunk = Vec<u8>;

    fn next_chunk(&mut self, chunk: &mut Vec<u8>) -> io::Result<bool> {
        read_chunk(self.0, chunk)?;
        Ok(!chunk.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes what it is given in pieces of `piece` bytes, and refuses the piece
    /// numbered `refuse` (counting from 0) once it was filled.
    struct Pieces {
        piece: usize,
        refuse: Option<usize>,
        taken: Vec<u8>,
        pieces: usize,
    }

    impl Write for Pieces {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.taken.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl ChunkSink for Pieces {
        fn take_from(
            &mut self,
            len: usize,
            fill: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
        ) -> io::Result<()> {
            let mut left = len;
            while left > 0 {
                let mut room = vec![0u8; left.min(self.piece)];
                fill(&mut room)?;
                left -= room.len();
                self.pieces += 1;
                if self.refuse == Some(self.pieces - 1) {
                    return Err(io::Error::other("refused"));
                }
                self.taken.extend_from_slice(&room);
            }
            Ok(())
        }
    }

    fn pieces(piece: usize, refuse: Option<usize>) -> Pieces {
        Pieces {
            piece,
            refuse,
            taken: Vec::new(),
            pieces: 0,
        }
    }

    /// Chunks read straight into a sink's room arrive whole and in order, however the sink
    /// cuts its room; a sink that refuses a piece leaves the stream at the end of that chunk
    /// (its next chunk and terminator read as they are); a cut or oversized chunk is the
    /// stream's failure, not the sink's.
    #[test]
    fn chunks_read_into_a_sink_arrive_whole_and_a_refusal_keeps_the_stream_in_step() {
        let data: Vec<u8> = (0..(MAX_CHUNK + 70_001)).map(|i| (i % 251) as u8).collect();
        let mut w = ChunkWriter::new(Vec::new());
        w.write_all(&data[..3]).unwrap();
        w.flush().unwrap();
        w.write_all(&data[3..]).unwrap();
        let stream = w.finish().unwrap();
        for piece in [1, 4096, MAX_CHUNK] {
            let mut sink = pieces(piece, None);
            let copied = copy_chunks_into(&mut &stream[..], &mut sink).unwrap();
            assert_eq!(copied, data.len() as u64, "pieces of {piece}");
            assert!(sink.taken == data, "pieces of {piece}: other bytes");
        }

        // After a line read through a buffer, which then holds the data's start too.
        let mut lined = b"{}\n".to_vec();
        lined.extend_from_slice(&stream);
        let mut input = io::BufReader::new(&lined[..]);
        assert_eq!(read_line(&mut input).unwrap(), b"{}");
        assert!(!input.buffer().is_empty());
        let mut sink = pieces(4096, None);
        copy_chunks_into(&mut input, &mut sink).unwrap();
        assert!(sink.taken == data, "after a line: other bytes");

        // Refused in the middle of the first big chunk: the rest of it is passed over, and
        // what follows is the next chunk, then the terminator.
        let mut input = &stream[..];
        let mut sink = pieces(4096, Some(3));
        match copy_chunks_into(&mut input, &mut sink) {
            Err(IntoSinkError::Sink(e)) => assert_eq!(e.to_string(), "refused"),
            other => panic!("{other:?}"),
        }
        let mut rest = Vec::new();
        ChunkReader::new(&mut input).read_to_end(&mut rest).unwrap();
        assert!(input.is_empty(), "the terminator was read");
        assert!(
            rest == data[3 + MAX_CHUNK..],
            "{} bytes after the refusal",
            rest.len()
        );
        // Refused on a chunk's last piece (the 3-byte one, whole): nothing is left of it.
        let mut input = &stream[..];
        let mut sink = pieces(4096, Some(0));
        assert!(matches!(
            copy_chunks_into(&mut input, &mut sink),
            Err(IntoSinkError::Sink(_))
        ));
        let mut rest = Vec::new();
        ChunkReader::new(&mut input).read_to_end(&mut rest).unwrap();
        assert!(rest == data[3..], "{} bytes after the refusal", rest.len());
        // Refused, and the stream ends inside the chunk: the stream failed, the refusal said.
        let short = &stream[..3 + 8 + 4 + 20_000];
        match copy_chunks_into(&mut &short[..], &mut pieces(4096, Some(2))) {
            Err(IntoSinkError::Stream(e)) => assert!(e.to_string().contains("refused"), "{e}"),
            other => panic!("{other:?}"),
        }

        // Cut inside a chunk, or a chunk over the limit: the stream failed.
        let cut = &stream[..stream.len() - 100];
        match copy_chunks_into(&mut &cut[..], &mut pieces(4096, None)) {
            Err(IntoSinkError::Stream(FrameError::TruncatedChunk)) => {}
            other => panic!("{other:?}"),
        }
        let huge = ((MAX_CHUNK + 1) as u32).to_be_bytes();
        match copy_chunks_into(&mut &huge[..], &mut pieces(4096, None)) {
            Err(IntoSinkError::Stream(FrameError::ChunkTooLarge(_))) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chunks_round_trip_and_end_at_the_terminator() {
        let data: Vec<u8> = (0..(MAX_CHUNK * 3 + 17)).map(|i| (i % 251) as u8).collect();
        let mut w = ChunkWriter::new(Vec::new());
        // Writes as a tar writer makes them: small headers between big runs of data, which
        // pass through unbuffered.
        let mut rest = &data[..];
        for size in [512, MAX_CHUNK * 2, 100, 512, PASS_THROUGH, 3, MAX_CHUNK] {
            let n = size.min(rest.len());
            w.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        w.write_all(rest).unwrap();
        let mut wire = w.finish().unwrap();
        let mut frames = io::Cursor::new(&wire[..]);
        let mut chunk = Vec::new();
        loop {
            read_chunk(&mut frames, &mut chunk).unwrap();
            assert!(chunk.len() <= MAX_CHUNK);
            if chunk.is_empty() {
                break;
            }
        }
        wire.extend_from_slice(b"{\"next\":1}\n");
        let mut input = io::Cursor::new(wire);
        let mut back = Vec::new();
        ChunkReader::new(&mut input).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        let mut input = io::Cursor::new(input.into_inner());
        let mut whole = Vec::new();
        let copied = ChunkReader::new(&mut input)
            .read_to_end(&mut whole)
            .unwrap();
        assert_eq!((copied, whole), (data.len(), data));
        assert_eq!(read_line(&mut input).unwrap(), b"{\"next\":1}");
    }

    /// Counts the calls that would each be a system call on a pipe, and what they carried.
    #[derive(Default)]
    struct Calls {
        calls: usize,
        bytes: Vec<u8>,
        /// Bytes taken by a vectored call, at most, when set.
        cap: Option<usize>,
    }

    impl Write for Calls {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            let cap = self.cap.unwrap_or(usize::MAX);
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(cap - n);
                self.bytes.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A tar's pattern, a header then a file's data, 2,048 times: one write each (a `BufWriter`
    /// over a pipe passes it on as one `writev`), where the two lengths, the header and the
    /// data were four.
    #[test]
    fn a_header_and_the_data_after_it_go_in_one_write() {
        let data = vec![5u8; PASS_THROUGH];
        let mut w = ChunkWriter::new(Calls::default());
        for _ in 0..2_048 {
            w.write_all(&[1u8; 512]).unwrap();
            w.write_all(&data).unwrap();
        }
        let calls = w.finish().unwrap();
        // And one for the terminator.
        assert_eq!(calls.calls, 2_048 + 1);
        let mut back = Vec::new();
        ChunkReader::new(&mut &calls.bytes[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back.len(), 2_048 * (512 + PASS_THROUGH));
        assert!(
            back.chunks(512 + PASS_THROUGH)
                .all(|c| c[..512] == [1u8; 512] && c[512..] == data[..])
        );
        // Cut short anywhere, the pieces still arrive whole and in order.
        let mut short = ChunkWriter::new(Calls {
            cap: Some(1_000),
            ..Calls::default()
        });
        short.write_all(&[2u8; 300]).unwrap();
        short.write_all(&data).unwrap();
        let calls = short.finish().unwrap();
        assert!(calls.calls > 60, "the test writer cuts at 1,000 bytes");
        let mut back = Vec::new();
        ChunkReader::new(&mut &calls.bytes[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!((&back[..300], &back[300..]), (&[2u8; 300][..], &data[..]));
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut too_big = io::Cursor::new(((MAX_CHUNK + 1) as u32).to_be_bytes().to_vec());
        assert!(matches!(
            read_chunk(&mut too_big, &mut Vec::new()),
            Err(FrameError::ChunkTooLarge(_))
        ));
        let mut short = io::Cursor::new(vec![0, 0, 0, 9, 1, 2]);
        assert!(matches!(
            read_chunk(&mut short, &mut Vec::new()),
            Err(FrameError::TruncatedChunk)
        ));
        let mut long = io::BufReader::new(io::repeat(b'x').take(MAX_LINE as u64 + 10));
        assert!(matches!(read_line(&mut long), Err(FrameError::LineTooLong)));
        let mut unterminated = io::Cursor::new(b"{\"id\":1".to_vec());
        assert!(matches!(read_line(&mut unterminated), Err(FrameError::Eof)));
    }
}
