use std::collections::HashSet;
use std::num::TryFromIntError;
use std::io;
use std::os::unix::io::RawFd;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("failed to translate trace action due to failed to convert errno {errno} into i16")]
    TraceAction { source: TryFromIntError, errno: i32 },
    #[error("SCMP_ACT_NOTIFY cannot be used as default action")]
    NotifyAsDefaultAction,
    #[error("SCMP_ACT_NOTIFY cannot be used for the write syscall")]
    NotifyWriteSyscall,
    #[error("failed to add arch to seccomp")]
    AddArch {
        source: libseccomp::error::SeccompError,
        arch: Arch,
    },
    #[error("failed to load seccomp context")]
    Load { source: io::Error },
    #[error("failed to export the compiled seccomp filter")]
    ExportBpf {
        source: libseccomp::error::SeccompError,
    },
    #[error("failed to read the compiled seccomp filter back")]
    Export { source: io::Error },
    #[error("libseccomp compiled a filter of {len} bytes, not 1 to 4096 instructions")]
    ProgramSize { len: usize },
    #[error("failed to add rule to seccomp")]
    AddRule {
        source: libseccomp::error::SeccompError,
    },
    #[error("failed to create new seccomp filter")]
    NewFilter {
        source: libseccomp::error::SeccompError,
        default: LinuxSeccompAction,
    },
    #[error("failed to set filter flag")]
    SetFilterFlag {
        source: libseccomp::error::SeccompError,
        flag: LinuxSeccompFilterFlag,
    },
    #[error("failed to set SCMP_FLTATR_CTL_NNP")]
    SetCtlNnp {
        source: libseccomp::error::SeccompError,
    },
}

type Result<T> = std::result::Result<T, SeccompError>;

fn translate_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn translate_action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction> {
    tracing::trace!(?action, ?errno, "translating action");
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    let action = match action {
        LinuxSeccompAction::ScmpActKill => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
            errno
                .try_into()
                .map_err(|err| SeccompError::TraceAction { source: err, errno })?,
        ),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
    };

    tracing::trace!(?action, "translated action");
    Ok(action)
}

/// nvbind: the comparison of one `linux.seccomp.syscalls[].args` entry. For
/// `SCMP_CMP_MASKED_EQ` the spec's `value` is the mask and `valueTwo` the datum (runc passes
/// them to libseccomp as operand 1 and 2 in that order: `(arg & value) == valueTwo`); the
/// upstream code had them swapped, so a rule denying `socket` with protocol bits set in
/// 0xF00 allowed them, and Docker's `clone` flag rule (mask only) never matched.
fn translate_arg(arg: &oci_spec::runtime::LinuxSeccompArg) -> ScmpArgCompare {
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let (mask, datum) = (arg.value(), arg.value_two().unwrap_or(0));
            return ScmpArgCompare::new(arg.index() as u32, ScmpCompareOp::MaskedEqual(mask), datum);
        }
    };
    ScmpArgCompare::new(arg.index() as u32, op, arg.value())
}

fn check_seccomp(seccomp: &LinuxSeccomp) -> Result<()> {
    // We don't support notify as default action. After the seccomp filter is
    // created with notify, the container process will have to communicate the
    // returned fd to another process. Therefore, we need the write syscall or
    // otherwise, the write syscall will be block by the seccomp filter causing
    // the container process to hang. `runc` also disallow notify as default
    // action.
    // Note: read and close syscall are also used, because if we can
    // successfully write fd to another process, the other process can choose to
    // handle read/close syscall and allow read and close to proceed as
    // expected.
    if seccomp.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(SeccompError::NotifyAsDefaultAction);
    }

    if let Some(syscalls) = seccomp.syscalls() {
        for syscall in syscalls {
            if syscall.action() == LinuxSeccompAction::ScmpActNotify {
                for name in syscall.names() {
                    if name == "write" {
                        return Err(SeccompError::NotifyWriteSyscall);
                    }
                }
            }
        }
    }

    Ok(())
}

#[tracing::instrument(level = "trace", skip(seccomp))]
pub fn initialize_seccomp(seccomp: &LinuxSeccomp) -> Result<Option<RawFd>> {
    load_program(seccomp, &compile(seccomp)?)
}

