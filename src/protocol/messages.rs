//! The messages of protocol version 1, as serde types.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::artifact::Checksums;
use crate::artifact::digest::DigestKind;
use crate::contract::ScriptKind;
use crate::exec::{ScriptEnd, Stream};
use crate::instance::{InstanceId, ScriptReport};

pub const PROTOCOL_VERSION: u32 = 2;

/// Most of each stream a script report carries; every line already went out as an event.
const REPORT_TAIL: usize = 256 * 1024;

/// A request from the driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

/// The `hello` event that asks an agent to say when each script of an all-at-once step ends.
pub const SCRIPT_ENDED: &str = "script_ended";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Hello {
        protocol: u32,
        deployment: String,
        instance: InstanceId,
        settings: WireSettings,
        /// The driver's command line that cleans up after this run, without the cleanup's
        /// own name and without secrets (`bbr-agent deployment --inventory /x/acme.yml`), so
        /// that a run the agent cannot finish names it. Optional.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cleanup_via: Option<String>,
        /// The events, beyond answers and script output, that the driver takes
        /// ([`SCRIPT_ENDED`]). An agent sends only those asked for, so a driver never gets one
        /// it does not know; an older agent ignores the field and sends none. Optional.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        events: Vec<String>,
    },
    Describe {
        /// For a cleanup: jobs whose metadata fails are listed as problems, not an error.
        #[serde(default, skip_serializing_if = "is_false")]
        for_cleanup: bool,
    },
    Begin,
    CreateStore,
    RunScripts {
        script: ScriptKind,
        jobs: Vec<String>,
        parallel: bool,
        after_backup_successful: Option<bool>,
    },
    SendArtifact {
        job: String,
        /// The digest of the files the answer's `checksums` holds: SHA-256 when absent;
        /// `blake3` only from an agent whose `hello` lists it in `digests`.
        #[serde(default, skip_serializing_if = "is_sha256")]
        digest: DigestKind,
        /// Compress the tar as it streams (an agent whose `hello` lists the codec). Absent:
        /// the plain tar. An older agent ignores the field, so a driver asks only an agent
        /// that says it can.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compression: Option<WireCompression>,
    },
    ReceiveArtifact {
        job: String,
        checksums: Checksums,
        /// The digest `checksums` holds: SHA-256 when absent; `blake3` only to an agent whose
        /// `hello` lists it in `digests`.
        #[serde(default, skip_serializing_if = "is_sha256")]
        digest: DigestKind,
        /// The data is compressed: the agent decompresses it before it unpacks it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compression: Option<WireCompression>,
    },
    RemoveStore,
    EndStrays,
    Bye,
}

