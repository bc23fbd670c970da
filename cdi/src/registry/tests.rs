use std::os::unix::fs::PermissionsExt;

use super::*;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/specs")
        .join(rel)
}

fn spec_yaml(kind: &str, devices: &[(&str, &str)], spec_env: &str) -> String {
    let mut s = format!("cdiVersion: 0.5.0\nkind: {kind}\ndevices:\n");
    for (name, env) in devices {
        s.push_str(&format!(
            "- name: \"{name}\"\n  containerEdits:\n    env: [\"{env}\"]\n"
        ));
    }
    if !spec_env.is_empty() {
        s.push_str(&format!("containerEdits:\n  env: [\"{spec_env}\"]\n"));
    }
    s
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

fn names(r: &Registry) -> Vec<String> {
    r.devices().iter().map(|n| n.to_string()).collect()
}

fn q(s: &str) -> QualifiedName {
    QualifiedName::parse(s).unwrap()
}

fn error_paths(r: &Registry) -> Vec<PathBuf> {
    r.errors().iter().map(|(p, _)| p.clone()).collect()
}

#[test]
fn loads_the_fixture_specs() {
    let tmp = tempfile::tempdir().unwrap();
    for f in [
        "nvidia.yaml",
        "nvidia-mig.yaml",
        "amd.yaml",
        "example-net.json",
    ] {
        write(
            tmp.path(),
            f,
            &std::fs::read_to_string(testdata(f)).unwrap(),
        );
    }
    // Trust::Any: the fixtures name hooks (/usr/bin/nvidia-ctk) this host need not have;
    // trust is tested in registry/trust/tests.rs.
    let r = Registry::with_trust(vec![tmp.path().into()], Trust::Any);
    assert!(r.errors().is_empty(), "{:?}", r.errors());
    assert_eq!(
        names(&r),
        [
            "amd.com/gpu=0",
            "amd.com/gpu=1",
            "amd.com/gpu=all",
            "example.com/net=rdma0",
            "nvidia.com/gpu=0",
            "nvidia.com/gpu=1",
            "nvidia.com/gpu=GPU-4b6a5f0e-6a1c-4d1b-9f5e-2a3c9d1e7b01",
            "nvidia.com/gpu=GPU-9c3e1d2a-0b4f-4e6d-8a7c-5f1e2d3c4b02",
            "nvidia.com/gpu=all",
            "nvidia.com/mig.gpu=0:0",
            "nvidia.com/mig.gpu=MIG-2f7e3b8c-1d4a-5e6f-9a0b-c1d2e3f4a5b6",
        ]
    );
    assert_eq!(
        r.kinds(),
        [
            "amd.com/gpu",
            "example.com/net",
            "nvidia.com/gpu",
            "nvidia.com/mig.gpu"
        ]
    );
    assert_eq!(r.dirs(), [tmp.path().to_path_buf()]);
    let (spec, dev) = r.device(&q("nvidia.com/gpu=1")).unwrap();
    assert_eq!(spec.path, tmp.path().join("nvidia.yaml"));
    assert_eq!(dev.container_edits.device_nodes[0].path, "/dev/nvidia1");
}

#[test]
fn a_broken_file_is_reported_and_hides_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "a.yaml",
        &spec_yaml("vendor.com/dev", &[("d0", "A=1")], ""),
    );
    let mut bad = Vec::new();
    for f in std::fs::read_dir(testdata("bad")).unwrap() {
        let f = f.unwrap().path();
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        bad.push(write(
            tmp.path(),
            &name,
            &std::fs::read_to_string(&f).unwrap(),
        ));
    }
    // Not spec files: ignored, not errors.
    write(tmp.path(), "notes.txt", "garbage");
    write(tmp.path(), "other.yml", "garbage");
    write(&tmp.path().join("sub"), "nested.yaml", "garbage");

    let r = Registry::with_trust(vec![tmp.path().into()], Trust::Any);
    assert_eq!(names(&r), ["vendor.com/dev=d0"]);
    bad.sort();
    assert_eq!(error_paths(&r), bad);
    for (path, err) in r.errors() {
        let text = format!("{err}");
        assert!(text.contains(path.to_str().unwrap()), "{text}");
    }
}

