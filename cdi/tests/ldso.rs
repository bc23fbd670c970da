//! nvbind's own linker cache against the real thing: the same tree given to `ldconfig -r`
//! and to `nvbind_cdi::ldso::update` must give the same cache entries (names, paths, flags,
//! order: the loader binary-searches them) and the same soname links; and the host's own
//! dynamic loader, chrooted into a tree, finds a library through nvbind's cache alone.
//! CUDA forward compatibility: the compat libcuda comes first only when it is newer.
//! Needs root (ldconfig -r and chroot), gcc and ldconfig.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use nvbind_cdi::discover::ldcache::LdCache;
use nvbind_cdi::ldso::{self, LdRequest};
use nvbind_cdi::rootfs::Root;

fn gcc(out: &Path, soname: Option<&str>, m32: bool, extra: &[&str]) {
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let src = out.with_extension("c");
    fs::write(&src, "int fake_fn(void) { return 7; }\n").unwrap();
    let mut c = Command::new("gcc");
    if m32 {
        c.arg("-m32");
    }
    c.args(["-shared", "-fPIC"]).args(extra);
    if let Some(s) = soname {
        c.arg(format!("-Wl,-soname,{s}"));
    }
    let o = c.arg("-o").arg(out).arg(&src).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fs::remove_file(src).unwrap();
}

/// A tree exercising what ldconfig decides: conf includes, several directories, two
/// versions of one soname, a soname found in two directories, `.so` development links,
/// a library without soname, a link under another name, 32-bit libraries, non-libraries.
fn tree(root: &Path) {
    let w = |p: &str, s: &str| {
        let p = root.join(p.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    };
    w(
        "/etc/ld.so.conf",
        "include /etc/ld.so.conf.d/*.conf\n/opt/second\n",
    );
    w(
        "/etc/ld.so.conf.d/a.conf",
        "/opt/first\n/usr/lib/i386-linux-gnu\n",
    );
    w("/etc/ld.so.conf.d/z.conf", "# nothing\n/opt/missing\n");
    let lib = |p: &str, soname: Option<&str>| {
        gcc(
            &root.join(p.trim_start_matches('/')),
            soname,
            false,
            &["-nostdlib"],
        )
    };
    lib("/opt/first/libdup.so.1.0", Some("libdup.so.1"));
    lib("/opt/second/libdup.so.1.5", Some("libdup.so.1"));
    lib("/opt/first/libver.so.2.1", Some("libver.so.2"));
    lib("/opt/first/libver.so.2.10", Some("libver.so.2"));
    // A soname link left pointing at the older version: ldconfig moves it to the newer.
    symlink("libver.so.2.1", root.join("opt/first/libver.so.2")).unwrap();
    lib("/opt/first/libnosoname.so.3", None);
    lib("/opt/second/libdev.so.4.0.0", Some("libdev.so.4"));
    symlink("libdev.so.4.0.0", root.join("opt/second/libdev.so.4")).unwrap();
    symlink("libdev.so.4", root.join("opt/second/libdev.so")).unwrap();
    lib("/opt/second/libreal.so.5.0", Some("libreal.so.5"));
    // A soname link already right: left as it is.
    symlink("libreal.so.5.0", root.join("opt/second/libreal.so.5")).unwrap();
    symlink("libreal.so.5.0", root.join("opt/second/libalias.so.9")).unwrap();
    lib(
        "/usr/lib/x86_64-linux-gnu/libsys.so.6.1",
        Some("libsys.so.6"),
    );
    lib("/usr/lib/libplain.so.7.0", Some("libplain.so.7"));
    gcc(
        &root.join("usr/lib/i386-linux-gnu/libthirty.so.8.0"),
        Some("libthirty.so.8"),
        true,
        &["-nostdlib"],
    );
    w("/opt/first/libnotelf.so.1", "text\n");
    w("/opt/first/README.so", "text\n");
    fs::create_dir_all(root.join("opt/first/libdir.so.d")).unwrap();
}

fn entries(cache: &Path) -> Vec<(String, String, bool, String)> {
    LdCache::open(cache)
        .unwrap()
        .entries()
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                e.path.display().to_string(),
                e.elf_libc6,
                format!("{:?}", e.arch),
            )
        })
        .collect()
}

