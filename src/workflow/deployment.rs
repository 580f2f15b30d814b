//! A deployment: its instances, what each holds, one lock order over all of their jobs, and
//! running one kind of script across them with the console told of every result.

use std::collections::{BTreeMap, BTreeSet};

use crate::console::Console;
use crate::contract::{Mode, ScriptKind, Side};
use crate::instance::{
    Description, Instance, InstanceError, InstanceId, JobInfo, ScriptReport, ScriptStep,
};
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

/// What failed on one instance of the deployment, as data: the instance, and its error (a
/// failed script's carries the job, the script and its report). Made text only where the
/// workflow reports it.
#[derive(Debug, thiserror::Error)]
#[error("{instance}: {error}")]
pub struct InstanceFailure {
    pub instance: InstanceId,
    #[source]
    pub error: Box<InstanceError>,
}

/// A script that failed on an instance of the deployment: the instance and the script's
/// report (its job, kind and end), kept as data for the run's last lines.
#[derive(Debug, Clone)]
pub struct FailedScript {
    pub instance: InstanceId,
    pub report: ScriptReport,
}

impl std::fmt::Display for FailedScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} failed ({})",
            self.instance,
            self.report.job,
            self.report.kind,
            self.report.end.describe()
        )
    }
}

/// One instance of the deployment and, once [`Deployment::describe`] had it, what it holds:
/// kept together, so a description cannot drift to another instance's place when one fails.
struct Member {
    instance: Box<dyn Instance>,
    description: Option<Description>,
}

pub struct Deployment {
    pub name: String,
    members: Vec<Member>,
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
    /// The instances whose unlocks were left to their agent (see [`Deployment::left_to_agents`]).
    left_to_agents: BTreeSet<usize>,
}

impl Deployment {
    pub fn new(name: impl Into<String>, instances: Vec<Box<dyn Instance>>) -> Deployment {
        Deployment {
            name: name.into(),
            members: instances
                .into_iter()
                .map(|instance| Member {
                    instance,
                    description: None,
                })
                .collect(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            cleanup_via: None,
            show_metadata_runs: true,
            one_for_all: OneForAll::default(),
            left_to_agents: BTreeSet::new(),
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
            .members
            .iter_mut()
            .enumerate()
            .filter_map(|(i, m)| extras.remove(&i).map(|x| (i, &mut m.instance, x)))
            .collect();
        bounded_map(work, self.max_in_flight, |(i, instance, x)| {
            (i, f(i, instance.as_mut(), x))
        })
    }

    pub(super) fn all(&self) -> Vec<(usize, ())> {
        (0..self.members.len()).map(|i| (i, ())).collect()
    }

    /// How many instances the deployment has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn id(&self, instance: usize) -> &InstanceId {
        self.members[instance].instance.id()
    }

    /// The instance at `position`, for an operation on it alone.
    pub fn instance(&mut self, position: usize) -> &mut dyn Instance {
        self.members[position].instance.as_mut()
    }

    /// What each described instance holds, with its position.
    pub fn descriptions(&self) -> impl Iterator<Item = (usize, &Description)> {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.description.as_ref().map(|d| (i, d)))
    }

    /// What the instance at `position` holds, once it was described.
    pub fn description(&self, position: usize) -> Option<&Description> {
        self.members[position].description.as_ref()
    }

    /// Claims every instance for this run (their run locks), before anything else happens.
    pub fn begin(&mut self) -> Result<(), Vec<InstanceFailure>> {
        self.each_instance(|i| i.begin())
    }

    /// [`Deployment::begin`], each failure with its instance's position: for a workflow that
    /// goes on with the instances it could claim.
    pub fn begin_each(&mut self) -> Vec<(usize, InstanceFailure)> {
        self.failures(|i| i.begin())
    }

    /// Leaves the instances at `positions` out of the rest of the run (their sessions end);
    /// before [`Deployment::describe`], which describes the instances that are left.
    pub fn leave_out(&mut self, positions: &BTreeSet<usize>) {
        let mut position = 0;
        self.members.retain(|_| {
            position += 1;
            !positions.contains(&(position - 1))
        });
        for m in &mut self.members {
            m.description = None;
        }
    }

    /// Finds every instance's jobs and runs their metadata scripts, all instances at once.
    pub fn describe(&mut self, console: &Console) -> Result<(), Vec<InstanceFailure>> {
        self.describe_with(false, console)
    }

    /// [`Deployment::describe`] for a cleanup: a job's metadata failing is one of its
    /// description's `problems`, not an error (see [`Instance::describe_for_cleanup`]).
    pub fn describe_for_cleanup(&mut self, console: &Console) -> Result<(), Vec<InstanceFailure>> {
        self.describe_with(true, console)
    }

