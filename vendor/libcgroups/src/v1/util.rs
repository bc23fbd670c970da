use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pathrs::flags::OpenFlags;
use pathrs::procfs::{ProcfsBase, ProcfsHandle};
use procfs::ProcError;

use super::ControllerType;
use super::controller_type::CONTROLLERS;
use crate::common;

#[derive(thiserror::Error, Debug)]
pub enum V1MountPointError {
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed to get mountinfo: {0}")]
    MountInfo(ProcError),
    #[error("could not find mountpoint for {subsystem}")]
    NotFound { subsystem: ControllerType },
    #[error(transparent)]
    Pathrs(#[from] pathrs::error::Error),
    // nvbind: a line `CgroupMount::from_mountinfo_line` cannot read (procfs's MountInfo
    // refused it with MountInfo above).
    #[error("malformed line in mountinfo: {0:?}")]
    MalformedMountInfo(String),
}

/// nvbind: a cgroup v1 mount (a line of type `cgroup` in mountinfo), as much of it as the
/// lookups here use. They took procfs's `MountInfo`, which parses every field of every line
/// into maps (about 6,100 instructions a line), for two fields of the cgroup lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The mount point as mountinfo writes it: octal escapes (`\040` for a space) are kept, as
    /// procfs's `MountInfo` keeps them.
    pub mount_point: PathBuf,
    /// The value of its last `name` super option (`systemd` for a hierarchy mounted with
    /// `-o none,name=systemd`); None without one or with a bare `name`.
    pub name: Option<String>,
}

impl CgroupMount {
    /// The cgroup v1 mount a mountinfo line describes; None for a mount of another type. The
    /// fields are taken by position as procfs's `MountInfo::from_line` takes them (six, the
    /// optional fields up to `-`, the type, the source, the super options), and a line that
    /// lacks one is refused as it refuses it; unlike it, the other fields of a mount of another
    /// type are not checked (the kernel writes them).
    pub fn from_mountinfo_line(line: &str) -> Result<Option<Self>, V1MountPointError> {
        let malformed = || V1MountPointError::MalformedMountInfo(line.to_owned());
        // Single spaces, not split_whitespace: a field may be empty (procfs splits so too).
        // Bytes, not str::split: a byte loop is about a third of the instructions of a
        // char searcher per field (fields are a few bytes long); the fields are cut at ASCII
        // bytes, so each is whole UTF-8.
        let mut fields = line.as_bytes().split(|&b| b == b' ');
        let mount_point = fields.nth(4).ok_or_else(malformed)?;
        let _mount_options = fields.next().ok_or_else(malformed)?;
        // the optional fields (shared:N, master:N, ...), any number of them, end at "-"
        loop {
            if fields.next().ok_or_else(malformed)? == b"-" {
                break;
            }
        }
        if fields.next().ok_or_else(malformed)? != b"cgroup" {
            return Ok(None);
        }
        let _source = fields.next().ok_or_else(malformed)?;
        let super_options = fields.next().ok_or_else(malformed)?;
        // procfs keeps the last value of a repeated option; "name" without "=" has none
        let mut name = None;
        for option in super_options.split(|&b| b == b',') {
            match option.iter().position(|&b| b == b'=') {
                Some(eq) if &option[..eq] == b"name" => name = Some(&option[eq + 1..]),
                None if option == b"name" => name = None,
                _ => {}
            }
        }
        Ok(Some(CgroupMount {
            mount_point: PathBuf::from(OsStr::from_bytes(mount_point)),
            // never lossy: whole UTF-8, as said above
            name: name.map(|n| String::from_utf8_lossy(n).into_owned()),
        }))
    }
}

/// nvbind: the cgroup v1 mounts of a mountinfo file's text, in its order.
fn parse_cgroup_mounts(mountinfo: &str) -> Result<Vec<CgroupMount>, V1MountPointError> {
    mountinfo
        .lines()
        .filter_map(|line| CgroupMount::from_mountinfo_line(line).transpose())
        .collect()
}

/// nvbind: reads `base`'s mountinfo through `procfs`, whole (one String, not one per line), in
/// reads of 8 KiB as the BufReader did: `read_to_string` of a File asks for its size first
/// (statx and lseek; procfs says 0) and then reads in steps growing from 32 bytes, 11 syscalls
/// for the 2.3 KiB of the container init's mountinfo where these 2 reads do.
fn read_mountinfo(procfs: &ProcfsHandle, base: ProcfsBase) -> Result<String, V1MountPointError> {
    let mut file = procfs.open(
        base,
        "mountinfo",
        OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
    )?;
    let mut text = Vec::new();
    let mut chunk = [0; 8192];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err.into()),
        }
    }
    String::from_utf8(text)
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err).into())
}

