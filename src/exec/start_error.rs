//! Why a script could not be started, in words that say what to do: the kernel's errno alone
//! ("Permission denied (os error 13)") does not say that the file lacks its execute bit.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `e` (from starting the script at `path`), with its likely cause and the fix.
pub fn describe(path: &Path, e: &io::Error) -> String {
    let mode = std::fs::metadata(path).ok().map(|m| m.permissions().mode());
    match (e.kind(), mode) {
        (io::ErrorKind::PermissionDenied, Some(mode)) if mode & 0o111 == 0 => format!(
            "{} is not executable (mode {:04o}): the job's release must ship it executable (chmod +x)",
            path.display(),
            mode & 0o7777
        ),
        (io::ErrorKind::PermissionDenied, _) => format!(
            "{e}: is the interpreter on its #! line executable, or its filesystem mounted noexec?"
        ),
        (io::ErrorKind::NotFound, Some(_)) => format!(
            "{e}: the interpreter on its #! line does not exist on this VM (is a package missing?)"
        ),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_without_its_execute_bit_is_named_with_its_mode_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("backup");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let why = describe(&script, &io::Error::from_raw_os_error(13));
        assert!(why.contains("is not executable (mode 0644)"), "{why}");
        assert!(why.contains("chmod +x"), "{why}");
        let bad_interpreter = describe(&script, &io::Error::from_raw_os_error(2));
        assert!(bad_interpreter.contains("#! line"), "{bad_interpreter}");
    }
}
