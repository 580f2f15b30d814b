//! Which tar entry names and link targets stay inside a job's artifact directory.
//!
//! An entry is trusted only when its name is relative and has no `..`, and a link's target,
//! resolved from the entry's own directory, stays inside too. Everything is judged on the
//! names alone, before anything is written.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::checksums::key;

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
    let key = key(relative.as_os_str().as_bytes());
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

/// Why a symlink is not trusted once the archive's other symlinks are followed too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefusal {
    /// It leads to a place outside the job's directory.
    Outside,
    /// Resolving it follows more than `MAX_HOPS` symlinks (a loop, or a chain that long).
    TooManyLinks,
}

impl LinkRefusal {
    pub fn why(self) -> String {
        match self {
            LinkRefusal::Outside => "it is a symlink that, through the archive's other symlinks, leads outside the job's directory".to_string(),
            LinkRefusal::TooManyLinks => format!(
                "it is a symlink whose resolution follows more than {MAX_HOPS} symlinks (a loop, or a chain that long), which Linux refuses too"
            ),
        }
    }
}

/// Whether the symlink at `link` (relative to the job's directory) leads to a place inside
/// it when every symlink of the archive along the way is followed too, and if not, why. Judged
/// per link alone, `./up -> dot/..` looks harmless, yet with `./dot -> .` it is the directory
/// above. Resolution is as the kernel's: at most `MAX_HOPS`
/// symlinks followed in all, so the work is bounded by that many targets' components however
/// the links are chained (counting depth instead let `a2 -> a1/a1`, `a1 -> a0/a0`, ... double
/// the work per level).
pub fn resolve_inside(
    links: &BTreeMap<PathBuf, PathBuf>,
    link: &Path,
    target: &Path,
) -> Result<(), LinkRefusal> {
    resolve_counting(links, link, target).0
}

/// The resolution and the components it walked.
fn resolve_counting(
    links: &BTreeMap<PathBuf, PathBuf>,
    link: &Path,
    target: &Path,
) -> (Result<(), LinkRefusal>, usize) {
    let mut steps = 0;
    let mut at = link.parent().map(Path::to_path_buf).unwrap_or_default();
    // Components still to walk, the next one last: a symlink met on the way puts its
    // target's components in front of the rest.
    let mut todo: Vec<Component<'_>> = target.components().rev().collect();
    // The link itself is the first followed, as when the kernel opens it.
    let mut followed = 1;
    while let Some(component) = todo.pop() {
        steps += 1;
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !at.pop() {
                    return (Err(LinkRefusal::Outside), steps);
                }
            }
            Component::Normal(part) => {
                at.push(part);
                if let Some(next) = links.get(&at) {
                    followed += 1;
                    if followed > MAX_HOPS {
                        return (Err(LinkRefusal::TooManyLinks), steps);
                    }
                    at.pop();
                    todo.extend(next.components().rev());
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return (Err(LinkRefusal::Outside), steps);
            }
        }
    }
    (Ok(()), steps)
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
        assert_eq!(
            resolve_inside(&links, Path::new("dot"), Path::new(".")),
            Ok(())
        );
        assert_eq!(
            resolve_inside(&links, Path::new("up"), Path::new("dot/..")),
            Err(LinkRefusal::Outside)
        );
        links.insert(PathBuf::from("a/b"), PathBuf::from("../c"));
        assert_eq!(
            resolve_inside(&links, Path::new("a/b"), Path::new("../c")),
            Ok(())
        );
        links.insert(PathBuf::from("loop"), PathBuf::from("loop"));
        assert_eq!(
            resolve_inside(&links, Path::new("loop"), Path::new("loop")),
            Err(LinkRefusal::TooManyLinks),
            "a loop never resolves"
        );
    }

    /// `a0 -> .`, `a1 -> a0/a0`, ... `aN -> aN-1/aN-1`: each level doubles the symlinks to
    /// follow, so resolving `aN` takes 2^N of them.
    fn doubling_chain(levels: usize) -> BTreeMap<PathBuf, PathBuf> {
        let mut links = BTreeMap::new();
        links.insert(PathBuf::from("a0"), PathBuf::from("."));
        for i in 1..=levels {
            links.insert(
                PathBuf::from(format!("a{i}")),
                PathBuf::from(format!("a{0}/a{0}", i - 1)),
            );
        }
        links
    }

    #[test]
    fn a_chain_is_resolved_within_the_kernels_budget_of_links_in_bounded_steps() {
        // Four levels: 1 + 2 + 4 + 8 + 16 = 31 symlinks followed in all, within 40: inside.
        let links = doubling_chain(4);
        let (result, steps) = resolve_counting(&links, Path::new("a4"), Path::new("a3/a3"));
        assert_eq!(result, Ok(()));
        assert!(steps < 100, "{steps}");
        // Eight levels (the issue's) and forty: past 40 links, refused, and the steps stay
        // within what 41 targets of two components can take (counting depth per link took
        // 2^levels of them: minutes at 40).
        for levels in [8, 40] {
            let links = doubling_chain(levels);
            let target = links[&PathBuf::from(format!("a{levels}"))].clone();
            let (result, steps) =
                resolve_counting(&links, Path::new(&format!("a{levels}")), &target);
            assert_eq!(result, Err(LinkRefusal::TooManyLinks), "{levels} levels");
            assert!(
                steps <= 2 * (MAX_HOPS + 1),
                "{levels} levels: {steps} steps"
            );
        }
        // Opening `l39` follows 40 links (itself, then l38 ... l0), what Linux follows, and is
        // accepted; `l40` is one more.
        let mut links = BTreeMap::new();
        links.insert(PathBuf::from("l0"), PathBuf::from("data"));
        for i in 1..=40 {
            links.insert(
                PathBuf::from(format!("l{i}")),
                PathBuf::from(format!("l{}", i - 1)),
            );
        }
        assert_eq!(
            resolve_inside(&links, Path::new("l39"), Path::new("l38")),
            Ok(())
        );
        assert_eq!(
            resolve_inside(&links, Path::new("l40"), Path::new("l39")),
            Err(LinkRefusal::TooManyLinks)
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
