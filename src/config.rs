//! The agent's configuration file, rendered by the BOSH job from its properties
//! (`/var/vcap/jobs/bbr-agent/config/bbr-agent.yml`), and how it combines with built-in
//! defaults and the command line: defaults, then the file, then flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::contract::ScriptKind;

/// Where the BOSH job puts the file, below `--root`.
pub const DEFAULT_PATH: &str = "var/vcap/jobs/bbr-agent/config/bbr-agent.yml";

/// Built-in timeouts: lock and unlock scripts hold systems unavailable, so they get a limit
/// by default; backup and restore move data of any size, so they do not (as under BBR).
pub fn default_timeouts() -> BTreeMap<ScriptKind, Option<Duration>> {
    let lock = Some(Duration::from_secs(30 * 60));
    BTreeMap::from([
        (ScriptKind::Metadata, Some(Duration::from_secs(60))),
        (ScriptKind::PreBackupLock, lock),
        (ScriptKind::Backup, None),
        (ScriptKind::PostBackupUnlock, lock),
        (ScriptKind::PreRestoreLock, lock),
        (ScriptKind::Restore, None),
        (ScriptKind::PostRestoreUnlock, lock),
    ])
}

pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration {path} is not valid: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// What the file may set; every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentConfig {
    pub timeouts: BTreeMap<ScriptKind, Option<Duration>>,
    pub kill_grace: Option<Duration>,
    pub bbr_version: Option<String>,
    pub log_level: Option<String>,
    /// The most VMs a driver should work on at once; informational on a VM.
    pub max_in_flight: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    timeouts: BTreeMap<String, Option<String>>,
    kill_grace: Option<String>,
    bbr_version: Option<String>,
    log_level: Option<String>,
    max_in_flight: Option<usize>,
}

/// Reads the file at `path`. A missing file is an empty configuration unless `required`.
pub fn load(path: &Path, required: bool) -> Result<AgentConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(AgentConfig::default());
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    parse(&text).map_err(|detail| ConfigError::Invalid {
        path: path.to_path_buf(),
        detail,
    })
}

fn parse(text: &str) -> Result<AgentConfig, String> {
    if text.trim().is_empty() {
        return Ok(AgentConfig::default());
    }
    let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let mut timeouts = BTreeMap::new();
    for (kind, limit) in raw.timeouts {
        let kind: ScriptKind = kind.parse().map_err(|e| format!("timeouts: {e}"))?;
        let limit = match limit.as_deref() {
            None | Some("none") => None,
            Some(text) => {
                Some(crate::duration::parse(text).map_err(|e| format!("timeouts.{kind}: {e}"))?)
            }
        };
        timeouts.insert(kind, limit);
    }
    let kill_grace = raw
        .kill_grace
        .as_deref()
        .map(crate::duration::parse)
        .transpose()
        .map_err(|e| format!("kill_grace: {e}"))?;
    if let Some(level) = &raw.log_level
        && !["error", "warn", "info", "debug", "trace"].contains(&level.as_str())
    {
        return Err(format!(
            "log_level: '{level}' is not one of error, warn, info, debug, trace"
        ));
    }
    if raw.max_in_flight == Some(0) {
        return Err("max_in_flight: must be at least 1".to_string());
    }
    Ok(AgentConfig {
        timeouts,
        kill_grace,
        bbr_version: raw.bbr_version,
        log_level: raw.log_level,
        max_in_flight: raw.max_in_flight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_bosh_job_renders() {
        let config = parse(
            "timeouts:\n  metadata: 1m\n  pre-backup-lock: 30s\n  backup: null\nkill_grace: 5s\nbbr_version: 1.4.0\nlog_level: debug\nmax_in_flight: 4\n",
        )
        .unwrap();
        assert_eq!(
            config.timeouts[&ScriptKind::PreBackupLock],
            Some(Duration::from_secs(30))
        );
        assert_eq!(config.timeouts[&ScriptKind::Backup], None);
        assert_eq!(config.kill_grace, Some(Duration::from_secs(5)));
        assert_eq!(config.bbr_version.as_deref(), Some("1.4.0"));
        assert_eq!(config.max_in_flight, Some(4));
        assert_eq!(parse("").unwrap(), AgentConfig::default());
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = parse("timeouts:\n  backup: soon\n").unwrap_err();
        assert!(
            err.starts_with("timeouts.backup: invalid duration 'soon'"),
            "{err}"
        );
        let err = parse("timeouts:\n  pre-backup: 1m\n").unwrap_err();
        assert!(err.contains("unknown script 'pre-backup'"), "{err}");
        assert!(
            parse("log_level: loud\n")
                .unwrap_err()
                .starts_with("log_level")
        );
        assert!(parse("colour: blue\n").unwrap_err().contains("colour"));
        assert!(
            parse("max_in_flight: 0\n")
                .unwrap_err()
                .starts_with("max_in_flight")
        );
    }

    #[test]
    fn a_missing_file_is_empty_unless_asked_for() {
        let missing = Path::new("/nonexistent/bbr-agent.yml");
        assert_eq!(load(missing, false).unwrap(), AgentConfig::default());
        assert!(
            load(missing, true)
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/bbr-agent.yml")
        );
    }
}