/// List all cgroup v1 subsystem mount points on the system. This can include unsupported
/// subsystems, comounted controllers and named hierarchies.
///
/// nvbind: read anew at each call (not the remembered `cgroup_mounts`): its callers mount
/// cgroups themselves (the container's init, in the rootfs) or run once (checkpoint).
pub fn list_subsystem_mount_points() -> Result<Vec<PathBuf>, V1MountPointError> {
    // nvbind: the process's one checked procfs handle (procfs_handle)
    let procfs = crate::procfs_handle::get()?;
    let mountinfo = read_mountinfo(&procfs, ProcfsBase::ProcSelf)?;
    Ok(parse_cgroup_mounts(&mountinfo)?
        .into_iter()
        .map(|m| m.mount_point)
        .collect())
}

/// nvbind: the cgroup v1 mounts (type `cgroup`) of the calling thread's mount namespace, in
/// mountinfo's order, read from /proc/thread-self/mountinfo once per thread and mount
/// namespace. A `run` looked them up four times in the runtime (three cgroup managers and the
/// freezer's mount point) and once more in the intermediate process, each a read of the whole
/// file (a Kubernetes node has hundreds of lines). The answer is remembered with the identity
/// of the namespace it was read in, as `common::get_cgroup_setup` remembers its own: a thread
/// in another mount namespace (the init after it unshared or joined one) reads again; what is
/// not seen is a cgroup hierarchy mounted or unmounted inside the same namespace after the
/// first lookup (the runtime mounts none; the init mounts the container's in a namespace of
/// its own, and lists them with `list_subsystem_mount_points`). The thread's own mountinfo,
/// not the process's (/proc/self is the first thread's): the namespace its paths resolve in,
/// and the one the key names.
pub fn cgroup_mounts() -> Result<Arc<[CgroupMount]>, V1MountPointError> {
    // nvbind: the process's one checked procfs handle (procfs_handle), when not remembered
    cached_cgroup_mounts(common::mount_ns_key(), || {
        let procfs = crate::procfs_handle::get()?;
        read_cgroup_mounts(&procfs)
    })
}

/// nvbind: `cgroup_mounts`, read (when not remembered) through a procfs handle the caller has
/// already made for its other procfs reads: each `ProcfsHandle::new` verifies the handle
/// again, about 16 syscalls.
pub fn cgroup_mounts_in(procfs: &ProcfsHandle) -> Result<Arc<[CgroupMount]>, V1MountPointError> {
    cached_cgroup_mounts(common::mount_ns_key(), || read_cgroup_mounts(procfs))
}

fn read_cgroup_mounts(procfs: &ProcfsHandle) -> Result<Vec<CgroupMount>, V1MountPointError> {
    parse_cgroup_mounts(&read_mountinfo(procfs, ProcfsBase::ProcThreadSelf)?)
}

thread_local! {
    /// nvbind: the answer of `cgroup_mounts` and the mount namespace (dev, inode) it was read
    /// in. Per thread, as a mount namespace is, and without a lock: the intermediate and the
    /// init are clones of the runtime's thread that may be made while another thread holds a
    /// lock (they inherit this thread's answer, for the namespace they start in).
    static CGROUP_MOUNTS: RefCell<Option<((u64, u64), Arc<[CgroupMount]>)>> =
        const { RefCell::new(None) };
}

/// nvbind: `read`'s answer, remembered for this thread with the mount namespace `key`: a later
/// call with the same key gets it without reading; another key (or none: no /proc) reads
/// again. Errors are not remembered.
fn cached_cgroup_mounts(
    key: Option<(u64, u64)>,
    read: impl FnOnce() -> Result<Vec<CgroupMount>, V1MountPointError>,
) -> Result<Arc<[CgroupMount]>, V1MountPointError> {
    let Some(key) = key else {
        return read().map(Arc::from);
    };
    let remembered = CGROUP_MOUNTS.with_borrow(|slot| match slot {
        Some((k, mounts)) if *k == key => Some(Arc::clone(mounts)),
        _ => None,
    });
    if let Some(mounts) = remembered {
        return Ok(mounts);
    }
    let mounts: Arc<[CgroupMount]> = read()?.into();
    CGROUP_MOUNTS.set(Some((key, Arc::clone(&mounts))));
    Ok(mounts)
}

