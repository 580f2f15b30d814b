//! The S3 store: a [`Storage`] whose objects are under `s3://BUCKET/PREFIX/`, for AWS S3 and
//! the S3-compatible services (Garage, MinIO, Ceph) behind `AWS_ENDPOINT_URL`.
//!
//! This file maps the store's operations onto S3 requests; `credentials` resolves the AWS
//! settings, `client` sends one request, `multipart` writes a stream in bounded memory and
//! `ranged_read` reads one back. Why `rusty-s3` and `ureq` rather than the AWS SDK:
//! docs/storage.md.

pub(crate) mod client;
pub(crate) mod credentials;
pub(crate) mod multipart;
pub(crate) mod ranged_read;

#[cfg(test)]
#[path = "../../../tests/common/garage.rs"]
mod garage;
#[cfg(test)]
mod tests;

use std::io::Read;
use std::sync::Arc;
use std::time::SystemTime;

use rusty_s3::{Method, S3Action as _};

use self::client::{Call, Client, bad_xml};
use self::credentials::{Overrides, S3Config};
use self::multipart::{Budget, MultipartWriter, PartPlan};
use self::ranged_read::RangedReader;
use super::{CLAIM, ObjectInfo, ObjectWriter, Storage, StorageError, run_id};

/// How the S3 store sizes what it holds and asks for; the defaults are the program's, the
/// tests make them small to see many parts, ranges and pages.
#[derive(Debug, Clone)]
pub(crate) struct S3Options {
    /// Path-style addressing whatever the profile says (the CLI's flag).
    pub path_style: Option<bool>,
    /// The size of an object's first parts (S3 wants at least 5 MiB but for the last part;
    /// Garage accepts less, which the tests use).
    pub part_size: usize,
    /// What the part buffers of every writer of the store hold at most, together.
    pub budget: usize,
    /// The threads that send one object's parts.
    pub senders: usize,
    /// The size of one ranged GET.
    pub range: u64,
    /// The keys asked for in one listing page (S3's most is 1000).
    pub page: usize,
}

impl Default for S3Options {
    fn default() -> S3Options {
        S3Options {
            path_style: None,
            part_size: 8 * 1024 * 1024,
            // With the driver's own few MiB, a run stays under 64 MiB of memory.
            budget: 32 * 1024 * 1024,
            senders: 4,
            range: 8 * 1024 * 1024,
            page: 1000,
        }
    }
}

/// Pages of a listing asked for at most: a service whose continuation never ends stops here.
const MAX_PAGES: usize = 100_000;

pub(crate) struct S3Storage {
    client: Arc<Client>,
    bucket: String,
    /// The location's prefix with a `/` after it, or empty for the bucket's root.
    prefix: String,
    budget: Arc<Budget>,
    plan: PartPlan,
    range: u64,
    page: usize,
}

impl S3Storage {
    /// The store at `s3://bucket/prefix`, with the AWS settings of this process's environment.
    pub(crate) fn open(
        bucket: &str,
        prefix: &str,
        options: &S3Options,
    ) -> Result<S3Storage, StorageError> {
        let config = credentials::from_env(&Overrides {
            path_style: options.path_style,
        })
        .map_err(|e| StorageError::Location(format!("s3://{bucket}/{prefix}: {e}")))?;
        S3Storage::with_config(&config, bucket, prefix, options)
    }

    pub(crate) fn with_config(
        config: &S3Config,
        bucket: &str,
        prefix: &str,
        options: &S3Options,
    ) -> Result<S3Storage, StorageError> {
        let prefix = prefix.trim_matches('/');
        Ok(S3Storage {
            client: Arc::new(Client::new(config, bucket)?),
            bucket: bucket.to_string(),
            prefix: match prefix.is_empty() {
                true => String::new(),
                false => format!("{prefix}/"),
            },
            budget: Arc::new(Budget::new(options.budget)),
            plan: PartPlan::new(options.part_size, options.budget, options.senders),
            range: options.range,
            page: options.page.clamp(1, 1000),
        })
    }

    /// The buffers' budget, to see what it held.
    #[cfg(test)]
    pub(crate) fn budget(&self) -> &Budget {
        &self.budget
    }

    /// `key` under the prefix, after checking its parts.
    fn full_key(&self, key: &str) -> Result<String, StorageError> {
        if key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
            || key.chars().any(char::is_control)
        {
            return Err(StorageError::Location(format!(
                "{}: a key is `/`-separated names without empty, `.` or `..` parts",
                self.url(&crate::printable::printable(key, 200))
            )));
        }
        Ok(format!("{}{key}", self.prefix))
    }

    fn url(&self, full_key: &str) -> String {
        format!("s3://{}/{full_key}", self.bucket)
    }

