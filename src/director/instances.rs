//! A deployment's instances as the director knows them: BBR's VM list
//! (`GET /deployments/NAME/vms?format=full`, a task whose result is one JSON object per line),
//! with each instance's group, index, id, IPs and bootstrap flag. A deployment the director
//! does not have is named with the ones it does have (`GET /deployments`).
//!
//! The list of deployments is for `--all-deployments`.

use crate::interrupt::Level;
use std::time::Duration;

use super::api::{ApiError, Director};

/// How long the director may take to list a deployment's VMs (it asks every agent).
const VMS_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum InstancesError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(
        "deployment '{name}' does not exist on the director at {url}; it has: {existing}: give one of them with --deployment (or BOSH_DEPLOYMENT)"
    )]
    NoSuchDeployment {
        name: String,
        url: String,
        existing: String,
    },
    #[error("--deployment '{0}' is not a BOSH deployment name (letters, digits, '-', '_' and '.')")]
    BadName(String),
    #[error(
        "the director at {url} lists a deployment named '{name}', which is not a BOSH deployment name (letters, digits, '-', '_' and '.')"
    )]
    BadListedName { url: String, name: String },
    #[error("the director at {url} has no deployments")]
    NoDeployments { url: String },
    #[error("the director at {url}: deployment '{name}' has no instances")]
    Empty { url: String, name: String },
    #[error("the director at {url}: an instance of '{name}' is not valid: {detail}")]
    BadInstance {
        url: String,
        name: String,
        detail: String,
    },
}

/// One VM of the deployment, as the director lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Vm {
    /// The instance group.
    pub job_name: String,
    pub index: Option<u32>,
    pub id: String,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub bootstrap: bool,
}

/// Names the director and BOSH accept for deployments, instance groups and instance ids:
/// nothing a URL, a shell or a template would read specially.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name != "."
        && name != ".."
}

/// The VMs of deployment `name`.
pub fn vms(director: &mut Director, name: &str) -> Result<Vec<Vm>, InstancesError> {
    if !plain_name(name) {
        return Err(InstancesError::BadName(name.to_string()));
    }
    let what = format!("listing the VMs of '{name}'");
    let task = director.start_task(&format!("/deployments/{name}/vms?format=full"), None, &what)?;
    let id = match task {
        Ok(id) => id,
        Err(reply) if reply.status == 404 => return Err(no_such(director, name)?),
        Err(reply) => return Err(director.status(&what, &reply).into()),
    };
    let result = director.wait_task(id, &what, VMS_LIMIT, Level::Interrupted)?;
    let bad = |detail: String| InstancesError::BadInstance {
        url: director.url().to_string(),
        name: name.to_string(),
        detail,
    };
    let mut vms = Vec::new();
    for line in result
        .split(|b| *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
    {
        let vm: Vm = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
        if !plain_name(&vm.job_name) || !plain_name(&vm.id) {
            return Err(bad(format!(
                "group '{}', id '{}': not plain names",
                vm.job_name.escape_debug(),
                vm.id.escape_debug()
            )));
        }
        vms.push(vm);
    }
    if vms.is_empty() {
        return Err(InstancesError::Empty {
            url: director.url().to_string(),
            name: name.to_string(),
        });
    }
    Ok(vms)
}

/// The names of every deployment of the director (`GET /deployments`), sorted; each must be
/// a plain name.
pub fn deployments(director: &mut Director) -> Result<Vec<String>, InstancesError> {
    #[derive(serde::Deserialize)]
    struct Deployment {
        name: String,
    }
    let all: Vec<Deployment> = director.get_json("/deployments", "listing the deployments")?;
    let mut names = Vec::new();
    for d in all {
        if !plain_name(&d.name) {
            return Err(InstancesError::BadListedName {
                url: director.url().to_string(),
                name: d.name.escape_debug().to_string(),
            });
        }
        names.push(d.name);
    }
    names.sort();
    Ok(names)
}

/// The error for a deployment that is not there, naming those that are.
fn no_such(director: &mut Director, name: &str) -> Result<InstancesError, ApiError> {
    #[derive(serde::Deserialize)]
    struct Deployment {
        name: String,
    }
    let all: Vec<Deployment> = director.get_json("/deployments", "listing the deployments")?;
    let mut names: Vec<String> = all
        .into_iter()
        .map(|d| d.name.escape_debug().to_string())
        .collect();
    names.sort();
    let existing = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    Ok(InstancesError::NoSuchDeployment {
        name: name.to_string(),
        url: director.url().to_string(),
        existing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_line_as_the_director_writes_it() {
        let line = r#"{"agent_id":"a1","job_name":"db","index":1,"id":"3f2c","ips":["10.0.0.7"],"bootstrap":true,"job_state":"running","vm_cid":"vm-1","processes":[]}"#;
        let vm: Vm = serde_json::from_str(line).unwrap();
        assert_eq!(
            vm,
            Vm {
                job_name: "db".into(),
                index: Some(1),
                id: "3f2c".into(),
                ips: vec!["10.0.0.7".into()],
                bootstrap: true
            }
        );
    }

    #[test]
    fn plain_names_only() {
        assert!(plain_name("cf-mysql_2.v1"));
        for bad in ["", "..", "a/b", "a b", "a?b", "{{x}}", "a\nb", "ä"] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }
}
