//! The run report: `report.html` in the artifact directory, rendered with tera from what the
//! console recorded. Per instance and job, a timeline of lock, backup or restore, and unlock
//! under a time axis of wall-clock times (UTC), each step with its start and end; the lock window (from the first lock to the last unlock: how long the system was
//! unavailable); bytes and files per artifact; failures with the end of their output.
//! Self-contained: inline CSS and SVG, nothing fetched.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::console::{Record, Records, file_count, human_bytes};
use crate::contract::{ScriptKind, exit_bits};
use crate::duration::format as took;
use crate::timestamp::Utc;

const TEMPLATE: &str = include_str!("report.html.tera");

/// What the report is about.
pub struct RunSummary<'a> {
    pub workflow: &'a str,
    pub deployment: &'a str,
    /// The exit-code bits the run earned.
    pub exit_code: i32,
    /// What the process exits with: the bits, or 128 + the signal that interrupted it.
    pub exit_status: i32,
    pub artifact: Option<&'a Path>,
    /// What failed, as text.
    pub errors: &'a [String],
    /// The command that cleans up what the run may have left, if it may have left something.
    pub cleanup: Option<&'a str>,
    /// For a failed lock that left nothing locked: what to fix before the run is made again.
    pub retry: Option<String>,
}

/// What a failed run leaves the operator to do.
#[derive(Serialize)]
struct NextStep {
    text: String,
    /// The exact command to run, when there is one.
    command: Option<String>,
}

/// The next step after a failed run: the cleanup it names, else nothing left to clean.
fn next_step(summary: &RunSummary<'_>) -> Option<NextStep> {
    if summary.exit_code == 0 {
        return None;
    }
    let cleanup = summary.cleanup;
    let left = exit_bits::LOCK | exit_bits::UNLOCK | exit_bits::CLEANUP;
    Some(match cleanup {
        Some(command) => NextStep {
            text: "Something may still be locked, or left in a VM's store. To clean up, run:"
                .to_string(),
            command: Some(command.to_string()),
        },
        None if summary.retry.is_some() => {
            let retry = summary.retry.as_deref().unwrap_or_default();
            let mut chars = retry.chars();
            let first = chars.next().map(|c| c.to_uppercase().to_string());
            NextStep {
                text: format!("{}{}.", first.unwrap_or_default(), chars.as_str()),
                command: None,
            }
        }
        None if summary.exit_code & left == 0 => NextStep {
            text: format!(
                "Nothing was left locked: see what failed below, fix it, then run the {} again.",
                summary.workflow
            ),
            command: None,
        },
        None => NextStep {
            text: format!(
                "A lock, unlock or cleanup failed: run {}-cleanup for this deployment before anything else.",
                summary.workflow
            ),
            command: None,
        },
    })
}

#[derive(Serialize)]
struct JobRow {
    instance: String,
    job: String,
    bars: Vec<Bar>,
    window_x: f64,
    window_width: f64,
    lock_window: String,
    artifact: String,
}

#[derive(Serialize)]
struct Bar {
    x: f64,
    width: f64,
    colour: &'static str,
    label: String,
}

#[derive(Serialize)]
struct Step {
    instance: String,
    job: String,
    phase: String,
    result: String,
    started: String,
    ended: String,
    took: String,
}

/// A mark on the time axis: where (0 to 100, a percentage of the run) and the wall-clock time.
#[derive(Serialize)]
struct Tick {
    left: f64,
    label: String,
    /// How the label hangs from its mark: `start` (the first), `end` (the last), `middle`.
    align: &'static str,
}

/// Seconds between marks on the time axis: the smallest that gives at most 6 marks.
const TICK_STEPS: [u64; 16] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21_600, 43_200,
];

/// The time axis: the run's start and end, and marks at round wall-clock seconds between.
fn ticks(start: SystemTime, span: Duration) -> Vec<Tick> {
    let secs = |t: SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    };
    let (from, length) = (secs(start), span.as_secs_f64());
    let step = TICK_STEPS
        .into_iter()
        .find(|s| length / *s as f64 <= 6.0)
        .map_or((length / 6.0).ceil().max(86_400.0), |s| s as f64);
    let left = |at: f64| (at - from) / length * 100.0;
    let mut ticks = vec![Tick {
        left: 0.0,
        label: Utc::clock(start),
        align: "start",
    }];
    let mut at = (from / step).floor() * step + step;
    // Marks too close to either end would overprint its label. At most a few marks, whatever
    // the span: times come from VMs.
    let mut steps = 0;
    while at < from + length && steps < 16 {
        steps += 1;
        if left(at) > 12.0 && left(at) < 88.0 {
            ticks.push(Tick {
                left: left(at),
                label: Utc::clock(std::time::UNIX_EPOCH + Duration::from_secs_f64(at)),
                align: "middle",
            });
        }
        at += step;
    }
    ticks.push(Tick {
        left: 100.0,
        label: Utc::clock(start + span),
        align: "end",
    });
    ticks
}

#[derive(Serialize)]
struct Failure {
    instance: String,
    job: String,
    phase: String,
    detail: String,
    output: String,
}

