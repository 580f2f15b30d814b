//! The inventory file: a deployment's name, its instances, and the command (a tera template)
//! that starts `bbr-agent serve` on each of them, every value in it quoted for the shell.
//! `{{ agent }}` in it stands for the agent, installed or brought (driver::bootstrap).
//!
//! What a director would say of an instance may be written in too: its jobs' releases
//! (`releases: {job: release}`, for the lock order's `{job_name, release}` entries), whether
//! it is its group's `bootstrap` instance, and which of its jobs are
//! `backup_one_restore_all` (for the whole group, as a manifest says it).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::shell_quote;

use crate::artifact::backup_dir::DEPLOYMENT_NAME_MAX;
use crate::artifact::plain_name::{self, NAME_MAX, NotPlain};
use crate::instance::InstanceId;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read the inventory {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the inventory {path} is not valid: {detail} (an inventory holds `deployment`, `command` and `instances`, each with `group`, `index` and optionally `address`, `id`, `command`: see the README's \"A whole deployment\")"
    )]
    Parse { path: PathBuf, detail: String },
    #[error(
        "the inventory {path}: instance {instance} has no command, and there is no top-level command"
    )]
    NoCommand { path: PathBuf, instance: InstanceId },
    #[error("the inventory {path}: instance {instance} is listed twice")]
    Duplicate { path: PathBuf, instance: InstanceId },
    #[error(
        "the inventory {path}: instances {first} and {second} both say bootstrap: true; a group has one bootstrap instance"
    )]
    TwoBootstraps {
        path: PathBuf,
        first: InstanceId,
        second: InstanceId,
    },
    #[error(
        "the inventory {path}: the command of instance {instance} cannot be rendered: {detail}"
    )]
    Template {
        path: PathBuf,
        instance: InstanceId,
        detail: String,
    },
    #[error("the inventory {path} lists no instances")]
    Empty { path: PathBuf },
    #[error(
        "the inventory {path}: {field} {value:?} {why}, so it cannot be part of a file name (the artifact directory and its tars are named after it); write the name BOSH gives it"
    )]
    NotPlain {
        path: PathBuf,
        field: String,
        value: String,
        why: NotPlain,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    deployment: String,
    #[serde(default)]
    command: Option<String>,
    instances: Vec<RawInstance>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    group: String,
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    command: Option<String>,
    /// Job -> release.
    #[serde(default)]
    releases: BTreeMap<String, String>,
    #[serde(default)]
    bootstrap: bool,
    /// Jobs backed up once (by the group's bootstrap) and restored to all.
    #[serde(default)]
    backup_one_restore_all: Vec<String>,
}

/// One instance and the shell command that reaches its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: InstanceId,
    pub command: String,
}

#[derive(Debug, Clone)]
pub struct Inventory {
    pub deployment: String,
    pub targets: Vec<Target>,
    /// Instance -> its jobs' releases, for the instances that list them.
    pub releases: BTreeMap<InstanceId, BTreeMap<String, String>>,
    /// The instances that say `bootstrap: true`, at most one per group.
    pub bootstrap: Vec<InstanceId>,
    /// `(group, job)` that some instance of the group lists as `backup_one_restore_all`.
    pub backup_one_restore_all: BTreeSet<(String, String)>,
}

