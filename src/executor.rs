//! The last step inside the container's init process, right before the user's program is
//! exec'd: join a fresh session keyring (runc does this so containers do not share the
//! host's keys), then hand over to libcontainer's default executor.

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

#[derive(Clone)]
pub struct NvbindExecutor {
    /// Name of the session keyring to join, or None for `--no-new-keyring` and exec.
    keyring: Option<std::ffi::CString>,
}

impl NvbindExecutor {
    pub fn new(new_keyring: bool, id: &str) -> Self {
        let keyring = new_keyring
            .then(|| std::ffi::CString::new(format!("_ses.{id}")).ok())
            .flatten();
        Self { keyring }
    }

    pub fn for_exec() -> Self {
        Self { keyring: None }
    }
}

const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;

impl Executor for NvbindExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(name) = &self.keyring {
            // SAFETY: keyctl(JOIN_SESSION_KEYRING, name) reads a NUL-terminated string we own.
            let rc = unsafe {
                libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr())
            };
            if rc < 0 {
                // ENOSYS: no keyring support; EPERM: the container's seccomp profile (Docker's
                // default one) already forbids keyctl. runc tolerates the first; the second
                // means the profile's author chose to share the keyring.
                tracing::debug!(
                    "cannot join a new session keyring: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        // A foreground `run` or `exec` blocks every signal before it forks (to forward them),
        // and a signal mask survives execve: without this the container's process would start
        // with SIGTERM, SIGCHLD and the rest blocked (a shell's `wait` then never returns).
        let _ = nix::sys::signal::SigSet::all().thread_unblock();
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}
