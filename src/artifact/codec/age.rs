//! age, the encryption of `--encrypt-to`/`--recipients-file`: X25519 recipients and
//! identities as age's files hold them (one a line, `#` comments), a streaming encryptor
//! around the object being written and a streaming decryptor around the object being read.
//!
//! age's payload is STREAM (ChaCha20-Poly1305 in 64 KiB chunks, the last one marked), and its
//! header carries a MAC: a changed byte anywhere, a chunk dropped, or an object cut short is
//! an error when that chunk is read, never wrong or missing plaintext.

use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use age::x25519;

/// The largest recipients or identity file read: far more than any list of keys.
const KEY_FILE_MAX: u64 = 1024 * 1024;
/// The most recipients a backup is encrypted to: their header (about 100 bytes each) stays
/// well within [`HEADER_MAX`].
pub const RECIPIENTS_MAX: usize = 100;
/// The longest age header read. age's reader has no bound of its own and parses the header
/// again each time it reads a line, so an object's header (hostile, like every byte of a
/// backup) is cut here: a few recipients' stanzas need a few KiB.
const HEADER_MAX: u64 = 16 * 1024;
/// The buffer the header is read through (what it may read ahead of the header's end).
const HEADER_BUFFER: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "--encrypt-to `{0}` is not an age X25519 recipient (age1...): give the public key `age-keygen -y` prints"
    )]
    BadRecipient(String),
    #[error("{path} line {line}: not an age X25519 recipient (age1...) nor a # comment")]
    BadRecipientLine { path: PathBuf, line: usize },
    #[error("{path} line {line}: not an age X25519 identity (AGE-SECRET-KEY-1...) nor a # comment")]
    BadIdentityLine { path: PathBuf, line: usize },
    #[error("{path} holds no {what}: give a file with one a line")]
    Empty { path: PathBuf, what: &'static str },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is larger than 1 MiB: not a file of age keys")]
    TooLarge { path: PathBuf },
    #[error("more than {RECIPIENTS_MAX} age recipients: encrypt to fewer (a shared key, say)")]
    TooMany,
}

