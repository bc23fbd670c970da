//! Docker: `/etc/docker/daemon.json`, `runtimes.<name>.path` (and `default-runtime`).
//! Key order and every unrelated key are kept; JSON has no comments to keep.

use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::{Engine, MergeError, Registration};

pub struct Docker;

/// A JSON value whose objects keep their key order.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
enum Json {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<Json>),
    Obj(IndexMap<String, Json>),
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Num(_) => "a number",
        Json::Str(_) => "a string",
        Json::Arr(_) => "an array",
        Json::Obj(_) => "an object",
    }
}

/// serde_json's message without its " at line L column C" tail (we print our own).
fn without_position(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.rsplit_once(" at line ") {
        Some((head, _)) => head.to_string(),
        None => msg,
    }
}

impl Engine for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn default_config(&self) -> &'static Path {
        Path::new("/etc/docker/daemon.json")
    }

    fn restart_hint(&self) -> &'static str {
        "systemctl restart docker   (or send SIGHUP to dockerd: runtimes are reloaded live)"
    }

    fn merge(
        &self,
        existing: Option<&str>,
        reg: &Registration,
    ) -> Result<Option<String>, MergeError> {
        let text = existing.filter(|t| !t.trim().is_empty()).unwrap_or("{}");
        // Parse once with serde_json's own value type for its line/column errors.
        if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
            return Err(MergeError::Parse {
                format: "JSON",
                line: e.line(),
                column: e.column(),
                message: without_position(&e),
            });
        }
        let mut top = match serde_json::from_str::<Json>(text) {
            Ok(Json::Obj(map)) => map,
            Ok(other) => {
                return Err(MergeError::Shape {
                    key: "(top level)".into(),
                    found: kind(&other),
                    expected: "an object",
                })
            }
            Err(e) => {
                return Err(MergeError::Parse {
                    format: "JSON",
                    line: e.line(),
                    column: e.column(),
                    message: without_position(&e),
                })
            }
        };
        let before = top.clone();
        let runtimes = top
            .entry("runtimes".to_string())
            .or_insert_with(|| Json::Obj(IndexMap::new()));
        let Json::Obj(runtimes) = runtimes else {
            return Err(MergeError::Shape {
                key: "runtimes".into(),
                found: kind(runtimes),
                expected: "an object",
            });
        };
        let entry = runtimes
            .entry(reg.name.clone())
            .or_insert_with(|| Json::Obj(IndexMap::new()));
        let Json::Obj(entry) = entry else {
            return Err(MergeError::Shape {
                key: format!("runtimes.{}", reg.name),
                found: kind(entry),
                expected: "an object",
            });
        };
        entry.insert(
            "path".into(),
            Json::Str(reg.path.to_string_lossy().into_owned()),
        );
        if reg.default {
            top.insert("default-runtime".into(), Json::Str(reg.name.clone()));
        }
        if top == before {
            return Ok(None);
        }
        let mut out = serde_json::to_string_pretty(&Json::Obj(top)).expect("JSON values serialize");
        out.push('\n');
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{file_cycle, invalid_file, reg, unwritable_dir};
    use super::*;

    #[test]
    fn fresh_file() {
        let out = Docker.merge(None, &reg(false)).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["runtimes"]["nvbind"]["path"], "/usr/bin/nvbind");
        assert!(v.get("default-runtime").is_none());
    }

    #[test]
    fn keeps_unrelated_keys_in_order_and_other_runtimes() {
        let old = r#"{"storage-driver": "overlay2", "log-opts": {"max-size": "10m"},
            "runtimes": {"kata": {"path": "/usr/bin/kata", "runtimeArgs": ["--x"]}},
            "debug": true, "max-concurrent-downloads": 3}"#;
        let out = Docker.merge(Some(old), &reg(true)).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["runtimes"]["kata"]["runtimeArgs"][0], "--x");
        assert_eq!(v["runtimes"]["nvbind"]["path"], "/usr/bin/nvbind");
        assert_eq!(v["default-runtime"], "nvbind");
        assert_eq!(v["max-concurrent-downloads"], 3);
        let (s, d) = (
            out.find("storage-driver").unwrap(),
            out.find("debug").unwrap(),
        );
        assert!(s < d, "key order changed:\n{out}");
    }

    #[test]
    fn idempotent_and_updates_a_stale_path() {
        let once = Docker.merge(None, &reg(false)).unwrap().unwrap();
        assert_eq!(Docker.merge(Some(&once), &reg(false)).unwrap(), None);
        let stale = once.replace("/usr/bin/nvbind", "/opt/old/nvbind");
        let fixed = Docker.merge(Some(&stale), &reg(false)).unwrap().unwrap();
        assert!(fixed.contains("/usr/bin/nvbind") && !fixed.contains("/opt/old"));
    }

    #[test]
    fn wrong_shapes_are_refused() {
        let e = Docker
            .merge(Some(r#"{"runtimes": []}"#), &reg(false))
            .unwrap_err();
        assert!(e.to_string().contains("`runtimes` is an array"), "{e}");
        assert!(Docker.merge(Some("[1]"), &reg(false)).is_err());
    }

    #[test]
    fn file_cycle_fresh_merge_idempotent_backup() {
        file_cycle(
            &Docker,
            "{\n  \"data-root\": \"/srv/docker\",\n  \"log-driver\": \"journald\"\n}\n",
            &[
                "\"data-root\": \"/srv/docker\"",
                "\"log-driver\": \"journald\"",
            ],
        );
    }

    #[test]
    fn invalid_json_names_file_and_line() {
        invalid_file(&Docker, "{\n  \"debug\": true,\n  \"x\": ,\n}\n", 3);
    }

    #[test]
    fn unwritable_directory() {
        unwritable_dir(&Docker, "{}\n");
    }
}
