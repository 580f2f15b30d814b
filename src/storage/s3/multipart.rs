//! An object written as a stream into a multipart upload, in bounded memory.
//!
//! Bytes fill one part's buffer; a full buffer goes to a small pool of threads that upload
//! it (each failure tried again from the buffer) while the writer fills the next. Every
//! buffer is taken from the store's [`Budget`] before it is filled and given back once its
//! part is sent, so the parts in flight plus the one being filled never hold more than the
//! budget (32 MiB), however large the object and however many objects are written at once.
//!
//! The part size grows with the part number (it doubles every [`PARTS_PER_STEP`] parts, up
//! to the budget; parts past half of it are sent one at a time), so S3's 10,000-part limit is reached only past [`max_object_size`]
//! (about 273 GiB with 8 MiB parts): a larger object is refused there, its upload aborted,
//! rather than holding parts larger than the budget.
//!
//! An object that fits in its first part is sent with one PutObject. `finish` completes the
//! upload; `abort`, a failure, or a drop without `finish` aborts it, so no parts are left.
//!
//! A completion whose answer is lost (the connection drops after the service assembled the
//! object) is sent again, and the service then knows no such upload: the object is taken as
//! stored if a HEAD of its key shows the multipart ETag of the very parts sent (the MD5 of
//! their MD5s, then `-N`), and the completion's failure is reported otherwise.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rusty_s3::{Method, S3Action as _};

use super::client::{Call, Client, bad_xml};
use crate::storage::{ObjectWriter, StorageError};
use crate::thread_start;

/// S3's limit on the parts of one upload.
pub(super) const MAX_PARTS: u32 = 10_000;
/// How many parts of one size come before the size doubles.
pub(super) const PARTS_PER_STEP: u32 = 1_000;

/// The bytes that the buffers of every writer of one store may hold together.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    state: Mutex<Held>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct Held {
    /// Every byte allocated for part buffers: in use, or kept spare.
    now: usize,
    peak: usize,
    /// Buffers given back, kept for the next parts: reused rather than freed and allocated
    /// again, so the allocator's own keeping of freed memory never adds to the budget.
    spare: Vec<Vec<u8>>,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            limit,
            state: Mutex::new(Held::default()),
            freed: Condvar::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The most that was ever held at once.
    #[cfg(test)]
    pub(crate) fn peak(&self) -> usize {
        self.lock().peak
    }

    /// What is held now by parts (not counting the spare buffers).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        let held = self.lock();
        held.now - held.spare.iter().map(Vec::capacity).sum::<usize>()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic elsewhere cannot leave the two numbers inconsistent: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer for a part of `size` bytes: a spare one that holds it, else a new one
    /// once it fits (spare ones freed to make room), else after waiting for one to come back.
    fn take_buffer(&self, size: usize) -> Vec<u8> {
        let mut held = self.lock();
        loop {
            if let Some(i) = held.spare.iter().position(|b| b.capacity() >= size) {
                let mut buffer = held.spare.swap_remove(i);
                buffer.clear();
                return buffer;
            }
            if held.now + size <= self.limit {
                let buffer = Vec::with_capacity(size);
                held.now += buffer.capacity();
                held.peak = held.peak.max(held.now);
                return buffer;
            }
            if let Some(smaller) = held.spare.pop() {
                held.now = held.now.saturating_sub(smaller.capacity());
                continue;
            }
            held = self.freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Gives a part's buffer back, for the next part.
    fn give_buffer(&self, buffer: Vec<u8>) {
        if buffer.capacity() == 0 {
            return;
        }
        let mut held = self.lock();
        held.spare.push(buffer);
        self.freed.notify_all();
    }
}

/// How a store cuts objects into parts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartPlan {
    /// The size of the first [`PARTS_PER_STEP`] parts.
    pub first: usize,
    /// The largest part: the whole budget. Parts up to half of it are sent while the next
    /// fills; larger ones (objects past ~24 GiB) one at a time, so the bound still holds.
    pub largest: usize,
    /// The threads that send parts of one object.
    pub senders: usize,
}

impl PartPlan {
    pub(crate) fn new(first: usize, budget: usize, senders: usize) -> PartPlan {
        let largest = budget.max(1);
        PartPlan {
            first: first.clamp(1, largest),
            largest,
            senders: senders.max(1),
        }
    }

