//! The checksum manifest of one job's artifact: SHA-256 of every regular file, keyed `./path`
//! as BBR's `find . -type f | xargs shasum -a 256` keys it, and the comparison of two of them.
//!
//! A name is bytes. One that is UTF-8 is its own key. One that is not is keyed
//! `!!binary <base64 of ./name>`: the form the metadata's YAML gives it (YAML's binary tag, as
//! BBR's Go YAML writes a name that is not UTF-8), kept as a string so it travels in the
//! protocol's JSON too. A real name's key always begins `./`, so the two never collide, and
//! every name has exactly one key.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::base64;

pub type Checksums = BTreeMap<String, String>;

/// How a key of a name that is not UTF-8 begins.
pub const BINARY_KEY: &str = "!!binary ";

/// The key of the entry at `relative` (its path below the job's directory, as bytes).
pub fn key(relative: &[u8]) -> String {
    let mut name = Vec::with_capacity(relative.len() + 2);
    name.extend_from_slice(b"./");
    name.extend_from_slice(relative);
    key_of_name(name)
}

/// The key of a whole `./...` name.
pub fn key_of_name(name: Vec<u8>) -> String {
    match String::from_utf8(name) {
        Ok(text) => text,
        Err(e) => format!("{BINARY_KEY}{}", base64::encode(e.as_bytes())),
    }
}

/// The `./...` name a key stands for, as bytes; `None` for a key no name has.
pub fn name_of_key(key: &str) -> Option<Vec<u8>> {
    match key.strip_prefix(BINARY_KEY) {
        Some(encoded) => {
            let name = base64::decode(encoded)?;
            // A name that is UTF-8 is keyed as itself: the other key would be a second one.
            (std::str::from_utf8(&name).is_err() && name.starts_with(b"./")).then_some(name)
        }
        None => key.starts_with("./").then(|| key.as_bytes().to_vec()),
    }
}

/// A name as messages show it: UTF-8 as it is, every other byte as `\xNN`.
pub fn shown(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// A key as messages show it: the name it stands for.
pub fn shown_key(key: &str) -> String {
    match name_of_key(key) {
        Some(name) => shown(&name),
        None => key.to_string(),
    }
}

/// Why two manifests differ, as one line that names the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub changed: Vec<String>,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (what, files) in [
            ("content differs", &self.changed),
            ("missing", &self.missing),
            ("not in the manifest", &self.unexpected),
        ] {
            if !files.is_empty() {
                let shown: Vec<String> = files.iter().take(10).map(|k| shown_key(k)).collect();
                let more = files.len().saturating_sub(10);
                let tail = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                parts.push(format!("{what}: {}{tail}", shown.join(", ")));
            }
        }
        f.write_str(&parts.join("; "))
    }
}

/// Compares what was found with what was expected; `None` when they agree.
pub fn compare(expected: &Checksums, found: &Checksums) -> Option<Mismatch> {
    let mismatch = Mismatch {
        changed: expected
            .iter()
            .filter(|(k, v)| found.get(*k).is_some_and(|f| f != *v))
            .map(|(k, _)| k.clone())
            .collect(),
        missing: expected
            .keys()
            .filter(|k| !found.contains_key(*k))
            .cloned()
            .collect(),
        unexpected: found
            .keys()
            .filter(|k| !expected.contains_key(*k))
            .cloned()
            .collect(),
    };
    let agree = mismatch.changed.is_empty()
        && mismatch.missing.is_empty()
        && mismatch.unexpected.is_empty();
    (!agree).then_some(mismatch)
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(pairs: &[(&str, &str)]) -> Checksums {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn compare_names_changed_missing_and_unexpected_files() {
        let expected = manifest(&[("./a", "1"), ("./b", "2"), ("./c", "3")]);
        assert_eq!(compare(&expected, &expected), None);
        let found = manifest(&[("./a", "1"), ("./b", "X"), ("./d", "4")]);
        let m = compare(&expected, &found).unwrap();
        assert_eq!(
            m.to_string(),
            "content differs: ./b; missing: ./c; not in the manifest: ./d"
        );
    }

    #[test]
    fn every_name_has_one_key_and_back() {
        assert_eq!(key(b"caf\xc3\xa9"), "./caf\u{e9}");
        assert_eq!(key(b"caf\xe9"), "!!binary Li9jYWbp");
        // The two names that one lossy mapping made one key.
        assert_ne!(key(b"\xff"), key(b"\xfe"));
        for name in [&b"plain"[..], b"caf\xe9", b"\xff", b"\xfe", b"d/\x80/x"] {
            let k = key(name);
            let mut full = b"./".to_vec();
            full.extend_from_slice(name);
            assert_eq!(name_of_key(&k).unwrap(), full, "{k}");
        }
        // A binary key of a UTF-8 name, or of no `./` name, stands for nothing.
        assert_eq!(name_of_key("!!binary Li9h"), None);
        assert_eq!(name_of_key("!!binary /w=="), None);
        assert_eq!(name_of_key("plain"), None);
        assert_eq!(shown_key(&key(b"caf\xe9")), "./caf\\xe9");
    }
}
