//! A cgroup (v2) per script, where the agent may make them: every process a script starts,
//! in whatever session or group, stays in the script's cgroup, so the agent knows exactly
//! what to end with a script it ends.
//!
//! Layout: `<the agent's own cgroup>/bbr-agent-<pid>/<n>`, nothing enabled in them (no
//! controller, no limit: they only group). A script starts inside its cgroup without a race:
//! it is born there, by `clone3` with `CLONE_INTO_CGROUP` (`clone_into`) where the kernel
//! has it (5.7), else by the agent moving itself into the script's cgroup under the spawn
//! lock, spawning, and moving itself back.
//!
//! A script's cgroup, once empty (`cgroup.events` says `populated 0`) and not frozen, is kept
//! for a later script rather than removed: a cgroup's `mkdir` and `rmdir` were 15% of a fleet
//! session's CPU on one machine (docs/benchmarks.md, "Fleet, stop 20"). Nothing can enter an
//! empty cgroup of ours but by a write to its `cgroup.procs`, which only its owner may make
//! (root, or the agent's user where the cgroup tree is delegated to it), so the next script
//! born there has it to itself. One that a script's daemon still holds is never reused: it
//! stays until a later script's end finds it empty, or the next agent that runs a script does
//! (`remove_stale`, as it does for an agent killed before it could remove what it kept). One
//! a script left frozen (`cgroup.freeze`) is removed, not kept: the next script would be born
//! frozen. A new cgroup is always made by the agent, never one found there (a dead agent of
//! the same pid may have left a daemon's). The agent removes what it kept, and its
//! directory, as it exits ([`remove_kept`]), even when it panics.
//!
//! Not available (no cgroup2 mount, read-only, a kernel without it) or turned off with
//! `BBR_AGENT_CGROUPS=off`: the agent falls back to the process tree (`descendants`).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Turns the cgroups off (`off`), for a host whose cgroup manager must not see others.
pub const CGROUPS_ENV: &str = "BBR_AGENT_CGROUPS";

/// Where the agent's script cgroups live.
struct Home {
    /// The agent's own cgroup, which it returns to after each spawn.
    own: PathBuf,
    /// `own/bbr-agent-<pid>`.
    ours: PathBuf,
    next: AtomicU64,
    /// Empty script cgroups, for the next scripts.
    kept: Mutex<Vec<PathBuf>>,
}

/// Empty cgroups kept for later scripts, at most: as many as scripts run at once, usually.
const KEPT_AT_MOST: usize = 16;

impl Home {
    fn new(own: PathBuf, ours: PathBuf) -> Home {
        Home {
            own,
            ours,
            next: AtomicU64::new(0),
            kept: Mutex::new(Vec::new()),
        }
    }

