//! Side-by-side report of two runs (`--json` outputs): the reference runtime (runc) and the
//! candidate (nvbind), with a reason for each reference failure from a TSV file
//! (`case<TAB>reason`; a case name ending in `*` matches a prefix).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde_json::Value;

pub struct Run {
    pub runtime: String,
    pub seconds: f64,
    pub order: Vec<String>,
    pub cases: BTreeMap<String, (String, String)>,
}

pub fn load(path: &Path) -> Result<Run, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut order = Vec::new();
    let mut cases = BTreeMap::new();
    for c in v["cases"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("").to_string();
        let status = c["status"].as_str().unwrap_or("").to_string();
        let reason = c["reason"].as_str().unwrap_or("").to_string();
        order.push(name.clone());
        cases.insert(name, (status, reason));
    }
    Ok(Run {
        runtime: v["runtime"].as_str().unwrap_or("").to_string(),
        seconds: v["seconds"].as_f64().unwrap_or(0.0),
        order,
        cases,
    })
}

pub fn load_reasons(path: &Path) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn reason_for<'a>(reasons: &'a [(String, String)], case: &str) -> Option<&'a str> {
    reasons
        .iter()
        .find(|(k, _)| match k.strip_suffix('*') {
            Some(prefix) => case.starts_with(prefix),
            None => k == case,
        })
        .map(|(_, v)| v.as_str())
}

fn cell(status: Option<&str>) -> &'static str {
    match status {
        Some("pass") => "pass",
        Some("fail") => "**FAIL**",
        Some("skip") => "skip",
        _ => "-",
    }
}

fn md_escape(s: &str) -> String {
    let s: String = s.chars().take(400).collect();
    s.replace('|', "\\|").replace('\n', " ")
}

/// The markdown report and the cases that fail on the candidate but pass on the reference.
pub fn report(
    reference: &Run,
    candidate: &Run,
    reasons: &[(String, String)],
) -> (String, Vec<String>) {
    let mut names: Vec<String> = reference.order.clone();
    for n in &candidate.order {
        if !reference.cases.contains_key(n) {
            names.push(n.clone());
        }
    }
    names.sort();
    let count = |r: &Run, s: &str| r.cases.values().filter(|(st, _)| st == s).count();
    let mut regressions = Vec::new();
    let mut md = String::new();
    let _ = writeln!(md, "# OCI runtime-spec conformance: runc vs nvbind\n");
    let _ = writeln!(
        md,
        "Written by `scripts/conformance`. Reference: `{}`; candidate: `{}`.\n",
        reference.runtime, candidate.runtime
    );
    let _ = writeln!(md, "| runtime | passed | failed | skipped | seconds |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for (label, r) in [("runc", reference), ("nvbind", candidate)] {
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {:.1} |",
            count(r, "pass"),
            count(r, "fail"),
            count(r, "skip"),
            r.seconds
        );
    }
    let mut rows = String::new();
    for n in &names {
        let a = reference.cases.get(n);
        let b = candidate.cases.get(n);
        let (sa, sb) = (a.map(|x| x.0.as_str()), b.map(|x| x.0.as_str()));
        if sa == Some("pass") && sb == Some("fail") {
            regressions.push(n.clone());
        }
        let nv = b.map(|x| x.1.as_str()).unwrap_or("");
        let mut why = match sa {
            Some("fail") => reason_for(reasons, n)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    format!(
                        "(no reason on file) {}",
                        a.map(|x| x.1.as_str()).unwrap_or("")
                    )
                }),
            Some("skip") => a.map(|x| x.1.clone()).unwrap_or_default(),
            _ => String::new(),
        };
        if sb == Some("fail") {
            if !why.is_empty() {
                why.push_str(" / ");
            }
            why.push_str(&format!("nvbind: {nv}"));
        }
        let _ = writeln!(
            rows,
            "| `{n}` | {} | {} | {} |",
            cell(sa),
            cell(sb),
            md_escape(&why)
        );
    }
    let _ = writeln!(
        md,
        "\nCases that fail on nvbind but pass on runc: {}.\n",
        regressions.len()
    );
    for n in &regressions {
        let why = candidate.cases.get(n).map(|x| x.1.as_str()).unwrap_or("");
        let _ = writeln!(md, "- `{n}`: {}", md_escape(why));
    }
    let _ = writeln!(
        md,
        "\n| case | runc | nvbind | reason (runc failure: environment or runc fact) |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    md.push_str(&rows);
    (md, regressions)
}
