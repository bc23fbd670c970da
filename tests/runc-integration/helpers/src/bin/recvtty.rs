//! recvtty: a consumer of the runtime's `--console-socket` API, as runc's contrib/cmd/recvtty
//! (v1.1.15), with the same command line. It listens on a unix socket, receives the pty master
//! the runtime sends (SCM_RIGHTS), and then
//!
//! * `single`: accepts one terminal and connects it to its own stdio (stdin unless
//!   `--no-stdin`), with ONLCR cleared on the master so the output is byte-exact;
//! * `null`: accepts any number of terminals and reads each to nothing until it closes.
//!
//! Usage: `recvtty [--mode single|null] [--pid-file FILE] [--no-stdin] SOCKET`

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;

use nvbind_runc_helpers::{recv_with_fds, Args};

const USAGE: &str = "usage: recvtty [--mode single|null] [--pid-file FILE] [--no-stdin] SOCKET";

fn receive_master(conn: &UnixStream) -> std::io::Result<File> {
    let (_, mut fds) = recv_with_fds(conn.as_raw_fd(), 4096, 1)?;
    if fds.is_empty() {
        return Err(std::io::Error::other(
            "the connection carried no file descriptor",
        ));
    }
    Ok(File::from(fds.swap_remove(0)))
}

/// Copies until EOF or an error (a pty master reads EIO once every slave is closed).
fn copy(mut from: impl Read, mut to: impl Write) {
    let mut buf = [0u8; 65536];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).and_then(|_| to.flush()).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn clear_onlcr(fd: &File) -> std::io::Result<()> {
    // SAFETY: termios is plain data filled by tcgetattr on a descriptor we own.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd.as_raw_fd(), &mut t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        t.c_oflag &= !libc::ONLCR;
        if libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn single(listener: UnixListener, no_stdin: bool) -> std::io::Result<()> {
    let (conn, _) = listener.accept()?;
    // One terminal only (there is one stdin): let another instance take the path over.
    drop(listener);
    let master = receive_master(&conn)?;
    clear_onlcr(&master)?;
    let reader = master.try_clone()?;
    let out = std::thread::spawn(move || copy(reader, std::io::stdout()));
    if !no_stdin {
        // Detached: stdin may never reach EOF; the output side decides when we are done.
        let writer = master.try_clone()?;
        std::thread::spawn(move || copy(std::io::stdin(), writer));
    }
    let _ = out.join();
    Ok(())
}

fn null(listener: UnixListener) -> std::io::Result<()> {
    loop {
        let (conn, _) = listener.accept()?;
        std::thread::spawn(move || {
            if let Ok(master) = receive_master(&conn) {
                copy(master, std::io::sink());
            }
        });
    }
}

fn run() -> Result<(), String> {
    let args = Args::parse(
        std::env::args().skip(1),
        &["mode", "m", "pid-file"],
        &["no-stdin", "help", "h"],
    )?;
    if args.has("help") || args.has("h") {
        println!("{USAGE}");
        return Ok(());
    }
    let [path] = args.positional.as_slice() else {
        return Err(format!("need to specify a single socket path\n{USAGE}"));
    };
    let mode = args.value(&["mode", "m"]).unwrap_or("single");
    if mode != "single" && mode != "null" {
        return Err(format!("need to select a valid mode: {mode}"));
    }
    if let Some(pid_file) = args.value(&["pid-file"]) {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .map_err(|e| format!("{pid_file}: {e}"))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("listen {path}: {e}"))?;
    let r = if mode == "single" {
        single(listener, args.has("no-stdin"))
    } else {
        null(listener)
    };
    r.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[recvtty] fatal error: {e}");
            ExitCode::FAILURE
        }
    }
}
