//! The instance API on this machine: discovery, metadata, scripts and the store under one
//! `--root`. Used by the local commands and, behind the stdio protocol, by `serve`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use super::api::{
    Description, DigestKind, Expected, Instance, InstanceError, InstanceId, JobInfo, JobProblem,
    ScriptEvent, ScriptEvents, ScriptReport, ScriptStep, SkippedJob,
};
use super::script_env::script_env;
use super::settings::ScriptSettings;
use crate::artifact::checksums::compare;
use crate::artifact::store::Store;
use crate::artifact::tar_writer::TarWriteError;
use crate::artifact::{Checksums, dir_walk, tar_reader, tar_writer};
use crate::chunk_stream::ChunkSink;
use crate::contract::ScriptKind;
use crate::exec::{LineSink, OnSpawn, ScriptCommand, ScriptEnd, run_script};
use crate::instance::discover::{DiscoveredJob, discover};
use crate::instance::journal::{Journal, JournalState, LockedJob};
use crate::instance::run_lock::{self, RunLock};
use crate::instance::trust::Trust;
use crate::layout::Layout;
use crate::metadata;
use crate::shell_quote::quote;

/// Bytes of each stream kept for reports; metadata output beyond it is refused.
const KEEP_BYTES: usize = 1 << 20;

pub struct LocalInstance {
    id: InstanceId,
    layout: Layout,
    settings: ScriptSettings,
    lines: ScriptEvents,
    jobs: BTreeMap<String, DiscoveredJob>,
    /// Whether `jobs` was filled (by `describe` or `discover_only`): before, no job is known.
    described: bool,
    /// Jobs a cleanup's description left out because their scripts are not trusted, and why.
    refused: BTreeMap<String, String>,
    run_lock: Option<RunLock>,
    journal: Arc<Journal>,
    /// What the journal held when the run lock was taken: what a run that did not finish left.
    left_behind: Option<JournalState>,
    /// The cleanup command after this run (see `JournalState::cleanup_via`).
    cleanup_via: String,
    /// Whether this instance made the store (and so removes it when its session ends).
    store_made: bool,
    trust: Trust,
    /// The length of each job's tar, from the check that follows its backup script: the
    /// total a drain's progress bar counts to.
    tar_lens: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl LocalInstance {
    pub fn new(
        id: InstanceId,
        layout: Layout,
        settings: ScriptSettings,
        lines: ScriptEvents,
    ) -> Self {
        // Read once the run lock is held (`claim`); nothing writes it before.
        let journal = Arc::new(Journal::unread(&layout.run_dir()));
        let trust = Trust::new();
        LocalInstance {
            id,
            trust,
            cleanup_via: local_cleanup_via(&layout),
            layout,
            settings,
            lines,
            jobs: BTreeMap::new(),
            described: false,
            refused: BTreeMap::new(),
            run_lock: None,
            tar_lens: Default::default(),
            journal,
            left_behind: None,
            store_made: false,
        }
    }

    /// A driver's run: one it leaves unfinished is cleaned up by `command` (and the
    /// cleanup's name), not on the VM. Taken only as one line of a `bbr-agent` command: it is
    /// shown to operators as what to run.
    pub fn cleaned_up_by(&mut self, command: &str) {
        if command.starts_with("bbr-agent ")
            && command.len() <= 4096
            && !command.chars().any(char::is_control)
        {
            self.cleanup_via = command.to_string();
        }
    }

    /// Takes the VM's run lock, once; every operation that runs scripts or touches the store
    /// comes through here.
    fn claim(&mut self) -> Result<(), InstanceError> {
        if self.run_lock.is_none() {
            self.run_lock = Some(run_lock::acquire(&self.layout.run_dir())?);
            // Read under the lock: the run that held it may have finished (and removed its
            // journal) since this instance was made.
            let journal =
                Journal::open(&self.layout.run_dir()).with_cleanup_via(self.cleanup_via.clone());
            self.left_behind = Some(journal.state()).filter(JournalState::left_anything);
            self.journal = Arc::new(journal);
        }
        Ok(())
    }

    /// The locks this instance took and has not released, in lock order (the journal's).
    pub fn held_locks(&self) -> Vec<LockedJob> {
        self.journal.held_here()
    }

    /// Whether this instance made the store and has not removed it.
    pub fn store_made(&self) -> bool {
        self.store_made
    }

    /// Makes the store if it is missing (a backup script run without `create_store`), as
    /// `create_store` would: mode 0700, and removed by whoever made it.
    fn ensure_store(&mut self) -> Result<(), InstanceError> {
        if !self.store().exists() {
            self.store().create()?;
            self.store_made = true;
        }
        Ok(())
    }

    /// The job whose artifact may be sent: a BBR job here with a backup script.
    fn backed_up_job(&self, job: &str) -> Result<&DiscoveredJob, InstanceError> {
        self.jobs
            .get(job)
            .filter(|j| j.has(ScriptKind::Backup))
            .ok_or_else(|| InstanceError::NoArtifact {
                job: job.to_string(),
            })
    }

    /// Checks, before any data goes out, that `job`'s artifact may be sent.
    pub fn check_send_artifact(&self, job: &str) -> Result<(), InstanceError> {
        self.backed_up_job(job).map(drop)
    }

    /// Streams `job`'s artifact directory as a tar into `out` (`send_artifact`, into a writer
    /// that may send a file's data from the file: `serve`'s).
    pub fn send_tar_to(
        &mut self,
        job: &str,
        out: &mut dyn tar_writer::TarOut,
        digest: DigestKind,
    ) -> Result<Checksums, InstanceError> {
        // Only a job found here: a name like `../../etc` must not tar what it points at.
        let job = self.backed_up_job(job)?.name.clone();
        let dir = self.layout.job_artifact_dir(&job);
        tar_writer::write_tar_to(&dir, out, digest)
            .map_err(|source| InstanceError::SendArtifact { job, source })
    }

    /// How long `job`'s tar will be, as measured after its backup script in this run; `None`
    /// when its backup script did not run here (the stream then has no announced total).
    pub fn tar_len(&self, job: &str) -> Option<u64> {
        self.tar_lens.lock().ok()?.get(job).copied()
    }

    fn store(&self) -> Store {
        Store::new(&self.layout.store)
    }

    /// Runs one script of one job and reports how it went.
    fn run_one(
        &self,
        job: &DiscoveredJob,
        kind: ScriptKind,
        after_backup_successful: Option<bool>,
    ) -> ScriptReport {
        let path = job
            .script(kind)
            .expect("callers pick jobs that have the script");
        let artifact_dir = self.layout.job_artifact_dir(&job.name);
        let after_backup_successful = after_backup_successful.unwrap_or(true);
        let (lines, id, job_name) = (Arc::clone(&self.lines), self.id.clone(), job.name.clone());
        let sink: LineSink = Arc::new(move |stream, line| {
            tracing::info!(target: "script", "{id} {job_name} {kind} {}: {line}", stream.name());
            lines(&id, &job_name, kind, ScriptEvent::Line(stream, line))
        });
        let command = ScriptCommand {
            path: path.to_path_buf(),
            working_dir: job.dir.clone(),
            env: script_env(
                kind,
                &artifact_dir,
                &self.settings.bbr_version,
                after_backup_successful,
            ),
            timeout: self.settings.timeout(kind),
            grace: self.settings.grace,
            keep_bytes: KEEP_BYTES,
            sink,
            interruptible: !kind.is_unlock(),
            // Metadata scripts change nothing and run before the run lock is taken.
            on_spawn: (kind != ScriptKind::Metadata).then(|| {
                let (journal, job) = (Arc::clone(&self.journal), job.name.clone());
                Box::new(move |group, start_time| {
                    if let Err(e) = journal.started(&job, kind, group, start_time) {
                        tracing::error!(error = %e, "cannot record a running script in the journal");
                    }
                }) as Box<OnSpawn>
            }),
        };
        let not_started = |why: String| ScriptReport::not_started(&job.name, kind, why);
        if command.interruptible && crate::interrupt::is_interrupted() {
            return not_started("the run was interrupted before it started".to_string());
        }
        if kind == ScriptKind::Backup
            && let Err(e) = self.store().job_dir(&job.name)
        {
            return not_started(e.to_string());
        }
        // Last, right before the spawn: the file started is the one judged (src/instance/trust.rs).
        if let Err(e) = self.trust.verify_script(job, path) {
            return not_started(e.to_string());
        }
        tracing::info!(target: "script", "{} {} {kind}: starting {}", self.id, job.name, path.display());
        let mut outcome = run_script(&command);
        let ended = std::time::Instant::now();
        // Checked before the unlock, so a refused artifact fails the job's backup and the
        // unlock scripts learn it (BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL=false); the drain
        // checks everything again as it reads.
        if kind == ScriptKind::Backup && outcome.end.success() {
            match dir_walk::tar_len(&artifact_dir) {
                Ok(len) => {
                    if let Ok(mut lens) = self.tar_lens.lock() {
                        lens.insert(job.name.clone(), len);
                    }
                }
                Err(e) => {
                    outcome.end = match e {
                        TarWriteError::Interrupted => ScriptEnd::Interrupted,
                        e => ScriptEnd::ArtifactRefused(e.to_string()),
                    }
                }
            }
        }
        tracing::info!(
            target: "script",
            "{} {} {kind}: {} after {}",
            self.id,
            job.name,
            if outcome.end.success() { "succeeded".to_string() } else { outcome.end.describe() },
            crate::duration::format(outcome.duration)
        );
        if let Some(group) = outcome.group.filter(|_| kind != ScriptKind::Metadata) {
            let _ = self.journal.finished(group);
        }
        let truncated = |c: &crate::exec::Captured| {
            let mut text = c.text();
            if c.truncated {
                text.push_str("\n[output truncated]");
            }
            text
        };
        ScriptReport {
            job: job.name.clone(),
            kind,
            end: outcome.end,
            duration: outcome.duration,
            stdout: truncated(&outcome.stdout),
            stderr: truncated(&outcome.stderr),
            ended,
        }
    }

    /// Runs the job's metadata script (if any) and parses it; `runs` gets how the script ran.
    /// `checked` is the job's trust check, made before any script of the job runs, its
    /// metadata script included.
    fn metadata_of(
        &self,
        job: &DiscoveredJob,
        checked: Result<(), crate::instance::trust::Untrusted>,
        runs: &mut Vec<ScriptReport>,
    ) -> Result<metadata::JobMetadata, InstanceError> {
        checked?;
        if !job.has(ScriptKind::Metadata) {
            return Ok(metadata::JobMetadata::default());
        }
        let report = self.run_one(job, ScriptKind::Metadata, None);
        runs.push(report.for_console());
        if !report.success() {
            return Err(InstanceError::MetadataScript {
                job: job.name.clone(),
                report: Box::new(report),
            });
        }
        if report.stdout.len() >= KEEP_BYTES {
            return Err(metadata::MetadataError::Yaml {
                job: job.name.clone(),
                detail: format!("its output is larger than {KEEP_BYTES} bytes"),
            }
            .into());
        }
        Ok(metadata::parse(&job.name, &report.stdout)?)
    }
}

/// Every discovered job with the result of its metadata script, and what was ignored.
pub struct Survey {
    pub jobs: Vec<(DiscoveredJob, Result<metadata::JobMetadata, InstanceError>)>,
    pub ignored: Vec<SkippedJob>,
    /// Every metadata script run, in order, as [`ScriptReport::for_console`] keeps it.
    pub runs: Vec<ScriptReport>,
}

impl LocalInstance {
    /// Discovers the jobs and runs every metadata script, keeping each job's result apart
    /// for `list`. One at a time, in job order, as BBR runs them: release authors write
    /// metadata scripts for that (some render config or call a local service), and they are
    /// quick; no release's script is known to be safe run beside another's.
    pub fn survey(&self) -> Result<Survey, InstanceError> {
        let discovery = discover(&self.layout.jobs_root)?;
        // Every job judged in one pass (the directories above them once for all), before the
        // metadata scripts run: the pass lasts moments, not as long as the scripts take.
        let pass = self.trust.pass();
        let checked: Vec<_> = discovery
            .jobs
            .iter()
            .map(|job| self.trust.check_job(job))
            .collect();
        drop(pass);
        let mut runs = Vec::new();
        let results: Vec<_> = discovery
            .jobs
            .iter()
            .zip(checked)
            .map(|(job, checked)| self.metadata_of(job, checked, &mut runs))
            .collect();
        Ok(Survey {
            runs,
            jobs: discovery.jobs.into_iter().zip(results).collect(),
            ignored: discovery
                .ignored
                .into_iter()
                .map(|i| SkippedJob {
                    job: i.job,
                    reason: i.reason,
                })
                .collect(),
        })
    }

