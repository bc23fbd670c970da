//! nvbind: the sub-cgroups of a container's cgroup that a process joins instead of the
//! container's own, as runc's `exec --cgroup` places it. They must exist: joining one never
//! creates it (runc fails with "no such file or directory" too), so a mistyped name leaves
//! nothing behind.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::Pid;

use crate::common::CGROUP_PROCS;

/// Sub-cgroup paths, relative to the container's cgroup and free of `..`: the key "" for every
/// hierarchy, a cgroup v1 controller's name (`memory`, `cpu`, ...) for that controller's.
pub type SubCgroupPaths = BTreeMap<String, PathBuf>;

#[derive(thiserror::Error, Debug)]
pub enum SubCgroupError {
    #[error("unknown controller {controller} for a sub-cgroup; {known}")]
    UnknownController { controller: String, known: String },
    #[error(
        "controllers {first} and {second} share one cgroup v1 hierarchy here but were given \
         different sub-cgroups; give them one (CONTROLLER,CONTROLLER:PATH)"
    )]
    SharedHierarchy { first: String, second: String },
    // runc's words ("error adding pid N to cgroups: open PATH: no such file or directory"),
    // which scripts and runc's tests match.
    #[error("adding pid {pid} to cgroups: {}: {}{}", .path.display(), go_strerror(*.errno), hint(*.errno))]
    Join {
        pid: Pid,
        path: PathBuf,
        errno: Errno,
    },
    #[error("sub-cgroups need the libcgroups feature of this host's cgroup version")]
    NotEnabled,
}

/// strerror as Go spells it (lower case), so messages read as runc's.
fn go_strerror(errno: Errno) -> String {
    let desc = errno.desc();
    let mut chars = desc.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => desc.to_string(),
    }
}

fn hint(errno: Errno) -> &'static str {
    match errno {
        Errno::ENOENT => " (the sub-cgroup does not exist; create it first)",
        _ => "",
    }
}

/// The one directory of a cgroup v2 manager (plain or systemd) for `subs`: there are no
/// per-controller hierarchies to name.
pub(crate) fn unified_dirs(
    full_path: &Path,
    subs: &SubCgroupPaths,
) -> Result<Vec<PathBuf>, SubCgroupError> {
    if let Some(controller) = subs.keys().find(|k| !k.is_empty()) {
        return Err(SubCgroupError::UnknownController {
            controller: controller.clone(),
            known: "cgroup v2 has one hierarchy for every controller: give the sub-cgroup \
                    without a CONTROLLER: prefix"
                .to_string(),
        });
    }
    Ok(vec![join_sub(full_path, subs.get(""))])
}

pub(crate) fn join_sub(base: &Path, sub: Option<&PathBuf>) -> PathBuf {
    match sub {
        Some(sub) if !sub.as_os_str().is_empty() => base.join(sub),
        _ => base.to_path_buf(),
    }
}

/// Moves `pid` into each directory, which must exist.
pub fn join(dirs: &[PathBuf], pid: Pid) -> Result<(), SubCgroupError> {
    for dir in dirs {
        let path = dir.join(CGROUP_PROCS);
        let written = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(pid.to_string().as_bytes()));
        if let Err(err) = written {
            return Err(SubCgroupError::Join {
                pid,
                path,
                errno: Errno::from_raw(err.raw_os_error().unwrap_or(0)),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_runc_s() {
        let e = SubCgroupError::Join {
            pid: Pid::from_raw(42),
            path: PathBuf::from("/sys/fs/cgroup/memory/c/nonexistent/cgroup.procs"),
            errno: Errno::ENOENT,
        };
        assert_eq!(
            e.to_string(),
            "adding pid 42 to cgroups: /sys/fs/cgroup/memory/c/nonexistent/cgroup.procs: \
             no such file or directory (the sub-cgroup does not exist; create it first)"
        );
        assert_eq!(go_strerror(Errno::EBUSY), "device or resource busy");
    }

    #[test]
    fn v2_has_no_per_controller_sub_cgroups() {
        let base = Path::new("/sys/fs/cgroup/c");
        let mut subs = SubCgroupPaths::new();
        assert_eq!(unified_dirs(base, &subs).unwrap(), vec![base.to_path_buf()]);
        subs.insert(String::new(), PathBuf::from("a/b"));
        assert_eq!(unified_dirs(base, &subs).unwrap(), vec![base.join("a/b")]);
        subs.insert("memory".into(), PathBuf::from("m"));
        let e = unified_dirs(base, &subs).unwrap_err().to_string();
        assert!(
            e.starts_with("unknown controller memory for a sub-cgroup"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_sub_cgroup_is_not_created() {
        let tmp = std::env::temp_dir().join(format!("sub-cgroups-test-{}", std::process::id()));
        fs::create_dir_all(&tmp).unwrap();
        let missing = tmp.join("missing");
        let e = join(&[missing.clone()], Pid::from_raw(1)).unwrap_err();
        assert!(
            matches!(
                e,
                SubCgroupError::Join {
                    errno: Errno::ENOENT,
                    ..
                }
            ),
            "{e}"
        );
        assert!(!missing.exists());
        fs::write(tmp.join(CGROUP_PROCS), "").unwrap();
        join(&[tmp.clone()], Pid::from_raw(7)).unwrap();
        assert_eq!(fs::read_to_string(tmp.join(CGROUP_PROCS)).unwrap(), "7");
        fs::remove_dir_all(&tmp).unwrap();
    }
}
