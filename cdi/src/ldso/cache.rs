//! Writing glibc's `ld.so.cache` in the "new" layout (`glibc-ld.so.cache1.1`, what
//! ldconfig writes by default since glibc 2.32 and every loader since 2.2 reads).
//!
//! The loader binary-searches the entries with `_dl_cache_libcmp` (digit runs compared as
//! numbers), so they must be in exactly ldconfig's order: by soname descending, then flags
//! descending, ties in the order they were added (ldconfig inserts each entry after those
//! that compare equal, and it adds directories in search order, so for a soname found in
//! two directories the first directory's entry comes first and the loader takes it).

use std::cmp::Ordering;
use std::collections::HashMap;

const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const HEADER_LEN: usize = 48;
const ENTRY_LEN: usize = 24;
/// `cache_file_new_flags_endian_little`.
const ENDIAN_LITTLE: u8 = 2;

/// One cache entry: `key` (the soname) found at `value` (its path in the container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub key: String,
    pub value: String,
    pub flags: i32,
}

/// glibc's `_dl_cache_libcmp`, on bytes as C `char` (signed on x86).
pub fn libcmp(a: &[u8], b: &[u8]) -> i32 {
    let digit = |c: u8| c.is_ascii_digit();
    let (mut i, mut j) = (0, 0);
    let at = |s: &[u8], k: usize| s.get(k).copied().unwrap_or(0);
    while at(a, i) != 0 {
        let (c1, c2) = (at(a, i), at(b, j));
        if digit(c1) {
            if digit(c2) {
                let mut v1: i32 = 0;
                while digit(at(a, i)) {
                    v1 = v1.wrapping_mul(10).wrapping_add(i32::from(at(a, i) - b'0'));
                    i += 1;
                }
                let mut v2: i32 = 0;
                while digit(at(b, j)) {
                    v2 = v2.wrapping_mul(10).wrapping_add(i32::from(at(b, j) - b'0'));
                    j += 1;
                }
                if v1 != v2 {
                    return v1.wrapping_sub(v2);
                }
            } else {
                return 1;
            }
        } else if digit(c2) {
            return -1;
        } else if c1 != c2 {
            return i32::from(c1 as i8) - i32::from(c2 as i8);
        } else {
            i += 1;
            j += 1;
        }
    }
    i32::from(at(a, i) as i8) - i32::from(at(b, j) as i8)
}

/// ldconfig's `compare` for entries without hwcaps.
fn compare(e1: &CacheEntry, e2: &CacheEntry) -> Ordering {
    let res = libcmp(e2.key.as_bytes(), e1.key.as_bytes());
    if res != 0 {
        return res.cmp(&0);
    }
    e2.flags.cmp(&e1.flags)
}

/// The cache file for `entries` (given in the order ldconfig would add them).
pub fn build(mut entries: Vec<CacheEntry>) -> Vec<u8> {
    // Stable: equal entries keep the order they were added in.
    entries.sort_by(compare);
    // The string table: each path once, a soname pointing into its path's tail when the
    // path ends in "/soname" (as ldconfig's string table shares suffixes).
    let mut strings: Vec<u8> = Vec::new();
    let mut offsets: HashMap<String, u32> = HashMap::new();
    let base = (HEADER_LEN + entries.len() * ENTRY_LEN) as u32;
    let mut intern = |s: &str, strings: &mut Vec<u8>| -> u32 {
        if let Some(&o) = offsets.get(s) {
            return o;
        }
        let o = base + strings.len() as u32;
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        offsets.insert(s.to_string(), o);
        o
    };
    let mut table = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in &entries {
        let value = intern(&e.value, &mut strings);
        let key = if e.value.ends_with(&format!("/{}", e.key)) {
            value + (e.value.len() - e.key.len()) as u32
        } else {
            intern(&e.key, &mut strings)
        };
        table.extend_from_slice(&e.flags.to_le_bytes());
        table.extend_from_slice(&key.to_le_bytes());
        table.extend_from_slice(&value.to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes()); // osversion
        table.extend_from_slice(&0u64.to_le_bytes()); // hwcap
    }
    let mut out = Vec::with_capacity(HEADER_LEN + table.len() + strings.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    out.push(ENDIAN_LITTLE);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&0u32.to_le_bytes()); // extension_offset: none
    out.extend_from_slice(&[0; 12]);
    debug_assert_eq!(out.len(), HEADER_LEN);
    out.extend_from_slice(&table);
    out.extend_from_slice(&strings);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::ldcache::LdCache;

    #[test]
    fn libcmp_compares_digit_runs_as_numbers() {
        assert!(libcmp(b"libfoo.so.10", b"libfoo.so.9") > 0);
        assert!(libcmp(b"libfoo.so.9", b"libfoo.so.10") < 0);
        assert_eq!(libcmp(b"libfoo.so.1", b"libfoo.so.1"), 0);
        assert!(libcmp(b"libz.so", b"liba.so") > 0);
        // A digit sorts after a non-digit.
        assert!(libcmp(b"lib1", b"liba") > 0);
        assert!(libcmp(b"libfoo.so", b"libfoo.so.1") < 0);
    }

    #[test]
    fn built_cache_reads_back_in_ldconfig_order() {
        let e = |k: &str, v: &str, f: i32| CacheEntry {
            key: k.into(),
            value: v.into(),
            flags: f,
        };
        let data = build(vec![
            e("liba.so.1", "/usr/lib/liba.so.1", 0x0303),
            e("libz.so.1", "/usr/lib/libz.so.1", 0x0303),
            e("liba.so.1", "/opt/liba.so.1", 0x0303),
            e("liba.so.1", "/usr/lib32/liba.so.1", 0x0001),
        ]);
        let cache = LdCache::parse("mem", &data).unwrap();
        let got: Vec<(&str, &str)> = cache
            .entries()
            .iter()
            .map(|e| (e.name.as_str(), e.path.to_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("libz.so.1", "/usr/lib/libz.so.1"),
                ("liba.so.1", "/usr/lib/liba.so.1"),
                ("liba.so.1", "/opt/liba.so.1"),
                ("liba.so.1", "/usr/lib32/liba.so.1"),
            ]
        );
    }
}
