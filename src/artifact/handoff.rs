//! Hand-offs between the thread that receives an artifact stream and the threads that write
//! and check it, which never make the receiving thread wait past an interruption: a bounded
//! queue whose sender gives up once the run is interrupted, and a thread's result, waited for
//! the same way. Whatever a stuck or endless consumer does, the driver still ends on SIGTERM.
//! Both wait on a condition variable that the interruption wakes (`interrupt::Wake`), not in
//! slices.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, Weak};

use super::tar_reader::TarReadError;
use crate::interrupt::{self, Wake};
use crate::thread_start::{self, NoThread};

/// The error a writer gives once the run was interrupted. Not `ErrorKind::Interrupted`:
/// `write_all` would retry that for ever.
#[derive(Debug, thiserror::Error)]
#[error("the run was interrupted; the artifact is incomplete")]
pub struct RunInterrupted;

impl RunInterrupted {
    pub fn io() -> std::io::Error {
        std::io::Error::other(RunInterrupted)
    }

    /// Whether `e` is this error.
    pub fn is(e: &std::io::Error) -> bool {
        e.get_ref()
            .is_some_and(|inner| inner.is::<RunInterrupted>())
    }
}

/// Why a hand-off did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The other side has gone (ended, or stopped early).
    Gone,
    /// The run was interrupted.
    Interrupted,
}

struct State<T> {
    items: VecDeque<T>,
    senders_gone: bool,
    receiver_gone: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    not_full: Condvar,
    not_empty: Condvar,
    capacity: usize,
}

pub struct Sender<T> {
    shared: Arc<Shared<T>>,
    stop: fn() -> bool,
}

pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A queue of at most `capacity` items; the sender waits for room until `stop` says so
/// (looked at again whenever the first interruption wakes it).
pub fn bounded<T: Send + 'static>(capacity: usize, stop: fn() -> bool) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::with_capacity(capacity),
            senders_gone: false,
            receiver_gone: false,
        }),
        not_full: Condvar::new(),
        not_empty: Condvar::new(),
        capacity: capacity.max(1),
    });
    let waker: Weak<dyn Wake> = Arc::downgrade(&shared) as Weak<Shared<T>>;
    interrupt::wake_on_interruption(waker);
    (
        Sender {
            shared: Arc::clone(&shared),
            stop,
        },
        Receiver { shared },
    )
}

impl<T> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // A panic elsewhere cannot leave the queue itself half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: Send> Wake for Shared<T> {
    fn wake(&self) {
        let _state = self.lock();
        self.not_full.notify_all();
    }
}

impl<T> Sender<T> {
    pub fn send(&self, item: T) -> Result<(), Stopped> {
        let shared = &self.shared;
        let mut state = shared.lock();
        loop {
            if state.receiver_gone {
                return Err(Stopped::Gone);
            }
            if state.items.len() < shared.capacity {
                state.items.push_back(item);
                shared.not_empty.notify_one();
                return Ok(());
            }
            if (self.stop)() {
                return Err(Stopped::Interrupted);
            }
            state = shared
                .not_full
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.lock().senders_gone = true;
        self.shared.not_empty.notify_all();
    }
}

impl<T> Receiver<T> {
    /// The next item; `None` once the sender has gone and everything was taken.
    pub fn recv(&self) -> Option<T> {
        let shared = &self.shared;
        let mut state = shared.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                shared.not_full.notify_one();
                return Some(item);
            }
            if state.senders_gone {
                return None;
            }
            state = shared
                .not_empty
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_gone = true;
        state.items.clear();
        self.shared.not_full.notify_all();
    }
}

/// A thread's result, to be waited for without outliving an interruption.
pub struct Outcome<T> {
    shared: Arc<Slot<T>>,
    stop: fn() -> bool,
}

/// Where the thread leaves its result.
struct Slot<T> {
    result: Mutex<Ending<T>>,
    ready: Condvar,
}

enum Ending<T> {
    Running,
    Done(T),
    /// The thread panicked (or its result was taken).
    Gone,
}

impl<T> Slot<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ending<T>> {
        self.result.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn end(&self, ending: Ending<T>) {
        let mut result = self.lock();
        if matches!(*result, Ending::Running) {
            *result = ending;
        }
        self.ready.notify_all();
    }
}

impl<T: Send> Wake for Slot<T> {
    fn wake(&self) {
        let _result = self.lock();
        self.ready.notify_all();
    }
}

/// Marks the result gone if the thread ends without one (a panic).
struct Finish<T>(Arc<Slot<T>>);

impl<T> Drop for Finish<T> {
    fn drop(&mut self) {
        self.0.end(Ending::Gone);
    }
}

/// A thread's result that can also say that the thread could not start.
pub trait Refusable {
    fn refused(e: NoThread) -> Self;
}

