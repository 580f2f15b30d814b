//! `deployment ... plan backup|restore [--json]`: the lock order of a whole deployment, over
//! every VM (which jobs lock in which step, which run side by side), its backup or restore
//! step and its unlock steps, as the workflow would run them. Each VM is described (its
//! metadata scripts run); nothing is locked, no store is made, no run lock is taken.

use std::io::Write;

use serde::Serialize;

use super::plan::{self, Planned};
use crate::cli::PlanWorkflow;
use crate::console::Console;
use crate::contract::{Mode, ScriptKind, Side};
use crate::error::AppError;
use crate::workflow::{Deployment, JobRef};

/// One job on one VM.
#[derive(Serialize)]
struct JobAt {
    instance: String,
    job: String,
}

#[derive(Serialize)]
struct DeploymentPlan<'a> {
    workflow: &'static str,
    deployment: &'a str,
    instances: Vec<String>,
    /// Whether the jobs of a step run at once (a backup's) or one after another (a restore's).
    parallel: bool,
    /// At most this many VMs are worked on at once (`--max-in-flight`).
    max_in_flight: usize,
    lock: Vec<Vec<JobAt>>,
    run: Vec<JobAt>,
    unlock: Vec<Vec<JobAt>>,
}

pub fn plan(
    dep: &mut Deployment,
    workflow: PlanWorkflow,
    json: bool,
    console: &Console,
) -> Result<i32, AppError> {
    dep.show_metadata_runs = !json;
    if let Err(errors) = dep.describe(console) {
        for e in errors {
            console.error(e.to_string());
        }
        return Ok(1);
    }
    let side = plan::side(workflow);
    let steps = plan::steps(dep, side)?;
    let instances: Vec<String> = (0..dep.len()).map(|i| dep.id(i).to_string()).collect();
    let mut out = std::io::stdout().lock();
    if json {
        let at = |r: &JobRef| JobAt {
            instance: dep.id(r.instance).to_string(),
            job: dep.job(*r).name.clone(),
        };
        let plan = DeploymentPlan {
            workflow: side.name(),
            deployment: &dep.name,
            instances,
            parallel: side.mode() == Mode::AllAtOnce,
            max_in_flight: dep.max_in_flight,
            lock: plan::labelled(&steps.lock, at),
            run: steps.run.iter().map(at).collect(),
            unlock: plan::labelled(&steps.unlock, at),
        };
        let text = serde_json::to_string_pretty(&plan).expect("plan serialises");
        writeln!(out, "{text}")?;
    } else {
        print_human(&mut out, dep, side, &steps, &instances)?;
    }
    Ok(0)
}

fn print_human(
    out: &mut impl Write,
    dep: &Deployment,
    side: Side,
    steps: &Planned,
    instances: &[String],
) -> std::io::Result<()> {
    let label = |r: &JobRef| format!("{} {}", dep.id(r.instance), dep.job(*r).name);
    let vms = match instances.len() {
        1 => "1 VM".to_string(),
        n => format!("{n} VMs"),
    };
    let title = format!(
        "{} plan for {} ({vms}: {}):",
        side.name(),
        dep.name,
        instances.join(", ")
    );
    plan::print_human(
        out,
        &title,
        side,
        [
            &plan::printed(&steps.lock, label),
            &plan::printed(std::slice::from_ref(&steps.run), label),
            &plan::printed(&steps.unlock, label),
        ],
        dep.max_in_flight,
    )?;
    if !steps.run.is_empty() && side.data() == ScriptKind::Restore {
        writeln!(
            out,
            "  (a restore runs only the jobs the backup holds an artifact for)"
        )?;
    }
    Ok(())
}
