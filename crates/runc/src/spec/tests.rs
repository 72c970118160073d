use std::fs;

use wharf_api::{
    EffectiveSecurity, EnvVar, ResourceList, ResourceRequirements, SeccompProfileType,
};

use super::*;

fn image() -> ProcessDefaults {
    ProcessDefaults {
        entrypoint: vec!["/entry".into(), "-x".into()],
        cmd: vec!["serve".into(), "--port=80".into()],
        env: vec![
            "PATH=/image/bin".into(),
            "LANG=C".into(),
            "MODE=image".into(),
        ],
        working_dir: Some("/srv".into()),
        user: None,
    }
}

fn container() -> Container {
    Container {
        name: "web".into(),
        image: "shop/web:1".into(),
        ..Default::default()
    }
}

fn options() -> SpecOptions {
    SpecOptions::new("/nonexistent/rootfs", "web-1", "/wharf/web-1")
}

fn build_ok(image: &ProcessDefaults, container: &Container) -> Spec {
    build(image, container, &options()).unwrap()
}

#[test]
fn args_follow_kubernetes_rules() {
    let image = image();
    // Neither set: entrypoint + cmd.
    assert_eq!(
        build_ok(&image, &container()).process.args,
        ["/entry", "-x", "serve", "--port=80"]
    );
    // args only: entrypoint + args.
    let mut c = container();
    c.args = vec!["check".into()];
    assert_eq!(build_ok(&image, &c).process.args, ["/entry", "-x", "check"]);
    // command only: replaces entrypoint and drops the image's cmd.
    let mut c = container();
    c.command = vec!["/bin/sh".into()];
    assert_eq!(build_ok(&image, &c).process.args, ["/bin/sh"]);
    // both.
    c.args = vec!["-c".into(), "echo hi".into()];
    assert_eq!(
        build_ok(&image, &c).process.args,
        ["/bin/sh", "-c", "echo hi"]
    );
    // cmd alone is enough.
    let only_cmd = ProcessDefaults {
        entrypoint: vec![],
        ..image
    };
    assert_eq!(
        build_ok(&only_cmd, &container()).process.args,
        ["serve", "--port=80"]
    );
}

#[test]
fn empty_command_is_an_error() {
    let err = build(&ProcessDefaults::default(), &container(), &options()).unwrap_err();
    assert!(matches!(err, RuncError::Spec { ref container, .. } if container == "web"));
    assert!(err.to_string().contains("no command"), "{err}");
    // args without an entrypoint make the first arg the program.
    let mut c = container();
    c.args = vec!["/bin/true".into()];
    assert_eq!(
        build_ok(&ProcessDefaults::default(), &c).process.args,
        ["/bin/true"]
    );
    c.args = vec!["".into()];
    assert!(build(&ProcessDefaults::default(), &c, &options()).is_err());
}

#[test]
fn env_merges_with_container_winning() {
    let mut c = container();
    c.env = vec![
        EnvVar {
            name: "MODE".into(),
            value: "pod".into(),
            value_from: None,
        },
        EnvVar {
            name: "EXTRA".into(),
            value: "a=b".into(),
            value_from: None,
        },
    ];
    let mut opts = options();
    opts.extra_env = vec!["MODE=extra".into(), "SERVICE_HOST=10.0.0.1".into()];
    let env = build(&image(), &c, &opts).unwrap().process.env;
    assert_eq!(
        env,
        [
            "HOSTNAME=web-1",
            "PATH=/image/bin",
            "LANG=C",
            "MODE=pod",
            "SERVICE_HOST=10.0.0.1",
            "EXTRA=a=b",
            "HOME=/",
        ]
    );

    // PATH is provided when nobody sets it, and a container may set HOME.
    let mut c = container();
    c.env = vec![EnvVar {
        name: "HOME".into(),
        value: "/data".into(),
        value_from: None,
    }];
    let bare = ProcessDefaults {
        cmd: vec!["x".into()],
        ..Default::default()
    };
    let env = build_ok(&bare, &c).process.env;
    assert!(env.contains(&format!("PATH={DEFAULT_PATH}")), "{env:?}");
    assert!(env.contains(&"HOME=/data".to_string()), "{env:?}");

    c.env = vec![EnvVar {
        name: "A=B".into(),
        value: String::new(),
        value_from: None,
    }];
    assert!(build(&bare, &c, &options()).is_err());
}

