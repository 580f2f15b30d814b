//! The `serve` session loop: one request at a time, answered on stdout; and, when the driver
//! goes away, the unlock scripts of every job this session locked and the removal of the
//! store it made.
//!
//! What the session holds is the instance's to say: the locks its journal records as taken
//! here and not released by their own side's unlock, and the store it made. No request but
//! the matching unlock changes that; a request that misuses the protocol is refused.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use super::file_data::FileData;
use super::input::{Input, spawn_reader};
use super::output_queue::{Output, OutputQueue};
use crate::chunk_stream::{ChunkSource, ChunkStream};
use crate::config::AgentConfig;
use crate::contract::Mode;
use crate::instance::{
    DigestKind, Expected, Instance, InstanceError, InstanceId, LocalInstance, Overrides,
    ScriptEvent, ScriptEvents, ScriptSettings, ScriptStep,
};
use crate::layout::Layout;
use crate::protocol::framing::{ChunkWriter, write_json_line};
use crate::protocol::{
    AgentMessage, BLAKE3_DIGEST, ErrorCode, HelloResult, Op, PROTOCOL_VERSION, Request,
    SCRIPT_ENDED, WireCompression, WireReport, WireSettings, ZSTD_CODEC,
};

/// Serves the protocol on `input`/`output` until the driver says `bye` or goes away.
/// Returns the exit code.
pub fn serve(
    layout: Layout,
    config: AgentConfig,
    input: impl Read + Send + 'static,
    output: impl Write + AsFd + Send + 'static,
) -> i32 {
    // The same output, for the files' data the kernel moves there (see `file_data`).
    let data_to = output.as_fd().try_clone_to_owned().ok().map(File::from);
    let out: Output = Arc::new(Mutex::new(Box::new(io::BufWriter::new(output))));
    let mut session = Session {
        layout,
        config,
        data_to,
        lines: Arc::new(OutputQueue::start(Arc::clone(&out))),
        out,
        current: Arc::new(AtomicU64::new(0)),
        instance: None,
        broken: None,
        answered_bye: Arc::default(),
    };
    match spawn_reader(input, Arc::clone(&session.answered_bye)) {
        Ok(inputs) => session.run(&inputs),
        Err(refused) => {
            eprintln!("bbr-agent serve: {refused}; nothing was done on this VM");
            1
        }
    }
}

struct Session {
    layout: Layout,
    /// The VM's own configuration; the driver's settings apply over it.
    config: AgentConfig,
    out: Output,
    /// `out`'s descriptor, written to only under `out`'s lock with its buffer flushed.
    data_to: Option<File>,
    /// Script output, written by a thread of its own (see `output_queue`).
    lines: Arc<OutputQueue>,
    /// The request whose script output is being sent.
    current: Arc<AtomicU64>,
    instance: Option<LocalInstance>,
    /// Set when the input stream broke inside a request's data.
    broken: Option<String>,
    /// Set as `bye` is answered: the input's end after it is the driver's clean goodbye.
    answered_bye: Arc<AtomicBool>,
}

/// How the loop ended.
enum End {
    Bye,
    Gone,
    Broken,
}

