//! What a backup does to each tar between the VM and the place it is kept, and undoes on the
//! way back: zstd compression (on the VM or on the driver) and age encryption (always on the
//! driver, after compression). This module owns the order of the layers, the objects' names
//! (`.tar`, `.tar.zst`, `.tar.age`, `.tar.zst.age`), and the `bbr_agent` record in the
//! metadata that says which layers a backup has. A plain backup has none of it: no record,
//! `.tar` names, BBR's bytes.

pub mod age;
pub mod sealed;
pub mod zstd;

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

pub use self::age::{Identities, KeyError, Recipients};
pub use self::zstd::Zstd;

/// The name of the encrypted object beside the metadata that holds the checksums (the
/// metadata of an encrypted backup lists its files without them: a file's name says what
/// it holds).
pub const CHECKSUMS_OBJECT: &str = "checksums.age";
/// The record's format this agent writes and reads.
pub const FORMAT: u32 = 1;

/// Where a backup's compression runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompressOn {
    /// The agent compresses the tar as it streams it: the network carries less.
    #[default]
    Vm,
    /// The VM sends the plain tar and the driver compresses it: the VMs' CPUs stay free.
    Driver,
}

/// What a backup run does to each tar, from its command line.
#[derive(Debug, Clone, Default)]
pub struct Codecs {
    pub compression: Option<Zstd>,
    pub compress_on: CompressOn,
    /// Empty: not encrypted.
    pub recipients: Recipients,
}

/// The `bbr_agent` key of a backup's metadata: which layers its tars have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed_on: Option<CompressOn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
}

/// The layers of a stored backup's tars, outermost last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layers {
    pub zstd: bool,
    pub age: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(
        "{object} is encrypted with age to {}: give --identity FILE, an age identity file holding the secret key of one of them",
        recipients.join(", ")
    )]
    NoIdentity {
        object: String,
        recipients: Vec<String>,
    },
    #[error(
        "{object}: none of the identities in {} (public key {}) is a recipient of this backup; it was made for {}: give --identity the file of one of those",
        path.display(), public.join(", "), recipients.join(", ")
    )]
    NotARecipient {
        object: String,
        path: std::path::PathBuf,
        public: Vec<String>,
        recipients: Vec<String>,
    },
    #[error("{object}: {detail}: the object was altered or damaged, or is not whole")]
    Damaged { object: String, detail: String },
    #[error("the metadata's bbr_agent record {0}")]
    Record(String),
}

impl Codecs {
    pub fn is_plain(&self) -> bool {
        self.compression.is_none() && self.recipients.is_empty()
    }

    pub fn layers(&self) -> Layers {
        Layers {
            zstd: self.compression.is_some(),
            age: !self.recipients.is_empty(),
        }
    }

    /// What the VM is asked to compress with: `Some` only when compressing on the VM.
    pub fn on_vm(&self) -> Option<Zstd> {
        self.compression
            .filter(|_| self.compress_on == CompressOn::Vm)
    }

    /// The metadata's record; `None` for a plain backup, whose metadata stays BBR's.
    pub fn record(&self) -> Option<Record> {
        if self.is_plain() {
            return None;
        }
        Some(Record {
            format: FORMAT,
            compression: self.compression.map(|_| "zstd".to_string()),
            compressed_on: self.compression.map(|_| self.compress_on),
            encryption: (!self.recipients.is_empty()).then(|| "age".to_string()),
            recipients: self.recipients.names(),
        })
    }

    /// The driver's side of the layers around `out`: what arrives is the tar, or the VM's
    /// zstd stream when the VM compressed; it is compressed here when the driver compresses,
    /// then encrypted when there are recipients.
    pub fn encoder<W: Write>(&self, out: W) -> io::Result<Encoder<W>> {
        let compress_here = self
            .compression
            .filter(|_| self.compress_on == CompressOn::Driver);
        let encrypt = !self.recipients.is_empty();
        Ok(Encoder(match (compress_here, encrypt) {
            (None, false) => Layer::Plain(out),
            (Some(z), false) => Layer::Zstd(zstd::compressor(out, z.level)?),
            (None, true) => Layer::Age(self.recipients.encryptor(out)?),
            (Some(z), true) => {
                Layer::ZstdAge(zstd::compressor(self.recipients.encryptor(out)?, z.level)?)
            }
        }))
    }
}

