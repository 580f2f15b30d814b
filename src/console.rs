//! What the operator sees, and what the run report is made from.
//!
//! Human output (the default): one line per script and per artifact transfer with its
//! duration on stdout; script output prefixed `group/index job script stream:` on stderr, live
//! with `--verbose` and always in full when a script fails. With `--log-format json`, the same
//! events as one JSON object per line on stderr instead (docs/events.md).
//! Every script and transfer is also recorded, for the HTML report.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use indicatif::{MultiProgress, ProgressBar};
use serde::Serialize;

use crate::contract::ScriptKind;
use crate::exec::{ScriptEnd, Stream};
use crate::instance::{InstanceId, JobInfo, ScriptEvent, ScriptEvents, ScriptReport};
use crate::timestamp::Utc;

mod still_running;

/// Where a VM's agent logs, under the `--root` its command gives (BOSH's job log directory).
const AGENT_LOG: &str = "/var/vcap/sys/log/bbr-agent/bbr-agent.log";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

/// One script run or artifact transfer, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub instance: String,
    pub job: String,
    /// A script name, or `drain` / `copy` for artifact transfers.
    pub phase: String,
    pub started: SystemTime,
    pub duration: Duration,
    pub ok: bool,
    pub detail: String,
    pub bytes: Option<u64>,
    pub files: Option<usize>,
    /// The end of the output of a failed script.
    pub output_tail: String,
    /// An unlock the driver left to the VM's agent (its session was ended by the
    /// interruption): neither done here nor failed.
    pub left_to_agent: bool,
}

/// What the report is made from: every step in the order it ended, and the scripts of every
/// job described, keyed by instance and job (a job without an unlock script is not one left
/// locked).
#[derive(Debug, Clone, Default)]
pub struct Records {
    pub steps: Vec<Record>,
    pub scripts: BTreeMap<(String, String), Vec<ScriptKind>>,
}

/// One event of the JSON stream (docs/events.md). Absent fields are left out.
#[derive(Debug, Default, Serialize)]
struct Event<'a> {
    timestamp: String,
    level: &'a str,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    script: Option<ScriptKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_status: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

pub struct Console {
    verbose: bool,
    format: Format,
    records: Mutex<Records>,
    /// The progress area (transfer bars, running scripts), when a person watches stderr on
    /// a terminal: every line is written around it, so no bar is left half-drawn.
    progress: Option<MultiProgress>,
    /// The still-running notices of the steps now running.
    notices: still_running::Notices,
}

impl Console {
    pub fn new(verbose: bool, format: Format) -> Arc<Console> {
        Arc::new_cyclic(|me| Console {
            verbose,
            format,
            records: Mutex::new(Records::default()),
            progress: (format == Format::Human && std::io::stderr().is_terminal())
                .then(MultiProgress::new),
            notices: still_running::Notices::new(me.clone()),
        })
    }

    /// Puts `bar` in the progress area; `None` (no bar at all) when there is none.
    pub fn add_bar(&self, bar: ProgressBar) -> Option<ProgressBar> {
        self.progress.as_ref().map(|area| area.add(bar))
    }

