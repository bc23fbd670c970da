//! seccompagent: the seccomp user-notification agent of runc's contrib/cmd/seccompagent
//! (v1.1.15), with the same command line and answers. It listens on a unix socket for the
//! runtime's ContainerProcessState message (the OCI state as JSON, with the notify descriptor
//! named "seccompFd" in "fds") and answers each container's notifications:
//!
//! * `mkdir`: done by the agent for the container, with `-<listenerMetadata>` appended to the
//!   name (relative to the caller's cwd, or to its root for an absolute path); ENOSYS if that
//!   fails;
//! * `chmod`, `fchmod`, `fchmodat`: fail with ENOMEDIUM;
//! * anything else: continues (SECCOMP_USER_NOTIF_FLAG_CONTINUE).
//!
//! Syscalls are named through libseccomp (the library runc links), for any architecture.
//!
//! Usage: `seccompagent [-socketfile PATH] [-pid-file FILE]`

use std::ffi::{c_char, c_int, CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixListener;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use nvbind_runc_helpers::{recv_with_fds, Args};

const SECCOMP_FD_NAME: &str = "seccompFd"; // specs.SeccompFdName
const FLAG_CONTINUE: u32 = 1; // SECCOMP_USER_NOTIF_FLAG_CONTINUE
const NOTIF_RECV: libc::c_ulong = 0xC050_2100; // _IOWR('!', 0, struct seccomp_notif)
const NOTIF_SEND: libc::c_ulong = 0xC018_2101; // _IOWR('!', 1, struct seccomp_notif_resp)
const NOTIF_ID_VALID: libc::c_ulong = 0x4008_2102; // _IOW('!', 2, __u64)

#[link(name = "seccomp")]
extern "C" {
    fn seccomp_syscall_resolve_num_arch(arch_token: u32, num: c_int) -> *mut c_char;
}

#[repr(C)]
#[derive(Default)]
struct SeccompData {
    nr: c_int,
    arch: u32,
    instruction_pointer: u64,
    args: [u64; 6],
}

#[repr(C)]
#[derive(Default)]
struct Notif {
    id: u64,
    pid: u32,
    flags: u32,
    data: SeccompData,
}

#[repr(C)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

fn log(level: &str, msg: &str) {
    eprintln!("level={level} msg={msg:?}");
}

fn ioctl<T>(fd: &OwnedFd, request: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
    loop {
        // SAFETY: arg is the structure this request reads or fills, of the kernel's size.
        if unsafe { libc::ioctl(fd.as_raw_fd(), request, arg as *mut T) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn id_valid(fd: &OwnedFd, id: u64) -> bool {
    let mut id = id;
    ioctl(fd, NOTIF_ID_VALID, &mut id).is_ok()
}

fn syscall_name(arch: u32, nr: c_int) -> Option<String> {
    // SAFETY: libseccomp returns a malloc'd NUL-terminated string or NULL.
    unsafe {
        let p = seccomp_syscall_resolve_num_arch(arch, nr);
        if p.is_null() {
            return None;
        }
        let s = CStr::from_ptr(p).to_string_lossy().into_owned();
        libc::free(p.cast());
        Some(s)
    }
}

/// filepath-securejoin's SecureJoin: `unsafe_path` resolved as if `root` were "/", symlinks
/// included, so the result never leaves `root`.
fn secure_join(root: &Path, unsafe_path: &str) -> std::io::Result<PathBuf> {
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: Vec<String> = unsafe_path.split('/').rev().map(String::from).collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(&part);
        match std::fs::read_link(root.join(&candidate)) {
            Ok(target) => {
                links += 1;
                if links > 255 {
                    return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
                }
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(s) => pending.push(s.to_string_lossy().into_owned()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            Err(_) => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

fn read_arg_string(pid: u32, addr: u64) -> std::io::Result<String> {
    let mem = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    let mut buf = vec![0u8; 4096]; // PATH_MAX
    let n = mem.read_at(&mut buf, addr)?;
    buf.truncate(n);
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

fn mkdir_for_container(pid: u32, name: &str, mode: u64, metadata: &str) -> std::io::Result<()> {
    let root = if name.starts_with('/') {
        format!("/proc/{pid}/root/")
    } else {
        format!("/proc/{pid}/cwd/")
    };
    let path = secure_join(Path::new(&root), &format!("{name}-{metadata}"))?;
    let c = CString::new(path.into_os_string().into_encoded_bytes())?;
    // SAFETY: mkdir on a NUL-terminated path.
    if unsafe { libc::mkdir(c.as_ptr(), mode as libc::mode_t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for a notification; false once no task uses the filter any more (POLLHUP: the
/// container is gone and the descriptor will never be readable again).
fn wait_readable(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd that lives across the call.
        let n = unsafe { libc::poll(&mut p, 1, -1) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return n > 0 && p.revents & libc::POLLIN != 0;
    }
}

fn handle(fd: OwnedFd, metadata: String) {
    while wait_readable(&fd) {
        let mut req = Notif::default(); // zeroed, as the kernel requires
        if let Err(e) = ioctl(&fd, NOTIF_RECV, &mut req) {
            // ENOENT is transient: the task was interrupted between the wake-up and the
            // receive. Closing the listener on it would fail every later notified syscall of
            // the container with ENOSYS (a Python agent that did made runc fail here).
            log("error", &format!("Error in NotifReceive(): {e}"));
            if e.raw_os_error() == Some(libc::EBADF) {
                return;
            }
            continue;
        }
        let Some(name) = syscall_name(req.data.arch, req.data.nr) else {
            log(
                "error",
                &format!("Error decoding syscall {}()", req.data.nr),
            );
            continue;
        };
        log(
            "debug",
            &format!(
                "Received syscall {name:?}, pid {}, arch {:#x}",
                req.pid, req.data.arch
            ),
        );
        let mut resp = NotifResp {
            id: req.id,
            val: 0,
            error: 0,
            flags: FLAG_CONTINUE,
        };
        if !id_valid(&fd, req.id) {
            log("error", "TOCTOU check failed: req.ID is no longer valid");
            continue;
        }
        match name.as_str() {
            "mkdir" => {
                resp.flags = 0;
                let done = read_arg_string(req.pid, req.data.args[0]).and_then(|path| {
                    log("debug", &format!("mkdir: {path:?}"));
                    if !id_valid(&fd, req.id) {
                        return Err(std::io::Error::other("TOCTOU: req.ID no longer valid"));
                    }
                    mkdir_for_container(req.pid, &path, req.data.args[1], &metadata)
                });
                if let Err(e) = done {
                    log("error", &format!("mkdir for the container: {e}"));
                    // The kernel takes a negated errno.
                    (resp.error, resp.val) = (-libc::ENOSYS, -1);
                }
            }
            "chmod" | "fchmod" | "fchmodat" => {
                (resp.error, resp.val, resp.flags) = (-libc::ENOMEDIUM, -1, 0);
            }
            _ => {}
        }
        if let Err(e) = ioctl(&fd, NOTIF_SEND, &mut resp) {
            log("error", &format!("Error in notification response: {e}"));
        }
    }
}

/// The seccomp descriptor and listenerMetadata of one ContainerProcessState message; every
/// other descriptor received is closed (dropped).
fn receive(conn: &std::os::unix::net::UnixStream) -> Result<(OwnedFd, String), String> {
    const MAX: usize = 4096;
    let (msg, mut fds) = recv_with_fds(conn.as_raw_fd(), MAX, 1).map_err(|e| e.to_string())?;
    if msg.len() >= MAX || fds.is_empty() {
        return Err(format!(
            "recvfd: incorrect number of bytes read (n={} fds={})",
            msg.len(),
            fds.len()
        ));
    }
    let state: serde_json::Value =
        serde_json::from_slice(&msg).map_err(|e| format!("cannot parse OCI state: {e}"))?;
    let names: Vec<&str> = state["fds"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let idx = match names.iter().filter(|n| **n == SECCOMP_FD_NAME).count() {
        1 => names
            .iter()
            .position(|n| *n == SECCOMP_FD_NAME)
            .unwrap_or(0),
        _ => return Err("seccomp fd not found or malformed containerProcessState.Fds".into()),
    };
    if idx >= fds.len() {
        return Err("seccomp fd index out of range".into());
    }
    let metadata = state["metadata"].as_str().unwrap_or("").to_string();
    Ok((fds.swap_remove(idx), metadata))
}

/// Go's filepath.Base: trailing slashes dropped, "" gives ".", only slashes give "/".
fn go_base(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".into();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

fn run() -> Result<(), String> {
    let args = Args::parse(
        std::env::args().skip(1),
        &["socketfile", "pid-file"],
        &["help", "h"],
    )?;
    if args.has("help") || args.has("h") || !args.positional.is_empty() {
        return Err("usage: seccompagent [-socketfile PATH] [-pid-file FILE]".into());
    }
    let socket = args
        .value(&["socketfile"])
        .unwrap_or("/run/seccomp-agent.socket");
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("Cannot cleanup socket file: {e}")),
    }
    if let Some(pid_file) = args.value(&["pid-file"]) {
        std::fs::write(pid_file, std::process::id().to_string())
            .map_err(|e| format!("Cannot write pid file: {e}"))?;
    }
    log("info", "Waiting for seccomp file descriptors");
    let listener = UnixListener::bind(socket).map_err(|e| format!("Cannot listen: {e}"))?;
    loop {
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) => {
                log("error", &format!("Cannot accept connection: {e}"));
                continue;
            }
        };
        let (fd, metadata) = match receive(&conn) {
            Ok(r) => r,
            Err(e) => {
                log(
                    "error",
                    &format!("Error receiving seccomp file descriptor: {e}"),
                );
                continue;
            }
        };
        // Only a suffix for a file name: nothing that names another directory.
        let mut metadata = go_base(&metadata);
        if metadata.contains('/') {
            metadata = "agent-generated-suffix".into();
        }
        log(
            "info",
            &format!("Received new seccomp fd: {}", fd.as_raw_fd()),
        );
        std::thread::spawn(move || handle(fd, metadata));
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log("fatal", &e);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_base_matches_go() {
        assert_eq!(go_base(""), ".");
        assert_eq!(go_base("///"), "/");
        assert_eq!(go_base("a/b/"), "b");
        assert_eq!(go_base("/../p"), "p");
        assert_eq!(go_base("bar"), "bar");
    }

    #[test]
    fn secure_join_stays_in_root() {
        let dir = std::env::temp_dir().join(format!("sj-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", dir.join("sub/up")).unwrap();
        assert_eq!(secure_join(&dir, "../../x").unwrap(), dir.join("x"));
        assert_eq!(
            secure_join(&dir, "abs/passwd").unwrap(),
            dir.join("etc/passwd")
        );
        assert_eq!(secure_join(&dir, "sub/up/y").unwrap(), dir.join("y"));
        assert_eq!(secure_join(&dir, "/sub/./z").unwrap(), dir.join("sub/z"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn syscalls_are_named_through_libseccomp() {
        const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                syscall_name(AUDIT_ARCH_X86_64, 83).as_deref(),
                Some("mkdir")
            );
            assert_eq!(
                syscall_name(AUDIT_ARCH_X86_64, 268).as_deref(),
                Some("fchmodat")
            );
        }
    }
}
