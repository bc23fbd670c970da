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

/// The first line of a CRIU log that reports an error, for a one-line message; the whole log
/// stays where CRIU wrote it. A tool CRIU runs that is not installed (iptables-restore locks
/// the container's network during a dump) is named with the package that has it.
pub fn first_error(log: &Path) -> String {
    let text = match fs::read_to_string(log) {
        Ok(t) => t,
        Err(_) => return "no log written".into(),
    };
    let Some(line) = text
        .lines()
        .find(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"))
    else {
        return "see the log".into();
    };
    // "(00.012345) Error (criu/mount.c:123): msg" -> "Error (criu/mount.c:123): msg"; lines
    // that CRIU's children write have no timestamp.
    let line = line.trim();
    let line = match line.strip_prefix('(').and_then(|r| r.split_once(") ")) {
        Some((ts, rest)) if ts.chars().all(|c| c.is_ascii_digit() || c == '.') => rest,
        _ => line,
    };
    match missing_tool(line) {
        Some(tool) => format!(
            "{line}: criu runs {tool}, which is not installed; install it (Debian: apt-get install {})",
            package_of(tool)
        ),
        None => line.to_string(),
    }
}

/// `execvp("TOOL", ...) failed: No such file or directory` -> TOOL.
fn missing_tool(line: &str) -> Option<&str> {
    if !line.contains("No such file or directory") {
        return None;
    }
    let rest = line.split_once("execvp(\"")?.1;
    let tool = rest.split_once('"')?.0;
    (!tool.is_empty()).then_some(tool)
}

fn package_of(tool: &str) -> &str {
    match tool {
        "iptables-restore" | "ip6tables-restore" | "iptables" | "ip6tables" => "iptables",
        "nft" => "nftables",
        "ip" | "tc" => "iproute2",
        other => other,
    }
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

    #[test]
    fn a_tool_criu_runs_that_is_missing_is_named_with_its_package() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dump.log");
        // As CRIU 4.1 writes it on a host without iptables: the child's line has no timestamp.
        fs::write(
            &log,
            "(00.030872) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self\n\
             Error (criu/util.c:641): execvp(\"iptables-restore\", ...) failed: No such file or directory\n\
             (00.033488) Error (criu/util.c:656): exited, status=1\n",
        )
        .unwrap();
        assert_eq!(
            first_error(&log),
            "Error (criu/util.c:641): execvp(\"iptables-restore\", ...) failed: No such file or \
             directory: criu runs iptables-restore, which is not installed; install it (Debian: \
             apt-get install iptables)"
        );
        // Another missing file is not taken for a missing tool.
        fs::write(
            &log,
            "(00.1) Error (criu/files-reg.c:1): Can't open file x: No such file or directory\n",
        )
        .unwrap();
        assert_eq!(
            first_error(&log),
            "Error (criu/files-reg.c:1): Can't open file x: No such file or directory"
        );
    }
}
