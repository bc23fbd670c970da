//! Atomic file replacement lives in the CDI crate, which `cdi generate` shares with us.
pub use nvbind_cdi::atomic::{is_temp_of, temp_writer, write_atomic, write_atomic_nosync};
