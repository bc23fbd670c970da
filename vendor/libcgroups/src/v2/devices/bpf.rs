// nvbind: bpf(2) is issued directly instead of through libbpf-sys, which is a C build that
// links libelf and zlib into every binary using libcgroups (and prevents a static one). Only
// six commands are needed for a BPF_PROG_TYPE_CGROUP_DEVICE program, with the plain
// `union bpf_attr` layouts of <linux/bpf.h>.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use nix::errno::Errno;

use super::program::Insn;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;

pub const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
pub const BPF_CGROUP_DEVICE: u32 = 6;
pub const BPF_F_ALLOW_OVERRIDE: u32 = 1;
pub const BPF_F_ALLOW_MULTI: u32 = 2;
pub const BPF_F_REPLACE: u32 = 4;

/// How often a BPF_PROG_LOAD interrupted by a signal (EAGAIN, from the verifier) is retried.
const LOAD_RETRIES: usize = 30;
/// The verifier log asked for when a load fails (device programs are tiny).
const LOG_SIZE: usize = 64 * 1024;

#[derive(thiserror::Error, Debug)]
pub enum BpfError {
    #[error("cannot load the device filter program: {}{}", describe_load(*.errno, .log), verifier(.log))]
    Load { errno: Errno, log: String },
    #[error("bpf({op}) on the cgroup failed: {errno}{}", describe(*.errno))]
    Cgroup { op: &'static str, errno: Errno },
}

fn describe_load(errno: Errno, log: &str) -> String {
    if !log.is_empty() {
        // The verifier ran and refused the program (EACCES, EINVAL): its log says why.
        return errno.to_string();
    }
    match errno {
        // No bpf(2) at all, or no program type CGROUP_DEVICE (then the verifier never ran,
        // so there is no log).
        Errno::ENOSYS => format!(
            "{errno}: this kernel has no bpf(2) (CONFIG_BPF_SYSCALL), so it cannot filter \
             devices on cgroup v2"
        ),
        Errno::EINVAL => format!(
            "{errno}: this kernel cannot run BPF cgroup device programs (it needs \
             CONFIG_CGROUP_BPF, Linux 4.15 or later), so it cannot filter devices on cgroup v2"
        ),
        Errno::EPERM | Errno::EACCES => format!(
            "{errno}: loading it needs CAP_SYS_ADMIN (or CAP_BPF) in the initial user namespace"
        ),
        _ => errno.to_string(),
    }
}

fn describe(errno: Errno) -> &'static str {
    match errno {
        Errno::ENOSYS | Errno::EINVAL => {
            " (this kernel cannot attach BPF programs to cgroups: it needs CONFIG_CGROUP_BPF)"
        }
        Errno::EPERM | Errno::EACCES => " (needs CAP_SYS_ADMIN in the initial user namespace)",
        _ => "",
    }
}

/// The verifier's log on one line, so that an error stays one line.
fn verifier(log: &str) -> String {
    if log.is_empty() {
        return String::new();
    }
    let flat: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!(" (verifier: {})", flat.join("; "))
}

/// `union bpf_attr`, zeroed: each command fills in the fields it uses. 128 bytes cover every
/// field read or written here, the `revision` that BPF_PROG_QUERY writes on kernels 6.17 and
/// later whatever size it is given included.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }
    fn u32(mut self, at: usize, v: u32) -> Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, at: usize, v: u64) -> Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> Result<libc::c_long, Errno> {
    // SAFETY: attr is a zeroed `union bpf_attr` of the size passed, laid out for `cmd` by the
    // callers; the pointers in it point at buffers the callers keep alive across this call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>(),
        )
    };
    Errno::result(r)
}

/// A descriptor the kernel just returned. bpf(2) takes 0 to mean "no descriptor" in some
/// fields, so a program that landed on fd 0 (stdin closed) is moved off it.
fn owned(fd: libc::c_long) -> Result<OwnedFd, Errno> {
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if fd.as_raw_fd() != 0 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor; the result is owned below.
    let dup = Errno::result(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 1) })?;
    // SAFETY: fcntl just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// Loads a BPF_PROG_TYPE_CGROUP_DEVICE program. When the kernel refuses it, the load is
