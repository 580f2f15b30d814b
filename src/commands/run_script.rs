//! `run <SCRIPT>`: one kind of script by hand, for the chosen jobs, with exactly the
//! environment the workflow would give it, output streamed live. Nothing is unlocked after a
//! lock run so: each job it ran for is named on stderr with the command that unlocks it.

use super::context::Context;
use crate::artifact::store::Store;
use crate::cli::RunArgs;
use crate::console::Console;
use crate::contract::Mode;
use crate::contract::ScriptKind;
use crate::error::AppError;
use crate::instance::{
    Instance, InstanceError, LocalInstance, ScriptReport, ScriptStep, local_cleanup_via,
};
use crate::layout::Layout;
use crate::shell_quote::quote;

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
        console.script_events(),
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
    // A lock run by hand stays until its unlock is run: the operator may not know, so each
    // job is named with the exact command (a failed lock may have locked in part).
    if let Some(unlock) = kind.unlock_releasing() {
        let via = local_cleanup_via(&ctx.layout);
        for report in &reports {
            let has_unlock = jobs.iter().any(|j| j.name == report.job && j.has(unlock));
            if let Some(line) = still_locked(&via, report, unlock, has_unlock) {
                console.warn(line);
            }
        }
    }
    Ok(i32::from(!reports.iter().all(|r| r.success())))
}

/// The line that says `report`'s job is (or may be) locked after its lock ran by hand, and
/// what unlocks it (`via`: `bbr-agent` with the options that find this VM's jobs); `None` for
/// a lock that never started.
fn still_locked(
    via: &str,
    report: &ScriptReport,
    unlock: ScriptKind,
    has_unlock: bool,
) -> Option<String> {
    use crate::exec::ScriptEnd;
    let job = crate::printable::printable(&report.job, 200);
    let lock = report.kind;
    let state = match &report.end {
        ScriptEnd::NotStarted(_) | ScriptEnd::LeftToAgent => return None,
        end if end.success() => {
            format!("{job} is locked (its {lock} ran by hand, and nothing unlocks it)")
        }
        end => format!(
            "{job} may be locked in part (its {lock} ran by hand and failed: {})",
            end.describe()
        ),
    };
    // No backup ran after a lock by hand: the unlock is told so, as BBR tells it after a
    // failed backup.
    let after = match unlock {
        ScriptKind::PostBackupUnlock => " --after-backup-successful false",
        _ => "",
    };
    Some(match has_unlock {
        // `--job=`: a name that starts with `-` is still the option's value.
        true if !report.job.chars().any(char::is_control) => format!(
            "{state}: unlock it with `{via} run {unlock} --job={}{after}`",
            quote(&report.job)
        ),
        true => format!(
            "{state}: unlock it with `{via} run {unlock} --job=<its name>{after}` (the name holds characters a terminal cannot show)"
        ),
        false => format!("{state}, and it has no bin/bbr/{unlock}: undo the lock by hand"),
    })
}
