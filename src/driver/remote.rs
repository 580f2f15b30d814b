//! The instance API over the stdio protocol: one `serve` process per VM, started once through
//! the inventory's command and kept for the whole run (one SSH session per VM).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::bootstrap::Bring;
use super::connecting::Connecting;
use super::error::SessionError;
use super::session_command;
use super::session_watch::{self, SessionOutput};
use super::splice_send::{SendError, send_file};
use crate::artifact::Checksums;
use crate::chunk_stream::{ChunkSink, WriteSink};
use crate::contract::ScriptKind;
use crate::exec::{ProcessGroup, ScriptEnd};
use crate::instance::{
    Description, DigestKind, Expected, Instance, InstanceError, InstanceId, ScriptEvent,
    ScriptEvents, ScriptReport, ScriptStep,
};
use crate::protocol::framing::{
    ChunkReader, ChunkWriter, FrameError, IntoSinkError, MAX_CHUNK, copy_chunks_into, read_line,
    write_json_line,
};
use crate::protocol::pipes;
use crate::protocol::{
    AgentMessage, BLAKE3_DIGEST, HelloResult, Op, PROTOCOL_VERSION, Request, SCRIPT_ENDED,
    WireCompression, WireReport, WireSettings, ZSTD_CODEC,
};
use crate::thread_start::{self, NoThread};

/// How much of the agent command's stderr is kept for error messages.
const STDERR_TAIL: usize = 8 * 1024;
/// How long a finished session may take to exit before it is killed.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// `--connect-timeout`'s default: how long a session may take to answer `hello`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

pub struct RemoteInstance {
    id: InstanceId,
    deployment: String,
    /// The inventory file, absolute, told to the agent in `hello`.
    cleanup_via: Option<String>,
    command: String,
    settings: WireSettings,
    lines: ScriptEvents,
    /// How long starting the command and its `hello` answer may take.
    connect_timeout: Duration,
    /// The run's sessions still connecting, named every 10s.
    connecting: Option<Connecting>,
    /// The bootstrap that starts the agent, when the command runs one (`{{ agent }}`).
    bring: Option<Arc<Bring>>,
    conn: Option<Connection>,
    /// Why the session was lost, once it was.
    lost: Option<String>,
    /// The session was lost once the run was interrupted: `session_watch` ended it, so the
    /// VM's agent unlocks what it locked and removes its store on its own.
    ended_by_interruption: bool,
    next_id: u64,
    /// Told the length of the artifact being received, if the agent announces it.
    data_total: Option<Box<dyn FnOnce(u64) + Send>>,
    /// The codecs the agent listed in its `hello` answer.
    codecs: Vec<String>,
    /// The digests beyond SHA-256 the agent listed in its `hello` answer.
    digests: Vec<String>,
}

struct Connection {
    to_agent: BufWriter<File>,
    /// The session command's (`sh`'s) output; it leads its own process group, ended on an
    /// interruption or when `hello` is not answered in time (see `session_watch`).
    from_agent: BufReader<SessionOutput>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Disconnected when the stderr thread has read its pipe to the end.
    stderr_done: mpsc::Receiver<()>,
}

impl RemoteInstance {
    pub fn new(
        id: InstanceId,
        deployment: &str,
        command: &str,
        settings: WireSettings,
        lines: ScriptEvents,
    ) -> RemoteInstance {
        RemoteInstance {
            id,
            deployment: deployment.to_string(),
            cleanup_via: None,
            command: command.to_string(),
            settings,
            lines,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connecting: None,
            bring: None,
            conn: None,
            lost: None,
            ended_by_interruption: false,
            next_id: 0,
            data_total: None,
            codecs: Vec::new(),
            digests: Vec::new(),
        }
    }

    /// Tells the agent, in `hello`, the driver's command that cleans up after this run (it
    /// names it after a run it could not finish).
    pub fn with_cleanup_via(mut self, command: Option<String>) -> RemoteInstance {
        self.cleanup_via = command;
        self
    }

