//! What the catalogue needs from a backup's `metadata`: its `backup_activity` (start, and
//! `finish_time` when it completed) and the `bbr_agent` key (compression, encryption; absent
//! for a plain backup). Every other key is left unread.
//!
//! The metadata is hostile input of any size: BBR's lists a checksum per file, so a blobstore's
//! runs to hundreds of MiB. A small one (up to [`PARSE_WHOLE`]) is parsed whole, so any YAML
//! error shows; a larger one is read once as a stream of lines, keeping only the two top-level
//! sections it needs (a bounded number of bytes), in linear time and bounded memory. One larger
//! than [`READ_AT_MOST`] is not read at all.

use std::io::{BufRead, BufReader, Read};

use serde::{Deserialize, Serialize};

/// A metadata up to this size is parsed whole.
pub(crate) const PARSE_WHOLE: u64 = 1 << 20;
/// A metadata larger than this is not read: listed as unreadable.
pub(crate) const READ_AT_MOST: u64 = 1 << 30;
/// The two sections kept from a large metadata, at most.
const KEEP_AT_MOST: usize = 64 << 10;
/// A line longer than this is skipped whole (outside the sections kept) or refused (inside).
const LINE_AT_MOST: usize = 16 << 10;

/// The parts of a backup's metadata the catalogue shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Summary {
    pub backup_activity: Activity,
    #[serde(default)]
    pub bbr_agent: Option<Codecs>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Activity {
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub finish_time: Option<String>,
}

/// The `bbr_agent` key: how bbr-agent transformed the tars. Absent: plain, BBR's own layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub(crate) struct Codecs {
    #[serde(default)]
    pub format: Option<u32>,
    #[serde(default)]
    pub compression: Option<String>,
    #[serde(default)]
    pub compressed_on: Option<String>,
    #[serde(default)]
    pub encryption: Option<String>,
    #[serde(default)]
    pub recipients: Vec<String>,
}

impl Summary {
    pub(crate) fn complete(&self) -> bool {
        self.backup_activity.finish_time.is_some()
    }
}

/// Reads the summary of a metadata of `size` bytes from `input`; `Err` says why it cannot be
/// read, in words for the operator.
pub(crate) fn read(size: u64, input: impl Read) -> Result<Summary, String> {
    if size > READ_AT_MOST {
        return Err(format!(
            "the metadata is {size} bytes, more than the {} MiB read",
            READ_AT_MOST >> 20
        ));
    }
    let text = if size <= PARSE_WHOLE {
        let mut bytes = Vec::new();
        input
            .take(PARSE_WHOLE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read the metadata: {e}"))?;
        if bytes.len() as u64 > PARSE_WHOLE {
            // Grew since it was listed: read as the large one it now is.
            return Err("the metadata changed size while it was read".to_string());
        }
        String::from_utf8(bytes).map_err(|_| "the metadata is not UTF-8 text".to_string())?
    } else {
        sections(input.take(READ_AT_MOST + 1))?
    };
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("the metadata is not valid YAML: {e}"))?;
    // A record the restore would refuse (another format, an unknown codec, hostile
    // recipients) makes a backup that cannot be restored: unreadable, never complete, so a
    // prune never keeps it in place of one that can be.
    if let Some(record) = value.get("bbr_agent") {
        let record: crate::artifact::codec::Record = serde_yaml::from_value(record.clone())
            .map_err(|e| format!("the metadata's bbr_agent record is not bbr-agent's: {e}"))?;
        record.layers().map_err(|e| e.to_string())?;
    }
    serde_yaml::from_value(value).map_err(|e| format!("the metadata is not BBR metadata: {e}"))
}

/// The top-level keys kept from a large metadata.
const KEPT: [&str; 2] = ["backup_activity", "bbr_agent"];

/// The `backup_activity` and `bbr_agent` sections of a block-style YAML document (as BBR and
/// bbr-agent write it): a line starting in column 0 with neither space, `-` nor `#` starts a
/// top-level key, and the lines after it, up to the next such line, are its value.
fn sections(input: impl Read) -> Result<String, String> {
    let mut reader = BufReader::with_capacity(64 << 10, input);
    let mut kept = String::new();
    let mut keeping = false;
    let mut line = Vec::new();
    let mut number = 0usize;
    loop {
        line.clear();
        let (read, whole) = read_line(&mut reader, &mut line)
            .map_err(|e| format!("cannot read the metadata: {e}"))?;
        if read == 0 {
            break;
        }
        number += 1;
        let starts_key = match line.first() {
            Some(b' ' | b'\t' | b'-' | b'#' | b'\n' | b'\r' | b'%') | None => false,
            Some(_) => !line.starts_with(b"---") && !line.starts_with(b"..."),
        };
        if starts_key {
            let key = line.split(|&b| b == b':').next().unwrap_or(&[]);
            keeping = KEPT.iter().any(|k| k.as_bytes() == key);
        }
        if !keeping {
            continue;
        }
        if !whole {
            return Err(format!(
                "line {number} of the metadata is longer than {LINE_AT_MOST} bytes"
            ));
        }
        let text = std::str::from_utf8(&line)
            .map_err(|_| format!("line {number} of the metadata is not UTF-8"))?;
        if kept.len() + text.len() > KEEP_AT_MOST {
            return Err(format!(
                "the metadata's {} run past {} KiB",
                KEPT.join(" and "),
                KEEP_AT_MOST >> 10
            ));
        }
        kept.push_str(text);
        if !text.ends_with('\n') {
            kept.push('\n');
        }
    }
    Ok(kept)
}

