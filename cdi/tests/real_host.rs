//! The real host implementation of `HostDevices`: device nodes made with mknod in a temp dir
//! (the mknod part needs root and is skipped otherwise), then applied to an OCI spec.

use std::io;

use nvbind_cdi::apply::{apply, HostDevices, NodeKind, RealHost};
use nvbind_cdi::spec::{ContainerEdits, DeviceNode};
use oci_spec::runtime::{LinuxDeviceType, Spec as OciSpec};

fn base_spec() -> OciSpec {
    serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/"},
        "root": {"path": "rootfs"}
    }))
    .unwrap()
}

/// The real host: device nodes made with mknod in a temp dir (needs root; skipped otherwise).
#[test]
fn real_host_stats_mknod_nodes() {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("file"), b"x").unwrap();
    let fifo = p("fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    assert_eq!(RealHost.stat(&p("file")).unwrap().kind, NodeKind::Other);
    assert_eq!(RealHost.stat(&fifo).unwrap().kind, NodeKind::Fifo);
    assert_eq!(
        RealHost.stat(&p("absent")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );

    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: skipping the mknod part");
        return;
    }
    mknod(
        &p("nvidia0"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(195, 0),
    )
    .unwrap();
    mknod(
        &p("nvidiactl"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o660),
        makedev(195, 255),
    )
    .unwrap();
    mknod(
        &p("blk"),
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        makedev(7, 3),
    )
    .unwrap();
    std::os::unix::fs::symlink(p("nvidia0"), p("link")).unwrap();
    // mknod is subject to the umask; set the mode we check explicitly.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p("nvidiactl"), std::fs::Permissions::from_mode(0o660)).unwrap();

    let n = RealHost.stat(&p("nvidiactl")).unwrap();
    assert_eq!(
        (n.kind, n.major, n.minor, n.mode),
        (NodeKind::Char, 195, 255, 0o660)
    );
    let b = RealHost.stat(&p("blk")).unwrap();
    assert_eq!((b.kind, b.major, b.minor), (NodeKind::Block, 7, 3));
    // lstat: a symlink is not a device node, as in the reference.
    assert_eq!(RealHost.stat(&p("link")).unwrap().kind, NodeKind::Other);

    let edits = ContainerEdits {
        device_nodes: vec![DeviceNode {
            path: "/dev/nvidia0".into(),
            host_path: Some(p("nvidia0").to_str().unwrap().into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let out = apply(&edits, &base_spec(), &RealHost).unwrap();
    let d = &out.linux().as_ref().unwrap().devices().as_ref().unwrap()[0];
    assert_eq!(
        (d.typ(), d.major(), d.minor()),
        (LinuxDeviceType::C, 195, 0)
    );
}