/// Renders the report as HTML.
pub fn render(summary: &RunSummary<'_>, recorded: &Records) -> Result<String, String> {
    let records = &recorded.steps;
    let start = records
        .iter()
        .map(|r| r.started)
        .min()
        .unwrap_or_else(SystemTime::now);
    let end = records
        .iter()
        .map(|r| r.started + r.duration)
        .max()
        .unwrap_or(start);
    let span = end
        .duration_since(start)
        .unwrap_or_default()
        .max(Duration::from_millis(1));
    let at = |t: SystemTime| {
        t.duration_since(start).unwrap_or_default().as_secs_f64() / span.as_secs_f64() * 1000.0
    };

    let mut by_job: BTreeMap<(String, String), Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_job
            .entry((r.instance.clone(), r.job.clone()))
            .or_default()
            .push(r);
    }
    let jobs: Vec<JobRow> = by_job
        .into_iter()
        .map(|((instance, job), rs)| {
            let is_lock = |r: &&&Record| r.phase.starts_with("pre-") && r.phase.ends_with("-lock");
            let is_unlock =
                |r: &&&Record| r.phase.starts_with("post-") && r.phase.ends_with("-unlock");
            let first_lock = rs.iter().filter(is_lock).map(|r| r.started).min();
            let last_unlock = rs
                .iter()
                .filter(is_unlock)
                .map(|r| r.started + r.duration)
                .max();
            let (window_x, window_width, lock_window) = match (first_lock, last_unlock) {
                (Some(from), Some(to)) => (
                    at(from),
                    (at(to) - at(from)).max(1.0),
                    took(to.duration_since(from).unwrap_or_default()),
                ),
                (Some(_), None) => {
                    let unlock = rs
                        .iter()
                        .filter(is_lock)
                        .filter_map(|r| ScriptKind::from_file_name(&r.phase))
                        .find_map(ScriptKind::unlock_releasing);
                    let has_unlock = match (
                        recorded.scripts.get(&(instance.clone(), job.clone())),
                        unlock,
                    ) {
                        (Some(scripts), Some(unlock)) => scripts.contains(&unlock),
                        // Not described, or a lock of no known kind: assume the worst.
                        _ => true,
                    };
                    let why = if has_unlock {
                        "never unlocked"
                    } else {
                        "no unlock script"
                    };
                    (0.0, 0.0, why.to_string())
                }
                _ => (0.0, 0.0, "not locked".to_string()),
            };
            let artifact = rs
                .iter()
                .filter_map(|r| {
                    r.bytes.map(|b| {
                        format!("{}, {}", human_bytes(b), file_count(r.files.unwrap_or(0)))
                    })
                })
                .collect::<Vec<_>>()
                .join("; ");
            let bars = rs
                .iter()
                .map(|r| Bar {
                    x: at(r.started),
                    width: (at(r.started + r.duration) - at(r.started)).max(2.0),
                    colour: colour(r),
                    label: format!(
                        "{} {}, {}–{} UTC",
                        r.phase,
                        took(r.duration),
                        Utc::clock(r.started),
                        Utc::clock(r.started + r.duration)
                    ),
                })
                .collect();
            JobRow {
                instance,
                job,
                bars,
                window_x,
                window_width,
                lock_window,
                artifact,
            }
        })
        .collect();

    let steps: Vec<Step> = records
        .iter()
        .map(|r| Step {
            instance: r.instance.clone(),
            job: r.job.clone(),
            phase: r.phase.clone(),
            result: if r.ok {
                "ok".to_string()
            } else if r.left_to_agent {
                "left to the VM's agent (its bbr-agent.log says how it went)".to_string()
            } else {
                format!("FAILED: {}", r.detail)
            },
            started: Utc::clock(r.started),
            ended: Utc::clock(r.started + r.duration),
            took: took(r.duration),
        })
        .collect();
    let failures: Vec<Failure> = records
        .iter()
        .filter(|r| !r.ok && !r.left_to_agent)
        .map(|r| Failure {
            instance: r.instance.clone(),
            job: r.job.clone(),
            phase: r.phase.clone(),
            detail: r.detail.clone(),
            output: r.output_tail.clone(),
        })
        .collect();

    let mut context = tera::Context::new();
    context.insert("workflow", summary.workflow);
    context.insert("deployment", summary.deployment);
    let ok = summary.exit_status == 0;
    context.insert(
        "status",
        &if ok {
            "succeeded".to_string()
        } else {
            // The shell's exit code: an interrupted run's is 128 + the signal, not its bits.
            format!("failed (exit code {})", summary.exit_status)
        },
    );
    context.insert("status_class", if ok { "ok" } else { "failed" });
    context.insert("started", &Utc::rfc3339(start));
    context.insert("total", &took(span));
    context.insert(
        "artifact",
        &summary.artifact.map(|p| p.display().to_string()),
    );
    context.insert("ticks", &ticks(start, span));
    context.insert("jobs", &jobs);
    context.insert("steps", &steps);
    context.insert("failures", &failures);
    context.insert("next_step", &next_step(summary));
    // The cleanup is the next step, shown once, above.
    context.insert("errors", summary.errors);
    tera::Tera::one_off(TEMPLATE, &context, true).map_err(|e| e.to_string())
}

