//! Makes the sealed copy this process's executable without starting the binary a second time.
//!
//! A re-exec costs a whole second start: the kernel's exec, ld.so loading four libraries and
//! applying 18,000 relocations (about 95 copy-on-write page faults), Rust's start-up and clap
//! parsing the command line again (bench/analysis.md, session 8: about 200 of a `run`'s 980 page
//! faults). The kernel offers the cheaper way itself: PR_SET_MM_MAP's exe_fd points
//! /proc/PID/exe at another file, refused (EBUSY) while anything of the old file is still
//! mapped. So every mapping of the installed binary is replaced by the same bytes from the
//! sealed copy, at the same addresses, and then the link is moved:
//!
//! - mappings of read-only segments (headers, code, read-only data) are mapped again from the
//!   copy at the same file offsets: the same page-cache pages, nothing copied. The code that
//!   runs the mmap call is replaced under it by identical bytes, which is what programs that
//!   move their own text to huge pages do;
//! - mappings of the writable segment hold what ld.so wrote (relocated pointers, then made
//!   read-only by RELRO) and what the program wrote (.data): they are copied into anonymous
//!   memory which mremap puts in their place, with their protection;
//! - PROT_NONE gaps between segments become anonymous PROT_NONE mappings.
//!
//! Each step leaves the same bytes at the same addresses, so a failure at any point leaves a
//! whole process, still running from the installed file: the caller then re-executes as before.
//! It needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE, and a single thread: another
//! thread could write to .data between the copy and the mremap.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::sys::{check, check_ptr};

/// One mapping of /proc/self/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mapping {
    pub start: usize,
    pub end: usize,
    pub prot: libc::c_int,
    pub offset: u64,
}