/// nvbind: drops this thread's remembered `cgroup_mounts`: a namespace's inode number can be
/// given to a new one once the old one is gone, which a thread only sees after it left the old
/// one by setns (`common::forget_cgroup_setup` calls this; libcontainer's setns calls it).
pub fn forget_cgroup_mounts() {
    CGROUP_MOUNTS.set(None);
}

/// nvbind: the mount point of the named cgroup v1 hierarchy `name` (a hierarchy without
/// controllers, mounted with `-o none,name=NAME`, as `name=systemd` is on hybrid and legacy
/// hosts), if this mount namespace has one.
pub fn get_named_hierarchy_mount_point(name: &str) -> Result<Option<PathBuf>, V1MountPointError> {
    Ok(named_hierarchy_mount_point_in(&cgroup_mounts()?, name))
}

/// nvbind: `get_named_hierarchy_mount_point` among mounts read by `cgroup_mounts`.
pub fn named_hierarchy_mount_point_in(mounts: &[CgroupMount], name: &str) -> Option<PathBuf> {
    mounts
        .iter()
        .find(|m| m.name.as_deref() == Some(name))
        .map(|m| m.mount_point.clone())
}

/// List the mount points of all currently supported cgroup subsystems.
pub fn list_supported_mount_points() -> Result<HashMap<ControllerType, PathBuf>, V1MountPointError>
{
    let mut mount_paths = HashMap::with_capacity(CONTROLLERS.len());
    // nvbind: mountinfo read once for all of them
    let mounts = cgroup_mounts()?;

    for controller in CONTROLLERS {
        if let Ok(mount_point) = subsystem_mount_point_in(&mounts, controller) {
            mount_paths.insert(controller.to_owned(), mount_point);
        }
    }

    Ok(mount_paths)
}

pub fn get_subsystem_mount_point(subsystem: &ControllerType) -> Result<PathBuf, V1MountPointError> {
    subsystem_mount_point_in(&cgroup_mounts()?, subsystem)
}

/// nvbind: `get_subsystem_mount_point` among mounts read by `cgroup_mounts`.
pub fn subsystem_mount_point_in(
    mounts: &[CgroupMount],
    subsystem: &ControllerType,
) -> Result<PathBuf, V1MountPointError> {
    // nvbind: the name without formatting it into a String (Display) at each lookup
    let subsystem_name: &str = subsystem.as_ref();
    // Some systems mount net_prio and net_cls in the same directory
    // other systems mount them in their own directories. This
    // should handle both cases.
    let leaves: &[&str] = match subsystem_name {
        "net_cls" => &["net_cls,net_prio", "net_prio,net_cls", "net_cls"],
        "net_prio" => &["net_cls,net_prio", "net_prio,net_cls", "net_prio"],
        "cpu" => &["cpu,cpuacct", "cpu"],
        "cpuacct" => &["cpu,cpuacct", "cpuacct"],
        _ => &[subsystem_name],
    };
    mounts
        .iter()
        // nvbind: the last component compared, which is what `Path::ends_with` compares for a
        // one-component name, without parsing paths into components at every comparison (12
        // controllers times every cgroup mount, per manager).
        .find(|m| {
            last_component(&m.mount_point).is_some_and(|leaf| leaves.iter().any(|l| leaf == *l))
        })
        .map(|m| m.mount_point.clone())
        .ok_or(V1MountPointError::NotFound {
            subsystem: *subsystem,
        })
}

/// nvbind: `path.file_name()`, from the bytes after the last `/` when they are a plain name
/// (as a mount point's always is), else from `Path` (a trailing `/` or `.`, `..`, `/`): the
/// same answer, without the ~150 instructions of `Components` per path.
fn last_component(path: &Path) -> Option<&OsStr> {
    let bytes = path.as_os_str().as_bytes();
    match bytes.rsplit(|&b| b == b'/').next() {
        Some(last) if !matches!(last, b"" | b"." | b"..") => Some(OsStr::from_bytes(last)),
        _ => path.file_name(),
    }
}

