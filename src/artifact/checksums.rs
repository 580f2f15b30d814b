//! The checksum manifest of one job's artifact: SHA-256 of every regular file, keyed `./path`
//! as BBR's `find . -type f | xargs shasum -a 256` keys it, and the comparison of two of them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use sha2::{Digest, Sha256};

pub type Checksums = BTreeMap<String, String>;

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
                let shown: Vec<&str> = files.iter().take(10).map(String::as_str).collect();
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

/// Hashes everything written through it before passing it on.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }

    pub fn finish(self) -> (W, String) {
        (self.inner, hex(&self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
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
    fn hashing_writer_gives_sha256() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (data, digest) = w.finish();
        assert_eq!(data, b"abc");
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
