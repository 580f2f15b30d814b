//! Where the S3 store's settings come from, by AWS's conventions: the credentials, the region,
//! the endpoint and the addressing style, from the environment, else from the profile in
//! `~/.aws/credentials` and `~/.aws/config`. Every missing or bad setting is one line naming
//! the variable, file or key, and what to set.
//!
//! The files are the operator's, but read as hostile text all the same: at most
//! [`MAX_FILE`] bytes, parsed in one pass.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The most of `~/.aws/credentials` or `~/.aws/config` that is read: real ones are a few KiB.
const MAX_FILE: u64 = 1024 * 1024;

/// Everything a request to the store needs, resolved.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct S3Config {
    pub key_id: String,
    pub secret: String,
    pub token: Option<String>,
    pub region: String,
    /// `https://s3.REGION.amazonaws.com` unless an endpoint is given.
    pub endpoint: String,
    /// `https://ENDPOINT/BUCKET/KEY` rather than `https://BUCKET.ENDPOINT/KEY`.
    pub path_style: bool,
    /// The certificates an HTTPS endpoint is trusted by, in place of the system's
    /// (`AWS_CA_BUNDLE`, the profile's `ca_bundle`): an on-premises store's private CA.
    pub ca_bundle: Option<PathBuf>,
}

impl std::fmt::Debug for S3Config {
    // The secret and the token never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("key_id", &self.key_id)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give `aws_access_key_id` and `aws_secret_access_key` in [{profile}] of {credentials} (AWS_SHARED_CREDENTIALS_FILE) or {config} (AWS_CONFIG_FILE), or choose another profile with AWS_PROFILE"
    )]
    NoCredentials {
        profile: String,
        credentials: String,
        config: String,
    },
    #[error("{set} is set but {missing} is not: set both (or neither, to use the profile)")]
    HalfCredentials {
        set: &'static str,
        missing: &'static str,
    },
    #[error("[{profile}] in {file} has `{set}` but no `{missing}`: add it")]
    HalfProfile {
        profile: String,
        file: String,
        set: &'static str,
        missing: &'static str,
    },
    #[error(
        "AWS_PROFILE={profile}: no such profile in {credentials} nor {config} ([{profile}] or [profile {profile}]): set AWS_PROFILE to one of yours"
    )]
    NoProfile {
        profile: String,
        credentials: String,
        config: String,
    },
    #[error(
        "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or `region` in [{section}] of {config}"
    )]
    NoRegion { section: String, config: String },
    #[error(
        "{what} = {value:?} is not a region name (letters, digits and `-`): set it to e.g. us-east-1"
    )]
    BadRegion { what: String, value: String },
    #[error(
        "{what} = {value:?} is not an http:// or https:// URL: set it to e.g. https://s3.example.com"
    )]
    BadEndpoint { what: String, value: String },
    #[error("{what} = {value:?}: addressing_style is `path`, `virtual` or `auto`")]
    BadAddressing { what: String, value: String },
    #[error("cannot read {file}: {detail}")]
    Unreadable { file: String, detail: String },
    #[error(
        "{file} is larger than {MAX_FILE} bytes: it is not an AWS {kind} file; point {variable} elsewhere"
    )]
    TooLarge {
        file: String,
        kind: &'static str,
        variable: &'static str,
    },
    #[error("{file}: a variable is not UTF-8: {variable}")]
    NotText { file: String, variable: String },
}

/// What the program (later, its flags) decides over the environment and the files.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    /// `Some(true)`: path-style addressing whatever the profile says.
    pub path_style: Option<bool>,
}

/// The settings from the process's environment and the files it names.
pub(crate) fn from_env(overrides: &Overrides) -> Result<S3Config, ConfigError> {
    resolve(&|name| std::env::var_os(name), overrides)
}

