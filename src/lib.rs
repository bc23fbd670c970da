//! The parts of nvbind that are pure functions of their input, as a library: the bundle
//! loader and its checks, and the state document of `state` and `list`. The binary (src/main.rs) uses it, and so do the fuzz targets
//! (fuzz/), which need to call it without a container runtime around it.

pub mod bundle;
pub mod gojson;
pub mod state_doc;
