//! How scripts are run: a timeout per script kind, the grace period, the BBR version; and how
//! those are settled from built-in defaults, the agent's configuration file and the
//! operator's flags, in that order.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{AgentConfig, DEFAULT_KILL_GRACE, default_timeouts};
use crate::contract::{DEFAULT_BBR_VERSION, ScriptKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSettings {
    /// Every kind's limit; `None` runs as long as it takes.
    pub timeouts: BTreeMap<ScriptKind, Option<Duration>>,
    /// Between SIGTERM and SIGKILL for a script that timed out or was interrupted.
    pub grace: Duration,
    /// `BBR_VERSION` for metadata scripts.
    pub bbr_version: String,
}

/// What the operator asked for on the command line; the driver passes it to every agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    pub timeouts: BTreeMap<ScriptKind, Option<Duration>>,
    pub kill_grace: Option<Duration>,
    pub bbr_version: Option<String>,
}

impl ScriptSettings {
    /// Defaults, then the configuration file, then the operator's flags.
    pub fn resolve(config: &AgentConfig, overrides: &Overrides) -> ScriptSettings {
        let mut timeouts = default_timeouts();
        timeouts.extend(config.timeouts.iter().map(|(k, v)| (*k, *v)));
        timeouts.extend(overrides.timeouts.iter().map(|(k, v)| (*k, *v)));
        ScriptSettings {
            timeouts,
            grace: overrides
                .kill_grace
                .or(config.kill_grace)
                .unwrap_or(DEFAULT_KILL_GRACE),
            bbr_version: overrides
                .bbr_version
                .clone()
                .or_else(|| config.bbr_version.clone())
                .unwrap_or_else(|| DEFAULT_BBR_VERSION.to_string()),
        }
    }

    pub fn timeout(&self, kind: ScriptKind) -> Option<Duration> {
        self.timeouts.get(&kind).copied().flatten()
    }
}

impl Default for ScriptSettings {
    fn default() -> Self {
        ScriptSettings::resolve(&AgentConfig::default(), &Overrides::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let defaults = ScriptSettings::default();
        assert_eq!(
            defaults.timeout(ScriptKind::PreBackupLock),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(defaults.timeout(ScriptKind::Backup), None);
        assert_eq!(defaults.grace, Duration::from_secs(10));

        let config = AgentConfig {
            timeouts: BTreeMap::from([
                (ScriptKind::PreBackupLock, Some(Duration::from_secs(60))),
                (ScriptKind::Backup, Some(Duration::from_secs(3600))),
            ]),
            kill_grace: Some(Duration::from_secs(3)),
            bbr_version: Some("1.5.0".into()),
            ..Default::default()
        };
        let flags = Overrides {
            timeouts: BTreeMap::from([(ScriptKind::Backup, None)]),
            kill_grace: None,
            bbr_version: Some("1.4.0".into()),
        };
        let s = ScriptSettings::resolve(&config, &flags);
        assert_eq!(
            s.timeout(ScriptKind::PreBackupLock),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            s.timeout(ScriptKind::Backup),
            None,
            "the flag's `none` wins"
        );
        assert_eq!(s.grace, Duration::from_secs(3));
        assert_eq!(s.bbr_version, "1.4.0");
    }
}
