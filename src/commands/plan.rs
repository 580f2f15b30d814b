//! `plan backup|restore`: the steps a run would take, in order, without running them.

use std::io::Write;

use serde::Serialize;

use super::context::Context;
use crate::cli::{PlanWorkflow, ScriptArgs};
use crate::contract::{Mode, ScriptKind, Side};
use crate::error::AppError;
use crate::workflow::{Deployment, JobRef};

#[derive(Serialize)]
struct Plan {
    workflow: &'static str,
    /// Lock steps in order; the jobs of a step run at once (backup) or in turn (restore).
    lock: Vec<Vec<String>>,
    /// The backup or restore scripts.
    run: Vec<String>,
    /// Unlock steps in order: the lock steps reversed.
    unlock: Vec<Vec<String>>,
}

pub fn plan(ctx: &Context, workflow: PlanWorkflow, json: bool) -> Result<i32, AppError> {
    let mut dep = ctx.deployment(&ScriptArgs::default());
    dep.show_metadata_runs = !json;
    if let Err(errors) = dep.describe(&ctx.console) {
        for e in errors {
            ctx.console.error(e.to_string());
        }
        return Ok(1);
    }
    let side = match workflow {
        PlanWorkflow::Backup => Side::Backup,
        PlanWorkflow::Restore => Side::Restore,
    };
    let (lock, run, unlock, name) = (side.lock(), side.data(), side.unlock(), side.name());
    let steps = dep.lock_steps(side)?;
    let names = |kind: ScriptKind, step: &[JobRef]| -> Vec<String> {
        step.iter()
            .filter(|&&r| dep.job(r).has(kind))
            .map(|&r| dep.job(r).name.clone())
            .collect()
    };
    let non_empty = |kind, steps: &mut dyn Iterator<Item = &[JobRef]>| -> Vec<Vec<String>> {
        steps
            .map(|s| names(kind, s))
            .filter(|s| !s.is_empty())
            .collect()
    };
    let plan = Plan {
        workflow: name,
        lock: non_empty(lock, &mut steps.lock_order()),
        run: names(run, &dep.jobs()),
        unlock: non_empty(unlock, &mut steps.unlock_order()),
    };
    let mut out = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string_pretty(&plan).expect("plan serialises");
        writeln!(out, "{text}")?;
    } else {
        print_human(&mut out, &dep, &plan, side)?;
    }
    Ok(0)
}

/// Written through `out`, so a closed pipe (`| head`) is an error to report, not a panic.
fn print_human(
    out: &mut impl Write,
    dep: &Deployment,
    plan: &Plan,
    side: Side,
) -> std::io::Result<()> {
    // What "at once" means is what a reader of a plan needs: which jobs run side by side.
    let how = |jobs: usize| match (jobs, side.mode()) {
        (1, _) => String::new(),
        (n, Mode::AllAtOnce) => format!(" (all {n} jobs in parallel)"),
        (_, Mode::OneAtATime) => " (one job at a time)".to_string(),
    };
    writeln!(
        out,
        "{} plan for {} ({}):",
        plan.workflow,
        dep.name,
        dep.id(0)
    )?;
    let mut n = 0;
    for (kind, steps) in [
        (side.lock(), &plan.lock),
        (side.data(), &vec![plan.run.clone()]),
        (side.unlock(), &plan.unlock),
    ] {
        for step in steps.iter().filter(|s| !s.is_empty()) {
            n += 1;
            writeln!(out, "  {n}. {kind}{}: {}", how(step.len()), step.join(", "))?;
        }
    }
    if n == 0 {
        writeln!(out, "  nothing to run")?;
    }
    Ok(())
}