    /// The scripts of `job`, a job of the last survey, without an execute bit.
    pub fn not_executable(&self, job: &DiscoveredJob) -> Vec<ScriptKind> {
        self.trust.not_executable(job)
    }

    /// Discovery alone, no metadata: for running scripts by hand, even when metadata fails.
    pub fn discover_only(&mut self) -> Result<Vec<DiscoveredJob>, InstanceError> {
        let discovery = discover(&self.layout.jobs_root)?;
        let pass = self.trust.pass();
        for job in &discovery.jobs {
            self.trust.check_job(job)?;
        }
        drop(pass);
        self.jobs = discovery
            .jobs
            .iter()
            .map(|j| (j.name.clone(), j.clone()))
            .collect();
        self.described = true;
        Ok(discovery.jobs)
    }

    /// `describe`, strict (any job's metadata failing fails it) or for a cleanup (see
    /// [`Instance::describe_for_cleanup`]).
    fn describe_with(&mut self, for_cleanup: bool) -> Result<Description, InstanceError> {
        let survey = self.survey()?;
        let metadata_runs = survey.runs;
        let mut skipped = survey.ignored;
        let mut jobs = Vec::new();
        let mut kept = BTreeMap::new();
        let mut problems = Vec::new();
        self.refused.clear();
        for (job, result) in survey.jobs {
            let metadata = match result {
                Ok(metadata) => metadata,
                Err(e) if for_cleanup => {
                    let error = match &e {
                        InstanceError::MetadataScript { job, report } => format!(
                            "job '{job}': its metadata script failed ({})",
                            report.end.describe()
                        ),
                        other => other.to_string(),
                    };
                    tracing::warn!(job = %job.name, %error, "cleanup goes on without the job's metadata");
                    problems.push(JobProblem {
                        job: job.name.clone(),
                        error: error.clone(),
                    });
                    if matches!(e, InstanceError::Untrusted(_)) {
                        self.refused.insert(job.name.clone(), error);
                        continue;
                    }
                    metadata::JobMetadata::default()
                }
                Err(e) => return Err(e),
            };
            if metadata.skip_bbr_scripts {
                skipped.push(SkippedJob {
                    job: job.name.clone(),
                    reason: "its metadata sets skip_bbr_scripts: true".to_string(),
                });
                continue;
            }
            jobs.push(JobInfo {
                name: job.name.clone(),
                release: None,
                scripts: job.scripts.keys().copied().collect(),
                metadata,
                not_executable: self.trust.not_executable(&job),
            });
            kept.insert(job.name.clone(), job);
        }
        self.jobs = kept;
        self.described = true;
        let store = self.store();
        // What the run that held the VM before left, as read when the run lock was taken
        // (this run's own records since are not leftovers).
        let journal = match self.run_lock {
            Some(_) => self.left_behind.clone(),
            None => Journal::read(&self.layout.run_dir())
                .map_err(InstanceError::Journal)?
                .filter(JournalState::left_anything),
        };
        Ok(Description {
            jobs,
            skipped,
            store_exists: store.exists(),
            store_path: store.path().display().to_string(),
            journal,
            problems,
            metadata_runs,
        })
    }

