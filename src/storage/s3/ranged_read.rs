//! An object read as a stream of ranged GETs: one range (8 MiB) at a time, read straight from
//! the connection into the caller's buffer, so a restore holds no more than the caller asks
//! for. A connection that drops or stalls is opened again at the offset reached, a bounded
//! number of times in a row; every range asks for the version the first HEAD saw
//! (`If-Match`), so an object replaced halfway is an error, not a mix of two.

use std::io::{self, Read};
use std::sync::Arc;

use rusty_s3::{Method, S3Action as _};

use super::client::{Call, Client, TRIES};
use crate::storage::StorageError;

pub(crate) struct RangedReader {
    client: Arc<Client>,
    key: String,
    what: String,
    etag: Option<String>,
    size: u64,
    range: u64,
    offset: u64,
    /// The open range: its body and where it ends.
    body: Option<(ureq::BodyReader<'static>, u64)>,
    /// Failures since the last byte read.
    failures: u32,
}

impl RangedReader {
    pub(crate) fn new(
        client: Arc<Client>,
        key: String,
        what: String,
        size: u64,
        etag: Option<String>,
        range: u64,
    ) -> RangedReader {
        RangedReader {
            client,
            key,
            what,
            etag,
            size,
            range: range.max(1),
            offset: 0,
            body: None,
            failures: 0,
        }
    }

    fn open_range(&mut self) -> Result<(), StorageError> {
        let end = self.size.min(self.offset.saturating_add(self.range));
        let range = format!("bytes={}-{}", self.offset, end - 1);
        let mut headers = vec![("range", range.as_str())];
        if let Some(etag) = &self.etag {
            headers.push(("if-match", etag.as_str()));
        }
        let key = self.key.clone();
        let sign = |c: &Client| {
            c.bucket()
                .get_object(Some(c.credentials()), &key)
                .sign(c.signed_for())
        };
        let response = self.client.send(
            &Call {
                method: Method::Get,
                sign: &sign,
                headers: &headers,
                body: &[],
                what: &self.what,
                doing: "read",
            },
            &[],
        )?;
        if response.status().as_u16() != 206 {
            return Err(StorageError::Service {
                what: self.what.clone(),
                message: format!(
                    "asked for {range}, the service answered HTTP {} instead of a part of the object: use an S3 service that serves ranges",
                    response.status().as_u16()
                ),
            });
        }
        self.body = Some((response.into_body().into_reader(), end));
        Ok(())
    }

    fn dropped(&mut self, e: io::Error) -> io::Result<()> {
        self.body = None;
        self.failures += 1;
        if self.failures >= TRIES {
            return Err(io::Error::other(StorageError::Io {
                doing: "read",
                what: self.what.clone(),
                source: e,
            }));
        }
        tracing::debug!(what = %self.what, offset = self.offset, error = %e, "S3 read dropped, reading on from there");
        super::client::backoff(self.failures);
        Ok(())
    }
}

impl Read for RangedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.offset >= self.size {
                return Ok(0);
            }
            if self.body.is_none() {
                match self.open_range() {
                    Ok(()) => {}
                    Err(e @ StorageError::Io { .. }) => {
                        self.dropped(io::Error::other(e.to_string()))?;
                        continue;
                    }
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            let Some((body, end)) = self.body.as_mut() else {
                continue;
            };
            let want = buf.len().min((*end - self.offset) as usize);
            match body.read(&mut buf[..want]) {
                Ok(0) => {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the connection ended at byte {}", self.offset),
                    );
                    self.dropped(e)?;
                }
                Ok(n) => {
                    self.offset += n as u64;
                    self.failures = 0;
                    if self.offset == *end {
                        self.body = None;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.dropped(e)?,
            }
        }
    }
}
