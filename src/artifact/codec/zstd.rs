//! zstd, the compression of `--compress zstd[:LEVEL]`: the level's parsing, a streaming
//! compressor around any writer (the agent's tar stream on the VM, or the object on the
//! driver) and a streaming decompressor around any reader.
//!
//! The crate is `zstd` (libzstd, built from its C source by `cc` and linked statically, so the
//! agent stays one static binary): the pure-Rust `ruzstd` decodes everything but compresses
//! only at its fastest settings, not at the levels 1 to 19 the flag offers.

use std::io::{self, BufReader, Read, Write};

/// The levels `--compress zstd:LEVEL` takes: zstd's usual range, without the `--ultra` levels
/// whose windows would break the agent's memory bound.
pub const LEVELS: std::ops::RangeInclusive<i32> = 1..=19;
/// zstd's own default.
pub const DEFAULT_LEVEL: i32 = 3;
/// The largest window a decompressor accepts, as a power of two: 16 MiB. Level 19 needs
/// 8 MiB (2^23); a frame that asks for more was not written by us and is refused rather than
/// given the memory.
const WINDOW_LOG_MAX: u32 = 24;

/// `zstd` or `zstd:LEVEL`, as `--compress` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zstd {
    pub level: i32,
}

impl std::str::FromStr for Zstd {
    type Err = String;

    fn from_str(text: &str) -> Result<Zstd, String> {
        let level = match text.split_once(':') {
            None if text == "zstd" => DEFAULT_LEVEL,
            Some(("zstd", level)) => level
                .parse::<i32>()
                .ok()
                .filter(|l| LEVELS.contains(l))
                .ok_or_else(|| {
                    format!(
                        "`{text}`: the zstd level must be a number from {} to {}",
                        LEVELS.start(),
                        LEVELS.end()
                    )
                })?,
            _ => {
                return Err(format!(
                    "`{text}` is not a compression: give zstd or zstd:LEVEL (LEVEL {} to {}, default {DEFAULT_LEVEL})",
                    LEVELS.start(),
                    LEVELS.end()
                ));
            }
        };
        Ok(Zstd { level })
    }
}

/// A compressor writing into `out`; [`zstd::stream::write::Encoder::finish`] ends the frame
/// and gives `out` back. Its memory is the level's (a few MiB at the default), whatever the
/// stream's length.
pub fn compressor<W: Write>(
    out: W,
    level: i32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
    // Each frame says it is whole: a stream cut short is then an error, never a short tar.
    encoder.include_checksum(true)?;
    Ok(encoder)
}

/// A decompressor reading from `input`: one or more frames, to the end of `input`. A frame
/// cut short, a damaged one (its checksum) or one asking for a window over 16 MiB is an
/// error.
pub fn decompressor<R: Read>(
    input: R,
) -> io::Result<zstd::stream::read::Decoder<'static, BufReader<R>>> {
    let mut decoder = zstd::stream::read::Decoder::new(input)?;
    decoder.window_log_max(WINDOW_LOG_MAX)?;
    Ok(decoder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(data: &[u8], level: i32) -> Vec<u8> {
        let mut c = compressor(Vec::new(), level).unwrap();
        c.write_all(data).unwrap();
        c.finish().unwrap()
    }

    fn decompress(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decompressor(data)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn levels_parse_and_bad_ones_are_refused_naming_the_range() {
        assert_eq!("zstd".parse::<Zstd>(), Ok(Zstd { level: 3 }));
        assert_eq!("zstd:19".parse::<Zstd>(), Ok(Zstd { level: 19 }));
        for bad in ["zstd:0", "zstd:20", "zstd:-1", "zstd:x", "zstd:"] {
            let e = bad.parse::<Zstd>().unwrap_err();
            assert!(e.contains("from 1 to 19"), "{bad}: {e}");
        }
        assert!(
            "gzip"
                .parse::<Zstd>()
                .unwrap_err()
                .contains("give zstd or zstd:LEVEL")
        );
    }

    #[test]
    fn a_stream_round_trips_and_a_cut_or_flipped_one_is_an_error() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let packed = compress(&data, 3);
        assert!(packed.len() < data.len() / 4, "{}", packed.len());
        assert_eq!(decompress(&packed).unwrap(), data);
        // Cut short anywhere: an error, never a shorter stream.
        for cut in [packed.len() - 1, packed.len() / 2, 10] {
            assert!(decompress(&packed[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = packed.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 0x40;
        assert!(decompress(&flipped).is_err());
    }

    #[test]
    fn a_frame_asking_for_a_huge_window_is_refused() {
        let mut c = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        c.long_distance_matching(true).unwrap();
        c.window_log(27).unwrap();
        c.write_all(&vec![1u8; 1 << 20]).unwrap();
        let packed = c.finish().unwrap();
        assert!(decompress(&packed).is_err());
    }
}