    /// After an unlock step: records in the journal which jobs' locks it released. A job whose
    /// unlock script ran has done what it can, failed or not; so has a known job without one;
    /// one whose unlock script could not be started has not, and stays recorded as locked.
    /// A job not known here changes nothing unless the instance was described (it is not on
    /// this VM, or its scripts are refused: nothing can ever unlock it here).
    fn record_unlocks(&self, kind: ScriptKind, jobs: &[String], reports: &[ScriptReport]) {
        let Some(lock) = kind.lock_it_releases() else {
            return;
        };
        let (mut released, mut failed) = (Vec::new(), Vec::new());
        for name in jobs {
            match self.jobs.get(name) {
                Some(job) if job.has(kind) => match reports.iter().find(|r| r.job == *name) {
                    Some(r) if r.success() => released.push(name.as_str()),
                    // An unlock that never started (refused by the trust re-check, a failed
                    // spawn) has not done anything: the job stays locked, and recorded so.
                    Some(r) if matches!(r.end, ScriptEnd::NotStarted(_)) => {}
                    _ => failed.push(name.as_str()),
                },
                Some(_) => released.push(name.as_str()),
                None if self.described => failed.push(name.as_str()),
                None => {}
            }
        }
        for (names, failed) in [(released, false), (failed, true)] {
            if let Err(e) = self.journal.unlocked(&names, lock, failed) {
                tracing::error!(error = %e, "cannot record an unlock in the journal");
            }
        }
    }
}

/// The local cleanup command for this layout: `bbr-agent` with the options that find the same
/// run directory and store.
pub fn local_cleanup_via(layout: &Layout) -> String {
    let defaults = Layout::new(&layout.root, None, None);
    let mut words = vec!["bbr-agent".to_string()];
    let mut option = |name: &str, path: &Path| {
        words.push(name.to_string());
        words.push(quote(&path.display().to_string()).into_owned());
    };
    if layout.root != Path::new("/") {
        option("--root", &layout.root);
    }
    if layout.jobs_root != defaults.jobs_root {
        option("--jobs-root", &layout.jobs_root);
    }
    if layout.store != defaults.store {
        option("--store", &layout.store);
    }
    words.join(" ")
}

impl Instance for LocalInstance {
    fn id(&self) -> &InstanceId {
        &self.id
    }

