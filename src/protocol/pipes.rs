//! The byte streams under the protocol: raw file descriptors, and pipes enlarged to the size
//! of a data chunk, so a 1 MiB chunk crosses in one write instead of sixteen.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use super::framing::MAX_CHUNK;

/// Asks the kernel for a pipe as large as one data chunk. Not a pipe (a socket, a file), or
/// over the system's limit for unprivileged users: left as it is.
pub fn enlarge(fd: impl AsFd) {
    let _ = nix::fcntl::fcntl(
        fd.as_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(MAX_CHUNK as i32),
    );
}

/// This process's stdin and stdout as plain files: `std::io::stdout()` is line-buffered,
/// which would search every binary chunk for newlines.
pub fn raw_stdio() -> io::Result<(File, File)> {
    let input: OwnedFd = io::stdin().as_fd().try_clone_to_owned()?;
    let output: OwnedFd = io::stdout().as_fd().try_clone_to_owned()?;
    enlarge(&input);
    enlarge(&output);
    Ok((File::from(input), File::from(output)))
}
