//! Trust checks on real files. Trust::RootOwned judges ownership, and making a file someone
//! else's needs chown, so these tests do their work only as root (as CI runs them).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::name::QualifiedName;
use crate::registry::{HookProblem, Registry, RegistryError, Trust, Untrusted};

const USER: u32 = 1000;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_user(p: &Path) {
    nix::unistd::chown(p, Some(nix::unistd::Uid::from_raw(USER)), None).unwrap();
}

fn mkdir(p: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir_all(p).unwrap();
    chmod(p, mode);
    p.to_path_buf()
}

/// A spec of kind vendor.com/NAME with one device `x`; `hook` adds a createContainer hook.
fn spec(dir: &Path, name: &str, hook: Option<&str>) -> PathBuf {
    let mut text = format!(
        "cdiVersion: 0.5.0\nkind: vendor.com/{name}\ndevices:\n- name: x\n  containerEdits:\n    env: [A=1]\n"
    );
    if let Some(h) = hook {
        text.push_str(&format!(
            "containerEdits:\n  hooks:\n  - hookName: createContainer\n    path: {h}\n"
        ));
    }
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, text).unwrap();
    chmod(&p, 0o644);
    p
}

fn hook(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
    chmod(&p, mode);
    p
}

fn errors(r: &Registry) -> Vec<(PathBuf, String)> {
    r.errors()
        .iter()
        .map(|(p, e)| (p.clone(), e.to_string()))
        .collect()
}

fn kinds(r: &Registry) -> Vec<String> {
    r.kinds()
}

#[test]
fn spec_dirs_and_files_are_judged_with_every_directory_above_them() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    chmod(t, 0o755);
    // A spec dir owned by a user (who could add or replace files).
    let user_dir = mkdir(&t.join("user-dir"), 0o755);
    spec(&user_dir, "ud", None);
    chown_user(&user_dir);
    // A root-owned spec dir inside a directory others can write (and so rename it away).
    let open_parent = mkdir(&t.join("open"), 0o777);
    let below_open = mkdir(&open_parent.join("cdi"), 0o755);
    spec(&below_open, "bo", None);
    // ...and inside a sticky world-writable one (/tmp-like): fine.
    let sticky = mkdir(&t.join("sticky"), 0o1777);
    let below_sticky = mkdir(&sticky.join("cdi"), 0o755);
    spec(&below_sticky, "bs", None);
    // A root-owned spec dir inside a user's directory.
    let home = mkdir(&t.join("home"), 0o755);
    chown_user(&home);
    let in_home = mkdir(&home.join("cdi"), 0o755);
    spec(&in_home, "ih", None);

    let dirs = vec![
        user_dir.clone(),
        below_open.clone(),
        below_sticky.clone(),
        in_home.clone(),
    ];
    let r = Registry::with_trust(dirs.clone(), Trust::RootOwned);
    assert_eq!(kinds(&r), ["vendor.com/bs"]);
    let errs = errors(&r);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_eq!(errs[0].0, user_dir);
    assert!(errs[0].1.contains("owned by uid 1000"), "{}", errs[0].1);
    assert_eq!(errs[1].0, below_open);
    assert!(
        errs[1].1.contains(&format!(
            "in directory {}, which is writable by group or others (mode 0777)",
            open_parent.display()
        )),
        "{}",
        errs[1].1
    );
    assert_eq!(errs[2].0, in_home);
    assert!(
        errs[2].1.contains(&format!(
            "in directory {}, which is owned by uid 1000",
            home.display()
        )),
        "{}",
        errs[2].1
    );
    // The control: without the trust policy everything loads.
    let lax = Registry::with_trust(dirs, Trust::Any);
    assert!(lax.errors().is_empty(), "{:?}", lax.errors());
    assert_eq!(kinds(&lax).len(), 4);
}