/// repeated with the verifier log on, and the log is part of the error.
pub fn load(license: &CStr, insns: &[Insn]) -> Result<OwnedFd, BpfError> {
    let attr = || {
        Attr::new()
            .u32(0, BPF_PROG_TYPE_CGROUP_DEVICE)
            .u32(4, insns.len() as u32)
            .u64(8, insns.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
    };
    let first = match load_retrying(attr()) {
        Ok(fd) => {
            return owned(fd).map_err(|errno| BpfError::Load {
                errno,
                log: String::new(),
            });
        }
        Err(errno) => errno,
    };
    let mut log = vec![0u8; LOG_SIZE];
    let with_log = attr()
        .u32(24, 1)
        .u32(28, log.len() as u32)
        .u64(32, log.as_mut_ptr() as u64);
    if let Ok(fd) = load_retrying(with_log) {
        // Refused, then accepted: the first failure was transient.
        return owned(fd).map_err(|errno| BpfError::Load {
            errno,
            log: String::new(),
        });
    }
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    Err(BpfError::Load {
        errno: first,
        log: String::from_utf8_lossy(&log[..end]).trim().to_string(),
    })
}

fn load_retrying(attr: Attr) -> Result<libc::c_long, Errno> {
    let mut retries = 0;
    loop {
        let mut a = Attr(attr.0);
        match bpf(BPF_PROG_LOAD, &mut a) {
            Err(Errno::EAGAIN) if retries < LOAD_RETRIES => retries += 1,
            r => return r,
        }
    }
}

/// The device programs attached to a cgroup (their ids) and the flags they were attached with.
pub fn query(cgroup: BorrowedFd<'_>) -> Result<(Vec<u32>, u32), Errno> {
    // A cgroup holds at most 64 programs of one attach type (BPF_CGROUP_MAX_PROGS); ENOSPC
    // says how many there are, should that ever grow.
    let mut ids = vec![0u32; 64];
    loop {
        let mut a = Attr::new()
            .u32(0, cgroup.as_raw_fd() as u32)
            .u32(4, BPF_CGROUP_DEVICE)
            .u64(16, ids.as_mut_ptr() as u64)
            .u32(24, ids.len() as u32);
        let r = bpf(BPF_PROG_QUERY, &mut a);
        let count = a.get_u32(24) as usize;
        match r {
            Err(Errno::ENOSPC) if count > ids.len() => ids.resize(count, 0),
            Err(e) => return Err(e),
            Ok(_) => {
                ids.truncate(count);
                return Ok((ids, a.get_u32(12)));
            }
        }
    }
}

pub fn prog_by_id(id: u32) -> Result<OwnedFd, Errno> {
    let mut a = Attr::new().u32(0, id);
    owned(bpf(BPF_PROG_GET_FD_BY_ID, &mut a)?)
}

/// Attaches `prog` to `cgroup` with `flags`; with `replace`, atomically in place of that
/// program (BPF_F_REPLACE is added).
pub fn attach(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    flags: u32,
    replace: Option<BorrowedFd<'_>>,
) -> Result<(), Errno> {
    let mut a = Attr::new()
        .u32(0, cgroup.as_raw_fd() as u32)
        .u32(4, prog.as_raw_fd() as u32)
        .u32(8, BPF_CGROUP_DEVICE);
    let mut flags = flags;
    if let Some(old) = replace {
        flags |= BPF_F_REPLACE;
        a = a.u32(16, old.as_raw_fd() as u32);
    }
    let mut a = a.u32(12, flags);
    bpf(BPF_PROG_ATTACH, &mut a).map(drop)
}

pub fn detach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> Result<(), Errno> {
    let mut a = Attr::new()
        .u32(0, cgroup.as_raw_fd() as u32)
        .u32(4, prog.as_raw_fd() as u32)
        .u32(8, BPF_CGROUP_DEVICE);
    bpf(BPF_PROG_DETACH, &mut a).map(drop)
}

/// The instructions of a loaded program as the kernel holds them after verification
/// (`xlated_prog_insns`); empty when the caller may not see them (kernel.kptr_restrict and
/// friends, or no CAP_SYS_ADMIN).
pub fn instructions(prog: BorrowedFd<'_>) -> Result<Vec<Insn>, Errno> {
    // struct bpf_prog_info: xlated_prog_len (u32) at 20, xlated_prog_insns (u64) at 32.
    let mut info = [0u8; 256];
    let mut a = Attr::new()
        .u32(0, prog.as_raw_fd() as u32)
        .u32(4, info.len() as u32)
        .u64(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    let len = u32::from_ne_bytes(info[20..24].try_into().expect("4 bytes")) as usize;
    let mut insns = vec![Insn::default(); len / std::mem::size_of::<Insn>()];
    let mut info = [0u8; 256];
    info[20..24]
        .copy_from_slice(&((insns.len() * std::mem::size_of::<Insn>()) as u32).to_ne_bytes());
    info[32..40].copy_from_slice(&(insns.as_mut_ptr() as u64).to_ne_bytes());
    let mut a = Attr::new()
        .u32(0, prog.as_raw_fd() as u32)
        .u32(4, info.len() as u32)
        .u64(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(insns)
}

/// Whether the kernel knows BPF_F_REPLACE (Linux 5.6). Probed as runc does: replacing a
/// program on a descriptor that is not a cgroup gives EBADF where the flag is known (the
/// target is checked after the flags) and EINVAL where it is not.
pub fn have_replace() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        let Ok(prog) = load(c"GPL", &[Insn::mov32_imm(0, 0), Insn::exit()]) else {
            return false;
        };
        let Ok(not_a_cgroup) = std::fs::File::open("/dev/null") else {
            return false;
        };
        !matches!(
            attach(
                not_a_cgroup.as_fd(),
                prog.as_fd(),
                BPF_F_ALLOW_MULTI,
                Some(prog.as_fd())
            ),
            Err(Errno::EINVAL)
        )
    })
}

