//! No helper process with container-controlled input: the linker cache and the library
//! links of a GPU container are made by nvbind itself (the runtime in the container's init,
//! nvbind-hook in the container's root), through openat2 RESOLVE_IN_ROOT; hostile images
//! (a malicious ld.so.conf.d, LD_PRELOAD in the image's environment, library directories
//! linked to host paths) touch nothing on the host. Needs root, gcc, runc, strace and the
//! nvbind binary of this build.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use nvbind_cdi::discover::ldcache::LdCache;
use nvbind_cdi::spec::{Format, Hook};

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    host: FakeHost,
    specs: PathBuf,
    bundle: PathBuf,
}

fn nvbind_bin() -> Option<PathBuf> {
    hook_bin()
        .parent()
        .map(|d| d.join("nvbind"))
        .filter(|p| p.is_file())
        .or_else(|| std::env::var_os("NVBIND").map(PathBuf::from))
        .filter(|p| p.is_file())
}

fn setup() -> Option<(Env, PathBuf)> {
    require_root();
    if !have("runc") || !have("gcc") {
        return None;
    }
    let Some(nvbind) = nvbind_bin() else {
        eprintln!("SKIP: no nvbind binary next to nvbind-hook and no $NVBIND");
        return None;
    };
    let tmp = tempdir();
    let dir = tmp.path().to_path_buf();
    let host = FakeHost::new(&dir.join("host"), 1);
    let specs = host.write_spec(&dir.join("cdi"), &hook_bin());
    let bundle = dir.join("bundle");
    busybox_rootfs(&bundle.join("rootfs"), &host);
    Some((
        Env {
            _tmp: tmp,
            dir,
            host,
            specs,
            bundle,
        },
        nvbind,
    ))
}

/// `nvbind run` of the bundle (optionally under `strace -f -e trace=execve -o LOG`).
fn nvbind_run(e: &Env, nvbind: &Path, strace_log: Option<&Path>) -> Output {
    let id = cid("nvb");
    let state = e.dir.join("nvbind-state");
    let mut cmd = match strace_log {
        Some(log) => {
            let mut c = Command::new("strace");
            c.args(["-f", "-qq", "-e", "trace=execve", "-o"])
                .arg(log)
                .arg(nvbind);
            c
        }
        None => Command::new(nvbind),
    };
    let out = run(cmd
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&e.bundle)
        .arg(&id)
        .env("NVBIND_CDI_SPEC_DIRS", &e.specs)
        .stdin(Stdio::null()));
    let _ = Command::new(nvbind)
        .arg("--root")
        .arg(&state)
        .args(["delete", "-f", &id])
        .output();
    out
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The programs successfully executed, from an strace log.
fn executed(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("execve(\"") && l.trim_end().ends_with("= 0"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect()
}

#[test]
fn nvbind_run_of_a_gpu_container_execs_nothing_but_its_process() {
    let Some((e, nvbind)) = setup() else { return };
    if !have("strace") {
        return;
    }
    // The spec names createContainer hooks (nvbind-hook update-ldcache, create-symlinks).
    let spec = fs::read_to_string(e.specs.join("nvidia.json")).unwrap();
    assert!(spec.contains("update-ldcache") && spec.contains("create-symlinks"));
    write_config(
        &e.bundle,
        &[
            "/bin/sh",
            "-c",
            "readlink /usr/lib/nvidia-fake/libcuda.so; /bin/cudaprobe",
        ],
        &["NVIDIA_VISIBLE_DEVICES=0".into()],
        None,
    );
    let log = e.dir.join("strace.log");
    let out = nvbind_run(&e, &nvbind, Some(&log));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // Their work was done: the link, and libcuda found through the container's cache.
    assert!(t.contains("libcuda.so.1\n"), "{t}");
    assert!(t.contains("cuInit=42"), "{t}");
    let execs = executed(&log);
    let foreign: Vec<&String> = execs
        .iter()
        .filter(|p| {
            let own = Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("nvbind"))
                && !p.contains("nvbind-hook");
            // The container's process and what its shell runs.
            let container = ["/bin/sh", "/bin/readlink", "/bin/cudaprobe"].contains(&p.as_str());
            !own && !container
        })
        .collect();
    assert!(
        foreign.is_empty(),
        "executed besides nvbind and the container: {foreign:?}"
    );
    assert!(execs.iter().any(|p| p == "/bin/cudaprobe"), "{execs:?}");
    assert!(!execs.iter().any(|p| p.contains("ldconfig")), "{execs:?}");
}

#[test]
fn a_hook_the_spec_names_gets_exactly_its_environment_not_the_images() {
    let Some((e, nvbind)) = setup() else { return };
    let record = e.dir.join("hook-env");
    let script = e.dir.join("vendor-hook");
    fs::write(&script, format!("#!/bin/sh\nenv > {}\n", record.display())).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = e.host.spec(&hook_bin());
    spec.container_edits.hooks.push(Hook {
        hook_name: "createContainer".into(),
        path: script.display().to_string(),
        args: vec!["vendor-hook".into()],
        env: vec!["ONLY=this".into()],
        ..Default::default()
    });
    let path = e.specs.join("nvidia.json");
    fs::write(&path, spec.to_string(Format::Json, &path).unwrap()).unwrap();
    let evil = e.bundle.join("rootfs/evil.so");
    fs::write(&evil, "not a library").unwrap();
    write_config(
        &e.bundle,
        &["/bin/cudaprobe"],
        &[
            "NVIDIA_VISIBLE_DEVICES=0".into(),
            "LD_PRELOAD=/evil.so".into(),
            "LD_LIBRARY_PATH=/tmp".into(),
        ],
        None,
    );
    let out = nvbind_run(&e, &nvbind, None);
    assert!(out.status.success(), "{}", text(&out));
    // Less what the hook's own shell sets (PWD, SHLVL): exactly the spec's environment.
    let env: Vec<String> = fs::read_to_string(&record)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL="))
        .map(str::to_string)
        .collect();
    assert_eq!(env, ["ONLY=this"]);
}

