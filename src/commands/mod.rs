//! One file per verb, each a thin layer over libcontainer and the shared helpers in
//! `crate::state_root` and `crate::lifecycle`.

pub mod cdi;
pub mod checkpoint;
pub mod completion;
pub mod create;
pub mod delete;
pub mod doctor;
pub mod events;
pub mod exec;
pub mod features;
pub mod info;
pub mod kill;
pub mod list;
pub mod man;
pub mod pause;
pub mod ps;
pub mod restore;
pub mod run;
pub mod setup;
pub mod setup_lxc;
pub mod snapshot;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;

/// Converts a wait status into the exit code a shell would report: the code itself, or
/// 128 + the signal number for a process killed by a signal (runc does the same).
pub fn exit_code(status: nix::sys::wait::WaitStatus) -> u8 {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => code as u8,
        WaitStatus::Signaled(_, sig, _) => 128u8.wrapping_add(sig as u8),
        _ => 0,
    }
}
