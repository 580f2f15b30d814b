//! The processes a script started that left its process group (`setsid`, `setpgid`), so that
//! the agent can end them with a script it ends (a timeout, an interruption).
//!
//! Where the agent can give each script a cgroup (`cgroup`), a script's processes are its
//! cgroup's members, exactly. Besides, and without one, the agent follows the process tree:
//! it makes itself a child subreaper (`PR_SET_CHILD_SUBREAPER`) before its first script, so
//! what a script's descendants orphan (a subshell that started a daemon and exited) is
//! reparented to the agent, not to init, and stays findable. When a script is ended, its
//! descendants are read from `/proc` (every process whose chain of parents leads to it, in
//! any session). Without a cgroup, so are the agent's orphans (its children that are not
//! scripts it started) that appeared after the script started, if no other script ran at any
//! time beside it: then only the script, or a daemon an earlier script left that forked and
//! exited since (rare), can have left them. An orphan that a concurrent script may have left
//! is not touched (a lock script's daemon must live until its unlock). Each process is
//! remembered with its start time, so a pid reused since is never signalled.
//!
//! Orphans that exit become the agent's zombies; [`reap_orphans`] waits for them (never for
//! a running script's leader, which its own watch waits for).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::sync::{Mutex, MutexGuard, Once};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

use super::cgroup::{self, Birth, ScriptCgroup};

/// One process, as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ppid: i32,
    /// Clock ticks after boot: with the pid, names one process for good.
    start: u64,
    zombie: bool,
}

/// A process found to be a script's descendant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Escaped {
    pid: i32,
    start: u64,
}

impl Escaped {
    /// Whether it still runs (not a zombie, and not a new process with its pid).
    pub fn is_alive(&self) -> bool {
        read_stat(self.pid).is_some_and(|s| s.start == self.start && !s.zombie)
    }

    pub fn signal(&self, signal: Signal) {
        if self.is_alive() {
            let _ = kill(Pid::from_raw(self.pid), signal);
        }
    }
}

/// The scripts this process is running, for attributing orphans and not reaping leaders.
struct Registry {
    running: BTreeSet<i32>,
    /// Scripts started so far.
    spawned: u64,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    running: BTreeSet::new(),
    spawned: 0,
});

fn registry() -> MutexGuard<'static, Registry> {
    // Every update leaves the registry whole, so a panic elsewhere does not spoil it.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// One script's place in the registry.
pub struct Ticket {
    pid: i32,
    /// The count of scripts started, this one included, when it started.
    spawned: u64,
    /// Whether another script was running when it started.
    had_company: bool,
    /// Its start time, if `/proc` showed it.
    start: Option<u64>,
    /// The agent's children when it started: orphans left before, never its own. Looked
    /// at only for a script without a cgroup (empty otherwise: not needed then).
    earlier: HashSet<i32>,
    /// Its cgroup, where it has one: then its members are exactly what it started.
    cgroup: Option<ScriptCgroup>,
}

/// Script cgroups a daemon still held when their script ended.
static LINGERING: Mutex<Vec<ScriptCgroup>> = Mutex::new(Vec::new());

/// Starts a script with `spawn` and registers it, in one step: no reaper may see its pid
/// before it is known to be a script. Makes this process a subreaper first, once. `spawn`
/// starts the child as its `Birth` says (see `ScriptCgroup::spawn_into`).
pub fn start_script<T>(
    mut spawn: impl FnMut(Birth<'_>) -> std::io::Result<T>,
    pid_of: impl Fn(&T) -> i32,
) -> std::io::Result<(T, Ticket)> {
    static SUBREAPER: Once = Once::new();
    SUBREAPER.call_once(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "cannot become a child subreaper; what a timed-out script started in a new session may survive it");
        }
    });
    let mut registry = registry();
    // The agent's earlier children matter only to a script without a cgroup (`descendants`):
    // a look at them costs a read of every thread's `children` list, so one born in a
    // cgroup starts without it.
    let mut earlier = HashSet::new();
    let (child, cgroup) = ScriptCgroup::spawn_into(|birth| {
        if !birth.in_cgroup() {
            earlier = own_children().into_iter().collect();
        }
        spawn(birth)
    });
    let child = match child {
        Ok(child) => child,
        Err(e) => {
            if let Some(cgroup) = cgroup {
                // Nothing started in it: empty, kept.
                let _ = cgroup.release();
            }
            return Err(e);
        }
    };
    let pid = pid_of(&child);
    let had_company = !registry.running.is_empty();
    registry.running.insert(pid);
    registry.spawned += 1;
    let ticket = Ticket {
        pid,
        spawned: registry.spawned,
        had_company,
        start: read_stat(pid).map(|s| s.start),
        earlier,
        cgroup,
    };
    Ok((child, ticket))
}

