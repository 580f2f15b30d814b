//! The user and group names a tar header gives an owner, as GNU tar finds them: the name of
//! the uid in `/etc/passwd` and of the gid in `/etc/group`, empty when there is none. Read from
//! the files themselves: the binary is static, and glibc's NSS would load the VM's own
//! (possibly other-version) modules (see `exec::run`).

use std::collections::HashMap;

/// Names by id, read once per artifact.
#[derive(Debug, Default)]
pub struct OwnerNames {
    users: HashMap<u64, Vec<u8>>,
    groups: HashMap<u64, Vec<u8>>,
}

impl OwnerNames {
    /// The system's names; none when a file cannot be read (every name is then empty).
    pub fn load() -> OwnerNames {
        let read = |path| std::fs::read(path).unwrap_or_default();
        OwnerNames {
            users: by_id(&read("/etc/passwd")),
            groups: by_id(&read("/etc/group")),
        }
    }

    pub fn user(&self, uid: u64) -> &[u8] {
        self.users.get(&uid).map_or(&[], Vec::as_slice)
    }

    pub fn group(&self, gid: u64) -> &[u8] {
        self.groups.get(&gid).map_or(&[], Vec::as_slice)
    }
}

/// `name:password:id:...` lines by id; the first line of an id wins, as `getpwuid` finds it.
fn by_id(text: &[u8]) -> HashMap<u64, Vec<u8>> {
    let mut names = HashMap::new();
    for line in text.split(|&b| b == b'\n') {
        let mut fields = line.split(|&b| b == b':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let id = std::str::from_utf8(id).ok().and_then(|s| s.parse().ok());
        if let Some(id) = id
            && !name.is_empty()
            && !name.starts_with(b"#")
        {
            names.entry(id).or_insert_with(|| name.to_vec());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_name_of_an_id_wins_and_junk_is_skipped() {
        let names = by_id(b"root:x:0:0:root:/root:/bin/bash\ntoor:x:0:0::/:/bin/sh\n\n# c\nbad\nx:y:z\nvcap:x:1000:1000::/home/vcap:/bin/bash");
        assert_eq!(names[&0], b"root");
        assert_eq!(names[&1000], b"vcap");
        assert_eq!(names.len(), 2);
        let owners = OwnerNames {
            users: names,
            groups: HashMap::new(),
        };
        assert_eq!(owners.user(4_000_000), b"");
        assert_eq!(owners.group(0), b"");
    }
}
