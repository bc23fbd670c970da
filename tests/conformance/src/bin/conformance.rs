//! The conformance driver: `conformance --runtime PATH [--filter SUBSTR] [--tap] [--json OUT]
//! [--probe PATH] [--jobs N]`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use nvbind_conformance::bundle::Template;
use nvbind_conformance::harness::{detach_mounts_under, Ctx, Outcome, Results, Scenario};
use nvbind_conformance::runtime::{run_cmd, Runtime};
use nvbind_conformance::{cases, compare};
use serde_json::json;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct Opts {
    runtime: PathBuf,
    filter: Option<String>,
    tap: bool,
    json: Option<PathBuf>,
    probe: Option<PathBuf>,
    jobs: usize,
    list: bool,
}

const USAGE: &str =
    "usage: conformance --runtime PATH [--filter SUBSTR[,SUBSTR...]] [--tap] [--json OUT] \
[--probe PATH] [--jobs N] [--list]";

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        runtime: PathBuf::new(),
        filter: None,
        tap: false,
        json: None,
        probe: None,
        jobs: 2,
        list: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--runtime" => o.runtime = PathBuf::from(val("--runtime")?),
            "--filter" => o.filter = Some(val("--filter")?),
            "--tap" => o.tap = true,
            "--json" => o.json = Some(PathBuf::from(val("--json")?)),
            "--probe" => o.probe = Some(PathBuf::from(val("--probe")?)),
            "--jobs" => {
                o.jobs = val("--jobs")?
                    .parse()
                    .map_err(|_| "--jobs wants a number".to_string())?
            }
            "--list" => o.list = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if o.runtime.as_os_str().is_empty() && !o.list {
        return Err(format!("--runtime is required\n{USAGE}"));
    }
    o.jobs = o.jobs.clamp(1, 16);
    Ok(o)
}

/// The static probe: --probe, else `probe-static` or `probe` beside this binary.
fn find_probe(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
            vec![dir.join("probe-static"), dir.join("probe")]
        }
    };
    for c in &candidates {
        if let Ok(bytes) = fs::read(c) {
            if is_static_elf(&bytes) {
                return Ok(c.clone());
            }
            eprintln!("# {} is dynamically linked; skipping it", c.display());
        }
    }
    Err(format!(
        "no static probe found (tried {candidates:?}); build it with: cargo rustc --release \
         -p nvbind-conformance --bin probe -- -C target-feature=+crt-static"
    ))
}

/// An ELF64 with no PT_INTERP program header.
fn is_static_elf(b: &[u8]) -> bool {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false;
    }
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let phoff = u64_at(32) as usize;
    let phentsize = u16_at(54) as usize;
    let phnum = u16_at(56) as usize;
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) != 3
    })
}

/// The cases of `s` whose full name contains the filter, or one of its comma-separated parts.
fn selected(s: &Scenario, filter: Option<&str>) -> Vec<String> {
    s.cases
        .iter()
        .map(|c| format!("{}.{}", s.name, c))
        .filter(|full| filter.is_none_or(|f| f.split(',').any(|part| full.contains(part))))
        .collect()
}

struct Printer {
    tap: bool,
    n: usize,
    pass: usize,
    fail: usize,
    skip: usize,
    records: Vec<serde_json::Value>,
}

impl Printer {
    fn emit(&mut self, name: &str, o: &Outcome) {
        self.n += 1;
        let n = self.n;
        let (status, reason) = match o {
            Outcome::Pass => {
                self.pass += 1;
                ("pass", String::new())
            }
            Outcome::Fail(r) => {
                self.fail += 1;
                ("fail", r.clone())
            }
            Outcome::Skip(r) => {
                self.skip += 1;
                ("skip", r.clone())
            }
        };
        let reason1 = reason.replace('\n', " ");
        let line = match (self.tap, o) {
            (true, Outcome::Pass) => format!("ok {n} - {name}"),
            (true, Outcome::Skip(_)) => format!("ok {n} - {name} # SKIP {reason1}"),
            (true, Outcome::Fail(_)) => format!("not ok {n} - {name}\n  # {reason1}"),
            (false, Outcome::Pass) => format!("PASS {name}"),
            (false, Outcome::Skip(_)) => format!("SKIP {name}: {reason1}"),
            (false, Outcome::Fail(_)) => format!("FAIL {name}: {reason1}"),
        };
        println!("{line}");
        let _ = std::io::stdout().flush();
        self.records
            .push(json!({ "name": name, "status": status, "reason": reason }));
    }
}

