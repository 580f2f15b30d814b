//! The operations of one instance, and the types they exchange. Nothing here knows whether
//! the instance is this machine or a VM at the other end of an SSH session.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::artifact::Checksums;
pub use crate::artifact::digest::{DigestKind, Expected};
use crate::chunk_stream::ChunkSink;
use crate::contract::{Mode, ScriptKind, Side};
use crate::exec::{ScriptEnd, Stream};
use crate::metadata::JobMetadata;

/// An instance as BOSH names it: instance group and index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceId {
    pub group: String,
    pub index: String,
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group, self.index)
    }
}

/// A BBR job on an instance, after its metadata script has run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobInfo {
    pub name: String,
    /// Unknown on a VM; the orderer then matches on the job name alone.
    pub release: Option<String>,
    pub scripts: Vec<ScriptKind>,
    pub metadata: JobMetadata,
    /// Its scripts without an execute bit (each would fail to start): refused by the checks
    /// before anything is locked. Absent from older agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_executable: Vec<ScriptKind>,
}

impl JobInfo {
    pub fn has(&self, kind: ScriptKind) -> bool {
        self.scripts.contains(&kind)
    }
}

/// A job left out of the run, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SkippedJob {
    pub job: String,
    pub reason: String,
}

/// What an instance holds: its BBR jobs, what was left out, and whether a store is left over.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Description {
    pub jobs: Vec<JobInfo>,
    pub skipped: Vec<SkippedJob>,
    pub store_exists: bool,
    pub store_path: String,
    /// What a run that did not finish left in its journal: locked jobs, running scripts.
    #[serde(default)]
    pub journal: Option<crate::instance::journal::JournalState>,
    /// Only from [`Instance::describe_for_cleanup`]: the jobs whose metadata could not be had.
    /// A job listed in `jobs` too is kept without its metadata (no lock order); one that is
    /// not (its scripts are not trusted) cannot be unlocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<JobProblem>,
    /// How each metadata script ran, in order, for the console's lines and events; only
    /// the tail of a failed script's output is kept (see [`ScriptReport::for_console`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata_runs: Vec<ScriptReport>,
}

/// A job of a cleanup's description whose metadata could not be had, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobProblem {
    pub job: String,
    pub error: String,
}

/// Bytes of each stream [`ScriptReport::for_console`] keeps of a failed script.
const CONSOLE_TAIL: usize = 8 * 1024;

/// How one script ran. On the wire as a [`crate::protocol::WireReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    into = "crate::protocol::WireReport",
    from = "crate::protocol::WireReport"
)]
pub struct ScriptReport {
    pub job: String,
    pub kind: ScriptKind,
    pub end: ScriptEnd,
    pub duration: Duration,
    pub stdout: String,
    pub stderr: String,
    /// When it ended, on this machine's clock: a report handed over later (a metadata
    /// script's, with its VM's description; one of several run at once) still places the
    /// script where it ran.
    pub ended: Instant,
}

impl ScriptReport {
    pub fn success(&self) -> bool {
        self.end.success()
    }

    /// An unlock the driver left to the VM's agent: its session was ended by the run's
    /// interruption, and the agent unlocks what it locked as it ends. Neither a success nor
    /// a script's failure.
    pub fn left_to_agent(&self) -> bool {
        self.end == ScriptEnd::LeftToAgent
    }

    /// When the script started, by the wall clock.
    pub fn started(&self) -> SystemTime {
        let before = self.ended.elapsed().saturating_add(self.duration);
        SystemTime::now()
            .checked_sub(before)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// What the console needs of a script that is reported with its description (metadata):
    /// no output when it succeeded (it was parsed), the end of it when it failed. Keeps a
    /// description small whatever the scripts print.
    pub fn for_console(&self) -> ScriptReport {
        let keep = |text: &str| {
            if self.success() {
                return String::new();
            }
            let mut start = text.len().saturating_sub(CONSOLE_TAIL);
            while !text.is_char_boundary(start) {
                start += 1;
            }
            text[start..].to_string()
        };
        ScriptReport {
            stdout: keep(&self.stdout),
            stderr: keep(&self.stderr),
            ..self.clone()
        }
    }

    /// The report of a script that never started, and why.
    pub fn not_started(job: &str, kind: ScriptKind, why: impl Into<String>) -> ScriptReport {
        ScriptReport {
            job: job.to_string(),
            kind,
            end: ScriptEnd::NotStarted(why.into()),
            duration: Duration::ZERO,
            stdout: String::new(),
            stderr: String::new(),
            ended: Instant::now(),
        }
    }

    /// The same failure for each of `jobs`: nothing was run.
    pub fn none_started(jobs: &[String], kind: ScriptKind, why: &str) -> Vec<ScriptReport> {
        jobs.iter()
            .map(|job| ScriptReport::not_started(job, kind, why))
            .collect()
    }
}

/// One kind of script for some jobs of one instance, and how they run: what a workflow asks
/// of an instance, what the protocol carries to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptStep {
    pub kind: ScriptKind,
    pub jobs: Vec<String>,
    pub mode: Mode,
    /// `BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL` for a `post-backup-unlock`; none says `true`.
    pub after_backup_successful: Option<bool>,
}

