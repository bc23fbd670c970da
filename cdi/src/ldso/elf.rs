//! What ldconfig reads from a shared object: ELF class and machine, the soname, and whether
//! it needs glibc. Read with bounded `pread`s; anything malformed is "not a library".

use std::fs::File;
use std::os::unix::fs::FileExt;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_SONAME: u64 = 14;
pub const EM_386: u16 = 3;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

/// Bounds on what one file can make us read.
const MAX_PHDRS: usize = 512;
const MAX_DYN: usize = 4096;
const MAX_STRING: usize = 4096;

/// A shared object as ldconfig sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfLib {
    pub class64: bool,
    pub machine: u16,
    pub soname: Option<String>,
    /// Among its DT_NEEDED: libc.so.6 or libm.so.6 (ldconfig's "libc6" for 32-bit objects).
    pub needs_libc6: bool,
}

fn read_exact_at(f: &File, off: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off).ok()?;
    Some(buf)
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// The library `f` is, or None when it is not a little-endian ELF object we can read.
pub fn read(f: &File) -> Option<ElfLib> {
    let ident = read_exact_at(f, 0, 64)?;
    if &ident[..4] != b"\x7fELF" || ident[5] != 1 {
        return None;
    }
    let class64 = match ident[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let machine = u16le(&ident, 18);
    let (phoff, phentsize, phnum) = if class64 {
        (
            u64le(&ident, 32),
            u16le(&ident, 54) as usize,
            u16le(&ident, 56) as usize,
        )
    } else {
        (
            u64::from(u32le(&ident, 28)),
            u16le(&ident, 42) as usize,
            u16le(&ident, 44) as usize,
        )
    };
    let min_ent = if class64 { 56 } else { 32 };
    if phnum == 0 || phnum > MAX_PHDRS || phentsize < min_ent {
        return None;
    }
    let table = read_exact_at(f, phoff, phentsize.checked_mul(phnum)?)?;
    let segments: Vec<Segment> = (0..phnum)
        .map(|i| {
            let p = &table[i * phentsize..];
            if class64 {
                Segment {
                    kind: u32le(p, 0),
                    offset: u64le(p, 8),
                    vaddr: u64le(p, 16),
                    filesz: u64le(p, 32),
                }
            } else {
                Segment {
                    kind: u32le(p, 0),
                    offset: u64::from(u32le(p, 4)),
                    vaddr: u64::from(u32le(p, 8)),
                    filesz: u64::from(u32le(p, 16)),
                }
            }
        })
        .collect();
    let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) else {
        // No dynamic section: a static object; ldconfig names it after the file.
        return Some(ElfLib {
            class64,
            machine,
            soname: None,
            needs_libc6: false,
        });
    };
    let entsize = if class64 { 16 } else { 8 };
    let count = (dynamic.filesz as usize / entsize).min(MAX_DYN);
    let dyns = read_exact_at(f, dynamic.offset, count * entsize)?;
    let mut strtab = None;
    let mut soname_at = None;
    let mut needed = Vec::new();
    for i in 0..count {
        let e = &dyns[i * entsize..];
        let (tag, val) = if class64 {
            (u64le(e, 0), u64le(e, 8))
        } else {
            (u64::from(u32le(e, 0)), u64::from(u32le(e, 4)))
        };
        match tag {
            DT_NULL => break,
            DT_STRTAB => strtab = Some(val),
            DT_SONAME => soname_at = Some(val),
            DT_NEEDED => needed.push(val),
            _ => {}
        }
    }
    // DT_STRTAB is an address: the file offset is where a PT_LOAD segment maps it.
    let strtab_off = strtab.and_then(|addr| {
        segments
            .iter()
            .filter(|s| s.kind == PT_LOAD)
            .find(|s| addr >= s.vaddr && addr - s.vaddr < s.filesz)
            .map(|s| addr - s.vaddr + s.offset)
    });
    let string = |at: u64| -> Option<String> {
        let off = strtab_off?.checked_add(at)?;
        let mut buf = vec![0u8; MAX_STRING];
        let n = f.read_at(&mut buf, off).ok()?;
        let end = buf[..n].iter().position(|&b| b == 0)?;
        String::from_utf8(buf[..end].to_vec()).ok()
    };
    let soname = soname_at.and_then(string).filter(|s| !s.is_empty());
    let needs_libc6 = needed
        .iter()
        .filter_map(|&at| string(at))
        .any(|n| n == "libc.so.6" || n == "libm.so.6");
    Some(ElfLib {
        class64,
        machine,
        soname,
        needs_libc6,
    })
}

/// The cache flags ldconfig gives such a library (glibc's FLAG_*), or None for an
/// architecture this build does not index.
pub fn cache_flags(lib: &ElfLib) -> Option<i32> {
    const FLAG_ELF: i32 = 0x0001;
    const FLAG_ELF_LIBC6: i32 = 0x0003;
    match (lib.machine, lib.class64) {
        (EM_X86_64, true) => Some(0x0300 | FLAG_ELF_LIBC6),
        (EM_X86_64, false) => Some(0x0800 | FLAG_ELF_LIBC6),
        (EM_AARCH64, true) => Some(0x0a00 | FLAG_ELF_LIBC6),
        (EM_386, false) => Some(if lib.needs_libc6 {
            FLAG_ELF_LIBC6
        } else {
            FLAG_ELF
        }),
        _ => None,
    }
}
