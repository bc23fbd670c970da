//! The OCI state a runtime writes on a hook's stdin, and the bundle it points to.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Spec, State};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the container state from stdin")]
    Stdin(#[source] std::io::Error),
    #[error("the container state on stdin is not valid OCI state JSON")]
    Parse(#[source] serde_json::Error),
    #[error("the container state has no bundle path")]
    NoBundle,
    #[error("cannot load the bundle's {path}")]
    Config {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("the bundle's config.json has no root.path")]
    NoRoot,
}

/// A container as a hook sees it: the runtime's state and the bundle's config.
#[derive(Debug, Clone)]
pub struct Container {
    pub state: State,
    /// The state JSON as received, for hooks run on its behalf.
    pub raw_state: Vec<u8>,
    pub config: Spec,
    /// The rootfs as a host path (root.path, relative to the bundle when not absolute).
    pub rootfs: PathBuf,
}

impl Container {
    /// Reads the state from `input` and loads the bundle's config.json.
    pub fn read(mut input: impl Read) -> Result<Container, StateError> {
        let mut raw = Vec::new();
        input.read_to_end(&mut raw).map_err(StateError::Stdin)?;
        Self::from_state(raw)
    }

    pub fn from_state(raw: Vec<u8>) -> Result<Container, StateError> {
        let state: State = serde_json::from_slice(&raw).map_err(StateError::Parse)?;
        if state.bundle().as_os_str().is_empty() {
            return Err(StateError::NoBundle);
        }
        let path = state.bundle().join("config.json");
        let config = Spec::load(&path).map_err(|source| StateError::Config { path, source })?;
        let rootfs = rootfs_of(state.bundle(), &config)?;
        Ok(Container {
            state,
            raw_state: raw,
            config,
            rootfs,
        })
    }

    /// The container's init process, when the runtime gave one.
    pub fn pid(&self) -> Option<i32> {
        self.state.pid().filter(|p| *p > 0)
    }
}

/// root.path of `config`, made absolute against `bundle`.
pub fn rootfs_of(bundle: &Path, config: &Spec) -> Result<PathBuf, StateError> {
    let root = config.root().as_ref().ok_or(StateError::NoRoot)?;
    let path = root.path();
    if path.as_os_str().is_empty() {
        return Err(StateError::NoRoot);
    }
    Ok(if path.is_absolute() {
        path.clone()
    } else {
        bundle.join(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_state_and_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::default();
        spec.root_mut().as_mut().unwrap().set_path("rootfs".into());
        spec.save(dir.path().join("config.json")).unwrap();
        let state = format!(
            r#"{{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":42,"bundle":"{}"}}"#,
            dir.path().display()
        );
        let c = Container::read(state.as_bytes()).unwrap();
        assert_eq!(c.pid(), Some(42));
        assert_eq!(c.rootfs, dir.path().join("rootfs"));
        assert_eq!(c.raw_state, state.as_bytes());
    }

    #[test]
    fn errors_are_clear() {
        let e = Container::read(&b"not json"[..]).unwrap_err();
        assert!(matches!(e, StateError::Parse(_)));
        let e = Container::read(&br#"{"id":"x","pid":1}"#[..]).unwrap_err();
        assert!(matches!(e, StateError::NoBundle));
        let e = Container::read(&br#"{"id":"x","bundle":"/nonexistent-bundle"}"#[..]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-bundle/config.json"));
    }
}
