//! containerd: `/etc/containerd/config.toml`, a CRI runtime handler
//! `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<name>]` with
//! `runtime_type = "io.containerd.runc.v2"` and `options.BinaryName`, so the runc v2 shim runs
//! nvbind; Kubernetes selects it through a RuntimeClass with `handler: <name>`.
//! The plugin's key depends on the config's `version`: 1 (or none, in a non-empty file)
//! `plugins.cri`, 2 (containerd 1.x) `plugins."io.containerd.grpc.v1.cri"`, 3 (containerd 2.x)
//! `plugins."io.containerd.cri.v1.runtime"`. A fresh file gets `version = 2`.

use std::path::Path;

use toml_edit::{value, Item};

use super::toml::{describe, parse, table_at};
use super::{Engine, MergeError, Registration};

pub struct Containerd;

const RUNC_V2: &str = "io.containerd.runc.v2";
/// The annotations the handler passes from the CRI request into the OCI spec.
const CDI_ANNOTATIONS: &str = "cdi.k8s.io/*";

fn cri_plugin(version: i64) -> &'static str {
    match version {
        1 => "cri",
        2 => "io.containerd.grpc.v1.cri",
        _ => "io.containerd.cri.v1.runtime",
    }
}

impl Engine for Containerd {
    fn name(&self) -> &'static str {
        "containerd"
    }

    fn default_config(&self) -> &'static Path {
        Path::new("/etc/containerd/config.toml")
    }

    fn restart_hint(&self) -> &'static str {
        "systemctl restart containerd"
    }

    fn notes(&self, merged: &str) -> Vec<String> {
        let Ok(doc) = merged.parse::<toml_edit::DocumentMut>() else {
            return Vec::new();
        };
        let disabled = super::toml::strings(doc.get("disabled_plugins")).unwrap_or_default();
        disabled
            .iter()
            .filter(|p| p.as_str() == "cri" || p.ends_with(".cri"))
            .map(|p| {
                format!(
                    "the CRI plugin is listed in disabled_plugins ({p:?}): Kubernetes cannot use \
                     the handler until it is enabled (ctr --runc-binary works regardless)"
                )
            })
            .collect()
    }

    fn merge(
        &self,
        existing: Option<&str>,
        reg: &Registration,
    ) -> Result<Option<String>, MergeError> {
        let text = existing.unwrap_or("");
        let mut doc = parse(text)?;
        let version = match doc.get("version") {
            Some(item) => item.as_integer().ok_or(MergeError::Shape {
                key: "version".into(),
                found: describe(item),
                expected: "an integer",
            })?,
            None if doc.as_table().is_empty() => {
                // Put the version first, above anything appended below.
                let mut fresh = toml_edit::DocumentMut::new();
                fresh["version"] = value(2);
                fresh
                    .decor_mut()
                    .set_prefix(doc.decor().prefix().cloned().unwrap_or_default());
                doc = fresh;
                2
            }
            None => 1,
        };
        let plugin = cri_plugin(version);
        let path = reg.path.to_string_lossy().into_owned();
        let mut changed = false;

        let shown = format!("plugins.\"{plugin}\".containerd");
        let cri = table_at(doc.as_table_mut(), "", &["plugins", plugin, "containerd"])?;
        // The cgroup driver of the runc handler, which the kubelet's must match (kubeadm sets
        // `SystemdCgroup = true` on systemd hosts): a handler without it would put pods in
        // cgroupfs paths under a systemd kubelet.
        let runc_systemd = cri
            .get("runtimes")
            .and_then(|r| r.get("runc"))
            .and_then(|r| r.get("options"))
            .and_then(|o| o.get("SystemdCgroup"))
            .and_then(Item::as_bool);
        if reg.default && cri.get("default_runtime_name").and_then(Item::as_str) != Some(&reg.name)
        {
            cri["default_runtime_name"] = value(reg.name.as_str());
            changed = true;
        }
        let handler = table_at(cri, &shown, &["runtimes", reg.name.as_str()])?;
        if handler.get("runtime_type").and_then(Item::as_str) != Some(RUNC_V2) {
            handler["runtime_type"] = value(RUNC_V2);
            changed = true;
        }
        // CDI requests as Kubernetes users write them, `cdi.k8s.io/*` annotations on the pod
        // (or a device plugin's on the container), reach the OCI spec, where nvbind resolves
        // them, only when the handler passes them through: containerd 1.6 has no CDI at all,
        // and 1.7's `enable_cdi` reads the container's annotations only.
        for key in ["pod_annotations", "container_annotations"] {
            let mut list = match handler.get(key) {
                None => Vec::new(),
                Some(item) => super::toml::strings(Some(item)).ok_or(MergeError::Shape {
                    key: format!("{shown}.runtimes.{}.{key}", reg.name),
                    found: describe(item),
                    expected: "an array of strings",
                })?,
            };
            if !list.iter().any(|p| p == CDI_ANNOTATIONS) {
                list.push(CDI_ANNOTATIONS.to_string());
                handler[key] = value(toml_edit::Array::from_iter(list));
                changed = true;
            }
        }
        handler.set_implicit(false);
        let options = table_at(
            handler,
            &format!("{shown}.runtimes.{}", reg.name),
            &["options"],
        )?;
        if options.get("BinaryName").and_then(Item::as_str) != Some(&path) {
            options["BinaryName"] = value(path.as_str());
            changed = true;
        }
        if let Some(systemd) = runc_systemd {
            if !options.contains_key("SystemdCgroup") {
                options["SystemdCgroup"] = value(systemd);
                changed = true;
            }
        }
        options.set_implicit(false);
        // containerd replaces (not merges) its built-in `runtimes` map with the one in the file:
        // a file that names only our handler would lose the default "runc" handler and the CRI
        // plugin would refuse to load. Keep the default runtime defined.
        let default_name = cri
            .get("default_runtime_name")
            .and_then(Item::as_str)
            .unwrap_or("runc")
            .to_string();
        let runtimes = table_at(cri, &shown, &["runtimes"])?;
        if default_name == "runc" && !runtimes.contains_key("runc") {
            let runc = table_at(runtimes, &format!("{shown}.runtimes"), &["runc"])?;
            runc["runtime_type"] = value(RUNC_V2);
            runc.set_implicit(false);
            changed = true;
        }
        Ok(changed.then(|| doc.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{file_cycle, invalid_file, reg, unwritable_dir};
    use super::*;

    /// Debian 12's /etc/containerd/config.toml, plus a comment and a runc handler.
    const DEBIAN: &str = r#"version = 2

# keep me
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"#;

    fn get<'a>(doc: &'a toml_edit::DocumentMut, plugin: &str) -> &'a Item {
        &doc["plugins"][plugin]["containerd"]["runtimes"]["nvbind"]
    }

    #[test]
    fn fresh_file_is_version_2() {
        let out = Containerd.merge(None, &reg(false)).unwrap().unwrap();
        assert!(out.starts_with("version = 2\n"), "{out}");
        let doc: toml_edit::DocumentMut = out.parse().unwrap();
        let h = get(&doc, "io.containerd.grpc.v1.cri");
        assert_eq!(h["runtime_type"].as_str(), Some(RUNC_V2));
        assert_eq!(h["options"]["BinaryName"].as_str(), Some("/usr/bin/nvbind"));
        assert!(
            out.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvbind]"),
            "{out}"
        );
        assert!(
            out.contains(
                "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvbind.options]"
            ),
            "{out}"
        );
    }

    #[test]
    fn merges_into_debians_file_keeping_everything() {
        let out = Containerd.merge(Some(DEBIAN), &reg(true)).unwrap().unwrap();
        for keep in [
            "# keep me",
            "bin_dir = \"/usr/lib/cni\"",
            "path = \"/var/lib/containerd/opt\"",
            "containerd.runtimes.runc]",
        ] {
            assert!(out.contains(keep), "lost {keep:?}:\n{out}");
        }
        let doc: toml_edit::DocumentMut = out.parse().unwrap();
        assert_eq!(
            get(&doc, "io.containerd.grpc.v1.cri")["options"]["BinaryName"].as_str(),
            Some("/usr/bin/nvbind")
        );
        assert_eq!(
            doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["default_runtime_name"]
                .as_str(),
            Some("nvbind")
        );
        assert_eq!(Containerd.merge(Some(&out), &reg(true)).unwrap(), None);
    }

    #[test]
    fn keeps_the_default_runc_handler_defined() {
        let out = Containerd.merge(None, &reg(false)).unwrap().unwrap();
        let doc: toml_edit::DocumentMut = out.parse().unwrap();
        let runtimes = &doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        assert_eq!(
            runtimes["runc"]["runtime_type"].as_str(),
            Some(RUNC_V2),
            "{out}"
        );
        // A file that already defines runc keeps its own settings.
        let mine = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\nSystemdCgroup = true\n";
        let out = Containerd.merge(Some(mine), &reg(false)).unwrap().unwrap();
        assert!(out.contains("SystemdCgroup = true"), "{out}");
        // ... and nvbind's handler gets runc's cgroup driver, which the kubelet's matches.
        let doc: toml_edit::DocumentMut = out.parse().unwrap();
        let runtimes = &doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        assert_eq!(
            runtimes["nvbind"]["options"]["SystemdCgroup"].as_bool(),
            Some(true),
            "{out}"
        );
        assert_eq!(
            Containerd.merge(Some(&out), &reg(false)).unwrap(),
            None,
            "a second run changes nothing"
        );
        // Without a driver on runc's handler, none is written on ours (containerd's default).
        let out = Containerd.merge(None, &reg(false)).unwrap().unwrap();
        assert!(!out.contains("SystemdCgroup"), "{out}");
        // Another default runtime: not ours to fix.
        let other = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"kata\"\n";
        let out = Containerd.merge(Some(other), &reg(false)).unwrap().unwrap();
        assert!(!out.contains("runtimes.runc"), "{out}");
    }

    #[test]
    fn passes_cdi_annotations_through_keeping_the_users() {
        let out = Containerd.merge(None, &reg(false)).unwrap().unwrap();
        let doc: toml_edit::DocumentMut = out.parse().unwrap();
        let h = get(&doc, "io.containerd.grpc.v1.cri");
        for key in ["pod_annotations", "container_annotations"] {
            assert_eq!(
                super::super::toml::strings(Some(&h[key])),
                Some(vec!["cdi.k8s.io/*".to_string()]),
                "{out}"
            );
        }
        let mine = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvbind]\npod_annotations = [\"example.com/*\"]\n";
        let out = Containerd.merge(Some(mine), &reg(false)).unwrap().unwrap();
        let doc: toml_edit::DocumentMut = out.parse().unwrap();
        assert_eq!(
            super::super::toml::strings(Some(
                &get(&doc, "io.containerd.grpc.v1.cri")["pod_annotations"]
            )),
            Some(vec![
                "example.com/*".to_string(),
                "cdi.k8s.io/*".to_string()
            ]),
            "{out}"
        );
        assert_eq!(Containerd.merge(Some(&out), &reg(false)).unwrap(), None);
        let bad = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvbind]\ncontainer_annotations = \"cdi.k8s.io/*\"\n";
        let err = Containerd
            .merge(Some(bad), &reg(false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("container_annotations"), "{err}");
    }

    #[test]
    fn version_1_and_3_layouts() {
        let v1 = Containerd
            .merge(Some("root = \"/var/lib/containerd\"\n"), &reg(false))
            .unwrap()
            .unwrap();
        let doc: toml_edit::DocumentMut = v1.parse().unwrap();
        assert_eq!(
            get(&doc, "cri")["options"]["BinaryName"].as_str(),
            Some("/usr/bin/nvbind")
        );
        let v3 = Containerd
            .merge(Some("version = 3\n"), &reg(false))
            .unwrap()
            .unwrap();
        let doc: toml_edit::DocumentMut = v3.parse().unwrap();
        assert_eq!(
            get(&doc, "io.containerd.cri.v1.runtime")["runtime_type"].as_str(),
            Some(RUNC_V2)
        );
    }

    #[test]
    fn notes_a_disabled_cri_plugin() {
        let out = Containerd
            .merge(
                Some("version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"),
                &reg(false),
            )
            .unwrap()
            .unwrap();
        assert_eq!(Containerd.notes(&out).len(), 1);
    }

    #[test]
    fn file_cycle_fresh_merge_idempotent_backup() {
        file_cycle(
            &Containerd,
            DEBIAN,
            &["# keep me", "conf_dir = \"/etc/cni/net.d\""],
        );
    }

    #[test]
    fn invalid_toml_names_file_and_line() {
        invalid_file(&Containerd, "version = 2\n\n[plugins\nx = 1\n", 3);
    }

    #[test]
    fn unwritable_directory() {
        unwritable_dir(&Containerd, "version = 2\n");
    }
}
