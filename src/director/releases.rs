//! An instance whose jobs' releases are known from the director's manifest: its description
//! carries them, so the lock order matches `{job_name, release}` entries on both, as BBR's
//! does. Every other call goes straight to the instance.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use crate::artifact::Checksums;
use crate::chunk_stream::ChunkSink;
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
        out: &mut dyn ChunkSink,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ScriptKind;
    use crate::instance::JobInfo;
    use std::sync::{Arc, Mutex};

    /// An instance that says which of its methods ran, each one answering what none of the
    /// trait's defaults answers: a call the wrapper left to a default shows in the log, or
    /// in its answer. (A method added to `Instance` belongs here too.)
    struct Recorder {
        id: InstanceId,
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl Recorder {
        fn called(&self, what: impl Into<String>) {
            self.calls.lock().unwrap().push(what.into());
        }

        fn description(&self) -> Description {
            let job = JobInfo {
                name: "store".into(),
                release: None,
                scripts: vec![ScriptKind::Backup],
                not_executable: Vec::new(),
                metadata: Default::default(),
            };
            Description {
                jobs: vec![job],
                ..Description::default()
            }
        }
    }

    impl Instance for Recorder {
        fn id(&self) -> &InstanceId {
            &self.id
        }
        fn begin(&mut self) -> Result<(), InstanceError> {
            self.called("begin");
            Ok(())
        }
        fn describe(&mut self) -> Result<Description, InstanceError> {
            self.called("describe");
            Ok(self.description())
        }
        fn describe_for_cleanup(&mut self) -> Result<Description, InstanceError> {
            self.called("describe_for_cleanup");
            Ok(self.description())
        }
        fn create_store(&mut self) -> Result<(), InstanceError> {
            self.called("create_store");
            Ok(())
        }
        fn run_scripts(&mut self, step: &ScriptStep) -> Vec<ScriptReport> {
            self.called(format!("run_scripts {:?}", step.kind));
            Vec::new()
        }
        fn send_artifact(
            &mut self,
            job: &str,
            _: &mut dyn Write,
            digest: DigestKind,
        ) -> Result<Checksums, InstanceError> {
            self.called(format!("send_artifact {job} {}", digest.name()));
            Ok(Checksums::new())
        }
        fn send_artifact_sized(
            &mut self,
            job: &str,
            _: &mut dyn ChunkSink,
            digest: DigestKind,
            total: Box<dyn FnOnce(u64) + Send>,
        ) -> Result<Checksums, InstanceError> {
            self.called(format!("send_artifact_sized {job} {}", digest.name()));
            total(42);
            Ok(Checksums::new())
        }
        fn can_compress(&mut self) -> Result<bool, InstanceError> {
            self.called("can_compress");
            Ok(true)
        }
        fn send_artifact_compressed(
            &mut self,
            job: &str,
            _: &mut dyn Write,
            digest: DigestKind,
            level: i32,
        ) -> Result<Checksums, InstanceError> {
            self.called(format!(
                "send_artifact_compressed {job} {} {level}",
                digest.name()
            ));
            Ok(Checksums::new())
        }
        fn takes_blake3(&mut self) -> Result<bool, InstanceError> {
            self.called("takes_blake3");
            Ok(true)
        }
        fn receive_artifact_compressed(
            &mut self,
            job: &str,
            _: &mut dyn Read,
            expected: Expected<'_>,
        ) -> Result<(), InstanceError> {
            self.called(format!(
                "receive_artifact_compressed {job} {}",
                expected.kind.name()
            ));
            Ok(())
        }
        fn receive_artifact(
            &mut self,
            job: &str,
            _: &mut dyn Read,
            expected: Expected<'_>,
        ) -> Result<(), InstanceError> {
            self.called(format!("receive_artifact {job} {}", expected.kind.name()));
            Ok(())
        }
        fn receive_artifact_file(
            &mut self,
            job: &str,
            _: &std::fs::File,
            expected: Expected<'_>,
            _: Option<indicatif::ProgressBar>,
        ) -> Result<(), InstanceError> {
            self.called(format!(
                "receive_artifact_file {job} {}",
                expected.kind.name()
            ));
            Ok(())
        }
        fn remove_store(&mut self) -> Result<(), InstanceError> {
            self.called("remove_store");
            Ok(())
        }
        fn end_strays(&mut self) -> Result<Vec<String>, InstanceError> {
            self.called("end_strays");
            Ok(vec!["a stray".to_string()])
        }
        fn close(&mut self) {
            self.called("close");
        }
    }

    /// Director mode wraps every instance so that its jobs carry their releases; everything
    /// else must reach the instance itself. A call left to a trait default would, silently,
    /// decompress a VM's compressed stream on the driver, or check a restore by SHA-256
    /// where the VM takes BLAKE3 (as before `WithReleases` forwarded them).
    #[test]
    fn every_call_reaches_the_wrapped_instance_and_the_jobs_get_their_releases() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let id = InstanceId {
            group: "db".into(),
            index: "0".into(),
        };
        let inner = Recorder {
            id: id.clone(),
            calls: calls.clone(),
        };
        let releases = BTreeMap::from([("store".to_string(), "store-release".to_string())]);
        let mut wrapped = WithReleases::new(Box::new(inner), releases);
        let sums = Checksums::new();
        let blake3 = Expected {
            kind: DigestKind::Blake3,
            sums: &sums,
        };
        let file = tempfile::tempfile().unwrap();
        let told = Arc::new(Mutex::new(None));
        let total = {
            let told = told.clone();
            Box::new(move |len| *told.lock().unwrap() = Some(len))
        };

        assert_eq!(wrapped.id(), &id);
        wrapped.begin().unwrap();
        let described = wrapped.describe().unwrap();
        assert_eq!(described.jobs[0].release.as_deref(), Some("store-release"));
        let described = wrapped.describe_for_cleanup().unwrap();
        assert_eq!(described.jobs[0].release.as_deref(), Some("store-release"));
        wrapped.create_store().unwrap();
        wrapped.run_scripts(&ScriptStep::new(ScriptKind::Backup, vec!["store".into()]));
        wrapped
            .send_artifact("store", &mut io_sink(), DigestKind::Sha256)
            .unwrap();
        wrapped
            .send_artifact_sized(
                "store",
                &mut crate::chunk_stream::WriteSink::new(&mut io_sink()),
                DigestKind::Blake3,
                total,
            )
            .unwrap();
        assert_eq!(*told.lock().unwrap(), Some(42));
        assert!(wrapped.can_compress().unwrap());
        wrapped
            .send_artifact_compressed("store", &mut io_sink(), DigestKind::Blake3, 3)
            .unwrap();
        assert!(wrapped.takes_blake3().unwrap());
        wrapped
            .receive_artifact_compressed("store", &mut &b""[..], blake3)
            .unwrap();
        wrapped
            .receive_artifact("store", &mut &b""[..], blake3)
            .unwrap();
        wrapped
            .receive_artifact_file("store", &file, blake3, None)
            .unwrap();
        wrapped.remove_store().unwrap();
        assert_eq!(wrapped.end_strays().unwrap(), ["a stray"]);
        wrapped.close();

        assert_eq!(
            *calls.lock().unwrap(),
            [
                "begin",
                "describe",
                "describe_for_cleanup",
                "create_store",
                "run_scripts Backup",
                "send_artifact store sha256",
                "send_artifact_sized store blake3",
                "can_compress",
                "send_artifact_compressed store blake3 3",
                "takes_blake3",
                "receive_artifact_compressed store blake3",
                "receive_artifact store blake3",
                "receive_artifact_file store blake3",
                "remove_store",
                "end_strays",
                "close",
            ]
        );
    }

    fn io_sink() -> std::io::Sink {
        std::io::sink()
    }
}
