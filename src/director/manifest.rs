//! The deployment's manifest (`GET /deployments/NAME`, `{manifest: "<yaml>"}`), for what only
//! it knows: each job's release, by instance group, as BBR reads it (`/instance_groups/
//! name=G/jobs/name=J/release`, or a v1 manifest's `/jobs/name=G/templates/name=J/release`).
//!
//! A job the manifest does not name (a runtime-config addon's, say) has no known release and
//! is ordered by its name alone, as with an inventory.
//!
//! It also says which jobs are `bbr.backup_one_restore_all` (BBR's `IsJobBackupOneRestoreAll`):
//! a v2 job's `properties: {bbr: {backup_one_restore_all: true}}`, or in a v1 manifest the
//! instance group's own `properties`, for each of its templates. A value that is not a
//! boolean is refused (BBR's type assertion would panic).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::api::{ApiError, Director};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the manifest of deployment '{name}' is not valid YAML: {detail}")]
    Parse { name: String, detail: String },
    #[error(
        "the manifest of deployment '{name}': instance group '{group}' job '{job}': properties.bbr.backup_one_restore_all is {value}, not true or false"
    )]
    NotABool {
        name: String,
        group: String,
        job: String,
        value: String,
    },
}

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default)]
    instance_groups: Option<Vec<Group>>,
    /// A v1 manifest's instance groups.
    #[serde(default)]
    jobs: Option<Vec<V1Group>>,
}

#[derive(Debug, Deserialize)]
struct Group {
    name: String,
    #[serde(default)]
    jobs: Vec<Job>,
}

#[derive(Debug, Deserialize)]
struct V1Group {
    name: String,
    #[serde(default)]
    templates: Vec<Job>,
    /// A v1 group's properties, where its backup_one_restore_all is.
    #[serde(default)]
    properties: serde_yaml::Value,
}

#[derive(Debug, Deserialize)]
struct Job {
    name: String,
    #[serde(default)]
    release: Option<String>,
    #[serde(default)]
    properties: serde_yaml::Value,
}

/// `properties.bbr.backup_one_restore_all`: absent is false; a value not a bool is its
/// one-line YAML, for the error.
fn one_for_all_flag(properties: &serde_yaml::Value) -> Result<bool, String> {
    match properties
        .get("bbr")
        .and_then(|bbr| bbr.get("backup_one_restore_all"))
    {
        None | Some(serde_yaml::Value::Null) => Ok(false),
        Some(serde_yaml::Value::Bool(b)) => Ok(*b),
        Some(other) => {
            let text = serde_yaml::to_string(other).unwrap_or_default();
            Err(super::client::one_line(text.trim())
                .chars()
                .take(64)
                .collect())
        }
    }
}

/// What the manifest says of each instance group's jobs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest as the director gave it, for `--with-manifest`.
    text: String,
    /// Instance group -> job -> release.
    releases: BTreeMap<String, BTreeMap<String, String>>,
    /// `(instance group, job)` with `bbr.backup_one_restore_all: true`.
    one_for_all: Vec<(String, String)>,
}

