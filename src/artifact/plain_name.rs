//! The names that become file names on the operator's side: the deployment (its artifact
//! directory `<deployment>_<timestamp>`), and an instance group, an index and a job (each tar
//! `<group>-<index>-<job>.tar`). They come from an inventory, a VM or a backup's metadata, so
//! each must be one plain path component before it is joined to a path: a name with `/` or
//! `..` would write or read outside the artifact directory.
//!
//! BBR joins these names as they come, and BOSH does not restrict them much (its own file
//! names, `/var/vcap/jobs/<job>` and DNS names, keep them to letters, digits, `-`, `_`, `.`):
//! so only what cannot be one file name is refused (empty, `.`, `..`, `/`, NUL, too long), and
//! control characters, which no BOSH name holds and which would garble every line naming them.

/// The longest file name Linux allows (`NAME_MAX`), in bytes.
pub const NAME_MAX: usize = 255;

/// Why a name cannot be one file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotPlain {
    #[error("is empty")]
    Empty,
    #[error("is `{0}`, which names a directory, not a file")]
    Dots(&'static str),
    #[error("contains `/`")]
    Slash,
    #[error("contains a NUL byte")]
    Nul,
    #[error("contains the control character {0:?}")]
    Control(char),
    #[error("is {len} bytes long, more than the {max} a file name allows here")]
    TooLong { len: usize, max: usize },
}

/// Whether `name` can be (part of) one file name of at most `max` bytes.
pub fn check(name: &str, max: usize) -> Result<(), NotPlain> {
    match name {
        "" => return Err(NotPlain::Empty),
        "." => return Err(NotPlain::Dots(".")),
        ".." => return Err(NotPlain::Dots("..")),
        _ => {}
    }
    if let Some(c) = name.chars().find(|&c| c == '/' || c.is_control()) {
        return Err(match c {
            '/' => NotPlain::Slash,
            '\0' => NotPlain::Nul,
            c => NotPlain::Control(c),
        });
    }
    if name.len() > max {
        return Err(NotPlain::TooLong {
            len: name.len(),
            max,
        });
    }
    Ok(())
}

/// Whether `<group>-<index>-<job>.tar`, each part already checked, fits in one file name.
pub fn check_tar_name(group: &str, index: &str, job: &str) -> Result<(), NotPlain> {
    check(
        &super::backup_dir::tar_file_name(group, index, job),
        NAME_MAX,
    )
}

/// Whether a named artifact's `<name>.tar`, the name already checked, fits in one file name.
pub fn check_custom_tar_name(name: &str) -> Result<(), NotPlain> {
    check(name, NAME_MAX)
        .and_then(|()| check(&super::backup_dir::custom_tar_file_name(name), NAME_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bosh_names_pass() {
        for name in [
            "db",
            "diego-cell",
            "cloud_controller_ng",
            "bbr-agent.v2",
            "0",
            "-leading-dash",
            "with space",
            "ünï",
            "...",
            ".hidden",
        ] {
            assert_eq!(check(name, NAME_MAX), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn what_is_not_one_file_name_is_refused() {
        assert_eq!(check("", NAME_MAX), Err(NotPlain::Empty));
        assert_eq!(check(".", NAME_MAX), Err(NotPlain::Dots(".")));
        assert_eq!(check("..", NAME_MAX), Err(NotPlain::Dots("..")));
        assert_eq!(check("../../x", NAME_MAX), Err(NotPlain::Slash));
        assert_eq!(check("a/b", NAME_MAX), Err(NotPlain::Slash));
        assert_eq!(check("a\0b", NAME_MAX), Err(NotPlain::Nul));
        assert_eq!(check("a\nb", NAME_MAX), Err(NotPlain::Control('\n')));
        assert_eq!(
            check("a\u{1b}[2J", NAME_MAX),
            Err(NotPlain::Control('\u{1b}'))
        );
        assert_eq!(check(&"x".repeat(255), NAME_MAX), Ok(()));
        assert_eq!(
            check(&"x".repeat(256), NAME_MAX),
            Err(NotPlain::TooLong { len: 256, max: 255 })
        );
        assert!(check_tar_name(&"g".repeat(100), "0", &"j".repeat(100)).is_ok());
        assert!(matches!(
            check_tar_name(&"g".repeat(200), "0", &"j".repeat(100)),
            Err(NotPlain::TooLong { .. })
        ));
    }
}