impl Ticket {
    /// The script's leader's start time (clock ticks after boot), read once at its start;
    /// `None` if `/proc` did not show it.
    pub fn start_time(&self) -> Option<u64> {
        self.start
    }

    /// Everything `self`'s script started, or left to the agent, that still runs, `known`
    /// included (processes found before, and what they started since).
    pub fn descendants(&self, known: &[Escaped]) -> Vec<Escaped> {
        let table = process_table();
        let alone = {
            let registry = registry();
            !self.had_company
                && registry.spawned == self.spawned
                && registry.running.iter().all(|pid| *pid == self.pid)
        };
        let mut roots: Vec<i32> = vec![self.pid];
        roots.extend(known.iter().filter(|p| p.is_alive()).map(|p| p.pid));
        if let Some(cgroup) = &self.cgroup {
            roots.extend(cgroup.members());
        } else if let (true, Some(since)) = (alone, self.start) {
            let me = std::process::id() as i32;
            roots.extend(
                table
                    .iter()
                    .filter(|(pid, s)| {
                        s.ppid == me
                            && **pid != self.pid
                            && !self.earlier.contains(pid)
                            && s.start >= since
                    })
                    .map(|(pid, _)| *pid),
            );
        }
        let found = descendants_in(&table, &roots);
        found
            .into_iter()
            .filter(|pid| *pid != self.pid)
            .filter_map(|pid| {
                let s = table.get(&pid)?;
                (!s.zombie).then_some(Escaped {
                    pid,
                    start: s.start,
                })
            })
            .collect()
    }

    /// The script's leader has been reaped: it is no longer running. Its cgroup, once empty
    /// (now, or at a later script's end), is kept for a later script, or removed (enough kept,
    /// or left frozen: `ScriptCgroup::release`).
    pub fn finished(self) {
        let mut registry = registry();
        registry.running.remove(&self.pid);
        let mut lingering = LINGERING.lock().unwrap_or_else(|e| e.into_inner());
        let held: Vec<ScriptCgroup> = lingering
            .drain(..)
            .filter_map(ScriptCgroup::release)
            .collect();
        *lingering = held;
        if let Some(cgroup) = self.cgroup.and_then(ScriptCgroup::release) {
            lingering.push(cgroup);
        }
    }
}

/// As the agent exits: the cgroups its scripts' daemons held that have emptied since are
/// removed with those kept for later scripts (`cgroup::remove_kept`); a daemon's that still
/// runs stays, for a later agent to remove once it is empty.
pub fn leave_cgroups() {
    let mut lingering = LINGERING.lock().unwrap_or_else(|e| e.into_inner());
    let held: Vec<ScriptCgroup> = lingering
        .drain(..)
        .filter_map(ScriptCgroup::release)
        .collect();
    *lingering = held;
    cgroup::remove_kept();
}

