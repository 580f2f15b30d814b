//! A real PostgreSQL server from Debian's `postgresql`, run by the test as the `postgres` user
//! in a temp dir: `initdb` (password authentication over TCP), then `postgres` on a free
//! loopback port with its unix socket inside the temp dir. Stopped (fast shutdown, then
//! SIGKILL) when dropped, even when the test failed.

use std::fs::{self, File};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};

/// Where Debian installs each major version's server binaries.
const DEBIAN_PG_LIB: &str = "/usr/lib/postgresql";
pub const USER: &str = "postgres";
pub const PASSWORD: &str = "acme-test-password";
const READY_WITHIN: Duration = Duration::from_secs(30);
const STOP_WITHIN: Duration = Duration::from_secs(10);

pub struct PostgresServer {
    dir: tempfile::TempDir,
    /// The directory of `postgres`, `psql`, `pg_dump`...
    pub bin: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or a panic saying what to install.
pub fn pg_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir(DEBIAN_PG_LIB)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("no {DEBIAN_PG_LIB}/<version>/bin/postgres: install Debian's postgresql")
    })
}

impl PostgresServer {
    /// Initialises a cluster in a new temp dir and starts it; returns once it accepts
    /// connections. Retries with another port if the chosen one was taken meanwhile.
    pub fn start() -> PostgresServer {
        let bin = pg_bin();
        let user = User::from_name(USER)
            .expect("look up the postgres user")
            .unwrap_or_else(|| panic!("no user {USER}: install Debian's postgresql"));
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().to_path_buf();
        fs::create_dir(d.join("socket")).unwrap();
        fs::write(d.join("pwfile"), format!("{PASSWORD}\n")).unwrap();
        for path in [d.clone(), d.join("socket"), d.join("pwfile")] {
            chown(&path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
        }
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        let as_postgres = |program: &Path| {
            let mut command = Command::new(program);
            command
                .uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .current_dir(&d)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("LC_ALL", "C")
                .stdin(Stdio::null());
            command
        };

        let out = as_postgres(&bin.join("initdb"))
            .arg("--pgdata")
            .arg(d.join("data"))
            .args([
                "--username",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", d.join("pwfile").display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let mut server = PostgresServer {
            dir,
            bin,
            port: 0,
            child: None,
        };
        for attempt in 1..=3 {
            server.port = crate::common::free_port();
            let log = File::create(server.log_path()).unwrap();
            let child = as_postgres(&server.bin.join("postgres"))
                .arg("-D")
                .arg(server.dir.path().join("data"))
                .arg("-p")
                .arg(server.port.to_string())
                .arg("-k")
                .arg(server.socket_dir())
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "logging_collector=off",
                ])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start postgres");
            server.child = Some(child);
            match server.wait_until_ready() {
                Ok(()) => return server,
                Err(log) if attempt < 3 && log.contains("could not bind") => {
                    eprintln!("postgres: port {} was taken, trying another", server.port)
                }
                Err(log) => panic!("postgres did not start:\n{log}"),
            }
        }
        unreachable!()
    }

    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let child = self.child.as_mut().expect("a started server");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!("postgres exited ({status}):\n{}", self.log()));
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["--quiet", "--host=127.0.0.1", "--timeout=1"])
                .arg(format!("--port={}", self.port))
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {READY_WITHIN:?}:\n{}", self.log()));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("socket")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs `sql` in `database` over TCP as `postgres` with its password; stdout unaligned,
    /// tuples only, fields separated by one space.
    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PGPASSWORD", PASSWORD)
            .args(["-X", "-q", "-t", "-A", "-F", " ", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", USER])
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(format!(
                "psql -c {sql:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `try_psql`, panicking with psql's error and the server's log.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql)
            .unwrap_or_else(|e| panic!("{e}\n--- postgres log ---\n{}", self.log()))
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGINT is PostgreSQL's fast shutdown: it ends every session and the postmaster.
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + STOP_WITHIN;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
