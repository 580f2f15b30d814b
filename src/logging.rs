//! The agent's own log: warnings and errors on stderr (text or JSON; `BBR_AGENT_LOG` sets the
//! filter), and, for every command that runs on a VM, everything at the configured level
//! appended to `<root>/var/vcap/sys/log/bbr-agent/bbr-agent.log`, where BOSH keeps job logs
//! (and the platform rotates files ending in `.log`). Script output goes there too, line by
//! line with timestamps; a script's environment never does.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::IsTerminal;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::cli::LogFormat;

pub const LOG_FILE: &str = "bbr-agent.log";

/// Sets up logging; `vm_log_dir` is where the VM log goes, for commands that run on a VM.
pub fn init(format: LogFormat, vm_log_dir: Option<&Path>, file_level: Option<&str>, debug: bool) {
    // `--debug` (BBR's flag) is the most there is to see, unless BBR_AGENT_LOG says otherwise.
    let default = if debug { "debug" } else { "warn" };
    let stderr_filter =
        EnvFilter::try_from_env("BBR_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // A driver that has gone leaves `serve` a closed stderr: a log line that cannot be
    // written must not disturb the cleanup that follows (or print about itself).
    let stderr = match format {
        LogFormat::Text => fmt::layer()
            .event_format(HumanLine {
                colour: colour_wanted(),
            })
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .boxed(),
    }
    .with_filter(stderr_filter);
    // A VM log that cannot be opened (an operator's laptop, a read-only root) is skipped:
    // the run itself matters more than its log.
    let file = vm_log_dir.and_then(open_log).map(|file| {
        let level = file_level
            .and_then(|l| l.parse::<LevelFilter>().ok())
            .unwrap_or(LevelFilter::INFO);
        fmt::layer()
            .with_ansi(false)
            .with_writer(Mutex::new(file))
            .with_filter(level)
    });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
}

/// Colour only for a person at a terminal, and never when `NO_COLOR` is set (no-color.org).
fn colour_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A log event as a line for a person: `bbr-agent: warning: what happened (key: value, ...)`,
/// without timestamps or module paths (the VM log keeps those).
struct HumanLine {
    colour: bool,
}

impl<S, N> FormatEvent<S, N> for HumanLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        let (word, sgr) = match level {
            Level::ERROR => ("error", "1;31"),
            Level::WARN => ("warning", "1;33"),
            Level::INFO => ("info", ""),
            Level::DEBUG => ("debug", ""),
            Level::TRACE => ("trace", ""),
        };
        if self.colour && !sgr.is_empty() {
            write!(writer, "\x1b[{sgr}mbbr-agent: {word}:\x1b[0m ")?;
        } else {
            write!(writer, "bbr-agent: {word}: ")?;
        }
        let mut fields = HumanFields::default();
        event.record(&mut fields);
        write!(writer, "{}", fields.message)?;
        if !fields.rest.is_empty() {
            write!(writer, " ({})", fields.rest)?;
        }
        writeln!(writer)
    }
}

/// The message, then the other fields as `key: value`, comma-separated.
#[derive(Default)]
struct HumanFields {
    message: String,
    rest: String,
}

impl Visit for HumanFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field, format_args!("{value:?}"));
    }
}

impl HumanFields {
    fn record(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value}");
            return;
        }
        if !self.rest.is_empty() {
            self.rest.push_str(", ");
        }
        let _ = write!(self.rest, "{}: {value}", field.name());
    }
}

fn open_log(dir: &Path) -> Option<fs::File> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .ok()?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(dir.join(LOG_FILE))
        .ok()
}
