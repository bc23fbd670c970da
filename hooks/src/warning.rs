//! The one way a warning reaches the user of nvbind-hook: a line on stderr, which the runtime
//! that ran the hook shows or logs. Errors go up to main, which prints them once.

/// A warning line on stderr.
pub fn warn(msg: &str) {
    eprintln!("nvbind-hook: warning: {msg}");
}
