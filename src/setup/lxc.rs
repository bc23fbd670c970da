//! LXC and Proxmox VE containers: the lines that make `nvbind-hook` inject GPUs at each start.
//!
//! ```text
//! lxc.autodev = 1                                      (only when the file sets none)
//! lxc.hook.mount = /usr/bin/nvbind-hook lxc            nodes, driver files, ld.so.cache
//! lxc.hook.start-host = /usr/bin/nvbind-hook lxc-devices   device cgroup rules
//! lxc.environment = NVIDIA_VISIBLE_DEVICES=all         which GPUs
//! ```
//!
//! Proxmox's /etc/pve/lxc/CTID.conf writes `key: value` and may hold snapshot sections
//! (`[name]`) after the container's own; the lines go into the container's section. No device
//! rule is written: the start-host hook computes them from the host's device nodes at each start,
//! so a major that changed at reboot (nvidia-uvm's) is still right (see hooks/src/lxc_devices.rs
//! for why not a wildcard). The lines are recognised by their content, not by marker comments
//! (Proxmox moves comments into the container's description when it rewrites the file): an
//! existing nvbind-hook hook line or NVIDIA_VISIBLE_DEVICES environment line is replaced in
//! place, everything else is kept as it was.

use std::path::Path;

use super::{Engine, MergeError, Registration};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// LXC's own `key = value`.
    Lxc,
    /// Proxmox VE's `key: value`, with `[snapshot]` sections.
    Proxmox,
}

impl Flavor {
    /// Guesses from the text: the first `key = value` or `key: value` line decides; an empty
    /// file is LXC's unless it sits under /etc/pve.
    pub fn detect(path: &Path, text: &str) -> Flavor {
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('[') {
                return Flavor::Proxmox;
            }
            let eq = line.find('=');
            let colon = line.find(':');
            return match (eq, colon) {
                (Some(e), Some(c)) if c < e => Flavor::Proxmox,
                (None, Some(_)) => Flavor::Proxmox,
                _ => Flavor::Lxc,
            };
        }
        if path.starts_with("/etc/pve") {
            Flavor::Proxmox
        } else {
            Flavor::Lxc
        }
    }

    fn name(self) -> &'static str {
        match self {
            Flavor::Lxc => "LXC config",
            Flavor::Proxmox => "Proxmox container config",
        }
    }

    fn line(self, key: &str, value: &str) -> String {
        match self {
            Flavor::Lxc => format!("{key} = {value}"),
            Flavor::Proxmox => format!("{key}: {value}"),
        }
    }
}

/// What `nvbind setup lxc` writes: `reg.path` is the nvbind-hook binary.
pub struct Lxc {
    pub flavor: Flavor,
    /// NVIDIA_VISIBLE_DEVICES value: indices, UUIDs, `all` or CDI names, comma-separated.
    pub devices: String,
}

/// One parsed line: its key and value, or nothing for comments, blanks and section headers.
fn split(flavor: Flavor, line: &str, n: usize) -> Result<Option<(String, String)>, MergeError> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let sep = match flavor {
        Flavor::Lxc => '=',
        Flavor::Proxmox => ':',
    };
    let Some((k, v)) = t.split_once(sep) else {
        return Err(MergeError::Parse {
            format: flavor.name(),
            line: n,
            column: 1,
            message: format!("expected `key {sep} value`, found {t:?}"),
        });
    };
    let k = k.trim();
    let valid_key = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !valid_key {
        return Err(MergeError::Parse {
            format: flavor.name(),
            line: n,
            column: 1,
            message: format!("{k:?} is not a config key"),
        });
    }
    Ok(Some((k.to_string(), v.trim().to_string())))
}

/// Lines nvbind setup owns: its hooks and the device request.
fn is_ours(key: &str, value: &str) -> bool {
    let hook = |v: &str| {
        v.split_whitespace()
            .next()
            .and_then(|p| Path::new(p).file_name())
            .is_some_and(|n| n == "nvbind-hook")
    };
    match key {
        "lxc.hook.mount" | "lxc.hook.start-host" => hook(value),
        "lxc.environment" => value.starts_with("NVIDIA_VISIBLE_DEVICES="),
        _ => false,
    }
}

impl Lxc {
    fn wanted(&self, hook: &Path, has_autodev: bool) -> Vec<String> {
        let f = self.flavor;
        let hook = hook.display();
        let mut lines = Vec::new();
        if !has_autodev {
            // The mount hook creates nodes in the container's /dev tmpfs.
            lines.push(f.line("lxc.autodev", "1"));
        }
        lines.push(f.line("lxc.hook.mount", &format!("{hook} lxc")));
        lines.push(f.line("lxc.hook.start-host", &format!("{hook} lxc-devices")));
        lines.push(f.line(
            "lxc.environment",
            &format!("NVIDIA_VISIBLE_DEVICES={}", self.devices),
        ));
        lines
    }
}

