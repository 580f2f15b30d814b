//! The acme deployment's PostgreSQL case (`examples/acme-deployment`): on VM api-0, acme-api's
//! writer inserts a row into the `events` table every 50 ms for the whole run, and its lock
//! scripts pause it; on VM db-0, bbr-acmedb dumps the database with `pg_dump` and loads it with
//! `psql`. The case checks the guide's promise: the restore brings back exactly the rows that
//! were there when the writer was paused, and the writer carries on after each unlock.
//!
//! What the scripts log, and this case reads (all under the VM's `/var/vcap/sys/log`):
//! - `acme-api/writer.log`: `<id> <epoch of written_at>` for every row the writer inserted;
//! - `acme-api/bbr.log`: `<script> <epoch> [<max id> <rows> <md5 of the rows>]` for every lock
//!   (with what the table held once the writer had paused) and unlock;
//! - `bbr-acmedb/bbr.log`: `<script> <epoch>` for bbr-acmedb's lock scripts.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::postgres_server::{PASSWORD, PostgresServer, USER};
use super::{Deployment, TestCase, wait_for};

const API_VM: &str = "api-0";
const API_JOB: &str = "acme-api";
const DB_VM: &str = "db-0";
const DB_JOB: &str = "bbr-acmedb";
const DATABASE: &str = "acme";
/// Rows the writer must have written before the backup starts.
const ROWS_BEFORE_BACKUP: usize = 10;
const WAIT: Duration = Duration::from_secs(15);
/// What the lock scripts record, and what the restored table must match.
const TABLE_STATE: &str = "SELECT coalesce(max(id), 0), count(*), \
     md5(coalesce(string_agg(id || ':' || extract(epoch FROM written_at), ',' ORDER BY id), '')) \
     FROM events";

#[derive(Default)]
pub struct AcmePostgres {
    server: Option<PostgresServer>,
    writer: Option<Writer>,
}

impl AcmePostgres {
    pub fn new() -> AcmePostgres {
        AcmePostgres::default()
    }

    fn server(&self) -> &PostgresServer {
        self.server.as_ref().expect("deploy started the server")
    }

    /// Every log of the case, the writer's errors and the server's log, for failure messages.
    fn explain(&self, d: &Deployment) -> String {
        let mut s = String::new();
        for path in [
            api_log(d, "bbr.log"),
            db_log(d),
            api_log(d, "writer.log"),
            api_log(d, "writer.stderr.log"),
        ] {
            let text = fs::read_to_string(&path).unwrap_or_default();
            let _ = writeln!(s, "--- {} ---\n{}", path.display(), tail(&text, 60));
        }
        if let Some(server) = &self.server {
            let _ = writeln!(s, "--- postgres log ---\n{}", tail(&server.log(), 40));
        }
        s
    }
}

impl TestCase for AcmePostgres {
    fn name(&self) -> &str {
        "acme-postgres"
    }

    fn deploy(&mut self, d: &Deployment) {
        let server = self.server.insert(PostgresServer::start());
        server.psql("postgres", &format!("CREATE DATABASE {DATABASE}"));
        let (port, bin) = (server.port, server.bin.display().to_string());
        for (vm, job) in [(API_VM, API_JOB), (DB_VM, DB_JOB)] {
            d.edit_json(&d.job_dir(vm, job).join("config/config.json"), |c| {
                c.insert("host".into(), "127.0.0.1".into());
                c.insert("port".into(), port.into());
                c.insert("username".into(), USER.into());
                c.insert("password".into(), PASSWORD.into());
                c.insert("database".into(), DATABASE.into());
                c.insert("pg_bin".into(), bin.clone().into());
            });
        }
    }

    fn populate_state(&mut self, d: &Deployment) {
        self.server().psql(
            DATABASE,
            "CREATE TABLE events (id bigserial PRIMARY KEY, \
             written_at timestamptz NOT NULL DEFAULT clock_timestamp())",
        );
        self.writer = Some(Writer::start(d));
        let rows = wait_for(WAIT, || {
            let n: usize = self
                .server()
                .psql(DATABASE, "SELECT count(*) FROM events")
                .parse()
                .unwrap();
            (n >= ROWS_BEFORE_BACKUP).then_some(n)
        });
        assert!(
            rows.is_some(),
            "the writer did not write {ROWS_BEFORE_BACKUP} rows\n{}",
            self.explain(d)
        );
    }

    fn destroy_state(&mut self, d: &Deployment) {
        // The writer must have resumed after the backup's unlock before its table goes.
        let unlocked = entry(&read_log(&api_log(d, "bbr.log")), "post-backup-unlock").at;
        let resumed = wait_for(WAIT, || writes(d).into_iter().find(|w| w.at > unlocked));
        assert!(
            resumed.is_some(),
            "the writer wrote nothing after post-backup-unlock\n{}",
            self.explain(d)
        );
        self.server().psql(DATABASE, "DROP TABLE events");
    }

