//! CRIU: finding a binary that works on this kernel, and talking to it over its RPC protocol
//! (`criu swrk`, the protobuf messages of the `rust-criu` crate that libcontainer also uses).
//!
//! `swrk` is the transport, `dump` and `restore` are the two operations runc exposes as
//! `checkpoint` and `restore`, with runc's choices for external mounts, namespaces, cgroups
//! and inherited descriptors.

pub mod dump;
pub mod error;
pub mod restore;
pub mod swrk;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use rust_criu::rust_criu_protobuf::rpc;

pub use self::error::CriuError;

/// How CRIU treats the container's cgroups (`--manage-cgroups-mode`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupsMode {
    Soft,
    Full,
    Strict,
    Ignore,
}

impl CgroupsMode {
    pub fn to_criu(self) -> rpc::Criu_cg_mode {
        match self {
            Self::Soft => rpc::Criu_cg_mode::SOFT,
            Self::Full => rpc::Criu_cg_mode::FULL,
            Self::Strict => rpc::Criu_cg_mode::STRICT,
            Self::Ignore => rpc::Criu_cg_mode::IGNORE,
        }
    }
}

// The CRIU flags `checkpoint` and `restore` share, with runc's names; what is allowed at
// dump time must be allowed again at restore time.
// (Not a doc comment: clap makes a flattened struct's doc comment the about of the verb it is
// flattened into, after the verb's own since the verbs are deferred; src/cli.rs.)
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct CriuFlags {
    /// Checkpoint / restore established TCP connections
    #[arg(long)]
    pub tcp_established: bool,
    /// Allow external unix sockets
    #[arg(long)]
    pub ext_unix_sk: bool,
    /// Allow shell jobs (a controlling terminal from outside)
    #[arg(long)]
    pub shell_job: bool,
    /// Checkpoint / restore file locks
    #[arg(long)]
    pub file_locks: bool,
    /// How CRIU handles cgroups
    #[arg(long, value_enum, value_name = "MODE")]
    pub manage_cgroups_mode: Option<CgroupsMode>,
}

impl CriuFlags {
    pub fn apply(&self, o: &mut rpc::Criu_opts) {
        if let Some(mode) = self.manage_cgroups_mode {
            o.set_manage_cgroups_mode(mode.to_criu());
        }
        o.set_tcp_established(self.tcp_established);
        o.set_ext_unix_sk(self.ext_unix_sk);
        o.set_shell_job(self.shell_job);
        o.set_file_locks(self.file_locks);
    }
}

/// The annotation naming a container's own CRIU configuration file (runc's).
pub const CONFIG_ANNOTATION: &str = "org.criu.config";
/// The configuration file CRIU is told to read when the annotation is absent: runc's, so
/// that a host set up for runc's checkpoints (CRIU reads its options from there) behaves
/// the same under nvbind.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/criu/runc.conf";

/// The configuration file CRIU reads for this container's dump and restore (runc's
/// handleCriuConfigurationFile): the `org.criu.config` annotation's path, none when it is
/// empty, `DEFAULT_CONFIG_FILE` when it is absent. CRIU ignores a file that does not exist,
/// and what the file says overrides the request's options (its log-file, for one).
pub fn config_file(spec: &oci_spec::runtime::Spec) -> Option<String> {
    match spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(CONFIG_ANNOTATION))
    {
        Some(path) if path.is_empty() => None,
        Some(path) => Some(path.clone()),
        None => Some(DEFAULT_CONFIG_FILE.to_string()),
    }
}

/// Name of the file, in the image directory, that records the init's stdio at dump time
/// (the same name and format runc and youki use, so images are interchangeable).
pub const DESCRIPTORS_JSON: &str = "descriptors.json";

/// A CRIU binary that was found and whose version was checked.
#[derive(Debug, Clone)]
pub struct Criu {
    pub path: PathBuf,
    /// MAJOR*10000 + MINOR*100 + SUBLEVEL, as CRIU's VERSION RPC reports it.
    pub version: u32,
}