impl Engine for Lxc {
    fn name(&self) -> &'static str {
        match self.flavor {
            Flavor::Lxc => "LXC",
            Flavor::Proxmox => "Proxmox VE",
        }
    }

    fn default_config(&self) -> &'static Path {
        // Per container; the verb works the path out from the CTID.
        match self.flavor {
            Flavor::Lxc => Path::new("/var/lib/lxc"),
            Flavor::Proxmox => Path::new("/etc/pve/lxc"),
        }
    }

    fn restart_hint(&self) -> &'static str {
        match self.flavor {
            Flavor::Lxc => "restart the container (lxc-stop -n CTID; lxc-start -n CTID)",
            Flavor::Proxmox => "restart the container (pct reboot CTID)",
        }
    }

    fn merge(
        &self,
        existing: Option<&str>,
        reg: &Registration,
    ) -> Result<Option<String>, MergeError> {
        let text = existing.unwrap_or("");
        let lines: Vec<&str> = text.lines().collect();
        // The container's own section ends at the first snapshot section (Proxmox).
        let end = match self.flavor {
            Flavor::Proxmox => lines
                .iter()
                .position(|l| l.trim_start().starts_with('['))
                .unwrap_or(lines.len()),
            Flavor::Lxc => lines.len(),
        };
        let mut kept: Vec<String> = Vec::new();
        let mut insert_at = None;
        let mut has_autodev = false;
        for (i, line) in lines[..end].iter().enumerate() {
            match split(self.flavor, line, i + 1)? {
                Some((k, v)) if is_ours(&k, &v) => {
                    insert_at.get_or_insert(kept.len());
                }
                Some((k, _)) => {
                    has_autodev |= k == "lxc.autodev";
                    kept.push(line.to_string());
                }
                None => kept.push(line.to_string()),
            }
        }
        // Snapshot sections are parsed too, so a broken file is refused whole.
        for (i, line) in lines[end..].iter().enumerate() {
            if !line.trim_start().starts_with('[') {
                split(self.flavor, line, end + i + 1)?;
            }
        }
        let wanted = self.wanted(&reg.path, has_autodev);
        let at = insert_at.unwrap_or_else(|| {
            // After the last non-blank line of the section.
            kept.iter()
                .rposition(|l| !l.trim().is_empty())
                .map_or(0, |p| p + 1)
        });
        let mut out: Vec<String> = kept[..at].to_vec();
        out.extend(wanted);
        out.extend(kept[at..].iter().cloned());
        out.extend(lines[end..].iter().map(|l| l.to_string()));
        let mut new = out.join("\n");
        new.push('\n');
        if existing.is_some_and(|old| old == new) {
            return Ok(None);
        }
        Ok(Some(new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registration {
        Registration {
            name: "nvbind".into(),
            path: "/usr/bin/nvbind-hook".into(),
            default: false,
        }
    }

    fn lxc(flavor: Flavor) -> Lxc {
        Lxc {
            flavor,
            devices: "all".into(),
        }
    }

    const PVE: &str = "#my%20container\narch: amd64\nhostname: ct101\nmemory: 512\n\
        lxc.cgroup2.devices.allow: c 195:* rwm\nunprivileged: 1\n\n[snap1]\narch: amd64\nsnaptime: 1700000000\n";

    #[test]
    fn proxmox_lines_go_into_the_container_section_and_keep_the_rest() {
        let new = lxc(Flavor::Proxmox)
            .merge(Some(PVE), &reg())
            .unwrap()
            .unwrap();
        let (main, snap) = new.split_once("[snap1]").unwrap();
        assert!(
            main.contains(
                "unprivileged: 1\nlxc.autodev: 1\nlxc.hook.mount: /usr/bin/nvbind-hook lxc\n\
             lxc.hook.start-host: /usr/bin/nvbind-hook lxc-devices\n\
             lxc.environment: NVIDIA_VISIBLE_DEVICES=all\n\n"
            ),
            "{new}"
        );
        assert!(main.starts_with("#my%20container\narch: amd64\n"));
        assert!(main.contains("lxc.cgroup2.devices.allow: c 195:* rwm\n"));
        assert_eq!(snap, "\narch: amd64\nsnaptime: 1700000000\n");
        // Idempotent.
        assert!(lxc(Flavor::Proxmox)
            .merge(Some(&new), &reg())
            .unwrap()
            .is_none());
    }

    #[test]
    fn rerun_replaces_its_own_lines_in_place() {
        let text = "lxc.rootfs.path = dir:/x\n# GPU\nlxc.hook.mount = /opt/old/nvbind-hook lxc --device 0\n\
                    lxc.environment = NVIDIA_VISIBLE_DEVICES=0\nlxc.environment = TZ=UTC\nlxc.autodev = 1\n";
        let mut l = lxc(Flavor::Lxc);
        l.devices = "1,2".into();
        let new = l.merge(Some(text), &reg()).unwrap().unwrap();
        assert_eq!(
            new,
            "lxc.rootfs.path = dir:/x\n# GPU\nlxc.hook.mount = /usr/bin/nvbind-hook lxc\n\
             lxc.hook.start-host = /usr/bin/nvbind-hook lxc-devices\n\
             lxc.environment = NVIDIA_VISIBLE_DEVICES=1,2\nlxc.environment = TZ=UTC\nlxc.autodev = 1\n"
        );
        assert!(l.merge(Some(&new), &reg()).unwrap().is_none());
    }

    #[test]
    fn unparseable_lines_are_refused_with_their_number() {
        let e = lxc(Flavor::Lxc)
            .merge(
                Some("lxc.rootfs.path = dir:/x\nthis is not a key\n"),
                &reg(),
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2, column 1: invalid LXC config: expected `key = value`, found \"this is not a key\""
        );
        let e = lxc(Flavor::Proxmox)
            .merge(Some("arch: amd64\n[snap]\nbroken line\n"), &reg())
            .unwrap_err();
        assert!(e.to_string().starts_with("line 3,"), "{e}");
    }

    #[test]
    fn flavor_from_content_or_place() {
        assert_eq!(Flavor::detect(Path::new("/x"), PVE), Flavor::Proxmox);
        assert_eq!(
            Flavor::detect(Path::new("/x"), "# c\nlxc.uts.name = a:b\n"),
            Flavor::Lxc
        );
        assert_eq!(
            Flavor::detect(Path::new("/etc/pve/lxc/1.conf"), ""),
            Flavor::Proxmox
        );
        assert_eq!(
            Flavor::detect(Path::new("/var/lib/lxc/a/config"), ""),
            Flavor::Lxc
        );
    }
}
