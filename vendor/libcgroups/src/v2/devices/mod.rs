pub mod bpf;
pub mod controller;
pub mod program;

pub use controller::Devices;