#[test]
fn working_dir_precedence() {
    assert_eq!(build_ok(&image(), &container()).process.cwd, "/srv");
    let mut c = container();
    c.working_dir = Some("/app".into());
    assert_eq!(build_ok(&image(), &c).process.cwd, "/app");
    let no_dir = ProcessDefaults {
        working_dir: None,
        ..image()
    };
    assert_eq!(build_ok(&no_dir, &container()).process.cwd, "/");
    c.working_dir = Some("relative".into());
    assert!(build(&image(), &c, &options()).is_err());
}

#[test]
fn user_from_rootfs_files() {
    let rootfs = rootfs_with_app();
    let mut opts = options();
    opts.rootfs = rootfs.path().to_path_buf();
    let mut image = image();

    image.user = Some("app".into());
    let spec = build(&image, &container(), &opts).unwrap();
    assert_eq!(
        spec.process.user,
        User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![1000, 2000]
        }
    );
    assert!(spec.process.env.contains(&"HOME=/home/app".to_string()));

    image.user = Some("1000:2000".into());
    let user = build(&image, &container(), &opts).unwrap().process.user;
    assert_eq!((user.uid, user.gid), (1000, 2000));

    image.user = Some("nobody".into());
    let err = build(&image, &container(), &opts).unwrap_err();
    assert!(
        err.to_string().contains("user \"nobody\" not found"),
        "{err}"
    );

    // Numbers work without any files.
    image.user = Some("33:33".into());
    let user = build(&image, &container(), &options())
        .unwrap()
        .process
        .user;
    assert_eq!((user.uid, user.gid), (33, 33));
}

#[test]
fn resource_limits() {
    let mut c = container();
    c.resources = ResourceRequirements {
        requests: ResourceList {
            cpu: Some("250m".into()),
            memory: Some("32Mi".into()),
        },
        limits: ResourceList {
            cpu: Some("1500m".into()),
            memory: Some("64Mi".into()),
        },
    };
    let resources = build_ok(&image(), &c).linux.resources;
    assert_eq!(resources.memory.unwrap().limit, Some(64 << 20));
    let cpu = resources.cpu.unwrap();
    assert_eq!(cpu.quota, Some(150_000));
    assert_eq!(cpu.period, Some(100_000));
    assert_eq!(cpu.shares, Some(256));
    assert_eq!(
        resources.pids,
        Some(Pids {
            limit: DEFAULT_PIDS_LIMIT
        })
    );
    assert_eq!(
        resources.devices,
        [DeviceRule {
            allow: false,
            access: "rwm".into()
        }]
    );

    // A tiny limit still gets the kernel's minimum quota; the request
    // defaults to the limit.
    c.resources.requests = ResourceList::default();
    c.resources.limits.cpu = Some("1m".into());
    let cpu = build_ok(&image(), &c).linux.resources.cpu.unwrap();
    assert_eq!((cpu.quota, cpu.shares), (Some(1000), Some(2)));

    // Nothing set: no memory or cpu section at all.
    let resources = build_ok(&image(), &container()).linux.resources;
    assert_eq!((resources.memory, resources.cpu), (None, None));

    c.resources.limits.memory = Some("lots".into());
    let err = build(&image(), &c, &options()).unwrap_err();
    assert!(err.to_string().contains("resources.limits.memory"), "{err}");
}

/// The kinds of the spec's namespaces, in order.
fn namespace_kinds(spec: &Spec) -> Vec<&str> {
    spec.linux
        .namespaces
        .iter()
        .map(|n| n.kind.as_str())
        .collect()
}

#[test]
fn namespaces_mounts_and_security_defaults() {
    let spec = build_ok(&image(), &container());
    assert_eq!(
        namespace_kinds(&spec),
        ["pid", "ipc", "uts", "mount", "network"]
    );
    assert_eq!(spec.namespace("network").unwrap().path, None);

    let mut opts = options();
    opts.netns = Some("/var/run/netns/pod-1".into());
    opts.read_only_rootfs = true;
    let spec = build(&image(), &container(), &opts).unwrap();
    assert_eq!(
        spec.namespace("network").unwrap().path.as_deref(),
        Some(Path::new("/var/run/netns/pod-1"))
    );
    assert!(spec.root.readonly);
    assert_eq!(spec.hostname, "web-1");
    assert_eq!(spec.linux.cgroups_path, "/wharf/web-1");

    let destinations: Vec<_> = spec.mounts.iter().map(|m| m.destination.as_str()).collect();
    assert_eq!(
        destinations,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup"
        ]
    );
    assert!(spec.mounts[5].options.contains(&"ro".to_string()));

    let caps = &spec.process.capabilities;
    assert!(caps.bounding.contains(&"CAP_NET_BIND_SERVICE".to_string()));
    assert!(!caps.bounding.contains(&"CAP_SYS_ADMIN".to_string()));
    assert_eq!(caps.bounding, caps.effective);
    assert!(caps.ambient.is_empty() && caps.inheritable.is_empty());
    assert!(!spec.process.terminal);
    assert!(spec.linux.masked_paths.contains(&"/proc/kcore".to_string()));
    assert!(spec.linux.readonly_paths.contains(&"/proc/sys".to_string()));
}

