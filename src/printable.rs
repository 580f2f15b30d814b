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
