//! Whether a script may be run as root, and that the file run is the file judged.
//!
//! **The rule**, OpenSSH's StrictModes (`safe_path`) applied to the whole path: the script
//! and every directory the kernel looks in to reach it, from `/` down, symlinks followed
//! (a job directory is usually one), must be owned by root and writable by nobody else; each
//! symlink followed must be owned by root. The BOSH agent installs job files that way (0755,
//! root), so anything else is a sign of tampering, and nothing of that job runs. Anyone
//! who may write to a directory on the way (its owner, its group, everyone) could otherwise
//! swap what lies beyond it between the check and the run.
//!
//! One difference from StrictModes: a directory that is world-writable but sticky and owned
//! by root (`/tmp`, mode 1777) is accepted. Its sticky bit lets only an entry's owner (or
//! root) rename or remove the entry, and the entry the path goes through must itself be owned
//! by root, so nobody else can swap it. (OpenSSH refuses such a directory; a jobs root is
//! never under one on a VM, but a test tree or a `--root` under `/tmp` is.)
//!
//! **The file run**: each script is examined from its judged directory when judged (no
//! symlink followed at the end: a script must be a regular file, as BBR's `find -type f`
//! wants), and its identity is kept: device, inode, size and modification time (which any
//! write moves). Owner and mode are not part of it: they are judged afresh on the path each
//! time, so a chmod or chown that leaves the file as trusted as it was (a redeploy's, say)
//! does not refuse a job's unlock while it is locked. Right before the script starts, the
//! whole path is judged again and must lead to that same, unchanged file; else the script
//! is not run. Once every directory on the way is writable by root alone, only root can
//! change what the path names, so the path then started (by `posix_spawn`) is the file
//! judged. The walk itself rests on the same fact: it looks each name up by the path of the
//! directories judged so far (one `lstat` a component, not an `O_PATH` open, its `fstat`
//! and its close), and nobody but root can change what such a path names between one lookup
//! and the next. No descriptor is kept: only while one pass judges every job,
//! [`Trust::pass`], are the directories the jobs share, `/` down to `/var/vcap/jobs` and a
//! link's `/var/vcap/data/jobs`, remembered as judged (32 at most); the walk right before a
//! script runs never uses them.
//!
//! Why not run the script by its descriptor (`fexecve`, `execveat(AT_EMPTY_PATH)`, or
//! `/proc/self/fd/N`)? Every BBR script starts with `#!`, and for a script the kernel hands
//! the interpreter the path it was started by: `/dev/fd/N` or `/proc/self/fd/N`, which the
//! interpreter then opens. So `$0` would no longer be the script's path (release scripts use
//! `$(dirname "$0")` to find their job), and descriptor N would have to stay open, without
//! close-on-exec, in the script and in every daemon it starts (a script inherits only 0, 1
//! and 2, as under sudo). Judging the whole path gives the same guarantee against anyone but
//! root without either cost.
//!
//! Checked only when the agent runs as root: an unprivileged agent can only run what its own
//! user could run anyway.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::readlink;
use nix::sys::stat::{FileStat, Mode, SFlag, lstat};

use crate::contract::ScriptKind;
use crate::instance::discover::DiscoveredJob;

/// As many symlinks as the kernel follows in one path before it gives up (ELOOP).
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "job '{job}': refusing to run its scripts as root: {path} {why}; BOSH installs job files owned by root and writable only by root, so fix it (chown root, chmod go-w) or find out who changed it"
)]
pub struct Untrusted {
    pub job: String,
    pub path: PathBuf,
    pub why: String,
}

/// Which file a judged script was, and as it was then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Judged {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
}

/// A judged script: which file it was, and its permission bits as judged (not part of
/// its identity: see the module's doc), which tell whether it can be started at all.
#[derive(Debug, Clone, Copy)]
struct Seen {
    judged: Judged,
    mode: u32,
}

