//! The reader thread of `serve`: turns the input byte stream into requests and data chunks,
//! so the session loop learns at once when the driver has gone.

use crate::thread_start::{NoThread, start};
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};

use crate::interrupt::Level;
use crate::protocol::Op;
use crate::protocol::Request;
use crate::protocol::framing::{FrameError, read_chunk_owned, read_line};

/// What the driver sent, in order.
#[derive(Debug)]
pub enum Input {
    Request(Request),
    /// A line that is not a request; the session answers `bad_request` (with the line's `id`
    /// where it has one) and reads on.
    Malformed {
        id: Option<u64>,
        why: String,
    },
    /// One chunk of a `receive_artifact`'s data.
    Data(Vec<u8>),
    /// The zero-length chunk after a `receive_artifact`'s data.
    DataEnd,
    /// The stream broke (a line or chunk over its limit, a truncated chunk); nothing after it
    /// can be trusted, and nothing follows it.
    Broken(FrameError),
    /// The agent was interrupted (a signal, or the driver went away): sent once, by a thread
    /// that waits on the interruption, so a session waiting for the driver wakes at once.
    /// Not part of the driver's stream: whoever reads data chunks skips it.
    Interrupted,
}

/// Starts the reader; the channel closes when the input ends (after the interruption that
/// follows it, `Input::Interrupted`, is passed on). The end of the input is no interruption
/// once the session has answered the driver's `bye` (`answered_bye`, set by the session):
/// the driver then closes it, as it should. Refused a thread by the OS, the session cannot
/// start: nothing has been read, so nothing is locked.
pub(crate) fn spawn_reader(
    input: impl Read + Send + 'static,
    answered_bye: Arc<AtomicBool>,
) -> Result<Receiver<Input>, NoThread> {
    // Bounded: a fast driver cannot make the agent buffer a whole artifact.
    let (tx, rx) = sync_channel(4);
    let wake = tx.clone();
    start(
        || "wait for an interruption".into(),
        move || {
            while !crate::interrupt::wait(Level::Interrupted, None) {}
            let _ = wake.send(Input::Interrupted);
        },
    )?;
    start(
        || "read the driver's requests".into(),
        move || {
            // Small: a chunk's data mostly bypasses the buffer (see the driver's reader).
            decode(BufReader::with_capacity(64 * 1024, input), |item| {
                tx.send(item).is_ok()
            });
            // The driver has gone (or broke the stream): end running lock and backup scripts
            // now, not when they finish on their own. Not once its `bye` was answered: the
            // VM's log would say "went away" after every run. A `bye` only read, sent behind
            // a request still running, is not enough: that request's scripts still end now.
            if !answered_bye.load(Ordering::SeqCst) {
                crate::interrupt::trigger(None);
            }
        },
    )?;
    Ok(rx)
}

/// Decodes the driver's stream into `send`, in order, until it ends, breaks, or `send`
/// returns false. Memory stays bounded by the line and chunk limits whatever the input.
pub fn decode(mut input: impl BufRead, mut send: impl FnMut(Input) -> bool) {
    loop {
        let line = match read_line(&mut input) {
            Ok(line) => line,
            Err(FrameError::Eof) => return,
            Err(e) => {
                let _ = send(Input::Broken(e));
                return;
            }
        };
        let request = match serde_json::from_slice::<Request>(&line) {
            Ok(r) => r,
            Err(e) => {
                let id = serde_json::from_slice::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64));
                let why = e.to_string();
                if !send(Input::Malformed { id, why }) {
                    return;
                }
                continue;
            }
        };
        let has_data = matches!(request.op, Op::ReceiveArtifact { .. });
        if !send(Input::Request(request)) {
            return;
        }
        if has_data {
            loop {
                let chunk = match read_chunk_owned(&mut input) {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        let _ = send(Input::Broken(e));
                        return;
                    }
                };
                let item = if chunk.is_empty() {
                    Input::DataEnd
                } else {
                    // Handed to the session thread: a new buffer each time, not zeroed first.
                    Input::Data(chunk)
                };
                let end = matches!(item, Input::DataEnd);
                if !send(item) {
                    return;
                }
                if end {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refused either thread, the reader is an error naming it, never a panic.
    #[test]
    fn a_reader_refused_its_threads_is_an_error_naming_them() {
        for (allowed, what) in [
            (0, "wait for an interruption"),
            (1, "read the driver's requests"),
        ] {
            let refused = crate::thread_start::with_threads_allowed(allowed, || {
                spawn_reader(std::io::empty(), Arc::default()).map(drop)
            });
            let e = refused.expect_err("refused").to_string();
            assert!(e.contains(what), "{allowed} allowed: {e}");
        }
    }
}