#[test]
fn a_malicious_ld_so_conf_d_touches_nothing_on_the_host() {
    let Some((e, nvbind)) = setup() else { return };
    // A host directory with a library the image wants indexed (and linked) from the host.
    let hostonly = e.dir.join("hostonly");
    fake_lib(
        &hostonly.join("libhostonly.so.1.0"),
        "libhostonly.so.1",
        "hostonly",
        1,
    );
    let conf = e.bundle.join("rootfs/etc/ld.so.conf.d");
    fs::create_dir_all(&conf).unwrap();
    let h = hostonly.display();
    fs::write(
        conf.join("evil.conf"),
        format!(
            "/proc/1/root{h}\n/proc/self/root{h}\n{h}\n/../../../..{h}\ninclude /proc/self/root/etc/ld.so.conf\ninclude /etc/ld.so.conf.d/*.conf\n"
        ),
    )
    .unwrap();
    fs::write(
        e.bundle.join("rootfs/etc/ld.so.conf"),
        "include /etc/ld.so.conf.d/*.conf\n",
    )
    .unwrap();
    let before: Vec<_> = fs::read_dir(&hostonly)
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .collect();
    let check = |what: &str| {
        let after: Vec<_> = fs::read_dir(&hostonly)
            .unwrap()
            .map(|d| d.unwrap().file_name())
            .collect();
        assert_eq!(after, before, "{what}: the host directory changed");
        let cache = LdCache::open(e.bundle.join("rootfs/etc/ld.so.cache")).unwrap();
        assert!(
            !cache.entries().iter().any(|x| x.name.contains("hostonly")),
            "{what}: {:?}",
            cache.entries()
        );
        assert!(
            cache.entries().iter().any(|x| x.name == "libcuda.so.1"),
            "{what}: {:?}",
            cache.entries()
        );
    };
    // Through the runtime (in the container's init, before pivot_root).
    write_config(
        &e.bundle,
        &["/bin/cudaprobe"],
        &["NVIDIA_VISIBLE_DEVICES=0".into()],
        None,
    );
    let out = nvbind_run(&e, &nvbind, None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("cuInit=42"));
    check("nvbind");
    // Through runc and nvbind-hook prestart (from the host, in /proc/PID/root).
    fs::remove_file(e.bundle.join("rootfs/etc/ld.so.cache")).unwrap();
    write_config(
        &e.bundle,
        &["/bin/cudaprobe"],
        &["NVIDIA_VISIBLE_DEVICES=0".into()],
        Some(&hook_env(&e.specs)),
    );
    let out = runtime_run("runc", &e.dir.join("runc-state"), &e.bundle, &cid("runc"));
    assert!(out.status.success(), "{}", text(&out));
    check("runc + nvbind-hook");
}

#[test]
fn a_library_directory_linked_to_a_host_path_stays_in_the_rootfs() {
    let Some((e, nvbind)) = setup() else { return };
    let outside = e.dir.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let libdir = e.bundle.join("rootfs/usr/lib/nvidia-fake");
    let _ = fs::remove_dir_all(&libdir);
    symlink(&outside, &libdir).unwrap();
    // Inside the rootfs that path leads to the rootfs's own copy of it.
    let inside = e
        .bundle
        .join("rootfs")
        .join(outside.strip_prefix("/").unwrap());
    fs::create_dir_all(&inside).unwrap();
    write_config(
        &e.bundle,
        &["/bin/cudaprobe"],
        &["NVIDIA_VISIBLE_DEVICES=0".into()],
        None,
    );
    let out = nvbind_run(&e, &nvbind, None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("cuInit=42"), "{}", text(&out));
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(inside.join("libcuda.so.1").is_symlink());
}

/// CUDA forward compatibility: an image's /usr/local/cuda/compat/libcuda.so.X (here a fake
/// whose cuInit answers 99) is what the container loads when it is newer than the host
/// driver (550.54.14, the libcuda the spec mounts), and never when it is older.
#[test]
fn cuda_forward_compat_libcuda_wins_only_when_newer() {
    let Some((e, nvbind)) = setup() else { return };
    for (compat, want) in [("560.35.03", "cuInit=99"), ("535.104.05", "cuInit=42")] {
        let dir = e.bundle.join("rootfs/usr/local/cuda-12.6/compat");
        let _ = fs::remove_dir_all(&dir);
        fake_lib(
            &dir.join(format!("libcuda.so.{compat}")),
            "libcuda.so.1",
            "cuInit",
            99,
        );
        let _ = symlink("cuda-12.6", e.bundle.join("rootfs/usr/local/cuda"));
        let _ = fs::remove_file(
            e.bundle
                .join("rootfs/etc/ld.so.conf.d/00-compat-nvbind.conf"),
        );
        write_config(
            &e.bundle,
            &["/bin/cudaprobe"],
            &["NVIDIA_VISIBLE_DEVICES=0".into()],
            None,
        );
        let out = nvbind_run(&e, &nvbind, None);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains(want), "compat {compat}: {}", text(&out));
    }
}
