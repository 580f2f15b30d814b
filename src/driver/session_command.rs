//! How a session's command line is started: directly when it is nothing but plain words
//! (`ssh -o BatchMode=yes vcap@10.0.0.5 sudo bbr-agent serve`), under `sh -c` otherwise.
//!
//! For plain words `sh -c` would do exactly one thing: split on blanks and run the first word
//! from `PATH`, so this skips a shell start per VM (make does the same for its recipes). Any
//! character the shell treats specially (quotes, `$`, globs, `~`, redirections, `;`, `&`, `|`,
//! `#`, backslashes, ...), an assignment as the first word, or a first word that is a shell
//! builtin or keyword sends the line to `sh -c`, as documented.

use std::ffi::OsStr;
use std::path::Path;

use crate::exec::spawn::{Spawn, Spawned};

/// Words a shell (dash, or bash where `/bin/sh` is bash) would not run as a program from
/// `PATH`: its keywords and builtins.
const SHELL_WORDS: &[&str] = &[
    "!",
    ".",
    ":",
    "[",
    "[[",
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "case",
    "cd",
    "chdir",
    "command",
    "compgen",
    "complete",
    "compopt",
    "continue",
    "coproc",
    "declare",
    "dirs",
    "disown",
    "do",
    "done",
    "echo",
    "elif",
    "else",
    "enable",
    "esac",
    "eval",
    "exec",
    "exit",
    "export",
    "false",
    "fc",
    "fg",
    "fi",
    "for",
    "function",
    "getopts",
    "hash",
    "help",
    "history",
    "if",
    "in",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "select",
    "set",
    "shift",
    "shopt",
    "source",
    "suspend",
    "test",
    "then",
    "time",
    "times",
    "trap",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "until",
    "wait",
    "while",
    "{",
    "}",
];

/// The words of `command` when running them directly is exactly what `sh -c` would do.
pub fn plain_words(command: &str) -> Option<Vec<&str>> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:@%+,=".contains(c);
    if !command.chars().all(|c| plain(c) || c == ' ' || c == '\t') {
        return None;
    }
    let words: Vec<&str> = command
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .collect();
    let first = *words.first()?;
    if first.contains('=') || SHELL_WORDS.contains(&first) {
        return None;
    }
    Some(words)
}

/// Starts `command` in its own process group with its stdin a pipe.
pub fn spawn(command: &str) -> std::io::Result<Spawned> {
    if let Some(words) = plain_words(command) {
        let args: Vec<&OsStr> = words[1..].iter().map(OsStr::new).collect();
        match start(words[0], &args) {
            // A program without a `#!` line: the shell would run it as a script.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOEXEC) => {}
            other => return other,
        }
    }
    start("/bin/sh", &[OsStr::new("-c"), OsStr::new(command)])
}

fn start(program: &str, args: &[&OsStr]) -> std::io::Result<Spawned> {
    Spawn {
        program: Path::new(program),
        args,
        env: None,
        working_dir: None,
        stdin_pipe: true,
        search_path: true,
    }
    .start()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_run_directly() {
        assert_eq!(
            plain_words("ssh -o BatchMode=yes vcap@10.0.0.5 sudo /var/vcap/bin/bbr-agent serve"),
            Some(vec![
                "ssh",
                "-o",
                "BatchMode=yes",
                "vcap@10.0.0.5",
                "sudo",
                "/var/vcap/bin/bbr-agent",
                "serve"
            ])
        );
        assert_eq!(
            plain_words("  /opt/bbr-agent\t--root /tmp/vm-1  serve "),
            Some(vec!["/opt/bbr-agent", "--root", "/tmp/vm-1", "serve"])
        );
    }

    #[test]
    fn anything_the_shell_would_change_goes_to_sh() {
        for command in [
            "ssh host 'sudo bbr-agent serve'",
            "ssh \"$HOST\" serve",
            "bbr-agent serve 2>/dev/null",
            "cd /tmp && bbr-agent serve",
            "bbr-agent serve; echo done",
            "bbr-agent serve | tee log",
            "bbr-agent --root ~/vm serve",
            "bbr-agent --root /tmp/vm-* serve",
            "bbr-agent serve # comment",
            "bbr-agent serve \\\n --root /x",
            "exec bbr-agent serve",
            "time bbr-agent serve",
            "RUST_LOG=debug bbr-agent serve",
            "",
            "   ",
        ] {
            assert_eq!(plain_words(command), None, "{command:?}");
        }
    }
}