/// The settings from `var` (an environment) and the files it names.
pub(crate) fn resolve(
    var: &dyn Fn(&str) -> Option<OsString>,
    overrides: &Overrides,
) -> Result<S3Config, ConfigError> {
    let text = |name: &str| -> Result<Option<String>, ConfigError> {
        match var(name) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => v.into_string().map(Some).map_err(|_| ConfigError::NotText {
                file: "the environment".into(),
                variable: name.into(),
            }),
        }
    };
    let home = var("HOME").map(PathBuf::from);
    let aws_file = |variable: &str, name: &str| -> Result<Option<PathBuf>, ConfigError> {
        Ok(match var(variable).filter(|v| !v.is_empty()) {
            Some(path) => Some(PathBuf::from(path)),
            None => home.as_ref().map(|h| h.join(".aws").join(name)),
        })
    };
    let credentials_path = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")?;
    let config_path = aws_file("AWS_CONFIG_FILE", "config")?;
    let shown = |p: &Option<PathBuf>, default: &str| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| default.to_string())
    };
    let credentials_shown = shown(&credentials_path, "~/.aws/credentials");
    let config_shown = shown(&config_path, "~/.aws/config");

    let explicit_profile = text("AWS_PROFILE")?;
    let profile = explicit_profile
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let credentials_file = read_ini(
        credentials_path.as_deref(),
        "credentials",
        "AWS_SHARED_CREDENTIALS_FILE",
    )?;
    let config_file = read_ini(config_path.as_deref(), "config", "AWS_CONFIG_FILE")?;
    // In the credentials file a profile is `[NAME]`; in the config file `[profile NAME]`, but
    // `[default]` for the default one.
    let from_credentials = credentials_file
        .as_ref()
        .and_then(|f| f.section(&profile).cloned());
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    let from_config = config_file
        .as_ref()
        .and_then(|f| f.section(&config_section).cloned());
    if explicit_profile.is_some() && from_credentials.is_none() && from_config.is_none() {
        return Err(ConfigError::NoProfile {
            profile,
            credentials: credentials_shown,
            config: config_shown,
        });
    }

    // Credentials: the environment's, else the credentials file's, else the config file's.
    let env_key = text("AWS_ACCESS_KEY_ID")?;
    let env_secret = text("AWS_SECRET_ACCESS_KEY")?;
    let (key_id, secret, token) = match (env_key, env_secret) {
        (Some(k), Some(s)) => (k, s, text("AWS_SESSION_TOKEN")?),
        (Some(_), None) => {
            return Err(ConfigError::HalfCredentials {
                set: "AWS_ACCESS_KEY_ID",
                missing: "AWS_SECRET_ACCESS_KEY",
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::HalfCredentials {
                set: "AWS_SECRET_ACCESS_KEY",
                missing: "AWS_ACCESS_KEY_ID",
            });
        }
        (None, None) => {
            let found = [
                (from_credentials.as_ref(), &credentials_shown, &profile),
                (from_config.as_ref(), &config_shown, &config_section),
            ]
            .into_iter()
            .find_map(|(section, file, name)| {
                let section = section?;
                let key = section.get("aws_access_key_id");
                let secret = section.get("aws_secret_access_key");
                (key.is_some() || secret.is_some()).then_some((section, (file, name), key, secret))
            });
            match found {
                Some((section, _, Some(k), Some(s))) => (
                    k.to_string(),
                    s.to_string(),
                    section.get("aws_session_token").map(str::to_string),
                ),
                Some((_, (file, name), k, _)) => {
                    let (set, missing) = match k {
                        Some(_) => ("aws_access_key_id", "aws_secret_access_key"),
                        None => ("aws_secret_access_key", "aws_access_key_id"),
                    };
                    return Err(ConfigError::HalfProfile {
                        profile: name.clone(),
                        file: file.clone(),
                        set,
                        missing,
                    });
                }
                None => {
                    return Err(ConfigError::NoCredentials {
                        profile,
                        credentials: credentials_shown,
                        config: config_shown,
                    });
                }
            }
        }
    };

    let profile_value = |key: &str| from_config.as_ref().and_then(|s| s.get(key));
    let s3_value = |key: &str| {
        from_config
            .as_ref()
            .and_then(|s| s.get(&format!("s3.{key}")))
    };
    let in_profile = |key: &str| format!("`{key}` in [{config_section}] of {config_shown}");

    let (region_what, region) = match (text("AWS_REGION")?, text("AWS_DEFAULT_REGION")?) {
        (Some(r), _) => ("AWS_REGION".to_string(), r),
        (None, Some(r)) => ("AWS_DEFAULT_REGION".to_string(), r),
        (None, None) => match profile_value("region") {
            Some(r) => (in_profile("region"), r.to_string()),
            None => {
                return Err(ConfigError::NoRegion {
                    section: config_section,
                    config: config_shown,
                });
            }
        },
    };
    if region.is_empty()
        || region.len() > 64
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ConfigError::BadRegion {
            what: region_what,
            value: crate::printable::printable(&region, 80),
        });
    }

    let endpoint = match (text("AWS_ENDPOINT_URL_S3")?, text("AWS_ENDPOINT_URL")?) {
        (Some(e), _) => Some(("AWS_ENDPOINT_URL_S3".to_string(), e)),
        (None, Some(e)) => Some(("AWS_ENDPOINT_URL".to_string(), e)),
        (None, None) => s3_value("endpoint_url")
            .map(|e| (in_profile("s3.endpoint_url"), e.to_string()))
            .or_else(|| {
                profile_value("endpoint_url").map(|e| (in_profile("endpoint_url"), e.to_string()))
            }),
    };
    let endpoint = match endpoint {
        Some((what, e)) => {
            let e = e.trim_end_matches('/').to_string();
            let valid = (e.starts_with("http://") || e.starts_with("https://"))
                && url::Url::parse(&e).is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty()));
            if !valid {
                return Err(ConfigError::BadEndpoint {
                    what,
                    value: crate::printable::printable(&e, 200),
                });
            }
            e
        }
        None => format!("https://s3.{region}.amazonaws.com"),
    };

    // `auto` (the default) is virtual-host style, as AWS wants, but for an endpoint that is
    // an IP address or `localhost`, which no bucket name can be put before.
    let auto = url::Url::parse(&endpoint).is_ok_and(|u| {
        matches!(
            u.host(),
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) | Some(url::Host::Domain("localhost"))
        )
    });
    let path_style = match overrides.path_style {
        Some(p) => p,
        None => match s3_value("addressing_style") {
            None | Some("auto") => auto,
            Some("virtual") => false,
            Some("path") => true,
            Some(other) => {
                return Err(ConfigError::BadAddressing {
                    what: in_profile("s3.addressing_style"),
                    value: crate::printable::printable(other, 80),
                });
            }
        },
    };

    let ca_bundle = text("AWS_CA_BUNDLE")?
        .or_else(|| profile_value("ca_bundle").map(str::to_string))
        .map(PathBuf::from);

    Ok(S3Config {
        key_id,
        secret,
        token,
        region,
        endpoint,
        path_style,
        ca_bundle,
    })
}

