//! A container's state.json, read the way `nvbind state` and `nvbind list` read it: the file
//! in a container directory, libcontainer's Container::load (which also asks /proc about the
//! recorded pid), then the state document and the list table built from it, printed as JSON.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libcontainer::container::state::State;
use libcontainer::container::Container;
use libfuzzer_sys::fuzz_target;
use nvbind::state_doc::{table, StateDoc};

fn container_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

fuzz_target!(|data: &[u8]| {
    let dir = container_dir();
    std::fs::write(State::file_path(dir), data).expect("write state.json");
    let container = match Container::load(dir.to_path_buf()) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let doc = StateDoc::of(&container);
    serde_json::to_string_pretty(&doc).expect("the state document serializes");
    let _ = table(std::slice::from_ref(&doc));
    // What a later verb reads back after libcontainer saves this state.
    let saved = serde_json::to_vec(&container.state).expect("the state serializes");
    serde_json::from_slice::<State>(&saved).expect("a saved state loads again");
});
