//! Bringing the agent to a VM over the session the driver already has (docs/protocol.md,
//! "Bringing the agent"): where a session command says `{{ agent }}`, it runs `sh -s -- MODE
//! PROTOCOL SHA256 ARGS...`, and this sends the bootstrap script (bootstrap.sh) down the
//! session's stdin. The script runs the VM's installed agent when it speaks this protocol, or
//! asks for this driver's binary, checks it against the announced SHA-256 and runs it.
//!
//! The command line is plain words, so it survives every shell it passes through (the local
//! one, ssh's remote one, sudo) unchanged: the script itself never is on a command line.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::connecting::Notice;
use super::elf::{self, NotStatic};
use crate::artifact::checksums::hex;
use crate::console::human_bytes;
use crate::instance::InstanceId;
use crate::protocol::PROTOCOL_VERSION;
use crate::protocol::framing::{FrameError, read_line};

/// What `{{ agent }}` renders to in an inventory's or a director's command template, until
/// the run replaces it with the bootstrap's words: plain, so no quoting touches it.
pub const PLACEHOLDER: &str = "__bbr_agent_bootstrap__";
const SCRIPT: &str = include_str!("bootstrap.sh");
/// Every line of the bootstrap starts with this (the agent's protocol lines are JSON).
const PREFIX: &str = "bbr-agent-bootstrap ";

/// `--agent`: which agent a VM runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentMode {
    /// The installed agent when it speaks this driver's protocol, else this driver's.
    #[default]
    Auto,
    /// Only the installed agent; a VM without one fails, named.
    Installed,
    /// Always this driver's binary (to try a new version without a redeploy).
    Bring,
}

impl AgentMode {
    fn word(self) -> &'static str {
        match self {
            AgentMode::Auto => "auto",
            AgentMode::Installed => "installed",
            AgentMode::Bring => "bring",
        }
    }
}

/// Why the binary to bring cannot be brought: said before any session starts.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot read the agent binary {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the agent binary {path} cannot be brought to the VMs: {why}; give --agent-binary FILE with the static Linux x86_64 build (docs/release.md), or --agent installed"
    )]
    NotStatic { path: PathBuf, why: NotStatic },
}

/// Why a VM's bootstrap did not start an agent.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(
        "there is no bbr-agent of protocol {PROTOCOL_VERSION} at {0} on the VM, and --agent installed says not to bring one: install the bbr-agent BOSH job, or use --agent auto"
    )]
    Missing(String),
    #[error(
        "the agent binary arrived changed (SHA-256 {got}, sent {sent}): something on the way altered it, so it was not run"
    )]
    Mismatch { got: String, sent: String },
    #[error(
        "the VM has no bbr-agent of this protocol and this driver cannot bring its own ({0}): install the bbr-agent job there, or give --agent-binary FILE"
    )]
    CannotBring(String),
    #[error("the bootstrap could not take the agent: {0}")]
    Failed(String),
    #[error("the bootstrap said something unexpected: {0}")]
    Unexpected(String),
    #[error("the session ended during the bootstrap")]
    Ended,
    #[error("the bootstrap's output broke: {0}")]
    Broken(String),
    #[error("cannot send to the bootstrap: {0}")]
    Send(std::io::Error),
}

/// The binary that is brought, read and hashed once per run.
pub struct Payload {
    bytes: Vec<u8>,
    sha256: String,
}

/// A run's way of starting the agent on each VM whose command says `{{ agent }}`.
pub struct Bring {
    mode: AgentMode,
    /// None with `--agent installed`: nothing is ever sent.
    payload: Option<Payload>,
    /// With `--agent auto`, why this driver cannot bring itself (an aarch64 or dynamically
    /// linked build): said only to a VM that has no agent, so the VMs with one still run.
    cannot_bring: Option<String>,
    notice: Notice,
}