#[test]
fn symlinked_spec_files_and_dirs_are_judged_by_their_targets_too() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    chmod(t, 0o755);
    let home = mkdir(&t.join("home"), 0o755);
    chown_user(&home);
    // A root-owned 0644 spec in a user's directory: the user can swap it for another file.
    let target = spec(&home, "linked", None);
    let good_target_dir = mkdir(&t.join("store"), 0o755);
    let good_target = spec(&good_target_dir, "fine", None);
    let specs = mkdir(&t.join("cdi"), 0o755);
    symlink(&target, specs.join("linked.yaml")).unwrap();
    symlink(&good_target, specs.join("fine.yaml")).unwrap();
    // A spec directory that is a link into the user's directory.
    let linked_dir_target = mkdir(&home.join("cdi"), 0o755);
    spec(&linked_dir_target, "ld", None);
    let linked_dir = t.join("linked-cdi");
    symlink(&linked_dir_target, &linked_dir).unwrap();

    let r = Registry::with_trust(vec![specs.clone(), linked_dir.clone()], Trust::RootOwned);
    assert_eq!(kinds(&r), ["vendor.com/fine"]);
    let errs = errors(&r);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].0, specs.join("linked.yaml"));
    assert!(
        errs[0]
            .1
            .contains(&format!("in directory {}", home.display())),
        "{}",
        errs[0].1
    );
    assert_eq!(errs[1].0, linked_dir);
    assert!(errs[1].1.contains("owned by uid 1000"), "{}", errs[1].1);
}

/// Root's link, to a link in a user's directory, to root's spec: both ends pass, the hop in
/// the middle is the user's to retarget (review finding). And a FIFO planted as a spec is
/// refused without hanging the registry.
#[test]
fn every_link_on_the_way_to_a_spec_is_judged_and_only_regular_files_are_read() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    chmod(t, 0o755);
    let store = mkdir(&t.join("store"), 0o755);
    let real = spec(&store, "hop", None);
    let home = mkdir(&t.join("home"), 0o755);
    symlink(&real, home.join("hop.yaml")).unwrap();
    chown_user(&home);
    let specs = mkdir(&t.join("cdi"), 0o755);
    symlink(home.join("hop.yaml"), specs.join("hop.yaml")).unwrap();
    // Relative links resolve from the link's own directory.
    symlink("../store/hop.yaml", specs.join("rel.yaml")).unwrap();
    nix::unistd::mkfifo(
        &specs.join("fifo.yaml"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();

    let r = Registry::with_trust(vec![specs.clone()], Trust::RootOwned);
    let errs = errors(&r);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].0, specs.join("fifo.yaml"));
    let source = std::error::Error::source(&r.errors()[0].1).map(|e| e.to_string());
    assert!(errs[0].1.contains("cannot read"), "{}", errs[0].1);
    assert_eq!(source.as_deref(), Some("not a regular file"));
    assert_eq!(errs[1].0, specs.join("hop.yaml"));
    assert!(
        errs[1].1.contains(&format!(
            "in directory {}, which is owned by uid 1000",
            home.display()
        )),
        "{}",
        errs[1].1
    );
    // rel.yaml (the same spec, reached through root's directories only) loads.
    assert_eq!(kinds(&r), ["vendor.com/hop"]);
    assert!(r.specs().iter().any(|s| s.path == specs.join("rel.yaml")));
}

