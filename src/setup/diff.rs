//! A small line diff (longest common subsequence) for `nvbind setup --dry-run`. Config files are
//! a few hundred lines at most, so the quadratic table is fine.

use std::fmt::Write;
use std::path::Path;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Keep,
    Del,
    Add,
}

const CONTEXT: usize = 3;

pub fn unified(path: &Path, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(Op, &str, usize, usize)> = Vec::new(); // op, text, old line, new line
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((Op::Keep, a[i], i + 1, j + 1));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push((Op::Del, a[i], i + 1, j + 1));
            i += 1;
        } else {
            ops.push((Op::Add, b[j], i + 1, j + 1));
            j += 1;
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "--- {}", path.display());
    let _ = writeln!(out, "+++ {} (after nvbind setup)", path.display());
    // Mark the ops within CONTEXT lines of a change, then print runs of marked ops as hunks.
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != Op::Keep).collect();
    let mut show = vec![false; ops.len()];
    for &k in &changed {
        let lo = k.saturating_sub(CONTEXT);
        let hi = (k + CONTEXT + 1).min(ops.len());
        show[lo..hi].iter_mut().for_each(|s| *s = true);
    }
    let mut k = 0;
    while k < ops.len() {
        if !show[k] {
            k += 1;
            continue;
        }
        let start = k;
        while k < ops.len() && show[k] {
            k += 1;
        }
        let hunk = &ops[start..k];
        let old_n = hunk.iter().filter(|o| o.0 != Op::Add).count();
        let new_n = hunk.iter().filter(|o| o.0 != Op::Del).count();
        let _ = writeln!(
            out,
            "@@ -{},{} +{},{} @@",
            hunk[0].2, old_n, hunk[0].3, new_n
        );
        for (op, text, _, _) in hunk {
            let sign = match op {
                Op::Keep => ' ',
                Op::Del => '-',
                Op::Add => '+',
            };
            let _ = writeln!(out, "{sign}{text}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_added_and_removed_lines_with_context() {
        let d = unified(Path::new("f"), "a\nb\nc\n", "a\nB\nc\nd\n");
        assert!(d.contains("-b\n+B\n"), "{d}");
        assert!(d.contains("+d\n"), "{d}");
        assert!(d.contains(" a\n"), "{d}");
    }

    #[test]
    fn new_file_is_all_additions() {
        let d = unified(Path::new("f"), "", "x\ny\n");
        assert!(d.contains("@@ -1,0 +1,2 @@\n+x\n+y\n"), "{d}");
    }
}