impl<W> Refusable for std::io::Result<W> {
    fn refused(e: NoThread) -> Self {
        Err(e.io())
    }
}

impl<T> Refusable for Result<T, TarReadError> {
    fn refused(e: NoThread) -> Self {
        Err(TarReadError::Read(e.io()))
    }
}

/// Runs `work` on a thread of its own. A thread the OS refuses is the result, at once:
/// `work` is dropped unrun, with what it holds (a queue's receiver: its sender stops, `Gone`).
pub fn spawn<T: Send + Refusable + 'static>(
    stop: fn() -> bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Outcome<T> {
    let shared = Arc::new(Slot {
        result: Mutex::new(Ending::Running),
        ready: Condvar::new(),
    });
    let waker: Weak<dyn Wake> = Arc::downgrade(&shared) as Weak<Slot<T>>;
    interrupt::wake_on_interruption(waker);
    let finish = Finish(Arc::clone(&shared));
    let started = thread_start::start(
        || "write or check the artifact as it arrives".into(),
        move || {
            let result = work();
            finish.0.end(Ending::Done(result));
        },
    );
    if let Err(e) = started {
        // The dropped `finish` said `Gone` (a panic): the refusal is the better word.
        *shared.lock() = Ending::Done(T::refused(e));
    }
    Outcome { shared, stop }
}

impl<T> Outcome<T> {
    /// The result; on interruption, `Stopped::Interrupted` at once, leaving the thread to
    /// end with the process. `Stopped::Gone` if the thread panicked.
    pub fn wait(self) -> Result<T, Stopped> {
        let mut result = self.shared.lock();
        loop {
            match std::mem::replace(&mut *result, Ending::Gone) {
                Ending::Done(value) => return Ok(value),
                Ending::Gone => return Err(Stopped::Gone),
                Ending::Running => *result = Ending::Running,
            }
            if (self.stop)() {
                return Err(Stopped::Interrupted);
            }
            result = self
                .shared
                .ready
                .wait(result)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    static STOP: AtomicBool = AtomicBool::new(false);
    fn stop() -> bool {
        STOP.load(Ordering::SeqCst)
    }
    fn never() -> bool {
        false
    }

    #[test]
    fn items_arrive_in_order_and_the_end_is_seen() {
        let (tx, rx) = bounded(2, never);
        let consumer = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(n) = rx.recv() {
                got.push(n);
            }
            got
        });
        for n in 0..1000 {
            tx.send(n).unwrap();
        }
        drop(tx);
        assert_eq!(consumer.join().unwrap(), (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_sender_and_a_waiter_stuck_on_a_consumer_that_never_ends_give_up_on_interruption() {
        // Both in one test: they share the flag.
        let (tx, rx) = bounded::<u32>(1, stop);
        let stuck = spawn(stop, move || -> std::io::Result<()> {
            let _keep = rx;
            loop {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        tx.send(1).unwrap();
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send((tx.send(2), stuck.wait().err()));
        });
        std::thread::sleep(Duration::from_millis(200));
        STOP.store(true, Ordering::SeqCst);
        // What an interruption does: set the flag, then wake the waiters.
        crate::interrupt::wake_waiters();
        let (sent, waited) = result
            .recv_timeout(Duration::from_secs(20))
            .expect("the sender and the waiter still wait, 20 s after the interruption");
        assert_eq!(sent, Err(Stopped::Interrupted));
        assert_eq!(waited, Some(Stopped::Interrupted));
    }

    /// A thread the OS refuses is the outcome's result, and its queue's sender is not left
    /// waiting for a receiver that never runs.
    #[test]
    fn a_refused_thread_is_its_result_and_lets_its_sender_go() {
        let (tx, rx) = bounded::<u32>(1, never);
        let outcome = thread_start::with_threads_allowed(0, || {
            spawn(never, move || {
                let _keep = rx;
                std::io::Result::Ok(1)
            })
        });
        assert_eq!(tx.send(1), Err(Stopped::Gone));
        let e = outcome.wait().expect("a result").unwrap_err();
        assert!(NoThread::is(&e), "{e}");
        assert!(
            e.to_string()
                .starts_with("could not start a thread to write or check the artifact"),
            "{e}"
        );
        let checked: Outcome<Result<(), TarReadError>> =
            thread_start::with_threads_allowed(0, || spawn(never, || Ok(())));
        assert!(matches!(checked.wait(), Ok(Err(TarReadError::Read(e))) if NoThread::is(&e)));
    }

    #[test]
    fn a_receiver_that_went_away_ends_the_sending() {
        let (tx, rx) = bounded(1, never);
        tx.send(1).unwrap();
        drop(rx);
        assert_eq!(tx.send(2), Err(Stopped::Gone));
    }
}