impl ScriptStep {
    /// `kind` for `jobs`, run as its side runs them (one at a time for `metadata`).
    pub fn new(kind: ScriptKind, jobs: Vec<String>) -> ScriptStep {
        ScriptStep {
            kind,
            jobs,
            mode: kind.side().map_or(Mode::OneAtATime, Side::mode),
            after_backup_successful: None,
        }
    }

    /// `side`'s unlock for `jobs`, told whether the data step succeeded, as the side tells it.
    pub fn unlock(side: Side, jobs: Vec<String>, data_succeeded: bool) -> ScriptStep {
        ScriptStep {
            after_backup_successful: side.unlock_env(data_succeeded),
            ..ScriptStep::new(side.unlock(), jobs)
        }
    }
}

/// What a running script does that the console shows as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptEvent<'a> {
    /// A line of its output.
    Line(Stream, &'a str),
    /// It ended, in a step whose jobs run all at once (its report comes with the step's
    /// answer): a still-running notice no longer names its job.
    Ended,
}

/// Receives what each script does as it happens: instance, job, script, event.
pub type ScriptEvents = Arc<dyn Fn(&InstanceId, &str, ScriptKind, ScriptEvent<'_>) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(transparent)]
    Discover(#[from] crate::instance::discover::DiscoverError),
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    #[error(transparent)]
    Untrusted(#[from] crate::instance::trust::Untrusted),
    /// A metadata script failed: its report (exit, output tail) is the data the console
    /// shows, here or through a driver.
    #[error("job '{job}': metadata script failed ({}); nothing was locked", report.end.describe())]
    MetadataScript {
        job: String,
        report: Box<ScriptReport>,
    },
    #[error(transparent)]
    Store(#[from] crate::artifact::store::StoreError),
    #[error(transparent)]
    Busy(#[from] crate::instance::run_lock::RunLockError),
    #[error("cannot write the run journal: {0}; nothing more is locked without it")]
    Journal(std::io::Error),
    #[error("job '{job}': {source}")]
    SendArtifact {
        job: String,
        source: crate::artifact::tar_writer::TarWriteError,
    },
    #[error("job '{job}': cannot take the artifact in: {source}")]
    ReceiveArtifact {
        job: String,
        source: crate::artifact::tar_reader::TarReadError,
    },
    #[error(
        "job '{job}': the artifact arrived with wrong checksums ({detail}); nothing was restored"
    )]
    ChecksumMismatch { job: String, detail: String },
    #[error("job '{job}' is not a BBR job on this instance")]
    UnknownJob { job: String },
    #[error(
        "the agent on this instance cannot compress or decompress artifacts with zstd (an older bbr-agent): give --compress-on driver, or install the same bbr-agent on both ends"
    )]
    NoCompression,
    #[error("zstd level {level} is out of range: give 1 to 19")]
    CompressionLevel { level: i32 },
    #[error(
        "job '{job}' is not a job with a backup script on this instance: it has no artifact to send"
    )]
    NoArtifact { job: String },
    /// The instance could not be asked: its transport's own error (the driver's session).
    #[error(transparent)]
    Transport(Box<dyn std::error::Error + Send + Sync>),
}

/// What the workflows may ask of one VM.
pub trait Instance: Send {
    fn id(&self) -> &InstanceId;

    /// Claims the VM for this run (its run lock); refused while another run holds it.
    fn begin(&mut self) -> Result<(), InstanceError>;

    /// Finds the BBR jobs and runs their metadata scripts.
    fn describe(&mut self) -> Result<Description, InstanceError>;

