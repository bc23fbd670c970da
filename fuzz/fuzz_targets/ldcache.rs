//! glibc's ld.so.cache (old, new and compat layouts), then what discovery does with it:
//! native-library lookup and resolving driver libraries inside a small fake driver root.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nvbind_cdi::discover::ldcache::LdCache;
use nvbind_cdi::discover::nvidia_files::driver_libraries;
use nvbind_cdi::discover::HostRoots;

/// A driver root with one versioned libcuda and its soname link, made once per process.
fn driver_root() -> &'static Path {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let lib = dir.path().join("usr/lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&lib).expect("lib dir");
        std::fs::write(lib.join("libcuda.so.550.54.15"), b"").expect("lib");
        std::os::unix::fs::symlink("libcuda.so.550.54.15", lib.join("libcuda.so.1"))
            .expect("soname link");
        dir
    })
    .path()
}

fuzz_target!(|data: &[u8]| {
    let cache = match LdCache::parse("/etc/ld.so.cache", data) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    for e in cache.entries() {
        assert!(!e.name.is_empty() && !e.name.contains('\0'));
        assert!(!e.path.as_os_str().is_empty());
    }
    let _ = cache.lookup(&["libcuda", "libnvidia-ml.so.1"]).count();
    let roots = HostRoots::under(driver_root());
    for version in [None, Some("550.54.15")] {
        for lib in driver_libraries(&roots, &cache, version) {
            assert!(
                lib.host_path.starts_with(driver_root()),
                "{lib:?} escaped the root"
            );
            let _: &PathBuf = &lib.path;
        }
    }
});
