//! A reader for glibc's `ld.so.cache`, the file `ldconfig` writes and the dynamic loader reads.
//!
//! Three layouts exist on disk, and `ldconfig -c old|compat|new` writes each of them:
//! - old (`ld.so-1.7.0`): a 16-byte header (11-byte magic, NUL pad, `u32 nlibs`) and
//!   12-byte entries `{i32 flags, u32 key, u32 value}`; string offsets count from the end
//!   of the entry table.
//! - new (`glibc-ld.so.cache1.1`, the default since glibc 2.32, what Debian 12 writes): a
//!   48-byte header (17-byte magic, 3-byte version, `u32 nlibs`, `u32 len_strings`,
//!   `u8 flags` carrying the endianness, 3 pad bytes, `u32 extension_offset`, 3 unused
//!   `u32`) and 24-byte entries `{i32 flags, u32 key, u32 value, u32 osversion,
//!   u64 hwcap}`; string offsets count from the start of the new header.
//! - compat: an old table followed, at the next 8-byte boundary, by a complete new one.
//!   The new table is preferred, as glibc's loader does.
//!
//! Keys are sonames (`libcuda.so.1`), values are the paths ldconfig found them at
//! (`/usr/lib/x86_64-linux-gnu/libcuda.so.1`). Every read is bounds checked: a truncated or
//! garbage file is an [`LdCacheError`], never a panic.

use std::path::{Path, PathBuf};

const MAGIC_OLD: &[u8] = b"ld.so-1.7.0";
const MAGIC_NEW: &[u8] = b"glibc-ld.so.cache";
const VERSION_NEW: &[u8] = b"1.1";
const OLD_HEADER_LEN: usize = 16;
const OLD_ENTRY_LEN: usize = 12;
const NEW_HEADER_LEN: usize = 48;
const NEW_ENTRY_LEN: usize = 24;

const FLAG_TYPE_MASK: i32 = 0x00ff;
const FLAG_ELF: i32 = 0x0001;
const FLAG_ELF_LIBC6: i32 = 0x0003;
const FLAG_ARCH_MASK: i32 = 0xff00;

/// The architecture bits of an entry's flags (glibc `FLAG_*_LIB*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// `0x0000`: i386 and every other 32-bit ELF that carries no arch flag.
    I386,
    /// `0x0300`: FLAG_X8664_LIB64.
    X86_64,
    /// `0x0800`: FLAG_X8664_LIBX32.
    X32,
    /// `0x0500`: FLAG_POWERPC_LIB64.
    Ppc64,
    /// `0x0a00`: FLAG_AARCH64_LIB64.
    Aarch64,
    /// Any other arch value (mips, riscv, s390, ...), kept for listing.
    Other(u16),
}

impl Arch {
    fn from_flags(flags: i32) -> Arch {
        match flags & FLAG_ARCH_MASK {
            0x0000 => Arch::I386,
            0x0300 => Arch::X86_64,
            0x0800 => Arch::X32,
            0x0500 => Arch::Ppc64,
            0x0a00 => Arch::Aarch64,
            other => Arch::Other((other >> 8) as u16),
        }
    }

    /// The 64-bit architecture of the machine this binary was built for, the one whose
    /// libraries a container on this host loads.
    pub fn native() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else if cfg!(target_arch = "powerpc64") {
            Arch::Ppc64
        } else {
            Arch::X86_64
        }
    }
}

/// Which layout a cache file had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Old,
    New,
    /// Old table followed by a new one; entries come from the new table.
    Compat,
}

