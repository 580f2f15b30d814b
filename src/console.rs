//! What the operator sees: one line per script with its result and duration, script output
//! prefixed with `group/index job script`, live with `--verbose` and always on failure.

use std::io::Write;
use std::sync::Arc;

use crate::exec::Stream;
use crate::instance::{InstanceId, ScriptLines, ScriptReport};

pub struct Console {
    verbose: bool,
}

impl Console {
    pub fn new(verbose: bool) -> Arc<Console> {
        Arc::new(Console { verbose })
    }

    /// The sink for live script output: printed only with `--verbose`.
    pub fn script_lines(self: &Arc<Self>) -> ScriptLines {
        let console = Arc::clone(self);
        Arc::new(move |id, job, kind, stream, line| {
            if console.verbose {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "{id} {job} {kind} {}: {line}",
                    stream.name()
                );
            }
        })
    }

    pub fn info(&self, message: impl AsRef<str>) {
        let _ = writeln!(std::io::stdout().lock(), "{}", message.as_ref());
    }

    pub fn warn(&self, message: impl AsRef<str>) {
        let _ = writeln!(std::io::stderr().lock(), "warning: {}", message.as_ref());
    }

    pub fn error(&self, message: impl AsRef<str>) {
        let _ = writeln!(std::io::stderr().lock(), "error: {}", message.as_ref());
    }

    /// One line for a finished script; on failure (and not already shown live) its output.
    pub fn script(&self, id: &InstanceId, report: &ScriptReport) {
        let duration = crate::duration::format(report.duration);
        let (job, kind) = (&report.job, report.kind);
        if report.success() {
            self.info(format!("{id} {job} {kind}: done in {duration}"));
            return;
        }
        self.info(format!(
            "{id} {job} {kind}: FAILED ({}) after {duration}",
            report.end.describe()
        ));
        if !self.verbose {
            self.script_output(id, report);
        }
    }

    /// Both streams of a script, every line prefixed.
    pub fn script_output(&self, id: &InstanceId, report: &ScriptReport) {
        let mut err = std::io::stderr().lock();
        for (stream, text) in [
            (Stream::Stdout, &report.stdout),
            (Stream::Stderr, &report.stderr),
        ] {
            for line in text.lines() {
                let _ = writeln!(
                    err,
                    "{id} {} {} {}: {line}",
                    report.job,
                    report.kind,
                    stream.name()
                );
            }
        }
    }
}