/// Reads and renders an inventory file.
pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
    let raw: RawInventory = serde_yaml::from_str(text).map_err(|e| InventoryError::Parse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if raw.instances.is_empty() {
        return Err(InventoryError::Empty {
            path: path.to_path_buf(),
        });
    }
    // Every name that becomes a file name is checked before anything runs.
    let not_plain = |field: String, value: &str, why| InventoryError::NotPlain {
        path: path.to_path_buf(),
        field,
        value: value.to_string(),
        why,
    };
    plain_name::check(&raw.deployment, DEPLOYMENT_NAME_MAX)
        .map_err(|why| not_plain("deployment".into(), &raw.deployment, why))?;
    for (n, instance) in raw.instances.iter().enumerate() {
        plain_name::check(&instance.group, NAME_MAX).map_err(|why| {
            let field = format!("instances[{n}].group (index {})", instance.index);
            not_plain(field, &instance.group, why)
        })?;
    }
    let tera = command_renderer();
    let mut seen = BTreeSet::new();
    let mut targets = Vec::new();
    let mut releases = BTreeMap::new();
    let mut bootstrap: Vec<InstanceId> = Vec::new();
    let mut backup_one_restore_all = BTreeSet::new();
    for instance in raw.instances {
        let id = InstanceId {
            group: instance.group.clone(),
            index: instance.index.to_string(),
        };
        if !seen.insert(id.clone()) {
            return Err(InventoryError::Duplicate {
                path: path.to_path_buf(),
                instance: id,
            });
        }
        if !instance.releases.is_empty() {
            releases.insert(id.clone(), instance.releases.clone());
        }
        if instance.bootstrap {
            if let Some(first) = bootstrap.iter().find(|b| b.group == id.group) {
                return Err(InventoryError::TwoBootstraps {
                    path: path.to_path_buf(),
                    first: first.clone(),
                    second: id,
                });
            }
            bootstrap.push(id.clone());
        }
        for job in &instance.backup_one_restore_all {
            backup_one_restore_all.insert((id.group.clone(), job.clone()));
        }
        let template = instance
            .command
            .as_deref()
            .or(raw.command.as_deref())
            .ok_or_else(|| InventoryError::NoCommand {
                path: path.to_path_buf(),
                instance: id.clone(),
            })?;
        let mut context = tera::Context::new();
        // The bootstrap's words replace it when the run starts (driver::bootstrap).
        context.insert("agent", super::bootstrap::PLACEHOLDER);
        context.insert("deployment", &raw.deployment);
        context.insert("group", &instance.group);
        context.insert("index", &instance.index);
        if let Some(v) = &instance.id {
            context.insert("id", v);
        }
        if let Some(v) = &instance.address {
            context.insert("address", v);
        }
        let command =
            tera.render_str(template, &context, true)
                .map_err(|e| InventoryError::Template {
                    path: path.to_path_buf(),
                    instance: id.clone(),
                    detail: error_chain(&e),
                })?;
        targets.push(Target { id, command });
    }
    Ok(Inventory {
        deployment: raw.deployment,
        targets,
        releases,
        bootstrap,
        backup_one_restore_all,
    })
}

/// Renders a session command: every `{{ value }}` is quoted for the shell (one word,
/// whatever it holds), unless the template says `{{ value | unquoted }}`: a value meant to be
/// shell, taken as it is.
fn command_renderer() -> tera::Tera {
    fn unquoted(value: Cow<'_, str>, _: tera::Kwargs, _: &tera::State) -> tera::Value {
        tera::Value::safe_string(&value)
    }
    let mut tera = tera::Tera::default();
    tera.set_escape_fn(shell_quote::escape);
    tera.register_filter("unquoted", unquoted);
    tera
}