impl Session {
    fn run(&mut self, inputs: &Receiver<Input>) -> i32 {
        let end = loop {
            // A signal ends the session even while the driver's stream stays open: what the
            // driver already sent is handled first, then the wait for more wakes on
            // `Input::Interrupted` (or, when a data reader took that, this look).
            let input = match inputs.try_recv() {
                Ok(input) => input,
                Err(TryRecvError::Empty) if crate::interrupt::is_interrupted() => break End::Gone,
                Err(TryRecvError::Empty) => match inputs.recv() {
                    Ok(input) => input,
                    Err(_) => break End::Gone,
                },
                Err(TryRecvError::Disconnected) => break End::Gone,
            };
            match input {
                Input::Interrupted => break End::Gone,
                Input::Request(request) => {
                    let bye = matches!(request.op, Op::Bye);
                    self.handle(request, inputs);
                    if let Some(why) = self.broken.take() {
                        self.error(
                            None,
                            ErrorCode::TooLong,
                            format!("the input stream broke: {why}"),
                        );
                        break End::Broken;
                    }
                    if bye {
                        break End::Bye;
                    }
                }
                Input::Malformed { id, why } => self.error(
                    id,
                    ErrorCode::BadRequest,
                    format!("not a valid request: {why}"),
                ),
                Input::Data(_) | Input::DataEnd => self.error(
                    None,
                    ErrorCode::BadRequest,
                    "data chunks outside receive_artifact".into(),
                ),
                Input::Broken(e) => {
                    self.error(
                        None,
                        ErrorCode::TooLong,
                        format!("the input stream broke: {e}"),
                    );
                    break End::Broken;
                }
            }
        };
        let held = self.release();
        match end {
            End::Bye if !held => 0,
            End::Gone if !held => 0,
            _ => 1,
        }
    }

    fn handle(&mut self, request: Request, inputs: &Receiver<Input>) {
        let id = request.id;
        self.current.store(id, Ordering::SeqCst);
        if let Op::Hello {
            protocol,
            deployment: _,
            instance,
            settings,
            cleanup_via,
            events,
        } = request.op
        {
            if self.instance.is_some() {
                // A second hello must not swap the instance (and its locks) for a new one.
                return self.error(
                    Some(id),
                    ErrorCode::BadRequest,
                    "hello was already received: a session says hello once; nothing was changed"
                        .into(),
                );
            }
            let ended = events.iter().any(|e| e == SCRIPT_ENDED);
            return self.hello(id, protocol, instance, settings, cleanup_via, ended);
        }
        if self.instance.is_none() {
            if let Op::ReceiveArtifact { .. } = request.op {
                self.broken = drain_data(inputs);
            }
            return self.error(
                Some(id),
                ErrorCode::NotReady,
                "the first request must be hello".into(),
            );
        }
        let result = match request.op {
            Op::Hello { .. } => unreachable!("handled above"),
            Op::Describe { for_cleanup: false } => self.instance().describe().map(to_json),
            Op::Describe { for_cleanup: true } => {
                self.instance().describe_for_cleanup().map(to_json)
            }
            Op::Begin => self.instance().begin().map(to_json),
            Op::EndStrays => self.instance().end_strays().map(to_json),
            Op::CreateStore => self.instance().create_store().map(to_json),
            Op::RunScripts {
                script,
                jobs,
                parallel,
                after_backup_successful,
            } => Ok(to_json(self.run_scripts(&ScriptStep {
                kind: script,
                jobs,
                mode: Mode::from_parallel(parallel),
                after_backup_successful,
            }))),
            Op::SendArtifact {
                job,
                digest,
                compression,
            } => self.send_artifact(id, &job, digest, compression),
            Op::ReceiveArtifact {
                job,
                checksums,
                digest,
                compression,
            } => {
                let expected = Expected {
                    kind: digest,
                    sums: &checksums,
                };
                let mut reader = ChunkStream::from_source(DataChunks {
                    inputs,
                    ended: false,
                    broken: None,
                });
                let r = match compression {
                    None => self
                        .instance()
                        .receive_artifact(&job, &mut reader, expected),
                    Some(WireCompression::Zstd { .. }) => self
                        .instance()
                        .receive_artifact_compressed(&job, &mut reader, expected),
                };
                // Keep the stream in step even when the artifact was refused part-way.
                let data = reader.into_source();
                self.broken = if data.ended {
                    data.broken
                } else {
                    drain_data(inputs)
                };
                r.map(to_json)
            }
            Op::RemoveStore => self.instance().remove_store().map(to_json),
            Op::Bye => {
                self.answered_bye.store(true, Ordering::SeqCst);
                Ok(serde_json::Value::Null)
            }
        };
        match result {
            Ok(value) => self.send(&AgentMessage::Ok { id, result: value }),
            Err(e) => {
                let report = match &e {
                    InstanceError::MetadataScript { report, .. } => {
                        Some(WireReport::from(report.for_console()))
                    }
                    _ => None,
                };
                self.send(&AgentMessage::Error {
                    id: Some(id),
                    code: ErrorCode::Instance,
                    message: e.to_string(),
                    report,
                })
            }
        }
    }

