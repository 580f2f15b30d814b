//! The release ships one statically linked binary (docs/release.md): `.cargo/config.toml`
//! builds for x86_64-unknown-linux-gnu with `+crt-static`, so nothing on a VM depends on the
//! stemcell's glibc. The binary cargo builds for these tests gets the same flags as
//! `cargo build --release`, so checking it checks the shipped build.
#![cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const AGENT: &str = env!("CARGO_BIN_EXE_bbr-agent");

/// What `program args...` prints on stdout and stderr together, whatever its exit status.
fn output_of(program: &str, args: &[&str], package: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `{program}` ({e}): install Debian's `{package}` package")
        });
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn file_says_statically_linked() {
    let out = output_of("file", &["-L", AGENT], "file");
    // `file` says "static-pie linked" for the position-independent static executables rustc
    // makes with +crt-static, "statically linked" for others.
    assert!(
        out.contains("static-pie linked") || out.contains("statically linked"),
        "not a static executable: {out}"
    );
    assert!(!out.contains("dynamically linked"), "{out}");
}

#[test]
fn ldd_finds_no_shared_library() {
    let out = output_of("ldd", &[AGENT], "libc-bin");
    // glibc's ldd prints "statically linked" for a static-pie executable and
    // "not a dynamic executable" for a non-PIE one; either way no "lib => path" line.
    assert!(
        out.contains("statically linked") || out.contains("not a dynamic executable"),
        "ldd lists dependencies: {out}"
    );
    assert!(!out.contains("=>"), "ldd lists dependencies: {out}");
}

/// The same fact without trusting any tool's wording: the ELF file names no program
/// interpreter (PT_INTERP, the dynamic loader), so the kernel runs it as it is.
#[test]
fn the_elf_asks_for_no_dynamic_loader() {
    const PT_INTERP: u32 = 3;
    let mut f = File::open(AGENT).unwrap();
    let mut header = [0u8; 64];
    f.read_exact(&mut header).unwrap();
    assert_eq!(&header[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(header[4], 2, "not a 64-bit ELF file");
    assert_eq!(header[5], 1, "not a little-endian ELF file");
    let phoff = u64::from_le_bytes(header[0x20..0x28].try_into().unwrap());
    let phentsize = u16::from_le_bytes(header[0x36..0x38].try_into().unwrap());
    let phnum = u16::from_le_bytes(header[0x38..0x3a].try_into().unwrap());
    assert!(phnum > 0, "no program headers");
    let mut types = Vec::new();
    for i in 0..u64::from(phnum) {
        f.seek(SeekFrom::Start(phoff + i * u64::from(phentsize)))
            .unwrap();
        let mut p_type = [0u8; 4];
        f.read_exact(&mut p_type).unwrap();
        types.push(u32::from_le_bytes(p_type));
    }
    assert!(
        !types.contains(&PT_INTERP),
        "the binary asks for a dynamic loader (PT_INTERP); program header types: {types:?}"
    );
}

/// A static glibc still looks users up through NSS: `passwd: files` is built into it, other
/// sources would be loaded from the VM's own glibc. The agent gives each script the HOME,
/// USER and LOGNAME of the user it runs as (as sudo does); check the static binary still
/// finds them.
#[test]
fn the_static_binary_runs_a_script_with_its_users_home() {
    let dir = tempfile::tempdir().unwrap();
    let bbr = dir.path().join("vm/var/vcap/jobs/probe/bin/bbr");
    fs::create_dir_all(&bbr).unwrap();
    let seen = dir.path().join("seen");
    let script = bbr.join("pre-backup-lock");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s:%s:%s' \"$USER\" \"$LOGNAME\" \"$HOME\" > '{}'\n",
            seen.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();

    let out = Command::new(AGENT)
        .arg("--root")
        .arg(dir.path().join("vm"))
        .args(["run", "pre-backup-lock"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bbr-agent run failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let uid = nix::unistd::geteuid().as_raw().to_string();
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let expected = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() >= 7 && fields[2] == uid)
        .map(|fields| format!("{0}:{0}:{1}", fields[0], fields[5]));
    if let Some(expected) = expected {
        assert_eq!(fs::read_to_string(&seen).unwrap(), expected);
    }
}
