//! The container's `/etc/ld.so.conf`, read as ldconfig reads it (`#` comments, `include`
//! glob patterns, `hwcap` lines ignored, `DIR=TYPE` suffixes), every path resolved inside
//! the rootfs. The image wrote these files: the number of files, the include depth and the
//! directories taken are bounded, and an unreadable entry is skipped.

use std::path::{Component, Path, PathBuf};

use crate::rootfs::{Kind, Root};

const MAX_DEPTH: usize = 8;
const MAX_FILES: usize = 256;
const MAX_DIRS: usize = 1024;
const MAX_FILE_BYTES: usize = 1 << 20;

/// The directories `conf` names, in order (duplicates kept; the caller merges them).
pub fn directories(root: &Root, conf: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut files = 0;
    if let Some(data) = read_conf(root, conf) {
        parse(root, conf, &data, 0, &mut files, &[], &mut out);
    }
    out
}

/// [`directories`] of `conf` whose contents, `data`, the caller has already read. The
/// files it includes are read here, except those in `known` (path, contents): the entries
/// the caller has just written, whose text it has.
pub fn directories_in(
    root: &Root,
    conf: &Path,
    data: &[u8],
    known: &[(&Path, &[u8])],
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut files = 0;
    parse(root, conf, data, 0, &mut files, known, &mut out);
    out
}

/// The first `MAX_FILE_BYTES` of the file `path`, when it exists and is not a directory
/// (what an include pattern matches). One open: the file's type is that of the open file,
/// and `O_NONBLOCK` keeps a FIFO from blocking the open.
fn read_conf(root: &Root, path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let file = root.open_read(path).ok()?;
    let meta = file.metadata().ok()?;
    if meta.is_dir() {
        return None;
    }
    let mut data = Vec::with_capacity((meta.len() as usize).min(MAX_FILE_BYTES) + 1);
    file.take(MAX_FILE_BYTES as u64)
        .read_to_end(&mut data)
        .ok()?;
    Some(data)
}

fn parse(
    root: &Root,
    file: &Path,
    data: &[u8],
    depth: usize,
    files: &mut usize,
    known: &[(&Path, &[u8])],
    out: &mut Vec<PathBuf>,
) {
    if depth > MAX_DEPTH || *files >= MAX_FILES {
        return;
    }
    *files += 1;
    let text = String::from_utf8_lossy(&data[..data.len().min(MAX_FILE_BYTES)]).into_owned();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("include")
            .filter(|r| r.starts_with([' ', '\t']))
        {
            for pattern in rest.split([' ', '\t']).filter(|p| !p.is_empty()) {
                let pattern = if pattern.starts_with('/') {
                    PathBuf::from(pattern)
                } else {
                    file.parent().unwrap_or(Path::new("/")).join(pattern)
                };
                for f in matching(root, &pattern) {
                    if depth + 1 > MAX_DEPTH || *files >= MAX_FILES {
                        break;
                    }
                    if let Some((_, data)) = known.iter().find(|(p, _)| *p == f.as_path()) {
                        parse(root, &f, data, depth + 1, files, known, out);
                    // A match that is gone or is a directory is skipped, as glob leaves it out.
                    } else if let Some(data) = read_conf(root, &f) {
                        parse(root, &f, &data, depth + 1, files, known, out);
                    }
                }
            }
        } else if line.len() > 5
            && line[..5].eq_ignore_ascii_case("hwcap")
            && line[5..].starts_with([' ', '\t'])
        {
            continue;
        } else {
            // `DIR=libc6` names the library type; the directory is before the `=`.
            let dir = line.split('=').next().unwrap_or("").trim_end();
            let dir = dir.trim_end_matches('/');
            if dir.starts_with('/') && out.len() < MAX_DIRS {
                out.push(PathBuf::from(dir));
            }
        }
    }
}

/// `*` and `?` matching of one name, as fnmatch without brackets.
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            matches(&pattern[1..], name) || (!name.is_empty() && matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// The existing paths `pattern` matches inside the rootfs, sorted (glob(3) in the C locale,
/// names starting with `.` matched only by a pattern that does too), directories left out.
pub fn glob(root: &Root, pattern: &Path) -> Vec<PathBuf> {
    matching(root, pattern)
        .into_iter()
        .filter(|p| {
            root.stat(p)
                .is_ok_and(|st| Kind::of_mode(st.st_mode) != Kind::Dir)
        })
        .collect()
}

/// The paths `pattern` matches, sorted, before [`glob`] leaves out the missing ones and the
/// directories: the last component of a literal pattern is not looked up here.
fn matching(root: &Root, pattern: &Path) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut prefixes = vec![PathBuf::from("/")];
    for c in pattern.components() {
        let Component::Normal(part) = c else {
            continue;
        };
        let p = part.as_bytes();
        let mut next = Vec::new();
        if p.contains(&b'*') || p.contains(&b'?') {
            for prefix in &prefixes {
                let Ok(entries) = root.read_dir(prefix) else {
                    continue;
                };
                let mut names: Vec<_> = entries
                    .into_iter()
                    .map(|(n, _)| n)
                    .filter(|n| {
                        let n = n.as_bytes();
                        (p.first() == Some(&b'.') || n.first() != Some(&b'.')) && matches(p, n)
                    })
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| prefix.join(n)));
            }
        } else {
            next = prefixes.iter().map(|x| x.join(part)).collect();
        }
        next.truncate(MAX_FILES);
        prefixes = next;
    }
    prefixes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn includes_comments_types_and_globs() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("etc/ld.so.conf.d")).unwrap();
        fs::write(
            r.join("etc/ld.so.conf"),
            "# comment\ninclude /etc/ld.so.conf.d/*.conf\n/opt/a/ # trailing\n\thwcap 0 nosegneg\n/opt/b=libc6\nrelative/dir\n",
        )
        .unwrap();
        fs::write(r.join("etc/ld.so.conf.d/b.conf"), "/b\n").unwrap();
        fs::write(r.join("etc/ld.so.conf.d/a.conf"), "/a\ninclude x/*.conf\n").unwrap();
        fs::write(r.join("etc/ld.so.conf.d/.hidden.conf"), "/hidden\n").unwrap();
        fs::write(r.join("etc/ld.so.conf.d/c.notconf"), "/c\n").unwrap();
        fs::create_dir_all(r.join("etc/ld.so.conf.d/x")).unwrap();
        fs::write(r.join("etc/ld.so.conf.d/x/n.conf"), "/nested\n").unwrap();
        let root = Root::open(r).unwrap();
        assert_eq!(
            directories(&root, Path::new("/etc/ld.so.conf")),
            ["/a", "/nested", "/b", "/opt/a", "/opt/b"].map(PathBuf::from)
        );
    }

    #[test]
    fn include_loops_and_huge_trees_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::write(r.join("etc/ld.so.conf"), "/x\ninclude /etc/ld.so.conf\n").unwrap();
        let root = Root::open(r).unwrap();
        let dirs = directories(&root, Path::new("/etc/ld.so.conf"));
        assert_eq!(dirs.len(), MAX_DEPTH + 1);
    }

    #[test]
    fn fnmatch_subset() {
        assert!(matches(b"*.conf", b"a.conf"));
        assert!(!matches(b"*.conf", b"a.conf.bak"));
        assert!(matches(b"?.c*", b"a.conf"));
        assert!(matches(b"lib*.so.*.*", b"libcuda.so.550.54.14"));
        assert!(!matches(b"lib*.so.*.*", b"libcuda.so.1"));
    }
}
