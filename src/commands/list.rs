//! `list`: the jobs, their scripts and parsed metadata, and what is skipped and why. Every
//! job's metadata is shown even when another job's metadata script fails.

use std::io::Write;

use serde::Serialize;

use super::context::Context;
use crate::cli::ScriptArgs;
use crate::contract::ScriptKind;
use crate::error::AppError;
use crate::instance::{InstanceError, SkippedJob};
use crate::metadata::{JobMetadata, LockBefore};

#[derive(Serialize)]
struct Listing {
    jobs_root: String,
    jobs: Vec<ListedJob>,
    skipped: Vec<SkippedJob>,
}

#[derive(Serialize)]
struct ListedJob {
    name: String,
    path: String,
    scripts: Vec<ScriptKind>,
    metadata: Option<JobMetadata>,
    metadata_error: Option<String>,
    /// Scripts without an execute bit: each would fail to start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_executable: Vec<ScriptKind>,
}

pub fn list(ctx: &Context, json: bool) -> Result<i32, AppError> {
    let (_, id) = ctx.local_identity();
    let instance = ctx.instance(id.clone(), ctx.settings(&ScriptArgs::default()));
    let survey = instance.survey()?;
    let mut listing = Listing {
        jobs_root: ctx.layout.jobs_root.display().to_string(),
        jobs: Vec::new(),
        skipped: survey.ignored,
    };
    let mut failed = false;
    for (job, result) in survey.jobs {
        let (metadata, metadata_error) = match result {
            Ok(m) if m.skip_bbr_scripts => {
                listing.skipped.push(SkippedJob {
                    job: job.name.clone(),
                    reason: "its metadata sets skip_bbr_scripts: true".into(),
                });
                continue;
            }
            Ok(m) => (Some(m), None),
            Err(e) => {
                failed = true;
                if let InstanceError::MetadataScript { report, .. } = &e {
                    ctx.console.script_output(&id, report);
                }
                (None, Some(e.to_string()))
            }
        };
        listing.jobs.push(ListedJob {
            name: job.name.clone(),
            path: job.dir.display().to_string(),
            scripts: job.scripts.keys().copied().collect(),
            metadata,
            metadata_error,
            not_executable: instance.not_executable(&job),
        });
    }
    if json {
        let json = serde_json::to_string_pretty(&listing).expect("listing serialises");
        writeln!(std::io::stdout().lock(), "{json}")?;
    } else {
        print_human(&listing)?;
    }
    Ok(i32::from(failed))
}

/// The listing for a terminal, written in one go (a line at a time costs a syscall a line).
fn print_human(listing: &Listing) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if listing.jobs.is_empty() {
        writeln!(out, "No BBR jobs under {}.", listing.jobs_root)?;
    } else {
        writeln!(out, "BBR jobs under {}:", listing.jobs_root)?;
    }
    for job in &listing.jobs {
        let scripts: Vec<&str> = job.scripts.iter().map(|k| k.file_name()).collect();
        writeln!(out, "  {}", job.name)?;
        writeln!(out, "    scripts: {}", scripts.join(", "))?;
        if !job.not_executable.is_empty() {
            let names: Vec<&str> = job.not_executable.iter().map(|k| k.file_name()).collect();
            writeln!(
                out,
                "    NOT EXECUTABLE: {} (each would fail to start: the release must ship it executable)",
                names.join(", ")
            )?;
        }
        if let Some(error) = &job.metadata_error {
            writeln!(out, "    metadata: ERROR: {error}")?;
        }
        if let Some(md) = &job.metadata {
            for (key, list) in [
                (
                    "backup_should_be_locked_before",
                    &md.backup_should_be_locked_before,
                ),
                (
                    "restore_should_be_locked_before",
                    &md.restore_should_be_locked_before,
                ),
            ] {
                if !list.is_empty() {
                    writeln!(out, "    {key}: {}", describe(list))?;
                }
            }
            if let Some(name) = &md.backup_name {
                writeln!(out, "    backup_name: {name} (discontinued: ignored)")?;
            }
            if let Some(name) = &md.restore_name {
                writeln!(
                    out,
                    "    restore_name: {name} (discontinued: restore will refuse this job)"
                )?;
            }
        }
    }
    if !listing.skipped.is_empty() {
        writeln!(out, "Skipped:")?;
        for s in &listing.skipped {
            writeln!(out, "  {}: {}", s.job, s.reason)?;
        }
    }
    out.flush()
}

fn describe(list: &[LockBefore]) -> String {
    list.iter()
        .map(|l| format!("{} (release {})", l.job_name, l.release))
        .collect::<Vec<_>>()
        .join(", ")
}
