//! The config.json `nvbind spec` writes: what `runc spec` writes, field for field (engines,
//! tools and runc's own integration tests make bundles with `spec` and expect runc's
//! template: `terminal: true`, hostname "runc", no seccomp profile). `nvbind spec
//! --hardened` adds nvbind's seccomp denylist; scripts/bench runs every runtime it compares
//! with that one.

use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxNamespaceType, LinuxSeccomp, Spec};
use serde_json::{json, Value};

/// runc's default spec (`runc spec`, or `runc spec --rootless`); with `hardened`, the
/// seccomp denylist of [`default_seccomp`] too.
pub fn default_spec(rootless: bool, hardened: bool) -> Spec {
    let mut spec = if rootless {
        Spec::rootless(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    } else {
        Spec::default()
    };
    // A cgroup namespace needs cgroup v2 to be useful; on v1/hybrid hosts runc leaves it out.
    let unified = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if let Some(ns) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.namespaces_mut().as_mut())
    {
        if !unified {
            ns.retain(|n| n.typ() != LinuxNamespaceType::Cgroup);
        }
    }
    // Deny every device, then libcontainer allows the standard set (null, zero, tty, ...):
    // runc's default spec does the same. oci-spec's default has no rule, which would leave the
    // device cgroup wide open. A rootless spec gets no resources, as runc's: the user has no
    // device cgroup to apply it to, nor can it create device nodes in its user namespace.
    if let Some(linux) = spec.linux_mut().as_mut().filter(|_| !rootless) {
        let deny_all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm".to_string())
            .build()
            .expect("a constant device rule is valid");
        let mut resources = linux.resources().clone().unwrap_or_default();
        resources.set_devices(Some(vec![deny_all]));
        linux.set_resources(Some(resources));
    }
    spec.set_hostname(Some("runc".into()));
    spec.set_annotations(None);
    // No inheritable capabilities, as runc's spec since CVE-2022-29162: with them a program
    // carrying inheritable file capabilities gains those in its permitted set on execve.
    if let Some(process) = spec.process_mut() {
        process.set_terminal(Some(true));
        if let Some(mut caps) = process.capabilities().clone() {
            caps.set_inheritable(None);
            process.set_capabilities(Some(caps));
        }
    }
    if let Some(linux) = spec.linux_mut().as_mut().filter(|_| hardened) {
        linux.set_seccomp(Some(default_seccomp()));
    }
    spec
}

