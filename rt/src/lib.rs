//! The process start of nvbind's binaries (`nvbind`, `nvbind-hook`): what std's runtime start
//! (`lang_start`, Rust 1.95: library/std/src/rt.rs and sys/pal/unix/mod.rs) does around `main`,
//! except the main thread's stack-overflow guard.
//!
//! Why: container engines exec nvbind for every create, start, state, kill and delete, and
//! nvbind-hook for every container, so start-up is paid on each call. std's start asks glibc
//! for the main thread's stack bounds (`pthread_getattr_np`), which opens and parses
//! /proc/self/maps (open, prlimit, fstat, 4 reads, close; ~122k instructions of the ~1.05M of
//! `nvbind state ID`, callgrind, bench/analysis.md issue 19), only so that its SIGSEGV handler
//! can tell a stack overflow from another fault and say so.
//!
//! What is lost, and why that is acceptable: the guard itself is the kernel's stack guard gap
//! and stays; only the message goes. A main-thread stack overflow used to print "thread 'main'
//! has overflowed its stack" and abort (SIGABRT); now the fault is not caught and the process
//! dies of SIGSEGV. It is a bug either way and the caller sees a death by signal either way
//! (with a core dump where those are on); it loses one line of diagnosis for a bug, against
//! paying the probe on every engine call. Threads std spawns get no overflow handler either
//! (std installs theirs only once the main thread's is). Panics are unchanged: the message is
//! printed, and the release profile's panic=abort aborts; with unwinding (tests) the status
//! is 101 as std's. The main thread has no name: a panic message says thread '<unnamed>'.
//!
//! Use: `#![cfg_attr(all(not(test), target_os = "linux", target_env = "gnu"), no_main)]` at the
//! top of the binary's main.rs (the same condition as [`entry!`]'s), and `nvbind_rt::entry!(f)`
//! with `fn f() -> u8` returning the exit status. Only glibc Linux: there std reads argc/argv
//! from glibc's .init_array call, so `std::env::args` works without std's start; on other
//! targets (and in unit-test builds, which have their own main) `entry!` makes an ordinary
//! `fn main`.

/// Defines the process entry point: `main` for glibc's start (see the crate docs for the
/// `no_main` attribute that must go with it) calling [`start`], else an ordinary Rust `main`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[cfg(all(not(test), target_os = "linux", target_env = "gnu"))]
        #[no_mangle]
        extern "C" fn main(
            _argc: ::std::ffi::c_int,
            _argv: *const *const ::std::ffi::c_char,
        ) -> ::std::ffi::c_int {
            $crate::start($main)
        }

        #[cfg(not(all(not(test), target_os = "linux", target_env = "gnu")))]
        fn main() -> ::std::process::ExitCode {
            ::std::process::ExitCode::from($main())
        }
    };
}

/// Runs `main` as std's start would and exits with its status.
pub fn start(main: fn() -> u8) -> ! {
    // SAFETY: called once, first thing in the process, before any other thread exists.
    unsafe {
        sanitize_standard_fds();
        // std's default (it may be changed by main): a write to a closed pipe is an EPIPE error,
        // not a signal. An ignored signal stays ignored across exec; std's Command puts SIGPIPE
        // back to default in the children it spawns, and this start leaves that as it was.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let code = match std::panic::catch_unwind(main) {
        Ok(code) => i32::from(code),
        Err(payload) => {
            // Not dropped: a payload whose drop panics would unwind out of here; the process
            // ends now anyway.
            std::mem::forget(payload);
            101
        }
    };
    // What std does after main returns: flush stdout (its buffer would be lost by libc's exit)
    // and exit the process once, even if another thread exits at the same time.
    std::process::exit(code)
}

/// std's: a closed descriptor 0, 1 or 2 is reopened on /dev/null, so that the first file the
/// process opens does not become its stdout (`println!` would write into it). One poll(2);
/// fcntl(2) on each where poll cannot be used (RLIMIT_NOFILE below 3, no memory).
unsafe fn sanitize_standard_fds() {
    let mut pfds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    let closed: [bool; 3] = loop {
        if libc::poll(pfds.as_mut_ptr(), 3, 0) != -1 {
            break pfds.map(|p| p.revents & libc::POLLNVAL != 0);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EINVAL | libc::EAGAIN | libc::ENOMEM) => {
                break [0, 1, 2].map(|fd| {
                    libc::fcntl(fd, libc::F_GETFD) == -1
                        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF)
                });
            }
            _ => libc::abort(),
        }
    };
    // Each open takes the lowest free number, which is the closed one (the lower closed ones
    // were filled first). std dup(2)s its first /dev/null for the next; for /dev/null a second
    // open is the same.
    for _ in closed.iter().filter(|&&c| c) {
        if libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) == -1 {
            // std aborts too: stdin/stdout/stderr must not name whatever is opened next.
            libc::abort();
        }
    }
}
