//! A run's claim of its backup directory (`<dir>/.bbr-agent-run-<id>`): what it holds, the
//! heartbeat a running backup keeps it fresh with, and how a reader (a prune, the next run's
//! cleanup) tells a run that is still going from one that stopped.
//!
//! A claim holds the run's owner (lines the workflow writes), then one last line
//! `heartbeat: 2026-12-01T17:41:00Z`, the run's clock when it last wrote the claim. The run
//! writes it again every [`HEARTBEAT_EVERY`], so the object's own modification time (a file's
//! mtime, an object's `LastModified`, the store's clock) is fresh too. A reader takes the older
//! of the two as the last beat, so neither a run's clock ahead of the store nor a claim
//! written with a time to come keeps a dead run alive, and a run is alive while that beat is
//! younger than [`ALIVE_WITHIN_SECS`], however long ago it started. A beat further ahead of
//! the reader's clock than clocks may differ ([`AHEAD_AT_MOST_SECS`]: both the line and the
//! file's date in the future, as a local store allows) is no heartbeat at all. A claim without
//! a heartbeat (stop 12's runs, or that one) leaves its backup judged by its age, as then.

use std::io::Read;
use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{CLAIM_MAX, ObjectInfo, Storage, StorageError};
use crate::timestamp::Utc;

/// How often a running backup writes its claim again.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(10 * 60);

/// A run whose last beat is younger than this is alive. Twelve periods: a refresh that fails
/// may take over 20 minutes (a slow store's tries) and the next comes a period later, and the
/// clocks of the run, the store and the reader may differ (S3 refuses a request signed more
/// than 15 minutes off; a local or NFS store bounds nothing), so a live run is never taken for
/// a dead one on one bad refresh and a skewed clock together.
pub(crate) const ALIVE_WITHIN_SECS: i64 = 2 * 60 * 60;

/// A last beat further ahead of the reader's clock than this is no evidence of a live run.
pub(crate) const AHEAD_AT_MOST_SECS: i64 = 15 * 60;

/// Claims of one directory read to judge it, at most (two runs of one second make two).
pub(crate) const READ_AT_MOST: usize = 8;

const HEARTBEAT: &str = "heartbeat: ";

/// What a claim holds for `owner` (who runs the backup, lines ending in `\n`), beating `at`.
pub(crate) fn text(owner: &str, at: Utc) -> String {
    format!("{owner}{HEARTBEAT}{}\n", at.iso())
}

/// A claim's bytes, read back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Held<'a> {
    /// Who runs the backup: every line but the heartbeat.
    pub owner: &'a [u8],
    /// The Unix time of the run's last beat by its own clock; `None` for a claim without one.
    pub heartbeat: Option<i64>,
}

/// Reads a claim's bytes (hostile: anything may be there); a last line that is not a
/// heartbeat is the owner's.
pub(crate) fn parse(bytes: &[u8]) -> Held<'_> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let start = body
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    let beat = body[start..]
        .strip_prefix(HEARTBEAT.as_bytes())
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(parse_iso);
    match beat {
        Some(t) => Held {
            owner: &bytes[..start],
            heartbeat: Some(t),
        },
        None => Held {
            owner: bytes,
            heartbeat: None,
        },
    }
}

/// `2026-12-01T17:41:00Z` ([`Utc::iso`]) as Unix time.
fn parse_iso(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let dashes = b.len() == 20 && b[4] == b'-' && b[7] == b'-' && b[13] == b':' && b[16] == b':';
    let compact: String = text.chars().filter(|c| !matches!(c, '-' | ':')).collect();
    dashes
        .then(|| Utc::parse_compact(&compact))
        .flatten()
        .map(Utc::to_unix)
}

