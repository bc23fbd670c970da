//! What recvtty and seccompagent share: receiving descriptors over a unix socket, and the
//! Go-style command lines of the programs they replace (`-flag value`, `--flag=value`).
//!
//! runc's integration tests start these helpers in the background and use their socket right
//! after (a container created a few milliseconds later connects to it), so they are compiled
//! programs: an interpreter's start-up loses that race on a loaded machine.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The bytes of one message on `sock` and the descriptors it carried (SCM_RIGHTS), with room
/// for at most `max_fds` of them (the kernel closes the rest, as Go's fixed-size oob buffer
/// does for the programs this replaces).
pub fn recv_with_fds(
    sock: RawFd,
    max_bytes: usize,
    max_fds: usize,
) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut data = vec![0u8; max_bytes];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE((max_fds * std::mem::size_of::<RawFd>()) as u32) };
    let mut cmsg = vec![0u64; (space as usize).div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; it points at buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = space as usize;
    let n = loop {
        // SAFETY: recvmsg into the buffers set up above.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel filled in; each SCM_RIGHTS payload is
    // an array of descriptors now owned by this process.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let p = libc::CMSG_DATA(c) as *const RawFd;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(p.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    data.truncate(n);
    Ok((data, fds))
}

/// One parsed command line: flags with values, boolean flags and positional arguments.
#[derive(Debug)]
pub struct Args {
    pub values: Vec<(String, String)>,
    pub bools: Vec<String>,
    pub positional: Vec<String>,
}

impl Args {
    /// Parses `args` the way Go's flag packages do: `-name` and `--name` alike, values as
    /// `-name value` or `-name=value`; `takes_value` names the flags that have one (with
    /// their short aliases), `bools` the switches. An unknown flag is an error.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        takes_value: &[&str],
        bools: &[&str],
    ) -> Result<Args, String> {
        let mut out = Args {
            values: Vec::new(),
            bools: Vec::new(),
            positional: Vec::new(),
        };
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            if a == "--" {
                out.positional.extend(it.by_ref());
                break;
            }
            let Some(flag) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
                out.positional.push(a);
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (flag.to_string(), None),
            };
            if takes_value.contains(&name.as_str()) {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .ok_or_else(|| format!("flag needs an argument: {a}"))?,
                };
                out.values.push((name, v));
            } else if bools.contains(&name.as_str()) {
                if inline.as_deref().is_none_or(|v| v == "true" || v == "1") {
                    out.bools.push(name);
                }
            } else {
                return Err(format!("flag provided but not defined: {a}"));
            }
        }
        Ok(out)
    }

    /// The last value given for any of `names`.
    pub fn value(&self, names: &[&str]) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.bools.iter().any(|b| b == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, String> {
        Args::parse(
            v.iter().map(|s| s.to_string()),
            &["mode", "m", "pid-file"],
            &["no-stdin"],
        )
    }

    #[test]
    fn go_style_flags() {
        let a = parse(&["--mode", "null", "-pid-file=/p", "--no-stdin", "sock"]).unwrap();
        assert_eq!(a.value(&["mode", "m"]), Some("null"));
        assert_eq!(a.value(&["pid-file"]), Some("/p"));
        assert!(a.has("no-stdin"));
        assert_eq!(a.positional, ["sock"]);
        let a = parse(&["-m", "single", "--", "-odd"]).unwrap();
        assert_eq!(a.value(&["mode", "m"]), Some("single"));
        assert_eq!(a.positional, ["-odd"]);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["--bogus", "x"])
            .unwrap_err()
            .contains("not defined: --bogus"));
        assert!(parse(&["--mode"])
            .unwrap_err()
            .contains("needs an argument"));
    }

    #[test]
    fn descriptors_cross_a_socket_pair() {
        use std::os::fd::AsRawFd;
        use std::os::unix::net::UnixStream;
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = file.as_raw_fd();
        let mut space = [0u64; 4];
        let payload = b"hello";
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut _,
            iov_len: payload.len(),
        };
        // SAFETY: a single SCM_RIGHTS message built in a local buffer.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = space.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut i32, fd);
            assert_eq!(libc::sendmsg(a.as_raw_fd(), &msg, 0), 5);
        }
        let (data, fds) = recv_with_fds(b.as_raw_fd(), 4096, 1).unwrap();
        assert_eq!(data, b"hello");
        assert_eq!(fds.len(), 1);
        assert_ne!(fds[0].as_raw_fd(), fd);
    }
}