fn run_scenario(ctx: &Ctx, s: &Scenario, wanted: &[String], printer: &Mutex<Printer>) {
    let mut res = Results::default();
    let t0 = Instant::now();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (s.run)(ctx, &mut res)));
    if let Err(p) = run {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        res.fail_rest(s.cases, &format!("driver panic: {msg}"));
    }
    for k in res.map.keys().filter(|k| !s.cases.contains(&k.as_str())) {
        eprintln!("# suite bug: {} reported undeclared case {k}", s.name);
    }
    let took = t0.elapsed().as_secs_f64();
    let mut pr = printer.lock().unwrap_or_else(|e| e.into_inner());
    if took > 3.0 {
        println!("# scenario {} took {took:.1}s", s.name);
    }
    for full in wanted {
        let case = &full[s.name.len() + 1..];
        let o = res
            .map
            .get(case)
            .cloned()
            .unwrap_or_else(|| Outcome::Fail("case not reported by its scenario".into()));
        pr.emit(full, &o);
    }
}

/// Force-delete whatever is left in the private root, remove the suite's parent cgroups,
/// detach any mount left under the scratch dir and remove it.
fn sweep(rt: &Runtime, work: &Path, prefix: &str) -> Vec<String> {
    let mut leaks = Vec::new();
    if let Ok(rd) = fs::read_dir(&rt.root) {
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() {
                leaks.push(format!("container {id} left in --root"));
                let _ = run_cmd(
                    {
                        let mut c = std::process::Command::new(&rt.path);
                        c.arg("--root")
                            .arg(&rt.root)
                            .args(["delete", "--force", &id]);
                        c
                    },
                    work,
                    "sweep",
                    std::time::Duration::from_secs(10),
                );
            }
        }
    }
    for c in cases::remove_parent_cgroups(prefix) {
        leaks.push(format!("cgroup {c} left after delete"));
    }
    detach_mounts_under(work);
    if std::env::var_os("CONFORMANCE_KEEP_BUNDLES").is_some() {
        eprintln!("# CONFORMANCE_KEEP_BUNDLES: leaving {}", work.display());
    } else {
        let _ = fs::remove_dir_all(work);
    }
    leaks
}

/// `conformance compare REFERENCE.json CANDIDATE.json REASONS.tsv OUT.md`: exit 1 when a
/// case fails on the candidate but passes on the reference.
fn compare(args: &[String]) -> ! {
    let [a, b, reasons, out] = args else {
        eprintln!("usage: conformance compare REFERENCE.json CANDIDATE.json REASONS.tsv OUT.md");
        std::process::exit(2);
    };
    let (ra, rb) = match (compare::load(Path::new(a)), compare::load(Path::new(b))) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let (md, regressions) = compare::report(&ra, &rb, &compare::load_reasons(Path::new(reasons)));
    // The cgroup v2 hosts section (hosts-report's) stays as it was.
    let md = compare::keep_hosts(&fs::read_to_string(out).unwrap_or_default(), &md);
    if let Err(e) = fs::write(out, md) {
        eprintln!("writing {out}: {e}");
        std::process::exit(2);
    }
    for r in &regressions {
        eprintln!("# fails on nvbind, passes on the reference: {r}");
    }
    std::process::exit(if regressions.is_empty() { 0 } else { 1 });
}

