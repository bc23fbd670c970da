//! Compiled seccomp programs, kept in the state root (`<root>/.nvbind-seccomp-HASH` files), so
//! that libseccomp compiles a profile once, not at every create and exec. Docker and Podman give
//! every container their default profile (about 470 syscall names): libseccomp spends about
//! 2 ms of CPU on it, a third of a whole `run` (bench/analysis.md, session 14). crun keeps the
//! same kind of cache in its state root.
//!
//! A cached program is used only when its whole key matches, byte for byte: this binary's
//! build ID (a new nvbind may translate a profile differently), the libseccomp release, the
//! kernel (release, version, machine: libseccomp's output depends on what the kernel
//! supports) and the profile itself as JSON. The file name is a hash of the key, nothing
//! more: a colliding name is a miss. The cache is only as trusted as the state root that
//! holds it, which nvbind already trusts with every container's state; a file not owned by
//! this user, open to others, or of another format is ignored and replaced.
//!
//! Files, not a directory: engines share a root between runtimes (Docker's
//! /run/docker/runtime-runc/moby), and `runc list` takes every directory of it for a container
//! (README, "A state root shared with runc"); it skips files.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::rc::Rc;

use libcontainer::container::builder::SeccompCompiler;
use libcontainer::seccomp::{compile, library_version, Program};
use oci_spec::runtime::LinuxSeccomp;

/// The start of a cache file's name in the state root; 16 hex digits follow.
pub const PREFIX: &str = ".nvbind-seccomp-";
const MAGIC: &[u8; 8] = b"NVBSECC1";
/// Header: magic, key length (u32 LE), listener (u8), program length (u32 LE).
const HEADER: usize = 8 + 4 + 1 + 4;
/// More entries than this and they are all removed before the next one is stored.
const MAX_ENTRIES: usize = 64;
/// No key and program are near this (a program is at most 32 KiB).
const MAX_FILE: u64 = 1 << 20;

/// The compiler handed to libcontainer for containers of the state root `root`.
pub fn compiler(root: &Path) -> SeccompCompiler {
    let root = root.to_path_buf();
    Rc::new(move |seccomp: &LinuxSeccomp| program(&root, seccomp))
}

/// The program of `seccomp`: the cached one, else compiled (and stored). None when
/// libseccomp refuses the profile: the init process then compiles it itself and reports the
/// error as it always has.
fn program(root: &Path, seccomp: &LinuxSeccomp) -> Option<Program> {
    let Some(key) = key(seccomp) else {
        return compile(seccomp).ok();
    };
    let file = root.join(file_name(&key));
    if let Some(program) = lookup(&file, &key) {
        return Some(program);
    }
    let program = compile(seccomp).ok()?;
    // A cache that cannot be written (a read-only root, a full disk) costs the next
    // container the compile again, nothing else.
    if let Err(err) = store(root, &file, &encode(&key, &program)) {
        tracing::debug!(%err, file = %file.display(), "seccomp program not cached");
    }
    Some(program)
}

/// Everything the compiled program depends on; None where part of it cannot be known (a
/// binary linked without a build ID), and then nothing is cached.
fn key(seccomp: &LinuxSeccomp) -> Option<Vec<u8>> {
    let build = build_id()?;
    let library = library_version()?;
    let (release, version, machine) = kernel()?;
    let mut key = format!(
        "nvbind build {build}\nlibseccomp {library}\nkernel {release} {version} {machine}\n"
    )
    .into_bytes();
    serde_json::to_writer(&mut key, seccomp).ok()?;
    Some(key)
}

/// PREFIX and the FNV-1a hash of the key in 16 hex digits: spreads names, proves nothing
/// (lookup compares keys).
fn file_name(key: &[u8]) -> String {
    let hash = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{PREFIX}{hash:016x}")
}