impl Manifest {
    pub fn parse(name: &str, text: &str) -> Result<Manifest, ManifestError> {
        let raw: Raw = serde_yaml::from_str(text).map_err(|e| ManifestError::Parse {
            name: name.to_string(),
            detail: super::client::one_line(&e.to_string()),
        })?;
        // Each group's jobs, each with its backup_one_restore_all flag's properties.
        let groups: Vec<(String, Vec<(Job, serde_yaml::Value)>)> =
            match (raw.instance_groups, raw.jobs) {
                (Some(groups), _) => groups
                    .into_iter()
                    .map(|g| {
                        let jobs = g
                            .jobs
                            .into_iter()
                            .map(|mut j| {
                                let p = std::mem::take(&mut j.properties);
                                (j, p)
                            })
                            .collect();
                        (g.name, jobs)
                    })
                    .collect(),
                (None, Some(v1)) => v1
                    .into_iter()
                    .map(|g| {
                        let p = g.properties;
                        let jobs = g.templates.into_iter().map(|j| (j, p.clone())).collect();
                        (g.name, jobs)
                    })
                    .collect(),
                (None, None) => Vec::new(),
            };
        let mut releases = BTreeMap::new();
        let mut one_for_all = Vec::new();
        for (group, jobs) in groups {
            let mut of_group = BTreeMap::new();
            for (job, properties) in jobs {
                let flag =
                    one_for_all_flag(&properties).map_err(|value| ManifestError::NotABool {
                        name: name.to_string(),
                        group: group.clone(),
                        job: job.name.clone(),
                        value,
                    })?;
                if flag {
                    one_for_all.push((group.clone(), job.name.clone()));
                }
                if let Some(release) = job.release {
                    of_group.insert(job.name, release);
                }
            }
            releases.insert(group, of_group);
        }
        Ok(Manifest {
            text: text.to_string(),
            releases,
            one_for_all,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// `(instance group, job)` whose properties set `bbr.backup_one_restore_all: true`.
    pub fn one_for_all(&self) -> &[(String, String)] {
        &self.one_for_all
    }

    /// Job -> release for the jobs of instance group `group`.
    pub fn releases_of(&self, group: &str) -> BTreeMap<String, String> {
        self.releases.get(group).cloned().unwrap_or_default()
    }
}

/// The manifest of deployment `name`.
pub fn fetch(director: &mut Director, name: &str) -> Result<Manifest, ManifestError> {
    #[derive(Deserialize)]
    struct Reply {
        #[serde(default)]
        manifest: String,
    }
    let reply: Reply = director.get_json(
        &format!("/deployments/{name}"),
        &format!("the manifest of '{name}'"),
    )?;
    Manifest::parse(name, &reply.manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_by_group_from_v2_and_v1_manifests() {
        let v2 = "name: cf\ninstance_groups:\n- name: db\n  jobs:\n  - {name: db, release: acme, properties: {bbr: {backup_one_restore_all: true}}}\n  - {name: agent, release: bbr-agent}\n- name: api\n  jobs: []\n";
        let m = Manifest::parse("cf", v2).unwrap();
        assert_eq!(
            m.releases_of("db").get("db").map(String::as_str),
            Some("acme")
        );
        assert_eq!(m.releases_of("db").len(), 2);
        assert!(m.releases_of("api").is_empty());
        assert!(m.releases_of("nope").is_empty());
        let v1 = "jobs:\n- name: db\n  templates:\n  - {name: db, release: old}\n";
        let m = Manifest::parse("cf", v1).unwrap();
        assert_eq!(
            m.releases_of("db").get("db").map(String::as_str),
            Some("old")
        );
        assert!(Manifest::parse("cf", "instance_groups: 3").is_err());
    }

    #[test]
    fn backup_one_restore_all_from_job_properties_or_a_v1_groups() {
        let v2 = "instance_groups:\n- name: db\n  jobs:\n  - {name: db, release: acme, properties: {bbr: {backup_one_restore_all: true}}}\n  - {name: other, release: acme, properties: {bbr: {backup_one_restore_all: false}}}\n  - {name: plain, release: acme}\n";
        let m = Manifest::parse("cf", v2).unwrap();
        assert_eq!(m.one_for_all(), &[("db".to_string(), "db".to_string())]);
        let v1 = "jobs:\n- name: db\n  properties: {bbr: {backup_one_restore_all: true}}\n  templates:\n  - {name: a, release: r}\n  - {name: b, release: r}\n";
        let m = Manifest::parse("cf", v1).unwrap();
        assert_eq!(m.one_for_all().len(), 2);
        let bad = "instance_groups:\n- name: db\n  jobs:\n  - {name: db, properties: {bbr: {backup_one_restore_all: 'yes'}}}\n";
        let err = Manifest::parse("cf", bad).unwrap_err().to_string();
        assert!(
            err.contains("instance group 'db' job 'db'") && err.contains("not true or false"),
            "{err}"
        );
    }
}