/// Waits for every zombie child of this process that is not a running script's leader:
/// orphans reparented to it that have exited.
pub fn reap_orphans() {
    // No zombie child at all, the usual case: nothing to reap, and no need to read every
    // thread's `children` list. `WNOWAIT` leaves whatever it finds to be waited for.
    match waitid(
        Id::All,
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
    ) {
        Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
        _ => {}
    }
    let registry = registry();
    for pid in own_children() {
        if !registry.running.contains(&pid) && read_stat(pid).is_some_and(|s| s.zombie) {
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// This process's children: from each thread's `children` list (a few small files), or,
/// where the kernel has none (no `CONFIG_PROC_CHILDREN`), from the whole process table.
fn own_children() -> Vec<i32> {
    #[cfg(test)]
    tests::CHILDREN_LOOKS.with(|n| n.set(n.get() + 1));
    let mut found = None;
    if let Ok(tasks) = fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(list) = fs::read_to_string(task.path().join("children")) {
                let pids = found.get_or_insert_with(Vec::new);
                pids.extend(
                    list.split_ascii_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    found.unwrap_or_else(|| {
        let me = std::process::id() as i32;
        process_table()
            .into_iter()
            .filter(|(_, s)| s.ppid == me)
            .map(|(pid, _)| pid)
            .collect()
    })
}

/// `roots` and every process whose parents lead to one of them.
fn descendants_in(table: &HashMap<i32, Stat>, roots: &[i32]) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (pid, stat) in table {
        children.entry(stat.ppid).or_default().push(*pid);
    }
    let mut seen: HashSet<i32> = roots.iter().copied().collect();
    let mut queue: Vec<i32> = roots.to_vec();
    while let Some(pid) = queue.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if seen.insert(*child) {
                queue.push(*child);
            }
        }
    }
    seen.into_iter().collect()
}

/// Every process `/proc` shows.
fn process_table() -> HashMap<i32, Stat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .collect()
}

/// When process `pid` started, in clock ticks after boot; `Ok(None)` when there is no such
/// process. A stat that cannot be read or parsed is an error, not "gone": a caller deciding
/// whether a process is one it may signal must not take it for gone.
pub(crate) fn start_time(pid: i32) -> std::io::Result<Option<u64>> {
    Ok(stat_of(pid)?.map(|s| s.start))
}

fn read_stat(pid: i32) -> Option<Stat> {
    stat_of(pid).ok().flatten()
}

/// Room for any `/proc/<pid>/stat`: 52 fields of at most 20 digits, and a name of at most 64
/// bytes, are about 1.2 KiB.
const STAT_BYTES: usize = 4096;

/// `/proc/<pid>/stat`, read with one `read` into a buffer on the stack (std's `fs::read` takes
/// a `statx`, a growing heap buffer and five or six reads: this runs at every script's start,
/// and for every process when a script is ended). A procfs seq file gives a read with room
/// for its whole record all of it, so a short read is the end; one that fills the buffer is
/// refused rather than parsed cut short. `Ok(None)`: no such process (gone since, or reaped).
fn stat_of(pid: i32) -> std::io::Result<Option<Stat>> {
    #[cfg(test)]
    tests::STAT_READS.with(|pids| pids.borrow_mut().push(pid));
    let path = format!("/proc/{pid}/stat");
    let fd = match nix::fcntl::open(
        path.as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ESRCH) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut buf = [0u8; STAT_BYTES];
    let len = loop {
        match nix::unistd::read(&fd, &mut buf) {
            Ok(len) => break len,
            Err(Errno::EINTR) => continue,
            // Open, then reaped before the read.
            Err(Errno::ESRCH) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    };
    if len == buf.len() {
        return Err(std::io::Error::other(format!(
            "/proc/{pid}/stat is longer than {STAT_BYTES} bytes"
        )));
    }
    parse_stat(&buf[..len])
        .map(Some)
        .ok_or_else(|| std::io::Error::other(format!("cannot parse /proc/{pid}/stat")))
}

/// Parses `/proc/<pid>/stat`: the name is in parentheses and may hold anything, so the
/// fields are counted from the last `)`.
fn parse_stat(stat: &[u8]) -> Option<Stat> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state (3), ppid (4), ... starttime (22).
    let zombie = matches!(fields.next()?, "Z" | "X");
    let ppid = fields.next()?.parse().ok()?;
    let start = fields.nth(17)?.parse().ok()?;
    Some(Stat {
        ppid,
        start,
        zombie,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::exec::spawn::{Spawn, Spawned};
    use std::cell::Cell;

    thread_local! {
        /// How many times this thread looked at the agent's children (`own_children`).
        pub(super) static CHILDREN_LOOKS: Cell<u32> = const { Cell::new(0) };
        /// The pids whose `/proc/<pid>/stat` this thread read, in order.
        pub(in crate::exec) static STAT_READS: std::cell::RefCell<Vec<i32>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    /// With no zombie child, `reap_orphans` does not read every thread's `children` list
    /// (it did after every script). Other tests' children may be zombies for a moment, so
    /// of many tries one without a look is enough.
    #[test]
    fn reaping_orphans_without_a_zombie_child_does_not_look_at_the_children() {
        let mut fewest = u32::MAX;
        for _ in 0..50 {
            let before = CHILDREN_LOOKS.with(Cell::get);
            reap_orphans();
            fewest = fewest.min(CHILDREN_LOOKS.with(Cell::get) - before);
            if fewest == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(fewest, 0, "every reap read the children lists");
    }

    /// A zombie orphan is still found and reaped: a child this process did not register
    /// as a script, exited and not waited for.
    #[test]
    fn reaping_orphans_reaps_a_zombie_that_is_not_a_script() {
        let child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        // Gone before it was seen a zombie: reaped by a concurrent test's `reap_orphans`
        // (`reaping_orphans_without_a_zombie_child_...` calls it 50 times).
        while read_stat(pid).is_some_and(|s| !s.zombie) {
            assert!(std::time::Instant::now() < deadline, "true did not exit");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        reap_orphans();
        assert!(read_stat(pid).is_none(), "the zombie {pid} was not reaped");
        drop(child);
    }

    /// A script born in a cgroup starts without reading every thread's `children` list (a
    /// few system calls per thread, before every script of a fleet); one without a cgroup
    /// still does, since its descendants are then found through the agent's children.
    #[test]
    fn only_a_script_without_a_cgroup_starts_with_a_look_at_the_agents_children() {
        let before = CHILDREN_LOOKS.with(Cell::get);
        let (child, ticket) = start("/bin/true", &[]).expect("spawn true");
        let looks = CHILDREN_LOOKS.with(Cell::get) - before;
        let in_cgroup = ticket.cgroup.is_some();
        let earlier = ticket.earlier.len();
        let _ = waitpid(child.pid, None);
        ticket.finished();
        if in_cgroup {
            assert_eq!(
                looks, 0,
                "a script born in its cgroup: no look at the children"
            );
            assert_eq!(earlier, 0);
        } else {
            eprintln!("no cgroup here: the fallback looks at the agent's children");
            assert_eq!(
                looks, 1,
                "a script without a cgroup: one look before its spawn"
            );
        }
    }

    /// Starts `program` as `run_script` does (`Spawn`, as its `Birth` says).
    fn start(program: &str, args: &[&str]) -> std::io::Result<(Spawned, Ticket)> {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let spawn = Spawn {
            program: std::path::Path::new(program),
            args: &args,
            env: Some(&[]),
            working_dir: Some(std::path::Path::new("/")),
            stdin_pipe: false,
            search_path: false,
        };
        start_script(|birth| spawn.start_born(birth), |c| c.pid.as_raw())
    }

    /// What one sleeping script's start did: the moves of the agent it took, and, where the
    /// host gives scripts cgroups, its cgroup and the cgroup the kernel says it ran in. The
    /// script is ended and its cgroup released before this returns.
    struct Born {
        moved: u32,
        cgroup: Option<(std::path::PathBuf, String)>,
    }

    /// Starts a sleeping script with `flag` set on this thread for the start only.
    fn sleep_born(flag: Option<&'static std::thread::LocalKey<Cell<bool>>>) -> Born {
        let moves = cgroup::tests::MOVES.with(Cell::get);
        flag.inspect(|f| f.with(|w| w.set(true)));
        let started = start("/bin/sleep", &["30"]);
        flag.inspect(|f| f.with(|w| w.set(false)));
        let (child, ticket) = started.expect("spawn sleep");
        let moved = cgroup::tests::MOVES.with(Cell::get) - moves;
        let seen = fs::read_to_string(format!("/proc/{}/cgroup", child.pid));
        let _ = kill(child.pid, Signal::SIGKILL);
        let _ = waitpid(child.pid, None);
        let dir = ticket.cgroup.as_ref().map(|c| c.dir().to_path_buf());
        ticket.finished();
        let cgroup = dir.map(|dir| {
            let seen = seen.expect("the script's /proc/<pid>/cgroup");
            let path = seen
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or_else(|| panic!("no cgroup v2 line in {seen:?}"))
                .to_string();
            (dir, path)
        });
        Born { moved, cgroup }
    }

    /// That the script ran in `dir`, the cgroup made for it.
    fn assert_ran_in(dir: &std::path::Path, path: &str) {
        assert!(
            dir.ends_with(path.trim_start_matches('/')),
            "the script runs in {path}, not in its cgroup {}",
            dir.display()
        );
    }

    /// Where the host gives scripts cgroups, a script is born in its own (`clone_into`):
    /// the agent does not move itself into the script's cgroup and back for the spawn (two
    /// writes to `cgroup.procs`, each moving every thread of the agent, before every script).
    #[test]
    fn a_script_is_born_in_its_cgroup_without_the_agent_moving_into_it() {
        let born = sleep_born(None);
        let Some((dir, path)) = born.cgroup else {
            eprintln!("no cgroup here: nothing to check");
            return;
        };
        assert_ran_in(&dir, &path);
        assert_eq!(
            born.moved, 0,
            "the agent moved into the script's cgroup to spawn it"
        );
    }

    /// On a kernel without `CLONE_INTO_CGROUP` a script is still born in its own cgroup: the
    /// agent moves itself in for the spawn, and back home after it.
    #[test]
    fn without_clone_into_a_script_is_born_in_its_cgroup_by_a_move_and_the_agent_returns() {
        let home_before = fs::read_to_string("/proc/self/cgroup").expect("own cgroup");
        let born = sleep_born(Some(&cgroup::tests::WITHOUT_CLONE_INTO));
        let home_after = fs::read_to_string("/proc/self/cgroup").expect("own cgroup");
        let Some((dir, path)) = born.cgroup else {
            eprintln!("no cgroup here: nothing to check");
            return;
        };
        assert_ran_in(&dir, &path);
        assert_eq!(born.moved, 1, "one move of the agent for the spawn");
        assert_eq!(
            home_after, home_before,
            "the agent is back in its own cgroup"
        );
    }

    /// A cgroup that refuses a birth into it (its files not ours: EACCES) costs that one
    /// script the direct birth, not every later one: it is started by a move, and the next
    /// is born in its cgroup again.
    #[test]
    fn a_cgroup_that_refuses_a_birth_gets_the_move_and_the_next_script_is_born_again() {
        let refused = sleep_born(Some(&cgroup::tests::BIRTH_REFUSED));
        let Some((dir, path)) = refused.cgroup else {
            eprintln!("no cgroup here: nothing to check");
            return;
        };
        assert_ran_in(&dir, &path);
        assert_eq!(refused.moved, 1, "the refused birth fell back to one move");
        assert_eq!(
            sleep_born(None).moved,
            0,
            "the next script is born in its cgroup, no move"
        );
    }

    /// A script that cannot be exec'ed (here: no such file) is an error that says why, as
    /// posix_spawn's: the child born in its cgroup reports its errno to the waiting parent.
    #[test]
    fn a_script_that_cannot_start_says_why() {
        match start("/nonexistent/script", &[]) {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}"),
            Ok((child, ticket)) => {
                let _ = waitpid(child.pid, None);
                ticket.finished();
                panic!("a missing program started");
            }
        }
    }

    #[test]
    fn stat_is_parsed_from_the_last_parenthesis() {
        let line = b"4242 (a) b) Z 17 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 17,
                start: 987654,
                zombie: true
            })
        );
        assert_eq!(parse_stat(b"garbage"), None);
        // A command name that is not UTF-8 is still a stat line.
        let line = b"4242 (\xffsleep) S 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0";
        assert_eq!(parse_stat(line).map(|s| s.start), Some(555));
    }

    #[test]
    fn descendants_follow_parents_across_sessions() {
        let stat = |ppid| Stat {
            ppid,
            start: 1,
            zombie: false,
        };
        let table: HashMap<i32, Stat> = [
            (10, stat(1)),
            (11, stat(10)),
            (12, stat(11)),
            (13, stat(1)),
            (14, stat(13)),
        ]
        .into_iter()
        .collect();
        let mut found = descendants_in(&table, &[10]);
        found.sort();
        assert_eq!(found, [10, 11, 12]);
    }
}
