//! The runtime under test, driven through its command line only (runc's verbs and flags).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one runtime invocation did.
#[derive(Debug, Clone)]
pub struct CmdOut {
    /// Exit code; None when killed by a signal or by our timeout.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    /// The signal that ended the command, if one did.
    pub signal: Option<i32>,
}

impl CmdOut {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// A one-line summary for failure messages.
    pub fn brief(&self) -> String {
        let err = self.stderr.trim().lines().last().unwrap_or("").to_string();
        let err: String = err.chars().take(300).collect();
        if self.timed_out {
            format!("timed out; stderr: {err}")
        } else if let Some(sig) = self.signal {
            format!("killed by signal {sig}; stderr: {err}")
        } else {
            format!("exit {:?}; stderr: {err}", self.code)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Runtime {
    pub path: PathBuf,
    pub root: PathBuf,
}

/// Run `cmd` with stdout/stderr sent to files in `scratch`, killing it after `timeout`.
/// Files (not pipes) so that a container process which inherits them cannot block us.
pub fn run_cmd(mut cmd: Command, scratch: &Path, tag: &str, timeout: Duration) -> CmdOut {
    let out_p = scratch.join(format!("{tag}.out"));
    let err_p = scratch.join(format!("{tag}.err"));
    let (Ok(out), Ok(err)) = (fs::File::create(&out_p), fs::File::create(&err_p)) else {
        return CmdOut {
            code: None,
            stdout: String::new(),
            stderr: format!("cannot create output files in {}", scratch.display()),
            timed_out: false,
            signal: None,
        };
    };
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CmdOut {
                code: None,
                stdout: String::new(),
                stderr: format!("spawn failed: {e}"),
                timed_out: false,
                signal: None,
            }
        }
    };
    let start = Instant::now();
    let mut timed_out = false;
    let mut sleep = Duration::from_micros(500);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                timed_out = true;
                break child.wait().ok();
            }
            Ok(None) => {
                std::thread::sleep(sleep);
                sleep = (sleep * 2).min(Duration::from_millis(10));
            }
            Err(_) => break None,
        }
    };
    CmdOut {
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
        stdout: fs::read_to_string(&out_p).unwrap_or_default(),
        stderr: fs::read_to_string(&err_p).unwrap_or_default(),
        timed_out,
    }
}

pub const CMD_TIMEOUT: Duration = Duration::from_secs(15);

impl Runtime {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.path);
        c.arg("--root").arg(&self.root).args(args);
        // Never the bundle: relative paths in config.json are relative to the bundle, and a
        // runtime that resolves them against its working directory must be caught.
        if let Some(parent) = self.root.parent() {
            c.current_dir(parent);
        }
        c
    }

    /// `runtime --root R ARGS...`, output captured under `scratch/tag.{out,err}`.
    pub fn call(&self, scratch: &Path, tag: &str, args: &[&str]) -> CmdOut {
        run_cmd(self.cmd(args), scratch, tag, CMD_TIMEOUT)
    }

    /// Like `call`, with a shorter limit for operations that must fail fast.
    pub fn call_within(&self, scratch: &Path, tag: &str, args: &[&str], limit: Duration) -> CmdOut {
        run_cmd(self.cmd(args), scratch, tag, limit)
    }

    pub fn create(&self, scratch: &Path, id: &str, bundle: &Path, pid_file: &Path) -> CmdOut {
        let b = bundle.to_string_lossy();
        let p = pid_file.to_string_lossy();
        self.call(
            scratch,
            "create",
            &["create", "--bundle", &b, "--pid-file", &p, id],
        )
    }

    pub fn start(&self, scratch: &Path, id: &str) -> CmdOut {
        self.call(scratch, "start", &["start", id])
    }

    pub fn state(&self, scratch: &Path, id: &str) -> CmdOut {
        self.call(scratch, "state", &["state", id])
    }

    /// The state as JSON, or a description of why there is none.
    pub fn state_json(&self, scratch: &Path, id: &str) -> Result<serde_json::Value, String> {
        let o = self.state(scratch, id);
        if !o.ok() {
            return Err(format!("state failed: {}", o.brief()));
        }
        serde_json::from_str(&o.stdout).map_err(|e| format!("state output is not JSON: {e}"))
    }

    pub fn kill(&self, scratch: &Path, id: &str, sig: &str) -> CmdOut {
        self.call(scratch, "kill", &["kill", id, sig])
    }

    pub fn delete(&self, scratch: &Path, id: &str, force: bool) -> CmdOut {
        if force {
            self.call(scratch, "delete", &["delete", "--force", id])
        } else {
            self.call(scratch, "delete", &["delete", id])
        }
    }
}
