//! The one way a warning reaches the user: `nvbind: warning: MSG` on stderr, and the same
//! message at level warn in the --log file, where engines look when a call fails. Library
//! code below the verbs reports what it could not do through `tracing` (the log only, as
//! runc's --log); a verb turns what the user has to act on into a warning here.

use std::fmt::Display;

pub fn warn(msg: impl Display) {
    tracing::warn!("{msg}");
    eprintln!("nvbind: warning: {msg}");
}