    fn describe(&mut self) -> Result<Description, InstanceError> {
        self.describe_with(false)
    }

    fn describe_for_cleanup(&mut self) -> Result<Description, InstanceError> {
        self.describe_with(true)
    }

    fn begin(&mut self) -> Result<(), InstanceError> {
        self.claim()
    }

    fn create_store(&mut self) -> Result<(), InstanceError> {
        self.claim()?;
        self.store().create()?;
        self.store_made = true;
        Ok(())
    }

    fn run_scripts(&mut self, step: &ScriptStep) -> Vec<ScriptReport> {
        let (kind, jobs, unlock) = (step.kind, &step.jobs[..], step.after_backup_successful);
        if kind != ScriptKind::Metadata
            && let Err(e) = self.claim()
        {
            return ScriptReport::none_started(jobs, kind, &e.to_string());
        }
        if kind == ScriptKind::Backup
            && let Err(e) = self.ensure_store()
        {
            return ScriptReport::none_started(jobs, kind, &e.to_string());
        }
        let this: &LocalInstance = self;
        let chosen: Vec<&DiscoveredJob> = jobs
            .iter()
            .filter_map(|name| this.jobs.get(name))
            .filter(|job| job.has(kind))
            .collect();
        // Names that are no job here: misuse (or a job gone since it was locked), never run.
        let unknown: Vec<ScriptReport> = jobs
            .iter()
            .filter(|name| !this.jobs.contains_key(*name))
            .map(|name| {
                let why = match this.refused.get(name) {
                    Some(error) => error.clone(),
                    None if this.described => {
                        format!("job '{name}' is not a BBR job on this instance")
                    }
                    None => format!("job '{name}' is not known yet: describe the instance first"),
                };
                ScriptReport::not_started(name, kind, why)
            })
            .collect();
        if kind.is_lock() {
            // On disk before any of them runs: one write for the whole step.
            let names: Vec<&str> = chosen.iter().map(|j| j.name.as_str()).collect();
            if let Err(e) = this.journal.locking(&names, kind) {
                return ScriptReport::none_started(
                    jobs,
                    kind,
                    &InstanceError::Journal(e).to_string(),
                );
            }
        }
        let mut reports: Vec<ScriptReport> = if !step.mode.parallel() || chosen.len() <= 1 {
            chosen
                .into_iter()
                .map(|job| this.run_one(job, kind, unlock))
                .collect()
        } else {
            // All at once: a thread for each job but the last, which runs on this one. Each
            // says when it ends, as the step's answer comes only once the slowest has; but
            // the last to end, whose end the answer says at once.
            let running = std::sync::atomic::AtomicUsize::new(chosen.len());
            let run = |job: &&DiscoveredJob| {
                let report = this.run_one(job, kind, unlock);
                if running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) > 1 {
                    (this.lines)(&this.id, &job.name, kind, ScriptEvent::Ended);
                }
                report
            };
            // A thread the OS refuses (pids.max) has its job run on this one, after the
            // others started: later, but run, and its lock recorded.
            crate::thread_start::all_at_once(&chosen, run)
        };
        this.record_unlocks(kind, jobs, &reports);
        reports.extend(unknown);
        reports
    }