/// The checks, and the scripts judged so far.
#[derive(Debug)]
pub struct Trust {
    /// Whether the agent runs as root (the only case the rule applies to).
    enforced: bool,
    judged: Mutex<HashMap<PathBuf, Seen>>,
    /// During a [`Trust::pass`]: the directories judged so far, open.
    judged_dirs: Mutex<Option<JudgedDirs>>,
}

/// The directories one pass over the jobs judged, each by the path that reached it (no
/// symlink in it: `resolve` joins names onto the directory it is in, and a symlink's target
/// starts again from `/` or its own directory). Every job's path goes through the same ones
/// (`/`, `/var`, `/var/vcap`, `/var/vcap/jobs`, a link's `/var/vcap/data/jobs`): judged once
/// a pass, not once a job. Kept only for the pass (a survey: moments); the walk right before
/// a script runs ([`Trust::verify_script`]) judges the whole path afresh, from `/`.
type JudgedDirs = HashSet<PathBuf>;

/// Directories a pass remembers, at most: the first job's path (the shared ones come first)
/// fits, and a tree of many jobs adds nothing the next job shares.
const JUDGED_DIRS_AT_MOST: usize = 32;

/// A pass over the jobs ([`Trust::pass`]): while it lives, the jobs' checks share the
/// directories they judged.
pub struct Pass<'a>(&'a Trust);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        *self.0.dirs() = None;
    }
}

impl Default for Trust {
    fn default() -> Self {
        Trust::new()
    }
}

impl Trust {
    pub fn new() -> Trust {
        Trust {
            enforced: nix::unistd::geteuid().is_root(),
            judged: Mutex::new(HashMap::new()),
            judged_dirs: Mutex::new(None),
        }
    }

