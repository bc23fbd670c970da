//! An LXC container as the LXC hooks see it: its config (following `lxc.include`) and the
//! devices it asks for, resolved into a plan. Shared by `lxc` (the mount hook) and
//! `lxc-devices` (the start-host hook), so neither imports the other.

use std::path::Path;

use anyhow::{bail, Context, Result};
use nvbind_cdi::apply::RealHost;
use nvbind_cdi::requests::NVIDIA_VISIBLE_DEVICES;
use oci_spec::runtime::{ProcessBuilder, Spec as OciSpec, UserBuilder};

use crate::args::Args;
use crate::options::InjectOptions;
use crate::plan::LivePlan;
use crate::resolve;
use crate::warning::warn;

/// The config keys read (`key = value`), following `lxc.include` of files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LxcConfig {
    /// `lxc.environment` entries, `KEY=VALUE`.
    pub environment: Vec<String>,
    /// `lxc.cgroup2.devices.allow` and `lxc.cgroup.devices.allow` values.
    pub allow: Vec<String>,
    /// `lxc.hook.start-host` commands (one of them may add the device rules at each start).
    pub start_host: Vec<String>,
}

impl LxcConfig {
    pub fn parse_text(text: &str, base: &Path, depth: usize, out: &mut LxcConfig) -> Result<()> {
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            match key {
                "lxc.environment" => {
                    if value.contains('=') {
                        out.environment.push(value.to_string());
                    } else if let Ok(v) = std::env::var(value) {
                        out.environment.push(format!("{value}={v}"));
                    }
                }
                "lxc.cgroup2.devices.allow" | "lxc.cgroup.devices.allow" => {
                    out.allow.push(value.to_string())
                }
                "lxc.hook.start-host" => out.start_host.push(value.to_string()),
                "lxc.include" if depth < 8 => {
                    let p = base.join(value);
                    if p.is_file() {
                        Self::read_into(&p, depth + 1, out)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn read_into(path: &Path, depth: usize, out: &mut LxcConfig) -> Result<()> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read LXC config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("/"));
        Self::parse_text(&text, base, depth, out)
    }

    pub fn read(path: &Path) -> Result<LxcConfig> {
        let mut out = LxcConfig::default();
        Self::read_into(path, 0, &mut out)?;
        Ok(out)
    }

    /// True when a start-host hook runs `nvbind-hook lxc-devices`, which adds the rules.
    pub fn adds_device_rules(&self) -> bool {
        self.start_host
            .iter()
            .any(|h| h.split_whitespace().nth(1) == Some("lxc-devices"))
    }

    /// True when an allow entry covers `rule` (`TYPE MAJOR:MINOR ACCESS`): the same line, `a`,
    /// or wildcards in type, major or minor; the access must include the rule's.
    pub fn allows(&self, rule: &str) -> bool {
        let parse = |s: &str| -> Option<(String, String, String, String)> {
            let mut f = s.split_whitespace();
            let t = f.next()?.to_string();
            if t == "a" {
                return Some((t, "*".into(), "*".into(), "rwm".into()));
            }
            let (maj, min) = f.next()?.split_once(':')?;
            let acc = f.next().unwrap_or("rwm").to_string();
            Some((t, maj.into(), min.into(), acc))
        };
        let Some((rt, rmaj, rmin, racc)) = parse(rule) else {
            return false;
        };
        self.allow
            .iter()
            .filter_map(|a| parse(a))
            .any(|(t, maj, min, acc)| {
                (t == "a" || t == rt)
                    && (maj == "*" || maj == rmaj)
                    && (min == "*" || min == rmin)
                    && racc.chars().all(|c| acc.contains(c))
            })
    }
}

/// An OCI spec carrying only the process environment the requests are read from.
fn request_spec(env: Vec<String>) -> Result<OciSpec> {
    let mut spec = OciSpec::default();
    spec.set_mounts(None);
    spec.set_linux(None);
    let process = ProcessBuilder::default()
        .env(env)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .build()?;
    spec.set_process(Some(process));
    Ok(spec)
}

/// The environment requests are read from: `--device` values when given, else the config's.
pub fn request_env(devices: &[String], config: &LxcConfig) -> Vec<String> {
    if devices.is_empty() {
        config.environment.clone()
    } else {
        vec![format!("{NVIDIA_VISIBLE_DEVICES}={}", devices.join(","))]
    }
}

/// Resolves the requests to a live plan; None when nothing is requested.
pub fn plan_for(env: Vec<String>, opts: &InjectOptions) -> Result<Option<(Vec<String>, LivePlan)>> {
    let spec = request_spec(env)?;
    let Some(r) = resolve::resolver(&opts.sources)?.resolve(&spec)? else {
        return Ok(None);
    };
    for w in &r.warnings {
        warn(w);
    }
    let plan = LivePlan::new(&r.edits, &spec, &RealHost)?;
    Ok(Some((
        r.names.iter().map(|n| n.to_string()).collect(),
        plan,
    )))
}

/// The arguments of an LXC hook of type `hook_type`: the inject options and the `--device`
/// values. LXC appends `NAME lxc TYPE` (hook version 0; version 1 passes them in the
/// environment only), which is dropped; LXC_HOOK_TYPE naming another type is refused with
/// `wrong_type(type)`.
pub fn hook_args(
    mut args: Args,
    hook_type: &str,
    wrong_type: impl Fn(&str) -> String,
) -> Result<(InjectOptions, Vec<String>)> {
    let opts = InjectOptions::take(&mut args)?;
    let devices = args.values("--device")?;
    let _ = args.positionals();
    args.finish()?;
    if let Ok(t) = std::env::var("LXC_HOOK_TYPE") {
        if t != hook_type {
            bail!("{}", wrong_type(&t));
        }
    }
    Ok((opts, devices))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_environment_allow_and_includes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("common.conf"),
            "lxc.cgroup2.devices.allow = c 195:* rwm\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config"),
            "# comment\nlxc.include = common.conf\nlxc.environment = NVIDIA_VISIBLE_DEVICES=0,1\n\
             lxc.environment=A=B\nlxc.cgroup.devices.allow = c 508:0 rw\nlxc.rootfs.path = dir:/x\n",
        )
        .unwrap();
        let c = LxcConfig::read(&dir.path().join("config")).unwrap();
        assert_eq!(c.environment, ["NVIDIA_VISIBLE_DEVICES=0,1", "A=B"]);
        assert_eq!(c.allow, ["c 195:* rwm", "c 508:0 rw"]);
        assert!(c.allows("c 195:3 rwm"));
        assert!(c.allows("c 508:0 rw"));
        assert!(!c.allows("c 508:0 rwm"));
        assert!(!c.allows("c 509:0 rw"));
        let all = LxcConfig {
            allow: vec!["a".into()],
            ..Default::default()
        };
        assert!(all.allows("b 1:2 rwm"));
    }

    #[test]
    fn device_flags_override_the_config() {
        let c = LxcConfig {
            environment: vec!["NVIDIA_VISIBLE_DEVICES=0".into()],
            ..Default::default()
        };
        assert_eq!(
            request_env(&["1".into(), "2".into()], &c),
            ["NVIDIA_VISIBLE_DEVICES=1,2"]
        );
        assert_eq!(request_env(&[], &c), ["NVIDIA_VISIBLE_DEVICES=0"]);
        let spec = request_spec(request_env(&["nvidia.com/gpu=all".into()], &c)).unwrap();
        let names = nvbind_cdi::requests::device_requests(&spec).unwrap();
        assert_eq!(names[0].to_string(), "nvidia.com/gpu=all");
    }
}