fn colour(r: &Record) -> &'static str {
    if r.left_to_agent {
        return "#57606a";
    }
    if !r.ok {
        return "#cf222e";
    }
    match r.phase.as_str() {
        "metadata" => "#8250df",
        "pre-backup-lock" | "pre-restore-lock" => "#bf8700",
        "backup" | "restore" => "#0969da",
        "post-backup-unlock" | "post-restore-unlock" => "#1a7f37",
        _ => "#57606a",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(job: &str, phase: &str, at_ms: u64, ms: u64, ok: bool) -> Record {
        Record {
            instance: "db/0".into(),
            job: job.into(),
            phase: phase.into(),
            started: SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + at_ms),
            duration: Duration::from_millis(ms),
            ok,
            detail: if ok {
                String::new()
            } else {
                "exit status 1".into()
            },
            bytes: None,
            files: None,
            left_to_agent: false,
            output_tail: if ok {
                String::new()
            } else {
                "stderr: <disk> & full".into()
            },
        }
    }

    fn recorded(steps: &[Record], scripts: &[(&str, &[ScriptKind])]) -> Records {
        Records {
            steps: steps.to_vec(),
            scripts: scripts
                .iter()
                .map(|(job, kinds)| (("db/0".to_string(), job.to_string()), kinds.to_vec()))
                .collect(),
        }
    }

    fn summary() -> RunSummary<'static> {
        RunSummary {
            workflow: "backup",
            deployment: "acme",
            exit_code: 0,
            exit_status: 0,
            artifact: None,
            errors: &[],
            cleanup: None,
            retry: None,
        }
    }

    #[test]
    fn a_locked_job_without_an_unlock_script_is_not_called_never_unlocked() {
        let steps = [
            record("db", "pre-backup-lock", 0, 100, true),
            record("db", "backup", 100, 200, true),
            record("api", "pre-backup-lock", 0, 100, true),
        ];
        let (lock, backup, unlock) = (
            ScriptKind::PreBackupLock,
            ScriptKind::Backup,
            ScriptKind::PostBackupUnlock,
        );
        let html = render(
            &summary(),
            &recorded(&steps, &[("db", &[lock, backup]), ("api", &[lock, unlock])]),
        )
        .unwrap();
        assert_eq!(html.matches("no unlock script").count(), 1, "{html}");
        assert_eq!(html.matches("never unlocked").count(), 1, "{html}");
    }

    /// A span no run has (times from a hostile VM) gives a few marks at once, not billions.
    #[test]
    fn a_huge_span_gives_a_few_marks() {
        let start = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let marks = ticks(start, Duration::from_secs(1 << 54));
        assert!(marks.len() <= 18, "{} marks", marks.len());
    }

    #[test]
    fn the_time_axis_marks_round_wall_clock_times_between_the_start_and_the_end() {
        // 1_000 s after the epoch is 00:16:40 UTC; the run lasts 25 s.
        let steps = [
            record("db", "backup", 0, 20_000, true),
            record("db", "post-backup-unlock", 20_000, 5_000, true),
        ];
        let html = render(&summary(), &recorded(&steps, &[])).unwrap();
        let labels: Vec<&str> = html
            .split("<span class=\"tick ")
            .skip(1)
            .map(|t| t.split('>').nth(1).unwrap().trim_end_matches("</span"))
            .collect();
        assert_eq!(
            labels,
            [
                "00:16:40", "00:16:45", "00:16:50", "00:16:55", "00:17:00", "00:17:05"
            ],
            "{html}"
        );
        assert!(
            html.contains("<td class=\"num\">00:17:00</td><td class=\"num\">00:17:05</td>"),
            "a step's start and end: {html}"
        );
        assert!(
            html.contains("backup 20.0s, 00:16:40–00:17:00 UTC"),
            "{html}"
        );
    }

    #[test]
    fn the_lock_window_runs_from_the_first_lock_to_the_last_unlock() {
        let records = [
            record("db", "pre-backup-lock", 0, 100, true),
            record("db", "backup", 100, 2_000, true),
            record("db", "post-backup-unlock", 2_100, 400, true),
            record("api", "backup", 0, 50, false),
        ];
        let summary = RunSummary {
            workflow: "backup",
            deployment: "acme",
            exit_code: 1,
            exit_status: 1,
            artifact: None,
            errors: &["a backup script failed".to_string()],
            cleanup: None,
            retry: None,
        };
        let html = render(&summary, &recorded(&records, &[])).unwrap();
        assert!(html.contains("<td class=\"num\">2.5s</td>"), "{html}");
        assert!(html.contains("not locked"));
        assert!(html.contains("failed (exit code 1)"));
        assert!(
            html.contains("stderr: &lt;disk&gt; &amp; full"),
            "output is escaped"
        );
        assert!(!html.contains("http"), "nothing is fetched");
    }
}
