//! Which tar entry names and link targets stay inside a job's artifact directory.
//!
//! An entry is trusted only when its name is relative and has no `..`, and a link's target,
//! resolved from the entry's own directory, stays inside too. Everything is judged on the
//! names alone, before anything is written.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// How many symlinks one resolution may follow, as Linux's own limit.
const MAX_HOPS: usize = 40;

/// A checked entry name: the path relative to the job's directory and its `./` manifest key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPath {
    pub relative: PathBuf,
    pub key: String,
}

impl EntryPath {
    /// The archive root itself (`./`).
    pub fn is_root(&self) -> bool {
        self.relative.as_os_str().is_empty()
    }
}

/// Checks an entry name; the error says what is wrong with it.
pub fn check_entry(name: &Path) -> Result<EntryPath, &'static str> {
    let mut relative = PathBuf::new();
    for component in name.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("its path contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute"),
        }
    }
    let key = format!("./{}", relative.display());
    Ok(EntryPath { relative, key })
}

/// Checks that a symlink at `entry` pointing to `target` stays inside the job's directory.
pub fn check_symlink_target(entry: &EntryPath, target: &Path) -> Result<(), &'static str> {
    if target.is_absolute() {
        return Err("it is a symlink to an absolute path");
    }
    let base = entry.relative.parent().unwrap_or(Path::new(""));
    let mut depth: usize = base.components().count();
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth = depth
                    .checked_sub(1)
                    .ok_or("it is a symlink that leads outside the job's directory")?;
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("it is a symlink to an absolute path");
            }
        }
    }
    Ok(())
}

/// Whether the symlink at `link` (relative to the job's directory) leads to a place inside
/// it when every symlink of the archive along the way is followed too. Judged per link alone,
/// `./up -> dot/..` looks harmless, yet with `./dot -> .` it is the directory above.
pub fn resolves_inside(links: &BTreeMap<PathBuf, PathBuf>, link: &Path, target: &Path) -> bool {
    let start: Vec<OsString> = link
        .parent()
        .map(|p| p.iter().map(|c| c.to_os_string()).collect())
        .unwrap_or_default();
    walk(links, start, target, MAX_HOPS).is_some()
}

fn walk(
    links: &BTreeMap<PathBuf, PathBuf>,
    mut at: Vec<OsString>,
    target: &Path,
    hops: usize,
) -> Option<Vec<OsString>> {
    for component in target.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                at.pop()?;
            }
            Component::Normal(part) => {
                at.push(part.to_os_string());
                let here: PathBuf = at.iter().collect();
                if let Some(next) = links.get(&here) {
                    at.pop();
                    at = walk(links, at, next, hops.checked_sub(1)?)?;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names_become_dot_slash_keys() {
        let e = check_entry(Path::new("./a dir/-x.txt")).unwrap();
        assert_eq!(e.key, "./a dir/-x.txt");
        assert_eq!(e.relative, Path::new("a dir/-x.txt"));
        assert_eq!(check_entry(Path::new("plain")).unwrap().key, "./plain");
        assert!(check_entry(Path::new("./")).unwrap().is_root());
    }

    #[test]
    fn escaping_names_are_refused() {
        assert!(check_entry(Path::new("../x")).is_err());
        assert!(check_entry(Path::new("./a/../../x")).is_err());
        assert!(check_entry(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn a_chain_of_symlinks_is_followed_before_it_is_trusted() {
        let mut links = BTreeMap::new();
        links.insert(PathBuf::from("dot"), PathBuf::from("."));
        links.insert(PathBuf::from("up"), PathBuf::from("dot/.."));
        assert!(resolves_inside(&links, Path::new("dot"), Path::new(".")));
        assert!(!resolves_inside(
            &links,
            Path::new("up"),
            Path::new("dot/..")
        ));
        links.insert(PathBuf::from("a/b"), PathBuf::from("../c"));
        assert!(resolves_inside(&links, Path::new("a/b"), Path::new("../c")));
        links.insert(PathBuf::from("loop"), PathBuf::from("loop"));
        assert!(
            !resolves_inside(&links, Path::new("loop"), Path::new("loop")),
            "a loop never resolves"
        );
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        let at = |p| check_entry(Path::new(p)).unwrap();
        assert!(check_symlink_target(&at("./a/link"), Path::new("../b")).is_ok());
        assert!(check_symlink_target(&at("./a/link"), Path::new("sibling")).is_ok());
        assert!(check_symlink_target(&at("./link"), Path::new("../outside")).is_err());
        assert!(check_symlink_target(&at("./a/link"), Path::new("../../outside")).is_err());
        assert!(check_symlink_target(&at("./link"), Path::new("/etc/shadow")).is_err());
    }
}
