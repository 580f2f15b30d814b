//! The checksums of an encrypted backup: they name every file, so the `metadata` keeps only
//! BBR's shape (instances, jobs, times) with each job's checksums empty, and the whole
//! metadata as a plain run writes it is stored age-encrypted beside it, as
//! [`super::CHECKSUMS_OBJECT`]. Reading, the two must agree on everything but the checksums:
//! a plain metadata edited (a job added, the record or a time changed) is refused.

use std::io::{Read, Write};

use super::{CodecError, Identities, Recipients};
use crate::artifact::backup_dir::BackupMetadata;
use crate::artifact::metadata_keys;

/// The plain metadata to store, and the encrypted object holding the whole of `metadata`.
pub fn seal(
    metadata: &BackupMetadata,
    recipients: &Recipients,
) -> std::io::Result<(BackupMetadata, Vec<u8>)> {
    let yaml = metadata_keys::to_yaml(metadata).map_err(std::io::Error::other)?;
    let mut sealed = recipients.encryptor(Vec::new())?;
    sealed.write_all(yaml.as_bytes())?;
    Ok((without_checksums(metadata), sealed.finish()?))
}

/// `metadata` with every job's checksums left out.
fn without_checksums(metadata: &BackupMetadata) -> BackupMetadata {
    let mut plain = metadata.clone();
    for instance in &mut plain.instances {
        for artifact in &mut instance.artifacts {
            artifact.checksums.clear();
        }
    }
    for artifact in &mut plain.custom_artifacts {
        artifact.checksums.clear();
    }
    plain
}

/// The whole metadata from the encrypted object `input` (named `object` in errors), at most
/// `max` bytes of it, checked against the `plain` one it must match but for the checksums.
pub fn open(
    input: Box<dyn Read + Send>,
    object: &str,
    plain: &BackupMetadata,
    identities: Option<&Identities>,
    max: u64,
) -> Result<BackupMetadata, CodecError> {
    let layers = super::Layers {
        zstd: false,
        age: true,
    };
    let recipients = plain
        .bbr_agent
        .as_ref()
        .map(|r| r.recipients.clone())
        .unwrap_or_default();
    let mut text = Vec::new();
    super::decoder(input, object, layers, identities, &recipients, false)?
        .take(max + 1)
        .read_to_end(&mut text)
        .map_err(|e| CodecError::Damaged {
            object: object.to_string(),
            detail: e.to_string(),
        })?;
    let damaged = |detail: String| CodecError::Damaged {
        object: object.to_string(),
        detail,
    };
    if text.len() as u64 > max {
        return Err(damaged(format!("it holds more than {} MiB", max >> 20)));
    }
    let text = String::from_utf8(text).map_err(|_| damaged("it is not UTF-8 text".into()))?;
    let mut whole: BackupMetadata =
        serde_yaml::from_str(&text).map_err(|e| damaged(format!("it is not metadata ({e})")))?;
    metadata_keys::read_keys(&mut whole).map_err(damaged)?;
    if without_checksums(&whole) != *plain {
        return Err(CodecError::Damaged {
            object: object.to_string(),
            detail: "the plain metadata beside it does not list the same instances, jobs, times and record".into(),
        });
    }
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::backup_dir::{ArtifactChecksums, BackupActivity, InstanceArtifacts};
    use crate::artifact::codec::{Codecs, Zstd};

    #[test]
    fn the_checksums_are_sealed_and_an_edited_plain_metadata_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, public) = super::super::age::tests::identity_file(dir.path(), "key");
        let ids = Identities::read(&path).unwrap();
        let mut recipients = Recipients::default();
        recipients.add(&public).unwrap();
        let codecs = Codecs {
            compression: Some(Zstd { level: 3 }),
            recipients: recipients.clone(),
            ..Codecs::default()
        };
        let metadata = BackupMetadata {
            instances: vec![InstanceArtifacts {
                name: "db".into(),
                index: "0".into(),
                artifacts: vec![ArtifactChecksums {
                    name: "pg".into(),
                    checksums: [("./secret-name.sql".to_string(), "ab".repeat(32))]
                        .into_iter()
                        .collect(),
                }],
            }],
            bbr_agent: codecs.record(),
            backup_activity: BackupActivity {
                start_time: "a".into(),
                finish_time: Some("b".into()),
            },
            ..Default::default()
        };
        let (plain, sealed) = seal(&metadata, &recipients).unwrap();
        let yaml = metadata_keys::to_yaml(&plain).unwrap();
        assert!(!yaml.contains("secret-name"), "{yaml}");
        let opened = |plain: &BackupMetadata, sealed: Vec<u8>| {
            open(
                Box::new(std::io::Cursor::new(sealed)),
                "cf/checksums.age",
                plain,
                Some(&ids),
                1 << 20,
            )
        };
        assert_eq!(opened(&plain, sealed.clone()).unwrap(), metadata);
        let mut edited = plain.clone();
        edited.instances[0].artifacts[0].name = "other".into();
        let e = opened(&edited, sealed.clone()).unwrap_err().to_string();
        assert!(e.starts_with("cf/checksums.age: the plain metadata"), "{e}");
        let mut flipped = sealed;
        let at = flipped.len() - 20;
        flipped[at] ^= 1;
        let e = opened(&plain, flipped).unwrap_err().to_string();
        assert!(e.contains("altered or damaged"), "{e}");
    }
}
