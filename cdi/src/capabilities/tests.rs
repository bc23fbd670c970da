use super::*;

#[test]
fn file_name_is_paths_file_name() {
    for p in [
        "/usr/lib/libcuda.so.1",
        "libcuda.so",
        "/usr/lib/",
        "/usr/lib//",
        "/usr/lib/.",
        "/usr/lib/..",
        "/",
        "",
        ".",
        "..",
        "/a/./b",
        "a/b/./",
    ] {
        assert_eq!(
            file_name(p),
            Path::new(p).file_name().and_then(|n| n.to_str()),
            "{p:?}"
        );
    }
}

/// Paths built from every short sequence of awkward components, with and without a
/// leading and a trailing `/`.
fn awkward_paths() -> Vec<String> {
    crate::path_text::awkward_paths(
        &["a", "..", ".", "", "libx.so.1"],
        4,
        &[("", ""), ("/", ""), ("", "/"), ("/", "/")],
    )
}

/// What `select` computed with `Path` before it compared text: the reference.
fn path_lexical_target(link: &Path, target: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = if target.is_absolute() {
        PathBuf::from("/")
    } else {
        link.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    for c in target.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

#[test]
fn text_paths_compare_parent_and_join_as_path_does() {
    let paths = awkward_paths();
    for p in &paths {
        let c = canonical(p);
        assert_eq!(Path::new(&*c), Path::new(p), "canonical({p:?}) = {c:?}");
        let mut joined = PathBuf::new();
        for part in Path::new(p).components() {
            joined.push(part);
        }
        assert_eq!(*c, *joined.to_string_lossy(), "{p:?}");
        let want = Path::new(&*c).parent().map(|d| d.to_str().unwrap());
        assert_eq!(parent(&c), want, "parent of {c:?}");
        let want = Path::new(&*c).file_name().and_then(|n| {
            let stem = library_stem(n.to_str()?)?;
            Some((Path::new(&*c).parent()?.to_str()?, stem))
        });
        assert_eq!(dir_stem(&c), want, "dir_stem of {c:?}");
        let name = p.rsplit('/').next().unwrap();
        let want = name.find(".so").map(|at| &name[..at + 3]);
        assert_eq!(library_stem(name), want, "library_stem of {name:?}");
    }
    // Equal as text exactly when equal as Path.
    for p in paths.iter().step_by(25) {
        for q in &paths {
            assert_eq!(
                canonical(p) == canonical(q),
                Path::new(p) == Path::new(q),
                "{p:?} {q:?}"
            );
        }
    }
    for link in paths.iter().step_by(40) {
        let link = canonical(link);
        for target in &paths {
            let want = path_lexical_target(Path::new(&*link), Path::new(target));
            assert_eq!(
                lexical_target(&link, target),
                want.to_str().unwrap(),
                "link {link:?} target {target:?}"
            );
        }
    }
}

#[test]
fn files_are_classified_as_libnvidia_container_does() {
    let v = "550.54.14";
    for (p, n) in [
        (
            format!("/usr/lib/x86_64-linux-gnu/libcuda.so.{v}"),
            Need::ComputeLibs,
        ),
        (
            format!("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.{v}"),
            Need::UtilityLibs,
        ),
        (
            format!("/usr/lib/x86_64-linux-gnu/libnvcuvid.so.{v}"),
            Need::VideoLibs,
        ),
        (
            format!("/usr/lib/x86_64-linux-gnu/libGLX_nvidia.so.{v}"),
            Need::GraphicsLibs,
        ),
        (
            format!("/usr/lib/x86_64-linux-gnu/libnvidia-ngx.so.{v}"),
            Need::NgxLibs,
        ),
        (
            "/usr/lib/x86_64-linux-gnu/libnvidia-egl-gbm.so.1.1.1".into(),
            Need::GraphicsLibs,
        ),
        ("/usr/bin/nvidia-smi".into(), Need::UtilityBins),
        ("/usr/bin/nvidia-cuda-mps-server".into(), Need::ComputeBins),
        ("/run/nvidia-persistenced/socket".into(), Need::UtilityLibs),
        ("/tmp/nvidia-mps".into(), Need::ComputeLibs),
        (
            format!("/lib/firmware/nvidia/{v}/gsp_ga10x.bin"),
            Need::Always,
        ),
        (
            "/usr/share/vulkan/icd.d/nvidia_icd.json".into(),
            Need::GraphicsLibs,
        ),
        (
            "/usr/lib/xorg/modules/drivers/nvidia_drv.so".into(),
            Need::Display,
        ),
        (
            "/usr/share/X11/xorg.conf.d/10-nvidia.conf".into(),
            Need::Display,
        ),
    ] {
        assert_eq!(need_of_file(&p), Some(n), "{p}");
    }
    assert_eq!(need_of_file("/usr/lib/libsomething-else.so.1"), None);
    assert_eq!(need_of_node("/dev/nvidia-uvm"), Need::ComputeLibs);
    assert_eq!(need_of_node("/dev/nvidia-modeset"), Need::Display);
    assert_eq!(need_of_node("/dev/dri/renderD128"), Need::GraphicsLibs);
    assert_eq!(need_of_node("/dev/nvidia0"), Need::Always);
    assert!(is_32bit_path("/usr/lib/i386-linux-gnu/libcuda.so.1"));
}

#[test]
fn link_hooks_lose_the_links_of_removed_files() {
    let mut h = Hook {
        hook_name: "createContainer".into(),
        path: "/usr/bin/nvbind-hook".into(),
        args: [
            "nvbind-hook",
            "create-symlinks",
            "--link",
            "libcuda.so.1::/usr/lib/libcuda.so",
            "--link=../card1::/dev/dri/by-path/pci-0000:18:00.0-card",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..Default::default()
    };
    filter_link_hook(&mut h, &|t, _| !t.contains("card"));
    assert_eq!(
        h.args,
        [
            "nvbind-hook",
            "create-symlinks",
            "--link",
            "libcuda.so.1::/usr/lib/libcuda.so"
        ]
    );
}