    /// Ends the session when starting it and its `hello` answer take longer than `limit`;
    /// while it connects, `connecting` names it.
    pub fn with_connect_timeout(
        mut self,
        limit: Duration,
        connecting: Connecting,
    ) -> RemoteInstance {
        self.connect_timeout = limit;
        self.connecting = Some(connecting);
        self
    }

    /// The command starts the bootstrap (docs/protocol.md, "Bringing the agent"), which
    /// `bring` runs before `hello`.
    pub fn with_bring(mut self, bring: Option<Arc<Bring>>) -> RemoteInstance {
        self.bring = bring;
        self
    }

    /// Starts the agent command and says hello; once per run.
    fn connect(&mut self) -> Result<(), InstanceError> {
        if self.conn.is_some() {
            return Ok(());
        }
        if let Some(why) = &self.lost {
            return Err(self.unreachable(why.clone(), String::new()));
        }
        let _pending = self.connecting.as_ref().map(|c| c.start(&self.id));
        if let Err(e) = session_watch::watch() {
            return Err(self.refused(e));
        }
        // Its own group: the session ends when the driver is interrupted (session_watch), not
        // half-way through a terminal's Ctrl-C to every process at once.
        let child = session_command::spawn(&self.command)
            .map_err(|e| self.unreachable(format!("cannot start it: {e}"), String::new()))?;
        // None only for a limit past the end of time: no limit.
        let deadline = Instant::now().checked_add(self.connect_timeout);
        let leader = child.pid;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr;
        let tail = Arc::clone(&stderr);
        let (stderr_ends, stderr_done) = mpsc::channel::<()>();
        let reader = thread_start::start(
            || format!("read {}'s stderr", self.id),
            move || {
                let _ends = stderr_ends;
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut kept = tail.lock().expect("stderr lock");
                    kept.extend_from_slice(&buf[..n]);
                    let excess = kept.len().saturating_sub(STDERR_TAIL);
                    kept.drain(..excess);
                }
            },
        );
        let (to_agent, from_agent) = (child.stdin.expect("stdin is piped"), child.stdout);
        pipes::enlarge(&to_agent);
        pipes::enlarge(&from_agent);
        self.conn = Some(Connection {
            to_agent: BufWriter::new(to_agent),
            // Small: a chunk's data, read with read_exact, mostly bypasses the buffer and
            // lands in the chunk directly, not copied through here.
            from_agent: BufReader::with_capacity(
                64 * 1024,
                SessionOutput::new(from_agent, child.pid, deadline),
            ),
            stderr,
            stderr_done,
        });
        // Its stderr unread, the session could block on a full pipe: it is ended.
        if let Err(e) = reader {
            return Err(self.refused(e));
        }
        if let Some(bring) = self.bring.clone() {
            // The connect deadline holds for the writes too: a VM that asks for the binary and
            // then reads nothing would block the write for ever. Past it, the session's group
            // is killed, which ends the write (the leader is not reaped before this ends).
            let (finished, done) = mpsc::channel::<()>();
            let watchdog = deadline.map(|deadline| {
                let group = ProcessGroup::led_by(leader.as_raw() as u32);
                let what = || format!("time bringing the agent to {}", self.id);
                thread_start::start(what, move || {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let fired = done.recv_timeout(left) == Err(mpsc::RecvTimeoutError::Timeout);
                    if fired {
                        group.signal(nix::sys::signal::Signal::SIGKILL);
                    }
                    fired
                })
            });
            // Without it, a VM that reads nothing would hold the write for ever: not started.
            let watchdog = match watchdog.transpose() {
                Ok(watchdog) => watchdog,
                Err(e) => return Err(self.refused(e)),
            };
            let conn = self.conn.as_mut().expect("just connected");
            let started = bring.start(&self.id, &mut conn.to_agent, &mut conn.from_agent);
            drop(finished);
            let fired = watchdog.is_some_and(|w| w.join().unwrap_or(false));
            if let Err(e) = started {
                if fired {
                    let why = format!(
                        "bringing the agent did not end within {} (--connect-timeout): check the link to the VM, or give a longer --connect-timeout",
                        crate::duration::format_limit(self.connect_timeout)
                    );
                    return Err(self.lose_with(why, true));
                }
                return Err(self.lose(e.to_string()));
            }
        }
        let hello = Op::Hello {
            protocol: PROTOCOL_VERSION,
            deployment: self.deployment.clone(),
            instance: self.id.clone(),
            settings: self.settings.clone(),
            cleanup_via: self.cleanup_via.clone(),
            events: vec![SCRIPT_ENDED.to_string()],
        };
        let result = self.call(hello, None).and_then(|value| {
            serde_json::from_value::<HelloResult>(value).map_err(|e| {
                SessionError::Protocol(format!("{}: a bad hello answer: {e}", self.id)).into()
            })
        });
        // An answer that came as the session was ended for its lateness counts as none.
        let in_time = self
            .conn
            .as_mut()
            .is_none_or(|c| c.from_agent.get_mut().answered());
        if !in_time {
            return Err(self.lose(String::new()));
        }
        match result {
            Ok(hello) if hello.protocol == PROTOCOL_VERSION => {
                self.codecs = hello.codecs;
                self.digests = hello.digests;
                Ok(())
            }
            Ok(hello) => {
                let why = format!(
                    "the agent speaks protocol {} (agent {}), this driver {PROTOCOL_VERSION}: install the same bbr-agent on both ends",
                    hello.protocol, hello.agent_version
                );
                Err(self.lose(why))
            }
            Err(e) => match SessionError::of(&e) {
                Some(SessionError::Agent { message, .. }) => {
                    let message = message.clone();
                    Err(self.lose(message))
                }
                _ => Err(e),
            },
        }
    }

    /// Sends a request and reads to its response, passing script output on and, for
    /// `send_artifact`, the data into `data`.
    fn call(
        &mut self,
        op: Op,
        data: Option<&mut dyn ChunkSink>,
    ) -> Result<serde_json::Value, InstanceError> {
        self.next_id += 1;
        let id = self.next_id;
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| SessionError::Protocol("not connected".into()))?;
        if let Err(e) = write_json_line(&mut conn.to_agent, &Request { id, op }) {
            return Err(self.lose(format!("cannot send a request: {e}")));
        }
        self.response(id, data)
    }

    fn response(
        &mut self,
        id: u64,
        mut data: Option<&mut dyn ChunkSink>,
    ) -> Result<serde_json::Value, InstanceError> {
        let mut data_error: Option<io::Error> = None;
        loop {
            let conn = self
                .conn
                .as_mut()
                .ok_or_else(|| SessionError::Protocol("not connected".into()))?;
            let line = match read_line(&mut conn.from_agent) {
                Ok(line) => line,
                Err(FrameError::Eof) => return Err(self.lose("the agent's output ended".into())),
                Err(e) => return Err(self.lose(format!("the agent's output broke: {e}"))),
            };
            let message: AgentMessage = match serde_json::from_slice(&line) {
                Ok(m) => m,
                Err(e) => {
                    let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                    return Err(self.lose(format!(
                        "the agent sent something that is not protocol ({e}): {shown}"
                    )));
                }
            };
            match message {
                AgentMessage::Output {
                    job,
                    script,
                    stream,
                    line,
                    ..
                } => {
                    (self.lines)(
                        &self.id,
                        &job,
                        script,
                        ScriptEvent::Line(stream.into(), &line),
                    );
                }
                AgentMessage::ScriptEnded { job, script, .. } => {
                    (self.lines)(&self.id, &job, script, ScriptEvent::Ended);
                }
                AgentMessage::Data { size, .. } => {
                    if let (Some(len), Some(total)) = (size, self.data_total.take()) {
                        total(len);
                    }
                    // Read straight into the sink's room, not through a buffer of ours.
                    let copied = match data.as_mut() {
                        Some(sink) => match copy_chunks_into(&mut conn.from_agent, &mut **sink) {
                            Ok(_) => Ok(()),
                            Err(IntoSinkError::Sink(e)) => Err(e),
                            Err(IntoSinkError::Stream(e)) => {
                                return Err(self.lose(format!("the artifact stream broke: {e}")));
                            }
                        },
                        None => Err(io::Error::other("data that was not asked for")),
                    };
                    if let Err(e) = copied {
                        // Whatever is left of the data, up to its end, keeps the stream in step.
                        let conn = self.conn.as_mut().expect("connected");
                        if ChunkReader::new(&mut conn.from_agent).drain().is_err() {
                            return Err(self.lose(format!("the artifact stream broke: {e}")));
                        }
                        data_error = Some(e);
                    }
                }
                AgentMessage::Ok { id: got, result } if got == id => {
                    return match data_error {
                        Some(e) => Err(SessionError::Transfer(e.to_string()).into()),
                        None => Ok(result),
                    };
                }
                AgentMessage::Error {
                    id: got,
                    code,
                    message,
                    report,
                } if got == Some(id) || got.is_none() => {
                    return Err(match report {
                        // A failed metadata script: the same typed failure as on the VM, so
                        // it is shown as every script is.
                        Some(report) if report.script == ScriptKind::Metadata => {
                            let report = ScriptReport::from(report);
                            InstanceError::MetadataScript {
                                job: report.job.clone(),
                                report: Box::new(report),
                            }
                        }
                        _ => SessionError::Agent { code, message }.into(),
                    });
                }
                other => {
                    return Err(self.lose(format!("the agent answered out of turn: {other:?}")));
                }
            }
        }
    }

    /// A thread the session needs was refused: the session, if it started, is ended as a lost
    /// one is (and not tried again), and the refusal is the error.
    fn refused(&mut self, e: NoThread) -> InstanceError {
        let _ = self.lose(e.to_string());
        SessionError::NoThread(e).into()
    }

    /// Marks the session lost and says why, with the command's stderr; a session that did
    /// not answer `hello` in time says that instead.
    fn lose(&mut self, why: String) -> InstanceError {
        self.lose_with(why, false)
    }

    /// [`Self::lose`]; with `said`, `why` stands even when a read also met the deadline (the
    /// transfer's own timeout is the better word for it).
    fn lose_with(&mut self, mut why: String, said: bool) -> InstanceError {
        let stderr = match self.conn.take() {
            Some(mut conn) => {
                // Every live session is ended on the first interruption (session_watch): one
                // lost after it was ended by it, unless it was ended for its lateness.
                self.ended_by_interruption =
                    crate::interrupt::is_interrupted() && !conn.from_agent.get_ref().timed_out();
                if conn.from_agent.get_ref().timed_out() && !said {
                    why = format!(
                        "no answer within {}: check that the VM is reachable and that the command works",
                        crate::duration::format_limit(self.connect_timeout)
                    );
                }
                drop(conn.to_agent);
                conn.from_agent
                    .get_mut()
                    .wait_or_kill(Duration::from_secs(2));
                // The last words (ssh's "Host key verification failed") may still be in the
                // pipe: wait for its end, bounded, as a stray child may hold it open.
                let _ = conn.stderr_done.recv_timeout(Duration::from_secs(2));
                let kept = conn.stderr.lock().expect("stderr lock");
                String::from_utf8_lossy(&kept).trim().to_string()
            }
            None => String::new(),
        };
        self.lost = Some(why.clone());
        self.unreachable(why, stderr)
    }

    fn unreachable(&self, detail: String, stderr: String) -> InstanceError {
        SessionError::Unreachable {
            instance: self.id.clone(),
            command: self.command.clone(),
            detail,
            stderr: if stderr.is_empty() {
                String::new()
            } else if let Some(said) = host_key_refused(&stderr) {
                format!("; the VM's SSH host key is not the one expected (ssh: {said})")
            } else {
                // Lines joined with " | ", each escaped: it comes from the VM's side.
                let lines: Vec<String> = stderr
                    .lines()
                    .map(|l| crate::printable::printable(l, usize::MAX))
                    .collect();
                format!("; its stderr: {}", lines.join(" | "))
            },
        }
        .into()
    }

    fn typed<T: serde::de::DeserializeOwned>(
        &self,
        value: serde_json::Value,
    ) -> Result<T, InstanceError> {
        serde_json::from_value(value)
            .map_err(|e| SessionError::Protocol(format!("{}: a bad answer: {e}", self.id)).into())
    }

    /// `send_artifact`, asking the agent to compress as it sends when `compression` says.
    fn send_artifact_as(
        &mut self,
        job: &str,
        out: &mut dyn ChunkSink,
        digest: DigestKind,
        compression: Option<WireCompression>,
    ) -> Result<Checksums, InstanceError> {
        self.connect()?;
        let value = self.call(
            Op::SendArtifact {
                job: job.to_string(),
                digest,
                compression,
            },
            Some(out),
        )?;
        #[derive(serde::Deserialize)]
        struct Sent {
            checksums: Checksums,
        }
        Ok(self.typed::<Sent>(value)?.checksums)
    }

    /// Connects, and the `receive_artifact` request for `job` with its id.
    fn receive_request(
        &mut self,
        job: &str,
        expected: Expected<'_>,
        compression: Option<WireCompression>,
    ) -> Result<(u64, Request), InstanceError> {
        self.connect()?;
        self.next_id += 1;
        let id = self.next_id;
        let op = Op::ReceiveArtifact {
            job: job.to_string(),
            checksums: expected.sums.clone(),
            digest: expected.kind,
            compression,
        };
        Ok((id, Request { id, op }))
    }

    /// `receive_artifact`, telling the agent the data is compressed when `compression` says.
    fn receive_artifact_as(
        &mut self,
        job: &str,
        input: &mut dyn Read,
        expected: Expected<'_>,
        compression: Option<WireCompression>,
    ) -> Result<(), InstanceError> {
        let (id, request) = self.receive_request(job, expected, compression)?;
        let conn = self.conn.as_mut().expect("connected");
        let sent = write_json_line(&mut conn.to_agent, &request).and_then(|()| {
            let mut chunks = ChunkWriter::new(&mut conn.to_agent);
            let copied = copy_in_chunks(input, &mut chunks);
            // The terminator goes out even when reading the backup failed, so the agent's
            // stream stays in step; the agent then refuses the short artifact by its checksums.
            chunks.finish()?;
            SendError::after_the_end(copied)
        });
        self.artifact_sent(id, sent)
    }

    /// The agent's answer to the artifact `id` sent: `sent` is the stream to it ended, with
    /// the failure to read the backup's own bytes if there was one, or the write that broke.
    fn artifact_sent(
        &mut self,
        id: u64,
        sent: io::Result<Option<io::Error>>,
    ) -> Result<(), InstanceError> {
        match sent {
            // The backup's own bytes could not be read (an altered object, a dropped read):
            // that is the cause, not the agent's refusal of the short stream it then got.
            Ok(Some(read_failed)) => {
                let _ = self.response(id, None);
                Err(SessionError::Transfer(read_failed.to_string()).into())
            }
            Ok(None) => self.response(id, None).map(drop),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                Err(self.lose(format!("the agent stopped reading: {e}")))
            }
            Err(e) => {
                let answer = self.response(id, None);
                Err(answer
                    .err()
                    .unwrap_or(SessionError::Transfer(e.to_string()).into()))
            }
        }
    }
}