#[test]
fn serializes_to_oci_field_names() {
    let mut spec = build_ok(&image(), &container());
    spec.add_bind_mount(Path::new("/b/hosts"), "/etc/hosts", false);
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["ociVersion"], "1.0.2");
    assert_eq!(json["process"]["noNewPrivileges"], false);
    assert_eq!(json["process"]["user"]["uid"], 0);
    assert!(json["process"]["user"].get("additionalGids").is_none());
    assert_eq!(json["linux"]["cgroupsPath"], "/wharf/web-1");
    assert_eq!(
        json["linux"]["namespaces"][0],
        serde_json::json!({"type": "pid"})
    );
    assert!(json["process"].get("rlimits").is_none());
    assert!(json["linux"]["maskedPaths"].is_array());
    assert_eq!(
        json["mounts"][7],
        serde_json::json!({"destination": "/etc/hosts", "type": "bind", "source": "/b/hosts", "options": ["rbind", "rprivate"]})
    );
    let back: Spec = serde_json::from_value(json).unwrap();
    assert_eq!(back, spec);
}

/// A rootfs whose files know `app` (1000) in groups 1000 and 2000.
fn rootfs_with_app() -> tempfile::TempDir {
    let rootfs = tempfile::tempdir().unwrap();
    fs::create_dir(rootfs.path().join("etc")).unwrap();
    fs::write(
        rootfs.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        rootfs.path().join("etc/group"),
        "app:x:1000:\nextra:x:2000:app\n",
    )
    .unwrap();
    rootfs
}

fn secured(security: EffectiveSecurity) -> SpecOptions {
    SpecOptions {
        security,
        ..options()
    }
}

fn default_security() -> EffectiveSecurity {
    options().security
}

#[test]
fn run_as_user_group_and_extra_groups() {
    let rootfs = rootfs_with_app();
    let mut opts = secured(EffectiveSecurity {
        run_as_user: Some(1000),
        supplemental_groups: vec![4000, 2000, 5000],
        ..default_security()
    });
    opts.rootfs = rootfs.path().to_path_buf();
    // The image says root; runAsUser wins, with the image's groups for 1000.
    let mut image = image();
    image.user = Some("0".into());
    let spec = build(&image, &container(), &opts).unwrap();
    assert_eq!(
        spec.process.user,
        User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![1000, 2000, 4000, 5000]
        }
    );
    assert!(spec.process.env.contains(&"HOME=/home/app".to_string()));
    // runAsGroup replaces the primary group.
    opts.security.run_as_group = Some(3000);
    let user = build(&image, &container(), &opts).unwrap().process.user;
    assert_eq!((user.uid, user.gid), (1000, 3000));
    assert_eq!(user.additional_gids, [2000, 4000, 5000]);
    // A uid the image does not know: no files needed.
    let opts = secured(EffectiveSecurity {
        run_as_user: Some(1234),
        run_as_group: Some(3000),
        supplemental_groups: vec![4000],
        ..default_security()
    });
    let user = build(&image, &container(), &opts).unwrap().process.user;
    assert_eq!(
        user,
        User {
            uid: 1234,
            gid: 3000,
            additional_gids: vec![4000]
        }
    );
}

