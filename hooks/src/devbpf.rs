//! Device rules on cgroup v2: an eBPF program (`BPF_PROG_TYPE_CGROUP_DEVICE`).
//!
//! runc and crun enforce a container's device rules on cgroup v2 with one program attached to
//! its cgroup. A hook cannot edit that program, and attaching a second one does not help (all
//! programs of a cgroup must allow an access). So the hook reads the runtime's program back
//! from the kernel (its translated instructions), loads a program made of a prefix that allows
//! the new devices followed by the runtime's program unchanged, and swaps it in for the
//! runtime's (`BPF_F_REPLACE`, atomic). The runtime's rules stay in force exactly as they were;
//! nothing needs to know them, and nothing is left behind (no pinned objects). A tail call
//! into the old program would be simpler but cannot outlive the hook: the kernel empties a
//! program array when its last user-space reference goes.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcgroups::v2::devices::bpf::{self, BPF_F_ALLOW_MULTI};
use libcgroups::v2::devices::program::Insn;
use nix::errno::Errno;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

// bpf_cgroup_dev_ctx: access_type = (access << 16) | type.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("cannot open cgroup {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bpf({op}) on cgroup {path}")]
    Bpf {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cannot extend the device program of cgroup {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: bpf::BpfError,
    },
    #[error("cgroup {path} has {count} device programs attached; only one (the runtime's) can be extended")]
    Programs { path: PathBuf, count: u32 },
    #[error("the device program on cgroup {path} uses calls or maps (opcode {code:#04x}); it cannot be extended")]
    Unsupported { path: PathBuf, code: u8 },
}

// The instructions and bpf(2) are libcgroups' (the runtime's eBPF device filter): one
// encoding, one set of syscalls for both binaries.
fn ldxw(dst: u8, src: u8, off: i16) -> Insn {
    Insn::ldx_w(dst, src, off)
}
fn and_k(dst: u8, imm: i32) -> Insn {
    Insn::and64_imm(dst, imm)
}
fn rsh_k(dst: u8, imm: i32) -> Insn {
    Insn::rsh64_imm(dst, imm)
}
fn jne_k(dst: u8, imm: i32, off: i16) -> Insn {
    Insn::jne_imm(dst, imm, off)
}
fn mov_k(dst: u8, imm: i32) -> Insn {
    Insn::mov64_imm(dst, imm)
}
fn mov_x(dst: u8, src: u8) -> Insn {
    Insn::mov64_reg(dst, src)
}
fn exit() -> Insn {
    Insn::exit()
}

/// A rule in BPF terms: (type, major, minor, access bits); None matches any.
type BpfRule = (Option<i32>, Option<i64>, Option<i64>, i32);

/// An allow rule in BPF terms; None for a deny rule (this program only adds permissions)
/// and for fifo rules (no device).
fn bpf_rule(r: &LinuxDeviceCgroup) -> Option<BpfRule> {
    if !r.allow() {
        return None;
    }
    let t = match r.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::B => Some(DEV_BLOCK),
        LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
        LinuxDeviceType::A => None,
        LinuxDeviceType::P => return None,
    };
    let access = r.access().clone().unwrap_or_else(|| "rwm".into());
    let mut acc = 0;
    for c in access.chars() {
        acc |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        };
    }
    Some((t, r.major(), r.minor(), acc))
}

/// The program: allow what `rules` allow, else run `rest` (the runtime's program, entered
/// with r1 = ctx as at the start) or, with `rest` None, deny.
pub fn program(rules: &[LinuxDeviceCgroup], rest: Option<&[Insn]>) -> Vec<Insn> {
    // ctx: struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
    // access_type = (access << 16) | type.
    let mut p = vec![mov_x(6, 1)];
    for (t, major, minor, acc) in rules.iter().filter_map(bpf_rule) {
        let mut block: Vec<Insn> = Vec::new();
        // Each jne jumps to the end of the block: its offset is filled in below.
        let mut jumps = Vec::new();
        if let Some(t) = t {
            block.push(ldxw(2, 6, 0));
            block.push(and_k(2, 0xffff));
            jumps.push(block.len());
            block.push(jne_k(2, t, 0));
        }
        if let Some(m) = major.filter(|m| *m >= 0) {
            block.push(ldxw(3, 6, 4));
            jumps.push(block.len());
            block.push(jne_k(3, m as i32, 0));
        }
        if let Some(m) = minor.filter(|m| *m >= 0) {
            block.push(ldxw(4, 6, 8));
            jumps.push(block.len());
            block.push(jne_k(4, m as i32, 0));
        }
        // Requested access must be within the allowed bits.
        block.push(ldxw(5, 6, 0));
        block.push(rsh_k(5, 16));
        block.push(and_k(5, !acc & 0xffff));
        jumps.push(block.len());
        block.push(jne_k(5, 0, 0));
        block.push(mov_k(0, 1));
        block.push(exit());
        let len = block.len();
        for j in jumps {
            block[j].off = (len - j - 1) as i16;
        }
        p.extend(block);
    }
    if let Some(rest) = rest {
        p.push(mov_x(1, 6));
        p.extend_from_slice(rest);
        return p;
    }
    p.push(mov_k(0, 0));
    p.push(exit());
    p
}

pub fn open_cgroup(path: &Path) -> Result<OwnedFd, BpfError> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| BpfError::Cgroup {
            path: path.to_path_buf(),
            source,
        })
}