    /// As [`Instance::describe`], for a cleanup: a job whose metadata script fails (or whose
    /// metadata is bad) is kept without metadata, and a job whose scripts are not trusted is
    /// left out; both are listed in `problems` instead of failing the whole description,
    /// since unlocking needs no metadata.
    fn describe_for_cleanup(&mut self) -> Result<Description, InstanceError>;

    /// Makes the artifact store for a run; refuses a leftover one.
    fn create_store(&mut self) -> Result<(), InstanceError>;

    /// Runs one kind of script for the step's jobs that have it: all at once or one after
    /// another in the given order, as its mode says. Failures are reports, not errors.
    fn run_scripts(&mut self, step: &ScriptStep) -> Vec<ScriptReport>;

    /// Streams a job's artifact directory out as a tar; returns its files' digests of kind
    /// `digest` (BLAKE3 only from an instance that [`Instance::takes_blake3`]).
    fn send_artifact(
        &mut self,
        job: &str,
        out: &mut dyn Write,
        digest: DigestKind,
    ) -> Result<Checksums, InstanceError>;

    /// [`Instance::send_artifact`], telling `total` the stream's length before its first
    /// byte when the instance knows it (measured after the backup script). An instance that
    /// does not know it (an agent of an older version) never calls `total`.
    fn send_artifact_sized(
        &mut self,
        job: &str,
        out: &mut dyn ChunkSink,
        digest: DigestKind,
        total: Box<dyn FnOnce(u64) + Send>,
    ) -> Result<Checksums, InstanceError> {
        let _ = total;
        self.send_artifact(job, out, digest)
    }

    /// Whether this instance compresses and decompresses artifact streams with zstd when
    /// asked (an agent of an older version does not).
    fn can_compress(&mut self) -> Result<bool, InstanceError> {
        Ok(false)
    }

    /// [`Instance::send_artifact`], the tar compressed by the instance with zstd at `level`
    /// as it streams; the checksums are still the files'.
    fn send_artifact_compressed(
        &mut self,
        job: &str,
        out: &mut dyn Write,
        digest: DigestKind,
        level: i32,
    ) -> Result<Checksums, InstanceError> {
        let _ = (job, out, digest, level);
        Err(InstanceError::NoCompression)
    }

    /// Whether this instance takes BLAKE3 digests in place of SHA-256: it checks a received
    /// artifact against them, and gives them for one it sends (an agent of an older version
    /// does SHA-256 only).
    fn takes_blake3(&mut self) -> Result<bool, InstanceError> {
        Ok(false)
    }

    /// [`Instance::receive_artifact`] of a zstd stream, which the instance decompresses.
    fn receive_artifact_compressed(
        &mut self,
        job: &str,
        input: &mut dyn Read,
        expected: Expected<'_>,
    ) -> Result<(), InstanceError> {
        let _ = (job, input, expected);
        Err(InstanceError::NoCompression)
    }

    /// Receives a job's artifact as a tar into the store, checking it against `expected`.
    fn receive_artifact(
        &mut self,
        job: &str,
        input: &mut dyn Read,
        expected: Expected<'_>,
    ) -> Result<(), InstanceError>;

    /// [`Instance::receive_artifact`] of a plain tar that is a local file, shown on `bar`: a
    /// driver moves it to its agent's pipe without copying it through its own memory
    /// (`splice`). Read as any input elsewhere.
    fn receive_artifact_file(
        &mut self,
        job: &str,
        file: &std::fs::File,
        expected: Expected<'_>,
        bar: Option<indicatif::ProgressBar>,
    ) -> Result<(), InstanceError> {
        let file =
            crate::interrupt::Interruptible(std::io::BufReader::with_capacity(1 << 20, file));
        let mut input = crate::progress::Counted::new(file, bar);
        let received = self.receive_artifact(job, &mut input, expected);
        input.finish();
        received
    }

    /// Removes the artifact store (and the journal, once nothing is locked).
    fn remove_store(&mut self) -> Result<(), InstanceError>;

    /// Ends the scripts a dead run left running, as its journal records them; says which.
    fn end_strays(&mut self) -> Result<Vec<String>, InstanceError>;

    /// Ends the session with the VM, if there is one (says goodbye and waits for it to go).
    /// Dropping an instance does the same; this lets a fleet's sessions end all at once.
    fn close(&mut self) {}
}
