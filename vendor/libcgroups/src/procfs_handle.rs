//! nvbind: one checked procfs handle per process, for the procfs reads of this crate and of
//! libcontainer.
//!
//! pathrs keeps one detached `subset=pid` procfs mount per process (a static descriptor made by
//! its first `ProcfsHandle::new`), but every `ProcfsHandle::new` checks that descriptor again
//! before handing it out (`try_from_borrowed_fd`: fstatfs, fstat, statx of the mount id,
//! faccessat of "stat", an open of /proc and a readlink of thread-self/fd/N, statx and open of
//! "..": 16 syscalls), as the program may have closed or replaced it since. One `run` did that
//! nine times: five in the runtime, one in the intermediate process, three in the init (issue
//! 19). [`get`] keeps the first handle of a process (three syscalls to see it is the kind
//! pathrs keeps) and hands out that one; a clone checks what it inherited with one statx.
//!
//! Why the handle kept is safe to use without checking it again:
//!
//! - **Only the kind pathrs itself keeps**: a handle pathrs has just checked to be a procfs
//!   root, and that is a detached mount (its ".." is on the same mount: fsopen, or an
//!   open_tree clone) with `subset=pid` (no "stat", a global file), tested as pathrs tests the
//!   handles it caches (it caches no other kind). Anything else (no mount API, or no privilege
//!   for it: a rootless caller gets a plain /proc) is not kept: each use gets a new handle as
//!   before, so no descriptor of the host's whole /proc lives longer than one read.
//! - **Per process**: the handle is kept with the pid of the process that checked it. A clone
//!   (libcontainer's intermediate and init, any fork) has a copy of this memory but another
//!   pid: before using the copy it checks, with one statx, that its own descriptor of that
//!   number is still the root (inode 1) of the same mount, by mount id: the unique id on Linux
//!   6.8+ (never reused), else the mount id, which the kernel gives another mount only once
//!   every descriptor of this one is closed in every process (the runtime holds one until its
//!   command ends, and a clone looks at its first use). Same mount, same root: the same detached
//!   `subset=pid` procfs, and the handle's state (descriptor number, mount id, subset,
//!   detached) is true for the clone too. Anything else is checked by pathrs as in a process
//!   of its own. libcontainer's clone also calls [`forget_pid`] in the child, for a child whose
//!   pid in its new PID namespace equals its parent's (a runtime that is PID 1 of its own
//!   namespace, and the container's init).
//! - **Its descriptor is not closed while kept**: it is pathrs' static one, which pathrs never
//!   closes. nvbind and the vendored crates close only descriptors they opened themselves, but
//!   (a) nvbind's `close_inherited_fds`, which closes only descriptors without close-on-exec
//!   (pathrs makes its own with FSMOUNT_CLOEXEC or OPEN_TREE_CLOEXEC) and runs before any
//!   procfs read, (b) the intermediate process's close of the runtime descriptors it is given
//!   (the root lock: open beside the procfs descriptor when the runtime clones, so another
//!   number, or closed before the intermediate makes one), (c) the init's `dup2` onto 0, 1 and
//!   2 (Rust's runtime opens /dev/null on a closed stdio descriptor before `main`, so pathrs'
//!   is never one of them); libcontainer's `close_range` only sets close-on-exec.
//! - **And if it were**: every open through a handle checks that what it opened is on the
//!   handle's procfs mount (the mount id kept at the check, and the procfs magic), so a
//!   recycled descriptor number makes reads fail, never read another file.
//! - **Threads**: the handle is immutable and `Sync`; the slot is an atomic pointer to a
//!   leaked record (never freed, so a reference handed out stays valid), not a lock that a
//!   clone could inherit held.

use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use nix::libc;
use pathrs::procfs::ProcfsHandle;

/// What a process found: the handle it keeps (None: pathrs keeps none here, each use gets a
/// new one) and that handle's mount, to recognise it in a clone.
struct Kept {
    /// Atomic so that [`forget_pid`] can change it in place: a fresh clone must not allocate
    /// (a clone of a process with other threads can find the allocator's lock taken, held by
    /// a thread that does not exist in the clone, and wait on it forever).
    pid: AtomicU32,
    handle: Option<&'static ProcfsHandle>,
    mount: Option<MountId>,
}

/// The mount id (unique, or not), the mask bit saying which, and the device of a procfs root.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct MountId {
    kind: u32,
    id: u64,
    dev: (u32, u32),
}

static KEPT: AtomicPtr<Kept> = AtomicPtr::new(ptr::null_mut());

/// A procfs handle: the one kept for this process, or a new one where none is kept.
pub enum Procfs {
    Kept(&'static ProcfsHandle),
    New(ProcfsHandle),
}

impl Deref for Procfs {
    type Target = ProcfsHandle;

