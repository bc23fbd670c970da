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
pub mod snapshot;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;