    /// The size of part `number` (from 1).
    pub(crate) fn size(&self, number: u32) -> usize {
        let step = (number.saturating_sub(1) / PARTS_PER_STEP).min(20);
        self.first.saturating_mul(1 << step).min(self.largest)
    }
}

/// The largest object `plan` can write in [`MAX_PARTS`] parts.
pub(crate) fn max_object_size(plan: &PartPlan) -> u64 {
    (1..=MAX_PARTS).map(|n| plan.size(n) as u64).sum()
}

/// A part on its way to a sender.
struct Part {
    number: u16,
    bytes: Vec<u8>,
}

/// What the senders of one upload share.
struct Shared {
    client: Arc<Client>,
    budget: Arc<Budget>,
    key: String,
    what: String,
    upload_id: String,
    etags: Mutex<Vec<(u16, String)>>,
    /// The first part that could not be sent, and why.
    failure: Mutex<Option<StorageError>>,
}

struct Upload {
    shared: Arc<Shared>,
    parts: Option<SyncSender<Part>>,
    senders: Vec<JoinHandle<()>>,
    /// No sender thread could be had: the writer sends the parts itself.
    inline: bool,
}

pub(crate) struct MultipartWriter {
    client: Arc<Client>,
    budget: Arc<Budget>,
    plan: PartPlan,
    key: String,
    what: String,
    /// The part being filled, and what was taken from the budget for it.
    buffer: Vec<u8>,
    held: usize,
    /// The number of the part being filled.
    number: u32,
    written: u64,
    upload: Option<Upload>,
    done: bool,
}

impl MultipartWriter {
    pub(crate) fn new(
        client: Arc<Client>,
        budget: Arc<Budget>,
        plan: PartPlan,
        key: String,
        what: String,
    ) -> MultipartWriter {
        MultipartWriter {
            client,
            budget,
            plan,
            key,
            what,
            buffer: Vec::new(),
            held: 0,
            number: 1,
            written: 0,
            upload: None,
            done: false,
        }
    }

    /// Why the upload failed, as text.
    fn failure(&self) -> Option<String> {
        let upload = self.upload.as_ref()?;
        lock(&upload.shared.failure).as_ref().map(|e| e.to_string())
    }

    /// Why the upload failed, once the senders are done.
    fn take_failure(&self) -> Option<StorageError> {
        let upload = self.upload.as_ref()?;
        lock(&upload.shared.failure).take()
    }

