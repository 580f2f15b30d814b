//! The deployment's manifest (`GET /deployments/NAME`, `{manifest: "<yaml>"}`), for what only
//! it knows: each job's release, by instance group, as BBR reads it (`/instance_groups/
//! name=G/jobs/name=J/release`, or a v1 manifest's `/jobs/name=G/templates/name=J/release`).
//!
//! A job the manifest does not name (a runtime-config addon's, say) has no known release and
//! is ordered by its name alone, as with an inventory.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::api::{ApiError, Director};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the manifest of deployment '{name}' is not valid YAML: {detail}")]
    Parse { name: String, detail: String },
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
}

#[derive(Debug, Deserialize)]
struct Job {
    name: String,
    #[serde(default)]
    release: Option<String>,
}

/// What the manifest says of each instance group's jobs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest as the director gave it, for `--with-manifest`.
    text: String,
    /// Instance group -> job -> release.
    releases: BTreeMap<String, BTreeMap<String, String>>,
}

impl Manifest {
    pub fn parse(name: &str, text: &str) -> Result<Manifest, ManifestError> {
        let raw: Raw = serde_yaml::from_str(text).map_err(|e| ManifestError::Parse {
            name: name.to_string(),
            detail: super::client::one_line(&e.to_string()),
        })?;
        let groups: Vec<(String, Vec<Job>)> = match (raw.instance_groups, raw.jobs) {
            (Some(groups), _) => groups.into_iter().map(|g| (g.name, g.jobs)).collect(),
            (None, Some(v1)) => v1.into_iter().map(|g| (g.name, g.templates)).collect(),
            (None, None) => Vec::new(),
        };
        let releases = groups
            .into_iter()
            .map(|(group, jobs)| {
                let jobs = jobs
                    .into_iter()
                    .filter_map(|j| j.release.map(|r| (j.name, r)))
                    .collect();
                (group, jobs)
            })
            .collect();
        Ok(Manifest {
            text: text.to_string(),
            releases,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
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
}