impl Instance for RemoteInstance {
    fn id(&self) -> &InstanceId {
        &self.id
    }

    fn describe(&mut self) -> Result<Description, InstanceError> {
        self.connect()?;
        let value = self.call(Op::Describe { for_cleanup: false }, None)?;
        self.typed(value)
    }

    fn describe_for_cleanup(&mut self) -> Result<Description, InstanceError> {
        self.connect()?;
        let value = self.call(Op::Describe { for_cleanup: true }, None)?;
        self.typed(value)
    }

    fn begin(&mut self) -> Result<(), InstanceError> {
        self.connect()?;
        self.call(Op::Begin, None).map(drop)
    }

    fn create_store(&mut self) -> Result<(), InstanceError> {
        self.connect()?;
        self.call(Op::CreateStore, None).map(drop)
    }

    fn end_strays(&mut self) -> Result<Vec<String>, InstanceError> {
        self.connect()?;
        let value = self.call(Op::EndStrays, None)?;
        self.typed(value)
    }

    fn run_scripts(&mut self, step: &ScriptStep) -> Vec<ScriptReport> {
        let op = Op::from(step);
        let result = self
            .connect()
            .and_then(|()| self.call(op, None))
            .and_then(|v| self.typed::<Vec<WireReport>>(v));
        match result {
            Ok(reports) => reports.into_iter().map(ScriptReport::from).collect(),
            // Ended by the interruption: the agent ended its scripts and runs its unlocks
            // itself, as its session ends; nothing here failed to start.
            Err(_) if self.ended_by_interruption => {
                let end = match step.kind.is_unlock() {
                    true => ScriptEnd::LeftToAgent,
                    false => ScriptEnd::Interrupted,
                };
                step.jobs
                    .iter()
                    .map(|job| ScriptReport {
                        end: end.clone(),
                        ..ScriptReport::not_started(job, step.kind, "")
                    })
                    .collect()
            }
            // The session is gone: every script asked for counts as failed, with the reason.
            Err(e) => ScriptReport::none_started(&step.jobs, step.kind, &e.to_string()),
        }
    }

