//! What goes wrong with CRIU, and the line of its log that says why: shared by finding CRIU
//! (mod.rs), the transport (swrk.rs) and the operations.

use std::fs;
use std::path::{Path, PathBuf};

use rust_criu::rust_criu_protobuf::rpc;

#[derive(Debug, thiserror::Error)]
pub enum CriuError {
    #[error(
        "criu not found (looked at --criu, $NVBIND_CRIU and PATH); run scripts/setup-criu \
         or pass --criu PATH"
    )]
    NotFound,
    #[error("criu {path} is not executable")]
    NotExecutable { path: PathBuf },
    #[error("criu {found} at {path} is too old (need >= {need} {why}); run scripts/setup-criu")]
    TooOld {
        path: PathBuf,
        found: String,
        need: String,
        why: &'static str,
    },
    #[error("cannot run criu {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to criu swrk failed")]
    Io(#[from] std::io::Error),
    #[error("malformed message from criu")]
    Protobuf(#[from] protobuf::Error),
    #[error("criu {op} failed{errmsg}: {first_error} (full log: {log})")]
    Failed {
        op: &'static str,
        errmsg: String,
        first_error: String,
        log: String,
    },
    #[error("criu answered {got:?} to a {want:?} request")]
    UnexpectedResponse {
        got: rpc::Criu_req_type,
        want: rpc::Criu_req_type,
    },
    #[error("criu exited with {status} after a {op} that reported success")]
    Exited {
        op: &'static str,
        status: std::process::ExitStatus,
    },
}

/// The first lines of a CRIU log that report an error, for a one-line message; the whole log
/// stays where CRIU wrote it.
pub fn first_error(log: &Path) -> String {
    let text = match fs::read_to_string(log) {
        Ok(t) => t,
        Err(_) => return "no log written".into(),
    };
    text.lines()
        .find(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"))
        .map(|l| {
            // "(00.012345) Error (criu/mount.c:123): msg" -> "msg (criu/mount.c:123)"
            let l = l.trim();
            let l = l.split_once(") ").map(|(_, r)| r).unwrap_or(l);
            l.to_string()
        })
        .unwrap_or_else(|| "see the log".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_error_line_is_extracted() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dump.log");
        fs::write(
            &log,
            "(00.001) Warn: Can't setup RLIMIT_NOFILE\n(00.002) Error (criu/page-xfer.c:10): \
             write failed: No space left on device\n",
        )
        .unwrap();
        assert_eq!(
            first_error(&log),
            "Error (criu/page-xfer.c:10): write failed: No space left on device"
        );
    }
}