/// The public keys a backup is encrypted to, each as the operator gave it.
#[derive(Clone, Default)]
pub struct Recipients {
    keys: Vec<(String, x25519::Recipient)>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Recipients {
    /// Adds one `age1...` key; a key given twice is kept once.
    pub fn add(&mut self, text: &str) -> Result<(), KeyError> {
        let text = text.trim();
        let key = x25519::Recipient::from_str(text)
            .map_err(|_| KeyError::BadRecipient(crate::printable::printable(text, 100)))?;
        self.push(key)
    }

    fn push(&mut self, key: x25519::Recipient) -> Result<(), KeyError> {
        let name = key.to_string();
        if !self.keys.iter().any(|(n, _)| *n == name) {
            if self.keys.len() == RECIPIENTS_MAX {
                return Err(KeyError::TooMany);
            }
            self.keys.push((name, key));
        }
        Ok(())
    }

    /// Adds every key of a recipients file (age's format: one a line, `#` comments).
    pub fn add_file(&mut self, path: &Path) -> Result<(), KeyError> {
        let text = read_key_file(path)?;
        let before = self.keys.len();
        for (line, key) in key_lines(&text) {
            let parsed =
                x25519::Recipient::from_str(key).map_err(|_| KeyError::BadRecipientLine {
                    path: path.to_path_buf(),
                    line,
                })?;
            self.push(parsed)?;
        }
        if self.keys.len() == before && key_lines(&text).next().is_none() {
            return Err(KeyError::Empty {
                path: path.to_path_buf(),
                what: "age recipient",
            });
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys as `age1...` text, in the order given.
    pub fn names(&self) -> Vec<String> {
        self.keys.iter().map(|(n, _)| n.clone()).collect()
    }

    /// An encryptor writing into `out`: [`age::stream::StreamWriter::finish`] writes the last
    /// chunk and gives `out` back. Its memory is one 64 KiB chunk.
    pub fn encryptor<W: Write>(&self, out: W) -> io::Result<age::stream::StreamWriter<W>> {
        let encryptor = age::Encryptor::with_recipients(
            self.keys.iter().map(|(_, k)| k as &dyn age::Recipient),
        )
        .map_err(io::Error::other)?;
        encryptor.wrap_output(out)
    }
}

/// The secret keys a restore decrypts with (`--identity FILE`).
pub struct Identities {
    pub path: PathBuf,
    keys: Vec<x25519::Identity>,
}

impl Identities {
    /// Reads an age identity file: `AGE-SECRET-KEY-1...` lines and `#` comments (what
    /// `age-keygen` writes).
    pub fn read(path: &Path) -> Result<Identities, KeyError> {
        let text = read_key_file(path)?;
        let keys = key_lines(&text)
            .map(|(line, key)| {
                x25519::Identity::from_str(key).map_err(|_| KeyError::BadIdentityLine {
                    path: path.to_path_buf(),
                    line,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyError::Empty {
                path: path.to_path_buf(),
                what: "age identity",
            });
        }
        Ok(Identities {
            path: path.to_path_buf(),
            keys,
        })
    }

    /// The public keys of these identities, as `age1...` text.
    pub fn public(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.to_public().to_string())
            .collect()
    }

    /// Reads `input`'s age header and returns the plaintext's reader; `Err` when the header
    /// is not age's, is damaged, or none of these identities is one of its recipients.
    pub fn decryptor<R: Read>(
        &self,
        input: R,
    ) -> Result<age::stream::StreamReader<BufReader<HeaderBound<R>>>, age::DecryptError> {
        let in_header = Arc::new(AtomicBool::new(true));
        let bounded = HeaderBound {
            inner: input,
            in_header: Arc::clone(&in_header),
            read: 0,
        };
        let decryptor =
            age::Decryptor::new_buffered(BufReader::with_capacity(HEADER_BUFFER, bounded))?;
        in_header.store(false, Ordering::Relaxed);
        if decryptor.is_scrypt() {
            // A passphrase file was not made by a backup: never asked for here.
            return Err(age::DecryptError::NoMatchingKeys);
        }
        decryptor.decrypt(self.keys.iter().map(|k| k as &dyn age::Identity))
    }
}

/// An object's bytes, at most [`HEADER_MAX`] (and one buffer ahead) of them while its age
/// header is read; unbounded after.
pub struct HeaderBound<R> {
    inner: R,
    in_header: Arc<AtomicBool>,
    read: u64,
}

impl<R: Read> Read for HeaderBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.in_header.load(Ordering::Relaxed) && self.read > HEADER_MAX + HEADER_BUFFER as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the age header is longer than {} KiB", HEADER_MAX >> 10),
            ));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(KEY_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > KEY_FILE_MAX {
        return Err(KeyError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes)
        .map_err(|_| read_err(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text")))
}

/// Each line that is not blank nor a `#` comment, trimmed, with its 1-based number.
fn key_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    /// A new identity file in `dir` and its public key.
    pub(crate) fn identity_file(dir: &Path, name: &str) -> (PathBuf, String) {
        let id = x25519::Identity::generate();
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "# created: now\n# public key: {}\n{}\n",
                id.to_public(),
                id.to_string().expose_secret()
            ),
        )
        .unwrap();
        (path, id.to_public().to_string())
    }

    /// A header without end (a hostile object) is refused after a bounded read, however long
    /// it is: counted in bytes taken from the object, not in time.
    #[test]
    fn an_endless_age_header_is_refused_after_a_bounded_read() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = identity_file(dir.path(), "key");
        let ids = Identities::read(&path).unwrap();
        let mut header = b"age-encryption.org/v1\n".to_vec();
        for _ in 0..200_000 {
            header.extend_from_slice(b"-> X25519 aaaa\nbbbb\n");
        }
        struct Counting<'a>(&'a [u8], usize);
        impl Read for Counting<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.read(buf)?;
                self.1 += n;
                Ok(n)
            }
        }
        let mut input = Counting(&header, 0);
        assert!(ids.decryptor(&mut input).is_err());
        assert!(input.1 <= 64 * 1024, "read {} bytes of a header", input.1);
        let mut many = Recipients::default();
        for _ in 0..RECIPIENTS_MAX {
            many.add(&x25519::Identity::generate().to_public().to_string())
                .unwrap();
        }
        let e = many
            .add(&x25519::Identity::generate().to_public().to_string())
            .unwrap_err();
        assert!(matches!(e, KeyError::TooMany), "{e}");
        // The most recipients make a header the reader takes.
        let mut sealed = many.encryptor(Vec::new()).unwrap();
        sealed.write_all(b"x").unwrap();
        let sealed = sealed.finish().unwrap();
        assert!(matches!(
            ids.decryptor(&sealed[..]),
            Err(age::DecryptError::NoMatchingKeys)
        ));
    }

    #[test]
    fn recipients_and_identities_are_read_from_age_files() {
        let dir = tempfile::tempdir().unwrap();
        let (ids, public) = identity_file(dir.path(), "key.txt");
        let list = dir.path().join("recipients");
        std::fs::write(&list, format!("# ops\n\n  {public}  \n{public}\n")).unwrap();
        let mut r = Recipients::default();
        r.add_file(&list).unwrap();
        r.add(&public).unwrap();
        assert_eq!(r.names(), vec![public.clone()]);
        assert_eq!(Identities::read(&ids).unwrap().public(), vec![public]);

        std::fs::write(&list, "# only a comment\n").unwrap();
        let e = Recipients::default()
            .add_file(&list)
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no age recipient"), "{e}");
        std::fs::write(&list, "age1nope\n").unwrap();
        let e = Recipients::default()
            .add_file(&list)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("line 1: not an age X25519 recipient (age1...) nor a # comment"),
            "{e}"
        );
        let e = Recipients::default()
            .add("ssh-ed25519 AAAA")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`ssh-ed25519 AAAA` is not an age X25519 recipient"),
            "{e}"
        );
        let e = Identities::read(&list).err().unwrap().to_string();
        assert!(e.contains("line 1: not an age X25519 identity"), "{e}");
    }
}