    /// Starts a pass over the jobs: until the returned guard is dropped, [`Trust::check_job`]
    /// judges each directory on the way once, not once a job.
    pub fn pass(&self) -> Pass<'_> {
        *self.dirs() = Some(HashSet::new());
        Pass(self)
    }

    fn dirs(&self) -> std::sync::MutexGuard<'_, Option<JudgedDirs>> {
        self.judged_dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Judges every script of `job`, every directory above them up to `/`, and every symlink
    /// on the way, and remembers which files the scripts are.
    pub fn check_job(&self, job: &DiscoveredJob) -> Result<(), Untrusted> {
        if !self.enforced {
            return Ok(());
        }
        // The path to a job's scripts is judged once for all of them (its `bin/bbr`), then
        // each script in it: the same judgements as one walk per script, a tenth the calls.
        let mut dir: Option<(PathBuf, PathBuf)> = None;
        for script in job.scripts.values() {
            let judged = match (script.parent(), script.file_name()) {
                (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
                    if dir.as_ref().is_none_or(|(p, _)| p != parent) {
                        let mut judged_dirs = self.dirs();
                        let Resolved::Dir(reached) =
                            resolve(parent, Want::Dir, judged_dirs.as_mut())
                                .map_err(|(path, why)| untrusted(job, path, why))?
                        else {
                            unreachable!("asked for a directory")
                        };
                        dir = Some((parent.to_path_buf(), reached));
                    }
                    let (_, reached) = dir.as_ref().expect("set above");
                    judge_in(reached, name)
                }
                _ => resolve_file(script),
            }
            .map_err(|(path, why)| untrusted(job, path, why))?;
            self.judged_scripts().insert(script.clone(), judged);
        }
        Ok(())
    }

    /// The scripts of `job` without an execute bit (each would fail to start): as the check
    /// of the job saw them, so a surveyed job costs no look of its own at each script; a
    /// script not judged (an agent that is not root judges none) is looked at now.
    pub fn not_executable(&self, job: &DiscoveredJob) -> Vec<ScriptKind> {
        let judged = self.judged_scripts();
        job.scripts
            .iter()
            .filter(|(_, path)| match judged.get(*path) {
                Some(seen) => seen.mode & 0o111 == 0,
                None => !is_executable(path),
            })
            .map(|(kind, _)| *kind)
            .collect()
    }

    /// Right before `script` of `job` runs: the path is still trusted all the way, and it
    /// leads to the very file `check_job` judged.
    pub fn verify_script(&self, job: &DiscoveredJob, script: &Path) -> Result<(), Untrusted> {
        if !self.enforced {
            return Ok(());
        }
        let now = walk(script).map_err(|(path, why)| untrusted(job, path, why))?;
        match self.judged_scripts().get(script) {
            Some(then) if then.judged != now => Err(untrusted(
                job,
                script.to_path_buf(),
                "is not the file that was checked before the run's first script (it was replaced or changed since)".to_string(),
            )),
            _ => Ok(()),
        }
    }

    fn judged_scripts(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Seen>> {
        // A panic elsewhere while holding it leaves a map that is still whole.
        self.judged.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn untrusted(job: &DiscoveredJob, path: PathBuf, why: String) -> Untrusted {
    Untrusted {
        job: job.name.clone(),
        path,
        why,
    }
}

/// Resolves `script` from `/` one component at a time, as the kernel does, judging each
/// directory before looking in it, each symlink before following it, and the regular file at
/// the end, whose identity it returns. Each name is looked up (`lstat`, never followed) by the
/// path of directories judged so far: every one of them is root's alone, so nobody but root
/// can change what that path names between one lookup and the next, the same reason the path
/// a script is then started by is the file judged. The error names the offending component
/// by the path that reached it.
fn walk(script: &Path) -> Result<Judged, (PathBuf, String)> {
    resolve_file(script).map(|seen| seen.judged)
}

/// As [`walk`], with the script's permission bits.
fn resolve_file(script: &Path) -> Result<Seen, (PathBuf, String)> {
    match resolve(script, Want::File, None)? {
        Resolved::File(seen) => Ok(seen),
        Resolved::Dir(..) => unreachable!("asked for a file"),
    }
}

/// Whether `path` (followed) has an execute bit: an error is no bit, the script would not
/// start.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// What [`resolve`] is to find at the end of the path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    File,
    Dir,
}

enum Resolved {
    File(Seen),
    /// A judged directory, by the path that reached it (no symlink in it).
    Dir(PathBuf),
}

/// As [`walk`], for a directory (`Want::Dir`: judged) or a script; with `judged_dirs`, the
/// directories judged before in this pass are not judged again, and those judged now are
/// kept.
fn resolve(
    script: &Path,
    want: Want,
    mut judged_dirs: Option<&mut JudgedDirs>,
) -> Result<Resolved, (PathBuf, String)> {
    let absolute = if script.is_absolute() {
        script.to_path_buf()
    } else {
        let cwd = std::env::current_dir()
            .map_err(|e| (script.to_path_buf(), format!("cannot be examined ({e})")))?;
        cwd.join(script)
    };
    let examine =
        |path: &Path, e: nix::Error| (path.to_path_buf(), format!("cannot be examined ({e})"));

    // The directory reached so far: no symlink in it, so its `..` is its parent by name.
    let mut here = PathBuf::from("/");
    // `/`, judged once a pass like the rest.
    if !judged_dirs.as_deref().is_some_and(|j| j.contains(&here)) {
        let root_stat = lstat(&here).map_err(|e| examine(&here, e))?;
        judge(&root_stat).map_err(|why| (here.clone(), why))?;
        if let Some(judged) = judged_dirs.as_deref_mut() {
            judged.insert(here.clone());
        }
    }
    // Components still to resolve, the next one last.
    let mut pending: Vec<OsString> = names_of(&absolute);
    let mut links = 0;
    if let Some(judged) = judged_dirs.as_deref() {
        enter_judged(judged, &mut here, &mut pending);
    }

    while let Some(name) = pending.pop() {
        if name == ".." {
            here.pop();
            continue;
        }
        let next = here.join(&name);
        let stat = lstat(&next).map_err(|e| examine(&next, e))?;
        let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            if pending.is_empty() {
                return Err((next, "is a symlink, not a regular file".to_string()));
            }
            owned_by_root(&stat).map_err(|why| (next.clone(), why))?;
            links += 1;
            if links > MAX_LINKS {
                return Err((
                    next,
                    format!("leads through more than {MAX_LINKS} symlinks"),
                ));
            }
            let target = readlink(&next).map_err(|e| examine(&next, e))?;
            let target = Path::new(&target);
            pending.extend(names_of(target));
            if target.is_absolute() {
                here = PathBuf::from("/");
                if let Some(judged) = judged_dirs.as_deref() {
                    enter_judged(judged, &mut here, &mut pending);
                }
            }
        } else if kind == SFlag::S_IFDIR {
            if pending.is_empty() && want == Want::File {
                return Err((next, "is a directory, not a script".to_string()));
            }
            judge(&stat).map_err(|why| (next.clone(), why))?;
            if let Some(judged) = judged_dirs.as_deref_mut()
                && judged.len() < JUDGED_DIRS_AT_MOST
            {
                judged.insert(next.clone());
            }
            here = next;
        } else if kind == SFlag::S_IFREG {
            if !pending.is_empty() || want == Want::Dir {
                return Err((next, "is not a directory".to_string()));
            }
            judge(&stat).map_err(|why| (next, why))?;
            return Ok(Resolved::File(seen_as(&stat)));
        } else {
            return Err((next, "is not a regular file".to_string()));
        }
    }
    match want {
        Want::Dir => Ok(Resolved::Dir(here)),
        Want::File => Err((absolute, "is a directory, not a script".to_string())),
    }
}