    fn check_state(&mut self, d: &Deployment) {
        let explain = || self.explain(d);
        let api = read_log(&api_log(d, "bbr.log"));
        let db = read_log(&db_log(d));
        let backup_lock = entry(&api, "pre-backup-lock");
        let backup_unlock = entry(&api, "post-backup-unlock");
        let restore_lock = entry(&api, "pre-restore-lock");
        let restore_unlock = entry(&api, "post-restore-unlock");

        // acme-api's metadata locks it before bbr-acmedb, across VMs.
        for (api_lock, script) in [
            (backup_lock, "pre-backup-lock"),
            (restore_lock, "pre-restore-lock"),
        ] {
            assert!(
                api_lock.at < entry(&db, script).at,
                "bbr-acmedb's {script} ran before acme-api's\n{}",
                explain()
            );
        }

        // The restored table holds exactly the rows there were when the writer paused.
        let at_lock: Vec<&str> = backup_lock.rest.split(' ').collect();
        let [max_id, rows, _md5] = at_lock[..] else {
            panic!(
                "pre-backup-lock recorded no table state: {:?}\n{}",
                backup_lock.rest,
                explain()
            );
        };
        let max_id: i64 = max_id.parse().unwrap();
        assert!(
            rows.parse::<usize>().unwrap() >= ROWS_BEFORE_BACKUP,
            "{}",
            explain()
        );
        let restored = self
            .server()
            .psql(DATABASE, &format!("{TABLE_STATE} WHERE id <= {max_id}"));
        assert_eq!(
            restored,
            backup_lock.rest,
            "the restored rows (max id, count, md5) differ from those at the lock\n{}",
            explain()
        );
        let restored_rows = self.server().psql(
            DATABASE,
            &format!(
                "SELECT id, extract(epoch FROM written_at) FROM events WHERE id <= {max_id} ORDER BY id"
            ),
        );
        let written: Vec<String> = writes(d)
            .iter()
            .filter(|w| w.id <= max_id)
            .map(|w| w.line.clone())
            .collect();
        assert_eq!(
            restored_rows.lines().collect::<Vec<_>>(),
            written,
            "the restored rows differ from those the writer wrote up to the lock\n{}",
            explain()
        );

        // The writer was paused while locked, and wrote between the backup and the restore.
        for w in writes(d) {
            for (lock, unlock) in [(backup_lock, backup_unlock), (restore_lock, restore_unlock)] {
                assert!(
                    !(lock.at < w.at && w.at < unlock.at),
                    "row {} was written while {} held the lock\n{}",
                    w.id,
                    lock.script,
                    explain()
                );
            }
        }
        assert!(
            writes(d)
                .iter()
                .any(|w| backup_unlock.at < w.at && w.at < restore_lock.at),
            "the writer wrote nothing between the backup's unlock and the restore's lock\n{}",
            explain()
        );

        // After the restore's unlock the writer carries on, in the restored table: every row
        // past the lock's max id is new.
        let next = wait_for(WAIT, || {
            let row = self.server().psql(
                DATABASE,
                &format!(
                    "SELECT id, extract(epoch FROM written_at) FROM events WHERE id > {max_id} \
                     ORDER BY id LIMIT 1"
                ),
            );
            (!row.is_empty()).then_some(row)
        });
        assert!(
            next.is_some(),
            "the writer wrote nothing after post-restore-unlock\n{}",
            explain()
        );
        let stale = self.server().psql(
            DATABASE,
            &format!(
                "SELECT count(*) FROM events WHERE id > {max_id} \
                 AND written_at <= to_timestamp({})",
                restore_unlock.at
            ),
        );
        assert_eq!(
            stale,
            "0",
            "rows written after the backup's lock came back with the restore\n{}",
            explain()
        );
    }

    fn cleanup(&mut self, _d: &Deployment) {
        drop(self.writer.take());
        drop(self.server.take());
    }
}

/// acme-api's writer (`bin/writer`), started as the VM's process supervisor would: a clean
/// environment, the job's directory as working directory, its own process group. Killed with
/// its whole group when dropped.
struct Writer {
    child: Child,
}

impl Writer {
    fn start(d: &Deployment) -> Writer {
        let job = d.job_dir(API_VM, API_JOB);
        let stderr_path = api_log(d, "writer.stderr.log");
        fs::create_dir_all(stderr_path.parent().unwrap()).unwrap();
        let stderr = File::create(&stderr_path).unwrap();
        let child = Command::new(job.join("bin/writer"))
            .current_dir(&job)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().unwrap())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .expect("start acme-api's writer");
        Writer { child }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn api_log(d: &Deployment, name: &str) -> PathBuf {
    d.vcap(API_VM).join("sys/log").join(API_JOB).join(name)
}

fn db_log(d: &Deployment) -> PathBuf {
    d.vcap(DB_VM).join("sys/log").join(DB_JOB).join("bbr.log")
}

/// One line of a `bbr.log`: `<script> <epoch> <rest>`.
#[derive(Debug)]
struct Logged {
    script: String,
    at: f64,
    rest: String,
}

fn read_log(path: &PathBuf) -> Vec<Logged> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let script = parts.next().unwrap_or_default().to_string();
            let at = parts.next().and_then(|t| t.parse().ok());
            Logged {
                at: at.unwrap_or_else(|| panic!("{}: bad line {line:?}", path.display())),
                script,
                rest: parts.next().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

/// The one entry of `script` in a log.
fn entry<'a>(log: &'a [Logged], script: &str) -> &'a Logged {
    let found: Vec<_> = log.iter().filter(|l| l.script == script).collect();
    assert_eq!(found.len(), 1, "expected one {script} in {log:#?}");
    found[0]
}

/// One row the writer wrote.
struct Write {
    id: i64,
    at: f64,
    /// As logged, `<id> <epoch>`, which is also how psql prints the row.
    line: String,
}

fn writes(d: &Deployment) -> Vec<Write> {
    fs::read_to_string(api_log(d, "writer.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (id, at) = line.split_once(' ')?;
            Some(Write {
                id: id.parse().ok()?,
                at: at.parse().ok()?,
                line: line.to_string(),
            })
        })
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