/// One cache entry: a soname and the path ldconfig recorded for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The soname, e.g. `libcuda.so.1`.
    pub name: String,
    /// The recorded path, e.g. `/usr/lib/x86_64-linux-gnu/libcuda.so.1` (usually a symlink
    /// to the versioned file).
    pub path: PathBuf,
    pub arch: Arch,
    /// Whether the flags mark a glibc ELF library (FLAG_ELF_LIBC6), the only kind the
    /// loader uses today.
    pub elf_libc6: bool,
    /// Whether the flags mark an ELF library of any libc (FLAG_ELF or FLAG_ELF_LIBC6): what
    /// ldconfig records for a 32-bit library that does not link libc itself.
    pub elf: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LdCacheError {
    #[error("cannot read ld.so.cache {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an ld.so.cache file (unknown magic)")]
    BadMagic { path: PathBuf },
    #[error("{path}: truncated: {what} needs {needed} bytes, the file has {len}")]
    Truncated {
        path: PathBuf,
        what: &'static str,
        needed: u64,
        len: usize,
    },
    #[error("{path}: big-endian cache files are not supported")]
    BigEndian { path: PathBuf },
}

/// A parsed `ld.so.cache`.
#[derive(Debug, Clone)]
pub struct LdCache {
    path: PathBuf,
    format: Format,
    entries: Vec<Entry>,
    /// Entries whose string offsets pointed outside the file or at invalid text.
    skipped: usize,
}

impl LdCache {
    /// Read and parse the cache at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<LdCache, LdCacheError> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| LdCacheError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        LdCache::parse(path, &data)
    }

    /// Parse cache bytes; `path` is only used in messages.
    pub fn parse(path: impl AsRef<Path>, data: &[u8]) -> Result<LdCache, LdCacheError> {
        let path = path.as_ref().to_path_buf();
        let mut skipped = 0;
        if data.starts_with(MAGIC_OLD) {
            let nlibs = read_u32(data, 12).ok_or_else(|| truncated(&path, "header", 16, data))?;
            let table_end = OLD_HEADER_LEN as u64 + u64::from(nlibs) * OLD_ENTRY_LEN as u64;
            if table_end > data.len() as u64 {
                return Err(truncated(&path, "old entry table", table_end, data));
            }
            let table_end = table_end as usize;
            let new_start = (table_end + 7) & !7;
            if data.len() >= new_start + NEW_HEADER_LEN && is_new_magic(&data[new_start..]) {
                let entries = parse_new(&path, &data[new_start..], &mut skipped)?;
                return Ok(LdCache {
                    path,
                    format: Format::Compat,
                    entries,
                    skipped,
                });
            }
            // Old-format string offsets are relative to the end of the table.
            let strings = &data[table_end..];
            let entries = read_entries(
                data,
                OLD_HEADER_LEN,
                OLD_ENTRY_LEN,
                nlibs,
                strings,
                &mut skipped,
            );
            return Ok(LdCache {
                path,
                format: Format::Old,
                entries,
                skipped,
            });
        }
        if is_new_magic(data) {
            let entries = parse_new(&path, data, &mut skipped)?;
            return Ok(LdCache {
                path,
                format: Format::New,
                entries,
                skipped,
            });
        }
        if data.len() < MAGIC_NEW.len() && MAGIC_NEW.starts_with(data) && !data.is_empty() {
            return Err(truncated(&path, "header", NEW_HEADER_LEN as u64, data));
        }
        Err(LdCacheError::BadMagic { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Every entry, in file order (ldconfig sorts them, most specific first).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// How many entries were dropped because their strings were unreadable.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// glibc ELF entries of the native 64-bit architecture.
    pub fn native_libraries(&self) -> impl Iterator<Item = &Entry> {
        let arch = Arch::native();
        self.entries
            .iter()
            .filter(move |e| e.elf_libc6 && e.arch == arch)
    }

    /// ELF entries of the 32-bit x86 architecture (what `compat32` mounts), on x86_64 only.
    pub fn i386_libraries(&self) -> impl Iterator<Item = &Entry> {
        let on_x86_64 = Arch::native() == Arch::X86_64;
        self.entries
            .iter()
            .filter(move |e| on_x86_64 && e.elf && e.arch == Arch::I386)
    }

    /// Native 64-bit entries whose soname starts with any of `prefixes`, in file order.
    pub fn lookup<'a>(&'a self, prefixes: &'a [&'a str]) -> impl Iterator<Item = &'a Entry> + 'a {
        self.native_libraries()
            .filter(move |e| prefixes.iter().any(|p| e.name.starts_with(p)))
    }
}

