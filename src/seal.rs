//! Keeps the nvbind binary out of a container's reach (the runc CVE-2019-5736 class).
//!
//! libcontainer starts the container's init and every exec'd process as clones of this
//! process, so until they execve the user's program (and for the whole `created` state) their
//! /proc/PID/exe is the file nvbind runs from. A process in the container could open that link,
//! wait for nvbind to exit, reopen it for writing and replace the host binary that root runs
//! next. So the verbs that put processes into a container first re-exec nvbind from a copy that
//! cannot be written through any path:
//!
//! 1. an overlayfs made with fsopen/fsmount over the binary's directory, lower layers only (no
//!    upper layer: the superblock itself is read-only), mounted read-only and never attached
//!    anywhere. Zero copy, a few syscalls; needs CAP_SYS_ADMIN (what runc 1.2 does first);
//! 2. else a memfd holding a copy of the binary, sealed against writes, growing and shrinking
//!    (runc's and youki's fallback; costs a copy of the binary per invocation);
//! 3. else (vm.memfd_noexec=2) an unlinked O_TMPFILE copy in the state root, reachable through
//!    no name and held by no writable descriptor: writing it could only change a copy that no
//!    one executes again (runc's last resort).
//!
//! The re-exec'd process recognises that it runs from such a copy and goes on; an environment
//! marker stops a second re-exec if the kernel did not give us what we expected.
//!
//! A re-exec is a second start of the binary (about 1.3 ms of CPU and 200-260 page faults,
//! bench/analysis.md). With the overlayfs copy it is usually not paid: nvbind (CAP_SYS_ADMIN),
//! before any thread starts, replaces every mapping of the installed file with the same bytes
//! from the copy and points /proc/self/exe at the copy (PR_SET_MM_MAP, src/seal/adopt.rs), so
//! the clones that become the container run from the copy as after a re-exec. Elsewhere
//! (rootless, a memfd or O_TMPFILE copy, a refused step) the re-exec remains. Nothing at all
//! is paid when the installed file already cannot be written through its /proc/PID/exe link: a
//! binary on a read-only mount (a read-only /usr, or `mount --bind -o ro` of its directory) run
//! by root in the initial user namespace. Writing through the link then fails with EROFS
//! whatever the caller's capabilities, and making that mount writable again takes
//! CAP_SYS_ADMIN over the host's mount namespace, which a container holding can mount the
//! host's disks anyway.

use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

mod adopt;
mod sys;

use sys::{check, owned};

/// Set by nvbind on its own re-exec; its presence with an unsealed binary means the re-exec
/// did not take effect, and going round again would loop.
const REEXEC_MARKER: &str = "_NVBIND_SEALED";

/// Debugging switch: `NVBIND_UNSAFE_NO_SEAL=1` runs straight from the installed binary. It
/// only turns a protection off for the invocation whose environment carries it; whoever sets
/// nvbind's environment already runs nvbind as root with arguments of their choosing, and
/// nothing in a container can reach that environment. tests/escape.rs uses it for its control.
pub const DISABLE_VAR: &str = "NVBIND_UNSAFE_NO_SEAL";

const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const BASE_SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot open /proc/self/exe to protect the nvbind binary from the container")]
    OpenExe(#[source] io::Error),
    #[error(
        "cannot make a sealed copy of the nvbind binary (overlayfs: {overlay}; memfd: {memfd}; \
         O_TMPFILE in the state root: {tmpfile}); the container could otherwise overwrite it \
         through /proc/PID/exe"
    )]
    NoCopy {
        overlay: io::Error,
        memfd: io::Error,
        tmpfile: io::Error,
    },
    #[error(
        "nvbind re-executed itself from a sealed copy but /proc/self/exe is still not sealed; \
         unset {REEXEC_MARKER} if it was set by hand"
    )]
    StillUnsealed,
    #[error("cannot re-execute nvbind from its sealed copy")]
    Exec(#[source] io::Error),
    #[error("cannot list the descriptors nvbind inherited (/proc/self/fd)")]
    ListFds(#[source] io::Error),
}

/// What protects the running binary, when nvbind goes on without re-executing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// The installed binary is on a read-only mount: nothing to copy, no re-exec.
    ReadOnlyMount,
    Overlay,
    /// The overlayfs copy made this process's executable in place, without a re-exec
    /// (src/seal/adopt.rs).
    Adopted,
    Memfd,
    /// An unlinked copy, recognised by the re-exec marker and a link count of 0.
    Tmpfile,
    /// NVBIND_UNSAFE_NO_SEAL=1: not protected.
    Disabled,
}