/// Tera's error and its causes on one line: the first line of each (the rest is a drawing
/// of the template's source, which the operator has in the inventory).
fn error_chain(e: &dyn std::error::Error) -> String {
    let first = |e: &dyn std::error::Error| {
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default().trim();
        line.strip_prefix("error: ").unwrap_or(line).to_string()
    };
    let mut parts = vec![first(e)];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(first(s));
        source = s.source();
    }
    parts.retain(|p| !p.is_empty());
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_cannot_be_rendered_is_one_line_naming_the_variable_and_those_there_are() {
        let Err(e) = parse(
            Path::new("inv.yml"),
            "deployment: acme\ncommand: 'ssh {{ adress }}'\ninstances:\n- {group: db, index: 0, address: 10.0.0.1}\n",
        ) else {
            panic!("an undefined variable was rendered");
        };
        let e = e.to_string();
        assert_eq!(
            e,
            "the inventory inv.yml: the command of instance db/0 cannot be rendered: Variable `adress` is not defined. Available variables: address, agent, deployment, group, index"
        );
        let Err(e) = parse(Path::new("inv.yml"), "deployment: acme\n") else {
            panic!("an inventory without instances was taken");
        };
        let e = e.to_string();
        assert!(
            e.contains("missing field `instances`") && e.contains("\"A whole deployment\""),
            "{e}"
        );
    }

    #[test]
    fn renders_each_instances_command_with_overrides() {
        let inv = parse(
            Path::new("inv.yml"),
            "deployment: cf\ncommand: \"ssh {{ address }} serve --group {{ group }}/{{ index }} {{ deployment }}\"\ninstances:\n- {group: redis, index: 0, address: 10.0.0.5}\n- {group: api, index: 1, command: \"local {{ group }} {{ id }}\", id: abc}\n",
        )
        .unwrap();
        assert_eq!(inv.deployment, "cf");
        assert_eq!(
            inv.targets[0].command,
            "ssh 10.0.0.5 serve --group redis/0 cf"
        );
        assert_eq!(inv.targets[1].command, "local api abc");
        assert_eq!(inv.targets[1].id.to_string(), "api/1");
    }

    #[test]
    fn a_missing_variable_names_the_instance() {
        let err = parse(
            Path::new("inv.yml"),
            "deployment: cf\ncommand: \"ssh {{ address }}\"\ninstances:\n- {group: redis, index: 0}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("instance redis/0"), "{err}");
        assert!(err.contains("address"), "{err}");
    }

    #[test]
    fn duplicates_unknown_keys_and_missing_commands_are_refused() {
        let dup = "deployment: cf\ncommand: x\ninstances:\n- {group: a, index: 0}\n- {group: a, index: 0}\n";
        assert!(matches!(
            parse(Path::new("i"), dup),
            Err(InventoryError::Duplicate { .. })
        ));
        let unknown = "deployment: cf\ncommand: x\ninstances:\n- {group: a, index: 0, adress: y}\n";
        assert!(
            parse(Path::new("i"), unknown)
                .unwrap_err()
                .to_string()
                .contains("adress")
        );
        let none = "deployment: cf\ninstances:\n- {group: a, index: 0}\n";
        assert!(matches!(
            parse(Path::new("i"), none),
            Err(InventoryError::NoCommand { .. })
        ));
    }

    #[test]
    fn names_that_are_not_one_file_name_are_refused_naming_the_field() {
        let err = parse(
            Path::new("inv.yml"),
            "deployment: cf\ncommand: x\ninstances:\n- {group: api, index: 0}\n- {group: ../../x, index: 3}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("inv.yml: instances[1].group (index 3) \"../../x\" contains `/`"),
            "{err}"
        );
        for deployment in ["../../x", "..", "\"\"", "\"a\\nb\""] {
            let text = format!(
                "deployment: {deployment}\ncommand: x\ninstances:\n- {{group: a, index: 0}}\n"
            );
            let err = parse(Path::new("inv.yml"), &text).unwrap_err().to_string();
            assert!(err.contains("inv.yml: deployment "), "{deployment}: {err}");
        }
        let long = format!(
            "deployment: {}\ncommand: x\ninstances:\n- {{group: a, index: 0}}\n",
            "d".repeat(239)
        );
        assert!(matches!(
            parse(Path::new("i"), &long),
            Err(InventoryError::NotPlain {
                why: NotPlain::TooLong { .. },
                ..
            })
        ));
    }

    #[test]
    fn releases_bootstrap_and_backup_one_restore_all_are_read_per_instance() {
        let inv = parse(
            Path::new("inv.yml"),
            "deployment: cf\ncommand: x\ninstances:\n- {group: db, index: 0, bootstrap: true, releases: {db: acme}, backup_one_restore_all: [db]}\n- {group: db, index: 1}\n",
        )
        .unwrap();
        let db0 = inv.targets[0].id.clone();
        assert_eq!(inv.releases[&db0]["db"], "acme");
        assert_eq!(inv.releases.len(), 1);
        assert_eq!(inv.bootstrap, [db0]);
        assert!(
            inv.backup_one_restore_all
                .contains(&("db".to_string(), "db".to_string()))
        );
        let two = "deployment: cf\ncommand: x\ninstances:\n- {group: db, index: 0, bootstrap: true}\n- {group: db, index: 1, bootstrap: true}\n";
        let err = parse(Path::new("inv.yml"), two).unwrap_err().to_string();
        assert!(
            err.contains("instances db/0 and db/1 both say bootstrap: true"),
            "{err}"
        );
    }

    #[test]
    fn values_are_quoted_for_the_shell_unless_unquoted() {
        let inv = parse(
            Path::new("inv.yml"),
            "deployment: cf\ncommand: \"ssh vcap@{{ address }} serve {{ group }}-{{ index }}\"\ninstances:\n- {group: db, index: 0, address: \"$V; touch pwned #\"}\n- {group: db, index: 1, address: \"it's\"}\n- {group: db, index: 2, address: \"-J jump 10.0.0.5\", command: \"ssh {{ address | unquoted }} serve\"}\n",
        )
        .unwrap();
        assert_eq!(
            inv.targets[0].command,
            "ssh vcap@'$V; touch pwned #' serve db-0"
        );
        assert_eq!(inv.targets[1].command, r"ssh vcap@'it'\''s' serve db-1");
        assert_eq!(inv.targets[2].command, "ssh -J jump 10.0.0.5 serve");
    }
}
