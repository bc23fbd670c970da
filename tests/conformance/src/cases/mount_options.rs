//! Mount options: flags applied to tmpfs and (by remount) to bind mounts, optional flags
//! gated on `features`, and recursive bind semantics (rbind, bind, rro).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::run_probe;
use crate::bundle::push_mount;
use crate::harness::{chk, errno_of, has_opt, mount_at, Ctx, Results, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "mounts.options",
            cases: OPTIONS,
            run: options,
        },
        Scenario {
            name: "mounts.modes",
            cases: &["dev_ro_after_nodes", "tmpfs_takes_directory_mode"],
            run: modes,
        },
        Scenario {
            name: "mounts.destination",
            cases: &["relative_destination_from_root"],
            run: relative_destination,
        },
        Scenario {
            name: "mounts.recursive",
            cases: RECURSIVE,
            run: recursive,
        },
    ]
}

const OPTIONS: &[&str] = &[
    "tmpfs_ro",
    "noatime",
    "nosymfollow",
    "bind_remount_nodev_noexec",
];

fn options(ctx: &Ctx, r: &mut Results) {
    options_main(ctx, r);
    // Optional: only a runtime whose features list it must support it.
    if super::feature_has(ctx, "/mountOptions", "nosymfollow") == Some(false) {
        return r.skip(
            "nosymfollow",
            "the runtime's features do not list nosymfollow",
        );
    }
    if let Some(run) = run_probe(ctx, r, &["nosymfollow"], &[], |b| {
        push_mount(
            &mut b.config,
            json!({ "destination": "/mnt/c", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosymfollow"] }),
        );
    }) {
        let m = mount_at(&run.report, "/mnt/c").cloned().unwrap_or_default();
        r.check("nosymfollow", has_opt(&m, "nosymfollow"), || format!("{m}"));
    }
}

fn options_main(ctx: &Ctx, r: &mut Results) {
    let cases = &["tmpfs_ro", "noatime", "bind_remount_nodev_noexec"];
    let Some(run) = run_probe(ctx, r, cases, &["write:/mnt/a/x"], |b| {
        let s = b.shared().to_string_lossy().into_owned();
        for m in [
            json!({ "destination": "/mnt/a", "type": "tmpfs", "source": "tmpfs",
                    "options": ["ro"] }),
            json!({ "destination": "/mnt/b", "type": "tmpfs", "source": "tmpfs",
                    "options": ["noatime"] }),
            json!({ "destination": "/mnt/d", "type": "bind", "source": s,
                    "options": ["rbind", "nodev", "noexec"] }),
        ] {
            push_mount(&mut b.config, m);
        }
    }) else {
        return;
    };
    let rep = &run.report;
    let opts = |d: &str| mount_at(rep, d).cloned().unwrap_or_default();
    r.check(
        "tmpfs_ro",
        has_opt(&opts("/mnt/a"), "ro") && errno_of(chk(rep, "write:/mnt/a/x")) == Some(30),
        || format!("{} / write {}", opts("/mnt/a"), chk(rep, "write:/mnt/a/x")),
    );
    r.check("noatime", has_opt(&opts("/mnt/b"), "noatime"), || {
        format!("{}", opts("/mnt/b"))
    });
    let d = opts("/mnt/d");
    r.check(
        "bind_remount_nodev_noexec",
        has_opt(&d, "nodev") && has_opt(&d, "noexec"),
        || format!("{d}"),
    );
}

/// runc's mounts.bats "ro /dev mount" and run.bats "run with tmpfs": a "ro" /dev is made
/// read-only once its device nodes exist; a tmpfs over an existing directory without a mode=
/// option takes the directory's mode, setuid, setgid and sticky bits included (runc#3952).
fn modes(ctx: &Ctx, r: &mut Results) {
    let cases = &["dev_ro_after_nodes", "tmpfs_takes_directory_mode"];
    let checks = &["stat:/dev/null", "stat:/mnt/t", "openw:/dev/null"];
    let Some(run) = run_probe(ctx, r, cases, checks, |b| {
        if let Some(mounts) = b.config["mounts"].as_array_mut() {
            for m in mounts.iter_mut().filter(|m| m["destination"] == "/dev") {
                if let Some(o) = m["options"].as_array_mut() {
                    o.push(json!("ro"));
                }
            }
        }
        let dir = b.rootfs().join("mnt/t");
        let _ = fs::create_dir_all(&dir);
        let _ = fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o7777));
        push_mount(
            &mut b.config,
            json!({ "destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev"] }),
        );
    }) else {
        return;
    };
    let rep = &run.report;
    let dev = mount_at(rep, "/dev").cloned().unwrap_or_default();
    let null = chk(rep, "stat:/dev/null");
    r.check(
        "dev_ro_after_nodes",
        has_opt(&dev, "ro")
            && null["type"] == "c"
            && errno_of(chk(rep, "openw:/dev/null")).is_none(),
        || format!("/dev {dev}, /dev/null {null}"),
    );
    let t = chk(rep, "stat:/mnt/t");
    r.eq(
        "tmpfs_takes_directory_mode",
        t["mode"].as_u64(),
        Some(0o7777),
    );
}

