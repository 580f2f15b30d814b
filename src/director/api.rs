//! The director's API as this driver uses it: authenticated calls (a refused UAA token is
//! replaced once and the call made again, as the BOSH CLI does), JSON answers, and tasks: a
//! call that starts one answers `302` to `/tasks/ID`; the task is polled until it ends, and
//! its result read from `/tasks/ID/output?type=result`.

use std::time::{Duration, Instant};

use crate::interrupt::{self, Level};

use serde::de::DeserializeOwned;

use super::auth::{Auth, AuthError};
use super::client::{Http, HttpError, Reply, one_line};

/// The port a director listens on when the URL names none.
const DEFAULT_PORT: u16 = 25555;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(
        "--target '{0}' is not a director URL: give https://HOST[:PORT] (or HOST[:PORT]; the port defaults to 25555)"
    )]
    BadTarget(String),
    #[error(
        "the director at {url} refused {who}: {detail}: check --username and --password (BOSH_CLIENT, BOSH_CLIENT_SECRET)"
    )]
    Refused {
        url: String,
        who: String,
        detail: String,
    },
    #[error("the director at {url}: {what} answered {status}: {detail}")]
    Status {
        url: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("the director at {url}: {what}: a bad answer: {detail}")]
    BadAnswer {
        url: String,
        what: String,
        detail: String,
    },
    #[error("the director at {url}: task {id} ({what}) ended '{state}': {detail}")]
    TaskFailed {
        url: String,
        id: u64,
        what: String,
        state: String,
        detail: String,
    },
    #[error("the director at {url}: task {id} ({what}) did not end within {secs} s")]
    TaskTimeout {
        url: String,
        id: u64,
        what: String,
        secs: u64,
    },
    #[error(
        "the director at {url}: stopped waiting for task {id} ({what}): the run was interrupted; the task may still run there (`bosh task {id}`)"
    )]
    TaskInterrupted { url: String, id: u64, what: String },
}

pub struct Director {
    http: Http,
    /// `https://host:port`, without a trailing slash.
    url: String,
    auth: Auth,
}