    fn send_artifact(
        &mut self,
        job: &str,
        out: &mut dyn Write,
        digest: DigestKind,
    ) -> Result<Checksums, InstanceError> {
        self.send_artifact_as(job, &mut WriteSink::new(out), digest, None)
    }

    fn can_compress(&mut self) -> Result<bool, InstanceError> {
        self.connect()?;
        Ok(self.codecs.iter().any(|c| c == ZSTD_CODEC))
    }

    fn send_artifact_compressed(
        &mut self,
        job: &str,
        out: &mut dyn Write,
        digest: DigestKind,
        level: i32,
    ) -> Result<Checksums, InstanceError> {
        // An older agent would ignore the field and send the plain tar.
        if !self.can_compress()? {
            return Err(InstanceError::NoCompression);
        }
        let zstd = WireCompression::Zstd { level: Some(level) };
        self.send_artifact_as(job, &mut WriteSink::new(out), digest, Some(zstd))
    }

    fn takes_blake3(&mut self) -> Result<bool, InstanceError> {
        self.connect()?;
        Ok(self.digests.iter().any(|d| d == BLAKE3_DIGEST))
    }

    fn receive_artifact_compressed(
        &mut self,
        job: &str,
        input: &mut dyn Read,
        expected: Expected<'_>,
    ) -> Result<(), InstanceError> {
        if !self.can_compress()? {
            return Err(InstanceError::NoCompression);
        }
        self.receive_artifact_as(
            job,
            input,
            expected,
            Some(WireCompression::Zstd { level: None }),
        )
    }

