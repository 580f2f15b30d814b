//! The agent's own log: warnings and errors on stderr (text or JSON; `BBR_AGENT_LOG` sets the
//! filter), and, for every command that runs on a VM, everything at the configured level
//! appended to `<root>/var/vcap/sys/log/bbr-agent/bbr-agent.log`, where BOSH keeps job logs
//! (and the platform rotates files ending in `.log`). Script output goes there too, line by
//! line with timestamps; a script's environment never does.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::cli::LogFormat;

pub const LOG_FILE: &str = "bbr-agent.log";

/// Sets up logging; `vm_log_dir` is where the VM log goes, for commands that run on a VM.
pub fn init(format: LogFormat, vm_log_dir: Option<&Path>, file_level: Option<&str>) {
    let stderr_filter =
        EnvFilter::try_from_env("BBR_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    // A driver that has gone leaves `serve` a closed stderr: a log line that cannot be
    // written must not disturb the cleanup that follows (or print about itself).
    let stderr = match format {
        LogFormat::Text => fmt::layer()
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