/// The mappings of the file with inode `ino` at `path` (as /proc/self/maps names it).
pub(super) fn mappings_of(maps: &str, ino: u64, path: &Path) -> Vec<Mapping> {
    use std::os::unix::ffi::OsStrExt;
    let want = path.as_os_str().as_bytes();
    maps.lines()
        .filter_map(|line| {
            let mut f = line.splitn(6, ' ');
            let (range, perms, offset, _dev, inode) =
                (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            let name = f.next()?.trim_start_matches(' ');
            if inode.parse::<u64>().ok()? != ino || name.as_bytes() != want {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let p = perms.as_bytes();
            let prot = [
                (b'r', libc::PROT_READ),
                (b'w', libc::PROT_WRITE),
                (b'x', libc::PROT_EXEC),
            ]
            .iter()
            .enumerate()
            .filter(|(i, (c, _))| p.get(*i) == Some(c))
            .fold(libc::PROT_NONE, |acc, (_, (_, bit))| acc | bit);
            Some(Mapping {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
                prot,
                offset: u64::from_str_radix(offset, 16).ok()?,
            })
        })
        .collect()
}

/// The address ranges (page-aligned start, end) of the writable PT_LOAD segments of the running
/// executable: the mappings ld.so or the program may have written. By address, not by file
/// offset: a segment's first page in the file may be the last page of the code before it.
fn writable_ranges() -> Vec<(usize, usize)> {
    // SAFETY: getauxval only reads the auxiliary vector.
    let (phdr, phnum) = unsafe {
        (
            libc::getauxval(libc::AT_PHDR) as usize,
            libc::getauxval(libc::AT_PHNUM) as usize,
        )
    };
    if phdr == 0 {
        return Vec::new();
    }
    // SAFETY: the kernel's AT_PHDR/AT_PHNUM describe the executable's program headers, which
    // ld.so keeps mapped for the life of the process.
    let headers = unsafe { std::slice::from_raw_parts(phdr as *const libc::Elf64_Phdr, phnum) };
    writable_in(headers, phdr)
}

/// `writable_ranges` of `headers`, found in memory at `phdr_addr`.
fn writable_in(headers: &[libc::Elf64_Phdr], phdr_addr: usize) -> Vec<(usize, usize)> {
    // The load bias: where PT_PHDR says the headers are, against where they are.
    let Some(bias) = headers
        .iter()
        .find(|h| h.p_type == libc::PT_PHDR)
        .map(|h| phdr_addr.wrapping_sub(h.p_vaddr as usize))
    else {
        return Vec::new();
    };
    headers
        .iter()
        .filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W != 0)
        .map(|h| {
            let start = bias.wrapping_add(h.p_vaddr as usize);
            (start & !0xfff, start + h.p_memsz as usize)
        })
        .collect()
}

/// Whether a mapping may hold written bytes: it lies in a writable segment.
fn may_be_written(m: &Mapping, writable: &[(usize, usize)]) -> bool {
    writable.iter().any(|&(s, e)| m.start < e && s < m.end)
}

/// The number of threads of the process whose /proc/PID/stat is `stat`.
fn threads(stat: &str) -> io::Result<usize> {
    // Field 20, num_threads; the command name (field 2) may hold spaces and ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(17)?.parse().ok())
        .ok_or_else(|| io::Error::other("unreadable /proc/self/stat"))
}

/// Replaces `m` with anonymous memory holding its current bytes, at the same address.
///
/// # Safety
/// No other thread runs, and nothing writes to `m` until this returns.
unsafe fn to_anonymous(m: &Mapping) -> io::Result<()> {
    let len = m.end - m.start;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
    if m.prot & libc::PROT_READ == 0 {
        // Nothing can be read, so nothing to keep (the gaps ld.so leaves between segments).
        check_ptr(libc::mmap(
            m.start as *mut libc::c_void,
            len,
            m.prot,
            flags | libc::MAP_FIXED,
            -1,
            0,
        ))?;
        return Ok(());
    }
    let tmp = check_ptr(libc::mmap(
        std::ptr::null_mut(),
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        flags,
        -1,
        0,
    ))?;
    std::ptr::copy_nonoverlapping(m.start as *const u8, tmp as *mut u8, len);
    let moved = check(libc::mprotect(tmp, len, m.prot) as libc::c_long).and_then(|_| {
        check_ptr(libc::mremap(
            tmp,
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            m.start as *mut libc::c_void,
        ))
    });
    if moved.is_err() {
        libc::munmap(tmp, len);
    }
    moved.map(|_| ())
}

/// Refuses unless `copy` shows the very file this process runs; gives that file's metadata. The copy is found by the
/// binary's path, and an upgrade may have put another binary there since we started: its
/// bytes mapped over ours would be another program's code at our addresses (a re-exec of it
/// is merely the new version). overlayfs reports a lower file's own inode number, and the
/// running file's inode cannot be freed and reused while we map it.
pub(super) fn same_file(copy: &File, exe: &File) -> io::Result<std::fs::Metadata> {
    let (c, e) = (copy.metadata()?, exe.metadata()?);
    let key = |m: &std::fs::Metadata| (m.ino(), m.len(), m.mtime(), m.mtime_nsec());
    if key(&c) != key(&e) {
        return Err(io::Error::other(
            "the binary at nvbind's path is no longer the running one (replaced meanwhile)",
        ));
    }
    Ok(e)
}

/// See the module's documentation. `copy` is the sealed copy opened for reading, `exe` the
/// installed binary (/proc/self/exe).
pub(super) fn adopt(copy: &File, exe: &File) -> io::Result<()> {
    // Read once: the thread count now, and the layout for PR_SET_MM_MAP (fixed at exec; the
    // mappings replaced below do not change it, and brk is asked separately).
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let n = threads(&stat)?;
    if n != 1 {
        return Err(io::Error::other(format!("{n} threads running")));
    }
    let exe_meta = same_file(copy, exe)?;
    let exe_path = std::fs::read_link(format!("/proc/self/fd/{}", exe.as_raw_fd()))?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mappings = mappings_of(&maps, exe_meta.ino(), &exe_path);
    if mappings.is_empty() {
        return Err(io::Error::other(format!(
            "no mapping of {} in /proc/self/maps",
            exe_path.display()
        )));
    }
    let writable = writable_ranges();
    if writable.is_empty() {
        return Err(io::Error::other(
            "no writable segment in the program headers",
        ));
    }
    // A signal handler could write to .data between a copy and its mremap: none runs meanwhile.
    let _blocked = BlockSignals::new();
    for m in &mappings {
        if may_be_written(m, &writable) || m.prot & libc::PROT_READ == 0 {
            // SAFETY: one thread (checked above), signals blocked, and this loop writes nothing
            // of the image.
            unsafe { to_anonymous(m) }?;
        } else {
            // SAFETY: the same bytes (the copy is the installed file seen through overlayfs)
            // at the same address with the same protection, private as ld.so maps them.
            check_ptr(unsafe {
                libc::mmap(
                    m.start as *mut libc::c_void,
                    m.end - m.start,
                    m.prot,
                    libc::MAP_PRIVATE | libc::MAP_FIXED,
                    copy.as_raw_fd(),
                    m.offset as libc::off_t,
                )
            })?;
        }
    }
    set_exe_file(copy, &stat)
}

/// Every signal blocked while it lives; the old mask back on drop.
struct BlockSignals(libc::sigset_t);

impl BlockSignals {
    fn new() -> Self {
        // SAFETY: sigset_t is plain data, filled by sigfillset; pthread_sigmask writes the old
        // mask into `old`.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            Self(old)
        }
    }
}