/// CRIU 3.15 is what crun and youki require for their RPC use.
const MIN_VERSION: u32 = 31500;
/// Kernels that map the vDSO data page as `[vvar_vclock]` (6.x) need CRIU 4.1 to dump at all.
const MIN_VERSION_VVAR_VCLOCK: u32 = 40100;

impl Criu {
    /// Finds criu (`--criu`, then `$NVBIND_CRIU`, then PATH) and checks that it is new enough
    /// for this kernel. Nothing is changed on the host.
    pub fn find(explicit: Option<&Path>) -> Result<Self, CriuError> {
        Self::find_cached(explicit, None)
    }

    /// As `find`, remembering the version in `cache_dir` (the state root) for a binary of the
    /// same path, size and modification time: asking CRIU costs a process start (tens of ms
    /// through the setup-criu wrapper) on every checkpoint and restore otherwise.
    pub fn find_cached(
        explicit: Option<&Path>,
        cache_dir: Option<&Path>,
    ) -> Result<Self, CriuError> {
        let path = locate(
            explicit,
            std::env::var_os("NVBIND_CRIU"),
            std::env::var_os("PATH"),
        )?;
        let key = binary_key(&path);
        let cache = cache_dir.map(|d| d.join(".criu-version"));
        let cached = cache
            .as_ref()
            .and_then(|c| fs::read_to_string(c).ok())
            .and_then(|text| {
                let (k, v) = text.trim().rsplit_once(' ')?;
                (k == key).then(|| v.parse::<u32>().ok()).flatten()
            });
        let version = match cached {
            Some(v) => v,
            None => {
                let v = swrk::version(&path)?;
                if let Some(c) = &cache {
                    let _ =
                        nvbind_atomic::write_atomic(c, format!("{key} {v}\n").as_bytes(), 0o600);
                }
                v
            }
        };
        let (need, why) =
            required_version(&fs::read_to_string("/proc/self/maps").unwrap_or_default());
        if version < need {
            return Err(CriuError::TooOld {
                path,
                found: version_string(version),
                need: version_string(need),
                why,
            });
        }
        tracing::debug!(criu = %path.display(), version = %version_string(version), "using criu");
        Ok(Self { path, version })
    }
}

/// Identifies a CRIU binary and, for the setup-criu wrapper, the binary it runs.
fn binary_key(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let stamp = |p: &Path| {
        fs::metadata(p)
            .map(|m| format!("{}:{}.{}", m.size(), m.mtime(), m.mtime_nsec()))
            .unwrap_or_default()
    };
    let real = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut key = format!("{}|{}", real.display(), stamp(&real));
    // The wrapper names the real binary on its exec line; a reinstall changes that binary.
    let mut head = Vec::new();
    if let Ok(f) = fs::File::open(&real) {
        use std::io::Read;
        let _ = f.take(4096).read_to_end(&mut head);
    }
    if head.starts_with(b"#!") {
        let text = String::from_utf8_lossy(&head);
        if let Some(target) = text.split_whitespace().find(|w| w.ends_with("/sbin/criu")) {
            key.push_str(&format!("|{target}|{}", stamp(Path::new(target))));
        }
    }
    key.replace(' ', "_")
}

fn locate(
    explicit: Option<&Path>,
    env: Option<OsString>,
    path_var: Option<OsString>,
) -> Result<PathBuf, CriuError> {
    let chosen = explicit
        .map(Path::to_path_buf)
        .or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from));
    if let Some(p) = chosen {
        return if is_executable(&p) {
            Ok(p)
        } else if p.exists() {
            Err(CriuError::NotExecutable { path: p })
        } else {
            Err(CriuError::NotFound)
        };
    }
    let path_var = path_var
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path_var)
        .map(|d| d.join("criu"))
        .find(|p| is_executable(p))
        .ok_or(CriuError::NotFound)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn required_version(self_maps: &str) -> (u32, &'static str) {
    if self_maps.contains("[vvar_vclock]") {
        (
            MIN_VERSION_VVAR_VCLOCK,
            "on this kernel, whose vDSO has a vvar_vclock mapping",
        )
    } else {
        (MIN_VERSION, "for checkpoint/restore over RPC")
    }
}

