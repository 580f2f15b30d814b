//! How the metadata's YAML holds the checksum key of a name that is not UTF-8: as BBR's Go
//! YAML writer holds any string that is not UTF-8, a `!!binary` scalar of the name's bytes in
//! base64 (`!!binary Li9jYWbp: <sha>` for `./caf\xe9`), which BBR's reader turns back into
//! those bytes. A real name's key begins `./`, and base64 has no `.`, so the two never meet.
//!
//! serde_yaml neither writes that tag nor reports it when it reads, so the keys are tagged
//! here on the way out (with a random tag of our own, then made `!!binary`) and recognised on
//! the way in.

use serde_yaml::Value;
use serde_yaml::value::{Tag, TaggedValue};

use super::backup_dir::{ArtifactChecksums, BackupMetadata};
use super::base64;
use super::checksums::{BINARY_KEY, Checksums, key_of_name, shown_key};

/// The metadata as YAML, every key of a name that is not UTF-8 as a `!!binary` scalar.
pub fn to_yaml(metadata: &BackupMetadata) -> Result<String, serde_yaml::Error> {
    let binary = artifacts(metadata)
        .flat_map(|a| a.checksums.keys())
        .filter(|k| k.starts_with(BINARY_KEY))
        .count();
    if binary == 0 {
        return serde_yaml::to_string(metadata);
    }
    let value = serde_yaml::to_value(metadata)?;
    // The keys get a tag of their own first, then that tag's text is made `!!binary`.
    // A random marker: no name can hold it by design, and the count proves none does.
    for _ in 0..8 {
        let marker = format!("bbr-agent-binary-{:016x}{:016x}", random(), random());
        let text = serde_yaml::to_string(&tag_keys(value.clone(), &marker))?;
        let token = format!("!{marker} ");
        if text.matches(&token).count() == binary {
            return Ok(text.replace(&token, "!!binary "));
        }
    }
    Err(serde::ser::Error::custom(
        "cannot tag the checksum keys of names that are not UTF-8 as !!binary",
    ))
}

/// 64 random bits, from the standard library's randomly keyed hasher.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// The artifacts whose keys `tag_keys` tags: every instance's and the named ones.
fn artifacts(metadata: &BackupMetadata) -> impl Iterator<Item = &ArtifactChecksums> {
    metadata
        .instances
        .iter()
        .flat_map(|i| i.artifacts.iter())
        .chain(metadata.custom_artifacts.iter())
}

/// `value` with every binary key of every artifact's checksums tagged `!marker`.
fn tag_keys(mut value: Value, marker: &str) -> Value {
    let mut artifacts: Vec<&mut Value> = Vec::new();
    let Value::Mapping(top) = &mut value else {
        return value;
    };
    for (key, list) in top.iter_mut() {
        let Value::Sequence(list) = list else {
            continue;
        };
        match key.as_str() {
            Some("instances") => {
                for instance in list {
                    if let Some(Value::Sequence(list)) = instance.get_mut("artifacts") {
                        artifacts.extend(list.iter_mut());
                    }
                }
            }
            Some("custom_artifacts") => artifacts.extend(list.iter_mut()),
            _ => {}
        }
    }
    for artifact in artifacts {
        let Some(Value::Mapping(sums)) = artifact.get_mut("checksums") else {
            continue;
        };
        *sums = std::mem::take(sums)
            .into_iter()
            .map(|(k, v)| match k {
                Value::String(s) if s.starts_with(BINARY_KEY) => (
                    Value::Tagged(Box::new(TaggedValue {
                        tag: Tag::new(marker),
                        value: Value::String(s[BINARY_KEY.len()..].to_string()),
                    })),
                    v,
                ),
                other => (other, v),
            })
            .collect();
    }
    value
}

/// Turns every key read from the YAML into its checksum key. serde_yaml gives a `!!binary`
/// key as its base64 text, which no real key is (those begin `./`): the bytes it decodes to
/// are the name, keyed as `checksums::key_of_name` keys it (a UTF-8 name as itself, as BBR's
/// reader reads it). A key given twice (a name both plain and as `!!binary`) is refused.
pub fn read_keys(metadata: &mut BackupMetadata) -> Result<(), String> {
    for instance in &mut metadata.instances {
        for artifact in &mut instance.artifacts {
            artifact.checksums =
                normalized(std::mem::take(&mut artifact.checksums)).map_err(|key| {
                    format!(
                        "instance {}/{} job {}: the checksum of {} is listed twice",
                        instance.name,
                        instance.index,
                        artifact.name,
                        shown_key(&key)
                    )
                })?;
        }
    }
    for artifact in &mut metadata.custom_artifacts {
        artifact.checksums =
            normalized(std::mem::take(&mut artifact.checksums)).map_err(|key| {
                format!(
                    "custom artifact {}: the checksum of {} is listed twice",
                    artifact.name,
                    shown_key(&key)
                )
            })?;
    }
    Ok(())
}