#[test]
fn conflicting_files_of_the_same_priority_drop_the_device() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write(
        tmp.path(),
        "a.yaml",
        &spec_yaml("vendor.com/dev", &[("x", "A=1"), ("y", "Y=1")], ""),
    );
    let b = write(
        tmp.path(),
        "b.json",
        &serde_json::to_string(
            &Spec::from_slice(
                spec_yaml("vendor.com/dev", &[("x", "B=1"), ("z", "Z=1")], "").as_bytes(),
                crate::spec::Format::Yaml,
                Path::new("b"),
            )
            .unwrap(),
        )
        .unwrap(),
    );
    let r = Registry::with_trust(vec![tmp.path().into()], Trust::Any);
    assert_eq!(names(&r), ["vendor.com/dev=y", "vendor.com/dev=z"]);
    let errs: Vec<_> = r
        .errors()
        .iter()
        .map(|(p, e)| (p.clone(), e.to_string()))
        .collect();
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0].0, b);
    assert_eq!(errs[1].0, a);
    assert!(
        errs[0].1.contains("conflicting device vendor.com/dev=x"),
        "{}",
        errs[0].1
    );
    assert!(errs[0].1.contains(a.to_str().unwrap()), "{}", errs[0].1);
}

/// `etc/v.yaml` (devices x and e, spec edits S=etc) and `run/v.yaml` (device x, S=run)
/// under `root`: the same kind in two directories.
fn etc_and_run(root: &Path) -> (PathBuf, PathBuf) {
    let etc = root.join("etc");
    let run = root.join("run");
    write(
        &etc,
        "v.yaml",
        &spec_yaml(
            "vendor.com/dev",
            &[("x", "FROM=etc"), ("e", "E=1")],
            "S=etc",
        ),
    );
    write(
        &run,
        "v.yaml",
        &spec_yaml("vendor.com/dev", &[("x", "FROM=run")], "S=run"),
    );
    (etc, run)
}

#[test]
fn later_directories_win() {
    let tmp = tempfile::tempdir().unwrap();
    let (etc, run) = etc_and_run(tmp.path());
    let r = Registry::with_trust(vec![etc.clone(), run.clone()], Trust::Any);
    assert!(r.errors().is_empty());
    assert_eq!(names(&r), ["vendor.com/dev=e", "vendor.com/dev=x"]);
    assert_eq!(
        r.resolve(&[q("vendor.com/dev=x")]).unwrap().env,
        ["S=run", "FROM=run"]
    );
    // Each spec's own edits come once, before its first device.
    assert_eq!(
        r.resolve(&[
            q("vendor.com/dev=x"),
            q("vendor.com/dev=e"),
            q("vendor.com/dev=x")
        ])
        .unwrap()
        .env,
        ["S=run", "FROM=run", "S=etc", "E=1"]
    );
    // Reversed order: etc wins.
    let r = Registry::with_trust(vec![run, etc], Trust::Any);
    assert_eq!(
        r.resolve(&[q("vendor.com/dev=x")]).unwrap().env,
        ["S=etc", "FROM=etc"]
    );
}

/// `into_edits` (the resolver's, moving the edits out) gives what `resolve` gives, for
/// every order, repeat and missing name.
#[test]
fn into_edits_equals_resolve() {
    let tmp = tempfile::tempdir().unwrap();
    let (etc, run) = etc_and_run(tmp.path());
    write(
        &run,
        "w.yaml",
        &spec_yaml("other.com/w", &[("a", "A=1"), ("b", "B=1")], ""),
    );
    let load = || Registry::with_trust(vec![etc.clone(), run.clone()], Trust::Any);
    let cases: &[&[&str]] = &[
        &[],
        &["vendor.com/dev=x"],
        &["vendor.com/dev=x", "vendor.com/dev=e", "vendor.com/dev=x"],
        &[
            "other.com/w=b",
            "vendor.com/dev=e",
            "other.com/w=a",
            "other.com/w=b",
        ],
        &["other.com/w=a", "vendor.com/dev=nope", "other.com/w=zz"],
    ];
    for case in cases {
        let wanted: Vec<QualifiedName> = case.iter().map(|n| q(n)).collect();
        let copied = load().resolve(&wanted).map_err(|e| e.to_string());
        let moved = load().into_edits(&wanted).map_err(|e| e.to_string());
        assert_eq!(moved, copied, "{case:?}");
    }
    assert_eq!(
        load()
            .into_edits(&[q("other.com/w=b"), q("vendor.com/dev=e")])
            .unwrap()
            .env,
        ["B=1", "S=etc", "E=1"]
    );
}

