//! Script output on its way to the driver: queued and written by a thread of its own (started
//! with the first line), so a driver that stops reading (an SSH connection that stalls without dropping) cannot block the
//! thread that watches a script, and with it the script's timeout and interruption.
//!
//! Everything else the session writes (answers, data) waits until the queue is written
//! ([`OutputQueue::flush`]), so output still comes before the answer it belongs to. The queue
//! is bounded in bytes, whatever the lines are like: a line longer than [`MAX_SENT_LINE`] is
//! cut there, with a marker; when [`QUEUED_BYTES`] are waiting, the newest lines are dropped,
//! counted, and said to be missing. The VM log has every line in full. So are lines while the
//! OS refuses the writer its thread (`pids.max`): the next line tries again.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use crate::protocol::AgentMessage;
use crate::protocol::framing::write_json_line;

/// Bytes of output waiting to be written, at most (the lines' text, plus [`PER_LINE`] each).
const QUEUED_BYTES: usize = 8 << 20;
/// What a queued line costs besides its text: the message around it.
const PER_LINE: usize = 128;
/// Bytes of one line sent to the driver, at most; the rest is cut off (the VM log has it).
pub const MAX_SENT_LINE: usize = 64 << 10;

enum Item {
    /// A line and what it counts against the queue's bytes.
    Line(AgentMessage, usize),
    /// Answered once everything queued before it is written.
    Flushed(mpsc::Sender<()>),
}

pub type Output = Arc<Mutex<Box<dyn Write + Send>>>;

