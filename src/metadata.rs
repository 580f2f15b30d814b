//! Parsing of what a job's `metadata` script prints.
//!
//! The keys are BBR's: two lock-order lists, `skip_bbr_scripts`, and the discontinued
//! `backup_name`/`restore_name`. Unknown keys are ignored and empty output means "no
//! metadata", as BBR's YAML parser has it. Every error names the job.

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("job '{job}': metadata script printed invalid YAML: {detail}")]
    Yaml { job: String, detail: String },
    #[error(
        "job '{job}': metadata entry {position} of {key} has no '{field}': every entry needs both job_name and release"
    )]
    MissingField {
        job: String,
        key: &'static str,
        position: usize,
        field: &'static str,
    },
}

/// "Lock job `job_name` of release `release` after me."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockBefore {
    pub job_name: String,
    pub release: String,
}

/// A job's parsed metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobMetadata {
    pub backup_should_be_locked_before: Vec<LockBefore>,
    pub restore_should_be_locked_before: Vec<LockBefore>,
    pub skip_bbr_scripts: bool,
    /// Discontinued: BBR warns and ignores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// Discontinued: BBR refuses to restore a job that sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_name: Option<String>,
}

#[derive(Deserialize)]
struct RawLockBefore {
    job_name: Option<String>,
    release: Option<String>,
}

/// Parses the stdout of `job`'s metadata script.
pub fn parse(job: &str, output: &str) -> Result<JobMetadata, MetadataError> {
    let yaml_err = |detail: String| MetadataError::Yaml {
        job: job.to_string(),
        detail,
    };
    let value: serde_yaml::Value =
        serde_yaml::from_str(output).map_err(|e| yaml_err(e.to_string()))?;
    let map = match value {
        serde_yaml::Value::Null => return Ok(JobMetadata::default()),
        serde_yaml::Value::Mapping(map) => map,
        _ => return Err(yaml_err("expected a mapping of metadata keys".to_string())),
    };
    // Key by key, so a wrong type is reported with the key it belongs to.
    fn field<T: serde::de::DeserializeOwned>(
        map: &serde_yaml::Mapping,
        key: &str,
    ) -> Result<Option<T>, String> {
        match map.get(key) {
            None | Some(serde_yaml::Value::Null) => Ok(None),
            Some(v) => serde_yaml::from_value(v.clone())
                .map(Some)
                .map_err(|e| format!("{key}: {e}")),
        }
    }
    const BEFORE_BACKUP: &str = "backup_should_be_locked_before";
    const BEFORE_RESTORE: &str = "restore_should_be_locked_before";
    Ok(JobMetadata {
        backup_should_be_locked_before: lock_list(
            job,
            BEFORE_BACKUP,
            field(&map, BEFORE_BACKUP).map_err(yaml_err)?,
        )?,
        restore_should_be_locked_before: lock_list(
            job,
            BEFORE_RESTORE,
            field(&map, BEFORE_RESTORE).map_err(yaml_err)?,
        )?,
        skip_bbr_scripts: field(&map, "skip_bbr_scripts")
            .map_err(yaml_err)?
            .unwrap_or(false),
        backup_name: field(&map, "backup_name").map_err(yaml_err)?,
        restore_name: field(&map, "restore_name").map_err(yaml_err)?,
    })
}

fn lock_list(
    job: &str,
    key: &'static str,
    raw: Option<Vec<RawLockBefore>>,
) -> Result<Vec<LockBefore>, MetadataError> {
    let missing = |position, field| MetadataError::MissingField {
        job: job.to_string(),
        key,
        position,
        field,
    };
    raw.unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            Ok(LockBefore {
                job_name: entry.job_name.ok_or_else(|| missing(i + 1, "job_name"))?,
                release: entry.release.ok_or_else(|| missing(i + 1, "release"))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_output_and_a_bare_document_marker_mean_no_metadata() {
        assert_eq!(parse("j", ""), Ok(JobMetadata::default()));
        assert_eq!(parse("j", "---\n"), Ok(JobMetadata::default()));
    }

    #[test]
    fn parses_both_lock_lists_and_ignores_unknown_keys() {
        let out = "---\nbackup_should_be_locked_before:\n- job_name: db\n  release: acme\nrestore_should_be_locked_before:\n- {job_name: api, release: acme}\nsomething_new: 3\n";
        let md = parse("lock", out).unwrap();
        assert_eq!(
            md.backup_should_be_locked_before,
            vec![LockBefore {
                job_name: "db".into(),
                release: "acme".into()
            }]
        );
        assert_eq!(md.restore_should_be_locked_before[0].job_name, "api");
        assert!(!md.skip_bbr_scripts);
    }

    #[test]
    fn skip_and_discontinued_names_are_read() {
        let md = parse(
            "j",
            "skip_bbr_scripts: true\nbackup_name: old\nrestore_name: older\n",
        )
        .unwrap();
        assert!(md.skip_bbr_scripts);
        assert_eq!(md.backup_name.as_deref(), Some("old"));
        assert_eq!(md.restore_name.as_deref(), Some("older"));
    }

    #[test]
    fn an_entry_without_release_names_the_job_the_key_and_the_field() {
        let err = parse(
            "lock-api",
            "backup_should_be_locked_before:\n- job_name: db\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "job 'lock-api': metadata entry 1 of backup_should_be_locked_before has no 'release': every entry needs both job_name and release"
        );
        let err = parse("x", "restore_should_be_locked_before:\n- release: r\n").unwrap_err();
        assert!(err.to_string().contains("no 'job_name'"), "{err}");
    }

    #[test]
    fn wrong_types_and_bad_yaml_name_the_job() {
        let err = parse("j", "backup_should_be_locked_before: db\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("job 'j': metadata script printed invalid YAML"),
            "{text}"
        );
        assert!(text.contains("backup_should_be_locked_before"), "{text}");
        let err = parse("k", "skip_bbr_scripts: [true\n").unwrap_err();
        assert!(err.to_string().starts_with("job 'k'"), "{err}");
        let err = parse("k", "skip_bbr_scripts: maybe\n").unwrap_err();
        assert!(err.to_string().contains("skip_bbr_scripts"), "{err}");
    }
}