fn links(root: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.file_type().is_symlink() {
                out.push((
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    fs::read_link(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_cache_and_links_are_ldconfigs() {
    let dir = tempfile::tempdir().unwrap();
    let (theirs, ours) = (dir.path().join("ldconfig"), dir.path().join("nvbind"));
    tree(&theirs);
    tree(&ours);
    let o = Command::new("ldconfig")
        .arg("-r")
        .arg(&theirs)
        .arg("/opt/first")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let root = Root::open(&ours).unwrap();
    let report = ldso::update(
        &root,
        &LdRequest {
            folders: vec!["/opt/first".into()],
            host_driver_version: None,
        },
    )
    .unwrap();
    assert_eq!(report.dirs[0], Path::new("/opt/first"));
    let (t, o) = (
        entries(&theirs.join("etc/ld.so.cache")),
        entries(&ours.join("etc/ld.so.cache")),
    );
    assert!(t.len() >= 9, "{t:#?}");
    assert_eq!(o, t);
    // Every soname link ldconfig made, nvbind made, pointing at the same file.
    assert_eq!(links(&ours), links(&theirs));
    assert!(report.links > 0);
    // What ldconfig -p prints from nvbind's file matches what it prints from its own.
    let p = |c: &Path| {
        let o = Command::new("ldconfig")
            .arg("-p")
            .arg("-C")
            .arg(c)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with('\t'))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        p(&ours.join("etc/ld.so.cache")),
        p(&theirs.join("etc/ld.so.cache"))
    );
    // The folder is kept for a later ldconfig in the container.
    assert_eq!(
        fs::read_to_string(ours.join("etc/ld.so.conf.d/00-nvbind-cdi.conf")).unwrap(),
        "# Written by nvbind: the GPU driver's libraries\n/opt/first\n"
    );
}

/// The host's loader and libc copied into a tree, and a program that needs a library found
/// only through the tree's cache (no RPATH, not in a default directory).
fn loader_tree(root: &Path) -> PathBuf {
    let ldso = PathBuf::from("/lib64/ld-linux-x86-64.so.2");
    let real = fs::canonicalize(&ldso).unwrap();
    let libc = fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    for (from, to) in [
        (&real, ldso.clone()),
        (&libc, PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")),
    ] {
        let dest = root.join(to.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(from, dest).unwrap();
    }
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/ld.so.conf"), "").unwrap();
    let lib = root.join("opt/gpu/lib/libprobe.so.550.54.14");
    fs::create_dir_all(lib.parent().unwrap()).unwrap();
    let src = root.join("probe.c");
    fs::write(&src, "int probe_value(void) { return 42; }\n").unwrap();
    let o = Command::new("gcc")
        .args(["-shared", "-fPIC", "-Wl,-soname,libprobe.so.1", "-o"])
        .arg(&lib)
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let main = root.join("main.c");
    fs::write(
        &main,
        "#include <stdio.h>\nint probe_value(void);\nint main(void) { printf(\"probe=%d\\n\", probe_value()); return 0; }\n",
    )
    .unwrap();
    let link_dir = root.join("link");
    fs::create_dir_all(&link_dir).unwrap();
    symlink(&lib, link_dir.join("libprobe.so")).unwrap();
    let o = Command::new("gcc")
        .arg("-o")
        .arg(root.join("probe"))
        .arg(&main)
        .arg("-L")
        .arg(&link_dir)
        .arg("-lprobe")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fs::remove_dir_all(link_dir).unwrap();
    root.join("probe")
}

fn run_in(root: &Path) -> (bool, String) {
    let o = Command::new("/usr/sbin/chroot")
        .arg(root)
        .arg("/probe")
        .env_clear()
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn the_hosts_loader_finds_a_library_through_nvbinds_cache() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    loader_tree(&root);
    let (ok, out) = run_in(&root);
    assert!(!ok && out.contains("libprobe.so.1"), "control: {out}");
    let r = Root::open(&root).unwrap();
    let report = ldso::update(
        &r,
        &LdRequest {
            folders: vec!["/opt/gpu/lib".into()],
            host_driver_version: None,
        },
    )
    .unwrap();
    assert_eq!(report.links, 1, "libprobe.so.1 -> libprobe.so.550.54.14");
    let (ok, out) = run_in(&root);
    assert!(ok, "{out}");
    assert_eq!(out, "probe=42\n");
}

#[test]
fn cuda_compat_comes_first_only_when_newer_than_the_host_driver() {
    let dir = tempfile::tempdir().unwrap();
    for (compat, host, first) in [
        ("560.35.03", "550.54.14", true),
        ("550.90.07", "550.54.14", false),
        ("535.104.05", "550.54.14", false),
    ] {
        let root = dir.path().join(format!("r-{compat}"));
        gcc(
            &root.join(format!("usr/lib/x86_64-linux-gnu/libcuda.so.{host}")),
            Some("libcuda.so.1"),
            false,
            &["-nostdlib"],
        );
        gcc(
            &root.join(format!("usr/local/cuda-12.6/compat/libcuda.so.{compat}")),
            Some("libcuda.so.1"),
            false,
            &["-nostdlib"],
        );
        symlink("cuda-12.6", root.join("usr/local/cuda")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        let r = Root::open(&root).unwrap();
        let report = ldso::update(
            &r,
            &LdRequest {
                folders: vec!["/usr/lib/x86_64-linux-gnu".into()],
                host_driver_version: Some(host.into()),
            },
        )
        .unwrap();
        let cache = LdCache::open(root.join("etc/ld.so.cache")).unwrap();
        let libcuda: Vec<String> = cache
            .lookup(&["libcuda.so.1"])
            .map(|e| e.path.display().to_string())
            .collect();
        let want_first = if first {
            "/usr/local/cuda/compat/libcuda.so.1"
        } else {
            "/usr/lib/x86_64-linux-gnu/libcuda.so.1"
        };
        assert_eq!(libcuda[0], want_first, "{compat} vs {host}: {libcuda:?}");
        assert_eq!(report.compat.is_some(), first);
        assert_eq!(
            root.join("etc/ld.so.conf.d/00-compat-nvbind.conf").exists(),
            first
        );
    }
}

/// What `ldso::update` opens, from `strace -f -e trace=%file` of it run on `tree()` in
/// another process (this test binary, the ignored test below): each line that names
/// `path` (a path relative to the rootfs, as `Root` passes them to openat2, or an entry's
/// name relative to its directory's fd) as a whole string argument.
fn update_under_strace(root: &Path, log: &Path) -> Option<String> {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIP: no strace");
        return None;
    }
    let o = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=%file,%desc", "-o"])
        .arg(log)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "update_of_the_tree_in_env",
            "--test-threads=1",
        ])
        .env("NVBIND_LDSO_TEST_ROOT", root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Some(fs::read_to_string(log).unwrap())
}

fn calls_naming<'a>(log: &'a str, path: &str) -> Vec<&'a str> {
    let quoted = format!("\"{path}\"");
    log.lines()
        .filter(|l| l.contains(&quoted))
        // `PID call(...)` with -f: the call.
        .map(|l| l.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' '))
        .collect()
}

/// The image's /etc/ld.so.conf is a FIFO: the update neither waits for a writer (the
/// container's create would hang) nor replaces it; the default configuration is read instead.
#[test]
fn a_fifo_as_ld_so_conf_is_left_alone_and_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    tree(&root);
    let conf = root.join("etc/ld.so.conf");
    fs::remove_file(&conf).unwrap();
    nix::unistd::mkfifo(&conf, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let r = root.clone();
    std::thread::spawn(move || {
        let root = Root::open(&r).unwrap();
        let _ = tx.send(ldso::update(
            &root,
            &LdRequest {
                folders: vec!["/opt/first".into()],
                host_driver_version: None,
            },
        ));
    });
    // Not a timing check: on the old code the thread never returns, and the test must end.
    let report = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("ldso::update blocked on the FIFO")
        .unwrap();
    assert!(
        report
            .dirs
            .contains(&PathBuf::from("/usr/lib/i386-linux-gnu")),
        "the default conf's include was not read: {report:?}"
    );
    assert!(fs::symlink_metadata(&conf).unwrap().file_type().is_fifo());
}

/// Run by `each_conf_file_and_directory_is_looked_up_once` under strace.
#[test]
#[ignore = "run by each_conf_file_and_directory_is_looked_up_once"]
fn update_of_the_tree_in_env() {
    let root = PathBuf::from(std::env::var_os("NVBIND_LDSO_TEST_ROOT").unwrap());
    let r = Root::open(&root).unwrap();
    ldso::update(
        &r,
        &LdRequest {
            folders: vec!["/opt/first".into()],
            host_driver_version: None,
        },
    )
    .unwrap();
}

/// The linker cache's lookups: /etc/ld.so.conf and each file it includes are read once
/// (once given the cache the same directories as ldconfig, which the test above checks
/// with the same tree: the included a.conf's /usr/lib/i386-linux-gnu is in it), each
/// library directory is resolved from the rootfs once, each library file opened once, and a
/// soname link to a file of the same directory is read (readlinkat), not opened. Before:
/// ld.so.conf opened twice, every directory three times or more, every link opened.
#[test]
fn each_conf_file_and_directory_is_looked_up_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    tree(&root);
    let Some(log) = update_under_strace(&root, &dir.path().join("strace.log")) else {
        return;
    };
    for conf in [
        "etc/ld.so.conf",
        "etc/ld.so.conf.d/a.conf",
        "etc/ld.so.conf.d/z.conf",
    ] {
        let calls = calls_naming(&log, conf);
        assert_eq!(calls.len(), 1, "{conf}: {calls:#?}");
    }
    // The conf.d entry written for the folders is included by ld.so.conf: its text is taken
    // from memory, not read back (before: one more openat2 of it, fstat and two reads).
    let entry = calls_naming(&log, "etc/ld.so.conf.d/00-nvbind-cdi.conf");
    assert!(entry.is_empty(), "{entry:#?}");
    assert!(!calls_naming(&log, "00-nvbind-cdi.conf").is_empty());
    for d in ["opt/first", "opt/second", "usr/lib/i386-linux-gnu"] {
        let calls = calls_naming(&log, d);
        assert_eq!(calls.len(), 1, "{d}: {calls:#?}");
    }
    // A regular file: opened once, by name, beneath its directory's fd (the link made to
    // it names it too, in symlinkat).
    let opens: Vec<&str> = calls_naming(&log, "libver.so.2.10")
        .into_iter()
        .filter(|l| l.starts_with("open"))
        .collect();
    assert_eq!(opens.len(), 1, "{opens:?}");
    assert!(opens[0].starts_with("openat2("), "{opens:?}");
    // A link to a sibling (libdev.so.4 -> libdev.so.4.0.0): read, never opened.
    let link = calls_naming(&log, "libdev.so.4");
    assert!(
        !link.is_empty() && link.iter().all(|l| l.starts_with("readlinkat(")),
        "{link:?}"
    );
    // Directories are listed with getdents64 on the fd that was opened: no fdopendir
    // (fstat + fcntl F_GETFL + fcntl F_SETFD each) and no rewind (lseek) when the listing
    // is dropped. Before: 2 fcntl and 1 lseek per directory listed.
    let extra: Vec<&str> = log
        .lines()
        .map(|l| l.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' '))
        // (F_GETFD is std's own check of each fd it closes, in debug builds.)
        .filter(|l| (l.starts_with("fcntl(") && !l.contains("F_GETFD")) || l.starts_with("lseek("))
        .collect();
    assert!(extra.is_empty(), "{extra:#?}");
    // The cache it wrote is the one the ldconfig comparison checks.
    assert!(root.join("etc/ld.so.cache").is_file());
}
