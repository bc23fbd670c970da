//! What several targets share: a bundle directory and a fixed table of host device nodes.

use std::io;
use std::path::Path;
use std::sync::OnceLock;

use nvbind_cdi::apply::{HostDevices, HostNode, NodeKind};

/// /dev/* are character devices (major 195, the minor from the path's length), anything else
/// is missing: deterministic, and no fuzz input ever stats the real host.
pub struct FixedHost;

impl HostDevices for FixedHost {
    fn stat(&self, path: &Path) -> io::Result<HostNode> {
        if !path.starts_with("/dev") {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(HostNode {
            kind: NodeKind::Char,
            major: 195,
            minor: path.as_os_str().len() as i64 % 256,
            mode: 0o666,
            uid: 0,
            gid: 0,
        })
    }
}

/// A bundle directory, made once per process: a `rootfs` directory and a `file` that is not
/// one (so root.path can name either).
pub fn bundle_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("rootfs")).expect("rootfs");
        std::fs::write(dir.path().join("file"), b"").expect("file");
        dir
    })
    .path()
}