impl Director {
    /// Learns the director's auth type from `/info`; the first authenticated call asks for a
    /// token.
    /// `proxy`: a SOCKS5 proxy URL every call goes through (`BOSH_ALL_PROXY`'s tunnel).
    pub fn connect(
        target: &str,
        ca: Option<&str>,
        proxy: Option<&str>,
        user: &str,
        secret: &str,
    ) -> Result<Director, ApiError> {
        let url = normalise_target(target)?;
        let http = Http::new(ca, proxy)?;
        let auth = Auth::discover(&http, &url, user, secret)?;
        Ok(Director { http, url, auth })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One authenticated call; a UAA token the director refuses is replaced once.
    fn call(&mut self, path: &str, post: Option<&serde_json::Value>) -> Result<Reply, ApiError> {
        let url = format!("{}{path}", self.url);
        let body = post.map(|v| v.to_string().into_bytes());
        let mut retried = false;
        loop {
            let header = self.auth.header(&self.http)?;
            let reply = match &body {
                Some(b) => self.http.post(&url, Some(&header), "application/json", b)?,
                None => self.http.get(&url, Some(&header))?,
            };
            if reply.status == 401 {
                if self.auth.is_uaa() && !retried {
                    retried = true;
                    self.auth.refresh(&self.http)?;
                    continue;
                }
                return Err(ApiError::Refused {
                    url: self.url.clone(),
                    who: self.auth.who(),
                    detail: reply.detail(),
                });
            }
            return Ok(reply);
        }
    }

    /// `GET path`, expecting 200 and JSON.
    pub fn get_json<T: DeserializeOwned>(&mut self, path: &str, what: &str) -> Result<T, ApiError> {
        let reply = self.call(path, None)?;
        self.expect_json(reply, what)
    }

    pub fn expect_json<T: DeserializeOwned>(
        &self,
        reply: Reply,
        what: &str,
    ) -> Result<T, ApiError> {
        if reply.status != 200 {
            return Err(self.status(what, &reply));
        }
        serde_json::from_slice(&reply.body).map_err(|e| self.bad(what, e.to_string()))
    }

    pub fn status(&self, what: &str, reply: &Reply) -> ApiError {
        ApiError::Status {
            url: self.url.clone(),
            what: what.to_string(),
            status: reply.status,
            detail: reply.detail(),
        }
    }

    pub fn bad(&self, what: &str, detail: String) -> ApiError {
        ApiError::BadAnswer {
            url: self.url.clone(),
            what: what.to_string(),
            detail: one_line(&detail),
        }
    }

    /// Starts a task with `GET path` (`post` is None) or `POST path` and returns its id, or the
    /// director's answer when it started none (a 404, say).
    pub fn start_task(
        &mut self,
        path: &str,
        post: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<Result<u64, Reply>, ApiError> {
        let reply = self.call(path, post)?;
        match reply.status {
            // The director redirects to the task: take its id from the path, and ask this
            // director (the Location may name the director by another address).
            301..=303 => {
                let location = reply.location.as_deref().unwrap_or_default();
                task_id_in(location).map(Ok).ok_or_else(|| {
                    self.bad(what, format!("a redirect to '{location}', not to a task"))
                })
            }
            // Some clients are answered with the task itself.
            200..=202 => {
                #[derive(serde::Deserialize)]
                struct Task {
                    id: u64,
                }
                serde_json::from_slice::<Task>(&reply.body)
                    .map(|t| Ok(t.id))
                    .map_err(|e| self.bad(what, format!("not a task: {e}")))
            }
            _ => Ok(Err(reply)),
        }
    }

    /// Polls task `id` until it ends, then reads its result; a task that did not end `done` is
    /// an error with its result (the director's reason) when it has one.
    /// The wait ends early once the run's interruption reaches `stop_at`: a setup gives up at
    /// the first one, a cleanup (which must still happen after one) only at a second.
    pub fn wait_task(
        &mut self,
        id: u64,
        what: &str,
        limit: Duration,
        stop_at: Level,
    ) -> Result<Vec<u8>, ApiError> {
        #[derive(serde::Deserialize)]
        struct TaskState {
            state: String,
            #[serde(default)]
            result: Option<String>,
        }
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_millis(50);
        let state = loop {
            let task: TaskState = self.get_json(&format!("/tasks/{id}"), what)?;
            if !matches!(task.state.as_str(), "queued" | "processing" | "cancelling") {
                break task;
            }
            if Instant::now() >= deadline {
                return Err(ApiError::TaskTimeout {
                    url: self.url.clone(),
                    id,
                    what: what.to_string(),
                    secs: limit.as_secs(),
                });
            }
            if interrupt::wait(stop_at, Some(pause)) {
                return Err(ApiError::TaskInterrupted {
                    url: self.url.clone(),
                    id,
                    what: what.to_string(),
                });
            }
            pause = (pause * 2).min(Duration::from_secs(1));
        };
        let reply = self.call(&format!("/tasks/{id}/output?type=result"), None)?;
        if state.state != "done" {
            let detail = match (reply.status, &state.result) {
                (200, _) if !reply.body.is_empty() => {
                    one_line(&String::from_utf8_lossy(&reply.body))
                }
                (_, Some(r)) if !r.is_empty() => one_line(r),
                _ => "no reason given".to_string(),
            };
            return Err(ApiError::TaskFailed {
                url: self.url.clone(),
                id,
                what: what.to_string(),
                state: one_line(&state.state),
                detail,
            });
        }
        if reply.status != 200 {
            return Err(self.status(what, &reply));
        }
        Ok(reply.body)
    }
}

/// `https://host:port` from what BBR accepts as a target: `host`, `host:port`, or a URL.
fn normalise_target(target: &str) -> Result<String, ApiError> {
    let bad = || ApiError::BadTarget(one_line(target));
    let rest = match target.split_once("://") {
        Some(("https", rest)) => rest,
        Some(_) => return Err(bad()),
        None => target,
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty()
        || !authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c))
    {
        return Err(bad());
    }
    // `[v6]:port`, `[v6]`, `host:port` or `host`; a bare IPv6 address is ambiguous.
    let port = match authority.strip_prefix('[') {
        Some(v6) => {
            let (_, after) = v6.split_once(']').ok_or_else(bad)?;
            match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
            }
        }
        None => match authority.matches(':').count() {
            0 => None,
            1 => authority.split_once(':').map(|(_, p)| p),
            _ => return Err(bad()),
        },
    };
    match port {
        Some(p) => {
            p.parse::<u16>().map_err(|_| bad())?;
            Ok(format!("https://{authority}"))
        }
        None => Ok(format!("https://{authority}:{DEFAULT_PORT}")),
    }
}

/// The id in a task's address: `https://director:25555/tasks/42` or `/tasks/42`.
fn task_id_in(location: &str) -> Option<u64> {
    let path = match location.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/')?..],
        None => location,
    };
    let path = path.split(['?', '#']).next()?;
    path.strip_prefix("/tasks/")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_as_bbr_takes_them() {
        assert_eq!(
            normalise_target("10.0.0.6").unwrap(),
            "https://10.0.0.6:25555"
        );
        assert_eq!(
            normalise_target("10.0.0.6:443").unwrap(),
            "https://10.0.0.6:443"
        );
        assert_eq!(
            normalise_target("https://bosh.example.com:25555/").unwrap(),
            "https://bosh.example.com:25555"
        );
        assert_eq!(
            normalise_target("[::1]:8443").unwrap(),
            "https://[::1]:8443"
        );
        assert_eq!(normalise_target("[::1]").unwrap(), "https://[::1]:25555");
        for bad in ["http://x", "x:port", "x/y?z", "", "a b"] {
            assert!(normalise_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn task_ids_from_redirects() {
        assert_eq!(task_id_in("https://10.0.0.6:25555/tasks/42"), Some(42));
        assert_eq!(task_id_in("/tasks/7?x=1"), Some(7));
        assert_eq!(task_id_in("https://x/deployments/a"), None);
        assert_eq!(task_id_in("/tasks/../1"), None);
    }
}