    /// Writes `line` to stdout or stderr, clearing the progress area meanwhile.
    fn write_line(&self, stderr: bool, line: std::fmt::Arguments<'_>) {
        let write = || {
            let _ = if stderr {
                writeln!(std::io::stderr().lock(), "{line}")
            } else {
                writeln!(std::io::stdout().lock(), "{line}")
            };
        };
        match &self.progress {
            Some(area) => area.suspend(write),
            None => write(),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn records(&self) -> Records {
        self.records.lock().expect("records lock").clone()
    }

    /// An instance was described: its jobs' scripts, for the report.
    pub fn described(&self, id: &InstanceId, jobs: &[JobInfo]) {
        let mut records = self.records.lock().expect("records lock");
        for job in jobs {
            records
                .scripts
                .insert((id.to_string(), job.name.clone()), job.scripts.clone());
        }
    }

    fn emit(&self, event: Event<'_>) {
        let mut line = serde_json::to_vec(&event).expect("events serialise");
        line.push(b'\n');
        let _ = std::io::stderr().lock().write_all(&line);
    }

    fn event<'a>(&self, level: &'a str, event: &'a str) -> Event<'a> {
        Event {
            timestamp: Utc::rfc3339(SystemTime::now()),
            level,
            event,
            ..Default::default()
        }
    }

    /// The sink for what scripts do as they run: their output, shown only with `--verbose`;
    /// the end of one of a step's jobs, which its still-running notices then leave out.
    pub fn script_events(self: &Arc<Self>) -> ScriptEvents {
        let console = Arc::clone(self);
        Arc::new(move |id, job, kind, event| match event {
            ScriptEvent::Line(stream, line) if console.verbose => {
                console.output_line(id, job, kind, stream, line);
            }
            ScriptEvent::Line(..) => {}
            ScriptEvent::Ended => console.notices.ended(id, kind, job),
        })
    }

    fn output_line(
        &self,
        id: &InstanceId,
        job: &str,
        kind: ScriptKind,
        stream: Stream,
        line: &str,
    ) {
        match self.format {
            Format::Human => self.write_line(
                true,
                format_args!("{id} {job} {kind} {}: {line}", stream.name()),
            ),
            Format::Json => self.emit(Event {
                instance: Some(id.to_string()),
                job: Some(job),
                script: Some(kind),
                phase: Some(phase_of(kind)),
                stream: Some(stream.name()),
                line: Some(line),
                ..self.event("info", "output")
            }),
        }
    }

    pub fn info(&self, message: impl AsRef<str>) {
        match self.format {
            Format::Human => self.write_line(false, format_args!("{}", message.as_ref())),
            Format::Json => self.emit(Event {
                message: Some(message.as_ref()),
                ..self.event("info", "message")
            }),
        }
    }

    /// As [`Console::info`], on stderr in human format: for a command whose stdout is data.
    pub fn note(&self, message: impl AsRef<str>) {
        match self.format {
            Format::Human => self.write_line(true, format_args!("{}", message.as_ref())),
            Format::Json => self.info(message),
        }
    }

    pub fn warn(&self, message: impl AsRef<str>) {
        match self.format {
            Format::Human => self.write_line(true, format_args!("warning: {}", message.as_ref())),
            Format::Json => self.emit(Event {
                message: Some(message.as_ref()),
                ..self.event("warn", "warning")
            }),
        }
    }

    pub fn error(&self, message: impl AsRef<str>) {
        match self.format {
            Format::Human => self.write_line(true, format_args!("error: {}", message.as_ref())),
            Format::Json => self.emit(Event {
                message: Some(message.as_ref()),
                ..self.event("error", "error")
            }),
        }
    }

    /// A workflow starts or ends: `started`, or `finished` with its exit code.
    pub fn run(&self, workflow: &str, deployment: &str, exit_code: Option<i32>) {
        if self.format == Format::Json {
            let message = format!("{workflow} of {deployment}");
            self.emit(Event {
                phase: Some(workflow),
                exit_status: exit_code,
                message: Some(&message),
                ..self.event(
                    "info",
                    if exit_code.is_some() {
                        "run_finished"
                    } else {
                        "run_started"
                    },
                )
            });
        }
    }

    /// One finished script: a line (or event), its output in full when it failed, a record.
    /// An unlock left to the VM's agent is recorded (and an event), but its line is the VM's
    /// one, [`Console::left_to_agent`].
    pub fn script(&self, id: &InstanceId, report: &ScriptReport) {
        let duration = crate::duration::format(report.duration);
        let (job, kind) = (&report.job, report.kind);
        let left_to_agent = report.left_to_agent();
        let mut detail = report.end.describe();
        if let ScriptEnd::Exited(127) = report.end {
            detail.push_str(&not_found_hint(&report.stderr));
        }
        self.record(Record {
            instance: id.to_string(),
            job: job.clone(),
            phase: kind.to_string(),
            started: report.started(),
            duration: report.duration,
            ok: report.success(),
            detail: detail.clone(),
            bytes: None,
            files: None,
            output_tail: if report.success() {
                String::new()
            } else {
                tail(report)
            },
            left_to_agent,
        });
        match self.format {
            Format::Human if left_to_agent => {}
            Format::Human if report.success() => {
                self.info(format!("{id} {job} {kind}: done in {duration}"))
            }
            Format::Human => self.info(format!(
                "{id} {job} {kind}: FAILED ({detail}) after {duration}"
            )),
            Format::Json => self.emit(Event {
                instance: Some(id.to_string()),
                job: Some(job),
                script: Some(kind),
                phase: Some(phase_of(kind)),
                duration_ms: Some(report.duration.as_millis() as u64),
                exit_status: match report.end {
                    ScriptEnd::Exited(code) => Some(code),
                    _ => None,
                },
                outcome: Some(match (report.success(), left_to_agent) {
                    (true, _) => "ok",
                    (false, true) => "left_to_agent",
                    (false, false) => "failed",
                }),
                message: Some(&detail),
                ..self.event(
                    match (report.success(), left_to_agent) {
                        (true, _) => "info",
                        (false, true) => "warn",
                        (false, false) => "error",
                    },
                    "script_finished",
                )
            }),
        }
        if !report.success() && !left_to_agent && !self.verbose {
            self.script_output(id, report);
        }
    }

    /// The VM's unlocks were left to its agent, its session being ended by the interruption:
    /// one line for the VM, where its scripts' lines would be.
    pub fn left_to_agent(&self, id: &InstanceId) {
        let message = format!(
            "{id}: its agent unlocks what it locked as its session ends (its log: {AGENT_LOG} on the VM)"
        );
        match self.format {
            Format::Human => self.info(&message),
            Format::Json => self.emit(Event {
                instance: Some(id.to_string()),
                message: Some(&message),
                ..self.event("warn", "warning")
            }),
        }
    }

    /// Both streams of a script, every line prefixed (or as output events).
    pub fn script_output(&self, id: &InstanceId, report: &ScriptReport) {
        for (stream, text) in [
            (Stream::Stdout, &report.stdout),
            (Stream::Stderr, &report.stderr),
        ] {
            for line in text.lines() {
                self.output_line(id, &report.job, report.kind, stream, line);
            }
        }
    }

    /// An artifact moved between this machine and a VM: `drain` or `copy`.
    pub fn transfer(
        &self,
        id: &InstanceId,
        job: &str,
        phase: &str,
        bytes: u64,
        files: usize,
        duration: Duration,
    ) {
        self.record(Record {
            instance: id.to_string(),
            job: job.to_string(),
            phase: phase.to_string(),
            started: SystemTime::now() - duration,
            duration,
            ok: true,
            detail: String::new(),
            bytes: Some(bytes),
            files: Some(files),
            output_tail: String::new(),
            left_to_agent: false,
        });
        match self.format {
            // BBR's words for a person ("copying backup"); the event keeps the phase's name.
            Format::Human => self.info(format!(
                "{id} {job}: {}: {}, {} in {}",
                match phase {
                    "drain" => "backup copied from the VM",
                    "copy" => "backup copied to the VM",
                    other => other,
                },
                file_count(files),
                human_bytes(bytes),
                crate::duration::format(duration)
            )),
            Format::Json => self.emit(Event {
                instance: Some(id.to_string()),
                job: Some(job),
                phase: Some(phase),
                duration_ms: Some(duration.as_millis() as u64),
                bytes: Some(bytes),
                files: Some(files),
                outcome: Some("ok"),
                ..self.event("info", "artifact_transferred")
            }),
        }
    }

    fn record(&self, record: Record) {
        self.records
            .lock()
            .expect("records lock")
            .steps
            .push(record);
    }
}

/// The phase a script belongs to, as the event stream names it.
pub fn phase_of(kind: ScriptKind) -> &'static str {
    match kind {
        ScriptKind::Metadata => "metadata",
        ScriptKind::PreBackupLock | ScriptKind::PreRestoreLock => "lock",
        ScriptKind::Backup => "backup",
        ScriptKind::Restore => "restore",
        ScriptKind::PostBackupUnlock | ScriptKind::PostRestoreUnlock => "unlock",
    }
}

/// Exit status 127 is the shell's "command not found": say which, and the likely cause.
fn not_found_hint(stderr: &str) -> String {
    match stderr.lines().find(|l| l.contains("not found") || l.contains("No such file")) {
        Some(line) => format!(
            "; a command or file was not found ({}): is a colocated job or package missing from this VM?",
            line.trim()
        ),
        None => "; the shell could not find a command: is a colocated job or package missing from this VM?".to_string(),
    }
}

/// The last lines of a failed script's output, for the report.
fn tail(report: &ScriptReport) -> String {
    let mut lines: Vec<String> = Vec::new();
    for (name, text) in [("stdout", &report.stdout), ("stderr", &report.stderr)] {
        lines.extend(text.lines().map(|l| format!("{name}: {l}")));
    }
    let start = lines.len().saturating_sub(20);
    lines[start..].join("\n")
}

/// `1 file`, `3 files`.
pub fn file_count(n: usize) -> String {
    if n == 1 {
        "1 file".to_string()
    } else {
        format!("{n} files")
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_127_names_what_was_not_found() {
        let hint = not_found_hint(
            "/var/vcap/jobs/x/bin/bbr/backup: 3: /var/vcap/jobs/database-backup-restorer/bin/backup: not found\n",
        );
        assert!(
            hint.contains("database-backup-restorer/bin/backup: not found"),
            "{hint}"
        );
        assert!(hint.contains("colocated job"));
    }

    #[test]
    fn bytes_read_for_humans() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
