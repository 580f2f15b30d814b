//! How the director wants to be spoken to, learnt from its `/info`: through UAA (a token
//! from the UAA at the URL `/info` names, got again when it runs out or is refused) or with
//! basic auth.
//!
//! As BBR: with UAA, `--username`/`--password` are a UAA *client* and its secret, and the
//! token comes from a client-credentials grant (BBR hands them to the BOSH CLI's
//! client-token session, which only ever asks for that grant; there is no password grant
//! for a user). With any other auth type, they go to the director as basic auth.

use std::time::{Duration, Instant};

use super::client::{Http, HttpError, Reply};

/// A token is asked for again this long before the UAA said it would expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{url} is not a BOSH director: its /info answered {status}: {detail}")]
    NoInfo {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url}: the director's /info names UAA but no UAA URL")]
    NoUaaUrl { url: String },
    #[error(
        "the director's UAA ({url}) refused the client '{client}': {detail}: check --username and --password (BOSH_CLIENT, BOSH_CLIENT_SECRET)"
    )]
    UaaRefused {
        url: String,
        client: String,
        detail: String,
    },
    #[error("the director's UAA ({url}) gave no token ({status}): {detail}")]
    UaaBroken {
        url: String,
        status: u16,
        detail: String,
    },
}

#[derive(serde::Deserialize)]
struct Info {
    #[serde(default)]
    user_authentication: Option<UserAuthentication>,
}

#[derive(serde::Deserialize)]
struct UserAuthentication {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    options: serde_json::Map<String, serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

pub struct Token {
    header: String,
    good_until: Option<Instant>,
}

pub enum Auth {
    Basic {
        user: String,
        header: String,
    },
    Uaa {
        token_url: String,
        uaa_url: String,
        client: String,
        secret: String,
        token: Option<Token>,
    },
}

impl Auth {
    /// Reads the director's `/info` (it needs no credentials) and sets up its auth type.
    pub fn discover(
        http: &Http,
        director: &str,
        user: &str,
        secret: &str,
    ) -> Result<Auth, AuthError> {
        let url = format!("{director}/info");
        let reply = http.get(&url, None)?;
        let info: Option<Info> = (reply.status == 200)
            .then(|| serde_json::from_slice(&reply.body).ok())
            .flatten();
        let Some(info) = info else {
            return Err(AuthError::NoInfo {
                url: director.to_string(),
                status: reply.status,
                detail: reply.detail(),
            });
        };
        match info.user_authentication {
            Some(ua) if ua.kind == "uaa" => {
                let uaa_url = ua
                    .options
                    .get("url")
                    .and_then(|v| v.as_str())
                    .map(|u| u.trim_end_matches('/').to_string())
                    .ok_or_else(|| AuthError::NoUaaUrl {
                        url: director.to_string(),
                    })?;
                Ok(Auth::Uaa {
                    token_url: format!("{uaa_url}/oauth/token"),
                    uaa_url,
                    client: user.to_string(),
                    secret: secret.to_string(),
                    token: None,
                })
            }
            _ => Ok(Auth::Basic {
                user: user.to_string(),
                header: basic(user, secret),
            }),
        }
    }

    pub fn is_uaa(&self) -> bool {
        matches!(self, Auth::Uaa { .. })
    }

    /// Who the director was asked as, for messages.
    pub fn who(&self) -> String {
        match self {
            Auth::Basic { user, .. } => format!("user '{user}' (basic auth)"),
            Auth::Uaa { client, .. } => format!("the UAA client '{client}'"),
        }
    }

    /// The `Authorization` header for the next call: a token still good, or a new one.
    pub fn header(&mut self, http: &Http) -> Result<String, AuthError> {
        if let Auth::Uaa { token: Some(t), .. } = self
            && t.good_until.is_none_or(|until| Instant::now() < until)
        {
            return Ok(t.header.clone());
        }
        match self {
            Auth::Basic { header, .. } => Ok(header.clone()),
            Auth::Uaa { .. } => self.refresh(http),
        }
    }

    /// Asks the UAA for a new token (the director refused the last one, or it ran out).
    pub fn refresh(&mut self, http: &Http) -> Result<String, AuthError> {
        let Auth::Uaa {
            token_url,
            uaa_url,
            client,
            secret,
            token,
        } = self
        else {
            return self.header(http);
        };
        let reply = http.post(
            token_url,
            Some(&basic(client, secret)),
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials",
        )?;
        let granted = parse_token(&reply).ok_or_else(|| match reply.status {
            400 | 401 | 403 => AuthError::UaaRefused {
                url: uaa_url.clone(),
                client: client.clone(),
                detail: reply.detail(),
            },
            status @ 200..=299 => AuthError::UaaBroken {
                url: uaa_url.clone(),
                status,
                detail: "its token answer is not one this driver can use (an access_token, a token_type of letters, an expires_in)".to_string(),
            },
            status => AuthError::UaaBroken {
                url: uaa_url.clone(),
                status,
                detail: reply.detail(),
            },
        })?;
        let header = granted.header.clone();
        *token = Some(granted);
        Ok(header)
    }
}

fn parse_token(reply: &Reply) -> Option<Token> {
    if reply.status != 200 {
        return None;
    }
    let t: TokenReply = serde_json::from_slice(&reply.body).ok()?;
    if t.access_token.is_empty() || t.access_token.chars().any(|c| c.is_control()) {
        return None;
    }
    // UAA says "bearer"; the director wants it as "Bearer".
    let kind = match t.token_type.as_deref() {
        None | Some("bearer") | Some("Bearer") | Some("") => "Bearer".to_string(),
        Some(other) if other.chars().all(|c| c.is_ascii_alphanumeric()) => other.to_string(),
        Some(_) => return None,
    };
    let good_until = t.expires_in.map(|secs| {
        Instant::now()
            + Duration::from_secs(secs.min(365 * 24 * 3600)).saturating_sub(EXPIRY_MARGIN)
    });
    Some(Token {
        header: format!("{kind} {}", t.access_token),
        good_until,
    })
}

fn basic(user: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        crate::artifact::base64::encode(format!("{user}:{secret}").as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            location: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_uaa_token_becomes_a_bearer_header_that_expires_early() {
        let t = parse_token(&reply(
            200,
            r#"{"access_token":"abc","token_type":"bearer","expires_in":30}"#,
        ))
        .unwrap();
        assert_eq!(t.header, "Bearer abc");
        // 30 s minus the minute's margin: already due again.
        assert!(t.good_until.unwrap() <= Instant::now());
    }

    #[test]
    fn no_token_from_a_refusal_or_a_hostile_answer() {
        assert!(parse_token(&reply(401, r#"{"error":"unauthorized"}"#)).is_none());
        assert!(parse_token(&reply(200, r#"{"access_token":"a\nb"}"#)).is_none());
        assert!(parse_token(&reply(200, r#"{"access_token":"a","token_type":"x y"}"#)).is_none());
    }

    #[test]
    fn basic_auth_is_base64_of_user_and_secret() {
        assert_eq!(basic("admin", "pw"), "Basic YWRtaW46cHc=");
    }
}
