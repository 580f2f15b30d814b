//! One S3 request at a time, synchronous: signed by `rusty-s3` (SigV4 presigned URLs, so the
//! payload is not hashed and a part's bytes are sent as they are), sent by one `ureq` agent
//! (rustls, the system's roots), with a timeout on every phase and a bound on every XML body.
//! A service error becomes [`StorageError::Service`] naming the `s3://` URL and the service's
//! code and message, escaped (it is the server's text, shown on the operator's terminal).
//!
//! Transient failures (the connection, a 500 or 503) are tried again a bounded number of
//! times; each try is signed anew.

use std::io::{self, Read};
use std::time::Duration;

use instant_xml::FromXml;
use rusty_s3::{Bucket, Credentials, Method, UrlStyle};
use ureq::Body;
use ureq::http::{Request, Response};
use url::Url;

use super::credentials::S3Config;
use crate::printable::printable;
use crate::storage::StorageError;

/// The most of an XML answer that is read: a listing page of 1000 keys of 1 KiB is 1 MiB.
pub(super) const MAX_XML: u64 = 4 * 1024 * 1024;
/// The most of an error answer that is read.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// How long a signed URL stays valid: it is used right away.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// How many times a request is sent before its failure is the answer.
pub(super) const TRIES: u32 = 4;

const CONNECT_LIMIT: Duration = Duration::from_secs(30);
/// How long the connection may stay silent while a body goes either way.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// How long the service may take to answer once a request is sent (a multipart upload's
/// completion assembles the object first).
const ANSWER_LIMIT: Duration = Duration::from_secs(300);
/// The most one request may take, whatever it is.
const CALL_LIMIT: Duration = Duration::from_secs(3600);

const S3_XML_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// The store's bucket, its credentials, and the agent that reaches it.
pub(crate) struct Client {
    agent: ureq::Agent,
    bucket: Bucket,
    credentials: Credentials,
}

/// One request, before signing: what to call and what it is, for messages.
pub(super) struct Call<'a> {
    pub method: Method,
    /// The URL rusty-s3 signs (it is signed anew for each try).
    pub sign: &'a dyn Fn(&Client) -> Url,
    /// Headers sent and not signed.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// The `s3://` URL the messages name.
    pub what: &'a str,
    /// What the request does, for a failed connection: "upload part 3 of".
    pub doing: &'static str,
}

