//! Tar header fields read as GNU tar writes them, where the tar crate does not read them:
//! modification times before 1970 or past 2242 (GNU's signed base-256 numbers), and the
//! records that extend a header (GNU long names and long links, PAX records), each read with
//! a bound, so that a size in a hostile header can cost neither memory nor time.

use std::io::{self, Read};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest name or link target an entry may have, with its terminating NUL: Linux's
/// PATH_MAX, as GNU tar's own extraction could not create a longer one either.
pub const PATH_MAX: u64 = 4096;

/// The most bytes one PAX record set (an `x` or `g` entry) may hold: room for a path and a
/// link target of PATH_MAX each and the few other records GNU tar writes.
pub const PAX_MAX: u64 = 64 * 1024;

/// Seconds since the epoch from a 12-byte numeric field: octal (NUL- or space-terminated), or
/// base-256 as GNU tar writes it (first byte 0x80: the rest is a positive big-endian number;
/// 0xff: the whole field is a negative one in two's complement). `None` when the field is
/// empty, is not a number, or does not fit in an `i64`.
pub fn decode_time(field: &[u8; 12]) -> Option<i64> {
    match field[0] {
        0x80 | 0xff => {
            let negative = field[0] == 0xff;
            let mut value: i128 = if negative { -1 } else { 0 };
            for (i, b) in field.iter().enumerate() {
                let b = if i == 0 && !negative { 0 } else { *b };
                value = (value << 8) | i128::from(b);
            }
            i64::try_from(value).ok()
        }
        _ => {
            let text = std::str::from_utf8(field).ok()?;
            let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
            if text.is_empty() {
                return None;
            }
            i64::from_str_radix(text, 8).ok().filter(|t| *t >= 0)
        }
    }
}

/// A PAX `mtime` record's value (`-315619200`, `1700000000.123456789`): the whole seconds,
/// rounded down as GNU tar's extraction rounds them.
pub fn pax_time(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let has_fraction = fraction.bytes().any(|b| b != b'0');
    Some(if secs < 0 && has_fraction {
        secs.checked_sub(1)?
    } else {
        secs
    })
}

/// The time `secs` after (or, negative, before) the epoch; `None` past what the system can
/// hold.
pub fn system_time(secs: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

/// Why an extension record was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("its {what} is {size} bytes, more than the {limit} bytes allowed")]
    TooLong {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("cannot read its {what}: {source}")]
    Read {
        what: &'static str,
        source: io::Error,
    },
}

/// The data of an extension record whose header says `size`, read only when that is at most
/// `limit`: the size is checked before a byte is read or a buffer made.
pub fn read_record(
    input: &mut impl Read,
    size: u64,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, RecordError> {
    if size > limit {
        return Err(RecordError::TooLong { what, size, limit });
    }
    let mut data = Vec::with_capacity(size as usize);
    input
        .take(size)
        .read_to_end(&mut data)
        .map_err(|source| RecordError::Read { what, source })?;
    if (data.len() as u64) < size {
        return Err(RecordError::Read {
            what,
            source: io::ErrorKind::UnexpectedEof.into(),
        });
    }
    Ok(data)
}

/// A GNU long name or link record's text: its bytes up to the first NUL.
pub fn until_nul(mut data: Vec<u8>) -> Vec<u8> {
    if let Some(end) = data.iter().position(|b| *b == 0) {
        data.truncate(end);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(bytes: &[u8]) -> [u8; 12] {
        bytes.try_into().unwrap()
    }

    #[test]
    fn times_decode_as_gnu_tar_writes_them() {
        // What GNU tar 1.35 wrote for `touch -d 1960-01-01` and for a time in 2446.
        let old = field(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xed, 0x30, 0x08, 0x80,
        ]);
        assert_eq!(decode_time(&old), Some(-315_619_200));
        let future = field(&[0x80, 0, 0, 0, 0, 0, 0, 0x03, 0x7f, 0xff, 0xff, 0xff]);
        assert_eq!(decode_time(&future), Some(0x3_7fff_ffff));
        assert_eq!(decode_time(b"15303515523\0"), Some(0o15303515523));
        assert_eq!(decode_time(b"  1234567 \0\0"), Some(0o1234567));
        assert_eq!(decode_time(&[0; 12]), None, "absent");
        assert_eq!(decode_time(b"not a time!\0"), None);
        // Larger than an i64: not a time this system can give a file.
        assert_eq!(
            decode_time(&field(&[0x80, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            None
        );
    }

    /// The largest time the 12-byte octal field holds.
    const OCTAL_MAX: i64 = 0o77_777_777_777;

    /// `secs` as our tar writer puts it in a header's mtime field.
    fn encode_time(field: &mut [u8; 12], secs: i64) {
        *field = crate::artifact::gnu_header::mtime_field(secs);
    }

    #[test]
    fn times_our_writer_puts_in_a_header_come_back() {
        let mut f = [0u8; 12];
        encode_time(&mut f, -315_619_200);
        assert_eq!(
            f,
            [
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xed, 0x30, 0x08, 0x80
            ]
        );
        encode_time(&mut f, 1_600_000_000);
        assert_eq!(&f, b"13727410000\0");
        for t in [i64::MIN, -1, 0, 1, OCTAL_MAX, OCTAL_MAX + 1, i64::MAX] {
            encode_time(&mut f, t);
            assert_eq!(decode_time(&f), Some(t), "{t}");
        }
    }

    #[test]
    fn pax_times_round_down() {
        assert_eq!(pax_time(b"-315619200"), Some(-315_619_200));
        assert_eq!(pax_time(b"1700000000.75"), Some(1_700_000_000));
        assert_eq!(pax_time(b"-1.5"), Some(-2));
        assert_eq!(pax_time(b"x"), None);
    }

    #[test]
    fn times_before_the_epoch_and_far_ahead_are_system_times_or_none() {
        let t = system_time(-315_619_200).unwrap();
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::from_secs(315_619_200)
        );
        assert!(system_time(1 << 40).is_some());
    }

    #[test]
    fn a_record_larger_than_its_limit_is_refused_before_it_is_read() {
        struct Endless;
        impl Read for Endless {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("nothing may be read");
            }
        }
        let err = read_record(&mut Endless, 2 << 30, PATH_MAX, "GNU long name").unwrap_err();
        assert_eq!(
            err.to_string(),
            "its GNU long name is 2147483648 bytes, more than the 4096 bytes allowed"
        );
        let data = read_record(&mut &b"abc\0\0"[..], 5, PATH_MAX, "name").unwrap();
        assert_eq!(until_nul(data), b"abc");
        assert!(read_record(&mut &b"ab"[..], 5, PATH_MAX, "name").is_err());
    }
}