#[cfg(test)]
mod nvbind_mount_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use procfs::process::MountInfo;

    use super::*;

    /// Mountinfo lines from real hosts and odd ones written by hand.
    const LINES: &[&str] = &[
        // this CI machine (legacy v1, with a cgroup2 `unified` mount: hybrid)
        "22 27 0:21 / /proc rw,relatime - proc proc rw",
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534",
        "28 27 0:25 / /mnt/sandboxing/model_tools_env/v1/python ro,nosuid,nodev,relatime - tmpfs model_tools_unavailable ro,size=4k,mode=755",
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
        "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu",
        "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct",
        "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset",
        "37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer",
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd",
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
        "45 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw,discard",
        // a systemd hybrid host (Ubuntu 20.04)
        "25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755",
        "26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate",
        "27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd",
        "31 25 0:28 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio",
        "32 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct",
        "35 25 0:32 / /sys/fs/cgroup/misc rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,misc",
        // a pure cgroup v2 host
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot",
        // a container's view (cgroup namespace root, slave of the host's)
        "1386 1380 0:29 /docker/abc /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:18 - cgroup cgroup rw,memory",
        // a bind mount of a cgroup directory to a path with a space, every optional field
        "2001 27 0:33 /kubepods/burstable/pod1 /var/lib/kubelet/pods/x/my\\040dir/memory rw,relatime shared:7 master:3 propagate_from:2 unbindable - cgroup cgroup rw,memory",
        "2002 27 0:33 /a\\134b /srv/back\\134slash\\011tab/pids rw - cgroup cgroup rw,pids",
        // named hierarchies: the last name wins, a bare name has no value
        "50 31 0:40 / /run/cg/a rw - cgroup none rw,name=systemd,name=other",
        "51 31 0:41 / /run/cg/b rw - cgroup cgroup rw,name=systemd,name",
        "52 31 0:42 / /run/cg/c rw - cgroup cgroup rw,name=",
        "53 31 0:43 / /run/cg/d rw - cgroup cgroup rw,none,name=a=b,names=c",
        "54 31 0:44 / /run/cg/e rw - cgroup  rw,name=x",
        "55 31 0:45 / /run/cg/f rw - cgroup cgroup ",
        // fields that read like the separator, types that are not `cgroup`
        "60 27 0:50 / - rw - cgroup cgroup rw,cpu",
        "61 27 0:50 / /x - - cgroup cgroup rw,cpu",
        "62 27 0:51 - /y rw shared:2 - cgroup cgroup rw,blkio",
        "63 27 0:52 / /var/lib/lxcfs rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0",
        "64 27 0:53 / /z rw - cgroupfs cgroup rw,cpu",
        "65 27 0:54 / /w rw - Cgroup cgroup rw,cpu",
        "66 27 0:55 / /overlay rw - overlay overlay rw,lowerdir=/a:/b,upperdir=/c,workdir=/d",
        "67 27 0:56 /é /srv/ünï\\040côde/cpuset rw - cgroup cgröup rw,cpuset,name=nämé",
        // not mountinfo: each refused
        "",
        "1 2 3",
        "22 27 0:21 / /proc rw,relatime proc proc rw",
        "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup",
        "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup",
        "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime -",
    ];

    /// What the lookups used of procfs's parse: a `cgroup` line's mount point and name.
    fn as_procfs_reads(line: &str) -> Result<Option<(PathBuf, Option<String>)>, ()> {
        let m = MountInfo::from_line(line).map_err(|_| ())?;
        Ok((m.fs_type == "cgroup").then(|| {
            let name = m.super_options.get("name").cloned().flatten();
            (m.mount_point, name)
        }))
    }

    fn as_read_here(line: &str) -> Result<Option<(PathBuf, Option<String>)>, ()> {
        let m = CgroupMount::from_mountinfo_line(line).map_err(|_| ())?;
        Ok(m.map(|m| (m.mount_point, m.name)))
    }

    #[test]
    fn lines_read_as_procfs_reads_them() {
        for line in LINES {
            assert_eq!(as_read_here(line), as_procfs_reads(line), "{line:?}");
        }
    }

    #[test]
    fn this_hosts_mountinfo_reads_as_procfs_reads_it() {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for line in text.lines() {
            assert_eq!(as_read_here(line), as_procfs_reads(line), "{line:?}");
        }
    }

    /// Where they differ, by design: a mount of another type is not checked past its type.
    #[test]
    fn only_cgroup_lines_are_checked_past_their_type() {
        for line in [
            "x 27 0:21 / /proc rw - proc proc rw",
            "1 2 3 / /t rw - tmpfs",
        ] {
            assert!(MountInfo::from_line(line).is_err(), "{line:?}");
            assert!(CgroupMount::from_mountinfo_line(line).unwrap().is_none());
        }
        let err = CgroupMount::from_mountinfo_line("1 2 3").unwrap_err();
        assert_eq!(err.to_string(), r#"malformed line in mountinfo: "1 2 3""#);
    }

    /// The lookups as they were (procfs's MountInfo, `Path::ends_with`), for comparison.
    fn subsystem_as_before(mounts: &[MountInfo], subsystem: &ControllerType) -> Option<PathBuf> {
        let subsystem_name = subsystem.to_string();
        mounts
            .iter()
            .find(|m| match subsystem_name.as_str() {
                "net_cls" => ["net_cls,net_prio", "net_prio,net_cls", "net_cls"]
                    .iter()
                    .any(|s| m.mount_point.ends_with(s)),
                "net_prio" => ["net_cls,net_prio", "net_prio,net_cls", "net_prio"]
                    .iter()
                    .any(|s| m.mount_point.ends_with(s)),
                "cpu" => ["cpu,cpuacct", "cpu"]
                    .iter()
                    .any(|s| m.mount_point.ends_with(s)),
                "cpuacct" => ["cpu,cpuacct", "cpuacct"]
                    .iter()
                    .any(|s| m.mount_point.ends_with(s)),
                _ => m.mount_point.ends_with(&subsystem_name),
            })
            .map(|m| m.mount_point.clone())
    }

    fn named_as_before(mounts: &[MountInfo], name: &str) -> Option<PathBuf> {
        mounts
            .iter()
            .find(|m| m.super_options.get("name") == Some(&Some(name.to_owned())))
            .map(|m| m.mount_point.clone())
    }

    /// Every controller and named hierarchy is found where it was, on each kind of host (and on
    /// this one), with odd mount points among the mounts.
    #[test]
    fn every_hierarchy_is_found_where_it_was() {
        let odd = [
            "70 27 0:60 / / rw - cgroup cgroup rw,cpu",
            "71 27 0:60 / /a/cpu/. rw - cgroup cgroup rw,cpu",
            "72 27 0:60 / /a/cpu/.. rw - cgroup cgroup rw,cpu",
            "73 27 0:60 / /a/pids/ rw - cgroup cgroup rw,pids",
            "74 27 0:60 / /a/xnet_cls rw - cgroup cgroup rw,net_cls",
            "75 27 0:60 / /a/net_prio,net_cls rw - cgroup cgroup rw,net_cls,net_prio",
            "76 27 0:60 / relative/memory rw - cgroup cgroup rw,memory",
            "77 27 0:60 / /a/cpuacct,cpu rw - cgroup cgroup rw,cpu,cpuacct",
        ];
        let here = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let hosts: Vec<Vec<&str>> = vec![
            LINES[..11].to_vec(),
            LINES[11..17].to_vec(),
            LINES[17..18].to_vec(),
            LINES[18..35].to_vec(),
            odd.to_vec(),
            odd.iter().rev().copied().collect(),
            here.lines().collect(),
        ];
        for lines in hosts {
            let procfs: Vec<MountInfo> = lines
                .iter()
                .map(|l| MountInfo::from_line(l).unwrap())
                .filter(|m| m.fs_type == "cgroup")
                .collect();
            let text = lines.join("\n");
            let mounts = parse_cgroup_mounts(&text).unwrap();
            for c in CONTROLLERS {
                assert_eq!(
                    subsystem_mount_point_in(&mounts, c).ok(),
                    subsystem_as_before(&procfs, c),
                    "{c} in {lines:#?}"
                );
            }
            for name in ["systemd", "other", "", "a=b", "x", "c", "nämé"] {
                assert_eq!(
                    named_hierarchy_mount_point_in(&mounts, name),
                    named_as_before(&procfs, name),
                    "name={name} in {lines:#?}"
                );
            }
        }
    }

    #[test]
    fn last_component_is_file_name() {
        for p in [
            "/sys/fs/cgroup/cpu,cpuacct",
            "/",
            "",
            ".",
            "..",
            "cpu",
            "./cpu",
            "a//cpu",
            "/a/cpu/",
            "/a/cpu//",
            "/a/cpu/.",
            "/a/cpu/./",
            "/a/cpu/..",
            "/a/.../",
            "/a/..b",
            "/a/.b",
            "//",
            "/.",
            "my\\040dir/memory",
            "/ünï/cpuset",
        ] {
            assert_eq!(
                last_component(Path::new(p)),
                Path::new(p).file_name(),
                "{p:?}"
            );
        }
    }

    fn mount(point: &str) -> CgroupMount {
        CgroupMount {
            mount_point: PathBuf::from(point),
            name: None,
        }
    }

    const NS_A: (u64, u64) = (0x4, 4026531841);
    const NS_B: (u64, u64) = (0x4, 4026532999);

    /// Each test thread has its own remembered answer, so the counts are this test's alone.
    #[test]
    fn read_once_per_thread_and_mount_namespace() {
        let reads = AtomicUsize::new(0);
        let count = || reads.load(Ordering::Relaxed);
        let read = |point: &str| {
            reads.fetch_add(1, Ordering::Relaxed);
            Ok(vec![mount(point)])
        };
        let a1 = cached_cgroup_mounts(Some(NS_A), || read("/a")).unwrap();
        let a2 = cached_cgroup_mounts(Some(NS_A), || read("/stale")).unwrap();
        assert!(Arc::ptr_eq(&a1, &a2));
        assert_eq!((&*a2, count()), (&[mount("/a")][..], 1));
        // another namespace reads again, and is then remembered in place of the first
        let b1 = cached_cgroup_mounts(Some(NS_B), || read("/b")).unwrap();
        let b2 = cached_cgroup_mounts(Some(NS_B), || read("/stale")).unwrap();
        assert_eq!(
            (&*b1, &*b2, count()),
            (&[mount("/b")][..], &[mount("/b")][..], 2)
        );
        let a3 = cached_cgroup_mounts(Some(NS_A), || read("/a")).unwrap();
        assert_eq!((&*a3, count()), (&[mount("/a")][..], 3));
        // no key (no /proc): read every time
        cached_cgroup_mounts(None, || read("/n")).unwrap();
        cached_cgroup_mounts(None, || read("/n")).unwrap();
        assert_eq!(count(), 5);
        // forgotten (setns): read again in the same namespace
        forget_cgroup_mounts();
        cached_cgroup_mounts(Some(NS_A), || read("/a")).unwrap();
        assert_eq!(count(), 6);
        // another thread has its own
        std::thread::scope(|s| {
            s.spawn(|| cached_cgroup_mounts(Some(NS_A), || read("/a")).unwrap());
        });
        assert_eq!(count(), 7);
    }

    #[test]
    fn errors_are_not_remembered() {
        let failed = cached_cgroup_mounts(Some(NS_A), || {
            Err(V1MountPointError::MalformedMountInfo("x".into()))
        });
        assert!(failed.is_err());
        let read = cached_cgroup_mounts(Some(NS_A), || Ok(vec![mount("/a")])).unwrap();
        assert_eq!(&*read, &[mount("/a")][..]);
    }

    /// The real thing: a thread that unshares its mount namespace and bind-mounts a cgroup
    /// hierarchy there finds the bind mount (its own mountinfo, read again for the new
    /// namespace), and the test's thread, still in the old one, does not.
    #[test]
    fn a_thread_in_a_new_mount_namespace_reads_its_own_mounts() {
        use nix::mount::{MsFlags, mount};
        let before = cgroup_mounts().unwrap();
        assert!(Arc::ptr_eq(&before, &cgroup_mounts().unwrap()));
        // one that can be reached (a pure v2 view mounts cgroup2 over the v1 ones)
        let Some(hierarchy) = before.iter().find(|m| m.mount_point.is_dir()).cloned() else {
            eprintln!("skipped: no cgroup v1 hierarchy here (pure cgroup v2)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bound");
        std::fs::create_dir(&target).unwrap();
        let seen = std::thread::spawn({
            let target = target.clone();
            move || {
                let first = cgroup_mounts().unwrap();
                if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_err() {
                    return None; // not root
                }
                let none: Option<&str> = None;
                mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).unwrap();
                mount(
                    Some(&hierarchy.mount_point),
                    &target,
                    none,
                    MsFlags::MS_BIND,
                    none,
                )
                .unwrap();
                let after = cgroup_mounts().unwrap();
                assert!(!Arc::ptr_eq(&first, &after));
                assert!(Arc::ptr_eq(&after, &cgroup_mounts().unwrap()));
                Some(after.to_vec())
            }
        })
        .join()
        .unwrap();
        let Some(seen) = seen else {
            eprintln!("skipped: unshare(CLONE_NEWNS) refused (not root)");
            return;
        };
        let bound = CgroupMount {
            mount_point: target.clone(),
            ..hierarchy
        };
        assert!(seen.contains(&bound), "{seen:#?}");
        assert_eq!(seen.len(), before.len() + 1);
        assert!(
            !cgroup_mounts()
                .unwrap()
                .iter()
                .any(|m| m.mount_point == target)
        );
        assert!(Path::new(&target).read_dir().unwrap().next().is_none());
    }
}