fn truncated(path: &Path, what: &'static str, needed: u64, data: &[u8]) -> LdCacheError {
    LdCacheError::Truncated {
        path: path.to_path_buf(),
        what,
        needed,
        len: data.len(),
    }
}

fn is_new_magic(data: &[u8]) -> bool {
    data.len() >= MAGIC_NEW.len() + VERSION_NEW.len()
        && data.starts_with(MAGIC_NEW)
        && &data[MAGIC_NEW.len()..MAGIC_NEW.len() + VERSION_NEW.len()] == VERSION_NEW
}

/// Parse a new-format table; `data` starts at the new header and string offsets are
/// relative to it.
fn parse_new(path: &Path, data: &[u8], skipped: &mut usize) -> Result<Vec<Entry>, LdCacheError> {
    if data.len() < NEW_HEADER_LEN {
        return Err(truncated(path, "header", NEW_HEADER_LEN as u64, data));
    }
    let nlibs = read_u32(data, 20).unwrap_or(0);
    // flags byte: 0 unset (old writers, native = little endian here), 1 invalid,
    // 2 little endian, 3 big endian.
    if data[28] & 3 == 3 {
        return Err(LdCacheError::BigEndian {
            path: path.to_path_buf(),
        });
    }
    let table_end = NEW_HEADER_LEN as u64 + u64::from(nlibs) * NEW_ENTRY_LEN as u64;
    if table_end > data.len() as u64 {
        return Err(truncated(path, "entry table", table_end, data));
    }
    Ok(read_entries(
        data,
        NEW_HEADER_LEN,
        NEW_ENTRY_LEN,
        nlibs,
        data,
        skipped,
    ))
}

/// The `nlibs` entries of the table after a `header_len`-byte header, each starting with
/// (flags, key, value) as u32s, names and paths looked up in `strings`; an entry whose name or
/// path is missing or empty is counted in `skipped`. The caller checked that the table is in
/// bounds.
fn read_entries(
    data: &[u8],
    header_len: usize,
    entry_len: usize,
    nlibs: u32,
    strings: &[u8],
    skipped: &mut usize,
) -> Vec<Entry> {
    let mut entries = Vec::with_capacity(nlibs as usize);
    for i in 0..nlibs as usize {
        let at = header_len + i * entry_len;
        let flags = read_u32(data, at).unwrap_or(0) as i32;
        let key = read_u32(data, at + 4).unwrap_or(u32::MAX);
        let value = read_u32(data, at + 8).unwrap_or(u32::MAX);
        match make_entry(strings, flags, key, value) {
            Some(e) => entries.push(e),
            None => *skipped += 1,
        }
    }
    entries
}

fn make_entry(strings: &[u8], flags: i32, key: u32, value: u32) -> Option<Entry> {
    let name = cstr_at(strings, key)?;
    let path = cstr_at(strings, value)?;
    if name.is_empty() || path.is_empty() {
        return None;
    }
    Some(Entry {
        name: name.to_owned(),
        path: PathBuf::from(path),
        arch: Arch::from_flags(flags),
        elf_libc6: flags & FLAG_TYPE_MASK == FLAG_ELF_LIBC6,
        elf: matches!(flags & FLAG_TYPE_MASK, FLAG_ELF | FLAG_ELF_LIBC6),
    })
}

