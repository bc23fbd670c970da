//! `podman container checkpoint/restore --runtime nvbind` end to end. Needs root, podman,
//! conmon and a CRIU that works on this kernel; without them it prints why it skips.

mod common;

use std::fs;
use std::process::{Command, Stdio};

use common::criu::*;
use common::{wait_for, Env, NVBIND};

#[test]
fn podman_checkpoint_and_restore_through_nvbind() {
    let _turn = take_turn();
    let Some(criu) = working_criu() else { return };
    if !Command::new("sh")
        .args(["-c", "command -v podman && command -v conmon"])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        eprintln!("skipping: podman or conmon is not installed");
        return;
    }
    let env = Env::new();
    let t = tempfile::Builder::new()
        .prefix("nvbind-podman-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let p = t.path();
    fs::write(
        p.join("storage.conf"),
        format!("[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/storage\"\nrunroot = \"{0}/runroot\"\n", p.display()),
    )
    .unwrap();
    fs::write(
        p.join("containers.conf"),
        "[containers]\nnetns = \"none\"\nlog_driver = \"k8s-file\"\n\
         default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
         [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .unwrap();
    // podman finds criu on PATH (go-criu): put the working one first.
    let bin = p.join("bin");
    fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(&criu, bin.join("criu")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let podman = |args: &[&str]| -> (bool, String) {
        let out = Command::new("podman")
            .arg("--root")
            .arg(p.join("storage"))
            .arg("--runroot")
            .arg(p.join("runroot"))
            .arg("--tmpdir")
            .arg(p.join("libpod"))
            .args(args)
            .env("CONTAINERS_CONF", p.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", p.join("storage.conf"))
            .env("PATH", &path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    struct Cleanup<F: Fn()>(F);
    impl<F: Fn()> Drop for Cleanup<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    let _cleanup = Cleanup(|| {
        let _ = podman(&["rm", "-af", "-t", "0"]);
        let _ = podman(&["rmi", "-af"]);
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("grep -o '{} [^ ]*' /proc/self/mountinfo >/dev/null; awk '{{print $5}}' /proc/self/mountinfo | grep '^{}' | sort -r | xargs -r umount -l", p.display(), p.display()))
            .status();
    });
    let b = env.bundle("img", &["true"]);
    let import = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {}/rootfs -c . | podman --root {1}/storage --runroot {1}/runroot --tmpdir {1}/libpod import - localhost/busybox",
            b.display(),
            p.display()
        ))
        .env("CONTAINERS_CONF", p.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", p.join("storage.conf"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(import.success());
    let rt = NVBIND;
    let (ok, out) = podman(&[
        "run",
        "-d",
        "--name",
        "ck",
        "--runtime",
        rt,
        "localhost/busybox",
        "sh",
        "-c",
        COUNTER,
    ]);
    assert!(ok, "{out}");
    // The counter rewrites the file in place (`echo > f` truncates first), so a read can
    // find it empty: read again rather than take that for 0 (a CI run did).
    let count = || -> u64 {
        for _ in 0..20 {
            if let Ok(n) = podman(&["exec", "ck", "cat", "/tmp/count"])
                .1
                .trim()
                .parse()
            {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        0
    };
    assert!(wait_for(|| count() > 2));
    let (ok, out) = podman(&["container", "checkpoint", "--runtime", rt, "ck"]);
    assert!(ok, "podman checkpoint: {out}");
    let (ok, out) = podman(&["container", "restore", "--runtime", rt, "ck"]);
    assert!(ok, "podman restore: {out}");
    let c = count();
    assert!(
        c > 2 && wait_for(|| count() > c + 2),
        "counter did not continue after podman restore"
    );
    let tar = p.join("ck.tar.gz");
    let (ok, out) = podman(&[
        "container",
        "checkpoint",
        "--runtime",
        rt,
        "--export",
        tar.to_str().unwrap(),
        "ck",
    ]);
    assert!(ok, "podman checkpoint --export: {out}");
    let (ok, out) = podman(&["rm", "-f", "ck"]);
    assert!(ok, "{out}");
    let (ok, out) = podman(&[
        "container",
        "restore",
        "--runtime",
        rt,
        "--import",
        tar.to_str().unwrap(),
    ]);
    assert!(ok, "podman restore --import: {out}");
    let c = count();
    assert!(wait_for(|| count() > c + 2));
    let (ok, out) = podman(&[
        "container",
        "checkpoint",
        "--runtime",
        rt,
        "--leave-running",
        "ck",
    ]);
    assert!(ok, "podman checkpoint --leave-running: {out}");
    let c = count();
    assert!(wait_for(|| count() > c + 2));
}