    /// Starts the multipart upload and its senders.
    fn start(&mut self) -> Result<(), StorageError> {
        let key = self.key.clone();
        let sign = |c: &Client| {
            c.bucket()
                .create_multipart_upload(Some(c.credentials()), &key)
                .sign(c.signed_for())
        };
        let xml = self.client.send_for_xml(&Call {
            method: Method::Post,
            sign: &sign,
            headers: &[],
            body: &[],
            what: &self.what,
            doing: "start the multipart upload of",
        })?;
        let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&xml)
            .map_err(|e| bad_xml(&self.what, e))?;
        let shared = Arc::new(Shared {
            client: self.client.clone(),
            budget: self.budget.clone(),
            key: self.key.clone(),
            what: self.what.clone(),
            upload_id: created.upload_id().to_string(),
            etags: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
        });
        // The queue holds no part: a part waits in a sender's hands or in the writer's, so
        // the budget alone bounds what is held.
        let (parts, queue) = sync_channel::<Part>(0);
        let queue = Arc::new(Mutex::new(queue));
        let mut senders = Vec::new();
        for _ in 0..self.plan.senders {
            let (shared, queue) = (shared.clone(), queue.clone());
            let what = || format!("send the parts of {}", self.what);
            match thread_start::start(what, move || send_parts(&shared, &queue)) {
                Ok(sender) => senders.push(sender),
                // A thread the OS refuses (a container's pids.max) is one sender fewer; with
                // none, the writer sends each part itself.
                Err(e) => {
                    tracing::debug!(error = %e, senders = senders.len(), "fewer part senders");
                    break;
                }
            }
        }
        let inline = senders.is_empty();
        self.upload = Some(Upload {
            shared,
            parts: (!inline).then_some(parts),
            senders,
            inline,
        });
        Ok(())
    }

    /// Hands the full buffer to a sender.
    fn send_buffer(&mut self) -> Result<(), StorageError> {
        if self.upload.is_none() {
            self.start()?;
        }
        if self.number > MAX_PARTS {
            return Err(StorageError::Service {
                what: self.what.clone(),
                message: format!(
                    "the object is larger than {} bytes, the most {MAX_PARTS} parts of bounded size hold: it cannot be stored in one S3 object",
                    max_object_size(&self.plan)
                ),
            });
        }
        let part = Part {
            number: self.number as u16,
            bytes: std::mem::take(&mut self.buffer),
        };
        self.held = 0;
        self.number += 1;
        if let Some(upload) = self.upload.as_ref().filter(|u| u.inline) {
            // Its failure, if any, is told as a sender's is: by the next write, or the end.
            send_one(&upload.shared, part);
            return Ok(());
        }
        let sent = self
            .upload
            .as_ref()
            .and_then(|u| u.parts.as_ref())
            .map(|p| p.send(part));
        match sent {
            Some(Ok(())) => Ok(()),
            Some(Err(back)) => {
                // Every sender is gone: give back what the part held.
                self.budget.give_buffer(back.0.bytes);
                Err(self.failed())
            }
            None => Err(self.failed()),
        }
    }

    fn failed(&self) -> StorageError {
        self.take_failure()
            .unwrap_or_else(|| StorageError::Service {
                what: self.what.clone(),
                message: "the upload's senders stopped".to_string(),
            })
    }

    /// Waits for every part to be sent.
    fn join(&mut self) {
        if let Some(upload) = self.upload.as_mut() {
            upload.parts = None;
            for sender in upload.senders.drain(..) {
                // A sender that panicked has given back nothing more to wait for.
                let _ = sender.join();
            }
        }
    }

    fn release_buffer(&mut self) {
        self.held = 0;
        self.budget.give_buffer(std::mem::take(&mut self.buffer));
    }

    fn abort_upload(&mut self) {
        self.release_buffer();
        self.join();
        if let Some(upload) = self.upload.take() {
            let s = &upload.shared;
            let sign = |c: &Client| {
                c.bucket()
                    .abort_multipart_upload(Some(c.credentials()), &s.key, &s.upload_id)
                    .sign(c.signed_for())
            };
            let aborted = self.client.send(
                &Call {
                    method: Method::Delete,
                    sign: &sign,
                    headers: &[],
                    body: &[],
                    what: &self.what,
                    doing: "abort the multipart upload of",
                },
                &[404],
            );
            if let Err(e) = aborted {
                // What is left is found by the next run's `abort_unfinished`.
                tracing::warn!(error = %e, "cannot abort a multipart upload");
            }
        }
    }

    fn complete(&mut self) -> Result<u64, StorageError> {
        if self.upload.is_none() {
            // It all fit in one part: one PutObject.
            let key = self.key.clone();
            let sign = |c: &Client| {
                c.bucket()
                    .put_object(Some(c.credentials()), &key)
                    .sign(c.signed_for())
            };
            let put = self.client.send(
                &Call {
                    method: Method::Put,
                    sign: &sign,
                    headers: &[],
                    body: &self.buffer,
                    what: &self.what,
                    doing: "write",
                },
                &[],
            );
            self.release_buffer();
            put?;
            return Ok(self.written);
        }
        if !self.buffer.is_empty() {
            self.send_buffer()?;
        }
        self.release_buffer();
        self.join();
        if let Some(failure) = self.take_failure() {
            return Err(failure);
        }
        let Some(upload) = self.upload.as_ref() else {
            return Err(self.failed());
        };
        let shared = upload.shared.clone();
        let mut etags = std::mem::take(&mut *lock(&shared.etags));
        etags.sort_by_key(|(n, _)| *n);
        if etags.len() as u32 != self.number - 1 {
            return Err(StorageError::Service {
                what: self.what.clone(),
                message: format!("{} of {} parts were sent", etags.len(), self.number - 1),
            });
        }
        // The body lists the parts in order: part n is the n-th ETag.
        let body = completion(&self.client, &shared, &etags).body();
        let sign = |c: &Client| completion(c, &shared, &etags).sign(c.signed_for());
        let completed = self
            .client
            .send_for_xml(&Call {
                method: Method::Post,
                sign: &sign,
                headers: &[],
                body: body.as_bytes(),
                what: &self.what,
                doing: "complete the multipart upload of",
            })
            .and_then(|xml| {
                // S3 may answer 200 and put the error in the body.
                match rusty_s3::actions::CompleteMultipartUploadResponse::parse(&xml) {
                    Ok(_) => Ok(()),
                    Err(_) => Err(super::client::error_in_body(&self.what, &xml)),
                }
            });
        if let Err(e) = completed {
            // A lost answer, then NoSuchUpload for the try after it: stored all the same if
            // the object is the one these parts make.
            let expected = multipart_etag(&etags);
            let stored = self.stored_etag();
            if expected.is_none() || stored.as_deref().map(unquoted) != expected.as_deref() {
                return Err(e);
            }
            tracing::info!(what = self.what, error = %e, "the completion failed, but the object stored is the one its parts make");
        }
        self.upload = None;
        Ok(self.written)
    }

    /// The ETag of the object stored under the key now, if a HEAD tells it.
    fn stored_etag(&self) -> Option<String> {
        let key = &self.key;
        let sign = |c: &Client| {
            c.bucket()
                .head_object(Some(c.credentials()), key)
                .sign(c.signed_for())
        };
        let response = self
            .client
            .send(
                &Call {
                    method: Method::Head,
                    sign: &sign,
                    headers: &[],
                    body: &[],
                    what: &self.what,
                    doing: "look up",
                },
                &[],
            )
            .ok()?;
        let etag = response.headers().get("etag")?.to_str().ok()?;
        Some(etag.to_string())
    }
}