fn seen_as(stat: &FileStat) -> Seen {
    Seen {
        judged: Judged {
            dev: stat.st_dev,
            ino: stat.st_ino,
            size: stat.st_size,
            mtime: (stat.st_mtime, stat.st_mtime_nsec),
        },
        mode: stat.st_mode,
    }
}

/// From `/` (`here`), down the directories of `pending`'s next names that this pass judged
/// already: `here` is then the deepest of them, and `pending` holds the names after it.
fn enter_judged(judged: &JudgedDirs, here: &mut PathBuf, pending: &mut Vec<OsString>) {
    let mut taken = 0;
    for name in pending.iter().rev() {
        if name == ".." || !judged.contains(&here.join(name)) {
            break;
        }
        here.push(name);
        taken += 1;
    }
    pending.truncate(pending.len() - taken);
}

/// A script named `name` in a directory `resolve` judged: a regular file, judged. (What
/// [`walk`] does for its last component, once per script of a directory instead of once per
/// script from `/`.)
fn judge_in(dir_path: &Path, name: &std::ffi::OsStr) -> Result<Seen, (PathBuf, String)> {
    let here = dir_path.join(name);
    let examine = |e: nix::Error| (here.clone(), format!("cannot be examined ({e})"));
    let stat = lstat(&here).map_err(examine)?;
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFLNK {
        return Err((here, "is a symlink, not a regular file".to_string()));
    }
    if kind == SFlag::S_IFDIR {
        return Err((here, "is a directory, not a script".to_string()));
    }
    if kind != SFlag::S_IFREG {
        return Err((here, "is not a regular file".to_string()));
    }
    judge(&stat).map_err(|why| (here.clone(), why))?;
    Ok(seen_as(&stat))
}

/// The names of `path` after its root, reversed (the first to resolve last); `.` dropped.
fn names_of(path: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .filter(|name| !name.as_bytes().is_empty())
        .collect();
    names.reverse();
    names
}

fn owned_by_root(stat: &FileStat) -> Result<(), String> {
    if stat.st_uid != 0 {
        return Err(format!("is owned by uid {}, not root", stat.st_uid));
    }
    Ok(())
}