impl Drop for BlockSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// linux/prctl.h's `struct prctl_mm_map`.
#[repr(C)]
#[derive(Debug, Default)]
struct PrctlMmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
}

/// The memory layout fields of `struct prctl_mm_map` as /proc/self/stat shows them now
/// (fields 26-28 and 45-51); `brk` is not there and is filled in by the caller.
fn layout_from_stat(stat: &str) -> Option<PrctlMmMap> {
    let f: Vec<u64> = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // Field N of proc(5) is f[N - 3]: the list starts at field 3, the state.
    // A 0 is what proc shows a reader it hides the layout from: never hand the kernel that.
    let at = |n: usize| f.get(n - 3).copied().filter(|&v| v != 0);
    Some(PrctlMmMap {
        start_code: at(26)?,
        end_code: at(27)?,
        start_stack: at(28)?,
        start_data: at(45)?,
        end_data: at(46)?,
        start_brk: at(47)?,
        arg_start: at(48)?,
        arg_end: at(49)?,
        env_start: at(50)?,
        env_end: at(51)?,
        ..PrctlMmMap::default()
    })
}

/// Points /proc/self/exe at `file`. PR_SET_MM_MAP (what CRIU restores with) rather than
/// PR_SET_MM_EXE_FILE: the latter needs CAP_SYS_RESOURCE, which some hosts drop from root (this
/// project's own CI machine), the former CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE. It sets the
/// whole layout, so it is given the current one (`stat`, this process's /proc/self/stat): the
/// same values, only the file changes.
fn set_exe_file(file: &File, stat: &str) -> io::Result<()> {
    let mut map =
        layout_from_stat(stat).ok_or_else(|| io::Error::other("unreadable /proc/self/stat"))?;
    // SAFETY: brk(0) changes nothing and returns the current break.
    map.brk = unsafe { libc::syscall(libc::SYS_brk, 0usize) } as u64;
    // auxv_size 0 keeps the saved auxiliary vector.
    map.exe_fd = file.as_raw_fd() as u32;
    // SAFETY: the kernel reads `size_of::<PrctlMmMap>()` bytes of `map`, alive for the call.
    check(unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            libc::PR_SET_MM_MAP as libc::c_ulong,
            &map as *const PrctlMmMap as libc::c_ulong,
            std::mem::size_of::<PrctlMmMap>() as libc::c_ulong,
            0 as libc::c_ulong,
        )
    } as libc::c_long)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c8a00000-55d0c8bba000 r--p 00000000 00:1f 4242                       /usr/bin/nv bind
