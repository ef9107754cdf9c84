//! The seccomp filter every app container runs under. Like the default profiles of container
//! engines it removes the system calls an application never needs and that widen the kernel's
//! attack surface: changing mounts and namespaces, loading kernel code, tracing other
//! processes, keyrings, raw kernel interfaces and clock changes. Everything else is allowed,
//! so ordinary language runtimes (Python, Node, Rust, the shell) work unchanged. Blocked calls
//! fail with `EPERM`; `clone3` fails with `ENOSYS` so that libc falls back to `clone`, whose
//! namespace flags the filter can inspect.

use berth_core::policy::Isolation;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// System calls that fail with `EPERM` inside app containers.
pub const BLOCKED: &[&str] = &[
    // Mounts and namespaces.
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    // Kernel code and state.
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "lookup_dcookie",
    "quotactl",
    "quotactl_fd",
    "nfsservctl",
    "syslog",
    "iopl",
    "ioperm",
    "uselib",
    "get_kernel_syms",
    "query_module",
    "sysfs",
    "_sysctl",
    "vhangup",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    // Other processes.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    // Keyrings.
    "add_key",
    "request_key",
    "keyctl",
    // Clocks.
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_settime64",
    "clock_adjtime",
    "clock_adjtime64",
    "adjtimex",
    // Handles that bypass path permissions.
    "open_by_handle_at",
    "name_to_handle_at",
];

/// Namespace flags of `clone` that apps may not use.
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

fn rule(
    names: &[&str],
    errno: u32,
    args: Option<Vec<oci_spec::runtime::LinuxSeccompArg>>,
) -> Result<LinuxSyscall, oci_spec::OciSpecError> {
    let b = LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(errno);
    match args {
        Some(a) => b.args(a).build(),
        None => b.build(),
    }
}

/// The filter, as OCI runtime configuration, for containers of `isolation`.
///
/// gVisor (`sandbox`) applies the filter inside its own kernel, which has no `clone3` (so libc
/// falls back to `clone` anyway) and answers every filtered call with `EPERM` whatever errno
/// the rule asks for: a `clone3` rule there would make every process spawn fail.
pub fn profile(isolation: Isolation) -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    let mut syscalls = vec![rule(BLOCKED, EPERM, None)?];
    if isolation == Isolation::Trusted {
        syscalls.push(rule(&["clone3"], ENOSYS, None)?);
    }
    for flag in CLONE_NAMESPACE_FLAGS {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(*flag)
            .value_two(*flag)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()?;
        syscalls.push(rule(&["clone"], EPERM, Some(vec![arg]))?);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(syscalls)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_namespace_and_kernel_calls_but_allows_the_rest() {
        let p = serde_json::to_value(profile(Isolation::Trusted).unwrap()).unwrap();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ALLOW");
        let rules = p["syscalls"].as_array().unwrap();
        let blocked: Vec<&str> = rules
            .iter()
            .flat_map(|r| r["names"].as_array().unwrap())
            .filter_map(|n| n.as_str())
            .collect();
        for name in [
            "mount", "unshare", "setns", "ptrace", "bpf", "keyctl", "clone3",
        ] {
            assert!(blocked.contains(&name), "{name} should be filtered");
        }
        for name in ["read", "write", "execve", "socket", "connect", "fork"] {
            assert!(!blocked.contains(&name), "{name} must stay allowed");
        }
        let user_ns = rules
            .iter()
            .find(|r| r["names"][0] == "clone" && r["args"][0]["value"] == 0x1000_0000u64)
            .expect("clone with CLONE_NEWUSER is filtered");
        assert_eq!(user_ns["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    }

    #[test]
    fn sandboxed_containers_keep_the_filter_but_not_the_clone3_rule() {
        let p = serde_json::to_value(profile(Isolation::Sandbox).unwrap()).unwrap();
        let names: Vec<&str> = p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["names"].as_array().unwrap())
            .filter_map(|n| n.as_str())
            .collect();
        assert!(names.contains(&"mount") && names.contains(&"ptrace"));
        assert!(!names.contains(&"clone3"), "gVisor would fail every spawn");
    }
}
