//! The shared context every command gets: the VM's layout, the agent's configuration, the
//! console, and the in-process instance and deployment of one built from them.

use std::sync::Arc;

use super::identity::local_identity;
use crate::cli::{IdentityArgs, ScriptArgs};
use crate::config::AgentConfig;
use crate::console::Console;
use crate::instance::{InstanceId, LocalInstance, Overrides, ScriptSettings};
use crate::layout::Layout;
use crate::workflow::{Deployment, Outcome};

/// What every local command needs.
pub struct Context {
    pub layout: Layout,
    pub config: AgentConfig,
    /// `--bbr-version`, if given.
    pub bbr_version: Option<String>,
    pub console: Arc<Console>,
}

impl Context {
    pub fn overrides(&self, scripts: &ScriptArgs) -> Overrides {
        scripts.overrides(self.bbr_version.clone())
    }

    pub fn settings(&self, scripts: &ScriptArgs) -> ScriptSettings {
        ScriptSettings::resolve(&self.config, &self.overrides(scripts))
    }

    pub fn instance(&self, id: InstanceId, settings: ScriptSettings) -> LocalInstance {
        LocalInstance::new(
            id,
            self.layout.clone(),
            settings,
            self.console.script_events(),
        )
    }

    /// The deployment and instance BOSH wrote for this VM, or `local` and `local/0` where it
    /// wrote none (a command that needs the real names asks for them instead).
    pub fn local_identity(&self) -> (String, InstanceId) {
        local_identity(&self.layout, &IdentityArgs::none()).unwrap_or_else(|_| {
            let id = InstanceId {
                group: "local".into(),
                index: "0".into(),
            };
            ("local".to_string(), id)
        })
    }

    /// This VM as a deployment of one.
    pub fn deployment(&self, scripts: &ScriptArgs) -> Deployment {
        let (name, id) = self.local_identity();
        let instance = self.instance(id, self.settings(scripts));
        Deployment::new(name, vec![Box::new(instance)])
    }

    pub fn report(&self, outcome: &Outcome) -> i32 {
        for error in outcome.lines() {
            self.console.error(error);
        }
        outcome.exit_code()
    }
}
