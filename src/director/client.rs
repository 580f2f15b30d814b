//! HTTPS to the director and its UAA: one `ureq` agent whose TLS is verified against the
//! operator's CA (`--ca-cert`, a file or the PEM itself) or the system's roots, and never not
//! verified. Answers come back whatever their status (the caller decides what a 401 or a 404
//! means), redirects are not followed (a task's `302` is read for its id), and bodies are
//! bounded.

use std::path::Path;
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// The most of one answer that is read: a deployment's VM list is the largest one.
const MAX_BODY: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot read the CA certificate {path}: {source}")]
    CaRead {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the CA certificate {what} holds no PEM certificate: give --ca-cert (or BOSH_CA_CERT) as a PEM file or as the PEM text itself"
    )]
    CaEmpty { what: String },
    #[error("the CA certificate {what} is not valid PEM: {detail}")]
    CaBad { what: String, detail: String },
    #[error("cannot load the system's CA certificates: {0}; give --ca-cert")]
    SystemRoots(String),
    #[error(
        "{url}: its TLS certificate is not trusted ({detail}): give the director's CA with --ca-cert (or BOSH_CA_CERT)"
    )]
    Untrusted { url: String, detail: String },
    #[error("cannot reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the proxy {url} cannot be used: {detail}")]
    Proxy { url: String, detail: String },
    #[error(
        "{url}: the director did not answer within {limit} ({detail}); nothing was touched: check that it is up and reachable"
    )]
    Timeout {
        url: String,
        limit: String,
        detail: String,
    },
}

/// How long one call to the director may take; `BBR_AGENT_DIRECTOR_TIMEOUT` (a duration,
/// e.g. `2s`) shortens it, for tests (undocumented in --help on purpose).
const CALL_LIMIT: Duration = Duration::from_secs(300);
const CONNECT_LIMIT: Duration = Duration::from_secs(30);
pub const TIMEOUT_ENV: &str = "BBR_AGENT_DIRECTOR_TIMEOUT";

/// The limits for connecting and for a whole call: the knob's, when it is set and valid.
fn limits() -> (Duration, Duration) {
    match std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|t| crate::duration::parse(&t).ok())
    {
        Some(d) if !d.is_zero() => (d.min(CONNECT_LIMIT), d),
        _ => (CONNECT_LIMIT, CALL_LIMIT),
    }
}

/// One answer: its status, its `Location` header, and its body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text for a message: the director's `description` when it is a director
    /// error, else the start of the body, on one line.
    pub fn detail(&self) -> String {
        #[derive(serde::Deserialize)]
        struct DirectorError {
            description: Option<String>,
            error_description: Option<String>,
        }
        let text = match serde_json::from_slice::<DirectorError>(&self.body) {
            Ok(DirectorError {
                description: Some(d),
                ..
            })
            | Ok(DirectorError {
                error_description: Some(d),
                ..
            }) => d,
            // A body that carries a token is never shown: errors reach the terminal and logs.
            _ if holds_a_token(&self.body) => {
                "(the answer holds a token, which is not shown)".to_string()
            }
            _ => String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned(),
        };
        one_line(&text)
    }
}

/// Whether a body names one of the OAuth token fields.
fn holds_a_token(body: &[u8]) -> bool {
    [&b"access_token"[..], b"refresh_token", b"id_token"]
        .iter()
        .any(|field| body.windows(field.len()).any(|w| w == *field))
}

/// The director's TLS trust: the given CA, else the system's roots.
pub struct Http {
    agent: ureq::Agent,
}

