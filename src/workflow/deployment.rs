//! A deployment: its instances, what each holds, one lock order over all of their jobs, and
//! running one kind of script across them with the console told of every result.

use std::collections::{BTreeMap, BTreeSet};

use crate::console::Console;
use crate::contract::ScriptKind;
use crate::instance::{Description, Instance, InstanceId, JobInfo, ScriptReport, UnlockContext};
use crate::metadata::LockBefore;
use crate::order::{CycleError, OrderNode, Steps, order};

use super::one_for_all::OneForAll;
use super::parallel::bounded_map;

/// BBR's default for `--max-in-flight`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10;

/// A job on an instance: indices into the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct JobRef {
    pub instance: usize,
    pub job: usize,
}

/// Which metadata list orders the locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockSide {
    Backup,
    Restore,
}

pub struct Deployment {
    pub name: String,
    pub instances: Vec<Box<dyn Instance>>,
    /// One per instance, after [`Deployment::describe`].
    pub descriptions: Vec<Description>,
    /// How many instances may be worked on at once.
    pub max_in_flight: usize,
    /// The command that cleans up after a run of this deployment, without its last word
    /// (`backup-cleanup` or `restore-cleanup`): named as a failed run's next step.
    pub cleanup_via: Option<String>,
    /// Whether [`Deployment::describe`] gives the console a line (or event) per metadata
    /// script, as for every other script; off where stdout holds JSON (`plan --json`).
    pub show_metadata_runs: bool,
    /// The jobs backed up once and restored to all (`bbr.backup_one_restore_all`): a
    /// director's knowledge, empty otherwise.
    pub one_for_all: OneForAll,
}

