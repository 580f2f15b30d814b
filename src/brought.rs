//! The agent's side of being brought to a VM (docs/protocol.md, "Bringing the agent"): the
//! bootstrap names the file it ran in `BBR_AGENT_BROUGHT`, and the agent removes that file and
//! its private directory as it starts, so nothing is left on the VM whatever ends the run, a
//! SIGKILL included. The running program needs no file.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Set by the bootstrap to the binary it wrote and ran.
pub const ENV: &str = "BBR_AGENT_BROUGHT";
/// The bootstrap's directories are `bbr-agent.<pid>[.<n>]`.
const DIR_PREFIX: &str = "bbr-agent.";

/// Removes the file `BBR_AGENT_BROUGHT` names and its directory, when that file is this very
/// program (the same inode as /proc/self/exe) in a directory the bootstrap made: a stray value
/// removes nothing.
pub fn remove_own_binary() {
    if let Some(path) = std::env::var_os(ENV) {
        remove_if_own(Path::new(&path));
    }
}

fn remove_if_own(path: &Path) {
    let (Ok(own), Ok(named)) = (
        std::fs::metadata("/proc/self/exe"),
        std::fs::symlink_metadata(path),
    ) else {
        return;
    };
    let dir = path.parent().filter(|d| {
        d.file_name()
            .and_then(OsStr::to_str)
            .is_some_and(|n| n.starts_with(DIR_PREFIX))
    });
    if !named.is_file() || named.dev() != own.dev() || named.ino() != own.ino() {
        return;
    }
    let Some(dir) = dir else { return };
    if let Err(e) = std::fs::remove_file(path) {
        eprintln!("bbr-agent: cannot remove {}: {e}", path.display());
        return;
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("bbr-agent: cannot remove {}: {e}", dir.display());
    }
    // The bootstrap ran us from inside that directory (docs/protocol.md): leave it.
    let _ = std::env::set_current_dir("/");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_this_program_is_left_alone() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("bbr-agent.1");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("bbr-agent");
        // A copy of this program is another inode: not the file it runs from.
        std::fs::copy("/proc/self/exe", &file).unwrap();
        remove_if_own(&file);
        assert!(file.exists());
        remove_if_own(base.path());
        assert!(dir.exists());
    }
}
