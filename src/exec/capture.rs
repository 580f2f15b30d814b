//! A child's stdout or stderr: line by line to a live sink, and into a bounded buffer kept
//! for failure reports and for `metadata` output.

use std::sync::Arc;

/// Which of the script's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Receives every line of script output as it arrives (without its newline).
pub type LineSink = Arc<dyn Fn(Stream, &str) + Send + Sync>;

/// A line longer than this is passed on in pieces.
const MAX_LINE: usize = 64 * 1024;

/// What was kept of one stream: at most `limit` bytes, and whether more was dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    fn keep(&mut self, data: &[u8], limit: usize) {
        let room = limit.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
        self.truncated |= data.len() > room;
    }
}

/// One stream of a running script: complete lines go to the sink as they arrive, and up to
/// `limit` bytes are kept.
pub struct StreamCapture {
    stream: Stream,
    limit: usize,
    kept: Captured,
    /// The line so far, without its newline.
    line: Vec<u8>,
}

impl StreamCapture {
    pub fn new(stream: Stream, limit: usize) -> StreamCapture {
        StreamCapture {
            stream,
            limit,
            kept: Captured::default(),
            line: Vec::new(),
        }
    }

    /// Takes the next bytes read from the stream.
    pub fn feed(&mut self, data: &[u8], sink: &LineSink) {
        self.kept.keep(data, self.limit);
        for piece in data.split_inclusive(|&b| b == b'\n') {
            if let Some(body) = piece.strip_suffix(b"\n") {
                self.line.extend_from_slice(body);
                self.emit(sink);
            } else {
                self.line.extend_from_slice(piece);
                if self.line.len() >= MAX_LINE {
                    self.emit(sink);
                }
            }
        }
    }

    /// The stream ended (or is given up on): passes on a last line without a newline.
    pub fn finish(mut self, sink: &LineSink) -> Captured {
        if !self.line.is_empty() {
            self.emit(sink);
        }
        self.kept
    }

    fn emit(&mut self, sink: &LineSink) {
        let text = String::from_utf8_lossy(&self.line);
        sink(self.stream, text.trim_end_matches('\r'));
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn lines_reach_the_sink_and_the_buffer_is_bounded() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        let sink: LineSink = Arc::new(move |s, l| seen2.lock().unwrap().push((s, l.to_string())));
        let mut capture = StreamCapture::new(Stream::Stderr, 5);
        // Split where a pipe might split it: mid-line and mid-"\r\n".
        for piece in [&b"one\ntw"[..], b"o\r", b"\nno newline"] {
            capture.feed(piece, &sink);
        }
        let kept = capture.finish(&sink);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (Stream::Stderr, "one".to_string()),
                (Stream::Stderr, "two".to_string()),
                (Stream::Stderr, "no newline".to_string())
            ]
        );
        assert_eq!(kept.bytes, b"one\nt");
        assert!(kept.truncated);
    }
}