fn encode(key: &[u8], program: &Program) -> Vec<u8> {
    let bpf = program.bpf();
    let mut out = Vec::with_capacity(HEADER + key.len() + bpf.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.push(u8::from(program.listener()));
    out.extend_from_slice(&(bpf.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(bpf);
    out
}

/// The program of a cache file whose key is `key`; None for any other file (another key,
/// another format, torn or truncated).
fn decode(bytes: &[u8], key: &[u8]) -> Option<Program> {
    let header = bytes.get(..HEADER)?;
    if &header[..8] != MAGIC {
        return None;
    }
    let key_len = u32::from_le_bytes(header[8..12].try_into().ok()?) as usize;
    let listener = match header[12] {
        0 => false,
        1 => true,
        _ => return None,
    };
    let bpf_len = u32::from_le_bytes(header[13..17].try_into().ok()?) as usize;
    let rest = &bytes[HEADER..];
    if rest.len() != key_len.checked_add(bpf_len)? || &rest[..key_len] != key {
        return None;
    }
    Program::from_parts(rest[key_len..].to_vec(), listener)
}

fn lookup(file: &Path, key: &[u8]) -> Option<Program> {
    // O_NONBLOCK: a FIFO at the name must not stall the create (it is then not a file)
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !private_to_us(&meta) || !meta.is_file() || meta.len() > MAX_FILE {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut bytes).ok()?;
    decode(&bytes, key)
}

/// Owned by this user and closed to everyone else, as the cache makes its files.
fn private_to_us(meta: &fs::Metadata) -> bool {
    meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o077 == 0
}

fn store(root: &Path, file: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(root)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(PREFIX) {
            entries.push(entry.path());
        } else if stale_temp(name) {
            // the temp file of a store whose nvbind was killed before its rename
            let _ = fs::remove_file(entry.path());
        }
    }
    if entries.len() >= MAX_ENTRIES {
        // Profiles differ by engine and by image, not by container: that many means old
        // entries (another kernel, an older nvbind), and removing them all is simplest.
        for entry in entries {
            let _ = fs::remove_file(entry);
        }
    }
    nvbind_atomic::write_atomic_nosync(file, bytes, 0o600)
}

/// Whether `name` is the temp file of a cache file's write (nvbind_atomic's naming) whose
/// writer is gone.
fn stale_temp(name: &str) -> bool {
    let Some((target, _)) = name
        .strip_prefix('.')
        .filter(|n| n.starts_with(PREFIX))
        .and_then(|n| n.split_once(".tmp-"))
    else {
        return false;
    };
    nvbind_atomic::temp_writer(name, target).is_some_and(|pid| {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, None) == Err(nix::errno::Errno::ESRCH)
    })
}

/// The GNU build ID of this executable, from its own program headers in memory (no file is
/// read); the release build's linker writes one.
fn build_id() -> Option<String> {
    unsafe extern "C" fn first_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `Option<String>` build_id passes; `info` is valid for the
        // call (dl_iterate_phdr's contract), and its headers describe mapped segments.
        unsafe {
            let out = &mut *(data as *mut Option<String>);
            let info = &*info;
            let headers = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
            for h in headers.iter().filter(|h| h.p_type == libc::PT_NOTE) {
                let start = (info.dlpi_addr + h.p_vaddr) as *const u8;
                let notes = std::slice::from_raw_parts(start, h.p_memsz as usize);
                if let Some(id) = gnu_build_id(notes) {
                    *out = Some(id);
                    break;
                }
            }
        }
        1 // the first object is the executable: stop there
    }
    let mut id: Option<String> = None;
    // SAFETY: the callback only reads the headers it is given and writes `id`, which
    // outlives the call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(first_object),
            &mut id as *mut Option<String> as *mut libc::c_void,
        );
    }
    id
}