/// Kernels before 5.11 charge BPF programs to RLIMIT_MEMLOCK, which can be too small to load
/// one. Raised in the runtime's own process, never inherited by a container's processes
/// (they were forked before); best effort, like runc: the load reports what remains wrong.
pub fn bump_memlock_rlimit() {
    let infinity = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit/getrlimit with valid pointers to rlimit structs.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &infinity) == 0 {
            return;
        }
        let mut cur = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) == 0 && cur.rlim_cur < cur.rlim_max {
            cur.rlim_cur = cur.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &cur);
        }
    }
}

/// Makes `prog` the one device program of `cgroup`, which is never without a filter in
/// between (runc's loadAttachCgroupDeviceFilter): an only program already there is replaced
/// atomically (BPF_F_REPLACE); otherwise `prog` is attached next to the old ones (a device
/// access must pass every program of a cgroup, so this only narrows what is allowed) and
/// then the old ones are detached.
pub fn attach_replacing(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> Result<(), BpfError> {
    let fail = |op| move |errno| BpfError::Cgroup { op, errno };
    let (ids, _) = query(cgroup).map_err(fail("BPF_PROG_QUERY"))?;
    let mut old = Vec::with_capacity(ids.len());
    for id in ids {
        match prog_by_id(id) {
            Ok(fd) => old.push(fd),
            // A program an LSM hides from us (systemd's, under SELinux) can only deny more;
            // leaving it attached is safe (runc does the same).
            Err(Errno::EPERM | Errno::EACCES) => {
                tracing::debug!(id, "cannot open an attached device program; left in place")
            }
            // Detached in the meantime.
            Err(Errno::ENOENT) => {}
            Err(errno) => return Err(fail("BPF_PROG_GET_FD_BY_ID")(errno)),
        }
    }
    if old.len() == 1 && have_replace() {
        return attach(cgroup, prog, BPF_F_ALLOW_MULTI, Some(old[0].as_fd()))
            .map_err(fail("BPF_PROG_ATTACH"));
    }
    attach(cgroup, prog, BPF_F_ALLOW_MULTI, None).map_err(fail("BPF_PROG_ATTACH"))?;
    if old.len() > 1 {
        tracing::info!(
            count = old.len(),
            "more than one device program on a cgroup; detaching the old ones"
        );
    }
    for fd in &old {
        match detach(cgroup, fd.as_fd()) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(errno) => return Err(fail("BPF_PROG_DETACH")(errno)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;

    /// A fresh cgroup v2 directory, removed on drop; None without root or a cgroup2 mount
    /// (device programs attach to any cgroup2 directory, controllers or not).
    struct Cgroup(PathBuf);

    impl Cgroup {
        fn new(name: &str) -> Option<Self> {
            if !nix::unistd::geteuid().is_root() {
                return None;
            }
            let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
                .into_iter()
                .map(PathBuf::from)
                .find(|b| b.join("cgroup.procs").exists())?;
            let dir = base.join(format!("libcgroups-bpf-{name}-{}", std::process::id()));
            std::fs::create_dir(&dir).ok()?;
            Some(Cgroup(dir))
        }
        fn fd(&self) -> OwnedFd {
            std::fs::File::open(&self.0).unwrap().into()
        }
        /// Opens /dev/null from a shell placed in this cgroup.
        fn can_open_null(&self) -> bool {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "echo $$ > {}/cgroup.procs && exec cat /dev/null",
                    self.0.display()
                ))
                .output()
                .unwrap();
            out.status.success()
        }
    }

    impl Drop for Cgroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    fn returning(v: i32) -> OwnedFd {
        load(c"GPL", &[Insn::mov32_imm(0, v), Insn::exit()]).unwrap()
    }

    #[test]
    fn attach_replacing_leaves_one_program() {
        let Some(cg) = Cgroup::new("replace") else {
            eprintln!("SKIP: needs root and a cgroup2 mount");
            return;
        };
        let fd = cg.fd();
        bump_memlock_rlimit();
        assert!(cg.can_open_null());
        attach_replacing(fd.as_fd(), returning(0).as_fd()).unwrap();
        let (first, flags) = query(fd.as_fd()).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(flags, BPF_F_ALLOW_MULTI);
        assert!(!cg.can_open_null(), "the deny-all program is in force");

        // One program there: replaced in place.
        attach_replacing(fd.as_fd(), returning(1).as_fd()).unwrap();
        let (second, _) = query(fd.as_fd()).unwrap();
        assert_eq!(second.len(), 1);
        assert_ne!(first, second);
        assert!(cg.can_open_null());

        // Two there (someone else's next to ours): attached, then both old ones detached.
        attach(fd.as_fd(), returning(1).as_fd(), BPF_F_ALLOW_MULTI, None).unwrap();
        assert_eq!(query(fd.as_fd()).unwrap().0.len(), 2);
        attach_replacing(fd.as_fd(), returning(0).as_fd()).unwrap();
        let (third, _) = query(fd.as_fd()).unwrap();
        assert_eq!(third.len(), 1);
        assert!(!second.contains(&third[0]));
        assert!(!cg.can_open_null());
    }

    #[test]
    fn a_refused_program_reports_the_verifier() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root");
            return;
        }
        // Returns without setting R0: the verifier refuses it and says why.
        let err = load(c"GPL", &[Insn::exit()]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("verifier: "), "{msg}");
        assert!(msg.contains("R0"), "{msg}");
        assert_eq!(msg.lines().count(), 1, "{msg}");
        assert!(!msg.contains("CAP_SYS_ADMIN"), "{msg}");
    }

    #[test]
    fn the_replace_flag_is_probed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root");
            return;
        }
        // Every kernel since 5.6 has it; the machines this runs on are newer.
        assert!(have_replace());
    }

    #[test]
    fn instructions_read_back() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root");
            return;
        }
        let prog = [Insn::mov32_imm(0, 1), Insn::exit()];
        let fd = load(c"GPL", &prog).unwrap();
        assert_eq!(instructions(fd.as_fd()).unwrap(), prog);
    }
}