    fn hello(
        &mut self,
        id: u64,
        protocol: u32,
        instance: InstanceId,
        settings: WireSettings,
        cleanup_via: Option<String>,
        ended: bool,
    ) {
        if protocol != PROTOCOL_VERSION {
            return self.error(
                Some(id),
                ErrorCode::ProtocolMismatch,
                format!("this agent speaks protocol {PROTOCOL_VERSION}, the driver {protocol}: use the same bbr-agent version on both ends"),
            );
        }
        let script_settings = ScriptSettings::resolve(&self.config, &Overrides::from(&settings));
        let bbr_version = script_settings.bbr_version.clone();
        let lines = self.script_events(ended);
        let mut local = LocalInstance::new(instance, self.layout.clone(), script_settings, lines);
        if let Some(command) = &cleanup_via {
            local.cleaned_up_by(command);
        }
        self.instance = Some(local);
        let result = HelloResult {
            protocol: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            bbr_version,
            codecs: vec![ZSTD_CODEC.to_string()],
            digests: vec![BLAKE3_DIGEST.to_string()],
        };
        self.send(&AgentMessage::Ok {
            id,
            result: to_json(result),
        });
    }

    /// Script output goes to the driver as `output` events of the current request, through
    /// the output queue. The end of each script of an all-at-once step goes as `script_ended`
    /// when the driver asked (`ended`), written at once: it comes from the thread that ran the
    /// script, which has no script to watch any more (a driver that does not read holds up the
    /// step's answer anyway), and it is never dropped as a full queue's lines are, nor starts
    /// the queue's thread in a session whose scripts say nothing.
    fn script_events(&self, ended: bool) -> ScriptEvents {
        let (lines, current) = (Arc::clone(&self.lines), Arc::clone(&self.current));
        let out = Arc::clone(&self.out);
        Arc::new(move |_, job, kind, event| {
            let id = current.load(Ordering::SeqCst);
            match event {
                ScriptEvent::Line(stream, line) => lines.line(AgentMessage::Output {
                    id,
                    job: job.to_string(),
                    script: kind,
                    stream: stream.into(),
                    line: line.to_string(),
                }),
                ScriptEvent::Ended if ended => {
                    let message = AgentMessage::ScriptEnded {
                        id,
                        job: job.to_string(),
                        script: kind,
                    };
                    // A driver that cannot be written to is gone; the reader sees its input end.
                    let _ = write_json_line(&mut *out.lock().expect("output lock"), &message);
                }
                ScriptEvent::Ended => {}
            }
        })
    }

    fn run_scripts(&mut self, step: &ScriptStep) -> Vec<WireReport> {
        // The instance's journal keeps what is locked, and releases a lock only on its own
        // side's unlock.
        let reports = self.instance().run_scripts(step);
        reports.iter().map(WireReport::from).collect()
    }

    fn send_artifact(
        &mut self,
        id: u64,
        job: &str,
        digest: DigestKind,
        compression: Option<WireCompression>,
    ) -> Result<serde_json::Value, InstanceError> {
        // Refused before any data: the answer is then an error alone.
        self.instance().check_send_artifact(job)?;
        let level = match compression {
            None => None,
            Some(WireCompression::Zstd { level }) => {
                let level = level.unwrap_or(crate::artifact::codec::zstd::DEFAULT_LEVEL);
                if !crate::artifact::codec::zstd::LEVELS.contains(&level) {
                    return Err(InstanceError::CompressionLevel { level });
                }
                Some(level)
            }
        };
        // The size is the plain tar's: not the compressed stream's.
        let size = self.instance().tar_len(job).filter(|_| level.is_none());
        self.send(&AgentMessage::Data { id, size });
        let out = Arc::clone(&self.out);
        let mut guard = out.lock().expect("output lock");
        let mut chunks = ChunkWriter::new(&mut *guard);
        let instance = self.instance.as_mut().expect("hello came first");
        let result = match level {
            None => {
                let mut data = FileData::new(&mut chunks, self.data_to.as_ref());
                instance.send_tar_to(job, &mut data, digest)
            }
            Some(level) => instance.send_artifact_compressed(job, &mut chunks, digest, level),
        };
        // The terminator goes out whatever happened; the response then says how it went.
        let _ = chunks.finish();
        drop(guard);
        result.map(|checksums| serde_json::json!({ "checksums": checksums }))
    }

