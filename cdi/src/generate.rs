//! Inventory -> CDI spec, one spec per vendor (a spec has exactly one kind).
//!
//! Layout follows `nvidia-ctk cdi generate`: one device per GPU (and per MIG device) named
//! by index, UUID or both, an `all` device with every GPU's nodes, and spec-level
//! containerEdits for what every device needs (control nodes, libraries, binaries,
//! firmware, IPC sockets, `NVIDIA_VISIBLE_DEVICES=void`). The hooks call our own
//! `nvbind-hook` (`update-ldcache --folder DIR...`, `create-symlinks --link T::L...`).
//! The spec declares the lowest cdiVersion that can express it.

use std::path::{Path, PathBuf};

use crate::discover::nvidia_files::unique_dirs;
use crate::discover::{self, HostFile, Symlink, Vendor, VendorInventory};
use crate::spec::{self, ContainerEdits, Device, DeviceNode, Hook, Mount, Spec};
use crate::version;

/// The hook binary's name; the default path is this name next to the running executable,
/// else in /usr/bin.
pub const HOOK_BINARY: &str = "nvbind-hook";

/// How devices are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameStrategy {
    /// `0`, `1`, ... and `0:0` for MIG devices (GPU index : MIG index).
    #[default]
    Index,
    /// `GPU-<uuid>` / `MIG-<uuid>`; devices without a UUID fall back to the index.
    Uuid,
    /// Both names, each a device of its own.
    Both,
}

/// Generation settings.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub name_strategy: NameStrategy,
    /// Absolute path of `nvbind-hook` as the hooks will call it.
    pub hook_path: PathBuf,
    /// Mount the 32-bit driver libraries too (NVIDIA_DRIVER_CAPABILITIES compat32); a spec
    /// for every container leaves them out, as the toolkit's does.
    pub compat32: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            name_strategy: NameStrategy::Index,
            hook_path: default_hook_path(),
            compat32: false,
        }
    }
}

