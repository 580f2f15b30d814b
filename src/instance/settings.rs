//! How scripts are run: timeouts per script kind, the grace period, the BBR version.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::contract::{DEFAULT_BBR_VERSION, ScriptKind};

/// Timeouts by script kind; a kind without one runs as long as it takes, as under BBR.
#[derive(Debug, Clone, Default)]
pub struct Timeouts {
    pub all: Option<Duration>,
    pub by_kind: BTreeMap<ScriptKind, Duration>,
}

impl Timeouts {
    pub fn for_kind(&self, kind: ScriptKind) -> Option<Duration> {
        self.by_kind.get(&kind).copied().or(self.all)
    }
}

#[derive(Debug, Clone)]
pub struct ScriptSettings {
    pub timeouts: Timeouts,
    /// Between SIGTERM and SIGKILL for a script that timed out.
    pub grace: Duration,
    /// `BBR_VERSION` for metadata scripts.
    pub bbr_version: String,
}

impl Default for ScriptSettings {
    fn default() -> Self {
        ScriptSettings {
            timeouts: Timeouts::default(),
            grace: Duration::from_secs(10),
            bbr_version: DEFAULT_BBR_VERSION.to_string(),
        }
    }
}