/// The last beat of a claim whose heartbeat line says `heartbeat` and that the store last
/// modified at `modified`: the older of the two; `None` when even that is further ahead of
/// `now` (the reader's clock) than clocks may differ: a claim dated to come proves nothing.
pub(crate) fn beat(heartbeat: i64, modified: Option<SystemTime>, now: i64) -> Option<i64> {
    let stored = modified.and_then(|m| {
        m.duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
    });
    let beat = stored.map_or(heartbeat, |m| m.min(heartbeat));
    (beat <= now.saturating_add(AHEAD_AT_MOST_SECS)).then_some(beat)
}

/// Whether a run whose last beat was at `beat` is alive at `now` (Unix times).
pub(crate) fn alive(beat: i64, now: i64) -> bool {
    now.saturating_sub(beat) < ALIVE_WITHIN_SECS
}

/// The bytes of the claim `key`, at most [`CLAIM_MAX`].
pub(crate) fn read(storage: &dyn Storage, key: &str) -> Result<Vec<u8>, StorageError> {
    let mut held = Vec::new();
    storage
        .open(key)?
        .take(CLAIM_MAX)
        .read_to_end(&mut held)
        .map_err(|source| StorageError::Io {
            doing: "read",
            what: storage.describe(key),
            source,
        })?;
    Ok(held)
}

/// What the claims of one directory say of the runs that made them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Beats {
    /// The newest last beat among them, of those with a heartbeat.
    pub newest: Option<i64>,
    /// One of them has no heartbeat (a run of before heartbeats, or one dated to come): its run
    /// is judged by its backup's age.
    pub unbeating: bool,
    /// There are more than [`READ_AT_MOST`]: those not read may be beating, so nothing can be
    /// said of the runs.
    pub unread: bool,
}

/// What `claims` (a listing's, so with their modification times, at least [`READ_AT_MOST`] +
/// 1 of them when there are that many) say at `now`, at most [`READ_AT_MOST`] of them read.
pub(crate) fn beats(
    storage: &dyn Storage,
    claims: &[ObjectInfo],
    now: i64,
) -> Result<Beats, StorageError> {
    let mut beats = Beats {
        unread: claims.len() > READ_AT_MOST,
        ..Beats::default()
    };
    for claim in claims.iter().take(READ_AT_MOST) {
        let bytes = match read(storage, &claim.key) {
            Ok(bytes) => bytes,
            // Removed since the listing: its run completed.
            Err(StorageError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        match parse(&bytes)
            .heartbeat
            .and_then(|t| beat(t, claim.modified, now))
        {
            Some(b) => beats.newest = Some(beats.newest.map_or(b, |n: i64| n.max(b))),
            None => beats.unbeating = true,
        }
    }
    Ok(beats)
}

/// Whether the run's claim `key` is still there, right before the metadata that makes its
/// backup complete: one that is gone was removed by someone who took the run for a dead one,
/// and what it wrote may be gone with it ([`StorageError::ClaimGone`]). A look that fails says
/// nothing: the metadata's own write will tell.
pub(crate) fn still_held(storage: &dyn Storage, key: &str) -> Result<(), StorageError> {
    match storage.size(key) {
        Ok(None) => Err(StorageError::ClaimGone {
            what: storage.describe(key),
        }),
        Ok(Some(_)) | Err(_) => Ok(()),
    }
}

/// A heartbeat that is running; [`Beating::stop`] ends it.
pub(crate) struct Beating {
    stop: Mutex<Option<mpsc::Sender<()>>>,
    /// Disconnected when the heartbeat's thread has ended.
    done: Mutex<mpsc::Receiver<()>>,
}

impl Beating {
    /// Ends the heartbeat and waits for a refresh under way: once this returns, nothing writes
    /// the claim any more (it may be removed).
    pub(crate) fn stop(&self) {
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = self.done.lock().unwrap_or_else(|e| e.into_inner()).recv();
    }
}

/// Runs `run` while one thread writes the claim `key` of `owner` again every `every`. A failed
/// refresh never fails the run: the first one is told through `warn`, and the next periods
/// try again. The heartbeat has ended when this returns.
pub(crate) fn with_heartbeat<R>(
    storage: &dyn Storage,
    key: &str,
    owner: &str,
    every: Duration,
    warn: &(dyn Fn(String) + Sync),
    run: impl FnOnce(&Beating) -> R,
) -> R {
    let (stop, stopped) = mpsc::channel::<()>();
    let (done, ended) = mpsc::channel::<()>();
    let beating = Beating {
        stop: Mutex::new(Some(stop)),
        done: Mutex::new(ended),
    };
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn_scoped(scope, move || {
                let _done = done;
                let mut warned = false;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    // A claim that is gone was removed by someone who took the run for a dead
                    // one: a put would bring it back alone, in a directory that may be empty
                    // now, which nothing would ever remove. (A look that fails is no answer:
                    // the put goes ahead.)
                    if let Ok(None) = storage.size(key) {
                        warn(format!(
                            "this run's claim {} is gone (a prune, or someone by hand, took the run for a dead one): its heartbeat stops, and the backup will not be marked complete",
                            storage.describe(key)
                        ));
                        break;
                    }
                    let refreshed = storage.put(key, text(owner, Utc::now()).as_bytes());
                    if let Err(e) = refreshed
                        && !warned
                    {
                        warned = true;
                        warn(format!(
                            "cannot refresh this run's claim {}: {e}; the backup goes on, but once its claim is two hours old a prune or another run's cleanup takes it for a dead run's",
                            storage.describe(key)
                        ));
                    }
                }
            });
        if let Err(e) = thread {
            // Its `done` went with the closure: `stop` does not wait.
            warn(format!(
                "cannot start the heartbeat of {} ({e}): once its claim is two hours old a prune or another run's cleanup takes this backup for a dead run's",
                storage.describe(key)
            ));
        }
        // Stopped however `run` ends: a panic unwinding through here must not leave the
        // thread beating for a run that is over, and the scope waiting on it for ever.
        let stop_on_exit = StopOnDrop(&beating);
        let result = run(&beating);
        drop(stop_on_exit);
        result
    })
}

