//! Podman: `/etc/containers/containers.conf`, `[engine.runtimes] <name> = ["/path"]`, nvbind
//! added to `runtime_supports_json` (so podman asks for, and reads, JSON error logs), and with
//! `--default`, `[engine] runtime = "<name>"`. Comments and unrelated keys are kept (toml_edit).

use std::path::Path;

use toml_edit::{value, Array};

use super::toml::{describe, parse, strings, table_at};
use super::{Engine, MergeError, Registration};

pub struct Podman;

/// Podman 4.3's built-in `runtime_supports_json`; setting the key replaces this list, so a
/// fresh setting starts from it.
const PODMAN_JSON_RUNTIMES: &[&str] = &["crun", "runc", "kata", "runsc", "krun"];

impl Engine for Podman {
    fn name(&self) -> &'static str {
        "podman"
    }

    fn default_config(&self) -> &'static Path {
        Path::new("/etc/containers/containers.conf")
    }

    fn restart_hint(&self) -> &'static str {
        "nothing to restart for podman itself (each podman command reads containers.conf); \
         restart podman.service / podman-restart.service if you run them"
    }

    fn merge(
        &self,
        existing: Option<&str>,
        reg: &Registration,
    ) -> Result<Option<String>, MergeError> {
        let text = existing.unwrap_or("");
        let mut doc = parse(text)?;
        let path = reg.path.to_string_lossy().into_owned();
        let mut changed = false;

        let engine = table_at(doc.as_table_mut(), "", &["engine"])?;
        match strings(engine.get("runtime_supports_json")) {
            Some(list) if list.contains(&reg.name) => {}
            Some(_) => {
                let arr = engine["runtime_supports_json"]
                    .as_array_mut()
                    .expect("checked above");
                arr.push(reg.name.as_str());
                changed = true;
            }
            None if engine.contains_key("runtime_supports_json") => {
                return Err(MergeError::Shape {
                    key: "engine.runtime_supports_json".into(),
                    found: describe(&engine["runtime_supports_json"]),
                    expected: "an array of strings",
                })
            }
            None => {
                let mut arr: Array = PODMAN_JSON_RUNTIMES.iter().copied().collect();
                arr.push(reg.name.as_str());
                engine["runtime_supports_json"] = value(arr);
                changed = true;
            }
        }
        if reg.default && engine.get("runtime").and_then(|i| i.as_str()) != Some(&reg.name) {
            engine["runtime"] = value(reg.name.as_str());
            changed = true;
        }
        let runtimes = table_at(engine, "engine", &["runtimes"])?;
        if strings(runtimes.get(&reg.name)) != Some(vec![path.clone()]) {
            let arr: Array = [path.as_str()].into_iter().collect();
            runtimes[reg.name.as_str()] = value(arr);
            changed = true;
        }
        Ok(changed.then(|| doc.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{file_cycle, invalid_file, reg, unwritable_dir};
    use super::*;

    const WITH_COMMENTS: &str = r#"# site policy: keep this comment
[containers]
# no network by default
netns = "none"
default_ulimits = ["nofile=20000:20000"]

[engine]
cgroup_manager = "cgroupfs" # inline comment
events_logger = "file"

[engine.runtimes]
crun = ["/usr/bin/crun"]
"#;

    #[test]
    fn fresh_file() {
        let out = Podman.merge(None, &reg(false)).unwrap().unwrap();
        let doc: toml_edit::DocumentMut = out.parse().unwrap();
        assert_eq!(
            doc["engine"]["runtimes"]["nvbind"]
                .as_array()
                .unwrap()
                .get(0)
                .unwrap()
                .as_str(),
            Some("/usr/bin/nvbind")
        );
        assert!(out.contains("[engine.runtimes]"), "{out}");
        assert!(doc["engine"].get("runtime").is_none());
    }

    #[test]
    fn keeps_comments_and_unrelated_keys() {
        let out = Podman
            .merge(Some(WITH_COMMENTS), &reg(true))
            .unwrap()
            .unwrap();
        for keep in [
            "# site policy: keep this comment",
            "# no network by default",
            "cgroup_manager = \"cgroupfs\" # inline comment",
            "crun = [\"/usr/bin/crun\"]",
            "default_ulimits = [\"nofile=20000:20000\"]",
        ] {
            assert!(out.contains(keep), "lost {keep:?}:\n{out}");
        }
        assert!(out.contains("nvbind = [\"/usr/bin/nvbind\"]"), "{out}");
        assert!(out.contains("runtime = \"nvbind\""), "{out}");
        assert_eq!(Podman.merge(Some(&out), &reg(true)).unwrap(), None);
    }

    #[test]
    fn json_runtimes_list_is_extended_not_replaced() {
        let old = "[engine]\nruntime_supports_json = [\"crun\", \"myrt\"]\n";
        let out = Podman.merge(Some(old), &reg(false)).unwrap().unwrap();
        assert!(out.contains("[\"crun\", \"myrt\", \"nvbind\"]"), "{out}");
    }

    #[test]
    fn wrong_shape_is_refused() {
        let e = Podman.merge(Some("engine = 3\n"), &reg(false)).unwrap_err();
        assert!(e.to_string().contains("`engine` is a value"), "{e}");
    }

    #[test]
    fn file_cycle_fresh_merge_idempotent_backup() {
        file_cycle(
            &Podman,
            WITH_COMMENTS,
            &["# site policy: keep this comment", "netns = \"none\""],
        );
    }

    #[test]
    fn invalid_toml_names_file_and_line() {
        invalid_file(
            &Podman,
            "[engine]\nruntime = \"crun\"\ncgroup_manager = = 1\n",
            3,
        );
    }

    #[test]
    fn unwritable_directory() {
        unwritable_dir(&Podman, "[engine]\n");
    }
}