/// Returns once nvbind runs from a sealed copy; otherwise makes one and re-executes into it
/// (same arguments, same environment), so on success the first call never returns.
/// `scratch_dir` is an existing directory that does not contain the binary (the state root):
/// overlayfs needs a second, empty-enough lower layer to be read-only.
pub fn ensure_sealed(scratch_dir: &Path) -> Result<Sealed, SealError> {
    let exe = File::open("/proc/self/exe").map_err(SealError::OpenExe)?;
    if std::env::var_os(REEXEC_MARKER).is_some() {
        // Not for the container's hooks or CRIU: the marker has done its job. A marker set by
        // hand only skips a protection, as NVBIND_UNSAFE_NO_SEAL=1 does.
        std::env::remove_var(REEXEC_MARKER);
        return match sealed_kind(&exe) {
            Some(how) => Ok(how),
            None if exe.metadata().is_ok_and(|m| m.nlink() == 0) => Ok(Sealed::Tmpfile),
            None => Err(SealError::StillUnsealed),
        };
    }
    // Without the marker only a sealed memfd is trusted: its seals say all there is to know.
    // A read-only overlayfs that we did not make may have an upper layer, and a process with
    // CAP_SYS_ADMIN could clone its mount and clear the read-only flag.
    if sealed_kind(&exe) == Some(Sealed::Memfd) {
        return Ok(Sealed::Memfd);
    }
    if std::env::var_os(DISABLE_VAR).is_some_and(|v| v == "1") {
        return Ok(Sealed::Disabled);
    }
    if read_only_install(&exe) {
        return Ok(Sealed::ReadOnlyMount);
    }
    let copy = match overlay_copy(&exe, scratch_dir) {
        Ok(fd) => {
            let fd = File::from(fd);
            match adopt::adopt(&fd, &exe) {
                Ok(()) => return Ok(Sealed::Adopted),
                // No CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE), a kernel without
                // CONFIG_CHECKPOINT_RESTORE, or a thread running: the re-exec below protects
                // just as well, at a second start's cost.
                Err(e) => tracing::debug!("sealed copy not adopted in place ({e}); re-executing"),
            }
            OwnedFd::from(fd)
        }
        Err(overlay) => match memfd_copy(&exe) {
            Ok(fd) => fd,
            Err(memfd) => tmpfile_copy(&exe, scratch_dir).map_err(|tmpfile| SealError::NoCopy {
                overlay,
                memfd,
                tmpfile,
            })?,
        },
    };
    drop(exe);
    Err(SealError::Exec(reexec(&copy)))
}

/// Which protection `ensure_sealed` would give this binary, found by making the copy and
/// dropping it (for `nvbind doctor`): the same order, overlayfs, memfd, O_TMPFILE.
pub fn probe(scratch_dir: &Path) -> Result<Sealed, SealError> {
    if std::env::var_os(DISABLE_VAR).is_some_and(|v| v == "1") {
        return Ok(Sealed::Disabled);
    }
    let exe = File::open("/proc/self/exe").map_err(SealError::OpenExe)?;
    if read_only_install(&exe) {
        return Ok(Sealed::ReadOnlyMount);
    }
    let overlay = match overlay_copy(&exe, scratch_dir) {
        Ok(_) => return Ok(Sealed::Overlay),
        Err(e) => e,
    };
    let memfd = match memfd_copy(&exe) {
        Ok(_) => return Ok(Sealed::Memfd),
        Err(e) => e,
    };
    tmpfile_copy(&exe, scratch_dir)
        .map(|_| Sealed::Tmpfile)
        .map_err(|tmpfile| SealError::NoCopy {
            overlay,
            memfd,
            tmpfile,
        })
}

