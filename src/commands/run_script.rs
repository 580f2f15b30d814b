//! `run <SCRIPT>`: one kind of script by hand, for the chosen jobs, with exactly the
//! environment the workflow would give it, output streamed live.

use super::context::Context;
use crate::artifact::store::Store;
use crate::cli::RunArgs;
use crate::console::Console;
use crate::contract::Mode;
use crate::error::AppError;
use crate::instance::{Instance, InstanceError, LocalInstance, ScriptStep};
use crate::layout::Layout;

pub fn run(ctx: &Context, args: &RunArgs) -> Result<i32, AppError> {
    let (_, id) = ctx.local_identity();
    let layout = Layout {
        // Absolute: scripts run in their job's directory, not ours.
        store: match &args.artifact_dir {
            Some(dir) => std::path::absolute(dir).map_err(AppError::Output)?,
            None => ctx.layout.store.clone(),
        },
        ..ctx.layout.clone()
    };
    // Output is what the operator came for: always live.
    let console = Console::new(true, ctx.console.format());
    let mut instance = LocalInstance::new(
        id.clone(),
        layout.clone(),
        ctx.settings(&args.scripts),
        console.script_lines(),
    );
    let jobs = instance.discover_only()?;
    let kind = args.script;
    let chosen: Vec<String> = if args.jobs.is_empty() {
        jobs.iter()
            .filter(|j| j.has(kind))
            .map(|j| j.name.clone())
            .collect()
    } else {
        for name in &args.jobs {
            match jobs.iter().find(|j| &j.name == name) {
                Some(job) if job.has(kind) => {}
                Some(job) => {
                    let has: Vec<String> = job.scripts.keys().map(|k| k.to_string()).collect();
                    return Err(AppError::Usage(format!(
                        "job '{name}' has no bin/bbr/{kind} (it has {})",
                        has.join(", ")
                    )));
                }
                None => {
                    let mut known: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
                    let more = known.len().saturating_sub(10);
                    known.truncate(10);
                    return Err(AppError::Usage(format!(
                        "there is no BBR job '{name}' under {} (its BBR jobs: {}{}); `bbr-agent list` shows them, and what it skipped and why",
                        layout.jobs_root.display(),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        },
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        }
                    )));
                }
            }
        }
        args.jobs.clone()
    };
    if chosen.is_empty() {
        console.info(format!(
            "No job has bin/bbr/{kind} under {}.",
            layout.jobs_root.display()
        ));
        return Ok(0);
    }
    if kind.uses_artifact_directory() {
        // Made as a run makes it (root only: artifacts hold credentials and data), and left
        // for the operator to look at.
        let store = Store::new(&layout.store);
        if !store.exists() {
            store
                .create()
                .map_err(|e| AppError::Instance(InstanceError::Store(e)))?;
        }
        console.info(format!(
            "Artifact directories are under {} (remove it, or run backup-cleanup, when done)",
            layout.store.display()
        ));
    }
    let reports = instance.run_scripts(&ScriptStep {
        kind,
        jobs: chosen,
        mode: Mode::OneAtATime,
        after_backup_successful: Some(args.after_backup_successful),
    });
    for report in &reports {
        console.script(&id, report);
    }
    Ok(i32::from(!reports.iter().all(|r| r.success())))
}