/// The NUL-terminated UTF-8 string at `offset`, or None when out of bounds, unterminated or
/// not UTF-8.
fn cstr_at(data: &[u8], offset: u32) -> Option<&str> {
    let rest = data.get(offset as usize..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new-format cache with the given (flags, key, value) entries, built by hand.
    fn new_cache(entries: &[(i32, &str, &str)]) -> Vec<u8> {
        let mut strings = Vec::new();
        let mut offsets = Vec::new();
        let strings_start = NEW_HEADER_LEN + entries.len() * NEW_ENTRY_LEN;
        for (_, k, v) in entries {
            let ko = strings_start + strings.len();
            strings.extend_from_slice(k.as_bytes());
            strings.push(0);
            let vo = strings_start + strings.len();
            strings.extend_from_slice(v.as_bytes());
            strings.push(0);
            offsets.push((ko as u32, vo as u32));
        }
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC_NEW);
        out.extend_from_slice(VERSION_NEW);
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        out.push(2); // little endian
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&[0; 16]);
        assert_eq!(out.len(), NEW_HEADER_LEN);
        for ((flags, _, _), (k, v)) in entries.iter().zip(offsets) {
            out.extend_from_slice(&flags.to_le_bytes());
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&0u64.to_le_bytes());
        }
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn parses_hand_built_new_cache_and_filters_arch() {
        let data = new_cache(&[
            (
                0x0303,
                "libcuda.so.1",
                "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
            ),
            (
                0x0003,
                "libcuda.so.1",
                "/usr/lib/i386-linux-gnu/libcuda.so.1",
            ),
            (0x0303, "libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"),
        ]);
        let cache = LdCache::parse("mem", &data).unwrap();
        assert_eq!(cache.format(), Format::New);
        assert_eq!(cache.entries().len(), 3);
        let found: Vec<_> = cache.lookup(&["libcuda"]).collect();
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].path,
            Path::new("/usr/lib/x86_64-linux-gnu/libcuda.so.1")
        );
        assert_eq!(cache.entries()[1].arch, Arch::I386);
    }

    #[test]
    fn bad_offsets_skip_entries_without_failing() {
        let mut data = new_cache(&[(0x0303, "liba.so.1", "/a"), (0x0303, "libb.so.1", "/b")]);
        // Point the second entry's key far outside the file.
        let at = NEW_HEADER_LEN + NEW_ENTRY_LEN + 4;
        data[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let cache = LdCache::parse("mem", &data).unwrap();
        assert_eq!(cache.entries().len(), 1);
        assert_eq!(cache.skipped(), 1);
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        let data = new_cache(&[(0x0303, "liba.so.1", "/a")]);
        for cut in [0, 5, 20, 47, 60] {
            let err = LdCache::parse("mem", &data[..cut]).unwrap_err();
            assert!(
                matches!(
                    err,
                    LdCacheError::Truncated { .. } | LdCacheError::BadMagic { .. }
                ),
                "{cut}: {err}"
            );
        }
        let err = LdCache::parse("mem", b"\x7fELF not a cache at all").unwrap_err();
        assert!(matches!(err, LdCacheError::BadMagic { .. }));
        // A huge nlibs must not allocate or read past the end.
        let mut huge = data.clone();
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            LdCache::parse("mem", &huge),
            Err(LdCacheError::Truncated { .. })
        ));
    }

    #[test]
    fn big_endian_flag_is_refused() {
        let mut data = new_cache(&[(0x0303, "liba.so.1", "/a")]);
        data[28] = 3;
        assert!(matches!(
            LdCache::parse("mem", &data),
            Err(LdCacheError::BigEndian { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = LdCache::parse("mem", &data);
        }

        #[test]
        fn never_panics_on_mutated_caches(
            flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 0..16),
            cut in 0usize..400,
            old_magic in proptest::bool::ANY,
        ) {
            let mut data = new_cache(&[
                (0x0303, "libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"),
                (0x0303, "libnvidia-ml.so.1", "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"),
            ]);
            if old_magic {
                let mut old = Vec::new();
                old.extend_from_slice(MAGIC_OLD);
                old.push(0);
                old.extend_from_slice(&1u32.to_le_bytes());
                old.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0]);
                old.extend_from_slice(&[0; 4]);
                old.extend_from_slice(&data);
                data = old;
            }
            for (at, b) in flips {
                if let Some(x) = data.get_mut(at) {
                    *x = b;
                }
            }
            data.truncate(cut.max(1));
            if let Ok(cache) = LdCache::parse("mem", &data) {
                for e in cache.entries() {
                    proptest::prop_assert!(!e.name.is_empty());
                }
            }
        }
    }
}