impl Record {
    /// The layers this record says a backup's tars have; a record of another format, or
    /// naming what this agent does not know, is refused.
    pub fn layers(&self) -> Result<Layers, CodecError> {
        if self.format != FORMAT {
            return Err(CodecError::Record(format!(
                "has format {}, this bbr-agent reads format {FORMAT}: restore with a newer bbr-agent",
                self.format
            )));
        }
        let zstd = match self.compression.as_deref() {
            None => false,
            Some("zstd") => true,
            Some(other) => {
                return Err(CodecError::Record(format!(
                    "names the compression `{}`, which this bbr-agent does not know",
                    crate::printable::printable(other, 40)
                )));
            }
        };
        let age = match self.encryption.as_deref() {
            None => false,
            Some("age") => true,
            Some(other) => {
                return Err(CodecError::Record(format!(
                    "names the encryption `{}`, which this bbr-agent does not know",
                    crate::printable::printable(other, 40)
                )));
            }
        };
        // The recipients are shown when an identity is missing: only real age public keys,
        // and no more than a backup is ever encrypted to.
        if self.recipients.len() > self::age::RECIPIENTS_MAX
            || self
                .recipients
                .iter()
                .any(|r| r.parse::<::age::x25519::Recipient>().is_err())
        {
            return Err(CodecError::Record(format!(
                "lists recipients that are not age public keys (`age1...`, at most {}): the metadata was altered or is not bbr-agent's",
                self::age::RECIPIENTS_MAX
            )));
        }
        Ok(Layers { zstd, age })
    }
}

impl Layers {
    /// What follows `.tar` in the name of a tar with these layers.
    pub fn suffix(&self) -> &'static str {
        match (self.zstd, self.age) {
            (false, false) => "",
            (true, false) => ".zst",
            (false, true) => ".age",
            (true, true) => ".zst.age",
        }
    }
}

/// The driver's writing side: write the stream in, then [`Encoder::finish`] to end every
/// layer (zstd's last frame, age's last chunk) and get the object back.
pub struct Encoder<W: Write>(Layer<W>);