pub struct OutputQueue {
    out: Output,
    /// The writer, started at the first line: a session whose scripts say nothing (a
    /// fleet's, mostly) starts no thread for it, and its answers wait for none.
    to_writer: OnceLock<Sender<Item>>,
    /// Held while the writer is being started, so that it starts once.
    starting: Mutex<()>,
    /// Bytes queued and not yet written.
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

impl OutputQueue {
    pub fn start(out: Output) -> OutputQueue {
        OutputQueue {
            out,
            to_writer: OnceLock::new(),
            starting: Mutex::new(()),
            queued: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The writer's end of the queue; the writer starts with the first line. `None` while the
    /// OS refuses it a thread.
    fn writer(&self) -> Option<&Sender<Item>> {
        if let Some(to_writer) = self.to_writer.get() {
            return Some(to_writer);
        }
        let _one_at_a_time = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(to_writer) = self.to_writer.get() {
            return Some(to_writer);
        }
        let (to_writer, items) = mpsc::channel::<Item>();
        let out = Arc::clone(&self.out);
        let (missing, written) = (Arc::clone(&self.dropped), Arc::clone(&self.queued));
        let started = crate::thread_start::start(
            || "write script output to the driver".into(),
            move || {
                for item in items {
                    match item {
                        Item::Line(message, cost) => {
                            let mut out = out.lock().expect("output lock");
                            // A driver that cannot be written to is gone; its input ends too.
                            let _ = write_json_line(&mut *out, &message);
                            written.fetch_sub(cost, Ordering::SeqCst);
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
            },
        );
        started.ok()?;
        #[cfg(test)]
        tests::WRITERS.with(|n| n.set(n.get() + 1));
        let _ = self.to_writer.set(to_writer);
        self.to_writer.get()
    }

    /// Queues a line, cut to [`MAX_SENT_LINE`]; never waits. A full queue (a driver not
    /// reading) drops it.
    pub fn line(&self, mut message: AgentMessage) {
        let mut cost = PER_LINE;
        if let AgentMessage::Output { line, job, .. } = &mut message {
            cut(line);
            cost += line.capacity() + job.capacity();
        }
        let reserved = self
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |queued| {
                (queued + cost <= QUEUED_BYTES).then_some(queued + cost)
            });
        if reserved.is_err() {
            self.dropped.fetch_add(1, Ordering::SeqCst);
            return;
        }
        match self.writer() {
            Some(writer) => {
                if writer.send(Item::Line(message, cost)).is_err() {
                    // The writer is gone (it never ends before the queue): nothing waits.
                    self.queued.fetch_sub(cost, Ordering::SeqCst);
                }
            }
            // No thread to write it: dropped and counted, as with a full queue.
            None => {
                self.queued.fetch_sub(cost, Ordering::SeqCst);
                self.dropped.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Waits until every line queued so far is written. No line queued yet, no writer: nothing
    /// to wait for. (A request's lines are queued by threads that have ended, or been
    /// joined, before its answer is flushed: the writer they started is seen here.)
    pub fn flush(&self) {
        let Some(to_writer) = self.to_writer.get() else {
            return;
        };
        let (done, written) = mpsc::channel();
        if to_writer.send(Item::Flushed(done)).is_ok() {
            let _ = written.recv();
        }
    }
}

/// Cuts `line` to [`MAX_SENT_LINE`] bytes (at a character boundary), saying so at its end.
fn cut(line: &mut String) {
    if line.len() <= MAX_SENT_LINE {
        return;
    }
    let mut end = MAX_SENT_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let left_out = line.len() - end;
    line.truncate(end);
    line.push_str(&format!(
        " [bbr-agent: {left_out} more bytes of this line were not sent; the VM log has them]"
    ));
    // What is queued is the allocation, not the length.
    line.shrink_to_fit();
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
                "[bbr-agent: {lost} lines of script output were not sent (the driver was not reading, or no thread could send them); the VM log has them]"
            ),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ScriptKind;
    use crate::protocol::messages::WireStream;
    use std::cell::Cell;

    thread_local! {
        /// How many writer threads this thread started.
        pub(super) static WRITERS: Cell<u32> = const { Cell::new(0) };
    }

    /// A session whose scripts say nothing starts no writer thread, and its answers' flushes
    /// wait for none; the first line starts it, and a flush then waits for the line.
    #[test]
    fn the_writer_starts_with_the_first_line_only() {
        let written = Arc::new(Mutex::new(Vec::new()));
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out: Output = Arc::new(Mutex::new(Box::new(Shared(Arc::clone(&written)))));
        let before = WRITERS.with(Cell::get);
        let queue = OutputQueue::start(out);
        for _ in 0..10 {
            queue.flush();
        }
        assert_eq!(WRITERS.with(Cell::get) - before, 0, "no line, no writer");
        queue.line(output("said".into()));
        queue.line(output("twice".into()));
        queue.flush();
        assert_eq!(WRITERS.with(Cell::get) - before, 1, "one writer");
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("\"said\"") && lines[1].contains("\"twice\""),
            "{text}"
        );
    }

    /// While the OS refuses the writer its thread, lines are dropped and counted, never a
    /// panic (the agent may hold locks); the first line that gets a writer says how many.
    #[test]
    fn a_refused_writer_drops_lines_and_the_next_writer_says_how_many() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let (go, wait) = mpsc::channel();
        drop(go);
        let out: Output = Arc::new(Mutex::new(Box::new(Stalled(Arc::clone(&written), wait))));
        let queue = OutputQueue::start(out);
        crate::thread_start::with_threads_allowed(0, || {
            for i in 0..3 {
                queue.line(output(format!("refused {i}")));
            }
            queue.flush();
        });
        assert!(written.lock().unwrap().is_empty());
        assert_eq!(queue.queued.load(Ordering::SeqCst), 0, "nothing held");
        queue.line(output("after".into()));
        queue.flush();
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("\"after\""), "{text}");
        assert!(
            lines[1].contains("3 lines of script output were not sent"),
            "{text}"
        );
    }

    /// A writer that takes nothing until it is let go: a driver that does not read.
    struct Stalled(Arc<Mutex<Vec<u8>>>, mpsc::Receiver<()>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.1.recv();
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn output(line: String) -> AgentMessage {
        AgentMessage::Output {
            id: 1,
            job: "j".into(),
            script: ScriptKind::Backup,
            stream: WireStream::Stdout,
            line,
        }
    }

    #[test]
    fn long_lines_are_cut_and_the_queue_holds_a_bounded_number_of_bytes() {
        let (written, (go, wait)) = (Arc::new(Mutex::new(Vec::new())), mpsc::channel());
        let out: Output = Arc::new(Mutex::new(Box::new(Stalled(Arc::clone(&written), wait))));
        let queue = OutputQueue::start(out);
        // 192 KiB lines (64 KiB of invalid UTF-8, made U+FFFD): 1,000 of them are 187 MiB.
        for _ in 0..1000 {
            queue.line(output("\u{FFFD}".repeat(64 << 10)));
        }
        let queued = queue.queued.load(Ordering::SeqCst);
        assert!(queued <= QUEUED_BYTES, "{queued} bytes queued");
        let dropped = queue.dropped.load(Ordering::SeqCst);
        assert!(
            dropped >= 1000 - (QUEUED_BYTES / MAX_SENT_LINE) as u64,
            "{dropped} dropped"
        );
        drop(go);
        queue.flush();
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let line = first["line"].as_str().unwrap();
        assert!(line.len() < MAX_SENT_LINE + 200, "{} bytes", line.len());
        assert!(
            line.ends_with("the VM log has them]"),
            "{}",
            &line[line.len() - 100..]
        );
        assert!(text.contains("lines of script output were not sent"));
        assert_eq!(
            queue.queued.load(Ordering::SeqCst),
            0,
            "all written, none counted"
        );
    }
}
