//! Raw syscall results as io::Result, for src/seal.rs and src/seal/adopt.rs (a module of its
//! own so that the two share it without importing each other).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

pub(super) fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `fd` as an OwnedFd, from a syscall that returned a new descriptor.
pub(super) fn owned(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check(ret)?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// The address mmap or mremap returned, or the error they set.
pub(super) fn check_ptr(p: *mut libc::c_void) -> io::Result<*mut libc::c_void> {
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p)
    }
}
