//! Which digest a manifest of a job's files holds, and one file's digest as it is read.
//!
//! SHA-256 is BBR's: the metadata holds it, and a backup's checksums are always its. BLAKE3
//! only checks bytes on their way to a VM. A restore first checks a local backup against its
//! SHA-256 checksums and takes each file's BLAKE3 in the same read; the agent, which must
//! check what it unpacks (the backup may change on disk after the check), then checks it
//! against those, at about a fifth of SHA-256's CPU on the VM. Both are collision resistant,
//! so a file that matches the BLAKE3 of a checked file holds the checked bytes.

use sha2::{Digest as _, Sha256};

use super::checksums::{Checksums, hex};

/// The digest a manifest holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestKind {
    #[default]
    Sha256,
    Blake3,
}

impl DigestKind {
    /// As the protocol names it.
    pub fn name(self) -> &'static str {
        match self {
            DigestKind::Sha256 => "sha256",
            DigestKind::Blake3 => "blake3",
        }
    }

    /// As messages name it.
    pub fn shown(self) -> &'static str {
        match self {
            DigestKind::Sha256 => "SHA-256",
            DigestKind::Blake3 => "BLAKE3",
        }
    }
}

/// What the files of a received artifact must match: a manifest, and the digest it holds.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    pub kind: DigestKind,
    pub sums: &'a Checksums,
}

impl<'a> Expected<'a> {
    /// The backup's own checksums.
    pub fn sha256(sums: &'a Checksums) -> Expected<'a> {
        Expected {
            kind: DigestKind::Sha256,
            sums,
        }
    }
}

/// The digest of one file, fed as its bytes are read.
pub enum FileDigest {
    Sha256(Sha256),
    // Boxed: BLAKE3's state is about 2 KiB, kept off the stacks it moves through.
    Blake3(Box<blake3::Hasher>),
}

impl FileDigest {
    pub fn new(kind: DigestKind) -> FileDigest {
        match kind {
            DigestKind::Sha256 => FileDigest::Sha256(Sha256::new()),
            DigestKind::Blake3 => FileDigest::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            FileDigest::Sha256(sha) => sha.update(bytes),
            FileDigest::Blake3(b3) => {
                b3.update(bytes);
            }
        }
    }

    /// The digest in lowercase hex, as a manifest holds it.
    pub fn finish(self) -> String {
        match self {
            FileDigest::Sha256(sha) => hex(&sha.finalize()),
            FileDigest::Blake3(b3) => b3.finalize().to_hex().to_string(),
        }
    }
}

/// What one read of a file takes: its digest of one kind and, when asked, its BLAKE3 beside
/// (a restore's check: the SHA-256 the metadata holds, and what the VM will check against).
pub struct FileDigests {
    main: FileDigest,
    blake3: Option<FileDigest>,
}

impl FileDigests {
    pub fn new(kind: DigestKind, blake3: bool) -> FileDigests {
        FileDigests {
            main: FileDigest::new(kind),
            blake3: blake3.then(|| FileDigest::new(DigestKind::Blake3)),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.main.update(bytes);
        if let Some(b3) = self.blake3.as_mut() {
            b3.update(bytes);
        }
    }
}

/// Every file's [`FileDigests`] so far, by key: one manifest of the main kind, and the BLAKE3
/// one when asked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Manifests {
    pub main: Checksums,
    pub blake3: Option<Checksums>,
}

impl Manifests {
    pub fn new(blake3: bool) -> Manifests {
        Manifests {
            main: Checksums::new(),
            blake3: blake3.then(Checksums::new),
        }
    }

    pub fn insert(&mut self, key: String, digests: FileDigests) {
        if let (Some(all), Some(b3)) = (self.blake3.as_mut(), digests.blake3) {
            all.insert(key.clone(), b3.finish());
        }
        self.main.insert(key, digests.main.finish());
    }

    pub fn extend(&mut self, other: Manifests) {
        self.main.extend(other.main);
        if let (Some(all), Some(some)) = (self.blake3.as_mut(), other.blake3) {
            all.extend(some);
        }
    }

    /// A hard link's digests are its target's.
    pub fn link(&mut self, link: &str, target: &str) {
        for sums in std::iter::once(&mut self.main).chain(self.blake3.as_mut()) {
            if let Some(digest) = sums.get(target).cloned() {
                sums.insert(link.to_string(), digest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_gives_its_known_digest_whatever_the_pieces() {
        // Published digests of "abc".
        let known = [
            (
                DigestKind::Sha256,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                DigestKind::Blake3,
                "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
            ),
        ];
        for (kind, digest) in known {
            let mut whole = FileDigest::new(kind);
            whole.update(b"abc");
            let mut pieces = FileDigest::new(kind);
            for piece in [&b"a"[..], b"", b"bc"] {
                pieces.update(piece);
            }
            assert_eq!(whole.finish(), digest, "{}", kind.name());
            assert_eq!(pieces.finish(), digest, "{} in pieces", kind.name());
        }
    }
}