/// Adds `rules` to the device program of cgroup v2 directory `dir`. Without a program there
/// the cgroup itself filters nothing, and neither does this.
pub fn allow(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<bool, BpfError> {
    let e = |op: &'static str| {
        move |source| BpfError::Bpf {
            op,
            path: dir.to_path_buf(),
            source,
        }
    };
    let cgroup = open_cgroup(dir)?;
    let (ids, flags) = bpf::query(cgroup.as_fd()).map_err(e("PROG_QUERY"))?;
    let old = match ids.as_slice() {
        [] => return Ok(false),
        [id] => bpf::prog_by_id(*id).map_err(e("PROG_GET_FD_BY_ID"))?,
        _ => {
            return Err(BpfError::Programs {
                path: dir.to_path_buf(),
                count: ids.len() as u32,
            })
        }
    };
    let rest = bpf::instructions(old.as_fd()).map_err(e("OBJ_GET_INFO_BY_FD"))?;
    // Calls and 64-bit loads (map references) do not survive being read back and reloaded.
    if let Some(i) = rest.iter().find(|i| i.code == 0x85 || i.code == 0x18) {
        return Err(BpfError::Unsupported {
            path: dir.to_path_buf(),
            code: i.code,
        });
    }
    if rest.is_empty() {
        return Err(BpfError::Bpf {
            op: "OBJ_GET_INFO_BY_FD (no instructions visible)",
            path: dir.to_path_buf(),
            source: Errno::EPERM,
        });
    }
    let prog =
        bpf::load(c"GPL", &program(rules, Some(&rest))).map_err(|source| BpfError::Load {
            path: dir.to_path_buf(),
            source,
        })?;
    if flags & BPF_F_ALLOW_MULTI != 0 {
        bpf::attach(
            cgroup.as_fd(),
            prog.as_fd(),
            BPF_F_ALLOW_MULTI,
            Some(old.as_fd()),
        )
        .map_err(e("PROG_ATTACH"))?;
    } else {
        // Attached without flags (override mode): a new attach replaces it.
        bpf::attach(cgroup.as_fd(), prog.as_fd(), flags, None).map_err(e("PROG_ATTACH"))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;
    use std::process::Command;

    fn rule(t: LinuxDeviceType, major: i64, minor: Option<i64>, acc: &str) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(t)
            .major(major)
            .access(acc);
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    #[test]
    fn program_shape() {
        let rest = [mov_k(0, 7), exit()];
        let p = program(&[rule(LinuxDeviceType::C, 195, Some(0), "rw")], Some(&rest));
        // mov, rule block (2+1 type, 2 major, 2 minor, 4 access, 2 allow), r1 = ctx, rest.
        assert_eq!(p.len(), 1 + 13 + 1 + 2);
        // The type jump skips to the end of its block.
        assert_eq!(p[3].code, 0x55);
        assert_eq!(p[3].off, 13 - 2 - 1);
        assert_eq!(p[14], mov_x(1, 6));
        assert_eq!(p[15], mov_k(0, 7));
        // Without a rest: deny.
        let p = program(&[], None);
        assert_eq!(&p[1..], &[mov_k(0, 0), exit()]);
    }

    fn open_in(cg: &Path, dev: &Path) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec cat {} 2>&1",
                cg.display(),
                dev.display()
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// On this machine's unified hierarchy (hybrid: no controllers, but device programs still
    /// apply): a runtime-like program allows c 1:3 only; after [`allow`] the fake GPU node
    /// opens (ENXIO from the absent driver), /dev/null still does and /dev/zero is still
    /// refused (the runtime's program decides).
    #[test]
    fn extends_the_runtime_program() {
        let unified = Path::new("/sys/fs/cgroup/unified");
        let base = if unified.join("cgroup.procs").exists() {
            unified.to_path_buf()
        } else {
            PathBuf::from("/sys/fs/cgroup")
        };
        if !nix::unistd::geteuid().is_root() || !base.join("cgroup.procs").exists() {
            eprintln!("SKIP: needs root and a cgroup2 mount");
            return;
        }
        let cg = base.join(format!("nvbind-hook-devbpf-{}", std::process::id()));
        std::fs::create_dir(&cg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("nvidia0");
        nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(195, 0),
        )
        .unwrap();
        let fd = open_cgroup(&cg).unwrap();
        let runtime = bpf::load(
            c"GPL",
            &program(&[rule(LinuxDeviceType::C, 1, Some(3), "rwm")], None),
        )
        .unwrap();
        bpf::attach(fd.as_fd(), runtime.as_fd(), BPF_F_ALLOW_MULTI, None).unwrap();
        let before = open_in(&cg, &node);
        let added = allow(&cg, &[rule(LinuxDeviceType::C, 195, None, "rw")]);
        let after = open_in(&cg, &node);
        let null = open_in(&cg, Path::new("/dev/null"));
        let zero = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && head -c1 /dev/zero >/dev/null 2>&1 && echo zero-ok || echo zero-denied",
                cg.display()
            ))
            .output()
            .unwrap();
        let (ids, _) = bpf::query(fd.as_fd()).unwrap();
        let _ = std::fs::remove_dir(&cg);
        assert!(before.contains("Operation not permitted"), "{before}");
        assert!(added.unwrap());
        assert!(after.contains("No such device or address"), "{after}");
        assert!(
            !null.contains("denied") && !null.contains("not permitted"),
            "{null}"
        );
        assert!(String::from_utf8_lossy(&zero.stdout).contains("zero-denied"));
        assert_eq!(
            ids.len(),
            1,
            "the runtime's program was replaced, not joined"
        );
    }
}
