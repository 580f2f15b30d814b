//! Progress bars for artifact transfers, on a terminal only (bytes, rate, and for a transfer of
//! known size an ETA); not a terminal, or `--log-format json`, and there is no bar at all: the
//! one line per transfer says it all.

use std::io::{self, Read, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::console::{Console, Format};
use crate::thread_start;

/// A bar for one transfer, or nothing when no one is watching a terminal.
pub fn transfer_bar(console: &Console, label: String, total: Option<u64>) -> Option<ProgressBar> {
    if console.format() != Format::Human {
        return None;
    }
    let bar = console.add_bar(ProgressBar::no_length())?;
    match total {
        Some(len) => set_total(&bar, len),
        None => bar.set_style(style("{prefix} {spinner} {bytes} {bytes_per_sec}")),
    }
    bar.set_prefix(label);
    steady_tick(&bar, Duration::from_millis(200));
    Some(bar)
}

/// Ticks `bar` (its spinner, its elapsed time and rate) every `every` from a thread of its
/// own, until the bar is finished or gone. Not indicatif's steady tick, which panics when the
/// OS refuses its thread (a container's `pids.max`): a ticker is a nicety, skipped then, and
/// the bar still moves with every byte.
pub fn steady_tick(bar: &ProgressBar, every: Duration) {
    let weak = bar.downgrade();
    let started = thread_start::start(
        || "tick a progress bar".into(),
        move || {
            loop {
                std::thread::sleep(every);
                match weak.upgrade() {
                    Some(bar) if !bar.is_finished() => bar.tick(),
                    _ => return,
                }
            }
        },
    );
    if let Err(e) = started {
        tracing::debug!(error = %e, "a progress bar without its ticker");
    }
}

/// The transfer's size is known (a drain learns it as the VM starts sending): a real bar,
/// with its percentage and ETA.
pub fn set_total(bar: &ProgressBar, len: u64) {
    bar.set_length(len);
    bar.set_style(style(
        "{prefix} [{bar:30}] {percent}% {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    ));
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("a valid progress template")
        .progress_chars("=> ")
}

/// Counts what passes through it onto the bar, if there is one.
pub struct Counted<T> {
    pub inner: T,
    pub bar: Option<ProgressBar>,
}

impl<T> Counted<T> {
    pub fn new(inner: T, bar: Option<ProgressBar>) -> Self {
        Counted { inner, bar }
    }

    fn count(&self, n: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        }
    }

    /// Removes the bar, leaving the terminal for the transfer's summary line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Counted as each chunk is taken, whole.
impl<W: crate::chunk_stream::ChunkSink> crate::chunk_stream::ChunkSink for Counted<W> {
    fn take_from(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.inner.take_from(len, fill)?;
        self.count(len);
        Ok(())
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a thread for its ticker, a bar is made all the same, and moves with its bytes.
    #[test]
    fn a_bar_whose_ticker_is_refused_still_counts() {
        let bar = ProgressBar::hidden();
        let ((), refused) = thread_start::counting_refusals(0, || {
            steady_tick(&bar, Duration::from_millis(10));
        });
        assert_eq!(
            refused, 1,
            "the ticker was not asked of the OS through thread_start"
        );
        bar.inc(5);
        assert_eq!(bar.position(), 5);
    }
}
