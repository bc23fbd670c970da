//! Awkward paths for the differential tests of code that handles paths as text where `Path`
//! would parse components (capabilities::select, discover::host::join_root).

/// `""`, `"/"`, then every sequence of 1 to `depth` of `parts` joined by `/`, each with every
/// (leading, trailing) pair of `ends` around it.
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
