//! The device cgroup (issue 14): a container may open only the devices its spec allows plus
//! runc's defaults, on cgroup v2 (the eBPF filter) as on v1, whatever the cgroup driver.
//! Every case runs against nvbind and against runc, the reference.
//!
//! On cgroup v2 hosts this runs as it is. On a hybrid host (v1 controllers, cgroup2 at
//! /sys/fs/cgroup/unified: the development and CI machines), every runtime command runs in a
//! private mount namespace where /sys/fs/cgroup is a cgroup2 mount ([`View`]): libcgroups and
//! runc see a pure v2 host and take their v2 paths (containers get cgroup2 directories, device
//! rules become an eBPF program). That is a sound stand-in for the device filter because
//! BPF_CGROUP_DEVICE programs are part of cgroup2's core, not of a controller: they attach to
//! any cgroup2 directory, with or without controllers, and the kernel runs the program of the
//! task's cgroup2 directory on every device open and mknod. The v1 `devices` controller still
//! applies too, but in this view no runtime puts the container into a v1 cgroup, so it stays
//! in the test's (on these machines the root, which allows everything). So the program is the
//! only thing that can refuse a device, and `the_filter_is_what_refuses_the_disk` shows it:
//! with the program detached from the very same container, the attack reads the disk.
//!
//! `NVBIND_TEST_SYSTEMD_CGROUP=1` runs everything with `--systemd-cgroup` (a host with
//! systemd: the Debian VMs of `scripts/hosts`).

mod common;

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::v2view::{cgroup_of, is_cgroup2, list_dirs, Case, Rt, View};
use common::*;
use libcgroups::v2::devices::bpf;
use serde_json::{json, Value};

fn systemd() -> bool {
    std::env::var_os("NVBIND_TEST_SYSTEMD_CGROUP").is_some_and(|v| v == "1")
}

/// What this suite's cases add to the shared pair of runtimes.
impl Case {
    /// A bundle from `nvbind spec` (runc's default config) running `script`, with CAP_MKNOD
    /// as Docker grants it, and a cgroup of its own for the driver in use.
    fn bundle(&self, name: &str, script: &str) -> PathBuf {
        let b = self.env.bundle(name, &["sh", "-c", script]);
        let prefix = self.env.cgroup_prefix.clone();
        self.env.edit(&b, |c| {
            for set in ["bounding", "effective", "permitted"] {
                c["process"]["capabilities"][set]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("CAP_MKNOD"));
            }
            c["linux"]["cgroupsPath"] = if systemd() {
                json!(format!("system.slice:{prefix}:{name}"))
            } else {
                json!(format!("/{prefix}-{name}"))
            };
        });
        b
    }

    /// `run` of `bundle` as `id`: the container's output, stdout and stderr together, without
    /// the runtime's own log lines (runc warns on stderr, e.g. about device nodes systemd
    /// does not know).
    fn run(&self, rt: Rt, bundle: &Path, id: &str) -> String {
        let out = self.rt(rt, &["run", "-b", bundle.to_str().unwrap(), id]);
        container_output(&out)
    }

    fn assert_clean(&self) {
        self.delete_all();
        self.env.assert_clean();
        assert!(
            list_dirs(&self.runc_root).is_empty(),
            "runc state left: {:?}",
            list_dirs(&self.runc_root)
        );
        if systemd() {
            let units = leaked_cgroups(&self.env.cgroup_prefix);
            assert!(units.is_empty(), "scopes left behind: {units:?}");
        }
    }
}

