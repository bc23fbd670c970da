//! The registry's trust checks (Trust::RootOwned) judge a spec directory, each spec file in
//! it and each hook a spec names, with every directory above them; each of those is looked
//! up (`lstat`) once per load. Before: the resolution of a path `lstat`ed every component,
//! then the judging `lstat`ed every directory again, and each object was `stat`ed once more
//! (15 lookups of the directories of one spec file and its hook became 7 on the 8-GPU bench
//! host; 31 statx in all, now 8). Needs root (a root-owned tree; as another user the spec
//! directory is refused before its files are read) and strace.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nvbind_cdi::registry::{Registry, Trust};

/// Run by `each_directory_on_the_way_is_looked_up_once` under strace.
#[test]
#[ignore = "run by each_directory_on_the_way_is_looked_up_once"]
fn load_of_the_dir_in_env() {
    let dir = PathBuf::from(std::env::var_os("NVBIND_TRUST_TEST_DIR").unwrap());
    let r = Registry::with_trust(vec![dir], Trust::RootOwned);
    assert!(r.errors().is_empty(), "{:?}", r.errors());
    assert_eq!(r.kinds(), ["vendor.com/gpu"]);
}

/// Lines of the strace log that `stat` exactly `path` (statx, newfstatat, lstat, stat).
fn stats_of<'a>(log: &'a str, path: &Path) -> Vec<&'a str> {
    let quoted = format!("\"{}\"", path.display());
    log.lines()
        // `PID call(...)` with -f: the call.
        .map(|l| l.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' '))
        .filter(|l| l.contains(&quoted))
        .filter(|l| {
            ["statx(", "newfstatat(", "lstat(", "stat("]
                .iter()
                .any(|c| l.starts_with(c))
        })
        .collect()
}

#[test]
fn each_directory_on_the_way_is_looked_up_once() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIP: no strace");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().canonicalize().unwrap();
    fs::set_permissions(&t, fs::Permissions::from_mode(0o755)).unwrap();
    let cdi = t.join("etc/cdi");
    let bin = t.join("usr/bin");
    fs::create_dir_all(&cdi).unwrap();
    fs::create_dir_all(&bin).unwrap();
    let hook = bin.join("hook");
    fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let spec = cdi.join("gpu.yaml");
    fs::write(
        &spec,
        format!(
            "cdiVersion: 0.5.0\nkind: vendor.com/gpu\ndevices:\n- name: x\n  containerEdits:\n    env: [A=1]\ncontainerEdits:\n  hooks:\n  - hookName: createContainer\n    path: {}\n",
            hook.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&spec, fs::Permissions::from_mode(0o644)).unwrap();

    let log_path = t.join("strace.log");
    let o = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=statx,newfstatat,lstat,stat,lseek",
            "-o",
        ])
        .arg(&log_path)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "load_of_the_dir_in_env",
            "--test-threads=1",
        ])
        .env("NVBIND_TRUST_TEST_DIR", &cdi)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = fs::read_to_string(&log_path).unwrap();

    // Every directory above the spec directory and the hook, the spec directory and its
    // file, the hook's directories and the hook: one lookup each, however many checks
    // they are part of.
    let mut paths: Vec<PathBuf> = cdi.ancestors().map(Path::to_path_buf).collect();
    paths.extend([spec, bin.clone(), t.join("usr"), hook]);
    for p in &paths {
        let calls = stats_of(&log, p);
        assert_eq!(calls.len(), 1, "{}: {calls:#?}", p.display());
    }
    // The spec file is read with the size its fstat gave: std's File::read_to_end would
    // ask again (fstat and lseek).
    let seeks: Vec<&str> = log.lines().filter(|l| l.contains("lseek(")).collect();
    assert!(seeks.is_empty(), "{seeks:#?}");
}
