//! Log lines in runc's formats. containerd's shim and conmon read `--log` when a runtime call
//! fails and show the last `error` line to the user, so the shape matters:
//! json: `{"level":"error","msg":"...","time":"2026-01-01T00:00:00Z"}`
//! text: `time="2026-01-01T00:00:00Z" level=error msg="..."`
//!
//! A small hand-written tracing subscriber keeps the binary and its start-up lean; libcontainer
//! logs through `tracing`, and its messages land in the same file.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::options::LogFormat;

pub struct Logger {
    file: Mutex<File>,
    format: LogFormat,
    max_level: Level,
}

impl Logger {
    /// Opens the log file (append) and installs the logger as the global subscriber.
    pub fn install(path: &Path, format: LogFormat, debug: bool) -> Result<&'static Logger> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the log file --log {}", path.display()))?;
        Ok(Self::install_file(file, format, debug))
    }

    /// `--debug` without `--log`: debug lines go to stderr, as runc's do. The logger writes to
    /// a close-on-exec copy of the runtime's stderr, so that the lines the container's init
    /// logs before it execs reach the caller, not the container's own stdio or terminal, and
    /// the payload does not inherit it.
    pub fn install_stderr(format: LogFormat) -> Result<&'static Logger> {
        use std::os::fd::AsFd as _;
        let fd = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("cannot duplicate stderr for the debug log")?;
        Ok(Self::install_file(File::from(fd), format, true))
    }

    fn install_file(file: File, format: LogFormat, debug: bool) -> &'static Logger {
        let logger: &'static Logger = Box::leak(Box::new(Logger {
            file: Mutex::new(file),
            format,
            max_level: if debug { Level::DEBUG } else { Level::WARN },
        }));
        // Only fails if a subscriber is already set, which main never does twice.
        let _ = tracing::subscriber::set_global_default(LoggerRef(logger));
        logger
    }

    pub fn write(&self, level: Level, msg: &str) {
        let line = format_line(self.format, level, msg, &chrono::Utc::now().to_rfc3339());
        if let Ok(mut f) = self.file.lock() {
            // Nothing sensible can be done if the log itself cannot be written.
            let _ = f.write_all(line.as_bytes());
        }
    }
}

pub fn format_line(format: LogFormat, level: Level, msg: &str, time: &str) -> String {
    let level = level.as_str().to_ascii_lowercase();
    match format {
        LogFormat::Json => {
            let mut s = serde_json::json!({ "level": level, "msg": msg, "time": time }).to_string();
            s.push('\n');
            s
        }
        LogFormat::Text => {
            let quoted = serde_json::to_string(msg).unwrap_or_default();
            format!("time=\"{time}\" level={level} msg={quoted}\n")
        }
    }
}

struct LoggerRef(&'static Logger);

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for LoggerRef {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.0.max_level
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut v = MessageVisitor(String::new());
        event.record(&mut v);
        self.0.write(*event.metadata().level(), &v.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_have_runc_keys() {
        let line = format_line(LogFormat::Json, Level::ERROR, "bad \"x\"", "T");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "bad \"x\"");
        assert_eq!(v["time"], "T");
    }

    #[test]
    fn text_lines_quote_the_message() {
        let line = format_line(LogFormat::Text, Level::WARN, "a b", "T");
        assert_eq!(line, "time=\"T\" level=warn msg=\"a b\"\n");
    }
}
