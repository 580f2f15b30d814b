//! Script output on its way to the driver: queued and written by a thread of its own, so a
//! driver that stops reading (an SSH connection that stalls without dropping) cannot block the
//! thread that watches a script, and with it the script's timeout and interruption.
//!
//! Everything else the session writes (answers, data) waits until the queue is written
//! ([`OutputQueue::flush`]), so output still comes before the answer it belongs to. When the
//! queue is full the newest lines are dropped, counted, and said to be missing; the VM log
//! has every line.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::protocol::AgentMessage;
use crate::protocol::framing::write_json_line;

/// Lines waiting to be written, at most.
const QUEUED_LINES: usize = 4096;

enum Item {
    Line(AgentMessage),
    /// Answered once everything queued before it is written.
    Flushed(mpsc::Sender<()>),
}

pub type Output = Arc<Mutex<Box<dyn Write + Send>>>;

pub struct OutputQueue {
    to_writer: SyncSender<Item>,
    dropped: Arc<AtomicU64>,
}

impl OutputQueue {
    pub fn start(out: Output) -> OutputQueue {
        let (to_writer, items) = mpsc::sync_channel::<Item>(QUEUED_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let missing = Arc::clone(&dropped);
        thread::spawn(move || {
            for item in items {
                match item {
                    Item::Line(message) => {
                        let mut out = out.lock().expect("output lock");
                        // A driver that cannot be written to is gone; its input ends too.
                        let _ = write_json_line(&mut *out, &message);
                        let lost = missing.swap(0, Ordering::SeqCst);
                        if let Some(note) =
                            (lost > 0).then(|| missing_lines(&message, lost)).flatten()
                        {
                            let _ = write_json_line(&mut *out, &note);
                        }
                    }
                    Item::Flushed(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        OutputQueue { to_writer, dropped }
    }

    /// Queues a line; never waits. A full queue (a driver not reading) drops it.
    pub fn line(&self, message: AgentMessage) {
        match self.to_writer.try_send(Item::Line(message)) {
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::SeqCst);
            }
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits until every line queued so far is written.
    pub fn flush(&self) {
        let (done, written) = mpsc::channel();
        if self.to_writer.send(Item::Flushed(done)).is_ok() {
            let _ = written.recv();
        }
    }
}

/// The note that follows the first line written after lines were dropped.
fn missing_lines(after: &AgentMessage, lost: u64) -> Option<AgentMessage> {
    match after {
        AgentMessage::Output {
            id,
            job,
            script,
            stream,
            ..
        } => Some(AgentMessage::Output {
            id: *id,
            job: job.clone(),
            script: *script,
            stream: *stream,
            line: format!(
                "[bbr-agent: {lost} lines of script output were not sent while the driver was not reading; the VM log has them]"
            ),
        }),
        _ => None,
    }
}
