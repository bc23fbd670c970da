//! What one `nvbind run` looks up, and how often (issue 19): each test runs a container under
//! strace and counts the calls that show a repeated lookup. Needs strace (scripts/test
//! installs it); without it each test says SKIP.

mod common;

use std::fs;

use common::*;

/// pathrs checks its procfs handle again (16 syscalls, among them an `openat(FD, "..")`, which
/// nothing else in nvbind makes) each time `ProcfsHandle::new` hands it out; libcgroups'
/// `procfs_handle` keeps one per process (issue 19). One `run` checked it 5 times in the
/// runtime, once in the intermediate process and 3 times in the init; now only while the
/// runtime makes it (pathrs checks the new mount, then its cached copy) and never in the
/// processes cloned from the runtime, which look at the descriptor they inherit with one statx.
#[test]
fn run_checks_the_procfs_handle_only_where_it_is_made() {
    let env = Env::new();
    let prefix = env.dir.path().join("trace");
    if run_under_strace(
        &env,
        "p",
        &["-ff", "-qq", "-e", "trace=execve,openat"],
        &prefix,
    )
    .is_none()
    {
        return;
    }
    // (first execve of the trace, checks of the handle) per process
    let mut runtime = None;
    let mut others = Vec::new();
    for entry in fs::read_dir(env.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("trace.") {
            continue;
        }
        let trace = fs::read_to_string(&path).unwrap();
        let checks = trace
            .lines()
            .filter(|l| {
                l.strip_prefix("openat(")
                    .and_then(|rest| rest.split_once(", "))
                    .is_some_and(|(fd, rest)| {
                        fd.parse::<u32>().is_ok() && rest.starts_with("\"..\",")
                    })
            })
            .count();
        let first = trace.lines().next().unwrap_or_default().to_string();
        if first.starts_with(&format!("execve(\"{NVBIND}\"")) {
            runtime = Some(checks);
        } else {
            others.push((name, checks));
        }
    }
    let runtime = runtime.expect("the runtime's trace");
    assert!(
        runtime <= 2,
        "the runtime checked the procfs handle {runtime} times"
    );
    assert!(others.len() >= 2, "no intermediate and init: {others:?}");
    assert!(
        others.iter().all(|(_, checks)| *checks == 0),
        "processes cloned from the runtime checked the procfs handle: {others:?}"
    );
    env.assert_clean();
}

/// `nvbind run` of a `true` container `NAME1` from bundle NAME under `strace ARGS -o OUT`,
/// asserted to succeed; its bundle, or None (and SKIP said) when there is no strace.
fn run_under_strace(
    env: &Env,
    name: &str,
    args: &[&str],
    out: &std::path::Path,
) -> Option<std::path::PathBuf> {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("SKIP: no strace");
        return None;
    }
    let b = env.bundle(name, &["true"]);
    let status = std::process::Command::new("strace")
        .args(args)
        .arg("-o")
        .arg(out)
        .arg(NVBIND)
        .arg("--root")
        .arg(&env.root)
        .args(["run", "-b", b.to_str().unwrap(), &format!("{name}1")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("strace");
    assert!(status.success(), "run under strace: {status}");
    Some(b)
}

/// nvbind resolves the state root and the bundle (realpath: a readlink per component) and
/// hands libcontainer canonical paths, which it took as they are only with libcontainer
/// patch 80: the runtime of one `run` read the link of the bundle directory 3 times (nvbind's
/// Bundle::load, libcontainer's bundle, its rootfs) and of the root 3 times (nvbind,
/// `with_root_path`, the container's directory) before; once each now (issue 19).
#[test]
fn run_resolves_the_root_and_the_bundle_once() {
    let env = Env::new();
    let log = env.dir.path().join("readlink.trace");
    let Some(b) = run_under_strace(&env, "r", &["-f", "-qq", "-e", "trace=readlink"], &log) else {
        return;
    };
    let trace = fs::read_to_string(&log).unwrap();
    // The runtime's calls: `PID call(...)`, its pid the first line's (the container's init
    // resolves the rootfs once more, in safe-path's scoped_join, for its device nodes).
    let runtime = trace.split_whitespace().next().unwrap().to_string();
    let reads_of = |path: &std::path::Path| {
        let call = format!("readlink(\"{}\",", path.display());
        trace
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(pid, rest)| *pid == runtime && rest.trim_start().starts_with(&call))
            .count()
    };
    // The paths as realpath walks them (the temp dir is canonical on the test hosts).
    let (bundle, root) = (b.canonicalize().unwrap(), env.root.canonicalize().unwrap());
    assert_eq!(reads_of(&bundle), 1, "readlink of {}", bundle.display());
    assert_eq!(reads_of(&root), 1, "readlink of {}", root.display());
    env.assert_clean();
}