/// One INI file as AWS writes it: `[section]` headers, `key = value` lines, `#`/`;`
/// comments, and one level of nesting (`s3 =` followed by indented `key = value` lines,
/// kept as `s3.key`).
#[derive(Debug, Default)]
struct Ini {
    sections: Vec<(String, Section)>,
}

#[derive(Debug, Default, Clone)]
struct Section {
    values: Vec<(String, String)>,
}

impl Section {
    fn get(&self, key: &str) -> Option<&str> {
        // The last one wins, as in the AWS CLI.
        self.values
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl Ini {
    fn section(&self, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }
}

/// Reads `path` when it exists; `None` when it does not.
fn read_ini(
    path: Option<&Path>,
    kind: &'static str,
    variable: &'static str,
) -> Result<Option<Ini>, ConfigError> {
    use std::io::Read;
    let Some(path) = path else { return Ok(None) };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ConfigError::Unreadable {
                file: path.display().to_string(),
                detail: e.to_string(),
            });
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::Unreadable {
            file: path.display().to_string(),
            detail: e.to_string(),
        })?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(ConfigError::TooLarge {
            file: path.display().to_string(),
            kind,
            variable,
        });
    }
    Ok(Some(parse_ini(&String::from_utf8_lossy(&bytes))))
}

/// One pass over the lines; what is not a header nor `key = value` is skipped, as the AWS CLI
/// does with what it does not know.
fn parse_ini(text: &str) -> Ini {
    let mut ini = Ini::default();
    let mut nested: Option<String> = None;
    for raw in text.lines() {
        let indented = raw.starts_with([' ', '\t']);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            ini.sections.push((name, Section::default()));
            nested = None;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim().to_string());
        let Some((_, section)) = ini.sections.last_mut() else {
            continue;
        };
        match (&nested, indented) {
            (Some(parent), true) => section.values.push((format!("{parent}.{key}"), value)),
            _ if value.is_empty() => nested = Some(key),
            _ => {
                nested = None;
                section.values.push((key, value));
            }
        }
    }
    ini
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Env {
        _home: tempfile::TempDir,
        vars: HashMap<String, OsString>,
    }

    impl Env {
        fn new(credentials: Option<&str>, config: Option<&str>) -> Env {
            let home = tempfile::tempdir().unwrap();
            std::fs::create_dir(home.path().join(".aws")).unwrap();
            if let Some(c) = credentials {
                std::fs::write(home.path().join(".aws/credentials"), c).unwrap();
            }
            if let Some(c) = config {
                std::fs::write(home.path().join(".aws/config"), c).unwrap();
            }
            let mut vars = HashMap::new();
            vars.insert("HOME".to_string(), home.path().as_os_str().to_owned());
            Env { _home: home, vars }
        }

        fn set(mut self, k: &str, v: &str) -> Env {
            self.vars.insert(k.to_string(), v.into());
            self
        }

        fn resolve(&self) -> Result<S3Config, ConfigError> {
            self.resolve_with(&Overrides::default())
        }

        fn resolve_with(&self, o: &Overrides) -> Result<S3Config, ConfigError> {
            resolve(&|k| self.vars.get(k).cloned(), o)
        }
    }

    #[test]
    fn the_environment_comes_before_the_files() {
        let env = Env::new(
            Some("[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = FILESECRET\n"),
            Some("[default]\nregion = eu-west-1\n"),
        )
        .set("AWS_ACCESS_KEY_ID", "ENVKEY")
        .set("AWS_SECRET_ACCESS_KEY", "ENVSECRET")
        .set("AWS_SESSION_TOKEN", "TOKEN")
        .set("AWS_REGION", "us-west-2");
        let c = env.resolve().unwrap();
        assert_eq!(
            (c.key_id.as_str(), c.secret.as_str(), c.token.as_deref()),
            ("ENVKEY", "ENVSECRET", Some("TOKEN"))
        );
        assert_eq!(c.region, "us-west-2");
        assert_eq!(c.endpoint, "https://s3.us-west-2.amazonaws.com");
        assert!(!c.path_style);
        let bundled = env
            .set("AWS_CA_BUNDLE", "/etc/ssl/minio-ca.pem")
            .resolve()
            .unwrap();
        assert_eq!(
            bundled.ca_bundle.as_deref(),
            Some(std::path::Path::new("/etc/ssl/minio-ca.pem"))
        );
        assert!(!format!("{c:?}").contains("ENVSECRET"));
    }

    #[test]
    fn a_named_profile_reads_both_files_with_nested_s3_settings() {
        let env = Env::new(
            Some("[default]\naws_access_key_id = D\naws_secret_access_key = DS\n[ci]\naws_access_key_id = CIKEY\naws_secret_access_key = CISECRET\naws_session_token = T\n"),
            Some("[default]\nregion = eu-west-1\n[profile ci]\nregion = garage\n# a comment\ns3 =\n  addressing_style = path\n  endpoint_url = http://127.0.0.1:3900/\noutput = json\n"),
        )
        .set("AWS_PROFILE", "ci");
        let c = env.resolve().unwrap();
        assert_eq!(c.key_id, "CIKEY");
        assert_eq!(c.token.as_deref(), Some("T"));
        assert_eq!(c.region, "garage");
        assert_eq!(c.endpoint, "http://127.0.0.1:3900");
        assert!(c.path_style);
        assert_eq!(c.ca_bundle, None);
        // The flag's override wins over the profile.
        let c = env
            .resolve_with(&Overrides {
                path_style: Some(false),
            })
            .unwrap();
        assert!(!c.path_style);
        // The environment's endpoint wins over the profile's; the S3 one over the general.
        let c = env
            .set("AWS_ENDPOINT_URL", "https://general.example")
            .set("AWS_ENDPOINT_URL_S3", "https://s3.example")
            .resolve()
            .unwrap();
        assert_eq!(c.endpoint, "https://s3.example");
    }

    #[test]
    fn files_elsewhere_are_named_by_their_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("c"),
            "[default]\naws_access_key_id=K\naws_secret_access_key=S\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("f"),
            "[default]\nregion=us-east-1\nendpoint_url=http://localhost:9000\n",
        )
        .unwrap();
        let env = Env::new(None, None)
            .set(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("c").to_str().unwrap(),
            )
            .set("AWS_CONFIG_FILE", dir.path().join("f").to_str().unwrap());
        let c = env.resolve().unwrap();
        assert_eq!((c.key_id.as_str(), c.region.as_str()), ("K", "us-east-1"));
        assert_eq!(c.endpoint, "http://localhost:9000");
        // No bucket name can go before `localhost` or an IP address: path style.
        assert!(c.path_style);
        let c = env
            .set("AWS_ENDPOINT_URL", "https://s3.example.com")
            .resolve()
            .unwrap();
        assert!(!c.path_style);
    }

    #[test]
    fn each_missing_or_bad_setting_is_one_line_naming_it() {
        let cases: Vec<(Env, &[&str])> = vec![
            (
                Env::new(None, None),
                &[
                    "no AWS credentials",
                    "AWS_ACCESS_KEY_ID",
                    "[default]",
                    ".aws/credentials",
                ],
            ),
            (
                Env::new(None, None).set("AWS_ACCESS_KEY_ID", "K"),
                &["AWS_SECRET_ACCESS_KEY"],
            ),
            (
                Env::new(None, None).set("AWS_PROFILE", "nope"),
                &["AWS_PROFILE=nope", "no such profile"],
            ),
            (
                Env::new(Some("[default]\naws_access_key_id = K\n"), None),
                &["aws_secret_access_key", "[default]", "credentials"][..],
            ),
            (
                Env::new(
                    Some("[default]\naws_access_key_id = K\naws_secret_access_key = S\n"),
                    None,
                ),
                &["no AWS region", "AWS_REGION", "region"],
            ),
            (
                Env::new(None, None)
                    .set("AWS_ACCESS_KEY_ID", "K")
                    .set("AWS_SECRET_ACCESS_KEY", "S")
                    .set("AWS_REGION", "us east\u{1b}[2J"),
                &["AWS_REGION", "\\u{1b}"],
            ),
            (
                Env::new(None, None)
                    .set("AWS_ACCESS_KEY_ID", "K")
                    .set("AWS_SECRET_ACCESS_KEY", "S")
                    .set("AWS_REGION", "r")
                    .set("AWS_ENDPOINT_URL", "ftp://x"),
                &["AWS_ENDPOINT_URL", "ftp://x", "https://"],
            ),
            (
                Env::new(
                    None,
                    Some("[default]\nregion = r\ns3 =\n  addressing_style = sideways\n"),
                )
                .set("AWS_ACCESS_KEY_ID", "K")
                .set("AWS_SECRET_ACCESS_KEY", "S"),
                &["s3.addressing_style", "sideways", "path"],
            ),
        ];
        for (env, words) in cases {
            let e = env.resolve().unwrap_err().to_string();
            assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e}");
            for w in words {
                assert!(e.contains(w), "{w:?} not in {e}");
            }
        }
    }

    #[test]
    fn a_huge_file_is_refused_and_a_long_one_parsed_in_one_pass() {
        let env = Env::new(None, None);
        let path = env._home.path().join(".aws/credentials");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(MAX_FILE + 1).unwrap();
        let e = env.resolve().unwrap_err().to_string();
        assert!(
            e.contains("larger than") && e.contains("AWS_SHARED_CREDENTIALS_FILE"),
            "{e}"
        );

        // 1 MiB of `s3 =` openers and sections: a quadratic parser would take minutes.
        let mut text = String::new();
        while text.len() < (MAX_FILE as usize) - 200 {
            text.push_str("[x]\ns3 =\n a = b\n");
        }
        text.push_str("[default]\naws_access_key_id = K\naws_secret_access_key = S\n");
        std::fs::write(&path, &text).unwrap();
        let c = env.set("AWS_REGION", "r").resolve().unwrap();
        assert_eq!((c.key_id.as_str(), c.region.as_str()), ("K", "r"));
    }
}
