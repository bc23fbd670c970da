//! nvbind-conformance: an OCI runtime-spec conformance suite. The `conformance` binary drives
//! any runc-compatible runtime through its CLI; the `probe` binary runs inside the containers.

pub mod bundle;
pub mod cases;
pub mod compare;
pub mod harness;
pub mod runtime;
pub mod unixfd;
