//! Tar headers byte for byte as GNU tar (1.34, its default `gnu` format) writes them for
//! `tar -C DIR -c .`, the command BBR makes its artifacts with: the permission bits alone in
//! the mode, numbers in zero-padded octal ending in NUL (base-256 when they do not fit, and
//! for times before 1970), magic `ustar  \0`, the owner's names, the checksum as six octal
//! digits, NUL and space, and a `././@LongLink` record before a header whose link target
//! (`K`) or name (`L`) does not fit its 100-byte field.

/// A tar block.
pub const BLOCK: usize = 512;
/// GNU tar's default record (blocking factor 20): an archive ends with zeros to a whole one.
pub const RECORD: usize = 20 * BLOCK;

/// The entry types the agent writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    Symlink,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::Regular => b'0',
            Kind::Directory => b'5',
            Kind::Symlink => b'2',
        }
    }
}

/// What one header says; names and owner names are bytes, as the filesystem has them.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    pub name: &'a [u8],
    pub kind: Kind,
    /// Permission bits, set-id and sticky bits included; no file-type bits.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// Seconds since the epoch; negative before 1970.
    pub mtime: i64,
    pub link: &'a [u8],
    pub uname: &'a [u8],
    pub gname: &'a [u8],
}

/// The owner names GNU tar gives its `././@LongLink` records: those of uid 0 and gid 0.
#[derive(Debug, Clone, Copy)]
pub struct RootNames<'a> {
    pub uname: &'a [u8],
    pub gname: &'a [u8],
}

// Offsets and lengths of the fields of a GNU header.
const NAME: (usize, usize) = (0, 100);
const MODE: (usize, usize) = (100, 8);
const UID: (usize, usize) = (108, 8);
const GID: (usize, usize) = (116, 8);
const SIZE: (usize, usize) = (124, 12);
const MTIME: (usize, usize) = (136, 12);
const CHKSUM: (usize, usize) = (148, 8);
const TYPEFLAG: usize = 156;
const LINKNAME: (usize, usize) = (157, 100);
const MAGIC: (usize, usize) = (257, 8);
const UNAME: (usize, usize) = (265, 32);
const GNAME: (usize, usize) = (297, 32);

/// Appends the blocks that open an entry to `out`: long-link and long-name records when
/// needed, then its header. The entry's data, if any, follows them.
pub fn write_entry(out: &mut Vec<u8>, fields: &Fields<'_>, root: RootNames<'_>) {
    if fields.link.len() > LINKNAME.1 {
        long_record(out, b'K', fields.link, root);
    }
    if fields.name.len() > NAME.1 {
        long_record(out, b'L', fields.name, root);
    }
    out.extend_from_slice(&header(fields));
}

/// The bytes [`write_entry`] and the entry's data take in the archive: an entry named `name`
/// linking to `link` (empty for none), with `size` bytes of data, padded to whole blocks.
pub fn entry_len(name: usize, link: usize, size: u64) -> u64 {
    let block = BLOCK as u64;
    let long = |len: usize, limit: usize| match len > limit {
        true => block + (len as u64 + 1).div_ceil(block) * block,
        false => 0,
    };
    long(link, LINKNAME.1) + long(name, NAME.1) + block + size.div_ceil(block) * block
}

/// The zeros that end an archive of `written` bytes: two zero blocks, then up to the record.
pub fn end_of_archive(written: u64) -> usize {
    let record = RECORD as u64;
    let end = written + 2 * BLOCK as u64;
    (end.div_ceil(record) * record - written) as usize
}

/// A `././@LongLink` record holding `value` (NUL-terminated), as GNU tar writes it.
fn long_record(out: &mut Vec<u8>, flag: u8, value: &[u8], root: RootNames<'_>) {
    let size = value.len() as u64 + 1;
    let mut block = blank();
    put(&mut block, NAME, b"././@LongLink");
    number(&mut block, MODE, 0o644);
    number(&mut block, UID, 0);
    number(&mut block, GID, 0);
    number(&mut block, SIZE, size as i64);
    number(&mut block, MTIME, 0);
    block[TYPEFLAG] = flag;
    put(&mut block, UNAME, root.uname);
    put(&mut block, GNAME, root.gname);
    checksum(&mut block);
    out.extend_from_slice(&block);
    out.extend_from_slice(value);
    let padded = (size as usize).div_ceil(BLOCK) * BLOCK;
    out.resize(out.len() + padded - value.len(), 0);
}

fn header(f: &Fields<'_>) -> [u8; BLOCK] {
    let mut block = blank();
    // A name or link that does not fit keeps its first 100 bytes here, as GNU tar's does.
    put(&mut block, NAME, f.name);
    number(&mut block, MODE, i64::from(f.mode & 0o7777));
    number(&mut block, UID, f.uid as i64);
    number(&mut block, GID, f.gid as i64);
    number(&mut block, SIZE, f.size as i64);
    number(&mut block, MTIME, f.mtime);
    block[TYPEFLAG] = f.kind.flag();
    put(&mut block, LINKNAME, f.link);
    put(&mut block, UNAME, f.uname);
    put(&mut block, GNAME, f.gname);
    checksum(&mut block);
    block
}