    fn kept(&self) -> MutexGuard<'_, Vec<PathBuf>> {
        // Every change leaves the list whole, so a panic elsewhere does not spoil it.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

static HOME: OnceLock<Option<Home>> = OnceLock::new();

fn home() -> Option<&'static Home> {
    HOME.get_or_init(|| {
        if std::env::var(CGROUPS_ENV).is_ok_and(|v| v == "off") {
            return None;
        }
        let own = own_cgroup_dir()?;
        remove_stale(&own);
        let ours = own.join(format!("bbr-agent-{}", std::process::id()));
        match fs::create_dir(&ours) {
            Ok(()) => Some(Home::new(own, ours)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Some(Home::new(own, ours)),
            Err(e) => {
                tracing::debug!(error = %e, "no cgroup per script; following the process tree instead");
                None
            }
        }
    })
    .as_ref()
}

/// The directory of this process's cgroup v2, from `/proc/self/cgroup` (`0::<path>`) and
/// the cgroup2 mount in `/proc/self/mountinfo`.
fn own_cgroup_dir() -> Option<PathBuf> {
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (root, mount_point) = mountinfo.lines().find_map(|line| {
        let (fields, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = fields.split_whitespace().collect();
        Some((fields.get(3)?.to_string(), fields.get(4)?.to_string()))
    })?;
    // Octal escapes (a space as \040) in a mount point: not a place to make cgroups in.
    if mount_point.contains('\\') || path.contains('\\') {
        return None;
    }
    let relative = path.strip_prefix(root.trim_end_matches('/'))?;
    Some(Path::new(&mount_point).join(relative.trim_start_matches('/')))
}

/// Removes what agents that are gone left in `own`, where it is empty.
fn remove_stale(own: &Path) {
    let Ok(entries) = fs::read_dir(own) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("bbr-agent-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone {
            remove_empty_tree(&entry.path());
        }
    }
}

/// `rmdir` of `dir`'s child cgroups and then of `dir`; a populated one stays.
fn remove_empty_tree(dir: &Path) {
    if let Ok(children) = fs::read_dir(dir) {
        for child in children.flatten() {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = fs::remove_dir(child.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// As the agent exits: removes the empty cgroups it kept, and its own directory of script
/// cgroups if none is left in it (a daemon's stays), so that it leaves nothing behind.
pub fn remove_kept() {
    // Only where scripts had cgroups: an agent that ran none makes no directory to remove.
    let Some(Some(home)) = HOME.get() else {
        return;
    };
    for dir in home.kept().drain(..) {
        // A cgroup a script made inside its own (empty, or it would not be kept) goes too.
        if fs::remove_dir(&dir).is_err() {
            remove_empty_tree(&dir);
        }
    }
    let _ = fs::remove_dir(&home.ours);
}

/// What a cgroup's `cgroup.events` says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Events {
    /// A process is in it, or in a cgroup below it.
    populated: bool,
    /// Frozen (`cgroup.freeze` set): a process born in it would not run.
    frozen: bool,
}

/// `dir`'s `cgroup.events`; `None` when it cannot be read (removed by someone else, say) or
/// does not say whether the cgroup is populated.
fn events(dir: &Path) -> Option<Events> {
    // `populated 0\nfrozen 0\n`: one read of a small buffer (no size asked first).
    let mut buf = [0u8; 256];
    let n = File::open(dir.join("cgroup.events"))
        .ok()?
        .read(&mut buf)
        .ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let flag = |key: &str| {
        text.lines()
            .find_map(|line| Some(line.strip_prefix(key)?.strip_prefix(' ')? != "0"))
    };
    Some(Events {
        populated: flag("populated")?,
        // A kernel before 5.2 has no freezer in cgroup v2, nor this line.
        frozen: flag("frozen").unwrap_or(false),
    })
}

/// A cgroup for the next script: one kept, unless it was removed meanwhile (by root), else a
/// new one; with it opened, for a birth into it.
fn cgroup_for_script(home: &Home) -> Option<(PathBuf, File)> {
    loop {
        let kept = home.kept().pop();
        let Some(dir) = kept else {
            break;
        };
        if let Ok(handle) = File::open(&dir) {
            return Some((dir, handle));
        }
    }
    let dir = new_cgroup(home)?;
    match File::open(&dir) {
        Ok(handle) => Some((dir, handle)),
        Err(_) => {
            let _ = fs::remove_dir(&dir);
            None
        }
    }
}

/// Makes a cgroup of the agent's that did not exist: one found there (a dead agent of the same
/// pid left it, a daemon of its scripts in it, maybe) is never given to a script.
fn new_cgroup(home: &Home) -> Option<PathBuf> {
    for _ in 0..64 {
        let dir = home
            .ours
            .join(home.next.fetch_add(1, Ordering::Relaxed).to_string());
        match fs::create_dir(&dir) {
            Ok(()) => return Some(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            // The agent's directory removed under it (by root): made again, once.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let made = fs::create_dir(&home.ours);
                if made.is_err_and(|e| e.kind() != io::ErrorKind::AlreadyExists) {
                    return None;
                }
                return fs::create_dir(&dir).is_ok().then_some(dir);
            }
            Err(_) => return None,
        }
    }
    None
}

/// Whether scripts start straight into their cgroup (`clone_into`); off for good once the
/// kernel says it cannot.
static CLONE_INTO: AtomicBool = AtomicBool::new(true);

fn clone_into_enabled() -> bool {
    #[cfg(test)]
    if tests::WITHOUT_CLONE_INTO.with(std::cell::Cell::get) {
        return false;
    }
    CLONE_INTO.load(Ordering::Relaxed)
}

/// How `ScriptCgroup::spawn_into` wants its child started.
#[derive(Debug, Clone, Copy)]
pub enum Birth<'a> {
    /// Born in the cgroup of this directory descriptor (`Spawn::start_in_cgroup`).
    Into(BorrowedFd<'a>),
    /// This process is in the script's cgroup: a plain spawn is born there.
    Moved,
    /// No cgroup: a plain spawn.
    Outside,
}

impl Birth<'_> {
    /// Whether the child is born in its cgroup.
    pub fn in_cgroup(&self) -> bool {
        !matches!(self, Birth::Outside)
    }
}

/// One script's cgroup.
#[derive(Debug)]
pub struct ScriptCgroup {
    dir: PathBuf,
}

impl ScriptCgroup {
    /// Runs `spawn` so that its child is born in a cgroup of its own (one kept empty, else a
    /// new one); `None` with the spawn's result when there is none to be had. `spawn` is told
    /// how (`Birth`): straight into the cgroup where the kernel can (`clone_into`), else with
    /// this process inside it (moved in for the spawn and back), else outside any. It is
    /// called a second time only when the first, `Birth::Into`, failed with `Unsupported`
    /// (nothing started).
    /// The caller holds the spawn lock.
    pub fn spawn_into<T>(
        mut spawn: impl FnMut(Birth<'_>) -> io::Result<T>,
    ) -> (io::Result<T>, Option<ScriptCgroup>) {
        let Some(home) = home() else {
            return (spawn(Birth::Outside), None);
        };
        let Some((dir, handle)) = cgroup_for_script(home) else {
            return (spawn(Birth::Outside), None);
        };
        if clone_into_enabled() {
            #[cfg(test)]
            let refused = tests::BIRTH_REFUSED.with(std::cell::Cell::get);
            #[cfg(not(test))]
            let refused = false;
            let born = match refused {
                true => Err(super::clone_into::not_this_cgroup(
                    nix::errno::Errno::EACCES,
                )),
                false => spawn(Birth::Into(handle.as_fd())),
            };
            match born {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    tracing::info!(error = %e, "scripts start in their cgroup by a move of the agent instead");
                    CLONE_INTO.store(false, Ordering::Relaxed);
                }
                // This cgroup refused this birth: the move below, which falls back to no
                // cgroup, as it always did.
                Err(e) if super::clone_into::is_not_this_cgroup(&e) => {
                    tracing::debug!(error = %e, "a script starts in its cgroup by a move of the agent");
                }
                spawned => return (spawned, Some(ScriptCgroup { dir })),
            }
        }
        #[cfg(test)]
        tests::MOVES.with(|n| n.set(n.get() + 1));
        let me = std::process::id().to_string();
        if fs::write(dir.join("cgroup.procs"), &me).is_err() {
            let _ = fs::remove_dir(&dir);
            return (spawn(Birth::Outside), None);
        }
        let spawned = spawn(Birth::Moved);
        // Back home; tried twice, since staying would put the agent in the script's cgroup
        // (its members are signalled one by one, the agent never among them).
        let back = fs::write(home.own.join("cgroup.procs"), &me)
            .or_else(|_| fs::write(home.own.join("cgroup.procs"), &me));
        if let Err(e) = back {
            tracing::error!(error = %e, cgroup = %dir.display(), "cannot leave a script's cgroup");
        }
        (spawned, Some(ScriptCgroup { dir }))
    }

    /// Every process in it but this one.
    pub fn members(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_ascii_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .filter(|pid| *pid != me)
            .collect()
    }

    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Once it is empty, keeps it for a later script (or removes it, when enough are kept, or
    /// when it was left frozen); else a daemon of the script holds it, and it is handed back
    /// for a later look.
    pub fn release(self) -> Option<ScriptCgroup> {
        match events(&self.dir) {
            Some(events) if events.populated => Some(self),
            // Born there, the next script would not run.
            Some(events) if events.frozen => {
                let _ = fs::remove_dir(&self.dir);
                None
            }
            Some(_) => {
                let home = home().expect("a script cgroup has a home");
                let mut kept = home.kept();
                if kept.len() < KEPT_AT_MOST {
                    kept.push(self.dir);
                } else {
                    let _ = fs::remove_dir(&self.dir);
                }
                None
            }
            // Not readable: gone, or not to be judged; removed if it can be.
            None => (fs::remove_dir(&self.dir).is_err() && self.dir.exists()).then_some(self),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// How many times this thread moved the agent into a script's cgroup for a spawn.
        pub(in crate::exec) static MOVES: Cell<u32> = const { Cell::new(0) };
        /// This thread's spawns do as on a kernel without `CLONE_INTO_CGROUP`.
        pub(in crate::exec) static WITHOUT_CLONE_INTO: Cell<bool> = const { Cell::new(false) };
        /// This thread's births into a cgroup are refused as a cgroup whose files are not
        /// ours refuses them (EACCES).
        pub(in crate::exec) static BIRTH_REFUSED: Cell<bool> = const { Cell::new(false) };
    }

    /// A cgroup the agent makes for a script is new, never one found there: a dead agent of
    /// the same pid may have left one that its script's daemon holds, which a timeout of the
    /// next script would end. And a kept one removed meanwhile (by root) is passed over.
    #[test]
    fn a_script_gets_a_cgroup_made_for_it_or_one_kept_that_is_still_there() {
        let Some(home) = home() else {
            eprintln!("skipped: no cgroup per script on this host");
            return;
        };
        let found = home
            .ours
            .join(home.next.load(Ordering::Relaxed).to_string());
        fs::create_dir(&found).unwrap();
        let made = new_cgroup(home).expect("a new cgroup");
        let _ = fs::remove_dir(&found);
        let _ = fs::remove_dir(&made);
        assert_ne!(made, found, "a cgroup found there was given to a script");

        let gone = home.ours.join("removed-by-root");
        home.kept().push(gone.clone());
        let (dir, _handle) = cgroup_for_script(home).expect("a cgroup");
        let _ = fs::remove_dir(&dir);
        assert_ne!(dir, gone);
        assert!(!home.kept().contains(&gone), "a removed cgroup stays kept");
    }

    #[test]
    fn cgroup_events_say_populated_and_frozen() {
        let dir = tempfile::tempdir().unwrap();
        let with_bytes = |bytes: &[u8]| {
            fs::write(dir.path().join("cgroup.events"), bytes).unwrap();
            events(dir.path())
        };
        let with = |text: &str| with_bytes(text.as_bytes());
        let empty = Events {
            populated: false,
            frozen: false,
        };
        assert_eq!(with("populated 0\nfrozen 0\n"), Some(empty));
        assert_eq!(
            with("populated 1\nfrozen 0\n"),
            Some(Events {
                populated: true,
                ..empty
            })
        );
        assert_eq!(
            with("populated 0\nfrozen 1\n"),
            Some(Events {
                frozen: true,
                ..empty
            })
        );
        assert_eq!(with("populated 0\n"), Some(empty), "a kernel before 5.2");
        assert_eq!(with("frozen 0\n"), None, "not said: not to be judged empty");
        assert_eq!(with("populatedx 0\n"), None);
        // Not what the kernel writes: never judged empty, so never given to another script.
        assert_eq!(with_bytes(b"populated 0\xff\n"), None, "not UTF-8");
        let past_the_read = format!("{}\npopulated 0\n", "x".repeat(300));
        assert_eq!(with(&past_the_read), None, "beyond the one read");
    }

    #[test]
    fn a_stale_agents_empty_cgroups_are_removed_and_a_live_ones_are_not() {
        let own = tempfile::tempdir().unwrap();
        let stale = own.path().join("bbr-agent-999999999");
        let live = own.path().join(format!("bbr-agent-{}", std::process::id()));
        for dir in [stale.join("0"), live.join("0"), own.path().join("other/0")] {
            fs::create_dir_all(dir).unwrap();
        }
        remove_stale(own.path());
        assert!(!stale.exists());
        assert!(live.join("0").exists());
        assert!(own.path().join("other/0").exists(), "not an agent's");
    }
}