/// `conformance hosts-report OUT.md REASONS.tsv VM LABEL REFERENCE.json CANDIDATE.json...`:
/// replaces the cgroup v2 hosts section of OUT.md (the rest stays); exit 1 when a case fails
/// on the candidate but passes on the reference in some VM.
fn hosts_report(args: &[String]) -> ! {
    const USAGE: &str =
        "usage: conformance hosts-report OUT.md REASONS.tsv [VM LABEL REFERENCE.json CANDIDATE.json]...";
    let [out, reasons, runs @ ..] = args else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    if runs.is_empty() || runs.len() % 4 != 0 {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }
    let mut hosts = Vec::new();
    for r in runs.chunks(4) {
        match (
            compare::load(Path::new(&r[2])),
            compare::load(Path::new(&r[3])),
        ) {
            (Ok(reference), Ok(candidate)) => hosts.push(compare::HostRun {
                vm: r[0].clone(),
                label: r[1].clone(),
                reference,
                candidate,
            }),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
    }
    let (section, regressions) =
        compare::hosts_report(&hosts, &compare::load_reasons(Path::new(reasons)));
    let md = compare::splice_hosts(&fs::read_to_string(out).unwrap_or_default(), &section);
    if let Err(e) = fs::write(out, md) {
        eprintln!("writing {out}: {e}");
        std::process::exit(2);
    }
    for r in &regressions {
        eprintln!("# fails on nvbind, passes on the reference: {r}");
    }
    std::process::exit(if regressions.is_empty() { 0 } else { 1 });
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("compare") => compare(&argv[2..]),
        Some("hosts-report") => hosts_report(&argv[2..]),
        _ => {}
    }
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let all = cases::all();
    if opts.list {
        for s in &all {
            for c in selected(s, opts.filter.as_deref()) {
                println!("{c}");
            }
        }
        return;
    }
    let started = Instant::now();
    // SAFETY: process-wide settings made before any thread starts.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
    }
    let probe = match find_probe(opts.probe.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let runtime_path = match fs::canonicalize(&opts.runtime) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("runtime {}: {e}", opts.runtime.display());
            std::process::exit(2);
        }
    };
    let pid = std::process::id();
    let work = std::env::temp_dir().join(format!("nvbind-conformance-{pid}"));
    let rt = Runtime {
        path: runtime_path.clone(),
        root: work.join("root"),
    };
    let template = match fs::create_dir_all(&rt.root)
        .map_err(|e| e.to_string())
        .and_then(|_| Template::prepare(&work.join("template"), Path::new("/bin/busybox"), &probe))
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("setting up {}: {e}", work.display());
            let _ = fs::remove_dir_all(&work);
            std::process::exit(2);
        }
    };
    let ctx = Ctx::new(rt.clone(), template, work.clone(), format!("cf{pid}"));
    let plan: Vec<(&Scenario, Vec<String>)> = all
        .iter()
        .map(|s| (s, selected(s, opts.filter.as_deref())))
        .filter(|(_, w)| !w.is_empty())
        .collect();
    let total: usize = plan.iter().map(|(_, w)| w.len()).sum();
    if opts.tap {
        println!("TAP version 13");
        println!("1..{total}");
    }
    println!("# runtime {}", runtime_path.display());
    let printer = Mutex::new(Printer {
        tap: opts.tap,
        n: 0,
        pass: 0,
        fail: 0,
        skip: 0,
        records: Vec::new(),
    });
    let next = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..opts.jobs {
            sc.spawn(|| loop {
                if STOP.load(Ordering::SeqCst) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((s, wanted)) = plan.get(i) else {
                    break;
                };
                run_scenario(&ctx, s, wanted, &printer);
            });
        }
    });
    let mut pr = printer.into_inner().unwrap_or_else(|e| e.into_inner());
    let interrupted = STOP.load(Ordering::SeqCst);
    let leaks = sweep(&rt, &work, &ctx.prefix);
    for l in &leaks {
        eprintln!("# cleanup: {l}");
    }
    if interrupted {
        eprintln!("# interrupted; {} of {total} cases ran", pr.n);
    }
    let secs = started.elapsed().as_secs_f64();
    println!("# {} cases in {secs:.1}s", pr.n);
    if let Some(path) = &opts.json {
        let doc = json!({
            "runtime": runtime_path, "passed": pr.pass, "failed": pr.fail, "skipped": pr.skip,
            "seconds": secs, "cases": std::mem::take(&mut pr.records),
        });
        if let Err(e) = fs::write(path, serde_json::to_string_pretty(&doc).unwrap_or_default()) {
            eprintln!("writing {}: {e}", path.display());
        }
    }
    println!(
        "{} passed, {} failed, {} skipped",
        pr.pass, pr.fail, pr.skip
    );
    if pr.fail > 0 || interrupted {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nothing(_: &Ctx, _: &mut Results) {}

    #[test]
    fn filter_parts_select_any() {
        let s = Scenario {
            name: "cgroups.limits",
            cases: &["memory_limit", "pids_limit"],
            run: nothing,
        };
        assert_eq!(selected(&s, None).len(), 2);
        assert_eq!(
            selected(&s, Some("memory")),
            vec!["cgroups.limits.memory_limit"]
        );
        assert_eq!(
            selected(&s, Some("devices.,pids")),
            vec!["cgroups.limits.pids_limit"]
        );
        assert_eq!(selected(&s, Some("devices.,cgroups.")).len(), 2);
        assert!(selected(&s, Some("devices.")).is_empty());
    }
}