    fn send_artifact(
        &mut self,
        job: &str,
        out: &mut dyn Write,
        digest: DigestKind,
    ) -> Result<Checksums, InstanceError> {
        self.send_tar_to(job, &mut tar_writer::Plain(out), digest)
    }

    fn send_artifact_sized(
        &mut self,
        job: &str,
        out: &mut dyn ChunkSink,
        digest: DigestKind,
        total: Box<dyn FnOnce(u64) + Send>,
    ) -> Result<Checksums, InstanceError> {
        if let Some(len) = self.tar_len(job) {
            total(len);
        }
        self.send_artifact(job, out, digest)
    }

    fn can_compress(&mut self) -> Result<bool, InstanceError> {
        Ok(true)
    }

    fn send_artifact_compressed(
        &mut self,
        job: &str,
        out: &mut dyn Write,
        digest: DigestKind,
        level: i32,
    ) -> Result<Checksums, InstanceError> {
        use crate::artifact::codec::zstd;
        use crate::artifact::tar_writer::TarWriteError;
        if !zstd::LEVELS.contains(&level) {
            return Err(InstanceError::CompressionLevel { level });
        }
        let job = self.backed_up_job(job)?.name.clone();
        let fail = |source| InstanceError::SendArtifact {
            job: job.clone(),
            source,
        };
        // The compressor's memory is the level's, whatever the artifact's size.
        let mut packed = zstd::compressor(out, level).map_err(|e| fail(TarWriteError::Write(e)))?;
        let dir = self.layout.job_artifact_dir(&job);
        let sums = tar_writer::write_tar_as(&dir, &mut packed, digest).map_err(&fail)?;
        packed.finish().map_err(|e| fail(TarWriteError::Write(e)))?;
        Ok(sums)
    }