55d0c8bba000-55d0c9352000 r-xp 001b9000 00:1f 4242                       /usr/bin/nv bind
55d0c9352000-55d0c9353000 ---p 00951000 00:1f 4242                       /usr/bin/nv bind
55d0c9353000-55d0c93a5000 r--p 00951000 00:1f 4242                       /usr/bin/nv bind
55d0c93a5000-55d0c93aa000 rw-p 009a2000 00:1f 4242                       /usr/bin/nv bind
55d0c93aa000-55d0c93ab000 rw-p 00000000 00:00 0 
55d0ca000000-55d0ca021000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000001000 r--p 00000000 00:1f 4243                       /usr/bin/nv bind (deleted)
7f0000001000-7f0000002000 r--p 00000000 00:1f 4242                       /usr/bin/nv bind.old
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
";

    #[test]
    fn only_the_files_own_mappings_are_taken_with_their_protection() {
        let m = mappings_of(MAPS, 4242, Path::new("/usr/bin/nv bind"));
        let got: Vec<_> = m.iter().map(|m| (m.start, m.prot, m.offset)).collect();
        assert_eq!(
            got,
            [
                (0x55d0c8a00000, libc::PROT_READ, 0),
                (0x55d0c8bba000, libc::PROT_READ | libc::PROT_EXEC, 0x1b9000),
                (0x55d0c9352000, libc::PROT_NONE, 0x951000),
                (0x55d0c9353000, libc::PROT_READ, 0x951000),
                (0x55d0c93a5000, libc::PROT_READ | libc::PROT_WRITE, 0x9a2000),
            ]
        );
        assert_eq!(m[1].end, 0x55d0c9352000);
    }

    fn phdr(p_type: u32, flags: u32, offset: u64, vaddr: u64, size: u64) -> libc::Elf64_Phdr {
        libc::Elf64_Phdr {
            p_type,
            p_flags: flags,
            p_offset: offset,
            p_vaddr: vaddr,
            p_paddr: vaddr,
            p_filesz: size,
            p_memsz: size,
            p_align: 0x1000,
        }
    }

    #[test]
    fn mappings_of_the_writable_segment_are_the_written_ones() {
        let m = mappings_of(MAPS, 4242, Path::new("/usr/bin/nv bind"));
        // A layout where the code's last page in the file is the writable segment's first
        // (0x951000): by file offset the code would count as written, by address it does not.
        let base = 0x55d0c8a00000u64;
        let headers = [
            phdr(libc::PT_PHDR, 4, 0x40, 0x40, 0x2a0),
            phdr(libc::PT_LOAD, 4, 0, 0, 0x1b951c),
            phdr(libc::PT_LOAD, 5, 0x1b9520, 0x1ba520, 0x797f30),
            phdr(libc::PT_LOAD, 6, 0x951450, 0x953450, 0x513b8),
            phdr(libc::PT_LOAD, 6, 0x9a2808, 0x9a5808, 0x3858),
        ];
        let writable = writable_in(&headers, (base + 0x40) as usize);
        assert_eq!(
            writable,
            [
                (0x55d0c9353000, 0x55d0c9353450 + 0x513b8),
                (0x55d0c93a5000, 0x55d0c93a5808 + 0x3858)
            ]
        );
        let written: Vec<_> = m.iter().map(|m| may_be_written(m, &writable)).collect();
        assert_eq!(written, [false, false, false, true, true]);
        // No PT_PHDR: no bias to trust, nothing found (adopt then refuses).
        assert!(writable_in(&headers[1..], (base + 0x40) as usize).is_empty());
    }

    #[test]
    fn the_layout_is_read_from_the_right_stat_fields() {
        // proc(5) numbering: field 26 startcode is 26, ... 51 env_end is 51; the name holds
        // spaces and a ')'.
        let mut stat = String::from("77 (a b) c) S");
        for n in 4..=52 {
            stat.push_str(&format!(" {n}"));
        }
        let m = layout_from_stat(&stat).unwrap();
        assert_eq!(
            [
                m.start_code,
                m.end_code,
                m.start_stack,
                m.start_data,
                m.end_data
            ],
            [26, 27, 28, 45, 46]
        );
        assert_eq!(
            [m.start_brk, m.arg_start, m.arg_end, m.env_start, m.env_end],
            [47, 48, 49, 50, 51]
        );
        assert!(layout_from_stat("77 (x) S 1 2 3").is_none());
        assert!(layout_from_stat(&stat.replace(" 45 ", " 0 ")).is_none());
        assert_eq!(std::mem::size_of::<PrctlMmMap>(), 104);
    }

    #[test]
    fn this_test_binary_has_a_writable_segment_and_threads_are_counted() {
        assert!(!writable_ranges().is_empty());
        // The test harness runs tests on threads of their own: adopt would refuse here.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(threads(&stat).unwrap() >= 1);
    }
}