    fn deref(&self) -> &ProcfsHandle {
        match self {
            Procfs::Kept(h) => h,
            Procfs::New(h) => h,
        }
    }
}

/// The calling process's procfs handle, what `ProcfsHandle::new()` gives: checked once per
/// process where pathrs keeps one, new for each call where it does not.
pub fn get() -> Result<Procfs, pathrs::error::Error> {
    get_in(
        &KEPT,
        std::process::id(),
        ProcfsHandle::new,
        procfs_root_mount,
    )
}

/// Marks what this process holds as its parent's: the next [`get`] checks the inherited
/// descriptor (one statx) before using it. libcontainer's clone calls it first thing in the
/// child; no syscall.
pub fn forget_pid() {
    forget_pid_in(&KEPT);
}

fn forget_pid_in(slot: &AtomicPtr<Kept>) {
    // SAFETY: a non-null pointer in the slot is a leaked Box, never freed.
    let Some(kept) = (unsafe { slot.load(Ordering::Acquire).as_ref() }) else {
        return;
    };
    // pid 0 is no process's: the record then passes for a parent's. In place, no allocation.
    kept.pid.store(0, Ordering::Release);
}

/// Records what process `pid` keeps, in a record that is never freed.
fn store(
    slot: &AtomicPtr<Kept>,
    pid: u32,
    handle: Option<&'static ProcfsHandle>,
    mount: Option<MountId>,
) {
    let kept = Box::new(Kept {
        pid: AtomicU32::new(pid),
        handle,
        mount,
    });
    // Another thread of this process may store its record at the same time: either is right
    // (same pid, same pathrs descriptor); the last one stays.
    slot.store(Box::into_raw(kept), Ordering::Release);
}

fn get_in(
    slot: &AtomicPtr<Kept>,
    pid: u32,
    new: impl Fn() -> Result<ProcfsHandle, pathrs::error::Error>,
    mount_of: impl Fn(BorrowedFd<'_>) -> Option<MountId>,
) -> Result<Procfs, pathrs::error::Error> {
    // SAFETY: a non-null pointer in the slot is a leaked Box, never freed.
    if let Some(kept) = unsafe { slot.load(Ordering::Acquire).as_ref() } {
        if kept.pid.load(Ordering::Acquire) == pid {
            return match kept.handle {
                Some(h) => Ok(Procfs::Kept(h)),
                None => new().map(Procfs::New),
            };
        }
        // A clone's copy of its parent's record.
        match (kept.handle, kept.mount) {
            // The parent keeps none: neither does the clone (the same pathrs, the same /proc).
            (None, _) => {
                store(slot, pid, None, None);
                return new().map(Procfs::New);
            }
            (Some(h), Some(m)) if mount_of(h.as_fd()) == Some(m) => {
                store(slot, pid, Some(h), Some(m));
                return Ok(Procfs::Kept(h));
            }
            // Not the parent's descriptor any more: pathrs checks it (and, finding it bad,
            // stops using its cache), as in a process of its own.
            _ => {}
        }
    }
    let first = new()?;
    let Some(mount) = detached_subset_root(first.as_fd()) else {
        store(slot, pid, None, None);
        return Ok(Procfs::New(first));
    };
    let handle: &'static ProcfsHandle = Box::leak(Box::new(first));
    store(slot, pid, Some(handle), Some(mount));
    Ok(Procfs::Kept(handle))
}

/// The mount of `fd` when it is the root of a detached procfs mount with `subset=pid`, the
/// only kind pathrs caches, by pathrs' own tests: "stat" (a global file) is absent, and ".."
/// stays on the same mount (the root of a detached tree is its own parent; any attached mount's
/// ".." is its parent mount's). `fd` is a handle pathrs has just checked to be a procfs root.
fn detached_subset_root(fd: BorrowedFd<'_>) -> Option<MountId> {
    let mount = procfs_root_mount(fd)?;
    if statx_mount(fd, c"..").map(|(m, _)| m) != Some(mount) {
        return None;
    }
    // SAFETY: faccessat of a name relative to `fd`; no memory is passed but the name.
    let rc = unsafe {
        libc::faccessat(
            fd.as_raw_fd(),
            c"stat".as_ptr(),
            libc::F_OK,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    let absent = rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT);
    absent.then_some(mount)
}

/// The mount of a procfs root descriptor, or None when it is not an inode 1 (a procfs root
/// is) or the kernel gives no mount id (then a clone lets pathrs check it).
fn procfs_root_mount(fd: BorrowedFd<'_>) -> Option<MountId> {
    const PROC_ROOT_INO: u64 = 1;
    match statx_mount(fd, c"")? {
        (mount, PROC_ROOT_INO) => Some(mount),
        _ => None,
    }
}

/// statx of `path` relative to `fd` (`fd` itself for ""), not following a last symlink: the
/// unique mount id (Linux 6.8+, never reused) or the mount id (5.8+, reused only once the
/// mount is gone), the device, and the inode number.
fn statx_mount(fd: BorrowedFd<'_>, path: &std::ffi::CStr) -> Option<(MountId, u64)> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `path` is NUL-terminated; the kernel fills `stx`, which is large enough.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            path.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_INO | libc::STATX_MNT_ID | libc::STATX_MNT_ID_UNIQUE,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: statx succeeded, so it wrote the struct (which was zeroed anyway).
    let stx = unsafe { stx.assume_init() };
    let kind = stx.stx_mask & (libc::STATX_MNT_ID | libc::STATX_MNT_ID_UNIQUE);
    if stx.stx_mask & libc::STATX_INO == 0 || kind == 0 {
        return None;
    }
    let mount = MountId {
        kind,
        id: stx.stx_mnt_id,
        dev: (stx.stx_dev_major, stx.stx_dev_minor),
    };
    Some((mount, stx.stx_ino))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::fs::File;
    use std::io::Read;

    use pathrs::procfs::{ProcfsBase, ProcfsHandleBuilder};

    use super::*;

    fn kept_ptr(p: &Procfs) -> Option<*const ProcfsHandle> {
        match p {
            Procfs::Kept(h) => Some(ptr::from_ref(*h)),
            Procfs::New(_) => None,
        }
    }

    fn read_self_stat(p: &Procfs) -> String {
        let mut s = String::new();
        p.open(
            ProcfsBase::ProcSelf,
            "stat",
            pathrs::flags::OpenFlags::O_RDONLY,
        )
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
        s
    }

    /// Ten uses in one process have pathrs check its handle once (the first use), then never
    /// again: ProcfsHandle::new() checked it ten times.
    #[test]
    fn one_process_checks_the_handle_once() {
        let slot = AtomicPtr::new(ptr::null_mut());
        let news = Cell::new(0);
        let new = || {
            news.set(news.get() + 1);
            ProcfsHandle::new()
        };
        let first = get_in(&slot, 100, new, procfs_root_mount).unwrap();
        let kept = kept_ptr(&first).expect("pathrs caches a subset=pid procfs here");
        for _ in 0..9 {
            let again = get_in(&slot, 100, new, procfs_root_mount).unwrap();
            assert_eq!(kept_ptr(&again), Some(kept));
        }
        assert_eq!(news.get(), 1);
        assert!(read_self_stat(&first).starts_with(&format!("{} ", std::process::id())));
    }

    /// Another pid (a clone) whose descriptor is still the same mount's root keeps the
    /// handle after one look; one whose descriptor is not lets pathrs check it again.
    #[test]
    fn a_clone_checks_the_inherited_descriptor() {
        let slot = AtomicPtr::new(ptr::null_mut());
        let news = Cell::new(0);
        let new = || {
            news.set(news.get() + 1);
            ProcfsHandle::new()
        };
        let kept = kept_ptr(&get_in(&slot, 100, new, procfs_root_mount).unwrap()).unwrap();
        let looks = Cell::new(0);
        let same = |fd: BorrowedFd<'_>| {
            looks.set(looks.get() + 1);
            procfs_root_mount(fd)
        };
        let child = get_in(&slot, 200, new, same).unwrap();
        assert_eq!(
            (kept_ptr(&child), news.get(), looks.get()),
            (Some(kept), 1, 1)
        );
        // Kept for pid 200 now: no more looks.
        let _ = get_in(&slot, 200, new, same).unwrap();
        assert_eq!(looks.get(), 1);
        // A third pid whose descriptor of that number is something else.
        let other = |_: BorrowedFd<'_>| None;
        let p = get_in(&slot, 300, new, other).unwrap();
        assert_eq!(news.get(), 2, "pathrs checks the descriptor again");
        assert!(read_self_stat(&p).starts_with(&format!("{} ", std::process::id())));
    }

    /// forget_pid makes the process's own record pass for a parent's.
    #[test]
    fn forget_pid_makes_the_next_use_look() {
        let slot = AtomicPtr::new(ptr::null_mut());
        let _ = get_in(&slot, 100, ProcfsHandle::new, procfs_root_mount).unwrap();
        // SAFETY: leaked records are never freed.
        let kept = unsafe { slot.load(Ordering::Acquire).as_ref() }.unwrap();
        assert_eq!(kept.pid.load(Ordering::Acquire), 100);
        let looks = Cell::new(0);
        let look = |fd: BorrowedFd<'_>| {
            looks.set(looks.get() + 1);
            procfs_root_mount(fd)
        };
        let before = slot.load(Ordering::Acquire);
        forget_pid_in(&slot);
        // In place: a clone calls it first thing, where allocating can deadlock (the
        // vendored fork tests hung so, in a clone of the multi-threaded test binary).
        assert_eq!(slot.load(Ordering::Acquire), before, "forget_pid made a new record");
        assert_eq!(kept.pid.load(Ordering::Acquire), 0);
        let _ = get_in(&slot, 100, ProcfsHandle::new, look).unwrap();
        assert_eq!(looks.get(), 1);
    }

    /// A handle pathrs does not cache (an unmasked procfs: the host's whole /proc) is never
    /// kept, in the process or in a clone: each use gets a new one.
    #[test]
    fn a_handle_pathrs_does_not_keep_is_not_kept() {
        let slot = AtomicPtr::new(ptr::null_mut());
        let news = Cell::new(0);
        let new = || {
            news.set(news.get() + 1);
            ProcfsHandleBuilder::new().unmasked().build()
        };
        for n in 0..3 {
            let p = get_in(&slot, 100, new, procfs_root_mount).unwrap();
            assert!(kept_ptr(&p).is_none());
            assert_eq!(news.get(), n + 1);
        }
        let p = get_in(&slot, 200, new, procfs_root_mount).unwrap();
        assert!(kept_ptr(&p).is_none());
        assert_eq!(news.get(), 4);
    }

    /// The looks: pathrs' cached procfs is a detached subset=pid root; the host's /proc is a
    /// procfs root on another mount, attached and whole; an unmasked detached procfs is whole;
    /// a directory of the procfs is not its root.
    #[test]
    fn the_kind_kept_and_the_mount_of_a_procfs_root() {
        let h = ProcfsHandle::new().unwrap();
        let m = detached_subset_root(h.as_fd()).expect("pathrs' cached procfs");
        assert_eq!(procfs_root_mount(h.as_fd()), Some(m));
        let host = File::open("/proc").unwrap();
        let host_mount = procfs_root_mount(host.as_fd()).expect("the host's /proc root");
        assert_ne!(host_mount, m);
        assert_eq!(detached_subset_root(host.as_fd()), None);
        let whole = ProcfsHandleBuilder::new().unmasked().build().unwrap();
        assert!(procfs_root_mount(whole.as_fd()).is_some());
        assert_eq!(detached_subset_root(whole.as_fd()), None);
        let fd_dir = h
            .open(
                ProcfsBase::ProcSelf,
                "fd",
                pathrs::flags::OpenFlags::O_PATH | pathrs::flags::OpenFlags::O_DIRECTORY,
            )
            .unwrap();
        assert_eq!(procfs_root_mount(fd_dir.as_fd()), None);
    }

    /// In a real fork: the child uses the kept handle after its look; a child that replaced
    /// the descriptor (dup2 of "/" onto its number) is not fooled and still reads its own
    /// /proc/self through a new handle.
    #[test]
    fn a_forked_child_with_a_replaced_descriptor_gets_a_new_handle() {
        let p = get().unwrap();
        let kept = kept_ptr(&p).expect("pathrs caches a subset=pid procfs here");
        let fd = p.as_fd().as_raw_fd();
        for replace in [false, true] {
            // SAFETY: the child only makes syscalls and leaves with _exit.
            match unsafe { nix::unistd::fork() }.unwrap() {
                nix::unistd::ForkResult::Child => {
                    let code = (|| {
                        if replace {
                            let root = File::open("/").ok()?;
                            nix::unistd::dup2(root.as_raw_fd(), fd).ok()?;
                        }
                        let p = get().ok()?;
                        let mut s = String::new();
                        p.open(
                            ProcfsBase::ProcSelf,
                            "stat",
                            pathrs::flags::OpenFlags::O_RDONLY,
                        )
                        .ok()?
                        .read_to_string(&mut s)
                        .ok()?;
                        let own = s.starts_with(&format!("{} ", std::process::id()));
                        Some(match (own, kept_ptr(&p) == Some(kept)) {
                            (false, _) => 3,
                            (true, true) => 10,
                            (true, false) => 11,
                        })
                    })()
                    .unwrap_or(2);
                    // SAFETY: leaves the forked child without running the parent's cleanup.
                    unsafe { libc::_exit(code) };
                }
                nix::unistd::ForkResult::Parent { child } => {
                    let status = nix::sys::wait::waitpid(child, None).unwrap();
                    let want = if replace { 11 } else { 10 };
                    assert_eq!(
                        status,
                        nix::sys::wait::WaitStatus::Exited(child, want),
                        "replaced: {replace}"
                    );
                }
            }
        }
    }
}