impl Http {
    /// `ca` is `--ca-cert`: a PEM text (it holds `-----BEGIN`), else a file's path. `proxy`
    /// is a SOCKS5 proxy URL (`BOSH_ALL_PROXY`'s tunnel).
    pub fn new(ca: Option<&str>, proxy: Option<&str>) -> Result<Http, HttpError> {
        let proxy = proxy
            .map(|p| {
                ureq::Proxy::new(p).map_err(|e| HttpError::Proxy {
                    url: p.to_string(),
                    detail: one_line(&e.to_string()),
                })
            })
            .transpose()?;
        let roots = match ca.filter(|c| !c.trim().is_empty()) {
            Some(ca) => RootCerts::new_with_certs(&ca_certificates(ca)?),
            None => system_roots()?,
        };
        let tls = TlsConfig::builder().root_certs(roots).build();
        let mut config = ureq::Agent::config_builder();
        // Without BOSH_ALL_PROXY, ureq's own default stands (the proxy of the environment's
        // ALL_PROXY/HTTPS_PROXY, if any).
        if proxy.is_some() {
            config = config.proxy(proxy);
        }
        let config = config
            .tls_config(tls)
            .https_only(true)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(limits().0))
            .timeout_global(Some(limits().1))
            .user_agent(concat!("bbr-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Http {
            agent: config.new_agent(),
        })
    }

    pub fn get(&self, url: &str, authorization: Option<&str>) -> Result<Reply, HttpError> {
        let mut request = self.agent.get(url).header("Accept", "application/json");
        if let Some(a) = authorization {
            request = request.header("Authorization", a);
        }
        reply(url, request.call())
    }

    pub fn post(
        &self,
        url: &str,
        authorization: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> Result<Reply, HttpError> {
        let mut request = self
            .agent
            .post(url)
            .header("Accept", "application/json")
            .header("Content-Type", content_type);
        if let Some(a) = authorization {
            request = request.header("Authorization", a);
        }
        reply(url, request.send(body))
    }
}

fn reply(
    url: &str,
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Reply, HttpError> {
    let mut response = result.map_err(|e| connection_error(url, e))?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| connection_error(url, e))?;
    Ok(Reply {
        status,
        location,
        body,
    })
}

fn connection_error(url: &str, e: ureq::Error) -> HttpError {
    let detail = one_line(&e.to_string());
    if let ureq::Error::Timeout(which) = &e {
        let limit = match which {
            ureq::Timeout::Connect => limits().0,
            _ => limits().1,
        };
        return HttpError::Timeout {
            url: url.to_string(),
            limit: crate::duration::format(limit),
            detail,
        };
    }
    // rustls says "invalid peer certificate: UnknownIssuer" (and the like) for a server whose
    // chain does not lead to the roots given.
    if matches!(e, ureq::Error::Rustls(_)) || detail.contains("peer certificate") {
        HttpError::Untrusted {
            url: url.to_string(),
            detail,
        }
    } else {
        HttpError::Unreachable {
            url: url.to_string(),
            detail,
        }
    }
}

/// The certificates of `--ca-cert`: its PEM text, or the file it names.
pub(crate) fn ca_certificates(ca: &str) -> Result<Vec<Certificate<'static>>, HttpError> {
    let (pem, what) = if ca.contains("-----BEGIN") {
        (ca.as_bytes().to_vec(), "given as text".to_string())
    } else {
        let bytes = std::fs::read(Path::new(ca)).map_err(|source| HttpError::CaRead {
            path: ca.to_string(),
            source,
        })?;
        (bytes, ca.to_string())
    };
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(HttpError::CaBad {
                    what,
                    detail: one_line(&e.to_string()),
                });
            }
        }
    }
    if certs.is_empty() {
        return Err(HttpError::CaEmpty { what });
    }
    Ok(certs)
}

pub(crate) fn system_roots() -> Result<RootCerts, HttpError> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| one_line(&e.to_string()))
            .unwrap_or_else(|| "none found".to_string());
        return Err(HttpError::SystemRoots(why));
    }
    let certs: Vec<Certificate<'static>> = found
        .certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    Ok(RootCerts::new_with_certs(&certs))
}

/// `text` on one line, at most 300 characters.
pub fn one_line(text: &str) -> String {
    let line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_that_is_neither_a_file_nor_pem_is_named() {
        let err = Http::new(Some("/nonexistent/ca.pem"), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let err = Http::new(Some("-----BEGIN nonsense"), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("PEM"), "{err}");
    }

    #[test]
    fn details_prefer_the_directors_description() {
        let reply = Reply {
            status: 404,
            location: None,
            body: br#"{"code":70000,"description":"Deployment 'x' doesn't exist"}"#.to_vec(),
        };
        assert_eq!(reply.detail(), "Deployment 'x' doesn't exist");
        let reply = Reply {
            status: 500,
            location: None,
            body: b"oops\nsecond line".to_vec(),
        };
        assert_eq!(reply.detail(), "oops second line");
    }

    /// A token the driver refused (or any answer holding one) is never quoted in an error.
    #[test]
    fn a_body_holding_a_token_is_not_shown() {
        let reply = Reply {
            status: 200,
            location: None,
            body: br#"{"access_token":"eyJSECRET-TOKEN","token_type":"bearer x","expires_in":600}"#
                .to_vec(),
        };
        let detail = reply.detail();
        assert!(!detail.contains("eyJSECRET"), "{detail}");
        assert!(detail.contains("holds a token"), "{detail}");
    }
}