/// Stops a heartbeat when dropped.
struct StopOnDrop<'a>(&'a Beating);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LocalStorage, ObjectWriter};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    const OWNER: &str = "bbr-agent backup\ndeployment: \"cf\"\nfrom: \"\"\ninstances: [\"db/0\"]\n";

    #[test]
    fn a_claim_reads_back_as_its_owner_and_its_heartbeat() {
        let at = Utc::parse_compact("20261201T174100Z").unwrap();
        let written = text(OWNER, at);
        assert!(
            written.ends_with("heartbeat: 2026-12-01T17:41:00Z\n"),
            "{written}"
        );
        let held = parse(written.as_bytes());
        assert_eq!(held.owner, OWNER.as_bytes());
        assert_eq!(held.heartbeat, Some(at.to_unix()));
        // Stop 12's claim: the owner alone, no heartbeat.
        assert_eq!(
            parse(OWNER.as_bytes()),
            Held {
                owner: OWNER.as_bytes(),
                heartbeat: None
            }
        );
        // What is not a heartbeat is the owner's: a bad date, another line, no newline.
        for bad in [
            "heartbeat: 2026-13-01T17:41:00Z\n",
            "heartbeat: 2026-12-01 17:41:00Z\n",
            "heartbeat: soon\n",
            "x\nheartbeat: 2026-12-01T17:41:00Z trailing\n",
            "",
            "\n\n",
            "heartbeat: \u{1b}[31m\n",
        ] {
            assert_eq!(parse(bad.as_bytes()).heartbeat, None, "{bad:?}");
            assert_eq!(parse(bad.as_bytes()).owner, bad.as_bytes(), "{bad:?}");
        }
        assert_eq!(
            parse(b"heartbeat: 2026-12-01T17:41:00Z").heartbeat,
            Some(at.to_unix())
        );
    }

    #[test]
    fn the_last_beat_is_the_older_of_the_run_clock_and_the_store_clock() {
        let t = 1_800_000_000;
        let at = |s: i64| Some(UNIX_EPOCH + Duration::from_secs(s as u64));
        assert_eq!(beat(t, None, t), Some(t));
        assert_eq!(beat(t, at(t - 7200), t), Some(t - 7200));
        // A heartbeat line from the future does not keep a claim alive.
        assert_eq!(beat(t + 86_400, at(t), t), Some(t));
        // Nor a line and a file date both from the future (a local store allows it): no beat.
        assert_eq!(beat(t + 86_400, at(t + 86_400), t), None);
        assert_eq!(beat(t + 86_400, None, t), None);
        // Clocks a few minutes apart are a live run's.
        assert_eq!(
            beat(t + AHEAD_AT_MOST_SECS, None, t),
            Some(t + AHEAD_AT_MOST_SECS)
        );
        assert!(alive(t, t + ALIVE_WITHIN_SECS - 1));
        assert!(!alive(t, t + ALIVE_WITHIN_SECS));
        assert!(alive(t, t - 10));
        assert!(!alive(i64::MIN, i64::MAX));
    }

    #[test]
    fn a_heartbeat_writes_the_claim_again_each_period_and_never_after_it_stopped() {
        let root = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(root.path());
        storage.create_dir("cf_20261201T000000Z").unwrap();
        let key = "cf_20261201T000000Z/.bbr-agent-run-1";
        // A claim written long ago, by the run's clock.
        let old = Utc::parse_compact("20200101T000000Z").unwrap();
        storage.put(key, text(OWNER, old).as_bytes()).unwrap();
        let beat_of = || {
            let bytes = std::fs::read(root.path().join(key)).unwrap();
            parse(&bytes).heartbeat.unwrap()
        };
        let warned = AtomicUsize::new(0);
        let warn = |_: String| {
            warned.fetch_add(1, Ordering::SeqCst);
        };
        with_heartbeat(
            &storage,
            key,
            OWNER,
            Duration::from_millis(20),
            &warn,
            |beating| {
                let deadline = Instant::now() + Duration::from_secs(20);
                while beat_of() == old.to_unix() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                assert!(
                    beat_of() > old.to_unix(),
                    "the claim was never written again"
                );
                beating.stop();
                // Stopped: it may be removed, and nothing brings it back.
                std::fs::remove_file(root.path().join(key)).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                assert!(!root.path().join(key).exists(), "written after it stopped");
            },
        );
        assert_eq!(warned.load(Ordering::SeqCst), 0);
    }

    /// A prune (or a hand) that took the run for a dead one removed its claim: the heartbeat
    /// does not put it back (a directory holding only a claim is no backup, and nothing would
    /// ever remove it), says so once, and the run is told the claim is gone.
    #[test]
    fn a_claim_removed_while_the_run_goes_on_is_not_put_back() {
        let root = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(root.path());
        storage.create_dir("cf_20261201T000000Z").unwrap();
        let key = "cf_20261201T000000Z/.bbr-agent-run-1";
        storage
            .put(key, text(OWNER, Utc::now()).as_bytes())
            .unwrap();
        let warnings = Mutex::new(Vec::new());
        let warn = |w: String| warnings.lock().unwrap().push(w);
        with_heartbeat(
            &storage,
            key,
            OWNER,
            Duration::from_millis(10),
            &warn,
            |_| {
                assert!(still_held(&storage, key).is_ok());
                std::fs::remove_file(root.path().join(key)).unwrap();
                std::thread::sleep(Duration::from_millis(150));
                assert!(!root.path().join(key).exists(), "the claim was put back");
                let gone = still_held(&storage, key).unwrap_err();
                assert!(matches!(gone, StorageError::ClaimGone { .. }), "{gone:?}");
                assert!(gone.to_string().contains("no backup"), "{gone}");
            },
        );
        let warnings = warnings.into_inner().unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("is gone"), "{warnings:?}");
    }

    #[test]
    fn a_run_that_panics_stops_its_heartbeat_on_the_way_out() {
        let root = tempfile::tempdir().unwrap();
        let storage = std::sync::Arc::new(LocalStorage::new(root.path()));
        storage.create_dir("cf_20261201T000000Z").unwrap();
        let key = "cf_20261201T000000Z/.bbr-agent-run-1";
        storage
            .put(key, text(OWNER, Utc::now()).as_bytes())
            .unwrap();
        // On a thread of its own: without the stop, the heartbeat would beat (and the scope
        // wait on it) for ever, and this test would wait for the answer below in vain.
        let (answer, answered) = mpsc::channel();
        let store = std::sync::Arc::clone(&storage);
        std::thread::spawn(move || {
            let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_heartbeat(
                    store.as_ref(),
                    key,
                    OWNER,
                    Duration::from_millis(5),
                    &|_| {},
                    |_| -> () {
                        std::thread::sleep(Duration::from_millis(30));
                        panic!("the backup failed badly");
                    },
                )
            }));
            let _ = answer.send(ended.is_err());
        });
        let panicked = answered
            .recv_timeout(Duration::from_secs(20))
            .expect("the run panicked, and its heartbeat went on beating");
        assert!(panicked, "the run's panic was lost");
        std::fs::remove_file(root.path().join(key)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !root.path().join(key).exists(),
            "the claim was written again after the run ended"
        );
    }

    /// A store whose every write fails, counting them.
    struct Refusing(AtomicUsize);

    impl Storage for Refusing {
        fn describe(&self, key: &str) -> String {
            key.to_string()
        }
        fn create_dir(&self, _: &str) -> Result<(), StorageError> {
            unimplemented!()
        }
        fn create(&self, _: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
            unimplemented!()
        }
        fn put(&self, key: &str, _: &[u8]) -> Result<(), StorageError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(StorageError::Service {
                what: key.to_string(),
                message: "SlowDown".to_string(),
            })
        }
        fn open(&self, _: &str) -> Result<Box<dyn Read + Send>, StorageError> {
            unimplemented!()
        }
        // The look before each refresh fails too: no answer, so the put goes ahead.
        fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
            Err(StorageError::Service {
                what: key.to_string(),
                message: "SlowDown".to_string(),
            })
        }
        fn list(&self, _: &str, _: usize) -> Result<Vec<ObjectInfo>, StorageError> {
            unimplemented!()
        }
        fn remove(&self, _: &str) -> Result<(), StorageError> {
            unimplemented!()
        }
        fn abort_unfinished_before(
            &self,
            _: &str,
            _: Option<SystemTime>,
        ) -> Result<usize, StorageError> {
            unimplemented!()
        }
        fn unfinished(&self, _: &str, _: usize) -> Result<Vec<String>, StorageError> {
            unimplemented!()
        }
        fn marks_a_start(&self) -> bool {
            false
        }
        fn remote(&self) -> bool {
            true
        }
    }

    #[test]
    fn failed_refreshes_are_told_once_and_the_run_goes_on() {
        let storage = Refusing(AtomicUsize::new(0));
        let warnings = Mutex::new(Vec::new());
        let warn = |w: String| warnings.lock().unwrap().push(w);
        let answer = with_heartbeat(
            &storage,
            "cf/.bbr-agent-run-1",
            OWNER,
            Duration::from_millis(5),
            &warn,
            |_| {
                let deadline = Instant::now() + Duration::from_secs(20);
                while storage.0.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                42
            },
        );
        assert_eq!(answer, 42);
        assert!(storage.0.load(Ordering::SeqCst) >= 3, "it stopped trying");
        let warnings = warnings.into_inner().unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("cf/.bbr-agent-run-1") && warnings[0].contains("SlowDown"),
            "{warnings:?}"
        );
    }
}