/// The NT_GNU_BUILD_ID of a PT_NOTE segment, as hex.
fn gnu_build_id(mut notes: &[u8]) -> Option<String> {
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    while notes.len() >= 12 {
        let word = |i: usize| u32::from_ne_bytes(notes[i..i + 4].try_into().unwrap()) as usize;
        let (name_size, desc_size, kind) = (word(0), word(4), word(8));
        let name_end = 12 + align4(name_size)?;
        let desc_end = name_end.checked_add(align4(desc_size)?)?;
        let name = notes.get(12..12 + name_size)?;
        let desc = notes.get(name_end..name_end + desc_size)?;
        if kind == 3 && name == b"GNU\0" && !desc.is_empty() {
            return Some(desc.iter().map(|b| format!("{b:02x}")).collect());
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

fn kernel() -> Option<(String, String, String)> {
    // SAFETY: uname fills the zeroed struct it is given; its fields are NUL-terminated.
    let uts = unsafe {
        let mut uts: libc::utsname = std::mem::zeroed();
        (libc::uname(&mut uts) == 0).then_some(uts)?
    };
    let text = |field: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates each field within its array.
        unsafe { std::ffi::CStr::from_ptr(field.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Some((text(&uts.release), text(&uts.version), text(&uts.machine)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(listener: bool) -> Program {
        Program::from_parts((0..16u8).collect(), listener).unwrap()
    }

    #[test]
    fn a_file_decodes_only_under_its_own_key() {
        let bytes = encode(b"key one", &program(true));
        assert_eq!(decode(&bytes, b"key one"), Some(program(true)));
        assert_eq!(decode(&bytes, b"key two"), None);
        assert_eq!(decode(&bytes, b"key on"), None);
        assert_eq!(
            decode(&encode(b"k", &program(false)), b"k"),
            Some(program(false))
        );
    }

    #[test]
    fn torn_truncated_or_foreign_files_are_misses() {
        let bytes = encode(b"key", &program(false));
        for len in 0..bytes.len() {
            assert_eq!(decode(&bytes[..len], b"key"), None, "truncated to {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer, b"key"), None);
        let mut magic = bytes.clone();
        magic[0] ^= 1;
        assert_eq!(decode(&magic, b"key"), None);
        let mut listener = bytes.clone();
        listener[12] = 2;
        assert_eq!(decode(&listener, b"key"), None);
        // a program of 7 bytes is not whole instructions
        let mut odd = encode(b"key", &program(false));
        odd.truncate(odd.len() - 1);
        odd[13..17].copy_from_slice(&15u32.to_le_bytes());
        assert_eq!(decode(&odd, b"key"), None);
    }

    #[test]
    fn this_binary_has_a_build_id_and_it_is_stable() {
        // Test binaries are linked as nvbind is; without a build ID nothing would be cached.
        let id = build_id().expect("no GNU build ID in the test binary");
        assert!(
            id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        assert_eq!(build_id(), Some(id));
    }

    #[test]
    fn gnu_build_id_skips_other_notes_and_rejects_short_ones() {
        let note = |name: &[u8], kind: u32, desc: &[u8]| {
            let mut n = Vec::new();
            n.extend_from_slice(&(name.len() as u32).to_ne_bytes());
            n.extend_from_slice(&(desc.len() as u32).to_ne_bytes());
            n.extend_from_slice(&kind.to_ne_bytes());
            n.extend_from_slice(name);
            n.resize(n.len().next_multiple_of(4), 0);
            n.extend_from_slice(desc);
            n.resize(n.len().next_multiple_of(4), 0);
            n
        };
        let mut notes = note(b"GNU\0", 1, &[0; 16]); // ABI tag
        notes.extend(note(b"GNU\0", 3, &[0xab, 0xcd, 0x01]));
        assert_eq!(gnu_build_id(&notes).as_deref(), Some("abcd01"));
        assert_eq!(gnu_build_id(&notes[..notes.len() - 4]), None);
        assert_eq!(gnu_build_id(&note(b"Go\0\0", 3, &[1])), None);
    }

    #[test]
    fn names_spread_and_are_hex() {
        let a = file_name(b"a");
        let hash = a.strip_prefix(PREFIX).unwrap();
        assert_eq!(hash.len(), 16);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, file_name(b"b"));
    }

    #[test]
    fn only_cache_temp_files_of_dead_writers_are_stale() {
        let dead = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            pid
        };
        let name = file_name(b"k");
        let temp = |pid: u32| format!(".{name}.tmp-{pid}-0123456789abcdef");
        assert!(stale_temp(&temp(dead)));
        assert!(!stale_temp(&temp(std::process::id())));
        assert!(!stale_temp(&name));
        assert!(!stale_temp(&format!(
            ".config.json.tmp-{dead}-0123456789abcdef"
        )));
        assert!(!stale_temp(&format!(".{name}.tmp-{dead}-xyz")));
    }
}
