//! The run report: `report.html` in the artifact directory, rendered with tera from what the
//! console recorded. Per instance and job, a timeline of lock, backup or restore, and unlock;
//! the lock window (from the first lock to the last unlock: how long the system was
//! unavailable); bytes and files per artifact; failures with the end of their output.
//! Self-contained: inline CSS and SVG, nothing fetched.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::console::{Record, file_count, human_bytes};
use crate::duration::format as took;
use crate::timestamp::Utc;

const TEMPLATE: &str = include_str!("report.html.tera");

/// What the report is about.
pub struct RunSummary<'a> {
    pub workflow: &'a str,
    pub deployment: &'a str,
    pub exit_code: i32,
    pub artifact: Option<&'a Path>,
    pub errors: &'a [String],
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
    took: String,
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
pub fn render(summary: &RunSummary<'_>, records: &[Record]) -> Result<String, String> {
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
                (Some(_), None) => (0.0, 0.0, "never unlocked".to_string()),
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
                    label: format!("{} {}", r.phase, took(r.duration)),
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
            } else {
                format!("FAILED: {}", r.detail)
            },
            took: took(r.duration),
        })
        .collect();
    let failures: Vec<Failure> = records
        .iter()
        .filter(|r| !r.ok)
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
    let ok = summary.exit_code == 0;
    context.insert(
        "status",
        &if ok {
            "succeeded".to_string()
        } else {
            format!("failed (exit code {})", summary.exit_code)
        },
    );
    context.insert("status_class", if ok { "ok" } else { "failed" });
    context.insert("started", &Utc::rfc3339(start));
    context.insert("total", &took(span));
    context.insert(
        "artifact",
        &summary.artifact.map(|p| p.display().to_string()),
    );
    context.insert("jobs", &jobs);
    context.insert("steps", &steps);
    context.insert("failures", &failures);
    context.insert("errors", summary.errors);
    tera::Tera::one_off(TEMPLATE, &context, true).map_err(|e| e.to_string())
}

/// Writes the report as `dir/name`; a report that cannot be written is a warning, not a
/// failed run.
pub fn write(
    dir: &Path,
    name: &str,
    summary: &RunSummary<'_>,
    records: &[Record],
) -> Result<std::path::PathBuf, String> {
    let html = render(summary, records)?;
    let path = dir.join(name);
    std::fs::write(&path, html).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

fn colour(r: &Record) -> &'static str {
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
            output_tail: if ok {
                String::new()
            } else {
                "stderr: <disk> & full".into()
            },
        }
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
            artifact: None,
            errors: &["a backup script failed".to_string()],
        };
        let html = render(&summary, &records).unwrap();
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