impl Bring {
    /// The driver's own executable, or `agent_binary`, checked to be a static Linux x86_64
    /// build; nothing is read with `--agent installed`.
    pub fn prepare(
        mode: AgentMode,
        agent_binary: Option<&Path>,
        notice: Notice,
    ) -> Result<Bring, PrepareError> {
        let (payload, cannot_bring) = match mode {
            AgentMode::Installed => (None, None),
            AgentMode::Bring => (Some(load(agent_binary)?), None),
            AgentMode::Auto => match load(agent_binary) {
                Ok(payload) => (Some(payload), None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        Ok(Bring {
            mode,
            payload,
            cannot_bring,
            notice,
        })
    }

    /// `command` with its placeholder replaced by the bootstrap's words; None when it has none
    /// (it runs as it is).
    pub fn expand(&self, command: &str) -> Option<String> {
        command
            .contains(PLACEHOLDER)
            .then(|| command.replace(PLACEHOLDER, &self.words()))
    }

    fn words(&self) -> String {
        let sum = self.payload.as_ref().map_or("-", |p| p.sha256.as_str());
        format!("sh -s -- {} {PROTOCOL_VERSION} {sum}", self.mode.word())
    }

    /// Runs the bootstrap on a session just started: afterwards an agent is at the other end,
    /// waiting for `hello`. The transfer, when there is one, is said on the console.
    pub fn start(
        &self,
        id: &InstanceId,
        to: &mut impl Write,
        from: &mut impl BufRead,
    ) -> Result<(), BootstrapError> {
        // Nothing else goes down the session until the bootstrap answers, so `sh -s` has read
        // the script and no more when it runs it.
        to.write_all(SCRIPT.as_bytes())
            .and_then(|()| to.flush())
            .map_err(BootstrapError::Send)?;
        let (word, rest) = said(from)?;
        match (word.as_str(), &self.payload) {
            ("installed", _) => Ok(()),
            ("missing", _) => Err(BootstrapError::Missing(rest)),
            ("send", Some(payload)) => self.send(id, payload, to, from),
            ("send", None) if self.cannot_bring.is_some() => Err(BootstrapError::CannotBring(
                self.cannot_bring.clone().unwrap_or_default(),
            )),
            ("failed", _) => Err(BootstrapError::Failed(rest)),
            _ => Err(BootstrapError::Unexpected(format!("{word} {rest}"))),
        }
    }

    fn send(
        &self,
        id: &InstanceId,
        payload: &Payload,
        to: &mut impl Write,
        from: &mut impl BufRead,
    ) -> Result<(), BootstrapError> {
        let size = human_bytes(payload.bytes.len() as u64);
        (self.notice)(&match self.mode {
            AgentMode::Bring => {
                format!("{id}: bringing this driver's agent ({size}, --agent bring)")
            }
            _ => format!(
                "{id}: no bbr-agent of protocol {PROTOCOL_VERSION} installed: bringing this driver's ({size})"
            ),
        });
        let started = Instant::now();
        let sent = to
            .write_all(format!("{}\n", payload.bytes.len()).as_bytes())
            .and_then(|()| to.write_all(&payload.bytes))
            .and_then(|()| to.flush());
        if let Err(e) = sent {
            // The bootstrap stopped reading because it failed (a full disk, say): its own
            // reason, already on its way, says more than the broken pipe.
            return Err(match said(from) {
                Ok((word, rest)) if word == "failed" => BootstrapError::Failed(rest),
                _ => BootstrapError::Send(e),
            });
        }
        let (word, rest) = said(from)?;
        match word.as_str() {
            "ok" => {
                let secs = started.elapsed().as_secs_f64();
                (self.notice)(&format!("{id}: agent brought ({size} in {secs:.1}s)"));
                Ok(())
            }
            "mismatch" => Err(BootstrapError::Mismatch {
                got: rest,
                sent: payload.sha256.clone(),
            }),
            "failed" => Err(BootstrapError::Failed(rest)),
            _ => Err(BootstrapError::Unexpected(format!("{word} {rest}"))),
        }
    }
}

/// The bootstrap's next line, as its first word and the rest.
fn said(from: &mut impl BufRead) -> Result<(String, String), BootstrapError> {
    let line = match read_line(from) {
        Ok(line) => line,
        Err(FrameError::Eof) => return Err(BootstrapError::Ended),
        Err(e) => return Err(BootstrapError::Broken(e.to_string())),
    };
    // From the VM: not UTF-8 shown lossily, control characters escaped, 300 characters.
    let shown = |text: &str| crate::printable::printable(text, 300);
    let text = String::from_utf8_lossy(&line);
    let Some(said) = text.strip_prefix(PREFIX) else {
        return Err(BootstrapError::Unexpected(shown(&text)));
    };
    let said = shown(said);
    let (word, rest) = said.split_once(' ').unwrap_or((&said, ""));
    Ok((word.to_string(), rest.to_string()))
}

/// The binary to bring: `agent_binary`, else this process's own executable.
fn load(agent_binary: Option<&Path>) -> Result<Payload, PrepareError> {
    let (path, read_from) = match agent_binary {
        Some(path) => (path.to_path_buf(), path.to_path_buf()),
        // /proc/self/exe is the file this process runs, even when its path was replaced since.
        None => (
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            PathBuf::from("/proc/self/exe"),
        ),
    };
    let bytes = std::fs::read(&read_from).map_err(|source| PrepareError::Read {
        path: path.clone(),
        source,
    })?;
    elf::check(&bytes).map_err(|why| PrepareError::NotStatic {
        path: path.clone(),
        why,
    })?;
    let sha256 = hex(&Sha256::digest(&bytes));
    Ok(Payload { bytes, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_hostile_answer_is_bounded_escaped_and_never_a_panic() {
        let mut escape = &b"bbr-agent-bootstrap failed \x1b]0;owned\x07 \xff\xfe\n"[..];
        let Err(BootstrapError::Failed(why)) =
            bring(AgentMode::Auto).start(&db0(), &mut Vec::new(), &mut escape)
        else {
            panic!("a failed answer is a failure");
        };
        assert!(!why.contains('\x1b') && !why.contains('\x07'), "{why:?}");
        assert!(why.contains("\\u{1b}]0;owned"), "{why:?}");
        let long = [PREFIX.as_bytes(), b"failed ", &vec![b'x'; 10_000], b"\n"].concat();
        let Err(BootstrapError::Failed(why)) =
            bring(AgentMode::Auto).start(&db0(), &mut Vec::new(), &mut &long[..])
        else {
            panic!("a long answer is a failure");
        };
        assert!(why.chars().count() <= 300, "{}", why.len());
        let endless = vec![b'x'; framing_max() + 10];
        assert!(matches!(
            bring(AgentMode::Auto).start(&db0(), &mut Vec::new(), &mut &endless[..]),
            Err(BootstrapError::Broken(_))
        ));
    }

    fn db0() -> InstanceId {
        InstanceId {
            group: "db".into(),
            index: "0".into(),
        }
    }

    fn framing_max() -> usize {
        crate::protocol::framing::MAX_LINE
    }

    fn bring(mode: AgentMode) -> Bring {
        Bring {
            mode,
            payload: Some(Payload {
                bytes: b"agent".to_vec(),
                sha256: "ab12".into(),
            }),
            cannot_bring: None,
            notice: Arc::new(|_| {}),
        }
    }

    #[test]
    fn the_placeholder_becomes_plain_words_and_a_command_without_it_stays() {
        let b = bring(AgentMode::Auto);
        let command = format!("ssh 10.0.0.5 sudo {PLACEHOLDER} --root /x serve");
        let expanded = b.expand(&command).unwrap();
        assert_eq!(
            expanded,
            format!("ssh 10.0.0.5 sudo sh -s -- auto {PROTOCOL_VERSION} ab12 --root /x serve")
        );
        assert!(super::super::session_command::plain_words(&expanded).is_some());
        assert_eq!(b.expand("ssh 10.0.0.5 bbr-agent serve"), None);
    }

    #[test]
    fn the_bootstraps_answers_are_read_and_anything_else_refused() {
        let b = bring(AgentMode::Auto);
        let id = InstanceId {
            group: "db".into(),
            index: "0".into(),
        };
        let mut sent = Vec::new();
        let mut from: &[u8] = b"bbr-agent-bootstrap send\nbbr-agent-bootstrap ok /t/x\n";
        b.start(&id, &mut sent, &mut from).unwrap();
        assert!(
            sent.ends_with(b"\n5\nagent"),
            "{:?}",
            &sent[sent.len() - 8..]
        );

        let mut from: &[u8] = b"bbr-agent-bootstrap send\nbbr-agent-bootstrap mismatch ff\n";
        let err = b.start(&id, &mut Vec::new(), &mut from).unwrap_err();
        assert!(
            matches!(err, BootstrapError::Mismatch { ref got, .. } if got == "ff"),
            "{err}"
        );

        let mut from: &[u8] = b"{\"ok\":1}\n";
        let err = b.start(&id, &mut Vec::new(), &mut from).unwrap_err();
        assert!(matches!(err, BootstrapError::Unexpected(_)), "{err}");

        let mut from: &[u8] = b"bbr-agent-bootstrap missing /opt/a b\n";
        let err = b.start(&id, &mut Vec::new(), &mut from).unwrap_err();
        assert!(err.to_string().contains("at /opt/a b on the VM"), "{err}");

        let mut from: &[u8] = b"";
        let err = b.start(&id, &mut Vec::new(), &mut from).unwrap_err();
        assert!(matches!(err, BootstrapError::Ended), "{err}");
    }
}