/// nvbind: `program` when the runtime compiled the profile, else compiled here.
pub fn load_program_or_compile(
    seccomp: &LinuxSeccomp,
    program: Option<&Program>,
) -> Result<Option<RawFd>> {
    match program {
        Some(program) => load_program(seccomp, program),
        None => initialize_seccomp(seccomp),
    }
}

/// nvbind: a seccomp profile compiled by libseccomp into the classic BPF program the kernel
/// runs, and whether the filter has a user-notification listener. Made in the runtime
/// process (and kept in nvbind's cache), loaded by [`load_program`] in the init process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// `struct sock_filter`s, 8 bytes each, as the kernel reads them.
    bpf: Vec<u8>,
    listener: bool,
}

/// The kernel's limit on one filter (BPF_MAXINSNS).
const MAX_INSTRUCTIONS: usize = 4096;

impl Program {
    /// A program from its parts (a cache's copy): None unless it is a whole number of
    /// instructions, at least one and at most the kernel's limit.
    pub fn from_parts(bpf: Vec<u8>, listener: bool) -> Option<Self> {
        let n = bpf.len() / std::mem::size_of::<libc::sock_filter>();
        (bpf.len() % std::mem::size_of::<libc::sock_filter>() == 0
            && (1..=MAX_INSTRUCTIONS).contains(&n))
        .then_some(Self { bpf, listener })
    }

    pub fn bpf(&self) -> &[u8] {
        &self.bpf
    }

    pub fn listener(&self) -> bool {
        self.listener
    }
}

/// nvbind: the libseccomp release this process runs with (its programs can differ from
/// another release's), as "MAJOR.MINOR.MICRO".
pub fn library_version() -> Option<String> {
    let v = libseccomp::ScmpVersion::current().ok()?;
    Some(format!("{}.{}.{}", v.major, v.minor, v.micro))
}