impl Client {
    pub(crate) fn new(config: &S3Config, bucket: &str) -> Result<Client, StorageError> {
        let endpoint = Url::parse(&config.endpoint).map_err(|e| {
            StorageError::Location(format!("the S3 endpoint {}: {e}", config.endpoint))
        })?;
        let style = match config.path_style {
            true => UrlStyle::Path,
            false => UrlStyle::VirtualHost,
        };
        let bucket = Bucket::new(endpoint, style, bucket.to_string(), config.region.clone())
            .map_err(|e| {
                StorageError::Location(format!(
                    "s3://{bucket}: cannot address the bucket at {} ({e}): for an IP address or a name without DNS for each bucket, ask for path-style addressing (`s3 =\\n  addressing_style = path` in the profile)",
                    config.endpoint
                ))
            })?;
        let credentials = match &config.token {
            Some(t) => Credentials::new_with_token(&config.key_id, &config.secret, t),
            None => Credentials::new(&config.key_id, &config.secret),
        };
        let mut builder = ureq::Agent::config_builder();
        if config.endpoint.starts_with("https://") {
            let roots = match &config.ca_bundle {
                Some(bundle) => {
                    let path = bundle.display().to_string();
                    crate::director::client::ca_certificates(&path)
                        .map(|certs| ureq::tls::RootCerts::new_with_certs(&certs))
                        .map_err(|e| {
                            StorageError::Location(format!(
                                "the CA bundle of the S3 endpoint (AWS_CA_BUNDLE or the profile's ca_bundle) {path}: {e}"
                            ))
                        })?
                }
                None => crate::director::client::system_roots().map_err(|e| {
                    StorageError::Location(format!("the S3 endpoint {}: {e}", config.endpoint))
                })?,
            };
            builder = builder.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
        }
        let agent = builder
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_LIMIT))
            .timeout_per_read(Some(IDLE_LIMIT))
            .timeout_per_write(Some(IDLE_LIMIT))
            .timeout_recv_response(Some(ANSWER_LIMIT))
            .timeout_per_call(Some(CALL_LIMIT))
            .user_agent(concat!("bbr-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Client {
            agent,
            bucket,
            credentials,
        })
    }

    pub(super) fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    pub(super) fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// How long each signed URL is valid.
    pub(super) fn signed_for(&self) -> Duration {
        SIGNED_FOR
    }

    /// Sends `call`, tried again on a transient failure; an answer of 300 or more is an error,
    /// except the statuses in `accept` (a HEAD's 404), which are returned.
    pub(super) fn send(
        &self,
        call: &Call<'_>,
        accept: &[u16],
    ) -> Result<Response<Body>, StorageError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let url = (call.sign)(self);
            let mut request = Request::builder()
                .method(method(call.method))
                .uri(url.as_str());
            for (name, value) in call.headers {
                request = request.header(*name, *value);
            }
            let request = request.body(call.body).map_err(|e| StorageError::Io {
                doing: call.doing,
                what: call.what.to_string(),
                source: io::Error::other(e),
            })?;
            match self.agent.run(request) {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if status < 300 || accept.contains(&status) {
                        return Ok(response);
                    }
                    if (status == 500 || status == 503) && tries < TRIES {
                        backoff(tries);
                        continue;
                    }
                    return Err(service_error(call.what, response));
                }
                Err(e) if tries < TRIES => {
                    tracing::debug!(what = call.what, error = %e, "S3 request failed, trying again");
                    backoff(tries);
                }
                Err(e) => return Err(transport_error(call.doing, call.what, e)),
            }
        }
    }

    /// Sends `call` and reads its XML answer, bounded.
    pub(super) fn send_for_xml(&self, call: &Call<'_>) -> Result<String, StorageError> {
        let mut response = self.send(call, &[])?;
        read_xml(call.what, response.body_mut())
    }
}

fn method(m: Method) -> ureq::http::Method {
    match m {
        Method::Head => ureq::http::Method::HEAD,
        Method::Get => ureq::http::Method::GET,
        Method::Post => ureq::http::Method::POST,
        Method::Put => ureq::http::Method::PUT,
        Method::Delete => ureq::http::Method::DELETE,
    }
}

/// Waits a little longer after each failed try: 0.2 s, 0.8 s, 1.8 s.
pub(super) fn backoff(tries: u32) {
    std::thread::sleep(Duration::from_millis(200 * u64::from(tries * tries)));
}

pub(super) fn read_xml(what: &str, body: &mut Body) -> Result<String, StorageError> {
    body.with_config()
        .limit(MAX_XML)
        .read_to_string()
        .map_err(|e| StorageError::Service {
            what: what.to_string(),
            message: format!(
                "the answer is not an S3 XML document of at most {MAX_XML} bytes: {}",
                one_line(&e.to_string())
            ),
        })
}

/// An XML answer that does not parse: the service is not S3, or not well.
pub(super) fn bad_xml(what: &str, e: instant_xml::Error) -> StorageError {
    StorageError::Service {
        what: what.to_string(),
        message: format!(
            "the answer is not the S3 XML expected ({}): is the endpoint an S3 service?",
            one_line(&e.to_string())
        ),
    }
}

pub(super) fn transport_error(doing: &'static str, what: &str, e: ureq::Error) -> StorageError {
    StorageError::Io {
        doing,
        what: what.to_string(),
        source: io::Error::other(one_line(&e.to_string())),
    }
}

#[derive(FromXml)]
#[xml(rename = "Error")]
struct ErrorAnswer {
    #[xml(rename = "Code")]
    code: Option<String>,
    #[xml(rename = "Message")]
    message: Option<String>,
}