    /// HEAD: the size and the ETag, or `None`.
    fn head(&self, key: &str) -> Result<Option<(u64, Option<String>)>, StorageError> {
        let full = self.full_key(key)?;
        let what = self.url(&full);
        let sign = |c: &Client| {
            c.bucket()
                .head_object(Some(c.credentials()), &full)
                .sign(c.signed_for())
        };
        let response = self.client.send(
            &Call {
                method: Method::Head,
                sign: &sign,
                headers: &[],
                body: &[],
                what: &what,
                doing: "look up",
            },
            &[404],
        )?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let size = header("content-length")
            .and_then(|l| l.parse::<u64>().ok())
            .ok_or_else(|| StorageError::Service {
                what: what.clone(),
                message: "the service gave no size (Content-Length) for the object".to_string(),
            })?;
        Ok(Some((size, header("etag"))))
    }

    fn delete(&self, full_key: &str, upload_id: Option<&str>) -> Result<(), StorageError> {
        let what = self.url(full_key);
        let sign = |c: &Client| match upload_id {
            Some(id) => c
                .bucket()
                .abort_multipart_upload(Some(c.credentials()), full_key, id)
                .sign(c.signed_for()),
            None => c
                .bucket()
                .delete_object(Some(c.credentials()), full_key)
                .sign(c.signed_for()),
        };
        self.client.send(
            &Call {
                method: Method::Delete,
                sign: &sign,
                headers: &[],
                body: &[],
                what: &what,
                doing: match upload_id {
                    Some(_) => "abort the multipart upload of",
                    None => "remove",
                },
            },
            &[404],
        )?;
        Ok(())
    }
}

impl S3Storage {
    /// The in-progress multipart uploads under `prefix` (full keys, with their upload ids and
    /// starts), at most `limit`, across pages.
    fn uploads(&self, prefix: &str, limit: usize) -> Result<Vec<Upload>, StorageError> {
        let full = format!("{}{prefix}", self.prefix);
        let what = self.url(&full);
        let mut found = Vec::new();
        let mut after: Option<client::Marker> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .client
                .list_uploads(&full, after.as_ref(), self.page, &what)?;
            for upload in page.uploads {
                if upload.0.starts_with(&full) && found.len() < limit {
                    found.push(upload);
                }
            }
            match page.next {
                Some(next) if after.as_ref() != Some(&next) && found.len() < limit => {
                    after = Some(next)
                }
                _ => break,
            }
        }
        Ok(found)
    }

    /// PutObject of `key`; with `new`, only if nothing is there (`If-None-Match: *`): a 412
    /// is then [`StorageError::Exists`], unless what is there is these very bytes (a retried
    /// PUT whose first answer was lost).
    fn put_object(&self, key: &str, bytes: &[u8], new: bool) -> Result<(), StorageError> {
        let full = self.full_key(key)?;
        let what = self.url(&full);
        let sign = |c: &Client| {
            c.bucket()
                .put_object(Some(c.credentials()), &full)
                .sign(c.signed_for())
        };
        let headers: &[(&str, &str)] = match new {
            true => &[("if-none-match", "*")],
            false => &[],
        };
        let response = self.client.send(
            &Call {
                method: Method::Put,
                sign: &sign,
                headers,
                body: bytes,
                what: &what,
                doing: "write",
            },
            match new {
                true => &[409, 412],
                false => &[],
            },
        )?;
        if response.status().as_u16() < 300 || self.holds(key, bytes)? {
            return Ok(());
        }
        Err(StorageError::Exists {
            what,
            hint: "another run wrote it first: run the backup again".to_string(),
        })
    }

    /// Whether `key` holds exactly `bytes`.
    fn holds(&self, key: &str, bytes: &[u8]) -> Result<bool, StorageError> {
        let mut there = Vec::new();
        let what = self.describe(key);
        self.open(key)?
            .take(bytes.len() as u64 + 1)
            .read_to_end(&mut there)
            .map_err(|source| StorageError::Io {
                doing: "read",
                what,
                source,
            })?;
        Ok(there == bytes)
    }

    /// The claim after the directory was found free: put this run's, then list the whole
    /// directory, which must hold that claim and nothing else. Listing only the claims was
    /// not enough: a run of the same second that found the directory free too, and finished
    /// (its claim removed, its tars and metadata left) between this run's check and its
    /// claim, left a complete backup that this one would have gone on to write into.
    fn claim_after_check(&self, name: &str, owner: &str) -> Result<String, StorageError> {
        let key = format!("{name}/{CLAIM}{}", run_id());
        let held = super::claim::text(owner, crate::timestamp::Utc::now());
        self.put_object(&key, held.as_bytes(), true)?;
        let dir = format!("{name}/");
        let there = self.list(&dir, 2)?;
        if there.len() != 1 || there[0].key != key {
            // Its claim gone, the other run may go on; this one wrote nothing else.
            let _ = self.remove(&key);
            let others_claim = there
                .iter()
                .any(|o| o.key != key && o.key.starts_with(&format!("{dir}{CLAIM}")));
            return Err(match others_claim || there.len() < 2 {
                true => in_use(self.describe(&dir)),
                false => stored_there(self.describe(&dir)),
            });
        }
        Ok(key)
    }
}

/// An in-progress multipart upload: its full key, its id and its start, if known.
type Upload = (String, String, Option<SystemTime>);