#[test]
fn a_same_priority_conflict_is_not_rescued_by_a_later_directory() {
    // The reference drops a conflicting name even if a higher-priority spec defines it.
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    let run = tmp.path().join("run");
    write(
        &etc,
        "a.yaml",
        &spec_yaml("vendor.com/dev", &[("x", "A=1")], ""),
    );
    write(
        &etc,
        "b.yaml",
        &spec_yaml("vendor.com/dev", &[("x", "B=1")], ""),
    );
    write(
        &run,
        "c.yaml",
        &spec_yaml("vendor.com/dev", &[("x", "C=1"), ("w", "W=1")], ""),
    );
    let r = Registry::with_trust(vec![etc, run], Trust::Any);
    assert_eq!(names(&r), ["vendor.com/dev=w"]);
    assert_eq!(r.errors().len(), 2);
}

#[test]
fn missing_directories_are_fine_and_files_are_not_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "plain", "x");
    let r = Registry::with_trust(vec![tmp.path().join("absent"), file.clone()], Trust::Any);
    assert!(r.devices().is_empty());
    assert_eq!(error_paths(&r), [file]);
    assert!(matches!(
        r.errors()[0].1,
        RegistryError::NotADirectory { .. }
    ));
}

#[test]
fn default_dirs() {
    let r = Registry::with_trust(Vec::new(), Trust::Any);
    assert_eq!(
        r.dirs(),
        [PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")]
    );
}

#[test]
fn unresolvable_names_are_reported_on_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "a.yaml",
        &spec_yaml("vendor.com/dev", &[("x", "A=1")], ""),
    );
    let broken = write(tmp.path(), "broken.yaml", "cdiVersion: [");
    let absent = tmp.path().join("absent");
    let r = Registry::with_trust(vec![tmp.path().into(), absent.clone()], Trust::Any);
    let err = r
        .resolve(&[
            q("vendor.com/dev=x"),
            q("nvidia.com/gpu=7"),
            q("amd.com/gpu=all"),
        ])
        .unwrap_err();
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    for needle in [
        "unresolvable CDI devices nvidia.com/gpu=7, amd.com/gpu=all",
        "known kinds: vendor.com/dev",
        tmp.path().to_str().unwrap(),
        absent.to_str().unwrap(),
        broken.to_str().unwrap(),
    ] {
        assert!(line.contains(needle), "{needle} not in {line}");
    }
    assert!(!line.contains("vendor.com/dev=x"), "{line}");
    // Each rejected file comes with why, sources included, and its path said once.
    let why = format!("{} (", broken.display());
    assert!(line.contains(&why), "{line}");
    assert_eq!(line.matches(broken.to_str().unwrap()).count(), 1, "{line}");

    let empty = Registry::with_trust(vec![absent], Trust::Any);
    let line = empty
        .resolve(&[q("nvidia.com/gpu=0")])
        .unwrap_err()
        .to_string();
    assert!(
        line.starts_with("unresolvable CDI device nvidia.com/gpu=0 (known kinds: none;"),
        "{line}"
    );
    assert!(empty.resolve(&[]).unwrap().is_empty());
}

#[test]
fn refresh_rebuilds_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write(
        tmp.path(),
        "a.yaml",
        &spec_yaml("vendor.com/dev", &[("x", "A=1")], ""),
    );
    let mut r = Registry::with_trust(vec![tmp.path().into()], Trust::Any);
    assert_eq!(names(&r), ["vendor.com/dev=x"]);
    std::fs::remove_file(&a).unwrap();
    write(
        tmp.path(),
        "b.yaml",
        &spec_yaml("vendor.com/dev", &[("y", "A=1")], ""),
    );
    write(tmp.path(), "c.yaml", "nope: [");
    r.refresh();
    assert_eq!(names(&r), ["vendor.com/dev=y"]);
    assert_eq!(r.errors().len(), 1);
    std::fs::remove_file(tmp.path().join("c.yaml")).unwrap();
    r.refresh();
    assert!(r.errors().is_empty());
}