/// `nvbind-hook` next to the running executable when it is there, else
/// `/usr/bin/nvbind-hook`.
pub fn default_hook_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(HOOK_BINARY)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| Path::new("/usr/bin").join(HOOK_BINARY))
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{vendor} driver found but no usable GPU: no spec for {kind}")]
    NoDevices { vendor: Vendor, kind: &'static str },
    #[error(transparent)]
    Encode(#[from] spec::SpecError),
    #[error("cannot write {path}: directory {dir} does not exist")]
    NoOutputDir { path: PathBuf, dir: PathBuf },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn node(n: &discover::DeviceNode) -> DeviceNode {
    if !n.on_host {
        // No node on the host to take the numbers from: the spec carries them.
        return DeviceNode {
            path: s(&n.path),
            node_type: Some("c".into()),
            major: Some(n.major as i64),
            minor: Some(n.minor as i64),
            ..Default::default()
        };
    }
    DeviceNode {
        path: s(&n.path),
        host_path: (n.host_path != n.path).then(|| s(&n.host_path)),
        ..Default::default()
    }
}

fn mount(f: &HostFile, extra: &[&str]) -> Mount {
    let mut options: Vec<String> = ["ro", "nosuid", "nodev", "bind"]
        .iter()
        .map(|o| o.to_string())
        .collect();
    options.extend(extra.iter().map(|o| o.to_string()));
    Mount {
        host_path: s(&f.host_path),
        container_path: s(&f.path),
        options,
        mount_type: None,
    }
}

fn hook(
    hook_path: &Path,
    name: &str,
    flag: &str,
    values: impl IntoIterator<Item = String>,
) -> Hook {
    let argv0 = hook_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| HOOK_BINARY.to_owned());
    let mut args = vec![argv0, name.to_owned()];
    for v in values {
        args.push(flag.to_owned());
        args.push(v);
    }
    Hook {
        hook_name: "createContainer".to_owned(),
        path: s(hook_path),
        args,
        ..Default::default()
    }
}

fn symlink_hook(hook_path: &Path, links: &[Symlink]) -> Option<Hook> {
    (!links.is_empty()).then(|| {
        hook(
            hook_path,
            "create-symlinks",
            "--link",
            links
                .iter()
                .map(|l| format!("{}::{}", l.target.display(), l.link.display())),
        )
    })
}

fn push_unique_nodes(into: &mut Vec<DeviceNode>, nodes: &[discover::DeviceNode]) {
    for n in nodes {
        let n = node(n);
        if !into.contains(&n) {
            into.push(n);
        }
    }
}

/// The names a device gets under `strategy`.
fn names(
    strategy: NameStrategy,
    index: String,
    uuid: Option<&str>,
    what: &str,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    match (strategy, uuid) {
        (NameStrategy::Index, _) => vec![index],
        (NameStrategy::Uuid, Some(u)) => vec![u.to_owned()],
        (NameStrategy::Both, Some(u)) => vec![index, u.to_owned()],
        (_, None) => {
            warnings.push(format!("{what} has no UUID; named by index ({index})"));
            vec![index]
        }
    }
}

/// A device with `edits` under each name `opts.name_strategy` gives it.
fn named(
    opts: &GenerateOptions,
    index: String,
    uuid: Option<&str>,
    what: &str,
    edits: &ContainerEdits,
    warnings: &mut Vec<String>,
) -> Vec<Device> {
    names(opts.name_strategy, index, uuid, what, warnings)
        .into_iter()
        .map(|name| Device {
            name,
            container_edits: edits.clone(),
            ..Default::default()
        })
        .collect()
}

/// The spec for one vendor's inventory. Warnings (UUID fallbacks) are appended.
pub fn spec_for(
    inv: &VendorInventory,
    opts: &GenerateOptions,
    warnings: &mut Vec<String>,
) -> Result<Spec, GenerateError> {
    let hook_path = opts.hook_path.as_path();
    let mut devices = Vec::new();
    let mut all_nodes = Vec::new();
    let mut all_links: Vec<Symlink> = Vec::new();
    for gpu in &inv.gpus {
        let mut edits = ContainerEdits::default();
        push_unique_nodes(&mut edits.device_nodes, &gpu.nodes);
        edits.hooks.extend(symlink_hook(hook_path, &gpu.symlinks));
        push_unique_nodes(&mut all_nodes, &gpu.nodes);
        all_links.extend(gpu.symlinks.iter().cloned());
        let what = format!("{} GPU {}", inv.vendor, gpu.index);
        let index = gpu.index.to_string();
        devices.extend(named(
            opts,
            index,
            gpu.uuid.as_deref(),
            &what,
            &edits,
            warnings,
        ));
        for mig in &gpu.migs {
            let mut edits = ContainerEdits::default();
            push_unique_nodes(&mut edits.device_nodes, &mig.nodes);
            push_unique_nodes(&mut all_nodes, &mig.nodes);
            let index = format!("{}:{}", gpu.index, mig.index);
            let what = format!("{} MIG device {index}", inv.vendor);
            devices.extend(named(
                opts,
                index,
                mig.uuid.as_deref(),
                &what,
                &edits,
                warnings,
            ));
        }
    }
    // WSL2: every GPU is behind /dev/dxg, so there is one device, `all` (as nvidia-ctk's
    // wsl mode has it).
    let wsl = inv.method == discover::Method::Wsl;
    if wsl {
        push_unique_nodes(&mut all_nodes, &inv.shared.device_nodes);
    }
    if devices.is_empty() && !wsl {
        return Err(GenerateError::NoDevices {
            vendor: inv.vendor,
            kind: inv.vendor.kind(),
        });
    }
    let mut all = ContainerEdits {
        device_nodes: all_nodes,
        ..Default::default()
    };
    all.hooks.extend(symlink_hook(hook_path, &all_links));
    devices.push(Device {
        name: "all".to_owned(),
        container_edits: all,
        ..Default::default()
    });

    let sh = &inv.shared;
    let mut edits = ContainerEdits::default();
    if inv.vendor == Vendor::Nvidia {
        // As the toolkit does: a container that gets its GPUs through CDI must not have the
        // legacy NVIDIA hook inject them a second time.
        edits.env.push("NVIDIA_VISIBLE_DEVICES=void".to_owned());
    }
    if !wsl {
        push_unique_nodes(&mut edits.device_nodes, &sh.device_nodes);
    }
    edits.hooks.extend(symlink_hook(hook_path, &sh.symlinks));
    let libraries32: &[HostFile] = if opts.compat32 { &sh.libraries32 } else { &[] };
    let all_libraries: Vec<HostFile> = sh.libraries.iter().chain(libraries32).cloned().collect();
    if !all_libraries.is_empty() {
        let dirs = unique_dirs(&all_libraries);
        edits.hooks.push(hook(
            hook_path,
            "update-ldcache",
            "--folder",
            dirs.iter().map(|d| s(d)),
        ));
    }
    let plain = all_libraries
        .iter()
        .chain(&sh.display)
        .chain(&sh.binaries)
        .chain(&sh.firmware)
        .chain(&sh.configs);
    edits.mounts.extend(plain.map(|f| mount(f, &[])));
    edits
        .mounts
        .extend(sh.ipc.iter().map(|f| mount(f, &["noexec"])));

    let mut spec = Spec {
        cdi_version: String::new(),
        kind: inv.vendor.kind().to_owned(),
        devices,
        container_edits: edits,
        ..Default::default()
    };
    spec.cdi_version = version::minimum_required_version(&spec).as_str().to_owned();
    Ok(spec)
}

/// Specs for every vendor in `inventory` that has at least one device; vendors without
/// one become warnings.
pub fn specs_for(
    inventory: &discover::Inventory,
    opts: &GenerateOptions,
    warnings: &mut Vec<String>,
) -> Vec<Spec> {
    let mut specs = Vec::new();
    for inv in &inventory.found {
        match spec_for(inv, opts, warnings) {
            Ok(s) => specs.push(s),
            Err(e) => warnings.push(e.to_string()),
        }
    }
    specs
}

/// Encode a spec (YAML, or pretty JSON with a trailing newline).
pub fn render(spec: &Spec, format: spec::Format, target: &Path) -> Result<String, GenerateError> {
    let mut text = spec.to_string(format, target)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// Replace `path` atomically: a temp file in the same directory, fsync, rename. The
/// directory must exist; on any failure the temp file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), GenerateError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(GenerateError::NoOutputDir {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }
    nvbind_atomic::write_atomic(path, data, 0o644).map_err(|source| GenerateError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Several specs as one text: YAML documents separated by `---`; for JSON, one compact
/// object per line (JSON Lines) when there is more than one spec.
pub fn render_all(specs: &[Spec], format: spec::Format) -> Result<String, GenerateError> {
    let target = Path::new("<stdout>");
    if specs.len() == 1 {
        return render(&specs[0], format, target);
    }
    let mut out = String::new();
    for spec in specs {
        match format {
            spec::Format::Yaml => {
                out.push_str("---\n");
                out.push_str(&render(spec, format, target)?);
            }
            spec::Format::Json => {
                let line =
                    serde_json::to_string(spec).map_err(|source| spec::SpecError::EncodeJson {
                        path: target.to_path_buf(),
                        source,
                    })?;
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}
