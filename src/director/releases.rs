//! An instance whose jobs' releases are known from the director's manifest: its description
//! carries them, so the lock order matches `{job_name, release}` entries on both, as BBR's
//! does. Every other call goes straight to the instance.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use crate::artifact::Checksums;
use crate::instance::{
    Description, DigestKind, Expected, Instance, InstanceError, InstanceId, ScriptReport,
    ScriptStep,
};

pub struct WithReleases {
    inner: Box<dyn Instance>,
    /// Job -> release, for this instance's group.
    releases: BTreeMap<String, String>,
}

impl WithReleases {
    pub fn new(inner: Box<dyn Instance>, releases: BTreeMap<String, String>) -> WithReleases {
        WithReleases { inner, releases }
    }
}

impl WithReleases {
    fn with_releases(&self, mut description: Description) -> Description {
        for job in &mut description.jobs {
            if let Some(release) = self.releases.get(&job.name) {
                job.release = Some(release.clone());
            }
        }
        description
    }
}

impl Instance for WithReleases {
    fn id(&self) -> &InstanceId {
        self.inner.id()
    }

    fn begin(&mut self) -> Result<(), InstanceError> {
        self.inner.begin()
    }

    fn describe(&mut self) -> Result<Description, InstanceError> {
        let description = self.inner.describe()?;
        Ok(self.with_releases(description))
    }

    fn describe_for_cleanup(&mut self) -> Result<Description, InstanceError> {
        let description = self.inner.describe_for_cleanup()?;
        Ok(self.with_releases(description))
    }

    fn create_store(&mut self) -> Result<(), InstanceError> {
        self.inner.create_store()
    }

    fn run_scripts(&mut self, step: &ScriptStep) -> Vec<ScriptReport> {
        self.inner.run_scripts(step)
    }

    fn send_artifact(
        &mut self,
        job: &str,
        out: &mut dyn Write,
        digest: DigestKind,
    ) -> Result<Checksums, InstanceError> {
        self.inner.send_artifact(job, out, digest)
    }

    fn send_artifact_sized(
        &mut self,
        job: &str,
        out: &mut dyn Write,
        digest: DigestKind,
        total: Box<dyn FnOnce(u64) + Send>,
    ) -> Result<Checksums, InstanceError> {
        self.inner.send_artifact_sized(job, out, digest, total)
    }

    fn can_compress(&mut self) -> Result<bool, InstanceError> {
        self.inner.can_compress()
    }

    fn send_artifact_compressed(
        &mut self,
        job: &str,
        out: &mut dyn Write,
        digest: DigestKind,
        level: i32,
    ) -> Result<Checksums, InstanceError> {
        self.inner.send_artifact_compressed(job, out, digest, level)
    }

    fn takes_blake3(&mut self) -> Result<bool, InstanceError> {
        self.inner.takes_blake3()
    }

    fn receive_artifact_compressed(
        &mut self,
        job: &str,
        input: &mut dyn Read,
        expected: Expected<'_>,
    ) -> Result<(), InstanceError> {
        self.inner.receive_artifact_compressed(job, input, expected)
    }

    fn receive_artifact(
        &mut self,
        job: &str,
        input: &mut dyn Read,
        expected: Expected<'_>,
    ) -> Result<(), InstanceError> {
        self.inner.receive_artifact(job, input, expected)
    }

    fn receive_artifact_file(
        &mut self,
        job: &str,
        file: &std::fs::File,
        expected: Expected<'_>,
        bar: Option<indicatif::ProgressBar>,
    ) -> Result<(), InstanceError> {
        self.inner.receive_artifact_file(job, file, expected, bar)
    }

    fn remove_store(&mut self) -> Result<(), InstanceError> {
        self.inner.remove_store()
    }

    fn end_strays(&mut self) -> Result<Vec<String>, InstanceError> {
        self.inner.end_strays()
    }

    fn close(&mut self) {
        self.inner.close()
    }
}
