//! Paths handled as text where `Path` would parse them into components (capabilities::select,
//! discover::host::join_root): `Path`'s parsing, hashing and joining cost hundreds of
//! instructions a call, and the paths of a spec or of a host are nearly all already in the
//! form `Path` would give them back in.

/// Whether `p` is the text `Path::new(p).components()` gives back when joined by `/`: no
/// empty component (`//`), no `.` after the first component, no trailing `/` (other than
/// `/` itself). Paths in that form compare, hash and join as text exactly as `Path`s do.
pub(crate) fn is_canonical(p: &[u8]) -> bool {
    if p.len() > 1 && p.ends_with(b"/") {
        return false;
    }
    // From one `/` to the next (a test of every byte cost about 40k more instructions of a
    // resolve with the spec made at create time, callgrind): what follows a `/` must be
    // neither another `/` nor a `.` that ends its component.
    let Some(mut at) = p.iter().position(|&b| b == b'/') else {
        return true;
    };
    loop {
        if let (Some(b'/'), _) | (Some(b'.'), None | Some(b'/')) = (p.get(at + 1), p.get(at + 2)) {
            return false;
        }
        match p[at + 1..].iter().position(|&b| b == b'/') {
            Some(k) => at += 1 + k,
            None => return true,
        }
    }
}

/// Input for the differential tests against `Path`: `""`, `"/"`, then every sequence of 1 to
/// `depth` of `parts` joined by `/`, each with every (leading, trailing) pair of `ends`
/// around it.
#[cfg(test)]
pub(crate) fn awkward_paths(parts: &[&str], depth: usize, ends: &[(&str, &str)]) -> Vec<String> {
    let mut seqs: Vec<Vec<&str>> = vec![vec![]];
    let mut out = vec![String::new(), "/".to_string()];
    for _ in 0..depth {
        seqs = seqs
            .iter()
            .flat_map(|s| {
                parts.iter().map(move |p| {
                    let mut s = s.clone();
                    s.push(*p);
                    s
                })
            })
            .collect();
        for s in &seqs {
            let body = s.join("/");
            for (lead, trail) in ends {
                out.push(format!("{lead}{body}{trail}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    #[test]
    fn canonical_is_what_paths_components_give_back() {
        let paths = awkward_paths(
            &["a", "..", ".", "", ".hidden", "libx.so.1"],
            4,
            &[
                ("", ""),
                ("/", ""),
                ("", "/"),
                ("//", ""),
                ("/", "/"),
                ("./", ""),
            ],
        );
        let mut canonical = 0;
        for p in &paths {
            let rejoined: PathBuf = Path::new(p).components().collect();
            let want = rejoined.as_os_str() == p.as_str();
            assert_eq!(
                is_canonical(p.as_bytes()),
                want,
                "{p:?} (Path: {rejoined:?})"
            );
            canonical += usize::from(want);
        }
        assert!(
            canonical > 1000 && canonical < paths.len() / 2,
            "{canonical} of {}",
            paths.len()
        );
    }
}