/// A zeroed block with GNU's magic and version.
fn blank() -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    put(&mut block, MAGIC, b"ustar  \0");
    block
}

/// Copies as much of `value` as fits the field; the rest of the field stays NUL.
fn put(block: &mut [u8; BLOCK], (at, len): (usize, usize), value: &[u8]) {
    let n = value.len().min(len);
    block[at..at + n].copy_from_slice(&value[..n]);
}

/// A number as GNU tar writes it: octal digits filling the field but its last byte (a NUL)
/// when the value is positive and fits, else base-256: big-endian two's complement over the
/// whole field with the top bit set (a negative value's leading bytes are 0xff).
/// `secs` as a header's mtime field holds it (for the reader's tests: one writer of times).
#[cfg(test)]
pub(super) fn mtime_field(secs: i64) -> [u8; 12] {
    let mut block = [0u8; BLOCK];
    number(&mut block, MTIME, secs);
    let (at, len) = MTIME;
    block[at..at + len].try_into().expect("12 bytes")
}

fn number(block: &mut [u8; BLOCK], (at, len): (usize, usize), value: i64) {
    let field = &mut block[at..at + len];
    let digits = len - 1;
    if value >= 0 && (value as u64) < 1u64 << (3 * digits) {
        let text = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(text.as_bytes());
        field[digits] = 0;
    } else {
        let bytes = i128::from(value).to_be_bytes();
        field.copy_from_slice(&bytes[bytes.len() - len..]);
        field[0] |= 0x80;
    }
}

/// The header's checksum: the sum of its bytes with the checksum field as spaces, written as
/// six octal digits, a NUL and a space.
fn checksum(block: &mut [u8; BLOCK]) {
    let (at, len) = CHKSUM;
    block[at..at + len].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}");
    block[at..at + 6].copy_from_slice(text.as_bytes());
    block[at + 6] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(block: &[u8], (at, len): (usize, usize)) -> &[u8] {
        &block[at..at + len]
    }

    #[test]
    fn numbers_are_octal_when_they_fit_and_base_256_otherwise() {
        let mut b = blank();
        number(&mut b, MODE, 0o644);
        assert_eq!(field(&b, MODE), b"0000644\0");
        number(&mut b, UID, 0o7777777);
        assert_eq!(field(&b, UID), b"7777777\0");
        // As GNU tar writes uid 4,000,000 and a time in 1960.
        number(&mut b, UID, 4_000_000);
        assert_eq!(field(&b, UID), b"\x80\0\0\0\0=\t\0");
        number(&mut b, MTIME, -315_619_200);
        assert_eq!(
            field(&b, MTIME),
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xed\x30\x08\x80"
        );
        number(&mut b, SIZE, 8 << 30);
        assert_eq!(field(&b, SIZE), b"\x80\0\0\0\0\0\0\x02\0\0\0\0");
    }

    #[test]
    fn the_checksum_is_six_digits_nul_space() {
        let mut out = Vec::new();
        let f = Fields {
            name: b"./",
            kind: Kind::Directory,
            mode: 0o40755,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0o15303515305,
            link: b"",
            uname: b"root",
            gname: b"root",
        };
        write_entry(
            &mut out,
            &f,
            RootNames {
                uname: b"root",
                gname: b"root",
            },
        );
        assert_eq!(out.len(), BLOCK);
        assert_eq!(field(&out, MODE), b"0000755\0", "no file-type bits");
        // What GNU tar 1.34 wrote for this directory.
        assert_eq!(field(&out, CHKSUM), b"007711\0 ");
    }

    #[test]
    fn a_long_link_and_name_come_before_the_header_in_gnu_tars_order() {
        let (name, link) = (vec![b'n'; 150], vec![b'l'; 600]);
        let mut out = Vec::new();
        let f = Fields {
            name: &name,
            kind: Kind::Symlink,
            mode: 0o777,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link: &link,
            uname: b"",
            gname: b"",
        };
        write_entry(
            &mut out,
            &f,
            RootNames {
                uname: b"root",
                gname: b"root",
            },
        );
        // K header + 2 blocks of target, L header + 1 block of name, the header.
        assert_eq!(out.len(), 6 * BLOCK);
        assert_eq!(out[TYPEFLAG], b'K');
        assert_eq!(field(&out, SIZE), b"00000001131\0");
        assert_eq!(&out[BLOCK..BLOCK + 601], &[&link[..], b"\0"].concat()[..]);
        assert_eq!(out[3 * BLOCK + TYPEFLAG], b'L');
        let header = &out[5 * BLOCK..];
        assert_eq!(field(header, NAME), &name[..100]);
        assert_eq!(field(header, LINKNAME), &link[..100]);
    }

    #[test]
    fn an_archive_ends_on_a_whole_record() {
        assert_eq!(end_of_archive(512), RECORD - 512);
        assert_eq!(end_of_archive(RECORD as u64 - 1024), 1024);
        assert_eq!(end_of_archive(RECORD as u64 - 1000), 1000 + RECORD);
    }
}