/// How the file behind `exe` is protected from writes, if it is.
fn sealed_kind(exe: &File) -> Option<Sealed> {
    let fd = exe.as_raw_fd();
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the buffer on success; it is read only then.
    if unsafe { libc::fstatfs(fd, st.as_mut_ptr()) } == 0
        // SAFETY: initialised by the successful call above.
        && unsafe { st.assume_init() }.f_type == libc::OVERLAYFS_SUPER_MAGIC
        && on_read_only_mount(exe)
    {
        return Some(Sealed::Overlay);
    }
    // SAFETY: F_GET_SEALS takes no argument; on a file that is not a memfd it fails (EINVAL).
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    (seals >= 0 && seals & BASE_SEALS == BASE_SEALS).then_some(Sealed::Memfd)
}

/// A binary that its /proc/PID/exe link cannot be used to rewrite, with no copy: on a
/// read-only mount, and this process is in the initial user namespace (see the module's doc).
fn read_only_install(exe: &File) -> bool {
    on_read_only_mount(exe) && in_initial_user_ns()
}

/// Whether `f` is on a mount (or a filesystem) that refuses every write: opening it for
/// writing through any of its links fails with EROFS.
fn on_read_only_mount(f: &File) -> bool {
    let mut vfs = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs fills the buffer on success; it is read only then.
    if unsafe { libc::fstatvfs(f.as_raw_fd(), vfs.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: initialised by the successful call above.
    unsafe { vfs.assume_init() }.f_flag & libc::ST_RDONLY != 0
}

/// Whether this process is in the initial user namespace (uid_map maps all of it 1:1). In a
/// user namespace of its own (rootless nvbind), a read-only mount may belong to a mount
/// namespace that the same user, and so its containers, may make writable again.
fn in_initial_user_ns() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| is_initial_uid_map(&m))
}

fn is_initial_uid_map(map: &str) -> bool {
    let mut lines = map.lines();
    let first = lines
        .next()
        .map(|l| l.split_whitespace().collect::<Vec<_>>());
    lines.next().is_none() && first.as_deref() == Some(&["0", "0", "4294967295"][..])
}

/// overlayfs' lowerdir syntax: ':' separates layers, '\' escapes.
fn escape_lowerdir(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        if b == b':' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// A read-only descriptor of the binary as seen through a detached, read-only overlayfs whose
/// layers are the binary's directory and `scratch_dir`. Nothing can write through it: the
/// mount has no upper layer, it is read-only, and it is attached nowhere to be remounted.
fn overlay_copy(exe: &File, scratch_dir: &Path) -> io::Result<OwnedFd> {
    // SAFETY: fsopen with a NUL-terminated name; returns a new descriptor or -1.
    let ctx =
        owned(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) })?;
    let path = std::fs::read_link(format!("/proc/self/fd/{}", exe.as_raw_fd()))?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::other(format!(
            "odd binary path {}",
            path.display()
        )));
    };
    let mut lower = escape_lowerdir(dir.as_os_str().as_bytes());
    lower.push(b':');
    lower.extend(escape_lowerdir(scratch_dir.as_os_str().as_bytes()));
    let lower = CString::new(lower).map_err(io::Error::other)?;
    let set = |key: &CStr, value: &CStr| {
        // SAFETY: fsconfig on our context with NUL-terminated key and value.
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                ctx.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        })
    };
    set(c"lowerdir", &lower)?;
    // Layers on different filesystems would turn xino on, which only logs to dmesg here.
    let _ = set(c"xino", c"off");
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount of a created context; returns a new descriptor or -1.
    let mnt = owned(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            ctx.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
    })?;
    let name = CString::new(name.as_bytes()).map_err(io::Error::other)?;
    // SAFETY: openat relative to the mount's root with a NUL-terminated name.
    owned(unsafe {
        libc::openat(
            mnt.as_raw_fd(),
            name.as_ptr(),
            // Readable, not O_PATH: `adopt` maps it, and the kernel takes no O_PATH exe_fd.
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    } as libc::c_long)
}

