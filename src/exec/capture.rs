//! Draining a child's stdout or stderr: line by line to a live sink, and into a bounded
//! buffer kept for failure reports and for `metadata` output.

use std::io::Read;
use std::sync::{Arc, Mutex};

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

/// Reads `pipe` to its end, handing lines to `sink` and keeping up to `limit` bytes in `kept`.
pub fn drain(
    mut pipe: impl Read,
    stream: Stream,
    sink: &LineSink,
    kept: &Mutex<Captured>,
    limit: usize,
) {
    let mut buf = vec![0u8; MAX_LINE];
    let mut line: Vec<u8> = Vec::new();
    let emit = |line: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line);
        sink(stream, text.trim_end_matches('\r'));
        line.clear();
    };
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let data = &buf[..n];
        kept.lock().expect("capture lock").keep(data, limit);
        for piece in data.split_inclusive(|&b| b == b'\n') {
            if let Some(body) = piece.strip_suffix(b"\n") {
                line.extend_from_slice(body);
                emit(&mut line);
            } else {
                line.extend_from_slice(piece);
                if line.len() >= MAX_LINE {
                    emit(&mut line);
                }
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_sink_and_the_buffer_is_bounded() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        let sink: LineSink = Arc::new(move |s, l| seen2.lock().unwrap().push((s, l.to_string())));
        let kept = Mutex::new(Captured::default());
        drain(
            &b"one\ntwo\r\nno newline"[..],
            Stream::Stderr,
            &sink,
            &kept,
            5,
        );
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (Stream::Stderr, "one".to_string()),
                (Stream::Stderr, "two".to_string()),
                (Stream::Stderr, "no newline".to_string())
            ]
        );
        let kept = kept.into_inner().unwrap();
        assert_eq!(kept.bytes, b"one\nt");
        assert!(kept.truncated);
    }
}
