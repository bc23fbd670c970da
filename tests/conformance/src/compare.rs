//! Side-by-side report of two runs (`--json` outputs): the reference runtime (runc) and the
//! candidate (nvbind), with a reason for each reference failure from a TSV file
//! (`case<TAB>reason`; a case name ending in `*` matches a prefix).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde_json::Value;

/// A case's status ("pass", "fail", "skip") and reason.
type Outcome = (String, String);

pub struct Run {
    pub runtime: String,
    pub seconds: f64,
    pub order: Vec<String>,
    pub cases: BTreeMap<String, Outcome>,
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

/// Starts the cgroup v2 hosts section of RESULTS.md: `compare` (this machine) keeps what
/// follows it, `hosts-report` (the VMs of tests/hosts) replaces it.
pub const HOSTS_MARKER: &str =
    "<!-- cgroup v2 hosts: written by `scripts/hosts run all conformance` -->";

/// One VM's pair of runs.
pub struct HostRun {
    /// Shown as the column group's name, e.g. "bookworm (Debian 12, kernel 6.1, runc 1.1.5)".
    pub label: String,
    /// The VM's name, used to look up `VM:case` reasons before `case` ones.
    pub vm: String,
    pub reference: Run,
    pub candidate: Run,
}

/// `existing` with everything from the hosts marker on replaced by `section` (or appended).
pub fn splice_hosts(existing: &str, section: &str) -> String {
    let head = existing
        .find(HOSTS_MARKER)
        .map_or(existing, |i| &existing[..i]);
    match head.trim_end() {
        "" => format!("{HOSTS_MARKER}\n{section}"),
        head => format!("{head}\n\n{HOSTS_MARKER}\n{section}"),
    }
}

/// `top` followed by the hosts section of `existing`, if it has one.
pub fn keep_hosts(existing: &str, top: &str) -> String {
    match existing.find(HOSTS_MARKER) {
        Some(i) => format!("{}\n\n{}", top.trim_end(), &existing[i..]),
        None => top.to_string(),
    }
}

/// The cgroup v2 section: per VM, runc and nvbind side by side; every case that is not a pass
/// everywhere gets a row. Also returns `(vm, case)` for each case that fails on nvbind but
/// passes on runc in that VM.
pub fn hosts_report(hosts: &[HostRun], reasons: &[(String, String)]) -> (String, Vec<String>) {
    let mut names: Vec<String> = Vec::new();
    for h in hosts {
        for n in h.reference.order.iter().chain(&h.candidate.order) {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    names.sort();
    let count = |r: &Run, s: &str| r.cases.values().filter(|(st, _)| st == s).count();
    let mut md = String::new();
    let _ = writeln!(md, "\n## Pure cgroup v2 hosts (Debian VMs under QEMU)\n");
    let _ = writeln!(
        md,
        "Each VM of tests/hosts runs the whole suite against its own runc (the reference) and \
         nvbind: pure cgroup v2, systemd, dbus, the cgroupfs driver. Times are under QEMU TCG \
         (no KVM here, see tests/hosts/README.md) and mean nothing absolute.\n"
    );
    let _ = writeln!(
        md,
        "| VM | runtime | passed | failed | skipped | seconds | fail on nvbind only |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    let mut regressions = Vec::new();
    for h in hosts {
        let mine: Vec<&String> = names
            .iter()
            .filter(|n| {
                h.reference.cases.get(*n).map(|x| x.0.as_str()) == Some("pass")
                    && h.candidate.cases.get(*n).map(|x| x.0.as_str()) == Some("fail")
            })
            .collect();
        for (label, r, reg) in [
            ("runc", &h.reference, String::new()),
            ("nvbind", &h.candidate, mine.len().to_string()),
        ] {
            let _ = writeln!(
                md,
                "| {} | {label} (`{}`) | {} | {} | {} | {:.1} | {reg} |",
                h.label,
                r.runtime,
                count(r, "pass"),
                count(r, "fail"),
                count(r, "skip"),
                r.seconds
            );
        }
        regressions.extend(mine.iter().map(|n| format!("{}: {n}", h.vm)));
    }
    if !regressions.is_empty() {
        let _ = writeln!(md, "\nCases that fail on nvbind but pass on runc:\n");
        for r in &regressions {
            let _ = writeln!(md, "- `{r}`");
        }
    }
    let _ = write!(md, "\n| case |");
    for h in hosts {
        let _ = write!(md, " {} runc | {} nvbind |", h.vm, h.vm);
    }
    let _ = writeln!(
        md,
        " why (runc failures: a reason on file; nvbind's own message) |"
    );
    let _ = writeln!(md, "|---|{}---|", "---|---|".repeat(hosts.len()));
    let mut all_pass = 0;
    for n in &names {
        let cells: Vec<(Option<&Outcome>, Option<&Outcome>)> = hosts
            .iter()
            .map(|h| (h.reference.cases.get(n), h.candidate.cases.get(n)))
            .collect();
        if cells.iter().all(|(a, b)| {
            a.map(|x| x.0.as_str()) == Some("pass") && b.map(|x| x.0.as_str()) == Some("pass")
        }) {
            all_pass += 1;
            continue;
        }
        let mut why = Vec::new();
        let _ = write!(md, "| `{n}` |");
        for (h, (a, b)) in hosts.iter().zip(&cells) {
            let (sa, sb) = (a.map(|x| x.0.as_str()), b.map(|x| x.0.as_str()));
            let _ = write!(md, " {} | {} |", cell(sa), cell(sb));
            if sa == Some("fail") {
                let vm_key = format!("{}:{n}", h.vm);
                let r = reason_for(reasons, &vm_key)
                    .or_else(|| reason_for(reasons, n))
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        format!(
                            "(no reason on file) {}",
                            a.map(|x| x.1.as_str()).unwrap_or("")
                        )
                    });
                why.push(format!("{} runc: {r}", h.vm));
            } else if sa == Some("skip") {
                why.push(format!(
                    "{} runc: {}",
                    h.vm,
                    a.map(|x| x.1.as_str()).unwrap_or("")
                ));
            }
            if sb == Some("fail") || sb == Some("skip") {
                why.push(format!(
                    "{} nvbind: {}",
                    h.vm,
                    b.map(|x| x.1.as_str()).unwrap_or("")
                ));
            }
        }
        let why: Vec<String> = why.iter().map(|w| md_escape(w)).collect();
        let _ = writeln!(md, " {} |", why.join(" / "));
    }
    let _ = writeln!(
        md,
        "\nThe other {all_pass} cases pass on both runtimes in every VM."
    );
    (md, regressions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cases: &[(&str, &str)]) -> Run {
        Run {
            runtime: "/rt".into(),
            seconds: 1.0,
            order: cases.iter().map(|c| c.0.to_string()).collect(),
            cases: cases
                .iter()
                .map(|(n, s)| (n.to_string(), (s.to_string(), format!("why {n}"))))
                .collect(),
        }
    }

    #[test]
    fn hosts_section_survives_compare_and_is_replaced_by_hosts_report() {
        let first = splice_hosts("# top\ntable\n", "v2 one\n");
        assert!(first.starts_with("# top\ntable\n\n<!-- cgroup v2 hosts"));
        assert!(first.ends_with("v2 one\n"));
        let rewritten = keep_hosts(&first, "# new top\n");
        assert!(rewritten.starts_with("# new top\n\n<!-- cgroup v2 hosts"));
        assert!(rewritten.ends_with("v2 one\n"));
        let replaced = splice_hosts(&rewritten, "v2 two\n");
        assert!(replaced.starts_with("# new top\n"));
        assert!(replaced.ends_with("v2 two\n") && !replaced.contains("v2 one"));
        assert_eq!(replaced.matches(HOSTS_MARKER).count(), 1);
        assert_eq!(keep_hosts("no section", "# top\n"), "# top\n");
    }

    #[test]
    fn hosts_report_rows_and_regressions() {
        let hosts = vec![
            HostRun {
                label: "A".into(),
                vm: "a".into(),
                reference: run(&[("x", "pass"), ("y", "pass"), ("z", "fail")]),
                candidate: run(&[("x", "pass"), ("y", "fail"), ("z", "fail")]),
            },
            HostRun {
                label: "B".into(),
                vm: "b".into(),
                reference: run(&[("x", "pass"), ("y", "pass"), ("z", "pass")]),
                candidate: run(&[("x", "pass"), ("y", "pass"), ("z", "pass")]),
            },
        ];
        let reasons = vec![("a:z".to_string(), "kernel of a".to_string())];
        let (md, regressions) = hosts_report(&hosts, &reasons);
        assert_eq!(regressions, vec!["a: y".to_string()]);
        assert!(md.contains("| `y` | pass | **FAIL** | pass | pass | a nvbind: why y |"));
        assert!(md.contains(
            "| `z` | **FAIL** | **FAIL** | pass | pass | a runc: kernel of a / a nvbind: why z |"
        ));
        assert!(!md.contains("| `x` |"));
        assert!(md.contains("The other 1 cases pass"));
    }
}
