//! A real S3 service for the tests: a single-node Garage (the `garage` crate's server) in a
//! temp dir, on free loopback ports, with its own RPC secret, its layout applied and one access
//! key. [`Garage::shared`] starts one per test binary; each test makes its own bucket with
//! [`Garage::bucket`]. The server and its dir go when the [`Garage`] is dropped, and, for the
//! shared one, when the test binary exits however it exits: the server runs under a small
//! shell that stops it and removes the dir once the test process's end of a pipe closes.
//!
//! `scripts/test-deps` installs Garage (`cargo install garage`) when it is missing.
//! Written for both the library's unit tests (`#[path]`) and the integration tests.
#![allow(dead_code)]

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where `scripts/test-deps` installs Garage when it is not on PATH.
const CACHED: &str = ".cache/garage/bin/garage";

pub struct Garage {
    /// `http://127.0.0.1:PORT`, the S3 API.
    pub endpoint: String,
    pub region: String,
    pub key_id: String,
    pub secret: String,
    binary: PathBuf,
    dir: PathBuf,
    watchdog: Child,
    /// Closing it stops the server.
    lifeline: Option<ChildStdin>,
}

impl Garage {
    /// The test binary's Garage, started on first use.
    pub fn shared() -> &'static Garage {
        static SHARED: OnceLock<Garage> = OnceLock::new();
        SHARED.get_or_init(Garage::start)
    }

    /// The `garage` binary: on PATH, else where `scripts/test-deps` puts it.
    pub fn binary() -> PathBuf {
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let candidate = dir.join("garage");
                if candidate.is_file() {
                    return candidate;
                }
            }
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        let cached = home.join(CACHED);
        assert!(
            cached.is_file(),
            "Garage is not installed (not on PATH, not {}): run scripts/test-deps (it runs `cargo install garage --locked --version 2.5.0 --root $HOME/.cache/garage`, ~20 minutes)",
            cached.display()
        );
        cached
    }

    /// Starts a new single-node Garage, or panics saying what went wrong and its log.
    pub fn start() -> Garage {
        let binary = Garage::binary();
        let dir = tempfile::Builder::new()
            .prefix("garage-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let [rpc, s3, admin] = free_ports();
        let secret: String = (0..32).map(|_| format!("{:02x}", random_byte())).collect();
        let config = format!(
            r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
            dir = dir.display()
        );
        std::fs::write(dir.join("garage.toml"), config).expect("write garage.toml");
        // The shell keeps the server until its stdin closes (this process ends or drops the
        // Garage), then stops it and removes its dir.
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(
                r#""$1" -c "$2/garage.toml" server >"$2/server.log" 2>&1 & pid=$!
read _ ; kill $pid 2>/dev/null; wait $pid; rm -rf "$2""#,
            )
            .arg("sh")
            .arg(&binary)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sh for garage server");
        let lifeline = watchdog.stdin.take();
        let mut garage = Garage {
            endpoint: format!("http://127.0.0.1:{s3}"),
            region: "garage".to_string(),
            key_id: String::new(),
            secret: String::new(),
            binary,
            dir,
            watchdog,
            lifeline,
        };
        garage.wait_until(|g| g.try_cli(&["status"]).is_ok(), "answer `garage status`");
        let node = garage.cli(&["node", "id", "-q"]);
        let node = node
            .trim()
            .split('@')
            .next()
            .unwrap_or_default()
            .to_string();
        garage.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage.cli(&["layout", "apply", "--version", "1"]);
        let key = garage.cli(&["key", "create", "tests"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no `{name}` in `garage key create`'s output:\n{key}"))
        };
        garage.key_id = field("Key ID:");
        garage.secret = field("Secret key:");
        garage.wait_until(
            |_| TcpStream::connect(("127.0.0.1", s3)).is_ok(),
            "listen on its S3 port",
        );
        garage
    }

    /// A new bucket that the key may read, write and own.
    pub fn bucket(&self, name: &str) -> String {
        self.wait_until(
            |g| g.try_cli(&["bucket", "create", name]).is_ok(),
            "create a bucket",
        );
        self.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", name, "--key", "tests",
        ]);
        name.to_string()
    }

    /// The AWS variables that point a client at this Garage.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }

    /// Runs `garage ARGS` against this server; panics with its output when it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.join("garage.toml"))
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        match out.status.success() {
            true => Ok(stdout),
            false => Err(format!(
                "garage {} failed ({}):\n{stdout}{}\nserver log:\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            )),
        }
    }

    fn wait_until(&self, ready: impl Fn(&Garage) -> bool, what: &str) {
        let start = Instant::now();
        while !ready(self) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "Garage did not {what} within 60 s; server log:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if let Some(mut lifeline) = self.lifeline.take() {
            let _ = lifeline.write_all(b"\n");
        }
        let _ = self.watchdog.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three loopback ports free now (held together so that they differ).
fn free_ports() -> [u16; 3] {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    let port = |i: usize| listeners[i].local_addr().expect("local addr").port();
    [port(0), port(1), port(2)]
}

fn random_byte() -> u8 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u8
}