    fn takes_blake3(&mut self) -> Result<bool, InstanceError> {
        Ok(true)
    }

    fn receive_artifact_compressed(
        &mut self,
        job: &str,
        input: &mut dyn Read,
        expected: Expected<'_>,
    ) -> Result<(), InstanceError> {
        use crate::artifact::tar_reader::TarReadError;
        let mut plain = crate::artifact::codec::zstd::decompressor(input).map_err(|e| {
            InstanceError::ReceiveArtifact {
                job: job.to_string(),
                source: TarReadError::Read(e),
            }
        })?;
        self.receive_artifact(job, &mut plain, expected)
    }

    fn receive_artifact(
        &mut self,
        job: &str,
        input: &mut dyn Read,
        expected: Expected<'_>,
    ) -> Result<(), InstanceError> {
        if !self.jobs.contains_key(job) {
            return Err(InstanceError::UnknownJob {
                job: job.to_string(),
            });
        }
        let store = self.store();
        // Unpacked beside its final place and moved there only once every checksum agrees,
        // so a restore script never sees a partial or unverified artifact.
        let staging = store.path().join(format!(".{job}.receiving"));
        let result = (|| {
            // Empty, always: what an interrupted receive left must not be moved into place
            // beside the files that were checked.
            let _ = fs::remove_dir_all(&staging);
            fs::create_dir(&staging).map_err(|source| {
                crate::artifact::store::StoreError::Create {
                    path: staging.clone(),
                    source,
                }
            })?;
            let found = tar_reader::read_tar_as(&mut *input, Some(&staging), expected.kind)
                .map_err(|source| InstanceError::ReceiveArtifact {
                    job: job.to_string(),
                    source,
                })?;
            // Read to its end: the tar ends before its stream does (padding), and a decoder
            // under it (an encrypted object's last chunk) says only then whether all was whole.
            io::copy(input, &mut io::sink()).map_err(|e| InstanceError::ReceiveArtifact {
                job: job.to_string(),
                source: crate::artifact::tar_reader::TarReadError::Read(e),
            })?;
            if let Some(mismatch) = compare(expected.sums, &found) {
                return Err(InstanceError::ChecksumMismatch {
                    job: job.to_string(),
                    detail: format!("{}: {mismatch}", expected.kind.shown()),
                });
            }
            // Not synced to disk: the store is scratch for the restore scripts, read at once.
            // Should the VM crash before they ran, the store is left over and the next
            // restore refuses to start until restore-cleanup removed it.
            let dest = self.layout.job_artifact_dir(job);
            fs::rename(&staging, &dest).map_err(|source| {
                crate::artifact::store::StoreError::Create { path: dest, source }.into()
            })
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result
    }

    fn remove_store(&mut self) -> Result<(), InstanceError> {
        self.claim()?;
        self.store().remove()?;
        self.store_made = false;
        Ok(())
    }

    fn end_strays(&mut self) -> Result<Vec<String>, InstanceError> {
        self.claim()?;
        self.journal
            .end_strays(self.settings.grace)
            .map_err(InstanceError::Journal)
    }
}