/// The spec as config.json text. Capability sets are hash sets in oci-spec, so their order
/// would change from one run to the next; they are written sorted, as runc writes them.
pub fn to_json(spec: &Spec) -> serde_json::Result<Vec<u8>> {
    let mut v = serde_json::to_value(spec)?;
    if let Some(Value::Object(sets)) = v.pointer_mut("/process/capabilities") {
        for set in sets.values_mut() {
            if let Value::Array(names) = set {
                names.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    serde_json::to_vec_pretty(&v)
}

/// Syscalls that reach kernel code a container has no business in (module loading, kexec,
/// raw I/O ports, the clock, swap, accounting, quotas) or that have been the main road from
/// an unprivileged process to a kernel exploit (bpf, perf_event_open, userfaultfd, io_uring,
/// open_by_handle_at: the "shocker" escape). Most are also refused without a capability;
/// the filter keeps them refused when a user adds the capability for something else.
const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "lookup_dcookie",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "uselib",
    "userfaultfd",
    "vhangup",
];

const EPERM: u32 = libc::EPERM as u32;
const KEYCTL_JOIN_SESSION_KEYRING: u64 = 1;
const CLONE_NEWUSER: u64 = libc::CLONE_NEWUSER as u64;

/// The seccomp profile of `nvbind spec --hardened`: allow by default, refuse a list of dangerous
/// syscalls with EPERM.
///
/// Docker's and Podman's defaults are allowlists (defaultAction ERRNO, ~350-470 names, rules
/// selected by the capabilities granted). An allowlist is stricter, but its libseccomp
/// compile runs in every create and every exec, and it breaks programs that use a syscall
/// newer than the list. The denylist keeps what matters for a runtime that is handed
/// GPU workloads: what the capabilities already refuse stays with the capabilities (mount,
/// pivot_root, setns, chroot, sethostname without CAP_SYS_ADMIN / CAP_SYS_CHROOT), and the
/// filter closes what an unprivileged process can still reach:
/// - DENIED_SYSCALLS (see above); io_uring as moby#46762 and containerd#9320 did;
/// - new user namespaces (clone/unshare with CLONE_NEWUSER): inside one a process holds
///   every capability again and can reach mount, netfilter and the rest of the kernel;
///   fork and threads (clone without the flag) are untouched, so busybox and glibc work;
/// - clone3, whose flags sit in memory a filter cannot read: ENOSYS, so libc falls back
///   to clone (Docker does the same);
/// - keyctl except JOIN_SESSION_KEYRING, plus add_key and request_key: keyrings are not
///   namespaced. The join must stay allowed because nvbind joins the container's fresh
///   session keyring after the filter is loaded (src/executor.rs); refusing it would leave
///   the container in the caller's keyring.
///
/// ptrace and process_vm_* stay allowed (Docker allows them on kernels >= 4.8, where ptrace
/// can no longer bypass seccomp; the pid namespace bounds the targets).
/// scripts/bench uses this profile for every runtime it compares.
pub fn default_seccomp() -> LinuxSeccomp {
    #[cfg(target_arch = "x86_64")]
    let arches = json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
    #[cfg(target_arch = "aarch64")]
    let arches = json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let arches = json!([]);
    // value == valueTwo: runc reads MASKED_EQ as (arg & value) == valueTwo, libcontainer as
    // (arg & valueTwo) == value; with both equal the rule means the same to every runtime
    // that scripts/bench runs with this profile.
    let new_user_ns = |name: &str| {
        json!({
            "names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
            "args": [{ "index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER,
                       "op": "SCMP_CMP_MASKED_EQ" }],
        })
    };
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": arches,
        "syscalls": [
            { "names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM },
            {
                "names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
                "args": [{ "index": 0, "value": KEYCTL_JOIN_SESSION_KEYRING, "op": "SCMP_CMP_NE" }],
            },
            new_user_ns("clone"),
            new_user_ns("unshare"),
            { "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS as u32 },
        ],
    });
    serde_json::from_value(profile).expect("the constant seccomp profile is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spec_is_runcs_without_a_seccomp_profile() {
        for rootless in [false, true] {
            let spec = default_spec(rootless, false);
            assert_eq!(spec.linux().as_ref().unwrap().seccomp(), &None);
            assert_eq!(spec.process().as_ref().unwrap().terminal(), Some(true));
            assert_eq!(spec.hostname().as_deref(), Some("runc"));
            assert_eq!(spec.annotations(), &None);
            let text = String::from_utf8(to_json(&spec).unwrap()).unwrap();
            let bounding = text.find("\"bounding\"").unwrap();
            let (audit, kill, bind) = (
                text[bounding..].find("CAP_AUDIT_WRITE").unwrap(),
                text[bounding..].find("CAP_KILL").unwrap(),
                text[bounding..].find("CAP_NET_BIND_SERVICE").unwrap(),
            );
            assert!(audit < kill && kill < bind, "{text}");
        }
    }

    #[test]
    fn the_hardened_spec_carries_the_denylist_profile() {
        for rootless in [false, true] {
            let spec = default_spec(rootless, true);
            let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
            assert_eq!(
                seccomp.default_action(),
                oci_spec::runtime::LinuxSeccompAction::ScmpActAllow
            );
            let rules = seccomp.syscalls().clone().unwrap();
            let names: Vec<&String> = rules.iter().flat_map(|r| r.names()).collect();
            for name in [
                "kexec_load",
                "bpf",
                "userfaultfd",
                "keyctl",
                "unshare",
                "clone3",
            ] {
                assert!(names.iter().any(|n| *n == name), "{name} not in {names:?}");
            }
            // The spec must survive a round trip through config.json.
            let text = serde_json::to_string(&spec).unwrap();
            let back: Spec = serde_json::from_str(&text).unwrap();
            assert_eq!(back.linux().as_ref().unwrap().seccomp(), &Some(seccomp));
            assert_eq!(
                spec.process().as_ref().unwrap().no_new_privileges(),
                Some(true)
            );
        }
    }
}
