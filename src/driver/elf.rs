//! Whether a file is an agent the driver may bring to a VM: a 64-bit little-endian x86_64 ELF
//! executable that names no program interpreter (no `PT_INTERP`), so the kernel runs it as it
//! is and nothing depends on the stemcell's shared libraries. Only the header and the program
//! headers are read, each bounded.

/// Why a file is not a static Linux x86_64 executable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotStatic {
    #[error("it is not an ELF executable")]
    NotElf,
    #[error("it is not a 64-bit little-endian ELF file")]
    NotElf64,
    #[error("it is built for machine {0}, not x86_64")]
    Machine(u16),
    #[error("it is an ELF file of type {0}, not an executable")]
    NotExecutable(u16),
    #[error("its program headers are cut short or out of bounds")]
    Truncated,
    #[error(
        "it is dynamically linked (it asks for the loader {0}), so it would run on the VM's shared libraries, which are not ours to choose"
    )]
    Dynamic(String),
}

const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_INTERP: u32 = 3;
const PHENT_MIN: usize = 56;
/// More program headers than any linker writes for one binary.
const PHNUM_MAX: usize = 512;
const INTERP_SHOWN: usize = 200;

/// Checks `file` (the executable's bytes) as described in the module comment.
pub fn check(file: &[u8]) -> Result<(), NotStatic> {
    if file.len() < 64 || &file[..4] != b"\x7fELF" {
        return Err(NotStatic::NotElf);
    }
    // EI_CLASS 2: 64-bit; EI_DATA 1: little-endian.
    if file[4] != 2 || file[5] != 1 {
        return Err(NotStatic::NotElf64);
    }
    let u16_at = |at: usize| u16::from_le_bytes([file[at], file[at + 1]]);
    let kind = u16_at(16);
    if kind != ET_EXEC && kind != ET_DYN {
        return Err(NotStatic::NotExecutable(kind));
    }
    let machine = u16_at(18);
    if machine != EM_X86_64 {
        return Err(NotStatic::Machine(machine));
    }
    let phoff = read_u64(file, 32).ok_or(NotStatic::Truncated)?;
    let phentsize = usize::from(u16_at(54));
    let phnum = usize::from(u16_at(56));
    if phentsize < PHENT_MIN || phnum > PHNUM_MAX {
        return Err(NotStatic::Truncated);
    }
    let phoff = usize::try_from(phoff).map_err(|_| NotStatic::Truncated)?;
    for n in 0..phnum {
        let at = n
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .ok_or(NotStatic::Truncated)?;
        let header = at
            .checked_add(phentsize)
            .and_then(|end| file.get(at..end))
            .ok_or(NotStatic::Truncated)?;
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if kind == PT_INTERP {
            let interp = interpreter(file, header).unwrap_or_else(|| "(unreadable)".into());
            return Err(NotStatic::Dynamic(interp));
        }
    }
    Ok(())
}

/// The loader a `PT_INTERP` header names, as text.
fn interpreter(file: &[u8], header: &[u8]) -> Option<String> {
    let offset = usize::try_from(read_u64(header, 8)?).ok()?;
    let size = usize::try_from(read_u64(header, 32)?).ok()?;
    let bytes = file.get(offset..offset.checked_add(size)?)?;
    let bytes = bytes.split(|&b| b == 0).next().unwrap_or_default();
    let shown = &bytes[..bytes.len().min(INTERP_SHOWN)];
    Some(String::from_utf8_lossy(shown).into_owned())
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_static_and_a_system_tool_is_not() {
        // The test binaries get the same +crt-static flags as the agent.
        let own = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(check(&own), Ok(()));
        let tool = std::fs::read("/bin/true").unwrap();
        match check(&tool) {
            Err(NotStatic::Dynamic(interp)) => assert!(interp.contains("ld-linux"), "{interp}"),
            other => panic!("/bin/true: {other:?}"),
        }
    }

    #[test]
    fn hostile_headers_are_refused_without_panicking() {
        assert_eq!(check(b"#!/bin/sh\necho hi\n"), Err(NotStatic::NotElf));
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2;
        header[5] = 1;
        header[16] = 2;
        header[18] = 62;
        // Program headers far past the end of the file.
        header[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        header[54] = 56;
        header[56] = 1;
        assert_eq!(check(&header), Err(NotStatic::Truncated));
        header[18] = 183; // aarch64
        assert_eq!(check(&header), Err(NotStatic::Machine(183)));
        header[4] = 1;
        assert_eq!(check(&header), Err(NotStatic::NotElf64));
    }
}