/// A memfd holding a copy of the binary, sealed so that it can never change again.
fn memfd_copy(exe: &File) -> io::Result<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3) keeps vm.memfd_noexec=1 from refusing the exec; older kernels
    // reject the flag, and there memfds are always executable.
    // SAFETY: memfd_create with a NUL-terminated name.
    let mut fd = unsafe { libc::memfd_create(c"nvbind".as_ptr(), flags | libc::MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(c"nvbind".as_ptr(), flags) };
    }
    let memfd = owned(fd as libc::c_long)?;
    let mut dst = File::from(memfd);
    copy_all(exe, &mut dst)?;
    let fd = dst.as_raw_fd();
    // Newer seals first (they are best effort); the base seals include F_SEAL_SEAL.
    for seal in [libc::F_SEAL_FUTURE_WRITE, libc::F_SEAL_EXEC] {
        // SAFETY: fcntl on our own descriptor.
        let _ = unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seal) };
    }
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, BASE_SEALS) } as libc::c_long)?;
    Ok(OwnedFd::from(dst))
}

/// Copies all of `exe` into `dst`, in the kernel (std uses copy_file_range/sendfile).
fn copy_all(exe: &File, dst: &mut File) -> io::Result<()> {
    let mut src = exe;
    let copied = io::copy(&mut src, dst)?;
    let size = exe.metadata()?.len();
    if copied != size {
        return Err(io::Error::other(format!("copied {copied} of {size} bytes")));
    }
    Ok(())
}

/// An O_PATH descriptor of an unlinked copy of the binary in `dir`; the writable descriptor
/// used to fill it is closed, so it can be executed.
fn tmpfile_copy(exe: &File, dir: &Path) -> io::Result<OwnedFd> {
    let mut tmp = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o700)
        .custom_flags(libc::O_TMPFILE | libc::O_EXCL | libc::O_CLOEXEC)
        .open(dir)?;
    copy_all(exe, &mut tmp)?;
    tmp.set_permissions(std::fs::Permissions::from_mode(0o511))?;
    let path = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", tmp.as_raw_fd()))?;
    Ok(path.into())
}

/// execveat(copy, "", argv, envp + marker, AT_EMPTY_PATH); returns only on failure.
fn reexec(copy: &OwnedFd) -> io::Error {
    let cstrings = |v: Vec<OsString>| -> Vec<CString> {
        v.into_iter()
            // An argument or variable cannot hold a NUL: the kernel handed them to us.
            .filter_map(|s| CString::new(s.into_vec()).ok())
            .collect()
    };
    let args = cstrings(std::env::args_os().collect());
    let mut env: Vec<OsString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            kv
        })
        .collect();
    env.push(format!("{REEXEC_MARKER}=1").into());
    let env = cstrings(env);
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (argv, envp) = (ptrs(&args), ptrs(&env));
    // SAFETY: NULL-terminated arrays of pointers into `args` and `env`, alive for the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            copy.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