/// The service's refusal as one line: its code, its message, the HTTP status, and what to
/// check for the usual causes.
pub(super) fn service_error(what: &str, mut response: Response<Body>) -> StorageError {
    let status = response.status();
    let mut body = Vec::new();
    // A refusal's body is only read for its message: a failure to read it leaves the status.
    let _ = response
        .body_mut()
        .as_reader()
        .take(MAX_ERROR_BODY)
        .read_to_end(&mut body);
    let text = String::from_utf8_lossy(&body);
    let (code, message) = match instant_xml::from_str::<ErrorAnswer>(&text) {
        Ok(ErrorAnswer { code, message }) => (code, message),
        // Not XML (a control character is not allowed in XML): the elements' text as it is.
        Err(_) => (element(&text, "Code"), element(&text, "Message")),
    };
    let code = code.unwrap_or_else(|| status.canonical_reason().unwrap_or("").replace(' ', ""));
    // Garage says AccessDenied for both a wrong key and a wrong signature.
    let said = message.as_deref().unwrap_or("").to_ascii_lowercase();
    let hint = match code.as_str() {
        _ if said.contains("signature") => {
            ": check AWS_SECRET_ACCESS_KEY (or the profile's aws_secret_access_key) and AWS_REGION"
        }
        _ if said.contains("no such key") || said.contains("access key") => {
            ": check AWS_ACCESS_KEY_ID (or the profile's aws_access_key_id)"
        }
        "InvalidAccessKeyId" => ": check AWS_ACCESS_KEY_ID (or the profile's aws_access_key_id)",
        "SignatureDoesNotMatch" => {
            ": check AWS_SECRET_ACCESS_KEY (or the profile's aws_secret_access_key) and AWS_REGION"
        }
        "AccessDenied" | "Forbidden" => {
            ": check that the key (AWS_ACCESS_KEY_ID) may read and write the bucket"
        }
        "NoSuchBucket" => ": check the bucket's name, AWS_ENDPOINT_URL and AWS_REGION",
        "AuthorizationHeaderMalformed" => ": check AWS_REGION",
        "PermanentRedirect" | "MovedPermanently" => {
            ": the bucket is in another region: check AWS_REGION"
        }
        _ => "",
    };
    let message = match message.filter(|m| !m.trim().is_empty()) {
        Some(m) => format!(
            "{} ({}, HTTP {}){hint}",
            one_line(&m),
            one_line(&code),
            status.as_u16()
        ),
        None => format!("{} (HTTP {}){hint}", one_line(&code), status.as_u16()),
    };
    StorageError::Service {
        what: what.to_string(),
        message,
    }
}

/// The text of the first `<name>` element of `text`, not unescaped.
fn element(text: &str, name: &str) -> Option<String> {
    let start = text.find(&format!("<{name}>"))? + name.len() + 2;
    let len = text[start..].find(&format!("</{name}>"))?;
    Some(text[start..start + len].to_string())
}

/// An answer of 200 whose body is an `<Error>` (S3 may answer a completion so), or is not
/// what was asked.
pub(super) fn error_in_body(what: &str, xml: &str) -> StorageError {
    match instant_xml::from_str::<ErrorAnswer>(xml) {
        Ok(ErrorAnswer { code, message }) => StorageError::Service {
            what: what.to_string(),
            message: format!(
                "{} ({})",
                one_line(message.as_deref().unwrap_or("refused")),
                one_line(code.as_deref().unwrap_or("no code"))
            ),
        },
        Err(e) => bad_xml(what, e),
    }
}

/// The server's text on one line, escaped, at most 300 characters.
fn one_line(text: &str) -> String {
    printable(text.trim(), 300).replace("\\n", " ")
}

/// Where a listing of multipart uploads goes on from.
pub(super) type Marker = (String, Option<String>);

/// One page of `ListMultipartUploads`, which rusty-s3 does not provide: the query is signed
/// by its `signing::sign`, as it offers for actions it lacks.
pub(super) struct UploadsPage {
    /// Each upload's key, id and start (`Initiated`), if the service gave one that parses.
    pub uploads: Vec<(String, String, Option<std::time::SystemTime>)>,
    /// The key marker, and the upload-id marker if any, to go on from.
    pub next: Option<Marker>,
}

#[derive(FromXml)]
#[xml(rename = "ListMultipartUploadsResult", ns(S3_XML_NS))]
struct UploadsAnswer {
    uploads: Vec<UploadEntry>,
    #[xml(rename = "IsTruncated")]
    is_truncated: Option<bool>,
    #[xml(rename = "NextKeyMarker")]
    next_key_marker: Option<String>,
    #[xml(rename = "NextUploadIdMarker")]
    next_upload_id_marker: Option<String>,
}