/// A backup directory that holds a backup already.
fn stored_there(what: String) -> StorageError {
    StorageError::Exists {
        what,
        hint: "a backup is stored there already (one of this deployment started in the same second?): run the backup again, or give another --artifact-path"
            .to_string(),
    }
}

/// A backup directory another run has claimed (or is writing to).
fn in_use(what: String) -> StorageError {
    StorageError::Exists {
        what,
        hint: "another backup of this deployment started in the same second is using it: run the backup again"
            .to_string(),
    }
}

impl Storage for S3Storage {
    fn describe(&self, key: &str) -> String {
        self.url(&format!("{}{key}", self.prefix))
    }

    fn create_dir(&self, name: &str) -> Result<(), StorageError> {
        self.full_key(name)?;
        let dir = format!("{name}/");
        // A claim's name sorts first (`.`): the one object looked at says if a run holds it.
        let claimed = match self.list(&dir, 1)?.first() {
            None => false,
            Some(o) if o.key.starts_with(&format!("{dir}{CLAIM}")) => true,
            Some(_) => return Err(stored_there(self.describe(&dir))),
        };
        if claimed || !self.uploads(&dir, 1)?.is_empty() {
            return Err(in_use(self.describe(&dir)));
        }
        Ok(())
    }

    /// S3 has no exclusive directory: each run puts its own claim and goes on only if a
    /// listing after it (consistent after a write, on S3 and Garage) shows that claim alone.
    /// Of two runs in the same second, the one that lists last sees both: never both go on.
    fn claim(&self, name: &str, owner: &str) -> Result<String, StorageError> {
        self.create_dir(name)?;
        self.claim_after_check(name, owner)
    }

    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.put_object(key, bytes, true)
    }

    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let full = self.full_key(key)?;
        let what = self.url(&full);
        Ok(Box::new(MultipartWriter::new(
            self.client.clone(),
            self.budget.clone(),
            self.plan,
            full,
            what,
        )))
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        // Each earlier object was completed before its writer returned: S3 is then
        // read-after-write consistent, so one PutObject is all that is left.
        self.put_object(key, bytes, false)
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        let full = self.full_key(key)?;
        let what = self.url(&full);
        let Some((size, etag)) = self.head(key)? else {
            return Err(StorageError::NotFound { what });
        };
        Ok(Box::new(RangedReader::new(
            self.client.clone(),
            full,
            what,
            size,
            etag,
            self.range,
        )))
    }

    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        Ok(self.head(key)?.map(|(size, _)| size))
    }

    fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ObjectInfo>, StorageError> {
        let full = format!("{}{prefix}", self.prefix);
        let what = self.url(&full);
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            if found.len() >= limit {
                break;
            }
            let page = self.page.min(limit - found.len());
            let sign = |c: &Client| {
                let mut action = c.bucket().list_objects_v2(Some(c.credentials()));
                action.with_prefix(full.as_str());
                action.with_max_keys(page);
                if let Some(t) = &token {
                    action.with_continuation_token(t.as_str());
                }
                action.sign(c.signed_for())
            };
            let xml = self.client.send_for_xml(&Call {
                method: Method::Get,
                sign: &sign,
                headers: &[],
                body: &[],
                what: &what,
                doing: "list",
            })?;
            let answer = rusty_s3::actions::ListObjectsV2::parse_response(&xml)
                .map_err(|e| bad_xml(&what, e))?;
            for object in answer.contents {
                // The service answers for the prefix asked; anything else is not ours.
                if let Some(key) = object.key.strip_prefix(&self.prefix) {
                    found.push(ObjectInfo {
                        key: key.to_string(),
                        size: object.size.unwrap_or(0),
                        modified: object
                            .last_modified
                            .and_then(|t| t.trim().parse::<jiff::Timestamp>().ok())
                            .map(SystemTime::from),
                    });
                }
            }
            match answer.next_continuation_token {
                Some(next) if token.as_deref() != Some(next.as_str()) => token = Some(next),
                _ => break,
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    fn remove(&self, key: &str) -> Result<(), StorageError> {
        let full = self.full_key(key)?;
        self.delete(&full, None)
    }

    fn abort_unfinished_before(
        &self,
        prefix: &str,
        before: Option<SystemTime>,
    ) -> Result<usize, StorageError> {
        let mut removed = 0;
        for (key, upload_id, started) in self.uploads(prefix, usize::MAX)? {
            // An upload whose start is not known is left.
            if before.is_some_and(|b| started.is_none_or(|s| s >= b)) {
                continue;
            }
            self.delete(&key, Some(&upload_id))?;
            removed += 1;
        }
        Ok(removed)
    }

    fn unfinished(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StorageError> {
        let uploads = self.uploads(prefix, limit)?;
        Ok(uploads
            .into_iter()
            .filter_map(|(key, _, _)| key.strip_prefix(&self.prefix).map(str::to_string))
            .collect())
    }

    fn marks_a_start(&self) -> bool {
        false
    }

    fn remote(&self) -> bool {
        true
    }
}