pub fn version_string(v: u32) -> String {
    format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_is_the_annotations_or_runcs() {
        use oci_spec::runtime::SpecBuilder;
        let with = |a: Option<&str>| {
            let mut b = SpecBuilder::default();
            if let Some(v) = a {
                let a: std::collections::HashMap<String, String> =
                    [(CONFIG_ANNOTATION.to_string(), v.to_string())].into();
                b = b.annotations(a);
            }
            config_file(&b.build().unwrap())
        };
        assert_eq!(with(Some("/tmp/c.conf")).as_deref(), Some("/tmp/c.conf"));
        assert_eq!(with(Some("")), None);
        assert_eq!(with(None).as_deref(), Some("/etc/criu/runc.conf"));
    }

    #[test]
    fn explicit_path_wins_and_missing_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate(Some(&dir.path().join("nope")), None, None).unwrap_err();
        assert!(matches!(err, CriuError::NotFound), "{err}");
        assert!(err.to_string().contains("scripts/setup-criu"));
        let f = dir.path().join("criu");
        fs::write(&f, "").unwrap();
        let err = locate(Some(&f), None, None).unwrap_err();
        assert!(matches!(err, CriuError::NotExecutable { .. }), "{err}");
    }

    #[test]
    fn path_search_finds_an_executable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("criu");
        fs::write(&f, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
        let found = locate(None, None, Some(dir.path().as_os_str().to_owned())).unwrap();
        assert_eq!(found, f);
        let empty = tempfile::tempdir().unwrap();
        assert!(locate(None, None, Some(empty.path().as_os_str().to_owned())).is_err());
    }

    #[test]
    fn vvar_vclock_kernels_need_criu_4_1() {
        let maps = "7ffc0000-7ffc4000 r--p 00000000 00:00 0  [vvar_vclock]\n";
        assert_eq!(required_version(maps).0, 40100);
        assert_eq!(required_version("[vdso]").0, 31500);
        assert_eq!(version_string(31701), "3.17.1");
        let e = CriuError::TooOld {
            path: "/usr/sbin/criu".into(),
            found: version_string(31701),
            need: version_string(40100),
            why: "on this kernel",
        };
        assert_eq!(
            e.to_string(),
            "criu 3.17.1 at /usr/sbin/criu is too old (need >= 4.1.0 on this kernel); run \
             scripts/setup-criu"
        );
    }

    /// A stand-in `criu swrk` (python3) that answers VERSION with 3.17.1, as Debian 12's does.
    #[test]
    fn version_comes_over_rpc_and_3_17_is_refused_where_4_1_is_needed() {
        use protobuf::Message;
        use std::os::unix::fs::PermissionsExt;
        if std::process::Command::new("python3")
            .arg("-c")
            .arg("1")
            .status()
            .is_err()
        {
            eprintln!("skipping: python3 is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut resp = rpc::Criu_resp::new();
        resp.set_type(rpc::Criu_req_type::VERSION);
        resp.set_success(true);
        let v = resp.version.mut_or_insert_default();
        v.set_major_number(3);
        v.set_minor_number(17);
        v.set_sublevel(1);
        let answer = dir.path().join("answer");
        fs::write(&answer, resp.write_to_bytes().unwrap()).unwrap();
        let fake = dir.path().join("criu");
        fs::write(
            &fake,
            format!(
                "#!/usr/bin/env python3\nimport socket, sys\n\
                 s = socket.socket(fileno=int(sys.argv[2]))\ns.recv(65536)\n\
                 s.send(open('{}', 'rb').read())\n",
                answer.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(swrk::version(&fake).unwrap(), 31701);
        let maps = fs::read_to_string("/proc/self/maps").unwrap();
        match Criu::find(Some(&fake)) {
            Err(e @ CriuError::TooOld { .. }) => {
                assert!(maps.contains("[vvar_vclock]"));
                assert!(
                    e.to_string().contains("3.17.1") && e.to_string().contains("need >= 4.1.0")
                );
            }
            Ok(c) => {
                assert!(!maps.contains("[vvar_vclock]"));
                assert_eq!(c.version, 31701);
            }
            Err(e) => panic!("{e}"),
        }
    }
}
