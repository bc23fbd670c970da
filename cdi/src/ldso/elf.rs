//! What ldconfig reads from a shared object: ELF class and machine, the soname, and whether
//! it needs glibc. Read with bounded `pread`s; anything malformed is "not a library".
//! One read of the file's head serves whatever lies in it (the whole of a small library;
//! the ELF and program headers and usually the dynamic strings of a large one), so a library
//! costs one `pread` instead of four or more; what lies past it is read as before.

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

/// How much of the file the first read takes.
const HEAD: usize = 16 * 1024;

/// The file with its first `HEAD` bytes (fewer at its end) already read. A short read is
/// not taken for the end of the file: what lies past the head is read from the file, so the
/// answers are those of reading each piece where it lies.
struct Reader<'a> {
    f: &'a File,
    head: Vec<u8>,
}

impl<'a> Reader<'a> {
    fn new(f: &'a File) -> Option<Self> {
        let mut head = vec![0u8; HEAD];
        // One read: a file shorter than the head (a library of a few KiB) is read whole
        // without a second call to find its end.
        let got = f.read_at(&mut head, 0).ok()?;
        head.truncate(got);
        Some(Self { f, head })
    }

    /// Exactly `len` bytes at `off`, or None where the file is shorter.
    fn exact(&self, off: u64, len: usize) -> Option<std::borrow::Cow<'_, [u8]>> {
        let end = off.checked_add(len as u64)?;
        if end <= self.head.len() as u64 {
            return Some(std::borrow::Cow::Borrowed(
                &self.head[off as usize..end as usize],
            ));
        }
        let mut buf = vec![0u8; len];
        self.f.read_exact_at(&mut buf, off).ok()?;
        Some(std::borrow::Cow::Owned(buf))
    }

    /// The NUL-terminated string at `off`, at most MAX_STRING bytes with its NUL.
    fn string(&self, off: u64) -> Option<String> {
        let bytes = if off < self.head.len() as u64 {
            let window = &self.head[off as usize..];
            let window = &window[..window.len().min(MAX_STRING)];
            match window.iter().position(|&b| b == 0) {
                Some(end) => window[..end].to_vec(),
                None if window.len() == MAX_STRING => return None,
                None => self.string_read(off)?,
            }
        } else {
            self.string_read(off)?
        };
        String::from_utf8(bytes).ok()
    }

    fn string_read(&self, off: u64) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; MAX_STRING];
        let n = self.f.read_at(&mut buf, off).ok()?;
        let end = buf[..n].iter().position(|&b| b == 0)?;
        buf.truncate(end);
        Some(buf)
    }
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
    let r = Reader::new(f)?;
    let ident = r.exact(0, 64)?;
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
    let table = r.exact(phoff, phentsize.checked_mul(phnum)?)?;
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
    let dyns = r.exact(dynamic.offset, count * entsize)?;
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
    let string = |at: u64| -> Option<String> { r.string(strtab_off?.checked_add(at)?) };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A little-endian ELF64 x86-64 object with one PT_LOAD mapping the whole file at vaddr
    /// 0x1000, its dynamic section at `dyn_off` and its string table at `str_off`, holding
    /// the soname and a DT_NEEDED of libc.so.6; `len` bytes long.
    fn elf(dyn_off: usize, str_off: usize, len: usize) -> Vec<u8> {
        const VADDR: u64 = 0x1000;
        let mut b = vec![0u8; len];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&2u16.to_le_bytes());
        let phdr = |b: &mut Vec<u8>, at: usize, kind: u32, off: u64, vaddr: u64, size: u64| {
            b[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            b[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
            b[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        };
        phdr(&mut b, 64, PT_LOAD, 0, VADDR, len as u64);
        phdr(
            &mut b,
            120,
            PT_DYNAMIC,
            dyn_off as u64,
            VADDR + dyn_off as u64,
            64,
        );
        let strings = b"\0libfake.so.1\0libc.so.6\0";
        b[str_off..str_off + strings.len()].copy_from_slice(strings);
        let dyns = [
            (DT_STRTAB, VADDR + str_off as u64),
            (DT_SONAME, 1),
            (DT_NEEDED, 14),
            (DT_NULL, 0),
        ];
        for (i, (tag, val)) in dyns.iter().enumerate() {
            let at = dyn_off + i * 16;
            b[at..at + 8].copy_from_slice(&tag.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&val.to_le_bytes());
        }
        b
    }

    fn read_bytes(bytes: &[u8]) -> Option<ElfLib> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        read(&f)
    }

    #[test]
    fn reads_the_same_wherever_the_sections_lie_against_the_head() {
        let want = Some(ElfLib {
            class64: true,
            machine: EM_X86_64,
            soname: Some("libfake.so.1".into()),
            needs_libc6: true,
        });
        // In the head; past it; a dynamic section straddling its end; strings straddling it;
        // a file exactly as long as the head.
        for (dyn_off, str_off, len) in [
            (200, 400, 1000),
            (HEAD + 100, HEAD + 900, 2 * HEAD),
            (HEAD - 32, 400, 2 * HEAD),
            (200, HEAD - 5, 2 * HEAD),
            (200, HEAD - 30, HEAD),
        ] {
            assert_eq!(
                read_bytes(&elf(dyn_off, str_off, len)),
                want,
                "dynamic at {dyn_off}, strings at {str_off}, {len} bytes"
            );
        }
    }

    #[test]
    fn a_file_cut_short_is_not_a_library() {
        // The dynamic section lies past the end: within the head, past a whole-file head,
        // and past a file longer than the head.
        let whole = elf(HEAD + 100, 400, 2 * HEAD);
        assert_eq!(read_bytes(&whole[..HEAD + 110]), None);
        assert_eq!(read_bytes(&whole[..HEAD - 1]), None);
        assert_eq!(read_bytes(&whole[..40]), None);
    }

    #[test]
    fn a_string_without_its_nul_before_the_end_is_no_soname() {
        // The soname runs to the end of the file: ldconfig's reader finds no NUL, no soname.
        let mut b = elf(200, 400, 1000);
        let at = 400 + 1;
        b.truncate(at + 5);
        b[at..].copy_from_slice(b"libfa");
        // The dynamic section at 200 still reads; the strings do not.
        assert_eq!(
            read_bytes(&b),
            Some(ElfLib {
                class64: true,
                machine: EM_X86_64,
                soname: None,
                needs_libc6: false,
            })
        );
    }
}