/// An ETag without its quotes.
fn unquoted(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

/// The ETag S3 gives the object a multipart upload of parts with these ETags makes: the MD5 of
/// the parts' MD5s (each part's ETag, 32 hex digits), `-`, the number of parts. `None` when a
/// part's ETag is not 32 hex digits (a store may say anything there; AWS's SSE-KMS and SSE-C
/// part ETags are 32 hex digits, not MD5s, and are compared all the same: only this upload's
/// own parts make a match).
fn multipart_etag(parts: &[(u16, String)]) -> Option<String> {
    use md5::Digest as _;
    let mut md5 = md5::Md5::new();
    for (_, etag) in parts {
        let hex = unquoted(etag).as_bytes();
        if hex.len() != 32 {
            return None;
        }
        for pair in hex.chunks(2) {
            let digit = |b: u8| char::from(b).to_digit(16);
            md5.update([u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?]);
        }
    }
    let digest = md5.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{hex}-{}", parts.len()))
}

/// The CompleteMultipartUpload of `shared`'s upload with `etags` (sorted by part number).
fn completion<'a>(
    c: &'a Client,
    shared: &'a Shared,
    etags: &'a [(u16, String)],
) -> rusty_s3::actions::CompleteMultipartUpload<'a, impl Iterator<Item = &'a str> + use<'a>> {
    c.bucket().complete_multipart_upload(
        Some(c.credentials()),
        &shared.key,
        &shared.upload_id,
        etags.iter().map(|(_, e)| e.as_str()),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One sender: takes parts until the writer closes the queue; after the upload's first
/// failure it only gives the parts' budget back.
fn send_parts(shared: &Shared, queue: &Mutex<Receiver<Part>>) {
    loop {
        let part = match lock(queue).recv() {
            Ok(part) => part,
            Err(_) => return,
        };
        send_one(shared, part);
    }
}

/// Sends `part` unless the upload failed already, then gives its buffer back.
fn send_one(shared: &Shared, part: Part) {
    if lock(&shared.failure).is_none() {
        match send_part(shared, &part) {
            Ok(etag) => lock(&shared.etags).push((part.number, etag)),
            Err(e) => {
                let mut failure = lock(&shared.failure);
                if failure.is_none() {
                    *failure = Some(e);
                }
            }
        }
    }
    shared.budget.give_buffer(part.bytes);
}

fn send_part(shared: &Shared, part: &Part) -> Result<String, StorageError> {
    let sign = |c: &Client| {
        c.bucket()
            .upload_part(
                Some(c.credentials()),
                &shared.key,
                part.number,
                &shared.upload_id,
            )
            .sign(c.signed_for())
    };
    let response = shared.client.send(
        &Call {
            method: Method::Put,
            sign: &sign,
            headers: &[],
            body: &part.bytes,
            what: &shared.what,
            doing: "upload a part of",
        },
        &[],
    )?;
    response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| StorageError::Service {
            what: shared.what.clone(),
            message: format!("part {} was stored without an ETag", part.number),
        })
}