#[derive(FromXml)]
#[xml(rename = "Upload", ns(S3_XML_NS))]
struct UploadEntry {
    #[xml(rename = "Key")]
    key: String,
    #[xml(rename = "UploadId")]
    upload_id: String,
    #[xml(rename = "Initiated")]
    initiated: Option<String>,
}

impl Client {
    /// The in-progress multipart uploads whose key starts with `prefix`, one page from
    /// `after` (the previous page's markers).
    pub(super) fn list_uploads(
        &self,
        prefix: &str,
        after: Option<&Marker>,
        page: usize,
        what: &str,
    ) -> Result<UploadsPage, StorageError> {
        let page = page.to_string();
        let sign = |c: &Client| {
            // Sorted by name, as `sign` wants.
            let mut query: Vec<(&str, &str)> = Vec::new();
            if let Some((key, _)) = after {
                query.push(("key-marker", key));
            }
            query.push(("max-uploads", &page));
            query.push(("prefix", prefix));
            if let Some((_, Some(id))) = after {
                query.push(("upload-id-marker", id));
            }
            query.push(("uploads", ""));
            rusty_s3::signing::sign(
                &jiff::Timestamp::now(),
                Method::Get,
                c.bucket.base_url().clone(),
                c.credentials.key(),
                c.credentials.secret(),
                c.credentials.token(),
                c.bucket.region(),
                SIGNED_FOR.as_secs(),
                query.iter().copied(),
                std::iter::empty(),
            )
        };
        let xml = self.send_for_xml(&Call {
            method: Method::Get,
            sign: &sign,
            headers: &[],
            body: &[],
            what,
            doing: "list the multipart uploads under",
        })?;
        let answer: UploadsAnswer = instant_xml::from_str(&xml).map_err(|e| bad_xml(what, e))?;
        let next = match (
            answer.is_truncated,
            answer.next_key_marker,
            answer.next_upload_id_marker,
        ) {
            (Some(true), Some(k), u) if !k.is_empty() => Some((k, u.filter(|u| !u.is_empty()))),
            (Some(true), _, _) => {
                return Err(StorageError::Service {
                    what: what.to_string(),
                    message:
                        "a truncated list of multipart uploads without a key marker to go on from"
                            .to_string(),
                });
            }
            _ => None,
        };
        Ok(UploadsPage {
            uploads: answer
                .uploads
                .into_iter()
                .map(|u| {
                    let started = u
                        .initiated
                        .and_then(|t| t.trim().parse::<jiff::Timestamp>().ok())
                        .map(std::time::SystemTime::from);
                    (u.key, u.upload_id, started)
                })
                .collect(),
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_without_a_certificate_is_one_line_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("ca.pem");
        std::fs::write(&bundle, "not a certificate\n").unwrap();
        let config = S3Config {
            key_id: "k".into(),
            secret: "s".into(),
            token: None,
            region: "r".into(),
            endpoint: "https://minio.internal:9000".into(),
            path_style: true,
            ca_bundle: Some(bundle.clone()),
        };
        let e = Client::new(&config, "bucket")
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("AWS_CA_BUNDLE") && e.contains(&bundle.display().to_string()),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn an_error_answer_is_one_escaped_line_with_code_message_and_hint() {
        let response = Response::builder()
            .status(403)
            .body(Body::builder().data(
                "<?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code><Message>No such key\n\u{1b}[31mred</Message></Error>",
            ))
            .unwrap();
        let e = service_error("s3://b/k", response).to_string();
        assert!(e.starts_with("s3://b/k: No such key"), "{e}");
        assert!(
            e.contains("InvalidAccessKeyId") && e.contains("HTTP 403"),
            "{e}"
        );
        assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
        assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn an_answer_that_is_not_xml_keeps_the_status() {
        let response = Response::builder()
            .status(502)
            .body(Body::builder().data("<html>bad gateway</html>"))
            .unwrap();
        let e = service_error("s3://b/k", response).to_string();
        assert_eq!(e, "s3://b/k: BadGateway (HTTP 502)");
    }
}
