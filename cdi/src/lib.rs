//! nvbind-cdi: everything about the Container Device Interface, with no knowledge of the
//! container lifecycle. One intermediate form, [`spec::ContainerEdits`], serves the runtime,
//! the hook and the generator: discover -> edits -> apply.

pub mod apply;
pub mod capabilities;
pub mod discover;
pub mod edits;
pub mod gated;
pub mod generate;
pub mod json;
pub mod ldso;
pub mod livecheck;
pub mod name;
mod path_text;
pub mod registry;
pub mod requests;
pub mod resolver;
pub mod rootfs;
pub mod spec;
pub mod steps;
pub mod validate;
pub mod version;

pub use apply::{apply, HostDevices, RealHost};
pub use name::QualifiedName;
pub use registry::Registry;
pub use requests::{device_requests, inject, Requests, INJECTED_ANNOTATION};
pub use resolver::{Resolution, Resolver, ResolverConfig};
pub use spec::ContainerEdits;