#[test]
fn root_owned_trust_refuses_writable_or_foreign_files() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    let ok = write(
        &good,
        "ok.yaml",
        &spec_yaml("vendor.com/ok", &[("x", "A=1")], ""),
    );
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o755)).unwrap();
    let writable = write(
        &good,
        "writable.yaml",
        &spec_yaml("vendor.com/w", &[("x", "A=1")], ""),
    );
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o666)).unwrap();
    let group = write(
        &good,
        "group.yaml",
        &spec_yaml("vendor.com/g", &[("x", "A=1")], ""),
    );
    std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o664)).unwrap();
    let open_dir = tmp.path().join("open");
    write(
        &open_dir,
        "o.yaml",
        &spec_yaml("vendor.com/o", &[("x", "A=1")], ""),
    );
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();

    let mut foreign = None;
    if nix::unistd::geteuid().is_root() {
        let f = write(
            &good,
            "foreign.yaml",
            &spec_yaml("vendor.com/f", &[("x", "A=1")], ""),
        );
        nix::unistd::chown(&f, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
        foreign = Some(f);
    }

    let dirs = vec![good.clone(), open_dir.clone()];
    let strict = Registry::with_trust(dirs.clone(), Trust::RootOwned);
    if nix::unistd::geteuid().is_root() {
        assert_eq!(names(&strict), ["vendor.com/ok=x"]);
        let mut expected = vec![writable.clone(), group.clone()];
        expected.extend(foreign.clone());
        expected.push(open_dir.clone());
        let mut got = error_paths(&strict);
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
        for (path, err) in strict.errors() {
            let RegistryError::Untrusted { reason, .. } = err else {
                panic!("{path:?}: {err:?}");
            };
            let want_owner = Some(path) == foreign.as_ref();
            assert_eq!(
                matches!(reason, Untrusted::Owner(1000)),
                want_owner,
                "{path:?}: {reason}"
            );
        }
        assert!(strict
            .errors()
            .iter()
            .any(|(p, e)| p == &writable && e.to_string().contains("(mode 0666)")));
    }
    let _ = ok;

    let lax = Registry::with_trust(dirs, Trust::Any);
    assert!(lax.errors().is_empty(), "{:?}", lax.errors());
    assert_eq!(lax.devices().len(), if foreign.is_some() { 5 } else { 4 });
}

#[test]
fn generated_specs_outlive_refreshes_once_each() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "a.yaml",
        &spec_yaml("vendor.com/dev", &[("file", "A=1")], ""),
    );
    let mut r = Registry::with_trust(vec![tmp.path().into()], Trust::Any);
    let made = |name: &str, env: &str| -> Spec {
        Spec::from_slice(
            spec_yaml("vendor.com/dev", &[(name, env)], "").as_bytes(),
            crate::spec::Format::Yaml,
            Path::new("mem"),
        )
        .unwrap()
    };
    r.add_generated(made("jit", "B=1"), "<made>".into(), true)
        .unwrap();
    assert_eq!(names(&r), ["vendor.com/dev=jit"]);
    r.add_generated(made("more", "C=1"), "<made 2>".into(), false)
        .unwrap();
    for _ in 0..2 {
        r.refresh();
        // The file's spec is read again beside the generated ones, each kept once.
        assert_eq!(
            names(&r),
            [
                "vendor.com/dev=file",
                "vendor.com/dev=jit",
                "vendor.com/dev=more"
            ]
        );
        let origins: Vec<_> = r
            .specs()
            .iter()
            .map(|s| (s.generated, s.path.clone()))
            .collect();
        assert_eq!(
            origins,
            [
                (false, tmp.path().join("a.yaml")),
                (true, "<made>".into()),
                (true, "<made 2>".into())
            ]
        );
    }
    let edits = r.into_edits(&[q("vendor.com/dev=jit")]).unwrap();
    assert_eq!(edits.env, ["B=1"]);
}