    fn describe_with(
        &mut self,
        for_cleanup: bool,
        console: &Console,
    ) -> Result<(), Vec<InstanceFailure>> {
        let all = self.all();
        let results = self.on_instances(all, |_, instance, ()| {
            if for_cleanup {
                instance.describe_for_cleanup()
            } else {
                instance.describe()
            }
        });
        let mut errors = Vec::new();
        for m in &mut self.members {
            m.description = None;
        }
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
                    self.members[i].description = Some(description);
                }
                Err(error) => {
                    // Local or through a driver: the same typed failure, with its report.
                    if let InstanceError::MetadataScript { report, .. } = &error {
                        if self.show_metadata_runs {
                            console.script(self.id(i), report);
                        } else {
                            console.script_output(self.id(i), report);
                        }
                    }
                    errors.push(InstanceFailure {
                        instance: self.id(i).clone(),
                        error: Box::new(error),
                    });
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
        let description = self.members[r.instance].description.as_ref();
        &description
            .expect("a job reference names a described instance")
            .jobs[r.job]
    }

    /// Every job of every described instance, instance by instance.
    pub fn jobs(&self) -> Vec<JobRef> {
        self.descriptions()
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

    /// The lock steps over every job of the deployment, as job references, ordered by
    /// `side`'s metadata list; [`Steps::unlock_order`] gives the unlock steps.
    pub fn lock_steps(&self, side: Side) -> Result<Steps<JobRef>, CycleError> {
        let refs = self.jobs();
        let nodes: Vec<OrderNode<'_>> = refs
            .iter()
            .map(|&r| {
                let job = self.job(r);
                let before: &[LockBefore] = match side {
                    Side::Backup => &job.metadata.backup_should_be_locked_before,
                    Side::Restore => &job.metadata.restore_should_be_locked_before,
                };
                OrderNode {
                    label: format!("{} {}", self.id(r.instance), job.name),
                    job_name: &job.name,
                    release: job.release.as_deref(),
                    locks_before: before,
                }
            })
            .collect();
        Ok(order(&nodes)?.map(|n| refs[n]))
    }

    /// Runs `side`'s lock scripts step by step, in lock order; stops after the first step
    /// with a failure. Returns the scripts that failed (none: every step succeeded).
    pub fn lock(
        &mut self,
        side: Side,
        steps: &Steps<JobRef>,
        console: &Console,
    ) -> Vec<FailedScript> {
        for step in steps.lock_order() {
            let failed = self.run(side.lock(), step, side.mode(), None, console);
            if !failed.is_empty() {
                return failed;
            }
        }
        Vec::new()
    }

    /// Runs `side`'s data scripts (`backup` or `restore`) for `jobs`; returns those that
    /// failed.
    pub fn run_data(
        &mut self,
        side: Side,
        jobs: &[JobRef],
        console: &Console,
    ) -> Vec<FailedScript> {
        self.run(side.data(), jobs, side.mode(), None, console)
    }

    /// Runs `side`'s unlock scripts for every step, in unlock order, whatever fails:
    /// unlocking must reach every job. They are told whether the data step succeeded, as the
    /// side tells it. Returns those that failed.
    pub fn unlock(
        &mut self,
        side: Side,
        steps: &Steps<JobRef>,
        data_succeeded: bool,
        console: &Console,
    ) -> Vec<FailedScript> {
        let after = side.unlock_env(data_succeeded);
        let mut failed = Vec::new();
        for step in steps.unlock_order() {
            failed.extend(self.run(side.unlock(), step, side.mode(), after, console));
        }
        failed
    }

    /// The instances whose unlocks were left to their agent: the run was interrupted and
    /// ended their sessions, and each agent unlocks what it locked as its session ends.
    pub fn left_to_agents(&self) -> impl Iterator<Item = usize> + '_ {
        self.left_to_agents.iter().copied()
    }