fn container_output(out: &Output) -> String {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    all.lines()
        .filter(|l| !(l.starts_with("time=\"") && l.contains(" level=")))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A loop device over a file that holds a secret: the host disk the attack goes after.
struct Disk {
    dev: String,
    secret: String,
    major: u64,
    minor: u64,
}

impl Disk {
    fn new(case: &Case) -> Disk {
        let secret = format!("NVBIND-DISK-SECRET-{}", std::process::id());
        let img = case.env.dir.path().join("disk.img");
        fs::write(&img, &secret).unwrap();
        let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.set_len(1 << 20).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .expect("losetup (package mount)");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let meta = fs::metadata(&dev).unwrap();
        assert!(meta.file_type().is_block_device());
        use std::os::unix::fs::MetadataExt;
        let rdev = meta.rdev();
        Disk {
            dev,
            secret,
            major: nix::sys::stat::major(rdev),
            minor: nix::sys::stat::minor(rdev),
        }
    }

    /// The attack of issue 14: make a node for the disk, read its first bytes.
    fn attack(&self) -> String {
        format!(
            "mknod /dev/disk b {} {} && echo mknod-ok; head -c 64 /dev/disk; echo",
            self.major, self.minor
        )
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Opens each path read-write (open only: ptmx would block a read) and says how it went.
const PROBE: &str = r#"probe() { r=$( (exec 3<>"$1") 2>&1 ); case "$r" in *"not permitted"*) echo "$1: EPERM";; "") echo "$1: open";; *) echo "$1: other";; esac; }
"#;

fn both(mut f: impl FnMut(Rt)) {
    for rt in [Rt::Runc, Rt::Nvbind] {
        f(rt);
    }
}

#[test]
fn the_cap_mknod_attack_gets_eperm() {
    let case = Case::new(systemd());
    let disk = Disk::new(&case);
    let b = case.bundle("b", &disk.attack());
    both(|rt| {
        let out = case.run(rt, &b, &format!("attack-{rt:?}").to_lowercase());
        // mknod is allowed (runc allows mknod of any device); opening it is not.
        assert!(out.contains("mknod-ok"), "{rt:?}: {out}");
        assert!(out.contains("Operation not permitted"), "{rt:?}: {out}");
        assert!(!out.contains(&disk.secret), "{rt:?} read the disk: {out}");
    });
    case.assert_clean();
}

/// The control for the view: the same container, its program detached before it starts,
/// reads the disk. So it is the program that refuses it, not something else of the setup.
#[test]
fn the_filter_is_what_refuses_the_disk() {
    let case = Case::new(systemd());
    let disk = Disk::new(&case);
    let b = case.bundle("b", &disk.attack());
    // The container writes to create's stdout, a file read once it has stopped.
    let log = case.env.dir.path().join("ctl.out");
    let mut create = case.command(Rt::Nvbind, &["create", "-b", b.to_str().unwrap(), "ctl"]);
    create
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(case.env.dir.path().join("ctl.err")).unwrap());
    assert!(create.status().unwrap().success());
    let cgroup = cgroup_of(case.pid(Rt::Nvbind, "ctl"));
    let fd: OwnedFd = fs::File::open(&cgroup).unwrap().into();
    let (ids, _) = bpf::query(fd.as_fd()).unwrap();
    assert_eq!(ids.len(), 1, "one device program on {}", cgroup.display());
    let prog = bpf::prog_by_id(ids[0]).unwrap();
    bpf::detach(fd.as_fd(), prog.as_fd()).unwrap();
    case.ok(Rt::Nvbind, &["start", "ctl"]);
    assert!(wait_for(|| {
        let state: Value = serde_json::from_str(&case.ok(Rt::Nvbind, &["state", "ctl"])).unwrap();
        state["status"] == "stopped"
    }));
    let out = fs::read_to_string(&log).unwrap();
    assert!(
        out.contains(&disk.secret),
        "without the program the attack should read the disk here; if it does not, \
         something else (the host's own v1 devices cgroup?) refuses it and these tests prove \
         nothing: {out}"
    );
    case.assert_clean();
}

#[test]
fn the_default_devices_still_work_and_nothing_else() {
    let case = Case::new(systemd());
    let script = format!(
        "{PROBE}for d in null zero full random urandom tty ptmx; do probe /dev/$d; done; \
         exec 4<>/dev/ptmx; probe /dev/pts/0; \
         mknod /dev/kmsg2 c 1 11; probe /dev/kmsg2; mknod /dev/console2 c 5 1; probe /dev/console2; \
         mknod /dev/null2 c 1 3; probe /dev/null2; \
         head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-written; \
         echo x > /dev/full || echo full-is-full"
    );
    let b = case.bundle("b", &script);
    let mut outputs = vec![];
    both(|rt| {
        let out = case.run(rt, &b, &format!("dev-{rt:?}").to_lowercase());
        for d in ["null", "zero", "full", "random", "urandom", "ptmx", "null2"] {
            assert!(
                out.contains(&format!("/dev/{d}: open")),
                "{rt:?} {d}: {out}"
            );
        }
        // No controlling terminal (ENXIO), and a locked pty (EIO): the cgroup let them by.
        assert!(out.contains("/dev/tty: other"), "{rt:?}: {out}");
        assert!(out.contains("/dev/pts/0: other"), "{rt:?}: {out}");
        // runc allows neither /dev/kmsg nor /dev/console (youki's defaults had the latter).
        assert!(out.contains("/dev/kmsg2: EPERM"), "{rt:?}: {out}");
        assert!(out.contains("/dev/console2: EPERM"), "{rt:?}: {out}");
        assert!(out.contains("\n4\n"), "{rt:?}: {out}");
        assert!(out.contains("null-written"), "{rt:?}: {out}");
        assert!(out.contains("full-is-full"), "{rt:?}: {out}");
        outputs.push(out);
    });
    assert_eq!(outputs[0], outputs[1], "runc and nvbind differ");
    case.assert_clean();
}

/// A fake GPU host: nodes 195:0, 195:1 and 195:255 in a temp dir, a CDI spec for them.
fn fake_gpus(case: &Case) -> (PathBuf, PathBuf) {
    let dev = case.env.dir.path().join("host-dev");
    fs::create_dir(&dev).unwrap();
    for (name, minor) in [("nvidia0", 0), ("nvidia1", 1), ("nvidiactl", 255)] {
        nix::sys::stat::mknod(
            &dev.join(name),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(195, minor),
        )
        .unwrap();
    }
    let spec_dir = case.env.dir.path().join("cdi");
    fs::create_dir(&spec_dir).unwrap();
    let d = dev.display();
    fs::write(
        spec_dir.join("nvidia.yaml"),
        format!(
            "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n\
             - name: \"0\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n      hostPath: {d}/nvidia0\n\
             - name: \"1\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia1\n      hostPath: {d}/nvidia1\n\
             containerEdits:\n  deviceNodes:\n  - path: /dev/nvidiactl\n    hostPath: {d}/nvidiactl\n"
        ),
    )
    .unwrap();
    (dev, spec_dir)
}

/// What CDI gives nvbind for GPU 0, written out for runc (which does no CDI).
fn gpu0_by_hand(c: &mut Value) {
    let mut devices = vec![];
    for (name, minor) in [("nvidia0", 0), ("nvidiactl", 255)] {
        devices.push(json!({"path": format!("/dev/{name}"), "type": "c", "major": 195, "minor": minor, "fileMode": 0o666, "uid": 0, "gid": 0}));
        c["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(
                json!({"allow": true, "type": "c", "major": 195, "minor": minor, "access": "rwm"}),
            );
    }
    c["linux"]["devices"] = json!(devices);
}

const GPU_PROBE: &str = "probe /dev/nvidia0; probe /dev/nvidiactl; \
    mknod /dev/nvidia1 c 195 1 && probe /dev/nvidia1";

#[test]
fn a_container_given_gpu0_gets_eperm_on_gpu1() {
    let case = Case::new(systemd());
    let (_, spec_dir) = fake_gpus(&case);
    let script = format!("{PROBE}{GPU_PROBE}");
    let cdi = case.bundle("cdi", &script);
    case.env.edit(&cdi, |c| {
        c["annotations"] = json!({"cdi.k8s.io/test": "nvidia.com/gpu=0"})
    });
    let by_hand = case.bundle("hand", &script);
    case.env.edit(&by_hand, gpu0_by_hand);
    let flag = format!("--cdi-spec-dir={}", spec_dir.display());
    let nv = case.output({
        let mut c = View::command(&case.view, NVBIND);
        c.arg("--root").arg(&case.env.root).arg(&flag);
        if systemd() {
            c.arg("--systemd-cgroup");
        }
        c.args(["run", "-b", cdi.to_str().unwrap(), "gpu-nvbind"]);
        c
    });
    let runc = case.run(Rt::Runc, &by_hand, "gpu-runc");
    let nv = container_output(&nv);
    for (who, out) in [("nvbind", &nv), ("runc", &runc)] {
        // No driver: ENXIO once the cgroup lets the open through.
        assert!(out.contains("/dev/nvidia0: other"), "{who}: {out}");
        assert!(out.contains("/dev/nvidiactl: other"), "{who}: {out}");
        assert!(out.contains("/dev/nvidia1: EPERM"), "{who}: {out}");
    }
    case.assert_clean();
}

#[test]
fn a_wildcard_allow_rule() {
    let case = Case::new(systemd());
    let disk = Disk::new(&case);
    let script = format!(
        "{PROBE}mknod /dev/n3 c 195 3; probe /dev/n3; mknod /dev/n4 c 195 4; probe /dev/n4; \
         mknod /dev/other c 196 0; probe /dev/other; {}",
        disk.attack()
    );
    let b = case.bundle("b", &script);
    case.env.edit(&b, |c| {
        c["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(json!({"allow": true, "type": "c", "major": 195, "access": "rw"}));
    });
    both(|rt| {
        let out = case.run(rt, &b, &format!("wild-{rt:?}").to_lowercase());
        assert!(out.contains("/dev/n3: other"), "{rt:?}: {out}");
        assert!(out.contains("/dev/n4: other"), "{rt:?}: {out}");
        assert!(out.contains("/dev/other: EPERM"), "{rt:?}: {out}");
        assert!(!out.contains(&disk.secret), "{rt:?}: {out}");
    });
    // `allow a` (a privileged container) opens everything, the disk included.
    let p = case.bundle("p", &disk.attack());
    case.env.edit(&p, |c| {
        c["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    });
    both(|rt| {
        let out = case.run(rt, &p, &format!("priv-{rt:?}").to_lowercase());
        assert!(out.contains(&disk.secret), "{rt:?}: {out}");
    });
    case.assert_clean();
}

#[test]
fn the_last_rule_wins() {
    let case = Case::new(systemd());
    let script = format!(
        "{PROBE}mknod /dev/n0 c 195 0; probe /dev/n0; head -c 0 /dev/n0; echo r=$?; \
         mknod /dev/n1 c 195 1; probe /dev/n1"
    );
    let b = case.bundle("b", &script);
    case.env.edit(&b, |c| {
        let rules = c["linux"]["resources"]["devices"].as_array_mut().unwrap();
        // rw for 195:0, then w taken away: read-only, and an O_RDWR open is refused.
        rules.push(json!({"allow": true, "type": "c", "major": 195, "minor": 0, "access": "rw"}));
        rules.push(json!({"allow": false, "type": "c", "major": 195, "minor": 0, "access": "w"}));
        // denied, then allowed again
        rules.push(json!({"allow": false, "type": "c", "major": 195, "minor": 1, "access": "rwm"}));
        rules.push(json!({"allow": true, "type": "c", "major": 195, "minor": 1, "access": "rw"}));
    });
    let mut outputs = vec![];
    both(|rt| {
        let out = case.run(rt, &b, &format!("last-{rt:?}").to_lowercase());
        assert!(out.contains("/dev/n0: EPERM"), "{rt:?}: {out}");
        assert!(
            out.contains("No such device or address"),
            "{rt:?} read of n0: {out}"
        );
        assert!(out.contains("/dev/n1: other"), "{rt:?}: {out}");
        outputs.push(out);
    });
    assert_eq!(outputs[0], outputs[1], "runc and nvbind differ");
    case.assert_clean();
}

#[test]
fn update_does_not_drop_the_filter() {
    let case = Case::new(systemd());
    let disk = Disk::new(&case);
    fake_gpus(&case);
    let b = case.bundle("b", "sleep 600");
    case.env.edit(&b, gpu0_by_hand);
    let resources = case.env.dir.path().join("resources.json");
    fs::write(&resources, r#"{"pids": {"limit": 100}}"#).unwrap();
    let pids_controller = is_cgroup2(Path::new("/sys/fs/cgroup"))
        || fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
            .unwrap_or_default()
            .contains("pids");
    if !pids_controller {
        // The hybrid host's cgroup2 has no pids controller: an empty update still goes
        // through the whole apply path.
        fs::write(&resources, "{}").unwrap();
    }
    let check = format!(
        "{PROBE}probe /dev/nvidia0; mknod /dev/nvidia1 c 195 1; probe /dev/nvidia1; {}",
        disk.attack()
    );
    both(|rt| {
        let id = format!("upd-{rt:?}").to_lowercase();
        case.env.own_cgroup(&b, &id);
        if systemd() {
            let prefix = case.env.cgroup_prefix.clone();
            case.env.edit(&b, |c| {
                c["linux"]["cgroupsPath"] = json!(format!("system.slice:{prefix}:{id}"))
            });
        }
        case.ok(rt, &["run", "-d", "-b", b.to_str().unwrap(), &id]);
        let cgroup = cgroup_of(case.pid(rt, &id));
        let fd: OwnedFd = fs::File::open(&cgroup).unwrap().into();
        let (before, _) = bpf::query(fd.as_fd()).unwrap();
        case.ok(rt, &["update", "-r", resources.to_str().unwrap(), &id]);
        let (after, _) = bpf::query(fd.as_fd()).unwrap();
        assert_eq!(before.len(), 1, "{rt:?}");
        if rt == Rt::Nvbind && !systemd() {
            // runc's update skips the device rules too: the very same program stays.
            assert_eq!(before, after, "{rt:?}");
        } else {
            // Under systemd (runc 1.1, and nvbind since it sets DevicePolicy=strict and
            // DeviceAllow as runc does): the unit's update makes systemd add a program of its
            // own, from the unit's DeviceAllow, next to the runtime's; the runtime's stays.
            assert!(
                before.iter().all(|id| after.contains(id)),
                "{rt:?}: {before:?} {after:?}"
            );
        }
        let out = case.ok(rt, &["exec", &id, "sh", "-c", &check]);
        // Except for runc under systemd: its DeviceAllow list leaves out nodes that have no
        // /sys/dev/char entry ("skipping device /dev/char/195:0 for systemd"), as these fake
        // GPUs do, so systemd's program added by the update refuses GPU 0. A real GPU has one.
        if !(rt == Rt::Runc && systemd()) {
            assert!(out.contains("/dev/nvidia0: other"), "{rt:?}: {out}");
        }
        assert!(out.contains("/dev/nvidia1: EPERM"), "{rt:?}: {out}");
        assert!(!out.contains(&disk.secret), "{rt:?}: {out}");
        case.ok(rt, &["delete", "--force", &id]);
    });
    case.assert_clean();
}

#[test]
fn a_hole_in_a_wildcard_is_refused_and_leaves_nothing() {
    let case = Case::new(systemd());
    let b = case.bundle("b", "true");
    case.env.edit(&b, |c| {
        let rules = c["linux"]["resources"]["devices"].as_array_mut().unwrap();
        rules.push(json!({"allow": true, "type": "c", "access": "rwm"}));
        rules.push(json!({"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"}));
    });
    let out = case.rt(Rt::Runc, &["run", "-b", b.to_str().unwrap(), "hole-runc"]);
    assert!(!out.status.success(), "runc refuses it too");
    let out = case.rt(Rt::Nvbind, &["run", "-b", b.to_str().unwrap(), "hole"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("linux.resources.devices[2] (deny c 1:3 w) cannot be expressed"),
        "{err}"
    );
    assert!(err.contains("wildcard rule c *:* rwm"), "{err}");
    case.assert_clean();

    // A pipe is not a cgroup device type.
    case.env.edit(&b, |c| {
        c["linux"]["resources"]["devices"] = json!([{"allow": true, "type": "p", "access": "rwm"}]);
    });
    let out = case.rt(Rt::Runc, &["run", "-b", b.to_str().unwrap(), "pipe-runc"]);
    assert!(!out.status.success(), "runc refuses it too");
    let out = case.rt(Rt::Nvbind, &["run", "-b", b.to_str().unwrap(), "pipe"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("invalid cgroup device type \"p\""), "{err}");
    case.assert_clean();
}

/// A kernel without bpf(2) (ENOSYS) or without BPF cgroup programs (EINVAL, as the kernel
/// says for an unknown program type), played by a seccomp filter on nvbind.
#[test]
fn a_kernel_without_bpf_device_filters_fails_cleanly() {
    if systemd() {
        // The failure comes before the driver matters; the cgroupfs run covers it.
        eprintln!("SKIP under --systemd-cgroup: run without NVBIND_TEST_SYSTEMD_CGROUP");
        return;
    }
    let case = Case::new(systemd());
    let b = case.bundle("b", "true");
    for (errno, says) in [
        (libc::ENOSYS, "this kernel has no bpf(2)"),
        (libc::EINVAL, "cannot run BPF cgroup device programs"),
    ] {
        let mut c = case.command(Rt::Nvbind, &["run", "-b", b.to_str().unwrap(), "nobpf"]);
        // SAFETY: only async-signal-safe calls (prctl) between fork and exec.
        unsafe {
            c.pre_exec(move || deny_bpf(errno));
        }
        let out = case.output(c);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{err}");
        assert!(err.contains("cannot filter devices on cgroup v2"), "{err}");
        // No state, no cgroup (and so no program on it).
        case.assert_clean();
    }
}

/// Installs a seccomp filter that fails bpf(2) with `errno` (classic BPF: load the syscall
/// number, compare, return ERRNO or ALLOW). Root needs no NO_NEW_PRIVS for it.
fn deny_bpf(errno: i32) -> std::io::Result<()> {
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // if A == SYS_bpf: next, else skip it
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: libc::SYS_bpf as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | errno as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: prctl with a valid sock_fprog that outlives the call.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Replacing the program of a cgroup that holds a process never leaves it unfiltered: a
/// process opening the disk in a loop while the rules are re-applied many times (an only
/// program: replaced atomically; two: attached, then the old ones detached) never gets in.
#[test]
fn reapplying_replaces_the_program_and_never_unfilters() {
    let case = Case::new(systemd());
    let disk = Disk::new(&case);
    let base = if is_cgroup2(Path::new("/sys/fs/cgroup")) {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/unified")
    };
    let cg = base.join(format!("{}-reapply", case.env.cgroup_prefix));
    fs::create_dir(&cg).unwrap();
    struct Rm(PathBuf, Option<Child>);
    impl Drop for Rm {
        fn drop(&mut self) {
            if let Some(mut c) = self.1.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            // The loop's last `head` may outlive the shell: kill what is left, then remove.
            let _ = fs::write(self.0.join("cgroup.kill"), "1");
            wait_for(|| {
                fs::read_to_string(self.0.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty())
            });
            let _ = fs::remove_dir(&self.0);
        }
    }
    let mut guard = Rm(cg.clone(), None);
    let rules = vec![oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .unwrap()];
    libcgroups::v2::devices::Devices::apply_devices(&cg, &Some(rules.clone())).unwrap();
    // Reads the disk in a loop and keeps what got through.
    let hits = case.env.dir.path().join("hits");
    let tries = case.env.dir.path().join("tries");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs; while :; do head -c 20 {} 2>/dev/null >> {}; echo >> {}; done",
            cg.display(),
            disk.dev,
            hits.display(),
            tries.display()
        ))
        .spawn()
        .unwrap();
    guard.1 = Some(child);
    assert!(wait_for(|| fs::metadata(&tries).is_ok_and(|m| m.len() > 0)));
    let fd: OwnedFd = fs::File::open(&cg).unwrap().into();
    for i in 0..300 {
        if i % 3 == 0 {
            // Someone else's program next to ours: the attach-then-detach path.
            let extra = bpf::load(
                c"GPL",
                &[
                    libcgroups::v2::devices::program::Insn::mov32_imm(0, 1),
                    libcgroups::v2::devices::program::Insn::exit(),
                ],
            )
            .unwrap();
            bpf::attach(fd.as_fd(), extra.as_fd(), bpf::BPF_F_ALLOW_MULTI, None).unwrap();
        }
        libcgroups::v2::devices::Devices::apply_devices(&cg, &Some(rules.clone())).unwrap();
        assert_eq!(bpf::query(fd.as_fd()).unwrap().0.len(), 1, "round {i}");
    }
    drop(guard);
    let attempts = fs::read_to_string(&tries).unwrap().len();
    assert!(attempts > 10, "the reader hardly ran: {attempts} attempts");
    let got = fs::read_to_string(&hits).unwrap_or_default();
    assert!(
        got.is_empty(),
        "the disk was read while the program was replaced: {got}"
    );
    assert!(!cg.exists());
    case.assert_clean();
}
