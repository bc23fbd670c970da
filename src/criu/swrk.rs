//! The `criu swrk` transport: CRIU runs as our child with one end of a SOCK_SEQPACKET pair and
//! answers protobuf requests on it. Unlike `rust_criu::Criu`, this keeps the whole response
//! (the restored init's PID), lets the caller act between spawning CRIU and sending the
//! request (runc moves CRIU into the container's cgroups there), passes descriptors at fixed
//! numbers for `inherit_fd`, and hands each NOTIFY (with any descriptor it carries) to a
//! closure, as runc's criuSwrk does.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use protobuf::Message;
use rust_criu::rust_criu_protobuf::rpc;

use super::error::{first_error, CriuError};

pub type NotifyError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a request needs besides its message.
pub struct Call<'a> {
    pub binary: &'a Path,
    pub op: &'static str,
    /// Descriptors CRIU must inherit at the same numbers (image dir, work dir, namespaces,
    /// inherit_fd sources).
    pub keep_fds: Vec<RawFd>,
    /// Let CRIU inherit our stdin/stdout/stderr (restore: the restored tasks' pipes are ours).
    pub inherit_stdio: bool,
    /// Where CRIU writes its log, for the error message.
    pub log: Option<&'a Path>,
}

/// Runs one request. `before_send` gets CRIU's PID after it is spawned and before it reads the
/// request (and may still add to the request); `on_notify` gets each notification (script name, message, optional descriptor).
pub fn call(
    call: Call<'_>,
    mut req: rpc::Criu_req,
    before_send: impl FnOnce(i32, &mut rpc::Criu_req) -> Result<(), NotifyError>,
    mut on_notify: impl FnMut(&rpc::Criu_notify, Option<OwnedFd>) -> Result<(), NotifyError>,
) -> Result<rpc::Criu_resp, CriuError> {
    let want = req.type_();
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;

    let mut cmd = Command::new(call.binary);
    cmd.arg("swrk").arg(theirs.as_raw_fd().to_string());
    if !call.inherit_stdio {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
    }
    let mut pass = call.keep_fds.clone();
    pass.push(theirs.as_raw_fd());
    // SAFETY: only fcntl, which is async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &pass {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| CriuError::Spawn {
        path: call.binary.to_path_buf(),
        source,
    })?;
    drop(theirs);

    let result = (|| {
        if let Err(e) = before_send(child.id() as i32, &mut req) {
            return Err(failed(&call, "", e.to_string()));
        }
        send(&ours, &req)?;
        loop {
            let (resp, fd) = receive(&ours)?;
            if !resp.success() {
                // CRIU's errmsg is the first error it logged, which on these VMs is the
                // harmless RLIMIT_NOFILE line; the log filter skips that one.
                let first = match call.log {
                    Some(log) => first_error(log),
                    None => format!("{} (errno {})", resp.cr_errmsg(), resp.cr_errno()),
                };
                return Err(failed(&call, "", first));
            }
            match resp.type_() {
                rpc::Criu_req_type::NOTIFY => {
                    let outcome = on_notify(&resp.notify, fd);
                    let mut ack = rpc::Criu_req::new();
                    ack.set_type(rpc::Criu_req_type::NOTIFY);
                    ack.set_notify_success(outcome.is_ok());
                    send(&ours, &ack)?;
                    if let Err(e) = outcome {
                        return Err(failed(
                            &call,
                            "",
                            format!("{} step: {e}", resp.notify.script()),
                        ));
                    }
                }
                t if t == want => return Ok(resp),
                got => return Err(CriuError::UnexpectedResponse { got, want }),
            }
        }
    })();
    drop(ours);
    match result {
        Ok(resp) => {
            let status = child.wait()?;
            if !status.success() {
                return Err(CriuError::Exited {
                    op: call.op,
                    status,
                });
            }
            Ok(resp)
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

fn failed(call: &Call<'_>, errmsg: &str, first_error: String) -> CriuError {
    CriuError::Failed {
        op: call.op,
        errmsg: errmsg.to_string(),
        first_error,
        log: call
            .log
            .map(|l| l.display().to_string())
            .unwrap_or_else(|| "none".into()),
    }
}

fn send(sock: &OwnedFd, req: &rpc::Criu_req) -> Result<(), CriuError> {
    let bytes = req.write_to_bytes()?;
    let n = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        &[],
        MsgFlags::empty(),
        None,
    )
    .map_err(std::io::Error::from)?;
    if n != bytes.len() {
        return Err(
            std::io::Error::new(std::io::ErrorKind::WriteZero, "short write to criu").into(),
        );
    }
    Ok(())
}

fn receive(sock: &OwnedFd) -> Result<(rpc::Criu_resp, Option<OwnedFd>), CriuError> {
    // CRIU's responses are small; runc reads them into 40 KiB.
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fd = None;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: the kernel just installed this descriptor for us.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    let n = msg.bytes;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "criu closed the connection (it probably crashed)",
        )
        .into());
    }
    let resp = rpc::Criu_resp::parse_from_bytes(&buf[..n])?;
    Ok((resp, fd))
}

/// CRIU's version through the VERSION request (MAJOR*10000 + MINOR*100 + SUBLEVEL; a git
/// build counts as the next minor, as runc counts it).
pub fn version(binary: &Path) -> Result<u32, CriuError> {
    let mut req = rpc::Criu_req::new();
    req.set_type(rpc::Criu_req_type::VERSION);
    let resp = call(
        Call {
            binary,
            op: "version",
            keep_fds: vec![],
            inherit_stdio: false,
            log: None,
        },
        req,
        |_, _| Ok(()),
        |_, _| Ok(()),
    )?;
    let v = &resp.version;
    let mut version = (v.major_number() * 10000 + v.minor_number() * 100 + v.sublevel()) as u32;
    if v.has_gitid() {
        version = version - version % 100 + 100;
    }
    Ok(version)
}