#[test]
fn hooks_must_be_absolute_existing_and_roots_alone() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    chmod(t, 0o755);
    let bin = mkdir(&t.join("bin"), 0o755);
    let good = hook(&bin, "good", 0o755);
    let writable = hook(&bin, "writable", 0o777);
    let group = hook(&bin, "group", 0o775);
    let open_dir = mkdir(&t.join("open"), 0o777);
    let in_open = hook(&open_dir, "hook", 0o755);
    let link = bin.join("link");
    symlink(&good, &link).unwrap();
    let missing = bin.join("missing");
    let specs = mkdir(&t.join("cdi"), 0o755);

    let mut cases: Vec<(&str, String, Option<&str>)> = vec![
        ("good", good.display().to_string(), None),
        ("link", link.display().to_string(), None),
        (
            "relative",
            "nvbind-hook".into(),
            Some("invalid containerEdits.hooks[0].path"),
        ),
        (
            "missing",
            missing.display().to_string(),
            Some("does not exist"),
        ),
        (
            "dir",
            bin.display().to_string(),
            Some("is not a regular file"),
        ),
        (
            "writable",
            writable.display().to_string(),
            Some("writable by group or others (mode 0777)"),
        ),
        (
            "group",
            group.display().to_string(),
            Some("writable by group or others (mode 0775)"),
        ),
        (
            "inopen",
            in_open.display().to_string(),
            Some("which is writable by group or others (mode 0777)"),
        ),
    ];
    {
        let foreign = hook(&bin, "foreign", 0o755);
        chown_user(&foreign);
        cases.push((
            "foreign",
            foreign.display().to_string(),
            Some("owned by uid 1000, not root"),
        ));
        let home = mkdir(&t.join("home"), 0o755);
        let in_home = hook(&home, "hook", 0o755);
        chown_user(&home);
        cases.push((
            "inhome",
            in_home.display().to_string(),
            Some("which is owned by uid 1000"),
        ));
        // A root-owned link in a user's directory: the user can retarget it.
        let home_link = home.join("link");
        symlink(&good, &home_link).unwrap();
        cases.push((
            "homelink",
            home_link.display().to_string(),
            Some("which is owned by uid 1000"),
        ));
        // Root's link to a link in the user's directory, to root's hook: both ends are
        // trusted, but the user can retarget the link in the middle (review finding).
        let via_home = bin.join("via-home");
        symlink(&home_link, &via_home).unwrap();
        cases.push((
            "viahome",
            via_home.display().to_string(),
            Some("which is owned by uid 1000"),
        ));
    }
    for (name, path, _) in &cases {
        spec(&specs, name, Some(path));
    }

    let strict = Registry::with_trust(vec![specs.clone()], Trust::RootOwned);
    let lax = Registry::with_trust(vec![specs.clone()], Trust::Any);
    for (name, path, want) in &cases {
        let file = specs.join(format!("{name}.yaml"));
        let kind = format!("vendor.com/{name}");
        let dev = QualifiedName::parse(&format!("{kind}=x")).unwrap();
        // Relative paths are refused by validation whatever the trust.
        if *name == "relative" {
            assert!(lax.device(&dev).is_none());
        } else {
            assert!(lax.device(&dev).is_some(), "{name}: {:?}", lax.errors());
        }
        let errs: Vec<_> = strict.errors().iter().filter(|(p, _)| p == &file).collect();
        match want {
            None => {
                assert!(errs.is_empty(), "{name}: {errs:?}");
                assert!(strict.device(&dev).is_some(), "{name}");
            }
            Some(want) => {
                assert_eq!(errs.len(), 1, "{name}: {:?}", strict.errors());
                assert!(strict.device(&dev).is_none(), "{name}");
                let line = errs[0].1.to_string();
                assert!(line.contains(want), "{name}: {line}");
                assert!(!line.contains('\n'), "{line}");
                assert!(line.contains(file.to_str().unwrap()), "{line}");
                if *name != "relative" {
                    assert!(line.contains(&format!("hook {path} ")), "{line}");
                    assert!(line.contains("CDI hooks run as root on the host"), "{line}");
                    assert!(matches!(errs[0].1, RegistryError::Hook { .. }), "{line}");
                }
            }
        }
    }

    // The device that needs a refused hook reports the reason, not just the file.
    let line = strict
        .resolve(&[QualifiedName::parse("vendor.com/writable=x").unwrap()])
        .unwrap_err()
        .to_string();
    assert!(line.contains("rejected spec files: "), "{line}");
    assert!(
        line.contains(&format!(
            "{} (hook {} is writable by group or others (mode 0777)",
            specs.join("writable.yaml").display(),
            writable.display()
        )),
        "{line}"
    );
}

#[test]
fn hook_problems_say_what_to_do() {
    for (problem, want) in [
        (HookProblem::Missing, "install it at that path"),
        (
            HookProblem::Untrusted(Untrusted::Writable(0o777)),
            "chmod go-w",
        ),
        (
            HookProblem::NotAFile,
            "point the spec at the hook's executable",
        ),
    ] {
        assert!(problem.remedy().contains(want), "{problem}");
    }
}

#[test]
fn root_in_a_users_namespace_trusts_as_that_user() {
    assert_eq!(
        Trust::for_user(0, Some("         0          0 4294967295\n")),
        Trust::RootOwned
    );
    assert_eq!(Trust::for_user(0, None), Trust::RootOwned);
    // rootless Podman: root inside maps to the user outside
    assert_eq!(
        Trust::for_user(0, Some("0 1000 1\n1 100000 65536\n")),
        Trust::Any
    );
    assert_eq!(Trust::for_user(1000, None), Trust::Any);
}