/// nvbind: compiles the profile with libseccomp (what `seccomp_load` would load) without
/// loading it: the program comes back through a memfd (`seccomp_export_bpf`; libseccomp 2.5
/// has no in-memory export).
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Program> {
    use std::io::{Read, Seek};
    let (ctx, listener) = build_filter(seccomp)?;
    let export = |e: io::Error| SeccompError::Export { source: e };
    // SAFETY: a NUL-terminated name and flags; the result is checked before use.
    let raw = unsafe { libc::memfd_create(c"nvbind-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(export(io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a descriptor just made and owned by nothing else.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    ctx.export_bpf(&file)
        .map_err(|err| SeccompError::ExportBpf { source: err })?;
    let mut bpf = Vec::new();
    file.rewind().map_err(export)?;
    file.read_to_end(&mut bpf).map_err(export)?;
    let len = bpf.len();
    Program::from_parts(bpf, listener).ok_or(SeccompError::ProgramSize { len })
}

/// nvbind: loads a compiled profile as libseccomp 2.5's `seccomp_load` does (the flags it
/// passes for the profile's flags and a notify rule; no_new_privs left alone, as
/// `initialize_seccomp` sets SCMP_FLTATR_CTL_NNP off), then the ENOSYS stub. Returns the
/// listener's descriptor when the filter has one.
pub fn load_program(seccomp: &LinuxSeccomp, program: &Program) -> Result<Option<RawFd>> {
    let mut flags = profile_flags(seccomp);
    if program.listener {
        flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        // TSYNC answers a thread it could not synchronize with its TID, a listener with its
        // descriptor: together they need TSYNC_ESRCH to be told apart (libseccomp does so).
        if flags & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 {
            flags |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        }
    }
    let len = program.bpf.len() / std::mem::size_of::<libc::sock_filter>();
    // SAFETY: `program.bpf` is whole instructions (Program's invariant); the kernel copies
    // them, and needs no alignment for that.
    let rc = unsafe { set_mode_filter(program.bpf.as_ptr().cast(), len, flags) }
        .map_err(|source| SeccompError::Load { source })?;
    if rc > 0 && !program.listener {
        // TSYNC: thread `rc` could not be synchronized, and the filter was not loaded
        return Err(SeccompError::Load {
            source: io::Error::from_raw_os_error(libc::ESRCH),
        });
    }
    load_enosys_stub(seccomp);
    Ok(program.listener.then_some(rc as RawFd))
}

/// The libseccomp filter of a profile, and whether a notify rule went into it (libseccomp
/// asks the kernel for a listener only then).
fn build_filter(seccomp: &LinuxSeccomp) -> Result<(ScmpFilterContext, bool)> {
    check_seccomp(seccomp)?;
    let mut listener = false;

    tracing::trace!(default_action = ?seccomp.default_action(), errno = ?seccomp.default_errno_ret(), "initializing seccomp");
    let default_action = translate_action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut ctx =
        ScmpFilterContext::new(default_action).map_err(|err| SeccompError::NewFilter {
            source: err,
            default: seccomp.default_action(),
        })?;

    if let Some(flags) = seccomp.flags() {
        for flag in flags {
            match flag {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                    ctx.set_ctl_waitkill(true)
                }
            }
            .map_err(|err| SeccompError::SetFilterFlag {
                source: err,
                flag: *flag,
            })?;
        }
    }

    if let Some(architectures) = seccomp.architectures() {
        for &arch in architectures {
            tracing::trace!(?arch, "adding architecture");
            ctx.add_arch(translate_arch(arch))
                .map_err(|err| SeccompError::AddArch { source: err, arch })?;
        }
    }

    // The SCMP_FLTATR_CTL_NNP controls if the seccomp load function will set
    // the new privilege bit automatically in prctl. Normally this is a good
    // thing, but for us we need better control. Based on the spec, if OCI
    // runtime spec doesn't set the no new privileges in Process, we should not
    // set it here.  If the seccomp load operation fails without enough
    // privilege, so be it. To prevent this automatic behavior, we unset the
    // value here.
    ctx.set_ctl_nnp(false)
        .map_err(|err| SeccompError::SetCtlNnp { source: err })?;

    if let Some(syscalls) = seccomp.syscalls() {
        for syscall in syscalls {
            let action = translate_action(syscall.action(), syscall.errno_ret())?;
            if action == default_action {
                // When the action is the same as the default action, the rule is redundant. We can
                // skip this here to avoid failing when we add the rules.
                tracing::warn!(
                    "detect a seccomp action that is the same as the default action: {:?}",
                    syscall
                );
                continue;
            }

            for name in syscall.names() {
                let sc = match ScmpSyscall::from_name(name) {
                    Ok(x) => x,
                    Err(_) => {
                        // If we failed to resolve the syscall by name, likely the kernel
                        // doeesn't support this syscall. So it is safe to skip...
                        tracing::warn!(
                            "failed to resolve syscall, likely kernel doesn't support this. {:?}",
                            name
                        );
                        continue;
                    }
                };
                match syscall.args() {
                    // libseccomp allows multiple argument comparisons in a single rule,
                    // but each syscall argument can only be compared once per rule.
                    // When multiple comparisons target the same argument index,
                    // we follow runc's behavior and add each condition as a separate rule.
                    // Ref: libseccomp seccomp_rule_add(3)
                    // https://github.com/seccomp/libseccomp/blob/9d7a3cd937e7841ece62ac19f0f06aafd0fdaaa9/doc/man/man3/seccomp_rule_add.3#L137
                    // Ref: runc seccomp_linux.go
                    // https://github.com/opencontainers/runc/blob/4b97e12fccdfca981a296d9ef82df5f3ae95e288/libcontainer/seccomp/seccomp_linux.go#L327
                    Some(args) => {
                        let mut comparators = Vec::<ScmpArgCompare>::with_capacity(args.len());
                        let mut seen = HashSet::new();
                        let mut has_duplicate_index = false;

                        for arg in args {
                            let index = arg.index() as u32;
                            let comparator = translate_arg(arg);
                            if !seen.insert(index) {
                                has_duplicate_index = true;
                            }
                            comparators.push(comparator);
                        }

                        if has_duplicate_index {
                            for comparator in &comparators {
                                tracing::trace!(
                                    ?name,
                                    ?action,
                                    ?comparator,
                                    "add seccomp conditional rule separately"
                                );
                                ctx.add_rule_conditional(action, sc, std::slice::from_ref(comparator))
                                    .map_err(|err| {
                                        tracing::error!(
                                            "failed to add seccomp action: {:?}. Comparator: {:?} Syscall: {name}",
                                            &action,
                                            comparator,
                                        );
                                        SeccompError::AddRule { source: err }
                                    })?;
                            }
                        } else {
                            tracing::trace!(
                                ?name,
                                ?action,
                                ?comparators,
                                "add seccomp conditional rule"
                            );
                            ctx.add_rule_conditional(action, sc, &comparators)
                                .map_err(|err| {
                                    tracing::error!(
                                        "failed to add seccomp action: {:?}. Comparators: {:?} Syscall: {name}",
                                        &action,
                                        comparators,
                                    );
                                    SeccompError::AddRule { source: err }
                                })?;
                        }
                    }
                    None => {
                        tracing::trace!(?name, ?action, "add seccomp rule");
                        ctx.add_rule(action, sc).map_err(|err| {
                            tracing::error!(
                                "failed to add seccomp rule: {:?}. Syscall: {name}",
                                &sc
                            );
                            SeccompError::AddRule { source: err }
                        })?;
                    }
                }
                listener |= action == ScmpAction::Notify;
            }
        }
    }

    // In order to use the SECCOMP_SET_MODE_FILTER operation, either the calling
    // thread must have the CAP_SYS_ADMIN capability in its user namespace, or
    // the thread must already have the no_new_privs bit set (load_program).
    // Ref: https://man7.org/linux/man-pages/man2/seccomp.2.html
    Ok((ctx, listener))
}

/// nvbind: runc 1.1 answers a syscall newer than every syscall the profile names with ENOSYS
/// rather than the default action's errno (its patchbpf stub), so that a program probing for
/// a new syscall (clone3, faccessat2, ...) falls back to the old one instead of failing on
/// EPERM. runc prepends the stub to libseccomp's program; here it is a second filter loaded
/// after the profile's, which the kernel runs too: for a number above the profile's highest on
/// the native architecture it returns ERRNO(ENOSYS), which wins over the profile's ERRNO
/// default (same precedence, newer filter), and ALLOW otherwise, which leaves the profile's
/// verdict. Like runc, not for a default that allows (ALLOW, LOG) or already says ENOSYS. A
/// KILL or TRAP default still wins (runc's stub answers ENOSYS there too); other
/// architectures and x32 numbers are left to the profile. A profile that denies seccomp(2)
/// itself keeps its default answer (the stub cannot be loaded; logged).
fn load_enosys_stub(seccomp: &LinuxSeccomp) {
    let Some(program) = enosys_stub(seccomp) else {
        return;
    };
    let flags = profile_flags(seccomp) & libc::SECCOMP_FILTER_FLAG_TSYNC;
    // SAFETY: `program` is a Vec of instructions that outlives the call.
    let rc = unsafe { set_mode_filter(program.as_ptr(), program.len(), flags) };
    if let Err(err) = rc.and_then(|rc| match rc {
        0 => Ok(()),
        _ => Err(io::Error::from_raw_os_error(libc::ESRCH)),
    }) {
        tracing::warn!(
            ?err,
            "cannot load the ENOSYS stub filter: syscalls newer than the profile get its default action"
        );
    }
}

/// The SECCOMP_FILTER_FLAG_s the profile's `flags` ask for, as libseccomp passes them.
fn profile_flags(seccomp: &LinuxSeccomp) -> libc::c_ulong {
    seccomp
        .flags()
        .iter()
        .flatten()
        .map(|flag| match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
            }
        })
        .fold(0, |all, flag| all | flag)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, {len, filter})`: the kernel's answer (0, a
/// listener's descriptor, or with TSYNC the TID of a thread it could not synchronize).
///
/// # Safety
/// `filter` points at `len` readable `sock_filter`s.
unsafe fn set_mode_filter(
    filter: *const libc::sock_filter,
    len: usize,
    flags: libc::c_ulong,
) -> io::Result<libc::c_long> {
    let prog = libc::sock_fprog {
        len: len as u16,
        filter: filter.cast_mut(),
    };
    // SAFETY: `prog` lives across the call and points where the caller promised.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The stub's program for the native architecture, or None when there is nothing to do.
fn enosys_stub(seccomp: &LinuxSeccomp) -> Option<Vec<libc::sock_filter>> {
    if matches!(
        seccomp.default_action(),
        LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
    ) || seccomp.default_errno_ret() == Some(libc::ENOSYS as u32)
    {
        return None;
    }
    let arch = audit_arch(ScmpArch::native())?;
    let last = seccomp
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|s| s.names())
        .filter_map(|name| ScmpSyscall::from_name(name).ok())
        .map(|sc| sc.as_raw_syscall())
        .filter(|nr| *nr >= 0)
        .max()?;
    Some(stub_program(arch, last as u32))
}

/// AUDIT_ARCH_* of the 64-bit architectures the stub knows (runc's list, less the 32-bit
/// compat ones).
fn audit_arch(arch: ScmpArch) -> Option<u32> {
    Some(match arch {
        ScmpArch::X8664 => 0xC000_003E,
        ScmpArch::Aarch64 => 0xC000_00B7,
        ScmpArch::Ppc64Le => 0xC000_0015,
        ScmpArch::S390X => 0x8000_0016,
        ScmpArch::Riscv64 => 0xC000_00F3,
        _ => return None,
    })
}

const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;

fn stub_program(arch: u32, last: u32) -> Vec<libc::sock_filter> {
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u16, k: u32, jt: u8, jf: u8| libc::sock_filter { code, jt, jf, k };
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGT: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
    const JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    const ERRNO_ENOSYS: u32 = 0x0005_0000 | libc::ENOSYS as u32; // SECCOMP_RET_ERRNO
    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    let x32 = arch == AUDIT_ARCH_X86_64;
    let skip = if x32 { 1 } else { 0 };
    let mut p = vec![
        stmt(LD_W_ABS, 4),                  // seccomp_data.arch
        jump(JEQ, arch, 0, 3 + skip),       // another arch: allow
        stmt(LD_W_ABS, 0),                  // seccomp_data.nr
    ];
    if x32 {
        p.push(jump(JSET, X32_SYSCALL_BIT, 2, 0)); // an x32 number: allow
    }
    p.extend([
        jump(JGT, last, 0, 1), // not newer than the profile: allow
        stmt(RET, ERRNO_ENOSYS),
        stmt(RET, ALLOW),
    ]);
    p
}

pub fn is_notify(seccomp: &LinuxSeccomp) -> bool {
    seccomp
        .syscalls()
        .iter()
        .flatten()
        .any(|syscall| syscall.action() == LinuxSeccompAction::ScmpActNotify)
}

#[cfg(test)]
mod tests {
    use std::path;

    use anyhow::{Context, Result};
    use oci_spec::runtime::{
        Arch, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder,
    };
    use serial_test::serial;

    use super::*;
    use crate::test_utils::{self, TestCallbackError};

    #[test]
    #[serial]
    fn test_basic() -> Result<()> {
        // Note: seccomp profile is really hard to write unit test for. First,
        // we can't really test default error or kill action, since rust test
        // actually relies on certain syscalls. Second, some of the syscall will
        // not return errorno. These syscalls will just send an abort signal or
        // even just segfaults.  Here we choose to use `getcwd` syscall for
        // testing, since it will correctly return an error under seccomp rule.
        // This is more of a sanity check.

        // Here, we choose an error that getcwd call would never return on its own, so
        // we can make sure that getcwd failed because of seccomp rule.
        let expect_error = libc::EAGAIN;

        let syscall = LinuxSyscallBuilder::default()
            .names(vec![String::from("getcwd")])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(expect_error as u32)
            .build()?;
        let seccomp_profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .architectures(vec![Arch::ScmpArchNative])
            .syscalls(vec![syscall])
            .build()?;

        test_utils::test_in_child_process(|| {
            let _ = prctl::set_no_new_privileges(true);
            initialize_seccomp(&seccomp_profile).expect("failed to initialize seccomp");
            let ret = nix::unistd::getcwd();
            if ret.is_ok() {
                Err(TestCallbackError::Custom(
                    "getcwd didn't error out as seccomp profile specified".to_string(),
                ))?;
            }

            if let Some(errno) = ret.err() {
                if errno != nix::errno::Errno::from_raw(expect_error) {
                    Err(TestCallbackError::Custom(format!(
                        "getcwd failed but we didn't get the expected error from seccomp profile: {}",
                        errno
                    )))?;
                }
            }

            Ok(())
        })?;

        Ok(())
    }

    #[test]
    #[serial]
    fn test_moby() -> Result<()> {
        let fixture_path =
            path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/seccomp/fixture/config.json");
        let spec = oci_spec::runtime::Spec::load(fixture_path)
            .context("Failed to load test spec for seccomp")?;

        // We know linux and seccomp exist, so let's just unwrap.
        let seccomp_profile = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
        test_utils::test_in_child_process(|| {
            let _ = prctl::set_no_new_privileges(true);
            initialize_seccomp(seccomp_profile).expect("failed to initialize seccomp");

            Ok(())
        })?;

        Ok(())
    }

    #[test]
    fn program_parts_are_whole_instructions_within_the_kernels_limit() {
        assert!(Program::from_parts(vec![], false).is_none());
        assert!(Program::from_parts(vec![0; 7], false).is_none());
        assert!(Program::from_parts(vec![0; 9], false).is_none());
        assert!(Program::from_parts(vec![0; 8 * 4097], false).is_none());
        let p = Program::from_parts(vec![0; 8 * 4096], true).unwrap();
        assert_eq!((p.bpf().len(), p.listener()), (8 * 4096, true));
    }

    #[test]
    fn compiling_does_not_load_and_notify_rules_ask_for_a_listener() -> Result<()> {
        let fixture_path =
            path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/seccomp/fixture/config.json");
        let spec = oci_spec::runtime::Spec::load(fixture_path)?;
        let moby = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
        let program = compile(moby)?;
        assert!(!program.listener());
        assert_eq!(compile(moby)?, program, "libseccomp's output is deterministic");
        // SAFETY: PR_GET_SECCOMP takes no pointer.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_SECCOMP) }, 0, "compile loaded a filter");
        let notify = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(vec![LinuxSyscallBuilder::default()
                .names(vec![String::from("getcwd")])
                .action(LinuxSeccompAction::ScmpActNotify)
                .build()?])
            .build()?;
        assert!(compile(&notify)?.listener());
        Ok(())
    }

    #[test]
    #[serial]
    fn test_seccomp_notify() -> Result<()> {
        let syscall = LinuxSyscallBuilder::default()
            .names(vec![String::from("getcwd")])
            .action(LinuxSeccompAction::ScmpActNotify)
            .build()?;
        let seccomp_profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .architectures(vec![Arch::ScmpArchNative])
            .syscalls(vec![syscall])
            .build()?;
        test_utils::test_in_child_process(|| {
            let _ = prctl::set_no_new_privileges(true);
            let fd =
                initialize_seccomp(&seccomp_profile).expect("failed to initialize seccomp profile");
            if fd.is_none() {
                Err(TestCallbackError::Custom(
                    "failed to get a seccomp notify fd with notify seccomp profile".to_string(),
                ))?;
            }

            Ok(())
        })?;

        Ok(())
    }

    #[test]
    #[serial]
    fn test_seccomp_conditional_rule_multiple_distinct_args() -> Result<()> {
        let syscall = LinuxSyscallBuilder::default()
            .names(vec![String::from("socket")])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::EAGAIN as u32)
            .args(vec![
                LinuxSeccompArgBuilder::default()
                    .index(0_usize)
                    .value(libc::AF_INET as u64)
                    .op(LinuxSeccompOperator::ScmpCmpEq)
                    .build()?,
                LinuxSeccompArgBuilder::default()
                    .index(1_usize)
                    .value(libc::SOCK_STREAM as u64)
                    .op(LinuxSeccompOperator::ScmpCmpEq)
                    .build()?,
            ])
            .build()?;

        let seccomp_profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .architectures(vec![Arch::ScmpArchNative])
            .syscalls(vec![syscall])
            .build()?;

        test_utils::test_in_child_process(|| {
            let _ = prctl::set_no_new_privileges(true);
            initialize_seccomp(&seccomp_profile).expect("failed to initialize seccomp");
            Ok(())
        })?;

        Ok(())
    }

    #[test]
    #[serial]
    fn test_seccomp_conditional_rule_duplicate_arg_index() -> Result<()> {
        let syscall = LinuxSyscallBuilder::default()
            .names(vec![String::from("socket")])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::EAGAIN as u32)
            .args(vec![
                LinuxSeccompArgBuilder::default()
                    .index(0_usize)
                    .value(libc::AF_INET as u64)
                    .op(LinuxSeccompOperator::ScmpCmpEq)
                    .build()?,
                LinuxSeccompArgBuilder::default()
                    .index(0_usize)
                    .value(libc::AF_UNIX as u64)
                    .op(LinuxSeccompOperator::ScmpCmpNe)
                    .build()?,
            ])
            .build()?;

        let seccomp_profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .architectures(vec![Arch::ScmpArchNative])
            .syscalls(vec![syscall])
            .build()?;

        test_utils::test_in_child_process(|| {
            let _ = prctl::set_no_new_privileges(true);
            initialize_seccomp(&seccomp_profile).expect("failed to initialize seccomp");
            Ok(())
        })?;

        Ok(())
    }

    #[test]
    #[serial]
    fn test_seccomp_multiple_syscall_entries_for_same_name() -> Result<()> {
        let rule1 = LinuxSyscallBuilder::default()
            .names(vec!["socket".into()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::EAGAIN as u32)
            .args(vec![
                LinuxSeccompArgBuilder::default()
                    .index(0_usize)
                    .value(libc::AF_NETLINK as u64)
                    .op(LinuxSeccompOperator::ScmpCmpEq)
                    .build()?,
                LinuxSeccompArgBuilder::default()
                    .index(2_usize)
                    .value(libc::NETLINK_AUDIT as u64)
                    .op(LinuxSeccompOperator::ScmpCmpNe)
                    .build()?,
            ])
            .build()?;

        let rule2 = LinuxSyscallBuilder::default()
            .names(vec!["socket".into()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::EAGAIN as u32)
            .args(vec![
                LinuxSeccompArgBuilder::default()
                    .index(0_usize)
                    .value(libc::AF_INET as u64)
                    .op(LinuxSeccompOperator::ScmpCmpNe)
                    .build()?,
            ])
            .build()?;

        let profile = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .architectures(vec![Arch::ScmpArchNative])
            .syscalls(vec![rule1, rule2])
            .build()?;

        test_utils::test_in_child_process(|| {
            let _ = prctl::set_no_new_privileges(true);
            initialize_seccomp(&profile).expect("failed to initialize seccomp");

            Ok(())
        })?;

        Ok(())
    }

    /// Runs the stub's few opcodes over (arch, nr).
    fn run_stub(p: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            let (taken, jumped) = match i.code {
                0x20 => {
                    acc = if i.k == 4 { arch } else { nr };
                    (false, false)
                }
                0x15 => (acc == i.k, true),
                0x25 => (acc > i.k, true),
                0x45 => (acc & i.k != 0, true),
                0x06 => return i.k,
                c => panic!("opcode {c:#x}"),
            };
            pc += 1;
            if jumped {
                pc += if taken { i.jt } else { i.jf } as usize;
            }
        }
    }

    #[test]
    fn enosys_stub_answers_only_numbers_above_the_profiles_last() {
        const ENOSYS: u32 = 0x0005_0000 | libc::ENOSYS as u32;
        const ALLOW: u32 = 0x7fff_0000;
        for arch in [AUDIT_ARCH_X86_64, 0xC000_00B7] {
            let p = super::stub_program(arch, 435);
            assert_eq!(run_stub(&p, arch, 1000), ENOSYS);
            assert_eq!(run_stub(&p, arch, 436), ENOSYS);
            assert_eq!(run_stub(&p, arch, 435), ALLOW);
            assert_eq!(run_stub(&p, arch, 0), ALLOW);
            // Another architecture is the profile's business.
            assert_eq!(run_stub(&p, 0x4000_0003, 1000), ALLOW);
        }
        // x32 numbers (with the x32 bit) are left to the profile on x86_64.
        let p = super::stub_program(AUDIT_ARCH_X86_64, 435);
        assert_eq!(run_stub(&p, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 1), ALLOW);
    }

    #[test]
    fn enosys_stub_only_where_runc_adds_one() {
        let profile = |default: LinuxSeccompAction, errno: Option<u32>| {
            LinuxSeccompBuilder::default()
                .default_action(default)
                .default_errno_ret(errno.unwrap_or(1))
                .syscalls(vec![LinuxSyscallBuilder::default()
                    .names(vec!["getcwd".to_string(), "mkdir".to_string()])
                    .action(LinuxSeccompAction::ScmpActAllow)
                    .build()
                    .unwrap()])
                .build()
                .unwrap()
        };
        assert!(super::enosys_stub(&profile(LinuxSeccompAction::ScmpActErrno, None)).is_some());
        assert!(super::enosys_stub(&profile(LinuxSeccompAction::ScmpActAllow, None)).is_none());
        assert!(super::enosys_stub(&profile(LinuxSeccompAction::ScmpActLog, None)).is_none());
        let enosys = Some(libc::ENOSYS as u32);
        assert!(super::enosys_stub(&profile(LinuxSeccompAction::ScmpActErrno, enosys)).is_none());
    }

}
