//! Wharf's `RuntimeDefault` seccomp profile, written from the list of
//! syscalls that let a process leave or weaken its container: everything
//! is allowed except those, which fail with `EPERM` (a deny-list, so new
//! harmless syscalls keep working). A capability the container was given
//! lifts the block of the syscalls it governs, as containerd's profile
//! does: a container granted `SYS_ADMIN` may mount.

use super::types::{Seccomp, SeccompArg, SyscallRule};

/// `EPERM`: what a process gets from a blocked syscall.
const EPERM: u32 = 1;

/// `ENOSYS` for `clone3`: its flags sit behind a pointer a filter cannot
/// read, and C libraries fall back to `clone` (which is filtered) only on
/// this error.
const ENOSYS: u32 = 38;

/// Syscalls blocked unless the container holds `lifted_by`.
struct Block {
    names: &'static [&'static str],
    lifted_by: Option<&'static str>,
}

const BLOCKED: &[Block] = &[
    Block {
        // Mounts, namespaces and the root: the ways out of the container's view.
        names: &[
            "mount",
            "umount",
            "umount2",
            "unshare",
            "setns",
            "pivot_root",
            "swapon",
            "swapoff",
            "quotactl",
            "lookup_dcookie",
            "bpf",
            "perf_event_open",
            "fanotify_init",
        ],
        lifted_by: Some("CAP_SYS_ADMIN"),
    },
    Block {
        names: &["init_module", "finit_module", "delete_module"],
        lifted_by: Some("CAP_SYS_MODULE"),
    },
    Block {
        names: &["kexec_load", "kexec_file_load", "reboot"],
        lifted_by: Some("CAP_SYS_BOOT"),
    },
    Block {
        names: &["ptrace", "process_vm_readv", "process_vm_writev"],
        lifted_by: Some("CAP_SYS_PTRACE"),
    },
    Block {
        names: &["settimeofday", "clock_settime", "stime", "clock_adjtime"],
        lifted_by: Some("CAP_SYS_TIME"),
    },
    Block {
        names: &["iopl", "ioperm"],
        lifted_by: Some("CAP_SYS_RAWIO"),
    },
    Block {
        names: &["acct"],
        lifted_by: Some("CAP_SYS_PACCT"),
    },
    Block {
        // Reopening any file of the host's filesystem by handle.
        names: &["open_by_handle_at", "name_to_handle_at"],
        lifted_by: Some("CAP_DAC_READ_SEARCH"),
    },
    Block {
        // The kernel keyring is not namespaced; userfaultfd stalls the
        // kernel at will, the raw material of many exploits.
        names: &["keyctl", "add_key", "request_key", "userfaultfd"],
        lifted_by: None,
    },
];

/// `clone` flags that make a new namespace.
const NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// The architectures the filter covers: the native one and the ones its
/// kernel also runs (32-bit x86 and x32 on x86_64, arm on aarch64), so a
/// blocked syscall cannot be reached through a compatibility entry point.
fn architectures() -> Vec<String> {
    let names: &[&str] = match std::env::consts::ARCH {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        // Elsewhere runc uses the native architecture alone.
        _ => &[],
    };
    names.iter().map(|n| n.to_string()).collect()
}

fn errno(names: Vec<String>, errno: u32, args: Vec<SeccompArg>) -> SyscallRule {
    SyscallRule {
        names,
        action: "SCMP_ACT_ERRNO".into(),
        errno_ret: Some(errno),
        args,
    }
}

/// The `RuntimeDefault` profile for a container holding `capabilities`.
pub fn runtime_default(capabilities: &[String]) -> Seccomp {
    let holds = |cap: &str| capabilities.iter().any(|c| c == cap);
    let mut syscalls = Vec::new();
    let mut blocked = Vec::new();
    for block in BLOCKED {
        if block.lifted_by.is_none_or(|cap| !holds(cap)) {
            blocked.extend(block.names.iter().map(|n| n.to_string()));
        }
    }
    syscalls.push(errno(blocked, EPERM, Vec::new()));
    if !holds("CAP_SYS_ADMIN") {
        syscalls.push(errno(vec!["clone3".into()], ENOSYS, Vec::new()));
        // One rule per flag: the conditions of one rule must all hold.
        for &flag in NAMESPACE_FLAGS {
            let flags = SeccompArg {
                index: 0,
                value: flag,
                value_two: flag,
                op: "SCMP_CMP_MASKED_EQ".into(),
            };
            syscalls.push(errno(vec!["clone".into()], EPERM, vec![flags]));
        }
    }
    Seccomp {
        default_action: "SCMP_ACT_ALLOW".into(),
        architectures: architectures(),
        syscalls,
    }
}
