//! Receiving a file descriptor over a unix socket (SCM_RIGHTS): the runtime's console socket
//! (`--console-socket`, the pty master) and the seccomp notify listener (`listenerPath`).

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

/// A listening socket at `path`, removed on drop.
pub struct FdListener {
    listener: UnixListener,
    path: std::path::PathBuf,
}

impl FdListener {
    pub fn bind(path: &Path) -> Result<Self, String> {
        let listener =
            UnixListener::bind(path).map_err(|e| format!("bind {}: {e}", path.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("nonblocking: {e}"))?;
        Ok(FdListener {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Accept one connection and read everything it sends: the first fd passed with
    /// SCM_RIGHTS and all the bytes, until the peer closes (or `timeout`).
    pub fn receive(&self, timeout: Duration) -> Result<(OwnedFd, Vec<u8>), String> {
        let start = Instant::now();
        let mut stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if start.elapsed() > timeout {
                        return Err("nobody connected to the socket".into());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(timeout));
        let mut data = vec![0u8; 65536];
        let mut cmsg = [0u64; 32];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: msghdr is plain data; we point it at buffers that outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cmsg);
        // SAFETY: recvmsg into the buffers set up above.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(format!("recvmsg: {}", std::io::Error::last_os_error()));
        }
        let mut fd = None;
        // SAFETY: walking the control messages the kernel filled in.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                    fd = Some(OwnedFd::from_raw_fd(raw));
                    break;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        data.truncate(n as usize);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        data.extend(rest);
        match fd {
            Some(fd) => Ok((fd, data)),
            None => Err(format!(
                "no file descriptor in the message ({} bytes: {:?})",
                data.len(),
                String::from_utf8_lossy(&data[..data.len().min(200)])
            )),
        }
    }
}

impl Drop for FdListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Read a pty master until the other side is gone (EIO) or `timeout`.
pub fn read_pty(fd: &OwnedFd, timeout: Duration) -> Vec<u8> {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        // SAFETY: poll on one fd we own.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32) };
        if r < 0 {
            break;
        }
        if r == 0 {
            continue;
        }
        // SAFETY: read into our buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    out
}
