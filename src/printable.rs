//! Text from a VM (a bootstrap's answer, a session's stderr) made fit for the operator's
//! terminal and logs: control characters escaped, so a hostile VM cannot send terminal escapes
//! to the operator's screen, and a bounded number of characters kept.

/// `text` with each control character escaped (`\u{1b}`), cut after `max_chars` characters.
pub(crate) fn printable(text: &str, max_chars: usize) -> String {
    text.chars()
        .take(max_chars)
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// This process's command line as text to record and show: each argument read lossily (argv
/// need not be UTF-8: a `--root` with any bytes), then [`printable`], 1,000 characters at most.
pub(crate) fn this_command_line() -> String {
    let words: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    printable(&words.join(" "), 1000)
}