/// A tmpfs mounted on the host under the bundle, unmounted on drop.
struct HostMount(PathBuf);

impl HostMount {
    fn tmpfs(at: &Path) -> Result<Self, String> {
        fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let t =
            std::ffi::CString::new(at.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: plain mount(2) with valid C strings.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                t.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(format!("mount tmpfs: {}", std::io::Error::last_os_error()));
        }
        Ok(HostMount(at.to_path_buf()))
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        if let Ok(t) = std::ffi::CString::new(self.0.to_string_lossy().as_bytes()) {
            // SAFETY: detach our own mount.
            unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

const RECURSIVE: &[&str] = &[
    "rbind_includes_submounts",
    "bind_excludes_submounts",
    "rro_makes_submounts_readonly",
];

fn recursive(ctx: &Ctx, r: &mut Results) {
    let mut guard: Option<HostMount> = None;
    let checks = &["stat:/mnt/r/inner/f", "stat:/mnt/nb/inner/f"];
    if let Some(run) = run_probe(ctx, r, &RECURSIVE[..2], checks, |b| {
        let src = b.shared();
        match HostMount::tmpfs(&src.join("inner")) {
            Ok(g) => {
                let _ = fs::write(src.join("inner/f"), "f");
                guard = Some(g);
            }
            Err(e) => eprintln!("# mounts.recursive: {e}"),
        }
        let s = src.to_string_lossy().into_owned();
        push_mount(
            &mut b.config,
            json!({ "destination": "/mnt/r", "type": "bind", "source": s, "options": ["rbind"] }),
        );
        push_mount(
            &mut b.config,
            json!({ "destination": "/mnt/nb", "type": "bind", "source": s, "options": ["bind"] }),
        );
    }) {
        let rep = &run.report;
        r.eq(
            "rbind_includes_submounts",
            chk(rep, "stat:/mnt/r/inner/f")["type"].as_str(),
            Some("f"),
        );
        r.eq(
            "bind_excludes_submounts",
            errno_of(chk(rep, "stat:/mnt/nb/inner/f")),
            Some(libc::ENOENT as i64),
        );
        drop(guard.take());
        drop(run);
    }
    drop(guard.take());
    let checks = &["write:/mnt/r/inner/x", "write:/mnt/r/y"];
    if let Some(run) = run_probe(ctx, r, &RECURSIVE[2..], checks, |b| {
        let src = b.shared();
        if let Ok(g) = HostMount::tmpfs(&src.join("inner")) {
            guard = Some(g);
        }
        push_mount(
            &mut b.config,
            json!({ "destination": "/mnt/r", "type": "bind", "source": src.to_string_lossy(),
                    "options": ["rbind", "rro"] }),
        );
    }) {
        let rep = &run.report;
        let inner = errno_of(chk(rep, "write:/mnt/r/inner/x"));
        let top = errno_of(chk(rep, "write:/mnt/r/y"));
        r.check(
            "rro_makes_submounts_readonly",
            inner == Some(libc::EROFS as i64) && top == Some(libc::EROFS as i64),
            || format!("errno of writes: submount {inner:?}, top {top:?}"),
        );
        drop(guard.take());
        drop(run);
    }
    drop(guard);
}

/// config.md: a relative destination "MUST be interpreted as relative to `/`".
fn relative_destination(ctx: &Ctx, r: &mut Results) {
    let case = "relative_destination_from_root";
    if let Some(run) = run_probe(ctx, r, &[case], &[], |b| {
        push_mount(
            &mut b.config,
            json!({ "destination": "mnt/relative", "type": "tmpfs", "source": "tmpfs" }),
        );
    }) {
        let m = mount_at(&run.report, "/mnt/relative");
        r.check(case, m.is_some_and(|m| m["fstype"] == "tmpfs"), || {
            format!("mount at /mnt/relative: {m:?}")
        });
    }
}