    /// Runs `kind` for `jobs`. All at once: every instance at once, and the jobs of an
    /// instance at once. One at a time: one job after another, in the order given. Returns
    /// the scripts that failed; an unlock left to a VM's agent is no failure here (the VM
    /// gets one line for it, and the run is interrupted anyway).
    fn run(
        &mut self,
        kind: ScriptKind,
        jobs: &[JobRef],
        mode: Mode,
        after_backup_successful: Option<bool>,
        console: &Console,
    ) -> Vec<FailedScript> {
        let step = |jobs| ScriptStep {
            kind,
            jobs,
            mode,
            after_backup_successful,
        };
        let reports: Vec<(usize, ScriptReport)> = match mode {
            Mode::AllAtOnce => {
                let mut by_instance: BTreeMap<usize, Vec<String>> = BTreeMap::new();
                for &r in jobs.iter().filter(|&&r| self.job(r).has(kind)) {
                    by_instance
                        .entry(r.instance)
                        .or_default()
                        .push(self.job(r).name.clone());
                }
                let results = self.on_instances(by_instance, |_, instance, names| {
                    let id = instance.id().clone();
                    let reports = console.while_running(&id, kind, &names, || {
                        instance.run_scripts(&step(names.clone()))
                    });
                    for report in &reports {
                        console.script(instance.id(), report);
                    }
                    reports
                });
                results
                    .into_iter()
                    .flat_map(|(i, reports)| reports.into_iter().map(move |r| (i, r)))
                    .collect()
            }
            Mode::OneAtATime => {
                let mut reports = Vec::new();
                let chosen: Vec<(JobRef, String)> = jobs
                    .iter()
                    .filter(|&&r| self.job(r).has(kind))
                    .map(|&r| (r, self.job(r).name.clone()))
                    .collect();
                for (r, name) in chosen {
                    // Interrupted, the restore scripts still to run are not started: the
                    // run's end says it is incomplete, and a VM whose session the interruption
                    // ended would only answer that its script could not start. (Unlocks run
                    // whatever happens.)
                    if kind == ScriptKind::Restore && crate::interrupt::is_interrupted() {
                        break;
                    }
                    let instance = &mut self.members[r.instance].instance;
                    let id = instance.id().clone();
                    let names = vec![name];
                    let ran = console.while_running(&id, kind, &names, || {
                        instance.run_scripts(&step(names.clone()))
                    });
                    for report in ran {
                        console.script(self.id(r.instance), &report);
                        reports.push((r.instance, report));
                    }
                }
                reports
            }
        };
        for &(i, _) in reports.iter().filter(|(_, r)| r.left_to_agent()) {
            if self.left_to_agents.insert(i) {
                console.left_to_agent(self.id(i));
            }
        }
        reports
            .into_iter()
            .filter(|(_, r)| !r.success() && !r.left_to_agent())
            .map(|(i, report)| FailedScript {
                instance: self.id(i).clone(),
                report,
            })
            .collect()
    }

    /// Applies `op` to every instance; returns the failures.
    pub fn each_instance(
        &mut self,
        op: impl Fn(&mut dyn Instance) -> Result<(), InstanceError> + Sync,
    ) -> Result<(), Vec<InstanceFailure>> {
        let errors: Vec<_> = self.failures(op).into_iter().map(|(_, e)| e).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Applies `op` to every instance; returns the failures, each with the instance's
    /// position.
    fn failures(
        &mut self,
        op: impl Fn(&mut dyn Instance) -> Result<(), InstanceError> + Sync,
    ) -> Vec<(usize, InstanceFailure)> {
        let all = self.all();
        self.on_instances(all, |_, instance, ()| {
            op(instance).map_err(|error| InstanceFailure {
                instance: instance.id().clone(),
                error: Box::new(error),
            })
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

#[cfg(test)]
mod tests {
    use super::super::fake::{Ran, before, fake};
    use super::*;
    use crate::console::Format;
    use crate::metadata::JobMetadata;

    #[test]
    fn a_description_stays_with_its_instance_when_another_fails() {
        let ran = Ran::default();
        let instances = vec![
            fake("broken", None, &ran),
            fake("db", Some(vec![("db", JobMetadata::default())]), &ran),
        ];
        let mut dep = Deployment::new("d", instances);
        let console = Console::new(false, Format::Human);
        assert!(dep.describe(&console).is_err());
        assert!(dep.description(0).is_none());
        let described: Vec<usize> = dep.descriptions().map(|(i, _)| i).collect();
        assert_eq!(described, [1]);
        let jobs = dep.jobs();
        assert_eq!(
            jobs,
            [JobRef {
                instance: 1,
                job: 0
            }]
        );
        assert_eq!(dep.id(jobs[0].instance).group, "db");
        assert_eq!(dep.job(jobs[0]).name, "db");
    }

    #[test]
    fn each_side_locks_in_order_and_unlocks_in_reverse_with_its_mode_and_env() {
        for side in Side::BOTH {
            let ran = Ran::default();
            let instances = vec![
                fake("api", Some(vec![("api", before("db"))]), &ran),
                fake("db", Some(vec![("db", JobMetadata::default())]), &ran),
            ];
            let mut dep = Deployment::new("d", instances);
            let console = Console::new(false, Format::Json);
            dep.describe(&console).unwrap();
            let steps = dep.lock_steps(side).unwrap();
            assert!(dep.lock(side, &steps, &console).is_empty());
            assert!(dep.unlock(side, &steps, false, &console).is_empty());
            let ran = ran.lock().unwrap();
            let seen: Vec<(&str, ScriptKind)> =
                ran.iter().map(|(id, s)| (id.as_str(), s.kind)).collect();
            assert_eq!(
                seen,
                [
                    ("api/0", side.lock()),
                    ("db/0", side.lock()),
                    ("db/0", side.unlock()),
                    ("api/0", side.unlock()),
                ]
            );
            assert!(ran.iter().all(|(_, s)| s.mode == side.mode()));
            let told: Vec<Option<bool>> =
                ran.iter().map(|(_, s)| s.after_backup_successful).collect();
            let unlock_env = side.unlock_env(false);
            assert_eq!(told, [None, None, unlock_env, unlock_env]);
        }
    }
}