impl From<&crate::instance::ScriptStep> for Op {
    fn from(step: &crate::instance::ScriptStep) -> Op {
        Op::RunScripts {
            script: step.kind,
            jobs: step.jobs.clone(),
            parallel: step.mode.parallel(),
            after_backup_successful: step.after_backup_successful,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The operator's script settings, passed to every agent; the agent applies them over its
/// own defaults and configuration file. Durations are in milliseconds; a `null` timeout means
/// no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSettings {
    #[serde(default)]
    pub timeouts_ms: std::collections::BTreeMap<ScriptKind, Option<u64>>,
    #[serde(default)]
    pub kill_grace_ms: Option<u64>,
    #[serde(default)]
    pub bbr_version: Option<String>,
}

impl From<&crate::instance::Overrides> for WireSettings {
    fn from(o: &crate::instance::Overrides) -> Self {
        let ms = |d: Duration| d.as_millis() as u64;
        WireSettings {
            timeouts_ms: o.timeouts.iter().map(|(k, v)| (*k, v.map(ms))).collect(),
            kill_grace_ms: o.kill_grace.map(ms),
            bbr_version: o.bbr_version.clone(),
        }
    }
}

impl From<&WireSettings> for crate::instance::Overrides {
    fn from(w: &WireSettings) -> Self {
        crate::instance::Overrides {
            timeouts: w
                .timeouts_ms
                .iter()
                .map(|(k, v)| (*k, v.map(Duration::from_millis)))
                .collect(),
            kill_grace: w.kill_grace_ms.map(Duration::from_millis),
            bbr_version: w.bbr_version.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloResult {
    pub protocol: u32,
    pub agent_version: String,
    pub bbr_version: String,
    /// The compressions the agent applies to artifact streams when asked (`["zstd"]`).
    /// Absent from older agents, which are then never asked to compress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codecs: Vec<String>,
    /// The digests, beyond SHA-256, that the agent gives for an artifact it sends and checks a
    /// received one against (`["blake3"]`). Absent from older agents, which are then asked
    /// for and given SHA-256 only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digests: Vec<String>,
}

/// The name in `hello`'s `codecs` of an agent that compresses with zstd.
pub const ZSTD_CODEC: &str = "zstd";

/// The name in `hello`'s `digests` of an agent that checks BLAKE3 digests.
pub const BLAKE3_DIGEST: &str = "blake3";

fn is_sha256(kind: &DigestKind) -> bool {
    *kind == DigestKind::Sha256
}

/// A compression of an artifact stream: `{"codec":"zstd","level":3}` (`level` only where the
/// agent compresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "codec", rename_all = "snake_case")]
pub enum WireCompression {
    Zstd {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<i32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    ProtocolMismatch,
    NotReady,
    TooLong,
    Instance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireStream {
    Stdout,
    Stderr,
}

impl From<Stream> for WireStream {
    fn from(s: Stream) -> Self {
        match s {
            Stream::Stdout => WireStream::Stdout,
            Stream::Stderr => WireStream::Stderr,
        }
    }
}

impl From<WireStream> for Stream {
    fn from(s: WireStream) -> Self {
        match s {
            WireStream::Stdout => Stream::Stdout,
            WireStream::Stderr => Stream::Stderr,
        }
    }
}

/// A message from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// A script of an all-at-once `run_scripts` ended (the answer comes once all have), for a
    /// driver whose `hello` asked for [`SCRIPT_ENDED`].
    ScriptEnded {
        id: u64,
        job: String,
        script: ScriptKind,
    },
    Output {
        id: u64,
        job: String,
        script: ScriptKind,
        stream: WireStream,
        line: String,
    },
    Data {
        id: u64,
        /// The length of the data to follow, in bytes, when the agent knows it (measured
        /// after the backup script): a driver's progress bar. Absent from older agents;
        /// ignored by older drivers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    Ok {
        id: u64,
        result: serde_json::Value,
    },
    Error {
        id: Option<u64>,
        code: ErrorCode,
        message: String,
        /// The failed script behind the error (a metadata script failing `describe`), so the
        /// driver shows it as it shows every script.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        report: Option<WireReport>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireEnd {
    Exited(i32),
    Signalled(i32),
    TimedOutMs(u64),
    Interrupted,
    NotStarted(String),
    ArtifactRefused(String),
}

/// A script report on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireReport {
    pub job: String,
    pub script: ScriptKind,
    pub end: WireEnd,
    pub duration_ms: u64,
    pub stdout: String,
    pub stderr: String,
    /// How long before the report was sent the script ended (0 from an older agent).
    #[serde(default)]
    pub ended_ms_ago: u64,
}

fn tail(text: &str) -> String {
    if text.len() <= REPORT_TAIL {
        return text.to_string();
    }
    let mut start = text.len() - REPORT_TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[...]\n{}", &text[start..])
}

impl From<&ScriptReport> for WireReport {
    fn from(r: &ScriptReport) -> Self {
        WireReport {
            job: r.job.clone(),
            script: r.kind,
            end: match &r.end {
                ScriptEnd::Exited(c) => WireEnd::Exited(*c),
                ScriptEnd::Signalled(s) => WireEnd::Signalled(*s),
                ScriptEnd::TimedOut(d) => WireEnd::TimedOutMs(d.as_millis() as u64),
                ScriptEnd::Interrupted => WireEnd::Interrupted,
                ScriptEnd::NotStarted(why) => WireEnd::NotStarted(why.clone()),
                ScriptEnd::ArtifactRefused(why) => WireEnd::ArtifactRefused(why.clone()),
                // Made by a driver, never sent by an agent: no wire form of its own.
                end @ ScriptEnd::LeftToAgent => WireEnd::NotStarted(end.describe()),
            },
            duration_ms: r.duration.as_millis() as u64,
            stdout: tail(&r.stdout),
            stderr: tail(&r.stderr),
            ended_ms_ago: r.ended.elapsed().as_millis() as u64,
        }
    }
}

impl From<ScriptReport> for WireReport {
    fn from(r: ScriptReport) -> Self {
        WireReport::from(&r)
    }
}

/// The longest time a VM may report for a script (its duration, or how long ago it ended):
/// a week.
const MAX_REPORTED_MS: u64 = 7 * 24 * 3600 * 1000;

impl From<WireReport> for ScriptReport {
    fn from(r: WireReport) -> Self {
        ScriptReport {
            job: r.job,
            kind: r.script,
            end: match r.end {
                WireEnd::Exited(c) => ScriptEnd::Exited(c),
                WireEnd::Signalled(s) => ScriptEnd::Signalled(s),
                WireEnd::TimedOutMs(ms) => ScriptEnd::TimedOut(Duration::from_millis(ms)),
                WireEnd::Interrupted => ScriptEnd::Interrupted,
                WireEnd::NotStarted(why) => ScriptEnd::NotStarted(why),
                WireEnd::ArtifactRefused(why) => ScriptEnd::ArtifactRefused(why),
            },
            // Times from a VM are capped: no script of a run lasts longer, and an absurd one
            // must not stretch the report's timeline (or anything else) without bound.
            duration: Duration::from_millis(r.duration_ms.min(MAX_REPORTED_MS)),
            stdout: r.stdout,
            stderr: r.stderr,
            ended: {
                let now = std::time::Instant::now();
                now.checked_sub(Duration::from_millis(r.ended_ms_ago.min(MAX_REPORTED_MS)))
                    .unwrap_or(now)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_request(op: Op) {
        let request = Request { id: 7, op };
        let line = serde_json::to_string(&request).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(
            serde_json::from_str::<Request>(&line).unwrap(),
            request,
            "{line}"
        );
    }

    #[test]
    fn every_request_round_trips() {
        let instance = InstanceId {
            group: "redis".into(),
            index: "0".into(),
        };
        round_trip_request(Op::Hello {
            protocol: PROTOCOL_VERSION,
            deployment: "cf".into(),
            instance,
            settings: WireSettings {
                timeouts_ms: [
                    (ScriptKind::PreBackupLock, Some(30_000)),
                    (ScriptKind::Backup, None),
                ]
                .into_iter()
                .collect(),
                kill_grace_ms: Some(10_000),
                bbr_version: Some("1.9.73".into()),
            },
            cleanup_via: Some("bbr-agent deployment --inventory /home/op/acme.yml".into()),
            events: vec![SCRIPT_ENDED.into()],
        });
        round_trip_request(Op::Describe { for_cleanup: false });
        round_trip_request(Op::Describe { for_cleanup: true });
        round_trip_request(Op::Begin);
        round_trip_request(Op::EndStrays);
        round_trip_request(Op::CreateStore);
        round_trip_request(Op::RunScripts {
            script: ScriptKind::PostBackupUnlock,
            jobs: vec!["a".into(), "b c".into()],
            parallel: true,
            after_backup_successful: Some(false),
        });
        round_trip_request(Op::SendArtifact {
            job: "a".into(),
            digest: DigestKind::Sha256,
            compression: None,
        });
        round_trip_request(Op::SendArtifact {
            job: "a".into(),
            digest: DigestKind::Blake3,
            compression: Some(WireCompression::Zstd { level: Some(19) }),
        });
        let checksums: Checksums = [("./x y".to_string(), "ab".repeat(32))]
            .into_iter()
            .collect();
        round_trip_request(Op::ReceiveArtifact {
            job: "a".into(),
            checksums: checksums.clone(),
            digest: DigestKind::Sha256,
            compression: None,
        });
        round_trip_request(Op::ReceiveArtifact {
            job: "a".into(),
            checksums: checksums.clone(),
            digest: DigestKind::Blake3,
            compression: None,
        });
        round_trip_request(Op::ReceiveArtifact {
            job: "a".into(),
            checksums,
            digest: DigestKind::Sha256,
            compression: Some(WireCompression::Zstd { level: None }),
        });
        round_trip_request(Op::RemoveStore);
        round_trip_request(Op::Bye);
    }

    #[test]
    fn a_script_step_goes_on_the_wire_as_the_run_scripts_fields() {
        let step = crate::instance::ScriptStep::unlock(
            crate::contract::Side::Backup,
            vec!["a".into(), "b".into()],
            false,
        );
        let line = serde_json::to_string(&Request {
            id: 3,
            op: Op::from(&step),
        })
        .unwrap();
        assert_eq!(
            line,
            r#"{"id":3,"op":"run_scripts","script":"post-backup-unlock","jobs":["a","b"],"parallel":true,"after_backup_successful":false}"#
        );
    }

    #[test]
    fn compression_goes_on_the_wire_as_an_optional_field_and_hello_lists_the_codecs() {
        let line = |op| serde_json::to_string(&Request { id: 4, op }).unwrap();
        // Without compression the request is the one older agents know, byte for byte.
        assert_eq!(
            line(Op::SendArtifact {
                job: "db".into(),
                digest: DigestKind::Sha256,
                compression: None
            }),
            r#"{"id":4,"op":"send_artifact","job":"db"}"#
        );
        assert_eq!(
            line(Op::SendArtifact {
                job: "db".into(),
                digest: DigestKind::Sha256,
                compression: Some(WireCompression::Zstd { level: Some(3) })
            }),
            r#"{"id":4,"op":"send_artifact","job":"db","compression":{"codec":"zstd","level":3}}"#
        );
        assert_eq!(
            line(Op::SendArtifact {
                job: "db".into(),
                digest: DigestKind::Blake3,
                compression: None
            }),
            r#"{"id":4,"op":"send_artifact","job":"db","digest":"blake3"}"#
        );
        assert_eq!(
            line(Op::ReceiveArtifact {
                job: "db".into(),
                checksums: Checksums::new(),
                digest: DigestKind::Sha256,
                compression: Some(WireCompression::Zstd { level: None })
            }),
            r#"{"id":4,"op":"receive_artifact","job":"db","checksums":{},"compression":{"codec":"zstd"}}"#
        );
        // SHA-256 goes as older agents know it, without the field; BLAKE3 is named.
        assert_eq!(
            line(Op::ReceiveArtifact {
                job: "db".into(),
                checksums: Checksums::new(),
                digest: DigestKind::Blake3,
                compression: None
            }),
            r#"{"id":4,"op":"receive_artifact","job":"db","checksums":{},"digest":"blake3"}"#
        );
        let unknown =
            r#"{"id":4,"op":"receive_artifact","job":"db","checksums":{},"digest":"md5"}"#;
        assert!(serde_json::from_str::<Request>(unknown).is_err());
        // An older agent's hello has no `codecs`: it compresses nothing.
        let old: HelloResult = serde_json::from_str(
            r#"{"protocol":2,"agent_version":"0.1.0","bbr_version":"1.9.73"}"#,
        )
        .unwrap();
        assert!(old.codecs.is_empty());
        assert!(old.digests.is_empty());
        let new = HelloResult {
            codecs: vec![ZSTD_CODEC.into()],
            digests: vec![BLAKE3_DIGEST.into()],
            ..old
        };
        assert_eq!(
            serde_json::to_string(&new).unwrap(),
            r#"{"protocol":2,"agent_version":"0.1.0","bbr_version":"1.9.73","codecs":["zstd"],"digests":["blake3"]}"#
        );
        let unknown = r#"{"id":4,"op":"send_artifact","job":"db","compression":{"codec":"lz4"}}"#;
        assert!(serde_json::from_str::<Request>(unknown).is_err());
    }

    #[test]
    fn a_report_keeps_when_its_script_ended_across_the_wire() {
        let ended = std::time::Instant::now() - Duration::from_secs(30);
        let report = ScriptReport {
            ended,
            ..ScriptReport::not_started("j", ScriptKind::Metadata, "x")
        };
        let line = serde_json::to_string(&WireReport::from(&report)).unwrap();
        let back = ScriptReport::from(serde_json::from_str::<WireReport>(&line).unwrap());
        let ago = back.ended.elapsed();
        // Not "now": 30 s ago, give or take how long this test takes.
        assert!(
            ago >= Duration::from_secs(30) && ago < Duration::from_secs(90),
            "{ago:?}"
        );
        let hostile = WireReport {
            ended_ms_ago: u64::MAX,
            duration_ms: u64::MAX,
            ..WireReport::from(&report)
        };
        let hostile = ScriptReport::from(hostile);
        let _ = hostile.started();
        let week = Duration::from_millis(MAX_REPORTED_MS);
        assert_eq!(hostile.duration, week, "a VM's duration is capped");
        assert!(hostile.ended.elapsed() <= week + Duration::from_secs(60));
    }

    #[test]
    fn every_agent_message_round_trips() {
        let report = ScriptReport {
            job: "j".into(),
            kind: ScriptKind::Backup,
            end: ScriptEnd::TimedOut(Duration::from_millis(1500)),
            duration: Duration::from_millis(1600),
            stdout: "out\n".into(),
            stderr: "ünï\n".into(),
            ended: std::time::Instant::now(),
        };
        let wire = WireReport::from(&report);
        let messages = [
            AgentMessage::Output {
                id: 1,
                job: "j".into(),
                script: ScriptKind::Backup,
                stream: WireStream::Stderr,
                line: "a \"quoted\" line".into(),
            },
            AgentMessage::Data { id: 2, size: None },
            AgentMessage::Data {
                id: 3,
                size: Some(10240),
            },
            AgentMessage::Ok {
                id: 3,
                result: serde_json::to_value(vec![wire.clone()]).unwrap(),
            },
            AgentMessage::Error {
                id: None,
                code: ErrorCode::BadRequest,
                message: "no".into(),
                report: None,
            },
            AgentMessage::Error {
                id: Some(4),
                code: ErrorCode::Instance,
                message: "job 'db': metadata script failed".into(),
                report: Some(wire.clone()),
            },
        ];
        for m in messages {
            let line = serde_json::to_string(&m).unwrap();
            assert_eq!(
                serde_json::from_str::<AgentMessage>(&line).unwrap(),
                m,
                "{line}"
            );
        }
        let back = ScriptReport::from(wire);
        assert_eq!(back.end, report.end);
        assert_eq!(back.stderr, report.stderr);
    }

    #[test]
    fn report_output_is_cut_to_its_tail_on_a_char_boundary() {
        let long = "é".repeat(REPORT_TAIL);
        let cut = tail(&long);
        assert!(cut.starts_with("[...]\n"));
        assert!(cut.len() <= REPORT_TAIL + 7);
    }
}