impl Deployment {
    pub fn new(name: impl Into<String>, instances: Vec<Box<dyn Instance>>) -> Deployment {
        Deployment {
            name: name.into(),
            instances,
            descriptions: Vec::new(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            cleanup_via: None,
            show_metadata_runs: true,
            one_for_all: OneForAll::default(),
        }
    }

    /// Names `command` as the cleanup after a failed run (see [`Deployment::cleanup_via`]).
    pub fn with_cleanup_via(mut self, command: Option<String>) -> Deployment {
        self.cleanup_via = command;
        self
    }

    /// Says which jobs are backed up once and restored to all (see [`OneForAll`]).
    pub fn with_one_for_all(mut self, one_for_all: OneForAll) -> Deployment {
        self.one_for_all = one_for_all;
        self
    }

    /// Applies `f` to every chosen instance, at most `max_in_flight` at a time, in order.
    pub fn on_instances<X: Send, R: Send>(
        &mut self,
        chosen: impl IntoIterator<Item = (usize, X)>,
        f: impl Fn(usize, &mut dyn Instance, X) -> R + Sync,
    ) -> Vec<(usize, R)> {
        let mut extras: BTreeMap<usize, X> = chosen.into_iter().collect();
        let work: Vec<_> = self
            .instances
            .iter_mut()
            .enumerate()
            .filter_map(|(i, instance)| extras.remove(&i).map(|x| (i, instance, x)))
            .collect();
        bounded_map(work, self.max_in_flight, |(i, instance, x)| {
            (i, f(i, instance.as_mut(), x))
        })
    }

    pub(super) fn all(&self) -> Vec<(usize, ())> {
        (0..self.instances.len()).map(|i| (i, ())).collect()
    }

    pub fn id(&self, instance: usize) -> &InstanceId {
        self.instances[instance].id()
    }

    /// Claims every instance for this run (their run locks), before anything else happens.
    pub fn begin(&mut self) -> Result<(), Vec<String>> {
        self.each_instance(|i| i.begin())
    }

    /// [`Deployment::begin`], each failure with its instance's position: for a workflow that
    /// goes on with the instances it could claim.
    pub fn begin_each(&mut self) -> Vec<(usize, String)> {
        self.failures(|i| i.begin())
    }

    /// Leaves the instances at `positions` out of the rest of the run (their sessions end);
    /// before [`Deployment::describe`], which describes the instances that are left.
    pub fn leave_out(&mut self, positions: &BTreeSet<usize>) {
        let mut position = 0;
        self.instances.retain(|_| {
            position += 1;
            !positions.contains(&(position - 1))
        });
        self.descriptions.clear();
    }

    /// Finds every instance's jobs and runs their metadata scripts, all instances at once.
    pub fn describe(&mut self, console: &Console) -> Result<(), Vec<String>> {
        self.describe_with(false, console)
    }

    /// [`Deployment::describe`] for a cleanup: a job's metadata failing is one of its
    /// description's `problems`, not an error (see [`Instance::describe_for_cleanup`]).
    pub fn describe_for_cleanup(&mut self, console: &Console) -> Result<(), Vec<String>> {
        self.describe_with(true, console)
    }

    fn describe_with(&mut self, for_cleanup: bool, console: &Console) -> Result<(), Vec<String>> {
        let all = self.all();
        let results = self.on_instances(all, |_, instance, ()| {
            if for_cleanup {
                instance.describe_for_cleanup()
            } else {
                instance.describe()
            }
        });
        let mut errors = Vec::new();
        self.descriptions.clear();
        for (i, result) in results {
            match result {
                Ok(mut description) => {
                    for report in std::mem::take(&mut description.metadata_runs) {
                        if self.show_metadata_runs {
                            console.script(self.id(i), &report);
                        } else if !report.success() {
                            console.script_output(self.id(i), &report);
                        }
                    }
                    console.described(self.id(i), &description.jobs);
                    self.descriptions.push(description)
                }
                Err(e) => {
                    if let crate::instance::InstanceError::MetadataScript { report, .. } = &e {
                        if self.show_metadata_runs {
                            console.script(self.id(i), report);
                        } else {
                            console.script_output(self.id(i), report);
                        }
                    }
                    errors.push(format!("{}: {e}", self.id(i)));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    pub fn job(&self, r: JobRef) -> &JobInfo {
        &self.descriptions[r.instance].jobs[r.job]
    }

    /// Every job of every instance, instance by instance.
    pub fn jobs(&self) -> Vec<JobRef> {
        self.descriptions
            .iter()
            .enumerate()
            .flat_map(|(instance, d)| (0..d.jobs.len()).map(move |job| JobRef { instance, job }))
            .collect()
    }

    /// Every job that has `kind`.
    pub fn jobs_with(&self, kind: ScriptKind) -> Vec<JobRef> {
        self.jobs()
            .into_iter()
            .filter(|&r| self.job(r).has(kind))
            .collect()
    }

    /// The lock steps over every job of the deployment, as job references.
    pub fn lock_steps(&self, side: LockSide) -> Result<Vec<Vec<JobRef>>, CycleError> {
        let refs = self.jobs();
        let nodes: Vec<OrderNode<'_>> = refs
            .iter()
            .map(|&r| {
                let job = self.job(r);
                let before: &[LockBefore] = match side {
                    LockSide::Backup => &job.metadata.backup_should_be_locked_before,
                    LockSide::Restore => &job.metadata.restore_should_be_locked_before,
                };
                OrderNode {
                    label: format!("{} {}", self.id(r.instance), job.name),
                    job_name: &job.name,
                    release: job.release.as_deref(),
                    locks_before: before,
                }
            })
            .collect();
        let Steps(steps) = order(&nodes)?;
        Ok(steps
            .into_iter()
            .map(|step| step.into_iter().map(|n| refs[n]).collect())
            .collect())
    }

    /// Runs `kind` for `jobs`. In parallel: every instance at once, and the jobs of an
    /// instance at once. Serially: one job after another, in the order given. Returns
    /// whether every script that ran succeeded.
    pub fn run(
        &mut self,
        kind: ScriptKind,
        jobs: &[JobRef],
        parallel: bool,
        unlock: Option<UnlockContext>,
        console: &Console,
    ) -> bool {
        let reports: Vec<(usize, ScriptReport)> = if parallel {
            let mut by_instance: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for &r in jobs.iter().filter(|&&r| self.job(r).has(kind)) {
                by_instance
                    .entry(r.instance)
                    .or_default()
                    .push(self.job(r).name.clone());
            }
            let results = self.on_instances(by_instance, |_, instance, names| {
                let reports = instance.run_scripts(kind, &names, true, unlock);
                for report in &reports {
                    console.script(instance.id(), report);
                }
                reports
            });
            results
                .into_iter()
                .flat_map(|(i, reports)| reports.into_iter().map(move |r| (i, r)))
                .collect()
        } else {
            let mut reports = Vec::new();
            let chosen: Vec<(JobRef, String)> = jobs
                .iter()
                .filter(|&&r| self.job(r).has(kind))
                .map(|&r| (r, self.job(r).name.clone()))
                .collect();
            for (r, name) in chosen {
                for report in self.instances[r.instance].run_scripts(kind, &[name], false, unlock) {
                    console.script(self.id(r.instance), &report);
                    reports.push((r.instance, report));
                }
            }
            reports
        };
        reports.iter().all(|(_, r)| r.success())
    }

    /// Runs `kind` step by step; stops after the first step with a failure. Returns whether
    /// every step succeeded.
    pub fn run_steps(
        &mut self,
        kind: ScriptKind,
        steps: &[Vec<JobRef>],
        parallel: bool,
        unlock: Option<UnlockContext>,
        console: &Console,
    ) -> bool {
        steps
            .iter()
            .all(|step| self.run(kind, step, parallel, unlock, console))
    }

    /// Runs `kind` for every step, whatever fails: unlocking must reach every job.
    pub fn run_every_step(
        &mut self,
        kind: ScriptKind,
        steps: &[Vec<JobRef>],
        parallel: bool,
        unlock: Option<UnlockContext>,
        console: &Console,
    ) -> bool {
        let mut ok = true;
        for step in steps {
            ok &= self.run(kind, step, parallel, unlock, console);
        }
        ok
    }

    /// Applies `op` to every instance; returns the errors, each naming its instance.
    pub fn each_instance(
        &mut self,
        op: impl Fn(&mut dyn Instance) -> Result<(), crate::instance::InstanceError> + Sync,
    ) -> Result<(), Vec<String>> {
        let errors: Vec<String> = self.failures(op).into_iter().map(|(_, e)| e).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Applies `op` to every instance; returns the failures, each with the instance's
    /// position and an error naming it.
    fn failures(
        &mut self,
        op: impl Fn(&mut dyn Instance) -> Result<(), crate::instance::InstanceError> + Sync,
    ) -> Vec<(usize, String)> {
        let all = self.all();
        self.on_instances(all, |_, instance, ()| {
            op(instance).map_err(|e| format!("{}: {e}", instance.id()))
        })
        .into_iter()
        .filter_map(|(i, r)| r.err().map(|e| (i, e)))
        .collect()
    }
}

/// Sessions end all at once, not one after another as the instances drop: a fleet's
/// goodbyes are each a round trip and an exit to wait for.
impl Drop for Deployment {
    fn drop(&mut self) {
        let all = self.all();
        self.on_instances(all, |_, instance, ()| instance.close());
    }
}
