//! The terminal of a foreground `run` or `exec -t` given no --console-socket: as runc does,
//! nvbind takes the pty master the container's process made (through a socket of its own,
//! the way an engine takes it through --console-socket) and relays it to its own stdio: what
//! it reads on stdin goes to the process, what the process writes comes out on stdout. When
//! nvbind's stdin is a terminal it is put in raw mode (the container's pty does the line
//! editing) and the pty gets its window size, again on SIGWINCH; the mode is restored at the
//! end, also on an error.

use std::fs::File;
use std::io::{self, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};

/// The socket the container's process sends its pty master to.
pub struct ConsoleRelay {
    // Private to root (mkdtemp: mode 0700), short enough for a socket address; removed with
    // the relay.
    dir: PathBuf,
    listener: UnixListener,
}

impl ConsoleRelay {
    pub fn new() -> Result<Self> {
        let dir = nix::unistd::mkdtemp(&std::env::temp_dir().join("nvbind-console-XXXXXX"))
            .context("cannot make a directory for the console socket")?;
        let path = dir.join("console.sock");
        match UnixListener::bind(&path) {
            Ok(listener) => Ok(Self { dir, listener }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e).with_context(|| format!("cannot listen on {}", path.display()))
            }
        }
    }

    /// What to give libcontainer as the console socket.
    pub fn path(&self) -> PathBuf {
        self.dir.join("console.sock")
    }

    /// Takes the pty master, which the process sent before libcontainer's build returned (the
    /// init sends it while it is set up), and starts relaying it.
    pub fn attach(self) -> Result<Attached> {
        self.listener.set_nonblocking(true)?;
        let (conn, _) = match self.listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                bail!("the container's process sent no terminal to relay")
            }
            Err(e) => return Err(e).context("cannot accept the container's terminal"),
        };
        conn.set_nonblocking(false)?;
        let master = receive_fd(conn.as_raw_fd())?;
        Attached::start(master)
    }
}

impl Drop for ConsoleRelay {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The one descriptor sent with SCM_RIGHTS (the payload is the pty's name, unused).
fn receive_fd(sock: RawFd) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .context("cannot receive the container's terminal")?;
    for cmsg in msg.cmsgs().context("cannot read the terminal message")? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    bail!("the container's process sent its terminal message without the pty")
}

/// A running relay; `finish` once the process ended.
pub struct Attached {
    master: Arc<File>,
    stop: Arc<AtomicBool>,
    output: Option<JoinHandle<()>>,
    // nvbind's stdin mode before raw, to put back
    saved: Option<Termios>,
}

impl Attached {
    fn start(master: OwnedFd) -> Result<Self> {
        let master = Arc::new(File::from(master));
        let stdin = io::stdin();
        let saved = match termios::tcgetattr(stdin.as_fd()) {
            Ok(t) => {
                let mut raw = t.clone();
                termios::cfmakeraw(&mut raw);
                termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
                    .context("cannot put the terminal in raw mode")?;
                Some(t)
            }
            // not a terminal (a pipe, /dev/null): nothing to set
            Err(_) => None,
        };
        // As runc's recvtty: no "\n" -> "\r\n" on the process's output, which nvbind's own
        // terminal (raw now) or the pipe it writes to gets byte for byte.
        clear_onlcr(&master).context("cannot set up the container's terminal")?;
        resize(&master);
        // stdin to the process. Its end (EOF) leaves the pty open: closing it would hang up
        // the process. The thread ends with nvbind.
        let to = master.clone();
        std::thread::spawn(move || {
            let _ = io::copy(&mut io::stdin().lock(), &mut &*to);
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (from, flag) = (master.clone(), stop.clone());
        let output = std::thread::spawn(move || copy_output(&from, &flag));
        Ok(Self {
            master,
            stop,
            output: Some(output),
            saved,
        })
    }

    /// Gives the pty nvbind's window size again (SIGWINCH).
    pub fn resize(&self) {
        resize(&self.master);
    }

    /// After the process ended: copies what it wrote that is still in the pty, then restores
    /// nvbind's terminal.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.output.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}

/// Gives the pty nvbind's window size, when its stdin is a terminal.
fn clear_onlcr(master: &File) -> nix::Result<()> {
    let mut t = termios::tcgetattr(master.as_fd())?;
    t.output_flags.remove(termios::OutputFlags::ONLCR);
    termios::tcsetattr(master.as_fd(), SetArg::TCSANOW, &t)
}

fn resize(master: &File) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read and write one winsize through a valid pointer.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// The process's output to nvbind's stdout, until the pty is closed (EIO once no process
/// holds its other end) or, after `stop`, until it has been idle for a moment (a process
/// the container left behind may hold it open).
fn copy_output(master: &File, stop: &AtomicBool) {
    let mut buf = [0u8; 8192];
    let mut out = io::stdout().lock();
    loop {
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut pfd, 1, 100) } {
            0 if stop.load(Ordering::SeqCst) => return,
            0 => continue,
            n if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {
                continue
            }
            n if n < 0 => return,
            _ => {}
        }
        match (&*master).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EIO: every holder of the pty's other end closed it
            Err(_) => return,
        }
    }
}