/// One line into `line`, at most [`LINE_AT_MOST`] bytes of it kept: `(bytes read, whole)`,
/// where `whole` is false when the line was longer and the rest of it was skipped.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<(usize, bool)> {
    let mut read = (&mut *reader)
        .take(LINE_AT_MOST as u64)
        .read_until(b'\n', line)?;
    if read < LINE_AT_MOST || line.last() == Some(&b'\n') {
        return Ok((read, true));
    }
    // Too long: skip to the end of the line without keeping it.
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((read, false));
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                return Ok((read + at + 1, false));
            }
            None => {
                let n = buf.len();
                reader.consume(n);
                read += n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTANCES: &str = "instances:\n- name: db\n  index: \"0\"\n  artifacts:\n  - name: pg\n    checksums:\n      ./a: 0123\n";
    const TAIL: &str = "backup_activity:\n  start_time: 2026/11/26 10:02:03 UTC\n  finish_time: 2026/11/26 10:05:00 UTC\nbbr_agent:\n  format: 1\n  compression: zstd\n  compressed_on: vm\n  encryption: age\n  recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p, age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg]\n";

    fn summary(text: &str) -> Result<Summary, String> {
        read(text.len() as u64, text.as_bytes())
    }

    /// `text` with a checksum list of `files` entries put in front, past [`PARSE_WHOLE`].
    fn large(files: usize, text: &str) -> String {
        let mut big = String::from(
            "instances:\n- name: blobstore\n  index: \"0\"\n  artifacts:\n  - name: blobs\n    checksums:\n",
        );
        for i in 0..files {
            big.push_str(&format!(
                "      ./blob/{i:08}: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
            ));
        }
        big.push_str(text);
        big
    }

    #[test]
    fn small_and_large_metadata_give_the_same_summary() {
        let small = summary(&format!("{INSTANCES}{TAIL}")).unwrap();
        assert!(small.complete());
        let codecs = small.bbr_agent.clone().unwrap();
        assert_eq!(codecs.compression.as_deref(), Some("zstd"));
        assert_eq!(
            codecs.recipients,
            [
                "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
                "age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg"
            ]
        );
        let text = large(20_000, TAIL);
        assert!(text.len() as u64 > PARSE_WHOLE);
        assert_eq!(summary(&text).unwrap(), small);
    }

    #[test]
    fn plain_and_incomplete_backups_read_as_such() {
        let s = summary("backup_activity:\n  start_time: 2026/11/26 10:02:03 UTC\n").unwrap();
        assert!(!s.complete());
        assert_eq!(s.bbr_agent, None);
        let s = summary(&large(20_000, "backup_activity:\n  start_time: x\n")).unwrap();
        assert!(!s.complete());
    }

    #[test]
    fn hostile_metadata_is_refused_with_a_reason_not_a_crash() {
        let bad = [
            ("backup_activity: [\n", "not valid YAML"),
            ("- a\n- b\n", "not BBR metadata"),
            ("instances: []\n", "not BBR metadata"),
            ("", "not BBR metadata"),
        ];
        for (text, why) in bad {
            let e = summary(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let e = read(1 << 40, std::io::empty()).unwrap_err();
        assert!(e.contains("more than the 1024 MiB read"), "{e}");
        let e = read(10, &[0xff, 0xfe, b'\n'][..]).unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
        // A large one: a kept section that never ends, a line without end, no sections.
        let long = format!("backup_activity:\n  start_time: {}\n", "x".repeat(1 << 20));
        let e = summary(&large(20_000, &long)).unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        let e = summary(&large(20_000, "")).unwrap_err();
        assert!(e.contains("not BBR metadata"), "{e}");
        let mut endless = String::from("backup_activity:\n");
        while endless.len() < (2 << 20) {
            endless.push_str("  start_time: again\n");
        }
        let e = summary(&endless).unwrap_err();
        assert!(e.contains("run past 64 KiB"), "{e}");
    }

    #[test]
    fn a_long_line_outside_the_kept_sections_is_skipped() {
        let text = large(
            1,
            &format!(
                "other: {}\nbackup_activity:\n  start_time: s\n  finish_time: f\n",
                "y".repeat(2 << 20)
            ),
        );
        assert!(summary(&text).unwrap().complete());
    }

    #[test]
    fn a_record_the_restore_would_refuse_makes_the_metadata_unreadable() {
        for record in [
            "bbr_agent:\n  format: 2\n",
            "bbr_agent:\n  format: 1\n  compression: lz4\n",
            "bbr_agent:\n  format: 1\n  encryption: age\n  recipients: [not-a-key]\n",
        ] {
            let text = format!("backup_activity:\n  start_time: a\n  finish_time: b\n{record}");
            let e = read(text.len() as u64, text.as_bytes()).unwrap_err();
            assert!(e.contains("bbr_agent record"), "{record}: {e}");
        }
    }
}
