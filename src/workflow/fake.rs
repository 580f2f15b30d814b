//! Fake instances for the workflows' unit tests: each answers with the jobs it is given and
//! records the script steps it was asked to run.

use std::sync::{Arc, Mutex};

use crate::artifact::Checksums;
use crate::contract::ScriptKind;
use crate::instance::{
    Description, Instance, InstanceError, InstanceId, JobInfo, ScriptReport, ScriptStep,
};
use crate::metadata::JobMetadata;

/// What the fake instances were asked to run: instance, step.
pub(super) type Ran = Arc<Mutex<Vec<(String, ScriptStep)>>>;

/// An instance with the given jobs (every script each), or one whose describe fails.
pub(super) struct Fake {
    pub(super) id: InstanceId,
    pub(super) jobs: Option<Vec<(&'static str, JobMetadata)>>,
    /// The scripts without an execute bit, in every job.
    pub(super) not_executable: Vec<ScriptKind>,
    pub(super) ran: Ran,
}

impl Instance for Fake {
    fn id(&self) -> &InstanceId {
        &self.id
    }
    fn begin(&mut self) -> Result<(), InstanceError> {
        Ok(())
    }
    fn describe(&mut self) -> Result<Description, InstanceError> {
        let jobs = self.jobs.clone().ok_or(InstanceError::UnknownJob {
            job: "broken".into(),
        })?;
        Ok(Description {
            jobs: jobs
                .into_iter()
                .map(|(name, metadata)| JobInfo {
                    name: name.into(),
                    release: None,
                    scripts: ScriptKind::ALL.to_vec(),
                    not_executable: self.not_executable.clone(),
                    metadata,
                })
                .collect(),
            ..Description::default()
        })
    }
    fn describe_for_cleanup(&mut self) -> Result<Description, InstanceError> {
        self.describe()
    }
    fn create_store(&mut self) -> Result<(), InstanceError> {
        Ok(())
    }
    fn run_scripts(&mut self, step: &ScriptStep) -> Vec<ScriptReport> {
        let mut ran = self.ran.lock().unwrap();
        ran.push((self.id.to_string(), step.clone()));
        step.jobs
            .iter()
            .map(|job| ScriptReport {
                end: crate::exec::ScriptEnd::Exited(0),
                ..ScriptReport::not_started(job, step.kind, "")
            })
            .collect()
    }
    fn send_artifact(
        &mut self,
        _: &str,
        _: &mut dyn std::io::Write,
        _: crate::instance::DigestKind,
    ) -> Result<Checksums, InstanceError> {
        Ok(Checksums::default())
    }
    fn receive_artifact(
        &mut self,
        _: &str,
        _: &mut dyn std::io::Read,
        _: crate::instance::Expected<'_>,
    ) -> Result<(), InstanceError> {
        Ok(())
    }
    fn remove_store(&mut self) -> Result<(), InstanceError> {
        Ok(())
    }
    fn end_strays(&mut self) -> Result<Vec<String>, InstanceError> {
        Ok(Vec::new())
    }
}

pub(super) fn fake(
    group: &str,
    jobs: Option<Vec<(&'static str, JobMetadata)>>,
    ran: &Ran,
) -> Box<dyn Instance> {
    Box::new(Fake {
        id: InstanceId {
            group: group.into(),
            index: "0".into(),
        },
        jobs,
        not_executable: Vec::new(),
        ran: Arc::clone(ran),
    })
}

pub(super) fn before(job: &str) -> JobMetadata {
    let lock = crate::metadata::LockBefore {
        job_name: job.into(),
        release: "r".into(),
    };
    JobMetadata {
        backup_should_be_locked_before: vec![lock.clone()],
        restore_should_be_locked_before: vec![lock],
        ..JobMetadata::default()
    }
}
