//! What every workflow does last: remove the stores it made on the VMs, and write the run
//! report.

use std::path::Path;

use super::deployment::Deployment;
use super::outcome::Outcome;
use crate::console::Console;
use crate::contract::exit_bits;
use crate::report::{self, RunSummary};

/// Removes every VM's store; one that cannot be removed is a cleanup failure.
pub(super) fn remove_stores(dep: &mut Deployment, outcome: &mut Outcome) {
    if let Err(errors) = dep.each_instance(|i| i.remove_store()) {
        outcome.fail_all(exit_bits::CLEANUP, errors);
    }
}

/// The HTML run report.
pub(super) fn report_html(
    workflow: &str,
    dep: &Deployment,
    outcome: &Outcome,
    artifact: &Path,
    console: &Console,
) -> Result<String, String> {
    let errors: Vec<String> = outcome.failures().iter().map(|f| f.to_string()).collect();
    let summary = RunSummary {
        workflow,
        deployment: &dep.name,
        exit_code: outcome.exit_code(),
        exit_status: crate::interrupt::exit_status(outcome.exit_code()),
        artifact: Some(artifact),
        errors: &errors,
        cleanup: outcome.cleanup(),
        retry: outcome.retry(),
    };
    report::render(&summary, &console.records())
}

/// Writes the HTML run report as the local file `path` (a restore's `--report`); one that
/// cannot be written is a warning, not a failed run.
pub(super) fn write_report(
    path: &Path,
    workflow: &str,
    dep: &Deployment,
    outcome: &Outcome,
    artifact: &Path,
    console: &Console,
) {
    let written = report_html(workflow, dep, outcome, artifact, console).and_then(|html| {
        std::fs::write(path, html).map_err(|e| format!("cannot write {}: {e}", path.display()))
    });
    if let Err(e) = written {
        console.warn(e);
    }
}