/// Closes the descriptors nvbind inherited beyond stdio, the `--preserve-fds` ones and
/// `LISTEN_FDS` (the ones libcontainer hands to the container). libcontainer marks the rest
/// close-on-exec in the container's process, but until that process execs (the whole
/// `created` state) it holds them, and a process allowed to ptrace it (CAP_SYS_PTRACE in a
/// shared PID namespace) could walk /proc/PID/fd/N into a host directory. Everything nvbind
/// opens itself is close-on-exec, so a descriptor without the flag was inherited. Returns how
/// many were closed.
pub fn close_inherited_fds(preserve_fds: i32) -> Result<usize, SealError> {
    let listen = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    let first = 3 + preserve_fds.max(0) + listen.max(0);
    let mut inherited = Vec::new();
    // The directory's own descriptor is close-on-exec and so never in the list.
    for entry in std::fs::read_dir("/proc/self/fd").map_err(SealError::ListFds)? {
        let Ok(fd) = entry
            .map_err(SealError::ListFds)?
            .file_name()
            .to_string_lossy()
            .parse::<libc::c_int>()
        else {
            continue;
        };
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if fd >= first && flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            inherited.push(fd);
        }
    }
    for &fd in &inherited {
        // SAFETY: nothing in this process owns an inherited descriptor.
        unsafe { libc::close(fd) };
    }
    Ok(inherited.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn proc_path(fd: &OwnedFd) -> String {
        format!("/proc/self/fd/{}", fd.as_raw_fd())
    }

    /// A stand-in binary in a temp dir, and an empty sibling dir for the second layer.
    fn victim() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::create_dir(dir.path().join("scratch")).unwrap();
        let bin = dir.path().join("bin/victim");
        std::fs::write(&bin, b"\x7fELF not really").unwrap();
        let f = File::open(&bin).unwrap();
        (dir, f)
    }

    #[test]
    fn overlay_copy_cannot_be_opened_for_writing() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: overlayfs through fsopen needs root");
            return;
        }
        let (dir, f) = victim();
        let copy = overlay_copy(&f, &dir.path().join("scratch")).unwrap();
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(proc_path(&copy))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        let ro = File::open(proc_path(&copy)).unwrap();
        assert_eq!(sealed_kind(&ro), Some(Sealed::Overlay));
        assert_eq!(sealed_kind(&f), None, "a plain file is not sealed");
        assert_eq!(
            std::fs::read(proc_path(&copy)).unwrap(),
            b"\x7fELF not really"
        );
    }

    #[test]
    fn only_the_running_file_seen_through_the_overlay_is_adopted() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: overlayfs through fsopen needs root");
            return;
        }
        let (dir, f) = victim();
        let copy = File::from(overlay_copy(&f, &dir.path().join("scratch")).unwrap());
        adopt::same_file(&copy, &f).unwrap();
        // The same bytes in another file (a binary replaced after we started): refused.
        let other = dir.path().join("scratch/other");
        std::fs::write(&other, b"\x7fELF not really").unwrap();
        let err = adopt::same_file(&File::open(&other).unwrap(), &f).unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
    }

    #[test]
    fn memfd_copy_refuses_writes() {
        let (_dir, f) = victim();
        let copy = memfd_copy(&f).unwrap();
        let ro = File::open(proc_path(&copy)).unwrap();
        assert_eq!(sealed_kind(&ro), Some(Sealed::Memfd));
        // Reopening for writing is possible on a memfd; writing is not.
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(proc_path(&copy))
            .unwrap();
        let err = w.write_all(b"evil").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        assert_eq!(
            std::fs::read(proc_path(&copy)).unwrap(),
            b"\x7fELF not really"
        );
    }

    #[test]
    fn tmpfile_copy_is_unlinked_and_held_by_no_writer() {
        let (dir, f) = victim();
        let copy = tmpfile_copy(&f, &dir.path().join("scratch")).unwrap();
        let ro = File::open(proc_path(&copy)).unwrap();
        assert_eq!(ro.metadata().unwrap().nlink(), 0);
        assert_eq!(ro.metadata().unwrap().mode() & 0o7777, 0o511);
        assert_eq!(
            std::fs::read(proc_path(&copy)).unwrap(),
            b"\x7fELF not really"
        );
        assert!(std::fs::read_dir(dir.path().join("scratch"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn writable_dir_is_not_a_read_only_mount() {
        // The read-only side is tests/escape.rs (a bind mount made read-only).
        let (_dir, f) = victim();
        assert!(!on_read_only_mount(&f), "a temp dir is writable");
    }

    #[test]
    fn only_the_identity_uid_map_is_initial() {
        assert!(is_initial_uid_map("         0          0 4294967295\n"));
        assert!(!is_initial_uid_map("         0       1000          1\n"));
        assert!(!is_initial_uid_map(
            "         0          0 4294967295\n         1          1 1\n"
        ));
        assert!(!is_initial_uid_map(""));
    }

    #[test]
    fn lowerdir_escapes_separators() {
        assert_eq!(escape_lowerdir(b"/a:b\\c"), b"/a\\:b\\\\c");
    }
}