    fn receive_artifact(
        &mut self,
        job: &str,
        input: &mut dyn Read,
        expected: Expected<'_>,
    ) -> Result<(), InstanceError> {
        self.receive_artifact_as(job, input, expected, None)
    }

    fn receive_artifact_file(
        &mut self,
        job: &str,
        file: &std::fs::File,
        expected: Expected<'_>,
        bar: Option<indicatif::ProgressBar>,
    ) -> Result<(), InstanceError> {
        let (id, request) = self.receive_request(job, expected, None)?;
        let len = file
            .metadata()
            .map_err(|e| SessionError::Transfer(e.to_string()))?
            .len();
        let conn = self.conn.as_mut().expect("connected");
        let sent = write_json_line(&mut conn.to_agent, &request).and_then(|()| {
            // The line first, then the chunks straight into the pipe beneath the buffer.
            conn.to_agent.flush()?;
            let copied = send_file(file, len, conn.to_agent.get_ref(), bar.as_ref());
            // The terminator goes out even when reading the backup failed (as above).
            conn.to_agent.write_all(&0u32.to_be_bytes())?;
            conn.to_agent.flush()?;
            SendError::after_the_end(copied)
        });
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        self.artifact_sent(id, sent)
    }

    fn send_artifact_sized(
        &mut self,
        job: &str,
        out: &mut dyn ChunkSink,
        digest: DigestKind,
        total: Box<dyn FnOnce(u64) + Send>,
    ) -> Result<Checksums, InstanceError> {
        self.data_total = Some(total);
        let sent = self.send_artifact_as(job, out, digest, None);
        self.data_total = None;
        sent
    }

