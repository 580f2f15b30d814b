//! age, the encryption of `--encrypt-to`/`--recipients-file`: X25519 recipients and
//! identities as age's files hold them (one a line, `#` comments), a streaming encryptor
//! around the object being written and a streaming decryptor around the object being read.
//!
//! age's payload is STREAM (ChaCha20-Poly1305 in 64 KiB chunks, the last one marked), and its
//! header carries a MAC: a changed byte anywhere, a chunk dropped, or an object cut short is
//! an error when that chunk is read, never wrong or missing plaintext.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::x25519;

/// The largest recipients or identity file read: far more than any list of keys.
const KEY_FILE_MAX: u64 = 1024 * 1024;

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
        let name = key.to_string();
        if !self.keys.iter().any(|(n, _)| *n == name) {
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
            let name = parsed.to_string();
            if !self.keys.iter().any(|(n, _)| *n == name) {
                self.keys.push((name, parsed));
            }
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
    ) -> Result<age::stream::StreamReader<R>, age::DecryptError> {
        let decryptor = age::Decryptor::new(input)?;
        if decryptor.is_scrypt() {
            // A passphrase file was not made by a backup: never asked for here.
            return Err(age::DecryptError::NoMatchingKeys);
        }
        decryptor.decrypt(self.keys.iter().map(|k| k as &dyn age::Identity))
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