fn normalized(sums: Checksums) -> Result<Checksums, String> {
    let mut out = Checksums::new();
    for (key, sum) in sums {
        let key = if key.starts_with("./") || key.starts_with(BINARY_KEY) {
            key
        } else {
            match base64::decode(&key) {
                Some(name) if name.starts_with(b"./") => key_of_name(name),
                _ => key,
            }
        };
        if out.contains_key(&key) {
            return Err(key);
        }
        out.insert(key, sum);
    }
    Ok(out)
}

/// Reads a checksum map, refusing a key the YAML gives twice (serde's maps keep the last one
/// silently): each file of the tar must be matched by exactly one entry.
pub fn unique_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Checksums, D::Error> {
    struct Unique;
    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = Checksums;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map of file names to checksums")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Checksums, A::Error> {
            let mut out = Checksums::new();
            while let Some((key, sum)) = map.next_entry::<String, String>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!(
                        "the checksum of {} is listed twice",
                        shown_key(&key)
                    )));
                }
                out.insert(key, sum);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::backup_dir::{BackupActivity, InstanceArtifacts};
    use crate::artifact::checksums::key;

    fn metadata(keys: &[String]) -> BackupMetadata {
        BackupMetadata {
            instances: vec![InstanceArtifacts {
                name: "backend".into(),
                index: "0".into(),
                artifacts: vec![ArtifactChecksums {
                    name: "store".into(),
                    checksums: keys.iter().map(|k| (k.clone(), "ab".repeat(32))).collect(),
                }],
            }],
            custom_artifacts: Vec::new(),
            bbr_agent: None,
            backup_activity: BackupActivity {
                start_time: "2026/01/01 00:00:00 UTC".into(),
                finish_time: Some("2026/01/01 00:00:05 UTC".into()),
            },
        }
    }

    fn read(text: &str) -> Result<BackupMetadata, String> {
        let mut m: BackupMetadata = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        read_keys(&mut m)?;
        Ok(m)
    }

    #[test]
    fn names_that_are_not_utf8_are_written_as_binary_and_read_back() {
        let long = vec![0xffu8; 300];
        let keys = vec![
            key(b"plain"),
            key(b"caf\xe9"),
            key(b"\xff"),
            key(b"\xfe"),
            key(&long),
            // A name that looks like a marker: left as it is.
            key(b"!bbr-agent-binary-0 x"),
        ];
        let m = metadata(&keys);
        let text = to_yaml(&m).unwrap();
        assert!(text.contains("!!binary Li9jYWbp: "), "{text}");
        assert!(text.contains("!!binary Li//: "), "{text}");
        assert!(text.contains("./!bbr-agent-binary-0 x"), "{text}");
        assert!(!text.contains("'!!binary"), "{text}");
        assert_eq!(read(&text).unwrap(), m, "{text}");
    }

    #[test]
    fn bbrs_binary_keys_are_read_and_a_key_given_twice_is_refused() {
        // As BBR's Go YAML writes them: short and, past 70 characters of base64, as a block.
        let text = "instances:\n- name: backend\n  index: \"0\"\n  artifacts:\n  - name: store\n    checksums:\n      ./plain: aa\n      !!binary Li9jYWbp: bb\n      ? !!binary |\n        Li////////////////////////////////////////////////////////////////////\n        ////8=\n      : cc\nbackup_activity:\n  start_time: x\n  finish_time: y\n";
        let m = read(text).unwrap();
        let sums = &m.instances[0].artifacts[0].checksums;
        let mut long = b"./".to_vec();
        long.extend(vec![0xffu8; 54]);
        let expected: Checksums = [
            ("./plain".to_string(), "aa".to_string()),
            (key(b"caf\xe9"), "bb".to_string()),
            (key_of_name(long), "cc".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(sums, &expected);
        // `Li9h` is `./a`: the same name as the plain key.
        let twice = text.replace("Li9jYWbp", "Li9h").replace("./plain", "./a");
        assert_eq!(
            read(&twice).unwrap_err(),
            "instance backend/0 job store: the checksum of ./a is listed twice"
        );
        let plain_twice = text.replace("!!binary Li9jYWbp", "./plain");
        assert!(
            read(&plain_twice)
                .unwrap_err()
                .contains("the checksum of ./plain is listed twice"),
            "{plain_twice}"
        );
    }
}