#[test]
fn run_as_non_root_refuses_a_root_user() {
    let non_root = |run_as_user| {
        secured(EffectiveSecurity {
            run_as_user,
            run_as_non_root: true,
            ..default_security()
        })
    };
    // The image's user is root (unset).
    let err = build(&image(), &container(), &non_root(None)).unwrap_err();
    assert!(matches!(err, RuncError::RunsAsRoot { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("container has runAsNonRoot and image will run as root"),
        "{err}"
    );
    // runAsUser 0 is root too.
    let mut image = image();
    image.user = Some("1000".into());
    assert!(build(&image, &container(), &non_root(Some(0))).is_err());
    // A non-root image user, or runAsUser over a root image, starts.
    assert!(build(&image, &container(), &non_root(None)).is_ok());
    assert!(build(&self::image(), &container(), &non_root(Some(1000))).is_ok());
}

#[test]
fn read_only_root_no_new_privs_and_capabilities() {
    let spec = build_ok(&image(), &container());
    assert!(!spec.root.readonly);
    assert!(
        !spec.process.no_new_privileges,
        "Wharf's default allows escalation"
    );
    let opts = secured(EffectiveSecurity {
        read_only_root_filesystem: true,
        allow_privilege_escalation: Some(false),
        capabilities: vec!["CAP_NET_BIND_SERVICE".into()],
        ..default_security()
    });
    let spec = build(&image(), &container(), &opts).unwrap();
    assert!(spec.root.readonly);
    assert!(spec.process.no_new_privileges);
    let caps = &spec.process.capabilities;
    for set in [&caps.bounding, &caps.effective, &caps.permitted] {
        assert_eq!(set, &["CAP_NET_BIND_SERVICE"]);
    }
    assert!(caps.inheritable.is_empty() && caps.ambient.is_empty());
    let allowed = secured(EffectiveSecurity {
        allow_privilege_escalation: Some(true),
        ..default_security()
    });
    assert!(
        !build(&image(), &container(), &allowed)
            .unwrap()
            .process
            .no_new_privileges
    );
}

/// The names the `SCMP_ACT_ERRNO` rules without conditions give `errno`.
fn blocked(seccomp: &Seccomp, errno: u32) -> Vec<String> {
    seccomp
        .syscalls
        .iter()
        .filter(|r| r.errno_ret == Some(errno) && r.args.is_empty())
        .flat_map(|r| r.names.clone())
        .collect()
}

#[test]
fn runtime_default_seccomp_blocks_the_ways_out() {
    let spec = build_ok(&image(), &container());
    let seccomp = spec.linux.seccomp.expect("a filter by default");
    assert_eq!(seccomp.default_action, "SCMP_ACT_ALLOW");
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(
            seccomp.architectures,
            ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
    }
    let eperm = blocked(&seccomp, 1);
    for name in [
        "mount",
        "umount2",
        "unshare",
        "setns",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "open_by_handle_at",
        "name_to_handle_at",
        "reboot",
        "swapon",
        "swapoff",
        "pivot_root",
        "userfaultfd",
        "acct",
        "settimeofday",
        "clock_settime",
        "iopl",
        "ioperm",
        "quotactl",
        "lookup_dcookie",
    ] {
        assert!(eperm.contains(&name.to_string()), "{name} is not blocked");
    }
    assert_eq!(blocked(&seccomp, 38), ["clone3"]);
    // clone with any namespace flag: one masked rule per flag.
    let clone: Vec<_> = seccomp
        .syscalls
        .iter()
        .filter(|r| r.names == ["clone"])
        .collect();
    assert_eq!(clone.len(), 7);
    let new_user = clone
        .iter()
        .find(|r| r.args[0].value == 0x1000_0000)
        .unwrap();
    assert_eq!(new_user.args[0].value_two, 0x1000_0000);
    assert_eq!(new_user.args[0].op, "SCMP_CMP_MASKED_EQ");
    assert_eq!(new_user.errno_ret, Some(1));
    let json = serde_json::to_value(new_user).unwrap();
    assert_eq!(json["errnoRet"], 1);
    assert_eq!(json["args"][0]["valueTwo"], 0x1000_0000);
}

#[test]
fn granted_capabilities_lift_their_syscalls() {
    let mut caps = default_security().capabilities;
    caps.push("CAP_SYS_ADMIN".into());
    caps.push("CAP_SYS_PTRACE".into());
    let seccomp = runtime_default_seccomp(&caps);
    let eperm = blocked(&seccomp, 1);
    for lifted in ["mount", "unshare", "setns", "ptrace", "process_vm_readv"] {
        assert!(!eperm.contains(&lifted.to_string()), "{lifted}");
    }
    assert!(eperm.contains(&"kexec_load".to_string()));
    assert!(eperm.contains(&"keyctl".to_string()));
    assert!(seccomp.syscalls.iter().all(|r| r.names != ["clone"]));
    assert!(blocked(&seccomp, 38).is_empty());
}

#[test]
fn unconfined_and_privileged() {
    let unconfined = secured(EffectiveSecurity {
        seccomp: SeccompProfileType::Unconfined,
        ..default_security()
    });
    let spec = build(&image(), &container(), &unconfined).unwrap();
    assert!(spec.linux.seccomp.is_none());
    assert!(
        !spec.linux.masked_paths.is_empty(),
        "only seccomp is lifted"
    );

    let privileged = secured(EffectiveSecurity {
        privileged: true,
        capabilities: wharf_api::ALL_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect(),
        seccomp: SeccompProfileType::Unconfined,
        ..default_security()
    });
    let spec = build(&image(), &container(), &privileged).unwrap();
    assert!(spec.linux.seccomp.is_none());
    assert!(spec.linux.masked_paths.is_empty() && spec.linux.readonly_paths.is_empty());
    let sys = spec
        .mounts
        .iter()
        .find(|m| m.destination == "/sys")
        .unwrap();
    assert!(!sys.options.contains(&"ro".to_string()));
    assert!(
        spec.process
            .capabilities
            .bounding
            .contains(&"CAP_SYS_ADMIN".to_string())
    );
    assert!(spec.linux.resources.devices[0].allow);
    assert!(!build_ok(&image(), &container()).linux.resources.devices[0].allow);
}

#[test]
fn privileged_gets_what_the_agent_may_pass_on() {
    let all: Vec<String> = wharf_api::ALL_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .collect();
    // A bounding set without CAP_SYS_RESOURCE (24), as in some sandboxes.
    let held = within_bounding_set(&all, 0x1ff_feff_ffff);
    assert_eq!(held.len(), all.len() - 1);
    assert!(!held.contains(&"CAP_SYS_RESOURCE".to_string()));
    assert!(held.contains(&"CAP_CHECKPOINT_RESTORE".to_string()));
    assert_eq!(within_bounding_set(&all, u64::MAX), all);
    assert!(within_bounding_set(&all, 0).is_empty());
}

#[test]
fn host_pid_and_ipc_share_the_nodes_namespaces() {
    let kinds = |security| {
        build(&image(), &container(), &secured(security))
            .unwrap()
            .linux
            .namespaces
            .into_iter()
            .map(|n| n.kind)
            .collect::<Vec<_>>()
    };
    let host_pid = EffectiveSecurity {
        host_pid: true,
        ..default_security()
    };
    assert_eq!(kinds(host_pid), ["ipc", "uts", "mount", "network"]);
    let host_ipc = EffectiveSecurity {
        host_ipc: true,
        ..default_security()
    };
    assert_eq!(kinds(host_ipc), ["pid", "uts", "mount", "network"]);
}

#[test]
fn host_network_shares_the_nodes_network_and_host_name() {
    let host = EffectiveSecurity {
        host_network: true,
        ..default_security()
    };
    let mut options = secured(host);
    let spec = build(&image(), &container(), &options).unwrap();
    assert_eq!(namespace_kinds(&spec), ["pid", "ipc", "mount"]);
    assert_eq!(spec.hostname, "");
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        spec.process
            .env
            .contains(&format!("HOSTNAME={}", node.trim())),
        "{:?}",
        spec.process.env
    );

    // A node living in a named namespace (a simulated host): that one.
    options.netns = Some("/var/run/netns/host-a".into());
    let spec = build(&image(), &container(), &options).unwrap();
    let network = spec.namespace("network").unwrap();
    assert_eq!(
        network.path.as_deref(),
        Some(Path::new("/var/run/netns/host-a"))
    );
}

#[test]
fn volumes_are_bound_after_the_default_mounts() {
    let mut options = options();
    options.volumes = vec![
        VolumeBind {
            source: "/node/pods/shop_web/volumes/cache".into(),
            destination: "/cache".into(),
            read_only: false,
        },
        VolumeBind {
            source: "/srv/logs".into(),
            destination: "/logs".into(),
            read_only: true,
        },
    ];
    let spec = build(&image(), &container(), &options).unwrap();
    let defaults = build_ok(&image(), &container()).mounts.len();
    assert_eq!(spec.mounts.len(), defaults + 2);
    let cache = &spec.mounts[defaults];
    assert_eq!(
        (cache.destination.as_str(), cache.source.as_str()),
        ("/cache", "/node/pods/shop_web/volumes/cache")
    );
    assert_eq!(cache.kind, "bind");
    assert!(!cache.options.contains(&"ro".to_string()));
    let logs = &spec.mounts[defaults + 1];
    assert!(logs.options.contains(&"ro".to_string()), "{logs:?}");
}