enum Layer<W: Write> {
    Plain(W),
    Zstd(::zstd::stream::write::Encoder<'static, W>),
    Age(::age::stream::StreamWriter<W>),
    ZstdAge(::zstd::stream::write::Encoder<'static, ::age::stream::StreamWriter<W>>),
}

impl<W: Write> Encoder<W> {
    pub fn finish(self) -> io::Result<W> {
        match self.0 {
            Layer::Plain(mut w) => w.flush().map(|()| w),
            Layer::Zstd(z) => z.finish(),
            Layer::Age(a) => a.finish(),
            Layer::ZstdAge(z) => z.finish()?.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Layer::Plain(w) => w.write(buf),
            Layer::Zstd(w) => w.write(buf),
            Layer::Age(w) => w.write(buf),
            Layer::ZstdAge(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Layer::Plain(w) => w.flush(),
            Layer::Zstd(w) => w.flush(),
            Layer::Age(w) => w.flush(),
            Layer::ZstdAge(w) => w.flush(),
        }
    }
}

/// The restore's reading side of `object` (named in every error): decrypted when `layers`
/// say age (with `identities`, whose absence is an error naming `recipients`), then
/// decompressed when they say zstd and `decompress` (false: the VM decompresses).
pub fn decoder(
    input: Box<dyn Read + Send>,
    object: &str,
    layers: Layers,
    identities: Option<&Identities>,
    recipients: &[String],
    decompress: bool,
) -> Result<Box<dyn Read + Send>, CodecError> {
    let mut stream = input;
    if layers.age {
        let Some(ids) = identities else {
            return Err(CodecError::NoIdentity {
                object: object.to_string(),
                recipients: recipients.to_vec(),
            });
        };
        stream = match ids.decryptor(stream) {
            Ok(plain) => Box::new(plain),
            Err(::age::DecryptError::NoMatchingKeys) => {
                return Err(CodecError::NotARecipient {
                    object: object.to_string(),
                    path: ids.path.clone(),
                    public: ids.public(),
                    recipients: recipients.to_vec(),
                });
            }
            Err(e) => {
                return Err(CodecError::Damaged {
                    object: object.to_string(),
                    detail: format!("its age header cannot be read ({e})"),
                });
            }
        };
    }
    if layers.zstd && decompress {
        stream = Box::new(zstd::decompressor(stream).map_err(|e| CodecError::Damaged {
            object: object.to_string(),
            detail: format!("cannot start decompressing ({e})"),
        })?);
    }
    let decoded = layers.age || (layers.zstd && decompress);
    if !decoded {
        return Ok(stream);
    }
    Ok(Box::new(Named {
        inner: stream,
        object: object.to_string(),
    }))
}

/// A decoded stream whose errors name the object and say it was altered or cut short.
struct Named {
    inner: Box<dyn Read + Send>,
    object: String,
}

impl Read for Named {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                CodecError::Damaged {
                    object: self.object.clone(),
                    detail: format!("cannot decode it ({e})"),
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codecs(zstd: bool, on: CompressOn, to: &[&str]) -> Codecs {
        let mut recipients = Recipients::default();
        for r in to {
            recipients.add(r).unwrap();
        }
        Codecs {
            compression: zstd.then_some(Zstd { level: 3 }),
            compress_on: on,
            recipients,
        }
    }

    fn encode(c: &Codecs, data: &[u8]) -> Vec<u8> {
        let mut e = c.encoder(Vec::new()).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(bytes: Vec<u8>, layers: Layers, ids: Option<&Identities>) -> Result<Vec<u8>, String> {
        let mut r = decoder(
            Box::new(io::Cursor::new(bytes)),
            "cf_x/a-0-j.tar.zst.age",
            layers,
            ids,
            &["age1someone".to_string()],
            true,
        )
        .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    fn data() -> Vec<u8> {
        (0..300_000u32)
            .flat_map(|i| format!("INSERT INTO t VALUES ({i});\n").into_bytes())
            .collect()
    }

    #[test]
    fn every_combination_of_layers_round_trips_and_names_its_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let (path, public) = age::tests::identity_file(dir.path(), "key");
        let ids = Identities::read(&path).unwrap();
        let data = data();
        for (zstd, to, suffix) in [
            (false, vec![], ""),
            (true, vec![], ".zst"),
            (false, vec![public.as_str()], ".age"),
            (true, vec![public.as_str()], ".zst.age"),
        ] {
            let c = codecs(zstd, CompressOn::Driver, &to);
            assert_eq!(c.layers().suffix(), suffix);
            let stored = encode(&c, &data);
            if zstd {
                assert!(stored.len() < data.len() / 3, "{suffix}: {}", stored.len());
            }
            let layers = c
                .record()
                .map_or(Layers::default(), |r| r.layers().unwrap());
            assert_eq!(layers, c.layers());
            assert_eq!(
                decode(stored, layers, Some(&ids)).unwrap(),
                data,
                "{suffix}"
            );
        }
        // Compressed on the VM: the driver only encrypts what arrives.
        let c = codecs(true, CompressOn::Vm, &[public.as_str()]);
        let mut vm = zstd::compressor(Vec::new(), 3).unwrap();
        vm.write_all(&data).unwrap();
        let stored = encode(&c, &vm.finish().unwrap());
        assert_eq!(decode(stored, c.layers(), Some(&ids)).unwrap(), data);
    }

    #[test]
    fn a_plain_run_has_no_record_and_a_record_says_what_it_did() {
        assert!(codecs(false, CompressOn::Vm, &[]).record().is_none());
        let dir = tempfile::tempdir().unwrap();
        let (_, public) = age::tests::identity_file(dir.path(), "key");
        let record = codecs(true, CompressOn::Driver, &[public.as_str()])
            .record()
            .unwrap();
        let yaml = serde_yaml::to_string(&record).unwrap();
        assert_eq!(
            yaml,
            format!(
                "format: 1\ncompression: zstd\ncompressed_on: driver\nencryption: age\nrecipients:\n- {public}\n"
            )
        );
        let newer = Record {
            format: 2,
            ..record.clone()
        };
        assert!(newer.layers().unwrap_err().to_string().contains("format 2"));
        let unknown = Record {
            compression: Some("lz4".into()),
            ..record
        };
        assert!(unknown.layers().unwrap_err().to_string().contains("`lz4`"));
    }

    #[test]
    fn a_flipped_or_missing_byte_in_the_ciphertext_is_an_error_naming_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let (path, public) = age::tests::identity_file(dir.path(), "key");
        let ids = Identities::read(&path).unwrap();
        let c = codecs(true, CompressOn::Driver, &[public.as_str()]);
        let stored = encode(&c, &data());
        // Header, first chunk, last chunk, last byte.
        for at in [20, 300, stored.len() / 2, stored.len() - 1] {
            let mut bad = stored.clone();
            bad[at] ^= 0x01;
            let e = decode(bad, c.layers(), Some(&ids)).unwrap_err();
            assert!(e.starts_with("cf_x/a-0-j.tar.zst.age: "), "at {at}: {e}");
            assert!(e.contains("altered or damaged"), "at {at}: {e}");
        }
        // Cut short, even at a chunk boundary: an error, never a shorter stream.
        let only = codecs(false, CompressOn::Driver, &[public.as_str()]);
        let plain = encode(&only, &data());
        for cut in [plain.len() - 1, plain.len() - 17, plain.len() / 2] {
            let e = decode(plain[..cut].to_vec(), only.layers(), Some(&ids)).unwrap_err();
            assert!(e.contains("altered or damaged"), "cut at {cut}: {e}");
        }
    }

    #[test]
    fn without_or_with_the_wrong_identity_the_recipients_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (_, public) = age::tests::identity_file(dir.path(), "key");
        let (other, other_public) = age::tests::identity_file(dir.path(), "other");
        let c = codecs(false, CompressOn::Vm, &[public.as_str()]);
        let stored = encode(&c, b"tar");
        let e = decode(stored.clone(), c.layers(), None).unwrap_err();
        assert!(
            e.contains("encrypted with age to age1someone: give --identity"),
            "{e}"
        );
        let wrong = Identities::read(&other).unwrap();
        let e = decode(stored, c.layers(), Some(&wrong)).unwrap_err();
        assert!(e.contains(&other_public), "{e}");
        assert!(e.contains("it was made for age1someone"), "{e}");
    }
}