    fn remove_store(&mut self) -> Result<(), InstanceError> {
        // The agent of a session ended by the interruption removes its store as it ends.
        if self.ended_by_interruption {
            return Ok(());
        }
        self.connect()?;
        self.call(Op::RemoveStore, None).map(drop)
    }

    fn close(&mut self) {
        if self.conn.is_some() {
            let _ = self.call(Op::Bye, None);
        }
        if let Some(mut conn) = self.conn.take() {
            drop(conn.to_agent);
            conn.from_agent.get_mut().wait_or_kill(EXIT_WAIT);
        }
    }
}

impl Drop for RemoteInstance {
    fn drop(&mut self) {
        self.close();
    }
}

/// OpenSSH's last words when the host key is not the known one, without its banner.
fn host_key_refused(stderr: &str) -> Option<&str> {
    stderr.contains("Host key verification failed").then(|| {
        stderr
            .lines()
            .find(|l| {
                l.starts_with("Host key for ")
                    || l.starts_with("No ") && l.contains("host key is known")
            })
            .unwrap_or("Host key verification failed.")
    })
}

/// Copies `input` into `chunks` a whole chunk at a time: `io::copy` from a `dyn Read` would
/// move it in 8 KiB pieces, each copied into the chunk writer's buffer.
fn copy_in_chunks(input: &mut dyn Read, chunks: &mut impl Write) -> Result<u64, SendError> {
    let mut buf = vec![0u8; MAX_CHUNK];
    let mut copied = 0;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SendError::Read(e)),
        };
        chunks.write_all(&buf[..n]).map_err(SendError::Write)?;
        copied += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::bootstrap::AgentMode;
    use nix::errno::Errno;
    use nix::unistd::Pid;
    use std::path::Path;

    /// An instance whose session writes its pid into `dir` and then waits, never answering.
    fn waiting(dir: &Path) -> RemoteInstance {
        let command = format!("echo $$ > '{}/pid'; exec sleep 600", dir.display());
        let id = InstanceId {
            group: "db".into(),
            index: "0".into(),
        };
        let lines: ScriptEvents = Arc::new(|_, _, _, _| {});
        RemoteInstance::new(id, "dep", &command, WireSettings::default(), lines)
    }

    /// The refusal is the error, said once; the session that had started is ended and reaped,
    /// and it is not started again.
    fn assert_refused(mut instance: RemoteInstance, dir: &Path, allowed: usize, said: &str) {
        // The watcher of interruptions is not the thread refused here.
        session_watch::watch().unwrap();
        let e = thread_start::with_threads_allowed(allowed, || instance.describe()).unwrap_err();
        assert!(
            matches!(SessionError::of(&e), Some(SessionError::NoThread(_))),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "could not start a thread to {said}: Resource temporarily unavailable (os error 11)"
            )
        );
        let pid: i32 = std::fs::read_to_string(dir.join("pid"))
            .expect("the session started")
            .trim()
            .parse()
            .unwrap();
        let leader = nix::sys::signal::kill(Pid::from_raw(pid), None);
        assert_eq!(leader, Err(Errno::ESRCH), "the session is still there");
        std::fs::remove_file(dir.join("pid")).unwrap();
        let again = instance.describe().unwrap_err().to_string();
        assert!(again.contains(said), "{again}");
        assert!(!dir.join("pid").exists(), "a second session was started");
    }

    #[test]
    fn a_refused_stderr_reader_ends_the_session_with_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let instance = waiting(dir.path());
        assert_refused(instance, dir.path(), 0, "read db/0's stderr");
    }

    #[test]
    fn a_refused_watchdog_of_the_bootstrap_ends_the_session_with_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let bring = Bring::prepare(AgentMode::Installed, None, Arc::new(|_| {})).unwrap();
        let instance = waiting(dir.path()).with_bring(Some(Arc::new(bring)));
        assert_refused(instance, dir.path(), 1, "time bringing the agent to db/0");
    }
}
