//! The container engines on this host: is nvbind registered, does its path lead to an nvbind
//! binary, is CDI on, which runtime is the default; and `docker run --gpus`'s hook.

use serde_json::Value;
use toml_edit::{DocumentMut, Item};

use super::check::Check;
use super::host::is_executable;
use super::host::Host;

/// A runtime an engine config registers.
struct Registered {
    name: String,
    path: String,
}

/// What was read from one engine's config.
struct EngineView {
    engine: &'static str,
    config: String,
    nvbind: Vec<Registered>,
    /// None: the engine decides by version (said in the summary).
    cdi: Option<bool>,
    default_runtime: String,
}

pub fn engines(host: &dyn Host) -> Vec<Check> {
    let mut out = Vec::new();
    let installed: Vec<&str> = ["dockerd", "podman", "containerd"]
        .into_iter()
        .filter(|b| host.which(b).is_some())
        .collect();
    if installed.is_empty() {
        out.push(Check::warn(
            "engines",
            "no container engine found (dockerd, podman, containerd on PATH): nvbind can still run bundles itself",
            "install one (apt-get install docker.io | podman | containerd), then nvbind setup ENGINE",
        ));
        return out;
    }
    for bin in installed {
        let view = match bin {
            "dockerd" => docker(host),
            "podman" => podman(host),
            _ => containerd(host),
        };
        out.push(match view {
            Ok(v) => judge(host, &v),
            Err((engine, config, why)) => Check::fail(
                format!("engine.{engine}"),
                format!("{config} does not parse: {why}"),
                format!("fix {config} by hand (the engine itself will refuse it too)"),
            ),
        });
    }
    out
}

fn judge(host: &dyn Host, v: &EngineView) -> Check {
    let id = format!("engine.{}", v.engine);
    let cdi = match v.cdi {
        Some(true) => "CDI on",
        Some(false) => "CDI off",
        None => "CDI per engine version",
    };
    let setup = format!("nvbind setup {}", v.engine);
    let Some(reg) = v.nvbind.first() else {
        return Check::warn(
            id,
            format!(
                "nvbind is not registered in {} (default runtime {}, {cdi})",
                v.config, v.default_runtime
            ),
            setup,
        );
    };
    if !is_executable(&host.path(&reg.path)) {
        return Check::fail(
            id,
            format!(
                "runtime \"{}\" in {} points to {}, which is not an executable",
                reg.name, v.config, reg.path
            ),
            format!("{setup} (it writes this binary's path), then restart the engine"),
        );
    }
    let summary = format!(
        "runtime \"{}\" -> {} (default runtime {}, {cdi})",
        reg.name, reg.path, v.default_runtime
    );
    if v.cdi == Some(false) && v.engine == "docker" {
        return Check::warn(
            id,
            summary,
            "for --device nvidia.com/gpu=N set \"features\": {\"cdi\": true} in daemon.json (NVIDIA_VISIBLE_DEVICES works without)",
        );
    }
    Check::ok(id, summary)
}

type ReadError = (&'static str, String, String);

/// Runtimes whose binary is called nvbind (whatever the name the engine knows them by).
fn is_nvbind(path: &str) -> bool {
    std::path::Path::new(path)
        .file_name()
        .is_some_and(|n| n == "nvbind")
}

fn docker(host: &dyn Host) -> Result<EngineView, ReadError> {
    let config = "/etc/docker/daemon.json".to_string();
    let doc: Value = match host.read(&config) {
        None => Value::Object(Default::default()),
        Some(t) if t.trim().is_empty() => Value::Object(Default::default()),
        Some(t) => {
            serde_json::from_str(&t).map_err(|e| ("docker", config.clone(), e.to_string()))?
        }
    };
    let nvbind = doc
        .get("runtimes")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, r)| {
            let path = r.get("path")?.as_str()?;
            (is_nvbind(path) || name == "nvbind").then(|| Registered {
                name: name.clone(),
                path: path.to_string(),
            })
        })
        .collect();
    Ok(EngineView {
        engine: "docker",
        config,
        nvbind,
        cdi: Some(
            doc.pointer("/features/cdi")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        ),
        default_runtime: doc
            .get("default-runtime")
            .and_then(Value::as_str)
            .unwrap_or("runc")
            .to_string(),
    })
}

fn parse_toml(
    host: &dyn Host,
    engine: &'static str,
    path: &str,
) -> Result<Option<DocumentMut>, ReadError> {
    match host.read(path) {
        None => Ok(None),
        Some(t) => t.parse::<DocumentMut>().map(Some).map_err(|e| {
            (
                engine,
                path.to_string(),
                e.to_string().lines().next().unwrap_or("").to_string(),
            )
        }),
    }
}

