//! Progress bars for artifact transfers, on a terminal only (bytes, rate, and for a transfer of
//! known size an ETA); not a terminal, or `--log-format json`, and there is no bar at all: the
//! one line per transfer says it all.

use std::io::{self, IsTerminal, Read, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::console::{Console, Format};

/// A bar for one transfer, or nothing when no one is watching a terminal.
pub fn transfer_bar(console: &Console, label: String, total: Option<u64>) -> Option<ProgressBar> {
    if console.format() != Format::Human || !io::stderr().is_terminal() {
        return None;
    }
    let (bar, template) = match total {
        Some(len) => (
            ProgressBar::new(len),
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{prefix} {spinner} {bytes} {bytes_per_sec}",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label);
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
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