/// A directory or the script: owned by root, writable by nobody else (a sticky directory
/// excepted; see the module's doc).
fn judge(stat: &FileStat) -> Result<(), String> {
    owned_by_root(stat)?;
    let mode = stat.st_mode & 0o7777;
    let is_dir = stat.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits();
    let sticky = mode & Mode::S_ISVTX.bits() != 0;
    if mode & 0o022 != 0 && !(is_dir && sticky) {
        return Err(format!("is writable by group or others (mode {mode:04o})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use crate::contract::ScriptKind;

    fn is_root() -> bool {
        // The rule applies to root only; CI runs the suite as root.
        nix::unistd::geteuid().is_root()
    }

    /// A job `api` with a backup script under a fresh temp dir (0700, root's).
    fn job_in(dir: &Path) -> DiscoveredJob {
        let job_dir = dir.join("jobs/api");
        fs::create_dir_all(job_dir.join("bin/bbr")).unwrap();
        for d in ["jobs", "jobs/api", "jobs/api/bin", "jobs/api/bin/bbr"] {
            fs::set_permissions(dir.join(d), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let script = job_dir.join("bin/bbr/backup");
        write_script(&script, "#!/bin/sh\necho checked\n");
        DiscoveredJob {
            name: "api".to_string(),
            dir: job_dir,
            scripts: BTreeMap::from([(ScriptKind::Backup, script)]),
        }
    }

    fn write_script(path: &Path, text: &str) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn why(path: &Path) -> Result<(), String> {
        walk(path).map(|_| ()).map_err(|(_, why)| why)
    }

    #[test]
    fn group_or_world_writable_paths_are_refused_as_root() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("backup");
        write_script(&script, "#!/bin/sh\n");
        assert_eq!(why(&script), Ok(()));
        fs::set_permissions(&script, fs::Permissions::from_mode(0o775)).unwrap();
        assert_eq!(
            why(&script),
            Err("is writable by group or others (mode 0775)".to_string())
        );
        nix::unistd::chown(&script, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            why(&script),
            Err("is owned by uid 1000, not root".to_string())
        );
    }

    /// Every directory up to `/` counts, through symlinks; a sticky one owned by root does
    /// not make the path untrusted, a plain world-writable one does.
    #[test]
    fn every_component_up_to_the_root_is_judged_through_symlinks() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("home/evil");
        fs::create_dir_all(elsewhere.join("x/bin/bbr")).unwrap();
        fs::set_permissions(dir.path().join("home"), fs::Permissions::from_mode(0o755)).unwrap();
        write_script(&elsewhere.join("x/bin/bbr/backup"), "#!/bin/sh\n");
        fs::create_dir(dir.path().join("jobs")).unwrap();
        // Two links on the way: jobs/api -> ../home/link, home/link -> evil/x.
        std::os::unix::fs::symlink("../home/link", dir.path().join("jobs/api")).unwrap();
        std::os::unix::fs::symlink("evil/x", dir.path().join("home/link")).unwrap();
        let script = dir.path().join("jobs/api/bin/bbr/backup");
        assert_eq!(why(&script), Ok(()));

        nix::unistd::chown(&elsewhere, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
        let (path, reason) = walk(&script).map(|_| ()).unwrap_err();
        assert_eq!(
            (path, reason.as_str()),
            (elsewhere.clone(), "is owned by uid 1000, not root")
        );
        nix::unistd::chown(&elsewhere, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();

        fs::set_permissions(dir.path().join("home"), fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(
            why(&script),
            Ok(()),
            "sticky and root's: nobody else can swap evil"
        );
        fs::set_permissions(dir.path().join("home"), fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            walk(&script).map(|_| ()).unwrap_err(),
            (
                dir.path().join("home"),
                "is writable by group or others (mode 0777)".to_string()
            )
        );
        fs::set_permissions(dir.path().join("home"), fs::Permissions::from_mode(0o755)).unwrap();
        // A link someone else owns is refused: in a sticky directory its owner could replace it.
        std::os::unix::fs::lchown(dir.path().join("home/link"), Some(1000), None).unwrap();
        assert_eq!(
            walk(&script).map(|_| ()).unwrap_err(),
            (
                dir.path().join("home/link"),
                "is owned by uid 1000, not root".to_string()
            )
        );
    }

    /// A `..` after a symlink leaves the directory the link led to, as the kernel's does, not
    /// the link's own: the walk judges the directory the script is really reached through
    /// (here `data/open`, writable by anyone), never the one the path spells (`jobs/open`).
    #[test]
    fn a_dot_dot_past_a_symlink_is_judged_where_the_kernel_goes() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["jobs/open/bin/bbr", "data/real", "data/open/bin/bbr"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        write_script(&root.join("jobs/open/bin/bbr/backup"), "#!/bin/sh\n");
        write_script(&root.join("data/open/bin/bbr/backup"), "#!/bin/sh\n");
        std::os::unix::fs::symlink(root.join("data/real"), root.join("jobs/api")).unwrap();
        let script = root.join("jobs/api/../open/bin/bbr/backup");
        assert_eq!(why(&script), Ok(()));
        let physical = walk(&script).unwrap();
        assert_eq!(
            physical,
            walk(&root.join("data/open/bin/bbr/backup")).unwrap(),
            "the file reached is data/open's"
        );

        fs::set_permissions(root.join("data/open"), fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            walk(&script).map(|_| ()).unwrap_err(),
            (
                root.join("data/open"),
                "is writable by group or others (mode 0777)".to_string()
            )
        );
    }

    /// A pass over the jobs judges each directory above them once: a change to one after it
    /// was judged goes unseen by the pass's later jobs (only root can make it: every
    /// directory judged is root's alone), and is seen right before any script runs, where the
    /// whole path is judged again. Verdicts on what differs between jobs (a link, a directory
    /// below the shared ones) are the same as alone.
    #[test]
    fn a_pass_judges_the_shared_directories_once_and_the_run_judges_them_again() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let job = |name: &str, at: &Path| {
            fs::create_dir_all(at.join("bin/bbr")).unwrap();
            let script = at.join("bin/bbr/backup");
            write_script(&script, "#!/bin/sh\n");
            DiscoveredJob {
                name: name.to_string(),
                dir: root.join("jobs").join(name),
                scripts: BTreeMap::from([(
                    ScriptKind::Backup,
                    root.join("jobs").join(name).join("bin/bbr/backup"),
                )]),
            }
        };
        fs::create_dir_all(root.join("jobs")).unwrap();
        let a = job("a", &root.join("jobs/a"));
        let b = job("b", &root.join("jobs/b"));
        // Linked, relatively and absolutely, as BOSH links its jobs into /var/vcap/data.
        let c = job("c", &root.join("data/c"));
        std::os::unix::fs::symlink("../data/c", root.join("jobs/c")).unwrap();
        let d = job("d", &root.join("data/d"));
        std::os::unix::fs::symlink(root.join("data/d"), root.join("jobs/d")).unwrap();
        // Below the shared directories, one that anyone may write to.
        let e = job("e", &root.join("data/open/e"));
        std::os::unix::fs::symlink(root.join("data/open/e"), root.join("jobs/e")).unwrap();
        fs::set_permissions(root.join("data/open"), fs::Permissions::from_mode(0o777)).unwrap();

        let alone = Trust::new();
        let verdicts = |t: &Trust| -> Vec<Result<(), Untrusted>> {
            [&a, &b, &c, &d, &e]
                .iter()
                .map(|j| t.check_job(j))
                .collect()
        };
        let without = verdicts(&alone);
        let trust = Trust::new();
        let pass = trust.pass();
        assert_eq!(verdicts(&trust), without);
        assert!(without[..4].iter().all(Result::is_ok), "{without:?}");
        assert_eq!(
            without[4].as_ref().unwrap_err().path,
            root.join("data/open")
        );

        // Judged already in this pass: `jobs` made world-writable now goes unseen by it...
        fs::set_permissions(root.join("jobs"), fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(trust.check_job(&b), Ok(()));
        // ... and not by a job's check outside a pass, nor right before its script runs.
        drop(pass);
        let refused = |r: Result<(), Untrusted>| r.unwrap_err().path;
        assert_eq!(refused(trust.check_job(&b)), root.join("jobs"));
        let script = &a.scripts[&ScriptKind::Backup];
        assert_eq!(refused(trust.verify_script(&a, script)), root.join("jobs"));
    }

    #[test]
    fn a_symlinked_script_and_a_loop_are_refused() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        write_script(&real, "#!/bin/sh\n");
        std::os::unix::fs::symlink(&real, dir.path().join("backup")).unwrap();
        assert_eq!(
            why(&dir.path().join("backup")),
            Err("is a symlink, not a regular file".to_string())
        );
        // Swapped for a link after discovery, the one check of a job's scripts (from their
        // judged directory, not by a walk from `/`) refuses it too.
        let job = job_in(dir.path());
        let script = job.scripts[&ScriptKind::Backup].clone();
        fs::remove_file(&script).unwrap();
        std::os::unix::fs::symlink(&real, &script).unwrap();
        let refused = Trust::new().check_job(&job).unwrap_err();
        assert_eq!(
            (refused.path, refused.why),
            (script, "is a symlink, not a regular file".to_string())
        );
        std::os::unix::fs::symlink("loop", dir.path().join("loop")).unwrap();
        assert_eq!(
            why(&dir.path().join("loop/backup")),
            Err(format!("leads through more than {MAX_LINKS} symlinks"))
        );
    }

    /// The swap the check cannot see (a file replaced by root-owned one, as only root can
    /// once the path is trusted) still does not run: the file must be the one judged.
    #[test]
    fn a_script_replaced_after_the_check_is_not_run() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let job = job_in(dir.path());
        let trust = Trust::new();
        trust.check_job(&job).unwrap();
        let script = job.script(ScriptKind::Backup).unwrap();
        assert_eq!(trust.verify_script(&job, script), Ok(()));

        let other = dir.path().join("jobs/api/bin/bbr/.swap");
        write_script(&other, "#!/bin/sh\necho another\n");
        fs::rename(&other, script).unwrap();
        let refused = trust.verify_script(&job, script).unwrap_err();
        assert_eq!(refused.path, script);
        assert!(
            refused.why.contains("replaced or changed since"),
            "{refused}"
        );

        // Its owner and mode set again to what they were (its change time moves): still the
        // file judged, so a locked job's unlock is not refused for it.
        trust.check_job(&job).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        fs::set_permissions(script, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(trust.verify_script(&job, script), Ok(()));

        // Changed in place (same inode): refused too.
        trust.check_job(&job).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        fs::OpenOptions::new()
            .append(true)
            .open(script)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"echo appended\n"))
            .unwrap();
        assert!(trust.verify_script(&job, script).is_err());

        // Judged again (a new run), the new file is the one that may run.
        trust.check_job(&job).unwrap();
        assert_eq!(trust.verify_script(&job, script), Ok(()));
    }

    /// The execute bits a survey reports are the ones its check saw, and the same as a look
    /// of their own at each script gives (an agent that is not root judges nothing).
    #[test]
    fn the_scripts_without_an_execute_bit_are_the_ones_the_check_saw() {
        let dir = tempfile::tempdir().unwrap();
        let mut job = job_in(dir.path());
        let restore = job.dir.join("bin/bbr/restore");
        write_script(&restore, "#!/bin/sh\n");
        fs::set_permissions(&restore, fs::Permissions::from_mode(0o644)).unwrap();
        job.scripts.insert(ScriptKind::Restore, restore.clone());

        let unjudged = Trust::new();
        assert_eq!(unjudged.not_executable(&job), vec![ScriptKind::Restore]);
        let trust = Trust::new();
        trust.check_job(&job).unwrap();
        assert_eq!(trust.not_executable(&job), vec![ScriptKind::Restore]);
        if is_root() {
            // Judged: answered from the check, as the script was when the job was judged.
            fs::set_permissions(&restore, fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(trust.not_executable(&job), vec![ScriptKind::Restore]);
            assert_eq!(unjudged.not_executable(&job), Vec::<ScriptKind>::new());
        }
    }
}