    /// When the session ends: unlock what this session still holds locked, newest first, each
    /// with its own side's unlock script, and remove the store it made. Returns whether
    /// anything was held.
    fn release(&mut self) -> bool {
        let Some(instance) = self.instance.as_mut() else {
            return false;
        };
        // The journal's list, asked for once: it is the only record of what is held.
        let locked = instance.held_locks();
        let held = !locked.is_empty() || instance.store_made();
        for entry in locked.iter().rev() {
            let Some(side) = entry.lock.side() else {
                continue;
            };
            let (job, unlock) = (&entry.job, side.unlock());
            tracing::warn!(job = %job, script = %unlock, "session ended while locked: unlocking");
            let step = ScriptStep::unlock(side, vec![job.clone()], false);
            for report in instance.run_scripts(&step) {
                if !report.success() {
                    tracing::error!(job = %job, script = %unlock, end = %report.end.describe(), "unlock failed");
                }
            }
        }
        if instance.store_made()
            && let Err(e) = instance.remove_store()
        {
            tracing::error!(error = %e, "cannot remove the store");
        }
        held
    }

    fn instance(&mut self) -> &mut LocalInstance {
        self.instance.as_mut().expect("hello came first")
    }

    fn send(&self, message: &AgentMessage) {
        // The output of the request's scripts goes first.
        self.lines.flush();
        // A driver that cannot be written to is gone; the reader will see its input end.
        let _ = write_json_line(&mut *self.out.lock().expect("output lock"), message);
    }

    fn error(&self, id: Option<u64>, code: ErrorCode, message: String) {
        self.send(&AgentMessage::Error {
            id,
            code,
            message,
            report: None,
        });
    }
}

fn to_json(value: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).expect("protocol values serialise")
}

/// Skips a `receive_artifact`'s data up to its terminator; says why if the stream broke
/// before it.
fn drain_data(inputs: &Receiver<Input>) -> Option<String> {
    loop {
        match inputs.recv() {
            Ok(Input::Data(_) | Input::Interrupted) => continue,
            Ok(Input::DataEnd) => return None,
            Ok(Input::Broken(e)) => return Some(e.to_string()),
            Ok(_) | Err(_) => return Some("the data ended before its terminator".to_string()),
        }
    }
}

/// The data chunks the reader thread passes on, up to their terminator.
struct DataChunks<'a> {
    inputs: &'a Receiver<Input>,
    /// The terminator came, or the stream broke before it.
    ended: bool,
    broken: Option<String>,
}

impl ChunkSource for DataChunks<'_> {
    type Chunk = Vec<u8>;

    fn next_chunk(&mut self, chunk: &mut Vec<u8>) -> io::Result<bool> {
        while !self.ended {
            match self.inputs.recv() {
                Ok(Input::Data(next)) => {
                    *chunk = next;
                    return Ok(true);
                }
                Ok(Input::DataEnd) => self.ended = true,
                Ok(Input::Interrupted) => continue,
                other => {
                    self.ended = true;
                    self.broken = Some(match other {
                        Ok(Input::Broken(e)) => e.to_string(),
                        _ => "the data ended before its terminator".to_string(),
                    });
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the driver's data ended before its terminator",
                    ));
                }
            }
        }
        Ok(false)
    }
}
