//! POSIX shell quoting: of the values an inventory puts into a session command, and of the
//! command lines the agent names for a cleanup. Each value is
//! one word to the shell whatever bytes it holds (`$V; touch pwned #` stays one argument),
//! and a value of plain characters (`10.0.0.5`, `db`, `0`) is left as it is, so a command of
//! plain words stays one (started without `sh`, see `session_command`).

use std::borrow::Cow;
use std::io::{self, Write};

/// Characters that mean nothing to the shell anywhere in a word. `=` is not among them (a
/// first word with it is an assignment), nor `~` (expanded at the start of a word).
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_./:@%+,".contains(c)
}

/// `value` as one shell word: as it is when every character is plain, else single-quoted,
/// each `'` written `'\''` (nothing is special inside single quotes but the quote itself).
pub fn quote(value: &str) -> Cow<'_, str> {
    if !value.is_empty() && value.chars().all(plain) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(format!("'{}'", value.replace('\'', r"'\''")))
}

/// [`quote`] as tera's escape function: every `{{ value }}` of a command is quoted.
pub fn escape(value: &str, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(quote(value).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_stay_and_others_are_single_quoted() {
        assert_eq!(quote("10.0.0.5"), "10.0.0.5");
        assert_eq!(quote("vcap@db-0.acme.bosh:22"), "vcap@db-0.acme.bosh:22");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("$V; touch pwned #"), "'$V; touch pwned #'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("A=b"), "'A=b'");
        assert_eq!(quote("~root"), "'~root'");
        assert_eq!(quote("ünï"), "'ünï'");
    }

    /// What `sh` makes of a quoted value is the value, byte for byte.
    #[test]
    fn sh_reads_back_every_value_as_one_word() {
        for value in [
            "$V; touch pwned #",
            "it's \"quoted\"",
            "back\\slash `cmd` $(cmd) *",
            "new\nline",
            "",
            "-n",
            "ünï ~ & | > <",
        ] {
            let script = format!("printf '%s' {}", quote(value));
            let out = std::process::Command::new("/bin/sh")
                .args(["-c", &script])
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), value, "{script}");
        }
    }

    /// A quoted value gives the same argv both ways a command is started: a value left as it
    /// is keeps a command of plain words plain, and a quoted one sends it to `sh`.
    #[test]
    fn a_quoted_value_never_changes_what_the_direct_start_runs() {
        use crate::driver::session_command::plain_words;
        for value in ["10.0.0.5", "db", "a b", "$V", "it's", "", "A=b", "~x"] {
            let command = format!("ssh {} serve", quote(value));
            match plain_words(&command) {
                Some(words) => assert_eq!(words, ["ssh", value, "serve"], "{command}"),
                None => assert!(command.contains('\''), "{command}"),
            }
        }
    }
}