impl Write for MultipartWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.done {
            return Err(io::Error::other(format!(
                "{}: written after its end",
                self.what
            )));
        }
        if let Some(failure) = self.failure() {
            return Err(io::Error::other(failure));
        }
        if bytes.is_empty() {
            return Ok(0);
        }
        if self.held == 0 {
            let size = self.plan.size(self.number);
            self.buffer = self.budget.take_buffer(size);
            self.held = size;
        }
        let n = (self.held - self.buffer.len()).min(bytes.len());
        self.buffer.extend_from_slice(&bytes[..n]);
        self.written += n as u64;
        if self.buffer.len() == self.held {
            self.send_buffer().map_err(io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for MultipartWriter {
    fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        let result = self.complete();
        if result.is_err() {
            self.abort_upload();
        }
        self.done = true;
        result
    }
}

impl Drop for MultipartWriter {
    fn drop(&mut self) {
        if !self.done {
            self.abort_upload();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_multipart_etag_is_the_md5_of_the_parts_md5s_and_their_count() {
        // md5("a") and md5("b"); the object's is the MD5 of their 32 bytes (Python's
        // hashlib gives 96e0...), as S3 computes it.
        let parts = [
            (1, "\"0cc175b9c0f1b6a831c399e269772661\"".to_string()),
            (2, "92eb5ffee6ae2fec3ad71c777531578f".to_string()),
        ];
        assert_eq!(
            multipart_etag(&parts).as_deref(),
            Some("96e024ba2074fe77e8e965ba43a704be-2")
        );
        // Not an MD5: nothing to compare with.
        assert_eq!(multipart_etag(&[(1, "\"kms-xyz\"".to_string())]), None);
        assert_eq!(
            multipart_etag(&[(1, "zz175b9c0f1b6a831c399e269772661".to_string() + "0")]),
            None
        );
    }

    #[test]
    fn parts_grow_so_that_ten_thousand_hold_hundreds_of_gib_within_the_budget() {
        let budget = 32 * 1024 * 1024;
        let plan = PartPlan::new(8 * 1024 * 1024, budget, 4);
        assert_eq!(plan.size(1), 8 << 20);
        assert_eq!(plan.size(1000), 8 << 20);
        assert_eq!(plan.size(1001), 16 << 20);
        assert_eq!(plan.size(2001), 32 << 20);
        assert_eq!(plan.size(MAX_PARTS), 32 << 20);
        // The largest part fits the budget whole.
        assert!(plan.largest <= budget);
        assert!((1..=MAX_PARTS).all(|n| plan.size(n) <= plan.largest));
        let max = max_object_size(&plan);
        assert!(max > 270 * (1 << 30), "{max}");
        // A first part larger than the budget allows is cut down to it.
        assert_eq!(PartPlan::new(1 << 30, budget, 4).size(1), 32 << 20);
    }

    #[test]
    fn the_budget_blocks_a_taker_until_a_buffer_is_given_back_and_reuses_it() {
        let budget = Arc::new(Budget::new(10));
        let first = budget.take_buffer(6);
        let other = budget.clone();
        let waiter = std::thread::spawn(move || {
            let buffer = other.take_buffer(6);
            let held = other.held();
            (buffer, held)
        });
        // The waiter cannot hold 12 > 10: it gets the buffer these bytes were, given back.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "the waiter went past the budget");
        budget.give_buffer(first);
        let (buffer, held) = waiter.join().unwrap();
        assert!(buffer.capacity() >= 6);
        assert_eq!(held, buffer.capacity());
        assert!(budget.peak() <= 10, "{}", budget.peak());
        budget.give_buffer(buffer);
        // A larger part than any spare: the spare is freed to make room, never both held.
        let big = budget.take_buffer(9);
        assert!(big.capacity() >= 9);
        assert!(budget.peak() <= 10, "{}", budget.peak());
    }
}