fn podman(host: &dyn Host) -> Result<EngineView, ReadError> {
    // containers.conf is layered: the vendor file, the admin's, then the drop-ins; later wins.
    let mut files = vec![
        "/usr/share/containers/containers.conf".to_string(),
        "/etc/containers/containers.conf".to_string(),
    ];
    if let Ok(rd) = std::fs::read_dir(host.path("/etc/containers/containers.conf.d")) {
        let mut d: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".conf"))
            .map(|n| format!("/etc/containers/containers.conf.d/{n}"))
            .collect();
        d.sort();
        files.extend(d);
    }
    let mut nvbind = Vec::new();
    let mut default_runtime = "crun".to_string();
    for f in &files {
        let Some(doc) = parse_toml(host, "podman", f)? else {
            continue;
        };
        if let Some(rt) = doc
            .get("engine")
            .and_then(|e| e.get("runtime"))
            .and_then(Item::as_str)
        {
            default_runtime = rt.to_string();
        }
        let Some(runtimes) = doc
            .get("engine")
            .and_then(|e| e.get("runtimes"))
            .and_then(Item::as_table_like)
        else {
            continue;
        };
        for (name, paths) in runtimes.iter() {
            let Some(arr) = paths.as_array() else {
                continue;
            };
            for p in arr.iter().filter_map(|v| v.as_str()) {
                if is_nvbind(p) || name == "nvbind" {
                    nvbind.retain(|r: &Registered| r.name != name);
                    nvbind.push(Registered {
                        name: name.to_string(),
                        path: p.to_string(),
                    });
                }
            }
        }
    }
    Ok(EngineView {
        engine: "podman",
        config: "/etc/containers/containers.conf".into(),
        nvbind,
        // Podman reads CDI specs from /etc/cdi and /var/run/cdi since 4.1, always on.
        cdi: Some(true),
        default_runtime,
    })
}

fn containerd(host: &dyn Host) -> Result<EngineView, ReadError> {
    let config = "/etc/containerd/config.toml".to_string();
    let doc = parse_toml(host, "containerd", &config)?.unwrap_or_default();
    let version = doc
        .get("version")
        .and_then(Item::as_integer)
        .unwrap_or(if doc.as_table().is_empty() { 2 } else { 1 });
    let plugin = match version {
        1 => "cri",
        2 => "io.containerd.grpc.v1.cri",
        _ => "io.containerd.cri.v1.runtime",
    };
    let cri = doc.get("plugins").and_then(|p| p.get(plugin));
    let ctrd = cri.and_then(|c| c.get("containerd"));
    let mut nvbind = Vec::new();
    if let Some(rts) = ctrd
        .and_then(|c| c.get("runtimes"))
        .and_then(Item::as_table_like)
    {
        for (name, rt) in rts.iter() {
            let path = rt
                .get("options")
                .and_then(|o| o.get("BinaryName"))
                .and_then(Item::as_str);
            if let Some(p) = path.filter(|p| is_nvbind(p) || name == "nvbind") {
                nvbind.push(Registered {
                    name: name.to_string(),
                    path: p.to_string(),
                });
            }
        }
    }
    // enable_cdi: off by default in containerd 1.7, on in 2.0 (config version 3).
    let cdi = cri
        .and_then(|c| c.get("enable_cdi"))
        .and_then(Item::as_bool)
        .or((version >= 3).then_some(true))
        .unwrap_or(false);
    Ok(EngineView {
        engine: "containerd",
        config,
        nvbind,
        cdi: Some(cdi),
        default_runtime: ctrd
            .and_then(|c| c.get("default_runtime_name"))
            .and_then(Item::as_str)
            .unwrap_or("runc")
            .to_string(),
    })
}

/// dockerd enables `--gpus` when `nvidia-container-runtime-hook` is on its PATH at startup.
pub fn docker_gpus_hook(host: &dyn Host) -> Check {
    let id = "docker-gpus-hook";
    let remedy = "/usr/libexec/nvbind/install-docker-gpus-link && systemctl restart docker";
    let hook = host.which("nvbind-hook");
    if host.which("dockerd").is_none() {
        return match hook {
            Some(h) => Check::ok(
                id,
                format!("{h} installed (no Docker here, so no --gpus link needed)"),
            ),
            None => Check::warn(
                id,
                "nvbind-hook not found on PATH: hosts keeping runc, crun or LXC cannot inject GPUs",
                "install the nvbind package (it ships /usr/bin/nvbind-hook)",
            ),
        };
    }
    match host.which("nvidia-container-runtime-hook") {
        None => Check::warn(
            id,
            "no nvidia-container-runtime-hook on dockerd's PATH: `docker run --gpus` is refused",
            remedy,
        ),
        Some(p) => match host.resolve(&p) {
            Some(target) if target.ends_with("/nvbind-hook") => Check::ok(
                id,
                format!("{p} -> {target}: docker run --gpus uses nvbind-hook"),
            ),
            _ => Check::ok(
                id,
                format!(
                    "{p} is another hook (NVIDIA's): docker run --gpus uses it, not nvbind-hook"
                ),
            ),
        },
    }
}
