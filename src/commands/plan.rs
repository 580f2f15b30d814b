//! `plan backup|restore`: the steps a run would take, in order, without running them. The
//! steps and their rendering are shared with `deployment ... plan` (`deployment_plan`).

use std::io::Write;

use serde::Serialize;

use super::context::Context;
use crate::cli::{PlanWorkflow, ScriptArgs};
use crate::contract::{Mode, ScriptKind, Side};
use crate::error::AppError;
use crate::order::CycleError;
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

/// The side a workflow plans.
pub(super) fn side(workflow: PlanWorkflow) -> Side {
    match workflow {
        PlanWorkflow::Backup => Side::Backup,
        PlanWorkflow::Restore => Side::Restore,
    }
}

/// A plan's steps as job references, each holding only the jobs that have its script, empty
/// steps left out: the lock steps, the one run step, the unlock steps (the lock steps
/// reversed).
pub(super) struct Planned {
    pub lock: Vec<Vec<JobRef>>,
    pub run: Vec<JobRef>,
    pub unlock: Vec<Vec<JobRef>>,
}

pub(super) fn steps(dep: &Deployment, side: Side) -> Result<Planned, CycleError> {
    let order = dep.lock_steps(side)?;
    let having = |kind: ScriptKind, step: &[JobRef]| -> Vec<JobRef> {
        step.iter()
            .copied()
            .filter(|&r| dep.job(r).has(kind))
            .collect()
    };
    let non_empty = |kind, steps: &mut dyn Iterator<Item = &[JobRef]>| -> Vec<Vec<JobRef>> {
        steps
            .map(|s| having(kind, s))
            .filter(|s| !s.is_empty())
            .collect()
    };
    Ok(Planned {
        lock: non_empty(side.lock(), &mut order.lock_order()),
        run: having(side.data(), &dep.jobs()),
        unlock: non_empty(side.unlock(), &mut order.unlock_order()),
    })
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
    let side = side(workflow);
    let steps = steps(&dep, side)?;
    let name = |r: &JobRef| dep.job(*r).name.clone();
    let run = std::slice::from_ref(&steps.run);
    let plan = Plan {
        workflow: side.name(),
        lock: labelled(&steps.lock, name),
        run: steps.run.iter().map(name).collect(),
        unlock: labelled(&steps.unlock, name),
    };
    let mut out = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string_pretty(&plan).expect("plan serialises");
        writeln!(out, "{text}")?;
    } else {
        let title = format!("{} plan for {} ({}):", plan.workflow, dep.name, dep.id(0));
        print_human(
            &mut out,
            &title,
            side,
            [
                &printed(&steps.lock, name),
                &printed(run, name),
                &printed(&steps.unlock, name),
            ],
            usize::MAX,
        )?;
    }
    Ok(0)
}

/// Each step's jobs, as `label` names them.
pub(super) fn labelled<T>(steps: &[Vec<JobRef>], label: impl Fn(&JobRef) -> T) -> Vec<Vec<T>> {
    steps
        .iter()
        .map(|step| step.iter().map(&label).collect())
        .collect()
}

/// One step as printed: its jobs' names, and on how many VMs they are.
pub(super) struct Printed {
    pub names: Vec<String>,
    pub vms: usize,
}

/// Numbered steps, each with its script, how its jobs run and their names; `lock`, `run` and
/// `unlock` hold the steps. A step of several jobs run at once over more VMs than
/// `max_in_flight` says that they run in batches. Written through `out`, so a closed pipe
/// (`| head`) is an error to report, not a panic.
pub(super) fn print_human(
    out: &mut impl Write,
    title: &str,
    side: Side,
    [lock, run, unlock]: [&[Printed]; 3],
    max_in_flight: usize,
) -> std::io::Result<()> {
    // What "at once" means is what a reader of a plan needs: which jobs run side by side.
    let how = |step: &Printed| match (step.names.len(), side.mode()) {
        (1, _) => String::new(),
        (n, Mode::AllAtOnce) if step.vms > max_in_flight => {
            let vms = match max_in_flight {
                1 => "1 VM".to_string(),
                m => format!("{m} VMs"),
            };
            format!(" ({n} jobs, in parallel on at most {vms} at a time)")
        }
        (n, Mode::AllAtOnce) => format!(" (all {n} jobs in parallel)"),
        (_, Mode::OneAtATime) => " (one job at a time)".to_string(),
    };
    writeln!(out, "{title}")?;
    let mut n = 0;
    for (kind, steps) in [
        (side.lock(), lock),
        (side.data(), run),
        (side.unlock(), unlock),
    ] {
        for step in steps.iter().filter(|s| !s.names.is_empty()) {
            n += 1;
            writeln!(out, "  {n}. {kind}{}: {}", how(step), step.names.join(", "))?;
        }
    }
    if n == 0 {
        writeln!(out, "  nothing to run")?;
    }
    Ok(())
}

/// Each step as printed, its jobs named by `label`.
pub(super) fn printed(steps: &[Vec<JobRef>], label: impl Fn(&JobRef) -> String) -> Vec<Printed> {
    steps
        .iter()
        .map(|step| Printed {
            names: step.iter().map(&label).collect(),
            vms: step
                .iter()
                .map(|r| r.instance)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
        })
        .collect()
}
